"""The hygiene command: expire what is stale, delete DCR clients nobody used (issue 4)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from mcp_consent.models import (
    AuditEvent,
    AuthorizationTransaction,
    Consent,
    MCPClient,
    RegistrationSource,
    UpstreamToken,
)
from project.demo_upstream.models import Token
from tests.browser_client import Browser, authorize_params
from tests.factories import MCPClientFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("mcp_consent_cleanup", *args, stdout=out)
    return out.getvalue()


def test_pending_transactions_expire() -> None:
    browser = Browser()
    page = browser.authorize(authorize_params(MCPClientFactory()))
    browser.post_form(page, "approve")
    AuthorizationTransaction.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "1 pending transaction(s)" in run()
    tx = AuthorizationTransaction.objects.get()
    assert tx.outcome == "failed"
    assert tx.failure_reason == "expired"
    assert tx.consumed_at is not None


def test_expired_consents_are_retired_with_their_cascade() -> None:
    client = MCPClientFactory()
    browser = Browser()
    browser.login_upstream()
    browser.run_flow(authorize_params(client))
    Consent.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    run()
    consent = Consent.objects.get()
    assert consent.expired_at is not None
    assert consent.status == Consent.Status.EXPIRED
    assert not UpstreamToken.objects.exists()
    assert not Token.objects.filter(revoked_at__isnull=True).exists()
    assert (
        AuditEvent.objects.filter(
            action=AuditEvent.Action.CONSENT_EXPIRED, actor_type="system"
        ).count()
        == 1
    )


def test_unused_dcr_clients_are_deleted_after_n_days() -> None:
    old_unused = MCPClientFactory(client_name="old unused")
    recent = MCPClientFactory(client_name="recent")
    old_used = MCPClientFactory(client_name="old but used")
    admin_client = MCPClientFactory(client_name="admin", source=RegistrationSource.ADMIN)
    long_ago = timezone.now() - timedelta(days=40)
    MCPClient.objects.filter(pk__in=[old_unused.pk, old_used.pk, admin_client.pk]).update(
        created_at=long_ago
    )
    MCPClient.objects.filter(pk=old_used.pk).update(last_used_at=timezone.now() - timedelta(days=2))
    assert "1 unused DCR client(s) would be" in run("--dry-run")
    assert MCPClient.objects.count() == 4
    run()
    assert set(MCPClient.objects.values_list("pk", flat=True)) == {
        recent.pk,
        old_used.pk,
        admin_client.pk,
    }
    deleted = AuditEvent.objects.get(action=AuditEvent.Action.CLIENT_DELETED)
    assert deleted.client_id == old_unused.application.client_id
    assert "unused for 30 days" in deleted.details["reason"]


def test_abuse_03_never_used_dcr_and_cimd_clients_go_after_the_ttl() -> None:
    """ABUSE-03: no completed authorization UNUSED_CLIENT_TTL (1 hour) after registering."""
    stale_dcr = MCPClientFactory(client_name="stale dcr")
    stale_cimd = MCPClientFactory(client_name="stale cimd", source=RegistrationSource.CIMD)
    fresh = MCPClientFactory(client_name="fresh")
    used = MCPClientFactory(client_name="used")
    admin_client = MCPClientFactory(client_name="admin", source=RegistrationSource.ADMIN)
    hour_ago = timezone.now() - timedelta(seconds=3601)
    MCPClient.objects.exclude(pk=fresh.pk).update(created_at=hour_ago)
    MCPClient.objects.filter(pk=used.pk).update(last_used_at=timezone.now())
    assert "2 never-used DCR or CIMD client(s)" in run("--dry-run")
    assert MCPClient.objects.count() == 5
    run()
    assert set(MCPClient.objects.values_list("pk", flat=True)) == {
        fresh.pk,
        used.pk,
        admin_client.pk,
    }
    assert stale_dcr.pk not in MCPClient.objects.values_list("pk", flat=True)
    assert stale_cimd.pk not in MCPClient.objects.values_list("pk", flat=True)


def test_abuse_03_abandoned_transactions_are_deleted() -> None:
    """ABUSE-03: anonymous sign-ins nobody finished leave no rows behind."""
    from django.test import Client

    from tests.browser_client import PROXY_HOST

    for _ in range(3):
        Client().post("/connections/", {"action": "sign-in"}, HTTP_HOST=PROXY_HOST)
    assert AuthorizationTransaction.objects.count() == 3
    AuthorizationTransaction.objects.update(expires_at=timezone.now() - timedelta(days=2))
    assert "3 old transaction(s)" in run()
    assert not AuthorizationTransaction.objects.exists()
