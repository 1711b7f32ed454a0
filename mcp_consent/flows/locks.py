"""THE lock order of mcp_consent's writes (SEC-12). Every flow follows it; this is its one place.

    1. MCPClient          (one row; several in primary-key order)
    2. Consent            (the rows concerned, in primary-key order)
    3. DOT's Grant        (an authorization code)
    4. RefreshToken, then AccessToken
    5. UpstreamToken

Parents before children, and the client always first: every writer of a client's consents,
grants and tokens locks the client's row before anything else, so two of them queue there.
A token request (code redemption, refresh) locks its client before the validator locks the
Grant or the refresh token (the validator's ``_load_application`` loads the client with ``lock_client_by_client_id``; its consent's
``last_used_at`` is updated after the token rows, safely, since nobody else can hold that
consent without the client); a revocation, a disable, a delete, a metadata change and the
upstream callback lock the client first, then the consents, then let the cascade reach the
tokens. Two writers taking these rows in opposite orders deadlock on
PostgreSQL, which aborts one of them: a person's Revoke failing while the client hammers
refresh. In one order they queue instead, and whoever goes second sees what the first
committed (a refresh after a revocation is refused; a revocation after a refresh revokes the
new tokens too).

Only the named rows are locked (``of=("self",)``): a SELECT ... FOR UPDATE with
select_related would lock the joined Application (or user) too, out of this order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..models import Consent, MCPClient


def lock_client(pk: int) -> MCPClient:
    """Step 1: the client's row (with its Application loaded, not locked)."""
    return (
        MCPClient.objects.select_for_update(of=("self",)).select_related("application").get(pk=pk)
    )


def lock_client_of(application: Any) -> MCPClient | None:
    """Step 1 for a token request, which knows the DOT Application."""
    return (
        MCPClient.objects.select_for_update(of=("self",))
        .select_related("application")
        .filter(application=application)
        .first()
    )


def lock_consents(pks: Iterable[int]) -> list[Consent]:
    """Step 2: the consents, in primary-key order (their clients must be locked already)."""
    return list(
        Consent.objects.select_for_update(of=("self",))
        .select_related("client__application", "user")
        .filter(pk__in=list(pks))
        .order_by("pk")
    )


def lock_consents_and_clients(consents: Iterable[Consent]) -> list[Consent]:
    """Steps 1 and 2 for a set of consents of any clients: every client, then every consent."""
    consents = list(consents)
    for client_pk in sorted({c.client_id for c in consents}):
        lock_client(client_pk)
    return lock_consents(c.pk for c in consents)


def lock_client_by_client_id(client_id: str) -> MCPClient | None:
    """Step 1 for a token request, in the query that loads its client (no extra statement)."""
    return (
        MCPClient.objects.select_for_update(of=("self",))
        .select_related("application")
        .filter(application__client_id=client_id)
        .first()
    )
