"""Running ASGI applications in-process from sync tests: the lifespan, Django's handler, and
the MCP router with a client for it (``serve``, ``http_client``, ``mcp_post``).

Django's ASGI handler closes "old" database connections at the start and end of every
request (request_started/request_finished → close_old_connections). In a test, that
connection carries the test's transaction: on PostgreSQL closing it ends the test's world.
Django's own test clients disconnect that receiver around each request; so does
``django_asgi_app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import httpx2
from asgiref.sync import async_to_sync
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from mcp_consent.integrations import mcp_sdk
from mcp_consent.integrations.asgi import get_asgi_application
from project.mcp_server import build_app

T = TypeVar("T")
TOOLS_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """The ASGI lifespan protocol, as uvicorn speaks it."""
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    async with anyio.create_task_group() as tasks:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        tasks.start_soon(app, scope, app_inbox.receive, app_outbox.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        try:
            yield
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            await from_app.receive()


def django_asgi_app() -> Any:
    """Django's ASGI application that leaves the test's database connection open.

    Like Django's test clients, per request (they connect the receiver back after each of
    theirs, so disconnecting once for the whole test is not enough).
    """
    handler = get_asgi_application()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            await handler(scope, receive, send)
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)

    return app


def serve(scenario: Callable[[Any], Awaitable[T]], mcp_app: Any = None) -> T:
    """Run ``scenario(asgi_app)`` with the lifespan started.

    From this sync test through async_to_sync, as Django's own async test client does: the
    ORM work of the request runs on this thread, inside the test's transaction.
    """

    async def main() -> T:
        app = mcp_sdk.MCPRouter(django_asgi_app(), mcp_app or build_app(), paths=["/mcp"])
        async with lifespan(app):
            return await scenario(app)

    return async_to_sync(main)()


def http_client(app: Any, authorization: str | None = None, **kwargs: Any) -> httpx2.AsyncClient:
    headers = {"Authorization": authorization} if authorization else {}
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app),
        base_url="http://127.0.0.1:8000",
        headers=headers,
        timeout=30,
        **kwargs,
    )


async def mcp_post(
    app: Any, headers: dict[str, str], path: str = "/mcp", body: Any = None
) -> httpx2.Response:
    """POST ``body`` (a tools/call of whoami by default) to ``path`` with ``headers``."""
    async with http_client(app) as http:
        return await http.post(
            path,
            json=body
            if body is not None
            else {**TOOLS_CALL, "params": {"name": "whoami", "arguments": {}}},
            headers={"Accept": "application/json, text/event-stream", **headers},
        )
