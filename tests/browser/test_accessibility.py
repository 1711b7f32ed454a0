"""The pages a person reads, checked in Chromium: accessible, readable on a phone, translated (issue 9).

* axe-core (``axe-playwright-python``, which bundles ``axe.min.js``: no network) finds no
  serious or critical violation on the consent page (with its warnings), an error page and
  Connected apps, signed out and signed in;
* at a 390 px wide viewport no page scrolls sideways;
* the consent page in English, French, German, Spanish and Arabic (right to left).

Screenshots go to test-artifacts/screenshots/; with ``UPDATE_DOCS_SCREENSHOTS=1`` (``make
screenshots``) the documented ones are written to docs/screenshots/ as well.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, BrowserContext, Page

from mcp_consent import audit
from mcp_consent.flows import revocation
from mcp_consent.models import Consent, RedirectURI
from tests.browser_client import pkce_pair

from .conftest import TIMEOUT_MS, Listener, Sites
from .pages import SCREENSHOTS, authorize_url, complete_flow, register_client

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}
SERIOUS = {"serious", "critical"}
LANGUAGES = {"en": "en-US", "fr": "fr-FR", "de": "de-DE", "es": "es-ES", "ar": "ar"}
APPROVE = {"en": "Approve", "fr": "Approuver", "de": "Genehmigen", "es": "Aprobar", "ar": "موافقة"}

axe = Axe()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)


def serious_violations(page: Page) -> list[str]:
    violations = axe.run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v["impact"] in SERIOUS
    ]


def scrolls_sideways(page: Page) -> bool:
    return bool(
        page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")
    )


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


def lure(sites: Sites, page: Page, listener: Listener) -> str:
    """The person approved "Claude" once; a second "Claude" sends access to a lookalike host."""
    real_id, real_uri = register_client("Claude", f"{listener.origin}/cb")
    complete_flow(
        page,
        sites,
        listener,
        authorize_url(sites, real_id, real_uri, challenge=pkce_pair()[1], state="r"),
    )
    # The real client's address as a person knows it (the flow above needed the listener).
    RedirectURI.objects.filter(client__application__client_id=real_id).update(
        uri="https://claude.ai/api/mcp/auth_callback"
    )
    lure_id, lure_uri = register_client(
        "Claude", "https://claude.ai.evil.example.net/api/mcp/auth_callback"
    )
    return authorize_url(sites, lure_id, lure_uri, challenge=pkce_pair()[1], state="l")


def test_pages_are_accessible_and_fit_a_phone(
    sites: Sites, browser: Browser, page: Page, phone: BrowserContext, client_listener: Listener
) -> None:
    """No serious or critical axe violation, no sideways scrolling at 390 px (issue 9 item 6)."""
    lure_url = lure(sites, page, client_listener)
    consent = Consent.objects.get()  # the person's consent to the real Claude
    operator = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    revocation.revoke_consent(
        consent,
        actor=audit.ActorInfo("operator", operator.pk, "op"),
        reason="ticket 4711: suspicious traffic",
    )
    acme_id, acme_uri = register_client("Acme Agent", f"{client_listener.origin}/cb")
    complete_flow(
        page,
        sites,
        client_listener,
        authorize_url(sites, acme_id, acme_uri, challenge=pkce_pair()[1], state="a"),
    )
    loop_id, loop_uri = register_client("Local CLI", "http://127.0.0.1:33418/callback")
    pages = {
        "consent-warnings": lure_url,
        "consent-loopback": authorize_url(
            sites, loop_id, loop_uri, challenge=pkce_pair()[1], state="s"
        ),
        "error-unknown-client": authorize_url(
            sites, "no-such-client", loop_uri, challenge=pkce_pair()[1], state="s"
        ),
        "connected-apps-after-revocation": f"{sites.proxy}/connections/",
    }
    # The same person on a phone: the same cookies, a 390 px wide viewport.
    phone.add_cookies(page.context.cookies())
    small = phone.new_page()
    for name, url in pages.items():
        page.goto(url)
        assert serious_violations(page) == [], name
        if name == "consent-warnings":
            assert page.locator("#namesake-warning").is_visible()
            assert page.locator("#destination-warning").is_visible()
            assert page.locator("#redirect-uri strong").inner_text() == "example.net"
        if name == "connected-apps-after-revocation":
            assert page.get_by_text("Revoked by the operator").first.is_visible()
            assert page.locator("#connections").get_by_text("Acme Agent").is_visible()
            assert "4711" not in page.content()
        shot(page, name)
        small.goto(url)
        assert not scrolls_sideways(small), name
        shot(small, f"{name}-390px")

    anonymous = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    try:
        signed_out = anonymous.new_page()
        signed_out.goto(f"{sites.proxy}/connections/")
        assert signed_out.get_by_role("button", name="Sign in with Demo Hub").is_visible()
        assert serious_violations(signed_out) == []
        assert not scrolls_sideways(signed_out)
        shot(signed_out, "connected-apps-signed-out-390px")
    finally:
        anonymous.close()


def test_consent_page_in_five_languages(sites: Sites, browser: Browser) -> None:
    """The consent page follows the browser's language; Arabic reads right to left."""
    client_id, redirect_uri = register_client("Acme Agent", "http://127.0.0.1:33418/callback")
    for language, locale in LANGUAGES.items():
        ctx = browser.new_context(locale=locale, viewport={"width": 900, "height": 900})
        ctx.set_default_timeout(TIMEOUT_MS)
        try:
            localized = ctx.new_page()
            localized.goto(
                authorize_url(sites, client_id, redirect_uri, challenge=pkce_pair()[1], state="s")
            )
            html = localized.locator("html")
            assert html.get_attribute("lang") == language
            assert html.get_attribute("dir") == ("rtl" if language == "ar" else "ltr")
            assert localized.get_by_role("button", name=APPROVE[language]).is_visible()
            assert localized.locator("#client-name").inner_text() == "Acme Agent"
            assert serious_violations(localized) == [], language
            shot(localized, f"consent-{language}")
        finally:
            ctx.close()
