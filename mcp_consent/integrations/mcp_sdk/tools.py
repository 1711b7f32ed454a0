"""Inside tools: the request's verified token, and upstream calls that may end a grant (RS-11)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import requests
from asgiref.sync import sync_to_async
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver.exceptions import ToolError

from ... import resource, upstream
from ...app_settings import app_settings
from ...flows.upstream_tokens import upstream_session
from .verifier import ConsentAccessToken

# The package's logger, as before the split: operators' logging config names it.
log = logging.getLogger(__package__)

T = TypeVar("T")


@dataclass
class RequestState:
    """Per HTTP request, shared with the tools it runs (contextvars copy the reference)."""

    reauthorize: bool = False
    scopes: list[str] = field(default_factory=list)


request_state: contextvars.ContextVar[RequestState | None] = contextvars.ContextVar(
    "mcp_consent_request_state", default=None
)


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
        state = request_state.get()
        if state is not None:
            state.reauthorize = True
        raise ToolError(f"The authorization at {name} has ended: connect this app again.") from None
    except upstream.UpstreamError as exc:
        log.warning("upstream API call failed: %s", exc.reason)
        raise ToolError(f"{name} is not available right now; try again later.") from None
