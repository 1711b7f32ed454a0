"""mcp_consent for the official MCP Python SDK (``mcp`` 2.x): protect an MCPServer.

The pieces, all verifying through ``mcp_consent.resource`` (one code path)::

    from mcp.server.mcpserver import Context, MCPServer
    from mcp_consent.integrations import mcp_sdk

    server = MCPServer(
        "My MCP server",
        token_verifier=mcp_sdk.ConsentTokenVerifier(),
        auth=mcp_sdk.auth_settings(),          # validate_token_resource=True
    )

    @server.tool()
    async def whoami(ctx: Context) -> dict:
        token = mcp_sdk.verified_token(ctx)
        return await mcp_sdk.call_upstream(token, lambda api: api.get("user").json())

    mcp_app = mcp_sdk.ProtectedMCPApp(
        server.streamable_http_app(
            stateless_http=True, json_response=True, transport_security=mcp_sdk.transport_security()
        ),
        tool_scopes={"list_items": ["items:read"]},
    )
    application = mcp_sdk.MCPRouter(django_asgi_app, mcp_app)   # /mcp + lifespan → SDK

* ``ConsentTokenVerifier`` is the SDK's ``TokenVerifier``: enough on its own for the SDK's
  ``AuthSettings(validate_token_resource=True)``; it returns the SDK's AccessToken with the
  resource, the subject (the local user) and ``iss``, so the SDK binds sessions and request
  state to the user (SH-04), and with the scopes widened by the hierarchy (SM-05).
* ``ProtectedMCPApp`` goes in front of the SDK app and answers what the SDK answers
  imprecisely: RFC 6750 / RFC 9728 challenges with ``scope`` and without ``error`` when no
  token was sent (RS-04, RS-05), 403 ``insufficient_scope`` for per-tool scopes (RS-06),
  tokens outside the header (RS-09), Host/Origin before anything else (RS-10), and the 401
  that makes a client re-authorize when the upstream grant is gone (RS-11). The SDK's own
  checks still run behind it.
* ``MCPRouter`` serves Django and the SDK app as one ASGI application; Django keeps the
  well-known metadata URLs (one owner: the SDK would serve the protected resource metadata
  itself, at the same path as Django's).
"""

from __future__ import annotations

