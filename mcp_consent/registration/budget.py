"""ABUSE-03: never-used clients bounded per address, for DCR and CIMD alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections, router
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from ..addresses import client_ip
from ..app_settings import app_settings
from ..models import SELF_REGISTERED_SOURCES, MCPClient

# The package's logger, as before the split: operators' logging config names it.
log = logging.getLogger(__package__)

UNUSED_SOURCES = SELF_REGISTERED_SOURCES  # what ABUSE-03 counts (the index's condition too)


@dataclass(frozen=True)
class BudgetRefusal:
    """Why this address may not add another client now, and when to retry."""

    description: str
    retry_after: int
    last_resort: bool = False


def _unused(since: datetime) -> QuerySet[MCPClient]:
    """The clients ABUSE-03 counts: DCR and CIMD, never used, registered after ``since``."""
    return MCPClient.objects.filter(
        registration_source__in=UNUSED_SOURCES, last_used_at__isnull=True, created_at__gt=since
    )


def unused_client_counts(since: datetime, address: str | None) -> tuple[int, int]:
    """(all addresses, ``address``): the never-used DCR and CIMD clients registered after
    ``since``, in one statement read from one index (MCPClient's ``mcp_client_unused_idx``).

    Written out rather than as ``_unused(since).aggregate(...)``, which gives the same
    counts (tests/test_ratelimit.py compares them): this runs before every registration, and
    the ORM spent ~3 times longer compiling that aggregate than SQLite spent answering it
    (issue 11). The condition is spelled with literals, exactly as the partial index's:
    SQLite uses a partial index only for a query whose WHERE contains the index's condition
    as written, and a bound parameter is not that.
    """
    connection = connections[router.db_for_read(MCPClient)]
    meta = MCPClient._meta
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(str(meta.get_field(name).column))  # type: ignore[union-attr]

    sources = ", ".join(f"'{source}'" for source in UNUSED_SOURCES)  # constants of ours
    # Only our identifiers and constants are formatted in; the values are parameters.
    sql = (
        f"SELECT COUNT(*), COUNT(CASE WHEN {column('registered_from')} = %s THEN 1 END) "  # noqa: S608
        f"FROM {quote(meta.db_table)} "
        f"WHERE {column('last_used_at')} IS NULL AND {column('registration_source')} IN "
        f"({sources}) AND {column('created_at')} > %s"
    )
    params = [
        meta.get_field("registered_from").get_db_prep_value(address, connection),
        meta.get_field("created_at").get_db_prep_value(since, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        everyone, mine = cursor.fetchone()
    return int(everyone), int(mine) if address is not None else 0


def registration_budget_refusal(request: HttpRequest) -> BudgetRefusal | None:
    """ABUSE-03: refuse a new DCR or CIMD client while this address has too many unused ones.

    Only clients that never completed an authorization and are younger than
    UNUSED_CLIENT_TTL count: older ones are expired (the cleanup command deletes them), so
    one address filling its budget never stops another, and its own budget frees itself.
    MAX_UNUSED_DCR_CLIENTS (all addresses together) stays as a last resort, logged.
    """
    now = timezone.now()
    ttl = app_settings.UNUSED_CLIENT_TTL
    since = now - timedelta(seconds=ttl)
    address = client_ip(request)
    everyone, mine = unused_client_counts(since, address)
    if address is not None:
        limit = app_settings.MAX_UNUSED_CLIENTS_PER_ADDRESS
        if mine >= limit:
            oldest = (
                _unused(since)
                .filter(registered_from=address)
                .order_by("created_at")
                .values_list("created_at", flat=True)
                .first()
            )
            retry = int((oldest + timedelta(seconds=ttl) - now).total_seconds()) if oldest else ttl
            return BudgetRefusal(
                f"This address has registered {limit} clients that were never used; "
                "they expire after an hour without an authorization. Reuse a registered "
                "client or retry later.",
                max(1, retry),
            )
    if everyone >= app_settings.MAX_UNUSED_DCR_CLIENTS:
        log.error(
            "registration paused: %s never-used clients from all addresses "
            "(MCP_CONSENT['MAX_UNUSED_DCR_CLIENTS']); raise it or run mcp_consent_cleanup",
            app_settings.MAX_UNUSED_DCR_CLIENTS,
        )
        return BudgetRefusal("Registration is paused; retry later.", ttl, last_resort=True)
    return None
