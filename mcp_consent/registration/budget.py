"""ABUSE-03: never-used clients bounded per address, for DCR and CIMD alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Q
from django.http import HttpRequest
from django.utils import timezone

from ..addresses import client_ip
from ..app_settings import app_settings
from ..models import MCPClient, RegistrationSource

# The package's logger, as before the split: operators' logging config names it.
log = logging.getLogger(__package__)


@dataclass(frozen=True)
class BudgetRefusal:
    """Why this address may not add another client now, and when to retry."""

    description: str
    retry_after: int
    last_resort: bool = False


def registration_budget_refusal(request: HttpRequest) -> BudgetRefusal | None:
    """ABUSE-03: refuse a new DCR or CIMD client while this address has too many unused ones.

    Only clients that never completed an authorization and are younger than
    UNUSED_CLIENT_TTL count: older ones are expired (the cleanup command deletes them), so
    one address filling its budget never stops another, and its own budget frees itself.
    MAX_UNUSED_DCR_CLIENTS (all addresses together) stays as a last resort, logged.
    """
    now = timezone.now()
    ttl = app_settings.UNUSED_CLIENT_TTL
    unused = MCPClient.objects.filter(
        registration_source__in=[RegistrationSource.DCR, RegistrationSource.CIMD],
        last_used_at__isnull=True,
        created_at__gt=now - timedelta(seconds=ttl),
    )
    address = client_ip(request)
    # Both counts in one statement: this runs before every registration.
    counts = unused.aggregate(
        everyone=Count("pk"), mine=Count("pk", filter=Q(registered_from=address))
    )
    if address is not None:
        mine = unused.filter(registered_from=address)
        limit = app_settings.MAX_UNUSED_CLIENTS_PER_ADDRESS
        if counts["mine"] >= limit:
            oldest = mine.order_by("created_at").values_list("created_at", flat=True).first()
            retry = int((oldest + timedelta(seconds=ttl) - now).total_seconds()) if oldest else ttl
            return BudgetRefusal(
                f"This address has registered {limit} clients that were never used; "
                "they expire after an hour without an authorization. Reuse a registered "
                "client or retry later.",
                max(1, retry),
            )
    if counts["everyone"] >= app_settings.MAX_UNUSED_DCR_CLIENTS:
        log.error(
            "registration paused: %s never-used clients from all addresses "
            "(MCP_CONSENT['MAX_UNUSED_DCR_CLIENTS']); raise it or run mcp_consent_cleanup",
            app_settings.MAX_UNUSED_DCR_CLIENTS,
        )
        return BudgetRefusal("Registration is paused; retry later.", ttl, last_resort=True)
    return None