import contextvars
import hmac
import inspect
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
from asgiref.sync import AsyncToSync, ThreadSensitiveContext, sync_to_async
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import (
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from pydantic import PrivateAttr
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import resource, upstream
from ..app_settings import app_settings, canonical_resource
from ..flows.upstream_tokens import upstream_session

log = logging.getLogger(__name__)

T = TypeVar("T")


# --- The SDK's TokenVerifier -------------------------------------------------------------------


class ConsentAccessToken(AccessToken):
    """The SDK's AccessToken, carrying the VerifiedToken it was made from."""

    _verified: resource.VerifiedToken | None = PrivateAttr(default=None)

    @property
    def verified(self) -> resource.VerifiedToken | None:
        return self._verified


def sdk_access_token(raw: str, verified: resource.VerifiedToken) -> ConsentAccessToken:
    token = ConsentAccessToken(
        token=raw,
        client_id=verified.client_id,
        # SM-05: the SDK compares scopes flatly (AuthSettings.required_scopes); hand it the
        # scopes the hierarchy implies too.
        scopes=sorted(verified.effective_scopes),
        expires_at=int(verified.expires_at.timestamp()),
        resource=verified.resource,
        # SH-04: the SDK binds sessions and request state to (client_id, iss, sub).
        subject=verified.subject,
        claims={"iss": verified.issuer, "aud": list(verified.audiences)},
    )
    token._verified = verified
    return token


# The token ProtectedMCPApp verified for the request being served, so that the SDK's call to
# the verifier for the same request costs no second query.
_verified_here: contextvars.ContextVar[tuple[str, ConsentAccessToken] | None] = (
    contextvars.ContextVar("mcp_consent_verified_here", default=None)
)


class ConsentTokenVerifier:
    """``mcp.server.auth.provider.TokenVerifier`` backed by mcp_consent (RS-08, TP-01, TP-02).

    ``resource`` defaults to the only configured MCP resource. Returns None for every token
    ``resource.verify_token`` refuses; the ORM work runs in a worker thread (async-safe) and
    its connections are released afterwards.
    """

    def __init__(self, resource: str | None = None) -> None:
        self.resource = canonical_resource(resource) if resource else None

    async def verify_token(self, token: str) -> AccessToken | None:
        here = _verified_here.get()
        if here is not None and hmac.compare_digest(here[0], resource.checksum(token)):
            return here[1]

        def verify() -> resource.VerifiedToken | None:
            try:
                return resource.verify_token(token, resource=self.resource)
            except resource.BearerError:
                return None
            finally:
                resource.release_connections()

        verified = await sync_to_async(verify, thread_sensitive=True)()
        return sdk_access_token(token, verified) if verified is not None else None


def auth_settings(
    resource_uri: str | None = None, *, required_scopes: list[str] | None = None
) -> AuthSettings:
    """The SDK's AuthSettings for a resource protected by mcp_consent tokens.

    ``validate_token_resource=True``: the SDK checks the audience too (defence in depth).
    """
    return AuthSettings(
        issuer_url=app_settings.ISSUER,  # type: ignore[arg-type]
        resource_server_url=resource_uri or resource.default_resource(),  # type: ignore[arg-type]
        required_scopes=required_scopes,
        validate_token_resource=True,
    )


def transport_security() -> TransportSecuritySettings:
    """RS-10: the SDK's DNS-rebinding protection with MCP_ALLOWED_HOSTS / MCP_ALLOWED_ORIGINS."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=app_settings.MCP_ALLOWED_HOSTS,
        allowed_origins=app_settings.MCP_ALLOWED_ORIGINS,
    )


# --- In front of the SDK app ---------------------------------------------------------------------


@dataclass
class _RequestState:
    """Per HTTP request, shared with the tools it runs (contextvars copy the reference)."""

    reauthorize: bool = False
    scopes: list[str] = field(default_factory=list)


_request_state: contextvars.ContextVar[_RequestState | None] = contextvars.ContextVar(
    "mcp_consent_request_state", default=None
)


async def _send_json(send: Send, status: int, body: Any, headers: Mapping[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(payload)),
    ]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


MCP_CORS_EXPOSED = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version"


async def _send_preflight(send: Send, origin: str, headers: Mapping[str, str]) -> None:
    """RS-10: a CORS preflight from an allowed origin (never ``*``, never credentials)."""
    requested = headers.get("access-control-request-headers", "")
    raw_headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
        (b"access-control-allow-headers", requested.encode("latin-1")),
        (b"access-control-max-age", b"600"),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": raw_headers})
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send, origin: str) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-expose-headers", MCP_CORS_EXPOSED.encode("latin-1")),
                    (b"vary", b"Origin"),
                ],
            }
        await send(message)

    return send_with_cors


async def _send_bearer_error(send: Send, error: resource.BearerError) -> None:
    await _send_json(send, error.status, error.body(), error.headers())


# SEC-11: a JSON string (with its escapes) — brackets inside it do not nest.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """SEC-11: whether ``body`` nests arrays/objects deeper than ``limit``, found without
    parsing it: Python's json (and the SDK's parser behind it) recurse once per level, so a
    body a few thousand levels deep raises RecursionError — a 500 — wherever it is parsed.
    Linear in the body; malformed input may count high, and is refused either way."""
    depth = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub(b"", body)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


# asgiref >= 3.13: a ThreadSensitiveContext can run on an executor the caller keeps.
_CONTEXT_TAKES_EXECUTOR = "executor" in inspect.signature(ThreadSensitiveContext).parameters


def _authenticate_and_release(**kwargs: Any) -> resource.VerifiedToken:
    """``resource.authenticate``, its connection handed back in the same thread hop."""
    try:
        return resource.authenticate(**kwargs)
    finally:
        resource.release_connections()


class _CountingExecutor(ThreadPoolExecutor):
    """A single-thread executor that counts the calls it ran (to skip needless releases)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="mcp-request")
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@dataclass
class RequestThread:
    """The thread a request's sync work runs on; knows whether it ran anything since a release."""

    executor: _CountingExecutor | None = None
    released_after: int = -1

    def mark_released(self) -> None:
        if self.executor is not None:
            self.released_after = self.executor.calls

    @property
    def used_since_release(self) -> bool:
        # Unknown (no executor of ours): assume used, release.
        return self.executor is None or self.executor.calls != self.released_after


