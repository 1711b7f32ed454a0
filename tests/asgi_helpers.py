"""Running ASGI applications in-process from sync tests: the lifespan, and Django's handler.

Django's ASGI handler closes "old" database connections at the start and end of every
request (request_started/request_finished → close_old_connections). In a test, that
connection carries the test's transaction: on PostgreSQL closing it ends the test's world.
Django's own test clients disconnect that receiver around each request; so does
``django_asgi_app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from django.core.asgi import get_asgi_application
from django.core.signals import request_finished, request_started
from django.db import close_old_connections


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
