"""The audit trail: written with each change, append-only, hash-chained, verifiable (issue 4)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from mcp_consent import audit
from mcp_consent.models import AuditEvent, AuditImmutableError
from tests.browser_client import Browser, authorize_params, code_from
from tests.conftest import pkce_pair
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db
A = AuditEvent.Action


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))


def full_flow_with_token() -> tuple[Browser, dict]:
    client = MCPClientFactory(redirect_uris=["https://app.example/cb"])
    browser = Browser()
    browser.login_upstream()
    verifier, challenge = pkce_pair()
    final = browser.run_flow(authorize_params(client, challenge=challenge))
    token = browser.client.post(
        "/token/",
        {
            "grant_type": "authorization_code",
            "code": code_from(final),
            "client_id": client.application.client_id,
            "redirect_uri": "https://app.example/cb",
            "code_verifier": verifier,
        },
        HTTP_HOST="127.0.0.1:8000",
    ).json()
    return browser, token


def test_a_flow_writes_its_events_in_order() -> None:
    """Registration, consent shown/approved, callback, consent recorded, token issued and refreshed."""
    browser, token = full_flow_with_token()
    client_id = AuditEvent.objects.filter(action=A.CLIENT_REGISTERED).get().client_id
    browser.client.post(
        "/token/",
        {
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": client_id,
        },
        HTTP_HOST="127.0.0.1:8000",
    )
    assert actions() == [
        A.CLIENT_REGISTERED,
        A.CONSENT_SHOWN,
        A.CONSENT_APPROVED,
        A.CONSENT_GRANTED,
        A.CALLBACK_ACCEPTED,
        A.TOKEN_ISSUED,
        A.TOKEN_REFRESHED,
    ]
    approved = AuditEvent.objects.get(action=A.CONSENT_APPROVED)
    # SM-04: requested vs previously granted, with a correlation id.
    assert approved.details["scopes_requested"] == ["items:read"]
    assert approved.details["elevation"] == ["items:read"] and approved.details["correlation_id"]
    assert approved.ip_address == "127.0.0.1" and approved.actor_type == "anonymous"


def test_no_secret_ever_reaches_the_trail(upstream_http) -> None:
    """Issue 4: each event has actor, IP, user agent, client, consent and details, never a secret."""
    browser, token = full_flow_with_token()
    dump = json.dumps(list(AuditEvent.objects.values()), default=str)
    for secret in (token["access_token"], token["refresh_token"]):
        assert secret not in dump
    for request in upstream_http.requests:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            assert header.split()[1] not in dump
    assert "state=" not in dump and "code=" not in dump


def test_refusals_are_audited_with_their_reason() -> None:
    browser = Browser()
    browser.get("/upstream/callback/?state=forged&code=x")
    refused = AuditEvent.objects.get(action=A.CALLBACK_REFUSED)
    assert refused.details["reason"] == "unknown state"
    Browser().client.post(
        "/register/",
        json.dumps({"redirect_uris": ["http://evil.example/cb"]}),
        content_type="application/json",
        HTTP_HOST="127.0.0.1:8000",
    )
    assert (
        AuditEvent.objects.get(action=A.REGISTRATION_REFUSED).details["error"]
        == "invalid_redirect_uri"
    )


def test_denial_is_audited_and_stores_nothing_else() -> None:
    client = MCPClientFactory()
    browser = Browser()
    browser.post_form(browser.authorize(authorize_params(client)), "deny")
    assert actions()[-1] == A.CONSENT_DENIED


def test_events_cannot_be_changed_or_deleted() -> None:
    """Append-only: save of an existing row, delete, queryset update and delete all raise."""
    event = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="x")
    event.action = A.CLIENT_DELETED
    with pytest.raises(AuditImmutableError):
        event.save()
    with pytest.raises(AuditImmutableError):
        event.delete()
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.filter(pk=event.pk).update(action=A.CLIENT_DELETED)
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.all().delete()


def test_verify_command_accepts_an_intact_chain() -> None:
    full_flow_with_token()
    out = StringIO()
    call_command("mcp_consent_verify_audit", stdout=out)
    assert "audit chain intact" in out.getvalue()


def _raw_sql(sql: str, params: list) -> None:
    """What an intruder with database access does, bypassing the ORM's refusals."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE mcp_consent_auditevent DISABLE TRIGGER mcp_consent_auditevent_immutable"
            )
            cursor.execute(sql, params)
            cursor.execute(
                "ALTER TABLE mcp_consent_auditevent ENABLE TRIGGER mcp_consent_auditevent_immutable"
            )
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


@pytest.mark.parametrize(
    "tamper, problem",
    [
        (
            "UPDATE mcp_consent_auditevent SET actor_label = 'someone else' WHERE id = %s",
            "was edited",
        ),
        ("DELETE FROM mcp_consent_auditevent WHERE id = %s", "removed or inserted"),
    ],
)
def test_a_tampered_row_is_detected_and_named(tamper: str, problem: str) -> None:
    """Issue 4: the verify command names the first broken row."""
    events = [
        audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=f"c{i}") for i in range(5)
    ]
    target = events[2]
    _raw_sql(tamper, [target.pk])
    with pytest.raises(CommandError) as error:
        call_command("mcp_consent_verify_audit", stdout=StringIO())
    named = target.pk if "edited" in problem else events[3].pk
    assert f"event #{named}" in str(error.value) and problem in str(error.value)


def test_removing_the_newest_rows_is_detected() -> None:
    events = [
        audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id=f"c{i}") for i in range(3)
    ]
    _raw_sql("DELETE FROM mcp_consent_auditevent WHERE id = %s", [events[-1].pk])
    with pytest.raises(CommandError, match="end of the chain"):
        call_command("mcp_consent_verify_audit", stdout=StringIO())


def test_postgresql_itself_refuses_updates() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the database trigger exists on PostgreSQL; other backends rely on the model")
    from django.db import DatabaseError, transaction

    event = audit.record(A.CLIENT_UPDATED, actor=audit.SYSTEM, client_id="x")
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE mcp_consent_auditevent SET action = 'x' WHERE id = %s", [event.pk])
