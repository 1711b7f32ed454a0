"""Reading an MCP request and answering it at the ASGI level: origin checks, body bounds.

RS-10: Host/Origin through the SDK's rules before anything else, CORS for allowed origins
only; SEC-11 / RS-07: the body bounded in size and nesting before anything parses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from ... import resource
from ...app_settings import app_settings


async def send_json(send: Send, status: int, body: Any, headers: Mapping[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(payload)),
    ]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


MCP_CORS_EXPOSED = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version"


async def send_preflight(send: Send, origin: str, headers: Mapping[str, str]) -> None:
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


def with_cors(send: Send, origin: str) -> Send:
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


async def send_bearer_error(send: Send, error: resource.BearerError) -> None:
    await send_json(send, error.status, error.body(), error.headers())


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


async def check_origin(
    security: TransportSecurityMiddleware, scope: Scope, receive: Receive, send: Send
) -> Send | None:
    """The ``send`` to answer with (CORS for an allowed Origin), None if answered here."""
    # RS-10: a foreign Origin (a DNS-rebound page) or Host is refused before it learns
    # anything else, even the challenge.
    request = Request(scope)
    rejection = await security.validate_request(request, is_post=False)
    if rejection is not None:
        await rejection(scope, receive, send)
        return None
    # Past the check, a present Origin is one of MCP_ALLOWED_ORIGINS: a browser-based
    # client there (e.g. the MCP Inspector connecting directly) may read the answers.
    origin = request.headers.get("origin")
    if origin:
        if scope.get("method") == "OPTIONS" and "access-control-request-method" in request.headers:
            await send_preflight(send, origin, request.headers)
            return None
        send = with_cors(send, origin)
    return send


async def read_body(
    scope: Scope, receive: Receive, max_body_size: int
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
        if size > max_body_size:
            refusal = (413, "request body too large")
            break
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if refusal is None and json_depth_exceeds(body, app_settings.MCP_MAX_JSON_DEPTH):
        refusal = (400, "request body nested too deeply")
    return (b"", refusal) if refusal is not None else (body, None)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
