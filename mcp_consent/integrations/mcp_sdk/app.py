"""The ASGI applications: ``ProtectedMCPApp`` in front of the SDK app, ``MCPRouter`` beside Django."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from mcp.server.transport_security import (
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ... import resource
from ...app_settings import app_settings, canonical_resource
from ..threads import RequestThread, RequestThreads
from .request import check_origin, read_body, replaying, send_bearer_error, send_json
from .tools import RequestState, request_state
from .verifier import sdk_access_token, transport_security, verified_here


def _authenticate_and_release(**kwargs: Any) -> tuple[str, resource.VerifiedToken]:
    """``resource.authenticate_token``, its connection handed back in the same thread hop."""
    try:
        return resource.authenticate_token(**kwargs)
    finally:
        resource.release_connections()


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
        cors_send = await check_origin(self.security, scope, receive, send)
        if cors_send is None:
            return
        send = cors_send
        read = await read_body(scope, receive, self.max_body_size)
        if read is None:
            return  # the client went away
        body, refusal = read
        required = list(dict.fromkeys(self.required_scopes + self.operation_scopes(body)))
        authenticated = await _authenticate(scope, send, thread, resource_uri, required)
        if authenticated is None:
            return
        raw, verified = authenticated
        if refusal is not None:
            status, description = refusal
            body_out = {"error": "invalid_request", "error_description": description}
            await send_json(send, status, body_out, {})
            return
        state = RequestState(scopes=required)
        verified_token = verified_here.set(
            (resource.checksum(raw), sdk_access_token(raw, verified))
        )
        state_token = request_state.set(state)
        try:
            await self.app(
                scope, replaying(body, receive), _reauthorize_guard(send, state, resource_uri)
            )
        finally:
            request_state.reset(state_token)
            verified_here.reset(verified_token)


async def _authenticate(
    scope: Scope, send: Send, thread: RequestThread, resource_uri: str, required: list[str]
) -> tuple[str, resource.VerifiedToken] | None:
    """(the raw token, verified); None once the bearer error is sent (RS-04)."""
    authorizations = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
    try:
        if len(authorizations) > 1:
            raise resource.InvalidRequest(
                "Send one Authorization header.", resource=resource_uri, scopes=required
            )
        authorization = authorizations[0].decode("latin-1") if authorizations else None
        query_string = scope.get("query_string", b"").decode("latin-1")
        # In this request's thread, which hands its connection back in the same hop.
        authenticated = await thread.run(
            _authenticate_and_release,
            authorization=authorization,
            query_string=query_string,
            resource=resource_uri,
            scopes=required,
        )
    except resource.BearerError as error:
        thread.mark_released()
        await send_bearer_error(send, error)
        return None
    thread.mark_released()
    return authenticated


def _reauthorize_guard(send: Send, state: RequestState, resource_uri: str) -> Send:
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
            await send_bearer_error(send, error)
            return
        if not replaced:
            await send(message)

    return guarded_send


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
