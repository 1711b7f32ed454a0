"""Connected apps in plain words (issue 9 item 3; REV-01..04 as the person sees them).

Each connection: the application's name, verified or not, the redirect host, the scopes, when
it was approved and last used. An operator's revocation reads "Revoked by the operator"; the
operator's free-text reason stays in the audit trail. The person is named by their upstream
login, never by the internal username.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mcp_consent.models import AuditEvent, Consent, RegistrationSource
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory
from tests.mcp_tokens import issue_token

pytestmark = pytest.mark.django_db


def connections(browser: Browser) -> str:
    page = browser.get("/connections/")
    assert page.status_code == 200
    return page.content.decode()


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_each_connection_in_plain_words() -> None:
    browser = Browser()
    browser.login_upstream()
    client = MCPClientFactory(
        client_name="Acme Agent",
        source=RegistrationSource.ADMIN,
        redirect_uris=["https://agent.acme.example.com/cb"],
    )
    browser.run_flow(authorize_params(client, scope="items:read"))
    Consent.objects.update(last_used_at=timezone.now())
    page = connections(browser)
    words = text(page)
    assert "Acme Agent" in words
    assert "Verified" in words
    assert "Sends access to agent.acme.example.com (a server of example.com)" in words
    assert "Can Read your items" in words
    assert "Approved " in words
    assert "Last used " in words
    assert "not yet" not in words
    assert "Signed in as octocat (Demo Hub)" in words
    assert "@upstream" not in page
    # No internal identifier to puzzle over: the client_id is for the operator's admin.
    assert client.application.client_id not in page


def test_operator_revocation_reads_revoked_by_the_operator_without_the_reason() -> None:
    browser = Browser()
    browser.login_upstream()
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    browser.run_flow(authorize_params(client))
    consent = Consent.objects.get()
    operator = Client()
    operator.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    url = reverse("admin:mcp_consent_consent_changelist")
    data = {"action": "revoke_consents", "_selected_action": [consent.pk], "apply": "1"}
    reason = "ticket 4711: suspicious traffic from 203.0.113.9"
    assert operator.post(url, {**data, "reason": reason}).status_code == 302

    page = connections(browser)
    words = text(page)
    assert "No application has access right now." in words
    ended = re.search(r'id="past">(.*?)</ul>', page, re.S)
    assert ended
    assert "Revoked by the operator" in ended.group(1)
    assert "Acme Agent" in ended.group(1)
    assert "Revoked by the operator · Acme Agent" in words  # the decisions list too
    assert reason not in page
    assert "4711" not in page
    # The reason is where it belongs: the audit trail.
    event = AuditEvent.objects.get(action=AuditEvent.Action.CONSENT_REVOKED)
    assert event.actor_type == "operator"
    assert event.details["reason"] == reason


def test_sec01_connected_apps_lists_a_grant_whose_tokens_outlive_its_consent() -> None:
    """SEC-01: the consent passed its expires_at, the cleanup has not run, and tokens of the
    grant still exist: the application is listed with its Revoke button, never "No
    application has access right now". Once the cascade has run, it is listed as ended."""
    browser = Browser()
    browser.login_upstream()
    client = MCPClientFactory(client_name="Acme Agent", redirect_uris=["https://app.example/cb"])
    issue_token(client=client, browser=browser)
    Consent.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    page = connections(browser)
    assert "No application has access right now." not in text(page)
    listed = re.search(r'id="connections">(.*?)</ul>', page, re.S)
    assert listed
    assert "Acme Agent" in listed.group(1)
    assert 'value="revoke"' in listed.group(1)

    call_command("mcp_consent_cleanup", stdout=StringIO())
    page = connections(browser)
    assert "No application has access right now." in text(page)
    ended = re.search(r'id="past">(.*?)</ul>', page, re.S)
    assert ended
    assert "Acme Agent" in ended.group(1)


DECLINED = {
    "en": (
        "Sign-in did not complete",
        "Authorization was declined at the provider. Nothing was changed.",
    ),
    "fr": (
        "La connexion n’a pas abouti",
        "L’autorisation a été refusée chez le fournisseur. Rien n’a été modifié.",
    ),
}


@pytest.mark.parametrize("language", sorted(DECLINED))
def test_a_sign_in_declined_at_the_upstream_is_a_page_in_the_persons_language(
    language: str,
) -> None:
    """Connected apps (UP-06 for the person): cancelling at the upstream shows a styled 400
    page, in the person's language, saying the provider declined and nothing changed; it
    signs nobody in and audits the transaction as denied. No redirect, no 500."""
    from mcp_consent.models import AuthorizationTransaction

    browser = Browser()
    callback = browser.connected_apps_sign_in(decision="cancel")
    page = browser.get(callback, **{"Accept-Language": language})
    assert page.status_code == 400
    assert not page.has_header("Location")
    html = page.content.decode()
    title, message = DECLINED[language]
    assert f"<title>{title}</title>" in html
    assert f"<h1>{title}</h1>\n<p>{message}</p>" in unescape(html)
    nonce = re.search(r"style-src 'nonce-([^']+)'", page["Content-Security-Policy"])
    assert nonce
    assert f'<style nonce="{nonce.group(1)}">' in html
    assert "_auth_user_id" not in browser.client.session
    tx = AuthorizationTransaction.objects.get()
    assert (tx.outcome, tx.failure_reason) == ("denied", "upstream returned an error")
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.SIGNED_IN).exists()


def test_a_sign_in_lands_on_connected_apps_signed_in_and_audited() -> None:
    """Connected apps: after the upstream, the person lands on /connections/ signed in as
    their upstream account, with a fresh session; the sign-in is audited as theirs, with
    the upstream login, the address and user agent of their browser."""
    browser = Browser()
    callback = browser.connected_apps_sign_in()
    landed = browser.get(callback, **{"User-Agent": "Browser/1.0"})
    assert landed.status_code == 302
    assert landed["Location"] == "/connections/"
    assert "Signed in as octocat" in text(connections(browser))
    event = AuditEvent.objects.get(action=AuditEvent.Action.SIGNED_IN)
    user = get_user_model().objects.get()
    assert (event.actor_type, event.actor_user_id) == ("user", user.pk)
    assert (event.ip_address, event.user_agent) == ("127.0.0.1", "Browser/1.0")
    assert event.details["upstream_login"] == "octocat"
