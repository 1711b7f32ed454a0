"""The verification query: the one query of the hot path, compiled once per thread.

The access token by checksum (DOT stores no raw tokens, TP-01), with its application, the
application's MCPClient, the user and the latest expiry of the user's unretired consents at
that client (SEC-01) joined in. ``_CompiledLookup`` reuses the ORM's compiled SQL per thread
and database; ``_load`` is the only entry point.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections, router
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from ..flows.tokens import consent_until, live_until
from ..vault import secret_hash

checksum = secret_hash  # DOT's token_checksum of a raw token (one definition: vault)


@dataclass(frozen=True)
class _TokenRow:
    """The columns of the hot path's one query: an access token, its client and its user."""

    pk: int
    expires: datetime
    created: datetime
    scope: str
    resource: Any
    user_id: Any
    application_id: Any  # None only without an MCPClient, which _accepted refuses
    client_id: str | None
    user_is_active: bool | None  # None: no user (an RFC 7592 registration token)
    mcp_client_id: int | None  # None: a DOT application mcp_consent never registered
    mcp_client_disabled_at: datetime | None
    consent_until: datetime | None  # the latest expires_at of the user's unretired consents

    def is_expired(self) -> bool:
        # DOT's AccessToken.is_expired, on the selected columns.
        return self.expires is None or timezone.now() >= self.expires

    @property
    def consent_live(self) -> bool:
        """SEC-01: ``Consent.objects.live()`` for this user and client, split in two so that no
        time is compiled into the hot query: unretired in SQL, ``expires_at > now`` here."""
        return live_until(self.consent_until)


_HOT_LOOKUPS = (
    "pk",
    "expires",
    "created",
    "scope",
    "resource",
    "user_id",
    "application_id",
    "application__client_id",
    "user__is_active",
    "application__mcp_client__id",
    "application__mcp_client__disabled_at",
    "consent_until",
)


def _hot_queryset(checksum_value: str) -> Any:
    """The verification query: one indexed lookup by token_checksum (unique), LEFT JOINs."""
    # SEC-01: whether the user still has a live consent at the token's client comes with the
    # token, as a subquery over the consent's (user, client) index: no second query.
    return (
        get_access_token_model()
        .objects.filter(token_checksum=checksum_value)
        .annotate(consent_until=consent_until())
        .values_list(*_HOT_LOOKUPS)
        .order_by()
    )


class _CompiledLookup:
    """``_hot_queryset`` compiled once per thread and database, executed with a new checksum.

    Django compiles every queryset anew, and for this one that took many times longer than
    the database needs to answer it (docs/performance.md, "One token verification"). The
    SQL and the result converters are the ORM's own; only the compilation is reused. Guard:
    the compiled parameters must be the checksum and constants — a time or anything else
    computed when compiling would be frozen into every later verification, so such a query
    is refused here and runs through the ORM each time instead.
    """

    _local = threading.local()

    @classmethod
    def get(cls, alias: str) -> _CompiledLookup | None:
        cache = cls._local.__dict__.setdefault("compiled", {})
        if alias not in cache:
            cache[alias] = cls._compile(alias)
        return cache[alias]

    @classmethod
    def _compile(cls, alias: str) -> _CompiledLookup | None:
        first, second = "0" * 64, "f" * 64
        compiler = _hot_queryset(first)[:1].query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        other_sql, other_params = _hot_queryset(second)[:1].query.get_compiler(using=alias).as_sql()
        slots = [i for i, value in enumerate(params) if value == first]
        stable = (
            other_sql == sql
            and len(other_params) == len(params)
            and all(
                (i in slots and other == second) or (i not in slots and other == value)
                for i, (value, other) in enumerate(zip(params, other_params, strict=True))
            )
        )
        if not slots or not stable:
            return None
        return cls(compiler, sql, list(params), slots)

    def __init__(self, compiler: Any, sql: str, params: list[Any], slots: list[int]) -> None:
        self.compiler = compiler
        self.sql = sql
        self.params = params
        self.slots = slots
        self.converters = compiler.get_converters([col for col, _, _ in compiler.select])

    def fetch(self, alias: str, checksum_value: str) -> tuple[Any, ...] | None:
        params = list(self.params)
        for i in self.slots:
            params[i] = checksum_value
        with connections[alias].cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        if self.converters:
            row = next(iter(self.compiler.apply_converters([row], self.converters)))
        return tuple(row)


def _load(raw: str) -> _TokenRow | None:
    """The one query of the hot path (None when the token is unknown)."""
    value = checksum(raw)
    alias = router.db_for_read(get_access_token_model())
    compiled = _CompiledLookup.get(alias)
    row = compiled.fetch(alias, value) if compiled is not None else _hot_queryset(value).first()
    return _TokenRow(*row) if row is not None else None
