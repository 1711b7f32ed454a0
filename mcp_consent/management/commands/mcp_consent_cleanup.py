"""Hygiene: expire pending upstream transactions and consents, delete unused clients.

ABUSE-03: DCR and CIMD clients without a completed authorization UNUSED_CLIENT_TTL after
registering (an MCP client registers right before it authorizes) are deleted, and so are
transactions past TRANSACTION_RETENTION (abandoned sign-ins included), so a flood leaves
nothing behind. DCR clients not used for UNUSED_CLIENT_DAYS go too.

Run it from cron (e.g. hourly). Every change goes through the flows, so each deletion and
expiry has its cascade (tokens, upstream tokens) and its audit event.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from mcp_consent import audit
from mcp_consent.app_settings import app_settings
from mcp_consent.flows import clients, revocation
from mcp_consent.models import AuthorizationTransaction, Consent, MCPClient, RegistrationSource


class Command(BaseCommand):
    help = "Expire pending transactions and consents; delete DCR clients unused for UNUSED_CLIENT_DAYS."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--unused-days",
            type=int,
            default=None,
            help="Override MCP_CONSENT['UNUSED_CLIENT_DAYS'].",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change, change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        dry = options["dry_run"]
        days = (
            options["unused_days"]
            if options["unused_days"] is not None
            else app_settings.UNUSED_CLIENT_DAYS
        )

        pending = AuthorizationTransaction.objects.filter(
            consumed_at__isnull=True, expires_at__lte=now
        )
        expired_tx = pending.count()
        if not dry:
            pending.update(
                consumed_at=now,
                outcome=AuthorizationTransaction.Outcome.FAILED,
                failure_reason="expired",
            )

        consents = list(Consent.objects.lapsed())
        if not dry:
            for consent in consents:
                revocation.expire_consent(consent)

        old_tx = AuthorizationTransaction.objects.filter(
            expires_at__lte=now - timedelta(seconds=app_settings.TRANSACTION_RETENTION)
        )
        deleted_tx = old_tx.count()
        if not dry:
            old_tx.delete()

        cutoff = now - timedelta(days=days)
        unused = list(
            MCPClient.objects.filter(registration_source=RegistrationSource.DCR).filter(
                Q(last_used_at__isnull=True, created_at__lte=cutoff) | Q(last_used_at__lte=cutoff)
            )
        )
        never_used = list(
            MCPClient.objects.filter(
                registration_source__in=[RegistrationSource.DCR, RegistrationSource.CIMD],
                last_used_at__isnull=True,
                created_at__lte=now - timedelta(seconds=app_settings.UNUSED_CLIENT_TTL),
            ).exclude(pk__in=[c.pk for c in unused])
        )
        if not dry:
            for client in unused:
                clients.delete_client(client, actor=audit.SYSTEM, reason=f"unused for {days} days")
            for client in never_used:
                clients.delete_client(
                    client, actor=audit.SYSTEM, reason="no authorization since it registered"
                )
        verb = "would be" if dry else "were"
        self.stdout.write(
            f"{expired_tx} pending transaction(s), {len(consents)} consent(s) and "
            f"{len(unused)} unused DCR client(s) {verb} expired or deleted; "
            f"{len(never_used)} never-used DCR or CIMD client(s) and {deleted_tx} old "
            f"transaction(s) {verb} deleted"
        )
