"""Token verification: the one definition of "a token this MCP server accepts" (RS-08).

``verify_token`` (MCP endpoints) and ``introspect`` (RFC 7662, INT-02, INT-03) both accept
exactly the tokens that pass ``_accepted``: known, unexpired, of an active user, of a
registered and enabled client, under a live consent (SEC-01), with an audience (TP-02).
``VerifiedToken`` is what an accepted token speaks for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections

from ..app_settings import app_settings, canonical_resource
from ..flows.revocation import expire_lapsed_consents
from .challenges import InsufficientScope, InvalidToken, default_resource
from .query import _load, _TokenRow
from .scopes import effective_scopes, missing_scopes

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
B64TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Longer than any token DOT mints (and than the upstream's); bounds the work per request.
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class VerifiedToken:
    """An access token this resource accepted, and who it speaks for.

    Everything the MCP server needs later (the consent's upstream token, the SDK's
    principal, introspection claims) is derived from these fields, never from anything the
    client sends alongside the token (RS-11).
    """

    token_id: int
    client_id: str
    application_id: int
    user_id: Any
    scopes: frozenset[str]
    audiences: tuple[str, ...]
    resource: str
    issued_at: datetime
    expires_at: datetime
    issuer: str

    @property
    def subject(self) -> str:
        """RFC 7662 / RFC 9068 ``sub``: the local user; stable and never reassigned."""
        return str(self.user_id)

    @property
    def effective_scopes(self) -> set[str]:
        return effective_scopes(self.scopes)

    def allows(self, required: Iterable[str]) -> bool:
        return not missing_scopes(self.scopes, required)


def _retire_lapsed_consent(token: _TokenRow | None) -> None:
    """SEC-01: a token refused for want of a live consent touches the lapsed consent behind it:
    retired now with its cascade (tokens, upstream grant), not at the next cleanup sweep."""
    if token is not None and token.user_id is not None and not token.consent_live:
        expire_lapsed_consents(token.user_id, token.application_id)


def _accepted(token: _TokenRow | None) -> tuple[str, ...] | None:
    """The token's canonical audiences when it is usable at all, else None."""
    if token is None or token.is_expired():
        return None
    if not token.user_is_active:
        # RFC 7592 registration access tokens have no user: they open the registration
        # endpoint, never an MCP server. A deactivated user's tokens stop working at once.
        return None
    if token.mcp_client_id is None or token.mcp_client_disabled_at is not None:
        # Fail closed: a client that did not pass mcp_consent's registration policy, or that
        # an operator disabled, has no working tokens.
        return None
    if not token.consent_live:
        # SEC-01: a token lives no longer than the consent it was issued under. Past the
        # consent's expires_at it is refused by itself, whether or not the cleanup ran.
        return None
    audiences = tuple(dict.fromkeys(canonical_resource(r) or r for r in (token.resource or [])))
    if not audiences:
        # DOT reads an empty resource list as "any audience"; an MCP server must only
        # accept tokens issued for it (TP-02, RFC 8707), so no audience is no access.
        return None
    return audiences


def _verified(token: _TokenRow, audiences: tuple[str, ...], resource: str) -> VerifiedToken:
    return VerifiedToken(
        token_id=token.pk,
        client_id=str(token.client_id),
        application_id=token.application_id,
        user_id=token.user_id,
        scopes=frozenset(token.scope.split()),
        audiences=audiences,
        resource=resource,
        issued_at=token.created,
        expires_at=token.expires,
        issuer=app_settings.ISSUER,
    )


def verify_token(
    raw: str, *, resource: str | None = None, scopes: Iterable[str] = ()
) -> VerifiedToken:
    """Verify a bearer token for ``resource`` and the operation's ``scopes`` (RS-08).

    Returns the VerifiedToken or raises InvalidToken / InsufficientScope. Called on every
    request: nothing is cached between requests, so a revoked token stops working at once.
    """
    resource = canonical_resource(resource) if resource else default_resource()
    if resource is None:
        raise ValueError("resource must be an absolute http(s) URI")
    required = list(dict.fromkeys(scopes))
    if not raw or len(raw) > MAX_TOKEN_LENGTH or not B64TOKEN_RE.fullmatch(raw):
        raise InvalidToken("The access token is malformed.", resource=resource, scopes=required)
    token = _load(raw)
    audiences = _accepted(token)
    if audiences is None:
        _retire_lapsed_consent(token)
    if token is None or audiences is None:
        # One message for unknown, expired, revoked and foreign tokens: the answer tells an
        # attacker nothing about which of these a guessed or stolen value is.
        raise InvalidToken(
            "The access token is invalid, expired or revoked.", resource=resource, scopes=required
        )
    if resource not in audiences:
        # TP-02 / BCP-09: minted for another MCP server; using it here would be passthrough.
        raise InvalidToken(
            "The access token was not issued for this resource.",
            resource=resource,
            scopes=required,
        )
    missing = missing_scopes(token.scope.split(), required)
    if missing:
        # RS-06 / SM-02: name every scope the operation needs, not only the missing ones,
        # so one step-up authorization covers it.
        raise InsufficientScope(
            "The access token lacks scopes this operation needs.",
            resource=resource,
            scopes=required,
        )
    return _verified(token, audiences, resource)


def release_connections() -> None:
    """Close this thread's database connections the way Django does at the end of a request.

    ORM work done from ASGI code outside Django's request handler (the MCP SDK's token
    verifier, tools) fires no request_started/finished signals, so nothing else would close
    the connections of that worker thread. A connection inside an atomic block belongs to
    an enclosing transaction (a test case's) and is left alone.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def introspect(raw: str, *, resources: Iterable[str]) -> dict[str, Any]:
    """RFC 7662 §2.2 answer for a caller serving ``resources`` (INT-02, INT-03).

    Active only for a token that passes the same checks as at an MCP endpoint and whose
    audience includes one of the caller's resources: a resource server learns nothing
    about tokens that are not meant for it. Inactive is exactly ``{"active": false}``.
    """
    allowed = {canonical_resource(r) or r for r in resources}
    if not raw or len(raw) > MAX_TOKEN_LENGTH or not B64TOKEN_RE.fullmatch(raw):
        return {"active": False}
    token = _load(raw)
    audiences = _accepted(token)
    if audiences is None:
        _retire_lapsed_consent(token)
    if token is None or audiences is None or not allowed.intersection(audiences):
        return {"active": False}
    return {
        "active": True,
        "iss": app_settings.ISSUER,
        "sub": str(token.user_id),
        "client_id": token.client_id,
        "scope": token.scope,
        "aud": list(audiences),
        "exp": int(token.expires.timestamp()),
        "iat": int(token.created.timestamp()),
        "token_type": "Bearer",
    }