class RequestThreads:
    """One thread per request being served, as Django's ASGI handler has, but kept for reuse.

    A bare ``ThreadSensitiveContext`` starts a thread for every request and another to stop
    it: on the MCP hot path that cost more than the token verification itself. Here each
    request borrows a single-thread executor from a free list and returns it afterwards, so
    its ORM work still runs on one thread of its own (and its connection is released there,
    see ``resource.release_connections``), and threads live as long as the process.
    """

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._free: list[_CountingExecutor] = []
        self._lock = threading.Lock()

    @asynccontextmanager
    async def context(self) -> AsyncIterator[RequestThread]:
        if not _CONTEXT_TAKES_EXECUTOR or getattr(AsyncToSync.executors, "current", None):
            # Called from sync code through async_to_sync (tests, scripts): asgiref's rule
            # that thread-sensitive work runs on that calling thread stays.
            async with ThreadSensitiveContext():
                yield RequestThread()
            return
        with self._lock:
            executor = self._free.pop() if self._free else None
        if executor is None:
            executor = _CountingExecutor()
        try:
            async with ThreadSensitiveContext(executor=executor):  # type: ignore[call-arg]
                yield RequestThread(executor)
        finally:
            with self._lock:
                keep = len(self._free) < self.keep
                if keep:
                    self._free.append(executor)
            if not keep:
                executor.shutdown(wait=False)


