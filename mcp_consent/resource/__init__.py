"""Bearer-token verification for MCP endpoints: the resource-server side of mcp_consent.

Every MCP endpoint protected by mcp_consent tokens verifies through ``verify_token`` — the
Django decorator ``require_bearer_token``, the framework-neutral ``authenticate``, the MCP
SDK integration (``integrations.mcp_sdk``) and the RFC 7662 introspection endpoint all call
it, so there is one definition of "a token this MCP server accepts":

* issued here: its SHA-256 is a row of DOT's access-token table (DOT stores no raw tokens),
  so an upstream token or anybody else's token is unknown (TP-01);
* unexpired, unrevoked (DOT deletes revoked access tokens), of an active user, of a client
  registered through mcp_consent and not disabled;
* its audience includes this resource (RFC 8707, TP-02, RS-08) — a token without any
  audience is refused, although DOT would treat it as unrestricted;
* its scopes, widened by the configured hierarchy (SM-05), cover the operation (RS-06);
* taken from the Authorization header only: a token in the query string (or a form body) is
  refused, even next to a valid header (RS-09, TP-04, RFC 6750 §2).

Failures are ``BearerError`` subclasses that know their RFC 6750 / RFC 9728 challenge: 401
with ``resource_metadata`` and ``scope`` (no ``error``) when no token was sent (RS-04), 401
``invalid_token`` for a bad one, 403 ``insufficient_scope`` naming every scope the operation
needs (RS-06, SM-02), 400 ``invalid_request`` for a malformed request (RS-07).

The hot path is one query: the access token by checksum, with its application, the
application's MCPClient and the user joined in.

The pieces: ``challenges`` (the refusals and their answers, ``default_resource``),
``scopes`` (SM-05), ``query`` (the verification query, compiled once per thread),
``verification`` (``verify_token``, ``introspect``, ``VerifiedToken``), ``request``
(reading the header, ``authenticate``) and ``decorators`` (``require_bearer_token``).
"""

from .challenges import (
    BearerError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    default_resource,
    metadata_url,
)
from .decorators import error_response, require_bearer_token
from .query import checksum
from .request import aauthenticate, authenticate, authenticate_token, bearer_token
from .scopes import effective_scopes, missing_scopes
from .verification import (
    B64TOKEN_RE,
    MAX_TOKEN_LENGTH,
    VerifiedToken,
    introspect,
    release_connections,
    verify_token,
)

__all__ = [
    "B64TOKEN_RE",
    "MAX_TOKEN_LENGTH",
    "BearerError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "MissingToken",
    "VerifiedToken",
    "aauthenticate",
    "authenticate",
    "authenticate_token",
    "bearer_token",
    "checksum",
    "default_resource",
    "effective_scopes",
    "error_response",
    "introspect",
    "metadata_url",
    "missing_scopes",
    "release_connections",
    "require_bearer_token",
    "verify_token",
]
