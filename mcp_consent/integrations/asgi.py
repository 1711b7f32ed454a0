"""Django's ASGI handler with the sync work of a request in one thread hop, on a kept thread.

Django's ``ASGIHandler`` costs a sync project two things per request (issue 11, measured
under uvicorn on 2 cores: a metadata GET took ~5 ms, the view ~0.3 ms of it):

- It builds the middleware chain in async mode, so each sync middleware's
  ``process_request`` and ``process_response`` is its own ``sync_to_async`` call: with
  Django's standard middleware a dozen hops from the event loop to a thread and back per
  request, each a wake-up of the loop and of the thread.
- It runs each request in a ``ThreadSensitiveContext`` of its own, for which asgiref starts
  a new thread and another to stop it. A new thread has no database connection (Django
  keeps them per thread): every request also opened one (on SQLite: the file, its pragmas,
  the schema read again).

This handler is Django's except for those two: the middleware chain is the sync one
(Django's WSGI chain), called in ONE ``sync_to_async`` hop per request, and that hop runs on
a thread the request borrows from ``RequestThreads`` (as the MCP endpoint does) and gives
back. There is still one thread per request being served, so a request's ORM work never
shares a thread with another request's, and Django's request_started / request_finished
signals still close or keep connections by CONN_MAX_AGE and the pool, as under Django's
handler. Async views and async-only middleware still work (adapted with ``async_to_sync``
on that thread, as under WSGI) but lose their benefit: a project built around them should
keep Django's handler.
"""

from __future__ import annotations

from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.http import HttpRequest, HttpResponseBase

from .threads import RequestThreads


class ASGIHandler(DjangoASGIHandler):
    """Django's ASGI handler on reused request threads (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        # Django's WSGI chain: every middleware and the view called in one sync call.
        self.load_middleware(is_async=False)
        self.threads = RequestThreads()

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            # As Django's handler: it serves HTTP only (lifespan goes elsewhere, see MCPRouter).
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        async with self.threads.context():
            await self.handle(scope, receive, send)


def get_asgi_application() -> ASGIHandler:
    """``django.core.asgi.get_asgi_application``, returning the handler above."""
    django.setup(set_prefix=False)
    return ASGIHandler()
