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
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.db import connections, router
from django.http import HttpRequest, HttpResponseBase, JsonResponse, QueryDict
from django.utils import timezone
from oauth2_provider.models import get_access_token_model
from oauth2_provider.www_authenticate import build_bearer_challenge
from oauthlib.common import Request as OAuthlibRequest
from oauthlib.oauth2.rfc6749.tokens import get_token_from_header

from .app_settings import app_settings, canonical_resource
from .flows.revocation import expire_lapsed_consents
from .flows.tokens import consent_until, live_until
from .vault import secret_hash

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
B64TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Longer than any token DOT mints (and than the upstream's); bounds the work per request.
MAX_TOKEN_LENGTH = 512

View = TypeVar("View", bound=Callable[..., Any])


# --- Errors and their challenges ---------------------------------------------------------------


class BearerError(Exception):
    """A refused request, with the RFC 6750 / RFC 9728 answer it gets."""

    status = 401
    error: str | None = None

    def __init__(
        self, description: str = "", *, resource: str | None = None, scopes: Iterable[str] = ()
    ) -> None:
        super().__init__(description)
        self.description = description
        self.resource = resource or default_resource()
        self.scopes = list(dict.fromkeys(scopes))

    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` value: one challenge with everything a client needs.

        Rendered by DOT's ``build_bearer_challenge`` (RFC 7230 quoted-strings, CR/LF and
        quotes escaped); the parameters are ours: no ``error`` without a token (RS-04).
        """
        params: dict[str, str] = {}
        if self.error:
            params["error"] = self.error
            if self.description:
                params["error_description"] = self.description
        # RS-05 / SM-02: all scopes this operation needs, in this one challenge; when it needs
        # none in particular, the minimal set for basic use (SM-01), never offline_access.
        scopes = self.scopes or app_settings.PRM_SCOPES
        scopes = [s for s in scopes if s != "offline_access"]  # SM-06
        if scopes:
            params["scope"] = " ".join(scopes)
        # RS-02: the RFC 9728 metadata URL of *this* resource (path inserted), not DOT's
        # default root document.
        return str(
            build_bearer_challenge(
                None, oauth2_error=params, resource_metadata_url=metadata_url(self.resource)
            )
        )

    def body(self) -> dict[str, str]:
        if not self.error:
            return {}
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.www_authenticate(), "Cache-Control": "no-store"}


class MissingToken(BearerError):
    """RS-04 / RFC 6750 §3.1: no credentials, so the challenge carries no error code."""


class InvalidRequest(BearerError):
    """RS-07 / RFC 6750 §3.1: a malformed request, e.g. a token outside the header."""

    status = 400
    error = "invalid_request"


class InvalidToken(BearerError):
    """RS-04 / TP-01 / TP-02: unknown, expired, revoked, or not meant for this resource."""

    error = "invalid_token"


class InsufficientScope(BearerError):
    """RS-06: a good token that lacks scopes this operation needs (the client steps up)."""

    status = 403
    error = "insufficient_scope"


def metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known URL with the resource's path inserted after the host."""
    parts = urlsplit(resource)
    path = parts.path if parts.path not in ("", "/") else ""
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{path}"


def default_resource() -> str:
    """The resource an endpoint protects when it does not say: the only configured one."""
    resources = app_settings.RESOURCES
    if len(resources) != 1:
        raise ValueError(
            "several MCP_CONSENT['RESOURCES'] are configured: pass resource= to say which "
            "one this endpoint is"
        )
    return resources[0]


# --- Scopes ------------------------------------------------------------------------------------


def effective_scopes(granted: Iterable[str]) -> set[str]:
    """SM-05: the granted scopes and everything they imply (transitively)."""
    implies = app_settings.SCOPE_IMPLIES
    result: set[str] = set()
    pending = list(granted)
    while pending:
        scope = pending.pop()
        if scope not in result:
            result.add(scope)
            pending.extend(implies.get(scope, []))
    return result


def missing_scopes(granted: Iterable[str], required: Iterable[str]) -> list[str]:
    have = effective_scopes(granted)
    return [s for s in dict.fromkeys(required) if s not in have]


# --- The verified token ----------------------------------------------------------------------


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


# --- Reading the request ---------------------------------------------------------------------


def bearer_token(authorization: str | None, *, resource: str, scopes: list[str]) -> str:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1), read by oauthlib.

    The oauthlib request holds the header only: ``get_token_from_header`` falls back to an
    ``access_token`` query or body parameter, which this resource never accepts (RS-09).
    """
    header = (authorization or "").strip()
    token = get_token_from_header(OAuthlibRequest("", headers={"Authorization": header}))
    if token:
        return str(token)
    if header.partition(" ")[0].lower() != "bearer":
        # RFC 6750 §3.1: no Bearer credentials at all, so the challenge names no error.
        raise MissingToken(resource=resource, scopes=scopes)
    raise InvalidToken("The access token is missing.", resource=resource, scopes=scopes)


def _refuse_token_outside_header(
    query_string: str, form_body: bytes | None, *, resource: str, scopes: list[str]
) -> None:
    """RS-09 / TP-04: tokens travel in the Authorization header only.

    A URI query leaks through logs, history and Referer (RFC 9700 §4.3.2); RFC 6750 §3.1 says
    a request that uses another method (or more than one) is invalid_request. Refused even
    when a valid header is present, so no client gets away with the habit.
    """
    names = {k for k, _ in parse_qsl(query_string, keep_blank_values=True)}
    if form_body:
        names |= set(QueryDict(form_body).keys())
    if "access_token" in names:
        raise InvalidRequest(
            "Send the access token in the Authorization header only.",
            resource=resource,
            scopes=scopes,
        )


def authenticate(
    *,
    authorization: str | None,
    query_string: str = "",
    form_body: bytes | None = None,
    resource: str | None = None,
    scopes: Iterable[str] = (),
) -> VerifiedToken:
    """Framework-neutral: verify the request's bearer token or raise BearerError.

    ``authorization`` is the Authorization header, ``query_string`` the raw URI query and
    ``form_body`` an application/x-www-form-urlencoded body if there is one. On BearerError
    answer ``error.status`` with ``error.headers()`` and the JSON ``error.body()``.
    """
    resource = canonical_resource(resource) if resource else default_resource()
    if resource is None:
        raise ValueError("resource must be an absolute http(s) URI")
    required = list(dict.fromkeys(scopes))
    _refuse_token_outside_header(query_string, form_body, resource=resource, scopes=required)
    raw = bearer_token(authorization, resource=resource, scopes=required)
    return verify_token(raw, resource=resource, scopes=required)


async def aauthenticate(**kwargs: Any) -> VerifiedToken:
    """``authenticate`` for async code: the ORM work runs in a worker thread."""

    def work() -> VerifiedToken:
        try:
            return authenticate(**kwargs)
        finally:
            release_connections()

    return cast(VerifiedToken, await sync_to_async(work, thread_sensitive=True)())


# --- Django views ----------------------------------------------------------------------------


def error_response(error: BearerError) -> JsonResponse:
    """The HTTP answer to a BearerError (RS-04, RS-06, RS-07)."""
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers().items():
        response[name] = value
    return response


def _authenticate_django(
    request: HttpRequest, resource: str | None, scopes: Iterable[str]
) -> VerifiedToken:
    form_body = None
    if request.content_type == "application/x-www-form-urlencoded":
        form_body = request.body  # read (and cached) before the view parses it
    return authenticate(
        authorization=request.headers.get("Authorization"),
        query_string=request.META.get("QUERY_STRING", ""),
        form_body=form_body,
        resource=resource,
        scopes=scopes,
    )


def require_bearer_token(
    scopes: Iterable[str] = (), *, resource: str | None = None
) -> Callable[[View], View]:
    """Protect a Django view (sync or async) with mcp_consent access tokens.

    The view runs only for a verified token, available as ``request.mcp_token`` (a
    VerifiedToken); every other request gets the RFC 6750 answer of ``BearerError``::

        @require_bearer_token(["items:read"])
        def items(request):
            ...
    """
    required = list(scopes)

    def decorator(view: View) -> View:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapped(
                request: HttpRequest, *args: Any, **kwargs: Any
            ) -> HttpResponseBase:
                try:
                    token = await sync_to_async(_authenticate_django)(request, resource, required)
                except BearerError as error:
                    return error_response(error)
                request.mcp_token = token  # type: ignore[attr-defined]
                return cast(HttpResponseBase, await view(request, *args, **kwargs))

            wrapped: Any = markcoroutinefunction(async_wrapped)
        else:

            @functools.wraps(view)
            def sync_wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                try:
                    token = _authenticate_django(request, resource, required)
                except BearerError as error:
                    return error_response(error)
                request.mcp_token = token  # type: ignore[attr-defined]
                return cast(HttpResponseBase, view(request, *args, **kwargs))

            wrapped = sync_wrapped
        # The bearer token is not ambient (browsers never attach it by themselves), so a
        # cross-site request cannot ride on it: CSRF protection has nothing to protect here
        # and would refuse every MCP client's POST.
        wrapped.csrf_exempt = True
        # Authenticated by the token, not by a session (Django's LoginRequiredMiddleware).
        wrapped.login_required = False
        return cast(View, wrapped)

    return decorator


# --- Introspection (RFC 7662) ----------------------------------------------------------------


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
