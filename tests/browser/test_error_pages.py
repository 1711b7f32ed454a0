"""Gaps of the browser suite (issue 5.1): error pages under attack and under faults.

test_consent_flow.py covers the consent page (flow, confused deputy, framing, cross-site
POST, remembered consent) and screenshots of the consent, first error and admin pages. Here:
the error pages refuse to be framed too (CD-14 names them, RFC 9700 §4.16), and the pages a
person meets when the upstream's answer comes from another issuer (mix-up) or the database
is down during the callback, plus the audit trail in the admin, are screenshotted.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError
from playwright.sync_api import Browser, Page

from mcp_consent.flows import authorization
from mcp_consent.models import AuthorizationTransaction, Consent
from project.demo_upstream.models import RequestLog
from tests.browser_client import pkce_pair

from .conftest import TIMEOUT_MS, Listener, Sites
from .pages import (
    attacker_page,
    authorize_url,
    complete_flow,
    register_client,
    screenshot,
    through_upstream,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_error_pages_refuse_to_be_framed(
    sites: Sites, page: Page, client_listener: Listener, attacker_listener: Listener
) -> None:
    """CD-14 / BCP-13: another site framing an error page of ours gets empty frames."""
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    targets = {
        "unknown-client": authorize_url(
            sites, "no-such-client", redirect_uri, challenge=pkce_pair()[1], state="s"
        ),
        "wrong-redirect": authorize_url(
            sites, client_id, "https://attacker.example/cb", challenge=pkce_pair()[1], state="s"
        ),
        "callback": f"{sites.proxy}/upstream/callback/?state=forged&code=x",
    }
    frames = "".join(
        f'<iframe name="{name}" src="{url}" width="300" height="200"></iframe>'
        for name, url in targets.items()
    )
    framable = attacker_page(attacker_listener, "/framable", "<p id='control'>framed fine</p>")
    url = attacker_page(
        attacker_listener, "/frames", frames + f'<iframe name="control" src="{framable}"></iframe>'
    )
    answered: dict[str, Any] = {}
    page.on(
        "response",
        lambda r: answered.update({n: r for n, u in targets.items() if r.url == u}),
    )
    page.goto(url)
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)

    assert page.frame(name="control").locator("#control").inner_text() == "framed fine"
    assert set(answered) == set(targets), sorted(answered)
    for name in targets:
        response = answered[name]
        assert response.status == 400, (name, response.status)
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        frame = page.frame(name=name)
        assert frame is not None
        assert not frame.url.startswith(sites.proxy), (name, frame.url)
        assert "sign-in" not in frame.content().lower(), name
    screenshot(page, "11-error-pages-framed-by-attacker")
    assert client_listener.hits == []
    assert RequestLog.objects.count() == 0


def test_mix_up_error_page(sites: Sites, page: Page, client_listener: Listener) -> None:
    """MU-03 / UP-04: the upstream's answer arrives with another issuer (a mix-up): a clear
    page, nothing sent to the client, nothing recorded."""
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")

    def other_issuer(route: Any) -> None:
        # Demo Hub's redirect back to us, rewritten as if another authorization server had
        # answered (a redirect's target cannot be routed itself, so its Location is).
        if route.request.method != "POST":
            route.continue_()
            return
        answer = route.fetch(max_redirects=0)
        headers = dict(answer.headers)
        headers["location"] = re.sub(
            r"([?&]iss=)[^&]*", r"\1https%3A%2F%2Fevil.example", headers["location"]
        )
        route.fulfill(response=answer, headers=headers)

    page.route(re.compile(r".*/demo-upstream/login/oauth/authorize.*"), other_issuer)
    page.goto(authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="m"))
    page.get_by_role("button", name="Approve").click()
    with page.expect_response(re.compile(r".*/upstream/callback/.*")) as answered:
        through_upstream(page, sites)
    page.wait_for_load_state()
    assert answered.value.status == 400
    assert "iss=https%3A%2F%2Fevil.example" in answered.value.url
    assert page.get_by_text("did not come from the expected provider").is_visible()
    screenshot(page, "12-error-mix-up")
    assert client_listener.hits == []
    assert not Consent.objects.exists()
    assert AuthorizationTransaction.objects.get().outcome == "failed"


def test_database_down_error_page(
    sites: Sites, page: Page, client_listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faults: the database is unreachable when the callback arrives: a clear 503 page."""
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    page.goto(authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="d"))
    page.get_by_role("button", name="Approve").click()

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("could not connect to server (simulated)")

    # The live server runs in this process: its callback view sees the broken database.
    with page.expect_response(re.compile(r".*/upstream/callback/.*")) as answered:
        monkeypatch.setattr(authorization, "consume_transaction", unreachable)
        through_upstream(page, sites)
    page.wait_for_load_state()
    assert answered.value.status == 503
    assert page.get_by_text("Temporarily unavailable").is_visible()
    screenshot(page, "13-error-database-unavailable")
    monkeypatch.undo()
    assert client_listener.hits == []
    assert not Consent.objects.exists()


def test_admin_audit_trail_screenshot(
    sites: Sites, browser: Browser, page: Page, client_listener: Listener
) -> None:
    """The operator's view of what happened: the audit trail in the admin (issue 4)."""
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    complete_flow(
        page,
        sites,
        client_listener,
        authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="a"),
    )
    get_user_model().objects.create_superuser(
        "admin", "admin@example.com", "correct horse battery staple"
    )
    operator = browser.new_context(viewport={"width": 1280, "height": 900})
    operator.set_default_timeout(TIMEOUT_MS)
    try:
        admin = operator.new_page()
        admin.goto(f"{sites.proxy}/admin/")
        admin.fill("#id_username", "admin")
        admin.fill("#id_password", "correct horse battery staple")
        admin.locator("input[type=submit]").click()
        admin.wait_for_url(f"{sites.proxy}/admin/")
        response = admin.goto(f"{sites.proxy}/admin/mcp_consent/auditevent/")
        assert response is not None
        assert response.status == 200
        assert admin.locator("#result_list tbody tr").count() >= 3
        screenshot(admin, "14-admin-audit-trail")
        admin.goto(f"{sites.proxy}/admin/mcp_consent/mcpclient/")
        assert admin.get_by_text("Acme Agent").first.is_visible()
        screenshot(admin, "15-admin-clients")
    finally:
        operator.close()