class ProtectedMCPApp:
    """ASGI middleware: mcp_consent's checks and challenges in front of an MCP SDK app.

    Order per request: Host/Origin (RS-10, the SDK's own rules and settings); the body (at
    most ``max_body_size``) to learn which tools a JSON-RPC message calls; the token — from
    the Authorization header only — verified for the resource and for every scope the
    operation needs: the endpoint's ``required_scopes`` and, for ``tools/call``, the tool's
    ``tool_scopes`` (RS-06, SM-02, SM-05). Then the SDK app runs with the body replayed.
    Each request runs its ORM work in a thread of its own (asgiref ThreadSensitiveContext, as
    Django's handler does, on threads kept for reuse: ``RequestThreads``) and releases its
    connections at the end.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        resource_uri: str | None = None,
        required_scopes: Iterable[str] = (),
        tool_scopes: Mapping[str, Iterable[str]] | None = None,
        security: TransportSecuritySettings | None = None,
        max_body_size: int | None = None,
    ) -> None:
        self.app = app
        self.resource_uri = canonical_resource(resource_uri) if resource_uri else None
        self.required_scopes = list(required_scopes)
        self.tool_scopes = {name: list(scopes) for name, scopes in (tool_scopes or {}).items()}
        self.security = TransportSecurityMiddleware(security or transport_security())
        self._max_body_size = max_body_size
        self.threads = RequestThreads()

    @property
    def max_body_size(self) -> int:
        """SEC-11: the constructor's bound, else MCP_CONSENT["MCP_MAX_BODY_SIZE"] (read live)."""
        return self._max_body_size or app_settings.MCP_MAX_BODY_SIZE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self.threads.context() as thread:
            try:
                await self._serve(scope, receive, send, thread)
            finally:
                if thread.used_since_release:
                    # A tool (or anything else) used the ORM on this request's thread after
                    # the verification released it: release again, as Django's handler would.
                    await sync_to_async(resource.release_connections, thread_sensitive=True)()

    def operation_scopes(self, body: bytes) -> list[str]:
        """The scopes of the tools a JSON-RPC message (or batch) calls."""
        try:
            message = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            return []  # the SDK answers a parse error; no tool runs
        scopes: list[str] = []
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict) and item.get("method") == "tools/call":
                params = item.get("params")
                name = params.get("name") if isinstance(params, dict) else None
                if isinstance(name, str):
                    scopes.extend(self.tool_scopes.get(name, []))
        return scopes

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, thread: RequestThread
    ) -> None:
        """Origin, body bounds, the bearer token, then the MCP app: each step may answer."""
        resource_uri = self.resource_uri or resource.default_resource()
        cors_send = await self._check_origin(scope, receive, send)
        if cors_send is None:
            return
        send = cors_send
        read = await self._read_body(scope, receive)
        if read is None:
            return  # the client went away
        body, refusal = read
        required = list(dict.fromkeys(self.required_scopes + self.operation_scopes(body)))
        authenticated = await _authenticate(scope, send, thread, resource_uri, required)
        if authenticated is None:
            return
        authorization, verified = authenticated
        if refusal is not None:
            status, description = refusal
            body_out = {"error": "invalid_request", "error_description": description}
            await _send_json(send, status, body_out, {})
            return
        raw = resource.bearer_token(authorization, resource=resource_uri, scopes=required)
        state = _RequestState(scopes=required)
        verified_token = _verified_here.set(
            (resource.checksum(raw), sdk_access_token(raw, verified))
        )
        state_token = _request_state.set(state)
        try:
            await self.app(
                scope, _replaying(body, receive), _reauthorize_guard(send, state, resource_uri)
            )
        finally:
            _request_state.reset(state_token)
            _verified_here.reset(verified_token)

    async def _check_origin(self, scope: Scope, receive: Receive, send: Send) -> Send | None:
        """The ``send`` to answer with (CORS for an allowed Origin), None if answered here."""
        # RS-10: a foreign Origin (a DNS-rebound page) or Host is refused before it learns
        # anything else, even the challenge.
        request = Request(scope)
        rejection = await self.security.validate_request(request, is_post=False)
        if rejection is not None:
            await rejection(scope, receive, send)
            return None
        # Past the check, a present Origin is one of MCP_ALLOWED_ORIGINS: a browser-based
        # client there (e.g. the MCP Inspector connecting directly) may read the answers.
        origin = request.headers.get("origin")
        if origin:
            if (
                scope.get("method") == "OPTIONS"
                and "access-control-request-method" in request.headers
            ):
                await _send_preflight(send, origin, request.headers)
                return None
            send = _with_cors(send, origin)
        return send

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes, tuple[int, str] | None] | None:
        """(body, refusal) of a request; None if the client went away while sending it.

        SEC-11 / RS-07: a body over the size or nesting bound is refused before anything
        parses it (400, or 413 for size) -- but after the token check, so a request
        without a valid token still gets the 401 challenge (RS-04), never a 5xx. A refused
        body is returned empty, so no scope is read from it.
        """
        if scope.get("method") != "POST":
            return b"", None
        refusal: tuple[int, str] | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                refusal = (413, "request body too large")
                break
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if refusal is None and json_depth_exceeds(body, app_settings.MCP_MAX_JSON_DEPTH):
            refusal = (400, "request body nested too deeply")
        return (b"", refusal) if refusal is not None else (body, None)


