"""The consent flow in a real browser (Chromium): what a person clicks and what an attacker tries.

Each test names the requirements it checks. The proxy is http://127.0.0.1:<port>, the demo
upstream http://localhost:<port>/demo-upstream, attacker pages http://attacker.example:<port>
(see conftest.py).
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, BrowserContext, Page

from mcp_consent.models import AuthorizationTransaction, Consent
from project.demo_upstream.models import RequestLog
from tests.browser_client import pkce_pair

from .conftest import TIMEOUT_MS, Listener, Sites
from .pages import (
    attacker_page,
    authorize_url,
    complete_flow,
    cookie,
    is_consent_page,
    register_client,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_consent_flow_clicked_as_a_person(
    sites: Sites, context: BrowserContext, page: Page, client_listener: Listener
) -> None:
    """CD-10, CD-12, CD-18, MU-01 (and CD-20, CD-21 as the browser stores them).

    A person opens the link, reads our consent page, approves, signs in at Demo Hub and
    authorizes there; the client gets code, its own state and iss, and redeems the code.
    A second run with Deny gives the client access_denied with state and iss.
    """
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    verifier, challenge = pkce_pair()
    page.goto(
        authorize_url(sites, client_id, redirect_uri, challenge=challenge, state="st-1 / ünï")
    )

    assert page.locator("#client-name").inner_text() == "Acme Agent"  # CD-10
    assert page.get_by_text("Self-registered, unverified").is_visible()
    # CD-12: the redirect URI, its host highlighted.
    assert page.locator("#redirect-uri").inner_text() == redirect_uri
    assert page.locator("#redirect-uri strong").inner_text() == f"127.0.0.1:{client_listener.port}"
    assert RequestLog.objects.count() == 0  # nothing upstream before the click

    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{sites.upstream}/login/**")
    # CD-20, CD-21: the browser really holds the __Host- binding cookie on http://127.0.0.1.
    binding = cookie(context, "__Host-mcp_consent_tx")
    assert binding["domain"] == "127.0.0.1"
    assert binding["path"] == "/"
    assert binding["secure"]
    assert binding["httpOnly"]
    assert binding["sameSite"] == "Lax"

    page.fill("#id_username", "octocat")
    page.fill("#id_password", "demo")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{sites.upstream}/login/oauth/authorize?**")
    screenshot(page, "08-demo-upstream-consent")
    page.get_by_role("button", name=re.compile(r"^Authorize")).click()
    page.wait_for_url(f"{client_listener.origin}/cb?**")

    (hit,) = client_listener.at("/cb")
    assert set(hit.query) == {"code", "state", "iss"}
    assert hit.query["state"] == ["st-1 / ünï"]
    metadata = requests.get(
        f"{sites.proxy}/.well-known/oauth-authorization-server", timeout=10
    ).json()
    assert hit.query["iss"] == [sites.proxy] == [metadata["issuer"]]  # MU-01, byte for byte
    session = cookie(context, "__Host-sessionid")
    assert session["secure"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Lax"

    token = requests.post(
        f"{sites.proxy}/token/",
        data={
            "grant_type": "authorization_code",
            "code": hit.query["code"][0],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": sites.resource,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    assert token.json()["access_token"]

    # CD-18: the same person, another request, Deny.
    upstream_requests = RequestLog.objects.count()
    page.goto(authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="st-2"))
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{client_listener.origin}/cb?**")
    denied = client_listener.at("/cb")[-1].query
    assert denied["error"] == ["access_denied"]
    assert "code" not in denied
    assert denied["state"] == ["st-2"]
    assert denied["iss"] == [sites.proxy]  # MU-01
    assert RequestLog.objects.count() == upstream_requests  # nothing sent upstream


def test_confused_deputy_with_real_browser(
    sites: Sites,
    context: BrowserContext,
    page: Page,
    client_listener: Listener,
    attacker_listener: Listener,
) -> None:
    """CD-00: with the upstream's consent cookie set, B's link still lands on OUR consent page."""
    a_id, a_uri = register_client("Legit Desktop App", f"{client_listener.origin}/cb")
    first = complete_flow(
        page,
        sites,
        client_listener,
        authorize_url(sites, a_id, a_uri, challenge=pkce_pair()[1], state="a"),
    )
    assert first["code"]
    # Precondition of the attack: Demo Hub remembers the approval of the proxy's static client.
    assert cookie(context, "demo_upstream_consent")["domain"] == "localhost"

    registered = requests.post(
        f"{sites.proxy}/register/",
        json={
            "client_name": "Evil Helper",
            "redirect_uris": [f"{attacker_listener.origin}/cb"],
            "token_endpoint_auth_method": "none",
        },
        timeout=10,
    )
    assert registered.status_code == 201, registered.text
    b_id = registered.json()["client_id"]
    upstream_requests = RequestLog.objects.count()
    transactions = AuthorizationTransaction.objects.count()

    page.goto(
        authorize_url(
            sites, b_id, f"{attacker_listener.origin}/cb", challenge=pkce_pair()[1], state="x"
        )
    )

    assert is_consent_page(page, sites)
    assert page.locator("#client-name").inner_text() == "Evil Helper"
    assert (
        page.locator("#redirect-uri strong").inner_text() == f"127.0.0.1:{attacker_listener.port}"
    )
    screenshot(page, "10-consent-page-attacker-client")
    assert attacker_listener.hits == []
    assert RequestLog.objects.count() == upstream_requests  # the upstream saw nothing
    assert AuthorizationTransaction.objects.count() == transactions

    page.close()  # the victim walks away without clicking
    time.sleep(0.5)
    assert attacker_listener.hits == []
    assert RequestLog.objects.count() == upstream_requests


def test_consent_page_refuses_to_be_framed(
    sites: Sites, page: Page, client_listener: Listener, attacker_listener: Listener
) -> None:
    """CD-14: another site framing the consent page gets an empty frame, nothing to click."""
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    target = authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="f")
    framable = attacker_page(attacker_listener, "/framable", "<p id='control'>framed fine</p>")
    url = attacker_page(
        attacker_listener,
        "/frame",
        f'<iframe name="victim" src="{target}" width="600" height="600"></iframe>'
        f'<iframe name="control" src="{framable}"></iframe>',
    )
    with page.expect_response(lambda r: r.url == target) as served:
        page.goto(url)
    page.wait_for_load_state("load")

    # The server did answer with the consent page and its anti-framing headers ...
    response = served.value
    assert response.status == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    # ... and the browser refused to render it, while it renders a framable page next to it.
    assert page.frame(name="control").locator("#control").inner_text() == "framed fine"
    victim = page.frame(name="victim")
    assert victim is not None
    assert not victim.url.startswith(sites.proxy), victim.url
    assert victim.locator("button").count() == 0
    assert "Approve" not in victim.content()
    assert client_listener.hits == []
    assert RequestLog.objects.count() == 0


def test_cross_site_auto_submitting_post_cannot_approve(
    sites: Sites,
    context: BrowserContext,
    page: Page,
    client_listener: Listener,
    attacker_listener: Listener,
) -> None:
    """CD-13: a cross-site auto-submitted Approve gets the CSRF failure page (403), no state, nothing upstream.

    The attacker even has the right fingerprint (it can load the page itself); only the CSRF
    token, which it cannot read, is guessed.
    """
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    target = authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="c")
    page.goto(target)
    assert is_consent_page(page, sites)
    assert cookie(context, "__Host-csrftoken")["secure"]
    fingerprint = page.locator("input[name=fingerprint]").get_attribute("value")

    url = attacker_page(
        attacker_listener,
        "/post",
        f'<form method="post" action="{target}">'
        '<input type="hidden" name="decision" value="approve">'
        f'<input type="hidden" name="fingerprint" value="{fingerprint}">'
        '<input type="hidden" name="csrfmiddlewaretoken" value="' + "A" * 64 + '">'
        "</form><script>document.forms[0].submit()</script>",
    )
    with page.expect_response(lambda r: r.url == target and r.request.method == "POST") as posted:
        page.goto(url)
    page.wait_for_load_state()

    assert posted.value.status == 403
    assert "did not come from this site" in page.content()  # mcp_consent.views.common.csrf_failure
    assert page.url == target  # still on the proxy: no redirect anywhere
    screenshot(page, "09-csrf-failure")
    assert AuthorizationTransaction.objects.count() == 0
    assert RequestLog.objects.count() == 0
    assert client_listener.hits == []
    assert not [c for c in context.cookies() if c["name"] == "__Host-mcp_consent_tx"]


def test_remembered_consent_not_applied_cross_site(
    sites: Sites,
    settings,
    context: BrowserContext,
    page: Page,
    client_listener: Listener,
    attacker_listener: Listener,
) -> None:
    """CD-00 with the REMEMBER_CONSENT opt-in: only a direct navigation skips the page.

    A link on another site (Sec-Fetch-Site: cross-site), or on another port of 127.0.0.1
    (same-site), lands on the consent page; the same URL typed in a new tab goes through.
    """
    settings.MCP_CONSENT = {**settings.MCP_CONSENT, "REMEMBER_CONSENT": True}
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    first = complete_flow(
        page,
        sites,
        client_listener,
        authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="1"),
    )
    assert first["code"]
    assert Consent.objects.count() == 1

    for origin in (attacker_listener.attacker_origin, attacker_listener.origin):
        target = authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="2")
        attacker_listener.pages["/link"] = f'<a id="go" href="{target}">Claim your prize</a>'
        upstream_requests = RequestLog.objects.count()
        page.goto(f"{origin}/link")
        with page.expect_request(lambda r, target=target: r.url == target) as sent:
            page.click("#go")
        page.wait_for_load_state()
        expected_site = "cross-site" if origin == attacker_listener.attacker_origin else "same-site"
        assert sent.value.all_headers().get("sec-fetch-site") == expected_site
        assert is_consent_page(page, sites), page.url
        assert RequestLog.objects.count() == upstream_requests
        assert len(client_listener.at("/cb")) == 1

    direct = context.new_page()
    target = authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="3")
    with direct.expect_response(lambda r: r.url == target) as answered:
        direct.goto(target)
    direct.wait_for_url(f"{client_listener.origin}/cb?**")
    assert answered.value.status == 302  # no consent page: remembered
    assert answered.value.request.all_headers().get("sec-fetch-site") == "none"
    last = client_listener.at("/cb")[-1].query
    assert last["code"]
    assert last["state"] == ["3"]
    assert last["iss"] == [sites.proxy]


def test_screenshots(sites: Sites, page: Page) -> None:
    """Pages for a person to look at (CD-10, CD-12, LH-01, AS-50), in test-artifacts/screenshots."""
    client_id, redirect_uri = register_client("Acme Agent", "https://app.example/cb")
    page.goto(authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="s"))
    assert is_consent_page(page, sites)
    assert page.locator("#loopback-warning").count() == 0
    screenshot(page, "01-consent-page")

    loop_id, loop_uri = register_client("Local CLI", "http://127.0.0.1:33418/cb")
    page.goto(authorize_url(sites, loop_id, loop_uri, challenge=pkce_pair()[1], state="s"))
    assert page.locator("#loopback-warning").is_visible()
    screenshot(page, "02-consent-page-loopback-warning")

    unknown = authorize_url(
        sites, "no-such-client", redirect_uri, challenge=pkce_pair()[1], state="s"
    )
    response = page.goto(unknown)
    assert response is not None
    assert response.status == 400
    assert page.url == unknown  # shown, never redirected (AS-50)
    screenshot(page, "03-error-unknown-client")

    response = page.goto(f"{sites.proxy}/upstream/callback/?state=bogus&code=x")
    assert response is not None
    assert response.status == 400
    assert page.get_by_text("This sign-in cannot be completed").is_visible()
    screenshot(page, "04-error-callback")

    page.goto(f"{sites.upstream}/login/")
    assert page.get_by_role("button", name="Sign in").is_visible()
    screenshot(page, "05-demo-upstream-login")


def test_admin_screenshots(
    sites: Sites, browser: Browser, page: Page, client_listener: Listener
) -> None:
    """An operator signs in to the admin and sees the recorded consent (audit admin)."""
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    complete_flow(
        page,
        sites,
        client_listener,
        authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="s"),
    )
    get_user_model().objects.create_superuser(
        "admin", "admin@example.com", "correct horse battery staple"
    )

    operator = browser.new_context(viewport={"width": 1280, "height": 800})
    operator.set_default_timeout(TIMEOUT_MS)
    try:
        admin = operator.new_page()
        admin.goto(f"{sites.proxy}/admin/")
        admin.fill("#id_username", "admin")
        admin.fill("#id_password", "correct horse battery staple")
        with admin.expect_response(lambda r: r.request.method == "POST") as login:
            admin.locator("input[type=submit]").click()
        admin.wait_for_load_state()
        if login.value.status != 302:
            screenshot(admin, "06-admin-login-refused")
        assert login.value.status == 302, (
            login.value.status,
            admin.locator("body").inner_text()[:300],
        )
        assert admin.url == f"{sites.proxy}/admin/"
        screenshot(admin, "06-admin-index")
        admin.goto(f"{sites.proxy}/admin/mcp_consent/consent/")
        assert admin.locator("#result_list tbody tr").count() == 1
        screenshot(admin, "07-admin-consents")
    finally:
        operator.close()
