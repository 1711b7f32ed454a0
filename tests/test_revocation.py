"""Revocation that cascades, from every door: admin, Connected apps, RFC 7592, RFC 7009 (issue 4).

consent -> DOT grants, access and refresh tokens -> the upstream token, revoked at the
upstream's RFC 7009 endpoint, then deleted; idempotent; audited; signalled on commit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from oauth2_provider.models import get_refresh_token_model

from mcp_consent import audit, signals
from mcp_consent.flows import revocation
from mcp_consent.models import (
    AuditEvent,
    AuthorizationTransaction,
    Consent,
    MCPClient,
    UpstreamToken,
)
from project.demo_upstream.models import RequestLog, Token
from tests.asgi_helpers import http_client, serve
from tests.browser_client import PROXY_HOST, Browser, authorize_params, form_fields
from tests.factories import MCPClientFactory
from tests.mcp_tokens import REDIRECT_URI, Issued, access_token_valid, issue_token

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
REDIRECT = REDIRECT_URI


def upstream_revocations() -> int:
    return RequestLog.objects.filter(path__endswith="/demo-upstream/revoke").count()


def assert_fully_revoked(connected: Issued) -> None:
    consent = connected.consent
    assert consent.revoked_at is not None
    assert consent.status == Consent.Status.REVOKED
    assert not access_token_valid(connected.access_token)
    assert connected.refresh().json()["error"] in {"invalid_grant", "invalid_client"}
    assert not UpstreamToken.objects.filter(consent=consent).exists()
    # The demo upstream recorded the revocation of the upstream tokens it had issued.
    assert not Token.objects.filter(revoked_at__isnull=True).exists()


@pytest.fixture
def operator_client() -> Client:
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_operator_revokes_in_the_admin(operator_client, django_capture_on_commit_callbacks) -> None:
    """Issue 4 item 6: admin revoke -> access token refused at once, refresh fails, upstream told."""
    connected = issue_token()
    assert access_token_valid(connected.access_token)
    sent: list[Consent] = []
    signals.consent_revoked.connect(
        lambda sender, consent, **kw: sent.append(consent), weak=False, dispatch_uid="t"
    )
    before = upstream_revocations()
    url = reverse("admin:mcp_consent_consent_changelist")
    data = {"action": "revoke_consents", "_selected_action": [connected.consent.pk]}
    confirm = operator_client.post(url, data)
    assert confirm.status_code == 200
    assert b"Reason" in confirm.content
    with django_capture_on_commit_callbacks(execute=True):
        done = operator_client.post(url, {**data, "apply": "1", "reason": "lost laptop"})
    assert done.status_code == 302
    assert_fully_revoked(connected)
    assert upstream_revocations() > before
    revoked = AuditEvent.objects.get(action=A.CONSENT_REVOKED)
    assert revoked.actor_type == "operator"
    assert revoked.details["reason"] == "lost laptop"
    assert (
        AuditEvent.objects.get(action=A.UPSTREAM_TOKEN_REVOKED).details["outcome"]
        == "revoked at the upstream"
    )
    assert [c.pk for c in sent] == [connected.consent.pk]
    signals.consent_revoked.disconnect(dispatch_uid="t")


def test_revocation_is_idempotent() -> None:
    connected = issue_token()
    actor = audit.SYSTEM
    assert revocation.revoke_consent(connected.consent, actor=actor, reason="first") is True
    assert revocation.revoke_consent(connected.consent, actor=actor, reason="again") is False
    assert AuditEvent.objects.filter(action=A.CONSENT_REVOKED).count() == 1
    assert connected.consent.revoke_reason == "first"


def test_revoking_one_client_leaves_the_others_alone() -> None:
    browser = Browser()
    browser.login_upstream()
    first = issue_token(browser=browser)
    second = issue_token(browser=browser, client_name="Other App")
    revocation.revoke_consent(first.consent, actor=audit.SYSTEM, reason="test")
    assert not access_token_valid(first.access_token)
    assert access_token_valid(second.access_token)
    assert second.refresh().status_code == 200
    assert UpstreamToken.objects.filter(consent=second.consent).exists()


def test_user_revokes_on_connected_apps() -> None:
    """Item 4: the same cascade from the person's own page, POST with CSRF."""
    connected = issue_token()
    page = connected.browser.get("/connections/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Acme Agent" in html
    assert "app.example" in html
    assert "Read your items" in html
    token = form_fields(html)["csrfmiddlewaretoken"]
    revoked = connected.browser.client.post(
        "/connections/",
        {"action": "revoke", "consent": connected.consent.pk, "csrfmiddlewaretoken": token},
        HTTP_HOST=PROXY_HOST,
    )
    assert revoked.status_code == 303
    assert_fully_revoked(connected)
    after = connected.browser.get("/connections/").content.decode()
    assert "No application has access right now." in after
    assert "Revoked by you" in after
    # The user's own revocation reason is an audit detail, not page text (issue 9 item 3).
    assert "revoked by the user on Connected apps" not in after
    assert AuditEvent.objects.get(action=A.CONSENT_REVOKED).actor_type == "user"


def test_connected_apps_revoke_needs_csrf_and_ownership() -> None:
    owner = issue_token()
    other = Browser()
    other.login_upstream("hubot")
    issue_token(browser=other, client_name="Hubot's App")
    strict = other.client
    page = other.get("/connections/")
    token = form_fields(page.content.decode())["csrfmiddlewaretoken"]
    # Someone else's consent is not found, and nothing changes.
    response = strict.post(
        "/connections/",
        {"action": "revoke", "consent": owner.consent.pk, "csrfmiddlewaretoken": token},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 404
    # Without the CSRF token: refused.
    response = strict.post(
        "/connections/", {"action": "revoke", "consent": owner.consent.pk}, HTTP_HOST=PROXY_HOST
    )
    assert response.status_code == 403
    assert owner.consent.revoked_at is None


def test_connected_apps_signs_in_through_the_upstream_without_a_client() -> None:
    """Item 4: no local password: the upstream leg with only the base scopes, no consent."""
    browser = Browser()
    page = browser.get("/connections/")
    assert "Sign in with Demo Hub" in page.content.decode()
    token = form_fields(page.content.decode())["csrfmiddlewaretoken"]
    to_upstream = browser.client.post(
        "/connections/", {"action": "sign-in", "csrfmiddlewaretoken": token}, HTTP_HOST=PROXY_HOST
    )
    assert to_upstream.status_code == 303
    assert "scope=read%3Auser&" in to_upstream["Location"]
    browser.login_upstream()
    callback = browser.through_upstream(to_upstream["Location"])
    landed = browser.get(callback["Location"])
    assert landed.status_code == 302
    assert landed["Location"] == "/connections/"
    page = browser.get("/connections/").content.decode()
    # The upstream login, never the internal username (issue 9 item 3).
    assert 'Signed in as <strong class="name">octocat</strong>' in page
    assert "@upstream" not in page
    assert not Consent.objects.exists()
    assert not UpstreamToken.objects.exists()
    assert AuditEvent.objects.filter(action=A.SIGNED_IN).count() == 1


def test_connected_apps_sign_in_of_a_known_person_is_that_person_and_audited() -> None:
    """SEC-04, SM-04 (who did what): a person who connected an app before signs in at
    Connected apps through the upstream. They become the local user of their upstream
    identity (their app is listed, nobody else's), the sign-in's transaction is completed for
    that user, and one audit event says who signed in, from where, with which upstream login
    and which transaction. Must not allow a sign-in that lands as another user, leaves the
    transaction open or unattributed, or is missing from the trail."""
    issued = issue_token(client_name="Known App")
    person = Consent.objects.get().user
    browser = Browser()
    callback = browser.connected_apps_sign_in()
    assert browser.get(callback)["Location"] == "/connections/"
    listed = browser.get("/connections/").content.decode()
    assert "Known App" in listed
    assert browser.client.session["_auth_user_id"] == str(person.pk)
    sign_in = AuthorizationTransaction.objects.get(purpose=AuthorizationTransaction.Purpose.SIGN_IN)
    assert sign_in.user_id == person.pk
    assert sign_in.outcome == AuthorizationTransaction.Outcome.COMPLETED
    event = AuditEvent.objects.get(action=A.SIGNED_IN)
    assert (event.actor_type, event.actor_user_id, event.actor_label) == (
        AuditEvent.Actor.USER,
        person.pk,
        person.get_username(),
    )
    assert event.ip_address == "127.0.0.1"
    assert event.details == {"correlation_id": sign_in.pk, "upstream_login": "octocat"}
    assert access_token_valid(issued.access_token)  # signing in changes no grant


def test_rfc7592_delete_cascades(django_capture_on_commit_callbacks) -> None:
    """MGMT-04 / UP-09: DELETE by the client revokes everything it held, upstream included."""
    connected = issue_token()
    token = connected.client.registered.registration_access_token
    client_id = connected.client.application.client_id
    response = Client().delete(
        f"/register/{client_id}/", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST=PROXY_HOST
    )
    assert response.status_code == 204
    assert not access_token_valid(connected.access_token)
    assert not Consent.objects.exists()
    assert not UpstreamToken.objects.exists()
    assert not Token.objects.filter(revoked_at__isnull=True).exists()
    deleted = AuditEvent.objects.get(action=A.CLIENT_DELETED)
    assert deleted.client_id == client_id
    assert deleted.actor_type == "client"
    again = Client().get(
        f"/register/{client_id}/", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST=PROXY_HOST
    )
    assert again.status_code == 401


def _put(connected: Issued, **changes: Any) -> Any:
    token = connected.client.registered.registration_access_token
    client_id = connected.client.application.client_id
    body = {
        "client_id": client_id,
        "client_name": "Acme Agent",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        **changes,
    }
    return Client().put(
        f"/register/{client_id}/",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_HOST=PROXY_HOST,
    )


def test_mgmt06_renaming_a_client_invalidates_its_consents() -> None:
    connected = issue_token()
    assert _put(connected, client_name="Totally Different Name").status_code == 200
    assert_fully_revoked(connected)
    assert connected.consent.revoke_reason == "client metadata changed"


def test_mgmt06_changing_redirect_uris_invalidates_only_consents_bound_to_removed_ones() -> None:
    browser = Browser()
    browser.login_upstream()
    client = MCPClientFactory(redirect_uris=[REDIRECT, "https://app.example/other"])
    kept = issue_token(client=client, browser=browser)  # bound to REDIRECT (the first)
    assert _put(kept, redirect_uris=[REDIRECT, "https://app.example/new"]).status_code == 200
    assert kept.consent.revoked_at is None
    assert access_token_valid(kept.access_token)
    assert _put(kept, redirect_uris=["https://app.example/new"]).status_code == 200
    assert kept.consent.revoked_at is not None


def test_rfc7009_revoking_the_last_token_ends_the_consent() -> None:
    """UP-09 / REV-01: the client revoking its refresh token also retires the upstream token."""
    connected = issue_token()
    response = Client().post(
        "/revoke/",
        {"token": connected.refresh_token, "client_id": connected.client.application.client_id},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 200
    assert_fully_revoked(connected)
    assert AuditEvent.objects.filter(action=A.TOKEN_REVOKED).count() == 1


def test_rfc7009_only_this_persons_live_tokens_here_keep_their_consent() -> None:
    """UP-09: revoking a person's last live token at a client ends their consent there, the
    audit event naming them with no grant still active. Another person's live tokens at the
    client, or this person's at another client, keep nothing alive; a second token family of
    this person at this client does (grant still active, the consent kept)."""
    from tests.mcp_tokens import issue_token

    def revoke(connected: Any, token: str) -> None:
        client_id = connected.client.application.client_id
        response = Client().post(
            "/revoke/", {"token": token, "client_id": client_id}, HTTP_HOST=PROXY_HOST
        )
        assert response.status_code == 200

    mine = issue_token(username="octocat")
    my_consent = Consent.objects.get()
    issue_token(client=mine.client, username="hubot")  # another person, same client
    issue_token(username="octocat")  # this person, another client
    second_family = issue_token(client=mine.client, username="octocat", browser=mine.browser)
    assert Consent.objects.count() == 3  # the second family renewed my consent
    assert get_refresh_token_model().objects.filter(user=my_consent.user).count() == 3

    revoke(mine, mine.refresh_token)
    event = AuditEvent.objects.filter(action=A.TOKEN_REVOKED).get()
    assert event.subject_user_id == my_consent.user_id
    assert event.client_id == mine.client.application.client_id
    assert (event.actor_type, event.actor_label) == ("client", event.client_id)
    assert event.details == {"grant_still_active": True}
    my_consent.refresh_from_db()
    assert my_consent.revoked_at is None  # the second family is live

    revoke(second_family, second_family.refresh_token)
    last = AuditEvent.objects.filter(action=A.TOKEN_REVOKED).latest("pk")
    assert last.details == {"grant_still_active": False}
    assert last.subject_user_id == my_consent.user_id
    my_consent.refresh_from_db()
    assert my_consent.revoked_at is not None
    ended = AuditEvent.objects.filter(action=A.CONSENT_REVOKED).get()
    assert (ended.actor_type, ended.actor_label) == ("client", event.client_id)
    assert ended.consent_id == my_consent.pk
    assert Consent.objects.filter(revoked_at__isnull=True).count() == 2  # hubot's, and elsewhere


def test_rfc7009_other_clients_token_is_untouched() -> None:
    """REV-02: client B cannot revoke client A's token (200 by RFC 7009, but nothing happens)."""
    victim = issue_token()
    other = MCPClientFactory(client_name="Other")
    response = Client().post(
        "/revoke/",
        {"token": victim.refresh_token, "client_id": other.application.client_id},
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 200
    assert victim.refresh().status_code == 200
    assert victim.consent.revoked_at is None


def test_disabling_a_client_in_the_admin(operator_client) -> None:
    connected = issue_token()
    url = reverse("admin:mcp_consent_mcpclient_changelist")
    data = {
        "action": "disable_clients",
        "_selected_action": [connected.client.pk],
        "apply": "1",
        "reason": "abuse report",
    }
    assert operator_client.post(url, data).status_code == 302
    assert_fully_revoked(connected)
    page = Browser().authorize(authorize_params(connected.client))
    assert page.status_code == 400
    assert not page.has_header("Location")
    assert (
        AuditEvent.objects.filter(action=A.CLIENT_DISABLED).get().details["reason"]
        == "abuse report"
    )
    token = connected.client.registered.registration_access_token
    response = Client().get(
        f"/register/{connected.client.application.client_id}/",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_HOST=PROXY_HOST,
    )
    assert response.status_code == 401


def test_admin_delete_button_uses_the_cascade(operator_client) -> None:
    connected = issue_token()
    url = reverse("admin:mcp_consent_mcpclient_changelist")
    data = {
        "action": "delete_clients",
        "_selected_action": [connected.client.pk],
        "apply": "1",
        "reason": "spam",
    }
    assert operator_client.post(url, data).status_code == 302
    assert not MCPClient.objects.exists()
    assert not access_token_valid(connected.access_token)
    assert not Token.objects.filter(revoked_at__isnull=True).exists()
    assert AuditEvent.objects.get(action=A.CLIENT_DELETED).details["reason"] == "spam"


@pytest.fixture
def auditor() -> Client:
    user = get_user_model().objects.create_user("auditor", "a@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="consent auditor"))
    client = Client()
    client.force_login(user)
    return client


def test_auditor_group_reads_everything_and_changes_nothing(auditor) -> None:
    """Issue 4 item 2/6: the data-migration group can view, not change, revoke or delete."""
    connected = issue_token()
    for name in (
        "mcpclient",
        "consent",
        "auditevent",
        "upstreamtoken",
        "authorizationtransaction",
        "upstreamidentity",
    ):
        assert auditor.get(reverse(f"admin:mcp_consent_{name}_changelist")).status_code == 200, name
    change_url = reverse("admin:mcp_consent_consent_change", args=[connected.consent.pk])
    assert auditor.get(change_url).status_code == 200
    # Actions that change anything are not offered, and posting them does nothing.
    listing = auditor.get(reverse("admin:mcp_consent_consent_changelist")).content.decode()
    assert "revoke_consents" not in listing
    auditor.post(
        reverse("admin:mcp_consent_consent_changelist"),
        {
            "action": "revoke_consents",
            "_selected_action": [connected.consent.pk],
            "apply": "1",
            "reason": "x",
        },
    )
    auditor.post(
        reverse("admin:mcp_consent_mcpclient_changelist"),
        {
            "action": "delete_clients",
            "_selected_action": [connected.client.pk],
            "apply": "1",
            "reason": "x",
        },
    )
    assert connected.consent.revoked_at is None
    assert MCPClient.objects.exists()
    assert auditor.post(change_url, {}).status_code == 403
    assert (
        auditor.get(
            reverse("admin:mcp_consent_mcpclient_delete", args=[connected.client.pk])
        ).status_code
        == 403
    )
    # The CSV export is a read: allowed.
    export = auditor.post(
        reverse("admin:mcp_consent_auditevent_changelist"),
        {
            "action": "export_csv",
            "_selected_action": list(AuditEvent.objects.values_list("pk", flat=True)),
        },
    )
    assert export.status_code == 200
    assert export["Content-Type"] == "text/csv"
    body = b"".join(export.streaming_content).decode()
    assert body.splitlines()[0].startswith("id,created_at,action")
    assert "consent_granted" in body
    assert connected.access_token not in body


def test_admin_never_shows_tokens(operator_client) -> None:
    connected = issue_token()
    pages = [
        reverse("admin:mcp_consent_upstreamtoken_changelist"),
        reverse("admin:mcp_consent_upstreamtoken_change", args=[UpstreamToken.objects.get().pk]),
        reverse("admin:mcp_consent_auditevent_changelist"),
        reverse("admin:mcp_consent_consent_change", args=[connected.consent.pk]),
    ]
    for url in pages:
        html = operator_client.get(url).content.decode()
        assert connected.access_token not in html
        assert connected.refresh_token not in html
        assert UpstreamToken.objects.get().access_token_encrypted not in html


def test_refresh_token_reuse_is_audited() -> None:
    """AS-44: presenting a rotated refresh token revokes the family and leaves an audit row."""
    connected = issue_token()
    first = connected.refresh()
    assert first.status_code == 200
    replay = connected.refresh()
    assert replay.json()["error"] == "invalid_grant"
    reuse = AuditEvent.objects.get(action=A.REFRESH_TOKEN_REUSE)
    assert reuse.details["family_revoked"] is True
    assert (
        not get_refresh_token_model()
        .objects.filter(revoked__isnull=True, application=connected.client.application)
        .exists()
    )


def test_operator_revocation_stops_the_clients_next_mcp_call(operator_client) -> None:
    """Issue 4 "done means": an operator revokes, the client's next MCP call fails (401)."""
    from mcp_consent import resource

    connected = issue_token()
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {
        "Authorization": f"Bearer {connected.access_token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }

    async def call(app: Any) -> int:
        async with http_client(app) as http:
            return (await http.post("/mcp", json=listing, headers=headers)).status_code

    assert serve(call) == 200
    url = reverse("admin:mcp_consent_consent_changelist")
    operator_client.post(
        url,
        {
            "action": "revoke_consents",
            "_selected_action": [connected.consent.pk],
            "apply": "1",
            "reason": "test",
        },
    )
    assert serve(call) == 401
    with pytest.raises(resource.InvalidToken):
        resource.verify_token(connected.access_token)
