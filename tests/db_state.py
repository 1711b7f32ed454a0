"""What the database holds, counted per table: the "nothing half-written" assertions.

Fuzz, fault and concurrency tests take a ``snapshot()`` before an attack and compare it
after, so a row that should not exist (a second consent, an orphan token, a client created
by a refused registration) shows up by table name in the failure message.
"""

from __future__ import annotations

from django.db.models import Model
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
)

from mcp_consent import models as mcp_models


def _models() -> dict[str, type[Model]]:
    return {
        "application": get_application_model(),
        "mcp_client": mcp_models.MCPClient,
        "redirect_uri": mcp_models.RedirectURI,
        "transaction": mcp_models.AuthorizationTransaction,
        "consent": mcp_models.Consent,
        "identity": mcp_models.UpstreamIdentity,
        "upstream_token": mcp_models.UpstreamToken,
        "grant": get_grant_model(),
        "access_token": get_access_token_model(),
        "refresh_token": get_refresh_token_model(),
    }


def snapshot() -> dict[str, int]:
    """Row count of every table an OAuth flow writes."""
    return {name: model.objects.count() for name, model in _models().items()}


def grown(before: dict[str, int], after: dict[str, int] | None = None) -> dict[str, int]:
    """Tables with more rows than ``before`` (name -> how many more)."""
    after = after if after is not None else snapshot()
    return {k: after[k] - before[k] for k in before if after[k] > before[k]}


def audit_event_model() -> type[mcp_models.AuditEvent]:
    """The AuditEvent model (issue 4). No fallback: a scan of a trail that is not there
    would pass vacuously (issue 8), so a missing model is an error, not a skipped check."""
    return mcp_models.AuditEvent


def audit_actions(client_id: str) -> list[str]:
    """Actions recorded for one client, oldest first."""
    model = audit_event_model()
    return list(
        model.objects.filter(client_id=client_id).order_by("pk").values_list("action", flat=True)
    )


def audit_text() -> str:
    """Every recorded audit field as one string (for secret scans).

    Fails when the trail is empty: a secret scan over no rows proves nothing, and the scans
    run after flows that must have been audited.
    """
    rows = [repr(row) for row in audit_event_model().objects.order_by("pk").values()]
    assert rows, "the audit trail is empty: the secret scan would prove nothing"
    return "\n".join(rows)


def require_postgresql(what: str) -> None:
    """Skip on SQLite, saying why -- but fail where PostgreSQL was promised.

    ``make test-postgres`` sets MCP_CONSENT_REQUIRE_POSTGRES=1: there a PostgreSQL-only test
    that would skip is a broken setup, and CI must not report it as merely skipped.
    """
    import os

    import pytest
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    message = f"needs PostgreSQL ({what}): run `make test-postgres` (DATABASE_URL=postgres://...)"
    if os.environ.get("MCP_CONSENT_REQUIRE_POSTGRES"):
        pytest.fail(
            f"{message}; MCP_CONSENT_REQUIRE_POSTGRES is set but the database is {connection.vendor}",
            pytrace=False,
        )
    pytest.skip(message)