async def _authenticate(
    scope: Scope, send: Send, thread: RequestThread, resource_uri: str, required: list[str]
) -> tuple[str | None, resource.VerifiedToken] | None:
    """(Authorization header, verified token); None once the bearer error is sent (RS-04)."""
    authorizations = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
    try:
        if len(authorizations) > 1:
            raise resource.InvalidRequest(
                "Send one Authorization header.", resource=resource_uri, scopes=required
            )
        authorization = authorizations[0].decode("latin-1") if authorizations else None
        query_string = scope.get("query_string", b"").decode("latin-1")
        # In this request's thread, which hands its connection back in the same hop.
        verified = await sync_to_async(_authenticate_and_release, thread_sensitive=True)(
            authorization=authorization,
            query_string=query_string,
            resource=resource_uri,
            scopes=required,
        )
    except resource.BearerError as error:
        thread.mark_released()
        await _send_bearer_error(send, error)
        return None
    thread.mark_released()
    return authorization, verified


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _reauthorize_guard(send: Send, state: _RequestState, resource_uri: str) -> Send:
    """A ``send`` that answers 401 instead when a tool found the upstream grant gone (RS-11)."""
    replaced = False

    async def guarded_send(message: Message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and state.reauthorize:
            # RS-11: the upstream grant behind this token is gone and refreshing cannot
            # fix it: answer 401 invalid_token, which makes MCP clients authorize again
            # (a new consent, a new upstream grant). Nothing of the upstream's answer
            # reaches the client.
            replaced = True
            error = resource.InvalidToken(
                f"The authorization at {app_settings.UPSTREAM.name} has ended; authorize again.",
                resource=resource_uri,
                scopes=state.scopes,
            )
            await _send_bearer_error(send, error)
            return
        if not replaced:
            await send(message)

    return guarded_send


# --- Inside tools --------------------------------------------------------------------------------


def verified_token(ctx: Any = None, *, scopes: Iterable[str] = ()) -> resource.VerifiedToken:
    """The VerifiedToken of the request a tool serves; ToolError if it lacks ``scopes``.

    Read from the HTTP request that carried this message when the context has one, else
    from the SDK's per-request auth context. The scope check repeats ProtectedMCPApp's for
    servers mounted without it (defence in depth, SM-05 hierarchy included).
    """
    access: Any = None
    request_context = getattr(ctx, "_request_context", None) if ctx is not None else None
    http_request = getattr(request_context, "request", None)
    if http_request is not None and hasattr(http_request, "scope"):
        user = http_request.scope.get("user")
        access = getattr(user, "access_token", None)
    if access is None:
        access = get_access_token()
    verified = access.verified if isinstance(access, ConsentAccessToken) else None
    if verified is None:
        raise ToolError("This tool needs an mcp-consent access token.")
    missing = resource.missing_scopes(verified.scopes, scopes)
    if missing:
        raise ToolError(f"This tool needs the scope(s): {' '.join(missing)}.")
    return verified


async def call_upstream(token: resource.VerifiedToken, call: Callable[[requests.Session], T]) -> T:
    """Run ``call(api)`` with ``flows.upstream_tokens.upstream_session(token)`` in a worker thread.

    RS-11: when only a new authorization can help, the HTTP request that carried this tool
    call is answered 401 (ProtectedMCPApp) and the tool fails with a message saying so. An
    outage is a ToolError asking to retry; the upstream's own error text is never passed on
    (it may carry secrets).
    """

    def work() -> T:
        try:
            with upstream_session(token) as api:
                return call(api)
        finally:
            resource.release_connections()

    name = app_settings.UPSTREAM.name
    try:
        return cast(T, await sync_to_async(work, thread_sensitive=True)())
    except upstream.UpstreamAuthorizationRequired as exc:
        log.info(
            "upstream grant of client %s needs a new authorization: %s", token.client_id, exc.reason
        )
        state = _request_state.get()
        if state is not None:
            state.reauthorize = True
        raise ToolError(f"The authorization at {name} has ended: connect this app again.") from None
    except upstream.UpstreamError as exc:
        log.warning("upstream API call failed: %s", exc.reason)
        raise ToolError(f"{name} is not available right now; try again later.") from None


# --- One ASGI application ------------------------------------------------------------------------


class MCPRouter:
    """Django and an MCP SDK app as one ASGI application.

    HTTP requests for the MCP endpoint paths (default: the path of each configured resource)
    and the lifespan scope go to the SDK app — its session manager's task group lives in
    the lifespan, and Django does not handle lifespan at all. Everything else, including
    ``/.well-known/oauth-protected-resource/...``, goes to Django: one owner per URL.
    """

    def __init__(
        self, django_app: ASGIApp, mcp_app: ASGIApp, *, paths: Iterable[str] | None = None
    ) -> None:
        self.django_app = django_app
        self.mcp_app = mcp_app
        if paths is None:
            paths = [urlsplit(r).path or "/" for r in app_settings.RESOURCES]
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (
            scope["type"] == "http" and scope.get("path") in self.paths
        ):
            await self.mcp_app(scope, receive, send)
        else:
            await self.django_app(scope, receive, send)


__all__ = [
    "ConsentAccessToken",
    "ConsentTokenVerifier",
    "MCPRouter",
    "ProtectedMCPApp",
    "auth_settings",
    "call_upstream",
    "sdk_access_token",
    "transport_security",
    "verified_token",
]
