"""Every form a person or an operator clicks, in Chromium (issue 9 item 1; CD-13, CD-18, REV-01..04).

Consent Approve and Deny; Connected apps Sign in, Revoke and Sign out; the admin's revoke with a
reason. After each click: no error page (the CSRF failure page above all: under
``Referrer-Policy: no-referrer`` Chromium posts ``Origin: null`` and every Connected apps button
failed), the expected state in the database, and for a revocation the client's token refused
at /mcp.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx2
import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from playwright.sync_api import Browser, Locator, Page

from mcp_consent.models import AuditEvent, Consent
from tests.browser_client import pkce_pair

from .conftest import TIMEOUT_MS, Listener, Sites
from .pages import authorize_url, register_client, screenshot, through_upstream

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

A = AuditEvent.Action
OPERATOR_PASSWORD = "correct horse battery staple"
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def mcp_status(sites: Sites, access_token: str) -> int:
    """The status /mcp answers the client's token with: the demo's whole /mcp app, in-process.

    In a thread of its own: this one runs Playwright's event loop.
    """
    from project.mcp_server import build_app
    from tests.asgi_helpers import lifespan

    answer: dict[str, Any] = {}

    async def main() -> None:
        app = build_app()
        async with lifespan(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url=sites.proxy) as http:
                response = await http.post(
                    "/mcp",
                    json=TOOLS_LIST,
                    headers={
                        "Authorization": f"Bearer {access_token}",
                        "Accept": "application/json, text/event-stream",
                    },
                )
                answer["status"] = response.status_code

    worker = threading.Thread(target=lambda: asyncio.run(main()))
    worker.start()
    worker.join(30)
    return int(answer["status"])


def click_form(page: Page, button: Locator) -> None:
    """Click a form's button: its POST is answered with a redirect and lands on a page, no error."""
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        button.click()
    page.wait_for_load_state()
    assert posted.value.status in {302, 303}, (posted.value.status, page.content()[:400])
    assert "did not come from this site" not in page.content()


def token_for(
    sites: Sites, page: Page, listener: Listener, client_id: str, redirect_uri: str, state: str
) -> str:
    """A whole authorization with the Approve button, then the client's /token/ request."""
    verifier, challenge = pkce_pair()
    page.goto(authorize_url(sites, client_id, redirect_uri, challenge=challenge, state=state))
    click_form(page, page.get_by_role("button", name="Approve"))
    through_upstream(page, sites)
    page.wait_for_url(f"{listener.origin}/cb?**")
    code = listener.at("/cb")[-1].query["code"][0]
    token = requests.post(
        f"{sites.proxy}/token/",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": sites.resource,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


def signed_in_sessions() -> int:
    return sum(1 for s in Session.objects.all() if "_auth_user_id" in s.get_decoded())


def test_every_form_clicked(
    sites: Sites, settings, browser: Browser, page: Page, client_listener: Listener
) -> None:
    settings.MCP_RESOURCE = sites.resource
    client_id, redirect_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")

    # Consent page, Deny (CD-18): access_denied to the client, nothing stored.
    page.goto(authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="d"))
    click_form(page, page.get_by_role("button", name="Deny"))
    page.wait_for_url(f"{client_listener.origin}/cb?**")
    assert client_listener.at("/cb")[-1].query["error"] == ["access_denied"]
    assert AuditEvent.objects.filter(action=A.CONSENT_DENIED).count() == 1
    assert not Consent.objects.exists()

    # Consent page, Approve: a consent, and a token /mcp accepts.
    access = token_for(sites, page, client_listener, client_id, redirect_uri, "a")
    consent = Consent.objects.get()
    assert consent.revoked_at is None
    assert consent.client.application.client_id == client_id
    assert mcp_status(sites, access) == 200

    # Connected apps, Revoke: the consent and its tokens revoked, /mcp refuses the token.
    page.goto(f"{sites.proxy}/connections/")
    assert page.locator("#connections").get_by_text("Acme Agent").is_visible()
    click_form(page, page.locator("#connections").get_by_role("button", name="Revoke"))
    assert page.url == f"{sites.proxy}/connections/"
    consent.refresh_from_db()
    assert consent.revoked_at is not None
    assert consent.status == Consent.Status.REVOKED
    assert AuditEvent.objects.get(action=A.CONSENT_REVOKED).actor_type == "user"
    assert mcp_status(sites, access) == 401
    assert page.get_by_text("No application has access right now.").is_visible()
    screenshot(page, "16-connected-apps-after-revoke")

    # Connected apps, Sign out: no signed-in session left, the page offers Sign in.
    assert signed_in_sessions() == 1
    click_form(page, page.get_by_role("button", name="Sign out"))
    assert signed_in_sessions() == 0
    assert page.get_by_role("button", name="Sign in with Demo Hub").is_visible()

    # Connected apps, Sign in: through Demo Hub and back, signed in, no consent given.
    click_form(page, page.get_by_role("button", name="Sign in with Demo Hub"))
    through_upstream(page, sites)
    page.wait_for_url(f"{sites.proxy}/connections/")
    assert signed_in_sessions() == 1
    assert AuditEvent.objects.filter(action=A.SIGNED_IN).count() == 1
    assert page.get_by_role("button", name="Sign out").is_visible()
    assert Consent.objects.filter(revoked_at__isnull=True).count() == 0

    # The admin's revoke with a reason, on a second connection of the same person.
    other_id, other_uri = register_client("Other App", f"{client_listener.origin}/cb")
    other_access = token_for(sites, page, client_listener, other_id, other_uri, "o")
    other = Consent.objects.get(revoked_at__isnull=True)
    assert mcp_status(sites, other_access) == 200
    get_user_model().objects.create_superuser("admin", "admin@example.com", OPERATOR_PASSWORD)
    operator = browser.new_context(viewport={"width": 1280, "height": 900})
    operator.set_default_timeout(TIMEOUT_MS)
    try:
        admin = operator.new_page()
        admin.goto(f"{sites.proxy}/admin/")
        admin.fill("#id_username", "admin")
        admin.fill("#id_password", OPERATOR_PASSWORD)
        click_form(admin, admin.locator("input[type=submit]"))
        admin.goto(f"{sites.proxy}/admin/mcp_consent/consent/")
        admin.locator(f"input[name=_selected_action][value='{other.pk}']").check()
        admin.select_option("select[name=action]", "revoke_consents")
        with admin.expect_response(lambda r: r.request.method == "POST") as asked:
            admin.get_by_role("button", name="Go").click()
        assert asked.value.status == 200  # the confirmation page with the reason field
        admin.fill("#id_reason", "lost laptop")
        click_form(admin, admin.locator("input[type=submit][value='Revoke consents']"))
        assert admin.get_by_text("1 consent(s) revoked.").is_visible()
    finally:
        operator.close()
    other.refresh_from_db()
    assert other.revoked_at is not None
    assert other.revoke_reason == "lost laptop"
    event = AuditEvent.objects.filter(action=A.CONSENT_REVOKED).order_by("-pk").first()
    assert event is not None
    assert event.actor_type == "operator"
    assert event.details["reason"] == "lost laptop"
    assert mcp_status(sites, other_access) == 401
    assert mcp_status(sites, access) == 401
