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

It also hops to a thread three times per request even then: the ``request_started``
signal, the response, and ``response.close()`` (the ``request_finished`` signal) are each
a ``sync_to_async`` call of their own.

This handler is Django's except for those: the middleware chain is the sync one (Django's
WSGI chain), and the signal, the chain and, for a response whose content is already in
memory, its ``close()`` run in ONE ``sync_to_async`` hop per request (a streaming
response is closed after it was sent, as Django does); that hop runs on a thread the
request borrows from ``RequestThreads`` (as the MCP endpoint does) and gives back. There is still one thread per request being served, so a request's ORM work never
shares a thread with another request's, and Django's request_started / request_finished
signals still close or keep connections by CONN_MAX_AGE and the pool, as under Django's
handler. Async views and async-only middleware still work (adapted with ``async_to_sync``
on that thread, as under WSGI) but lose their benefit: a project built around them should
keep Django's handler.
"""

from __future__ import annotations

import asyncio
from typing import IO, Any, cast

import django
from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import get_script_prefix
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.urls import set_script_prefix

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

    def serve(
        self, scope: Any, body_file: IO[bytes], served: list[HttpResponseBase]
    ) -> HttpResponseBase:
        """On the request's thread: what Django's ``handle`` spreads over three hops.

        ``request_started`` (with ``scope``, as Django sends it), the request built, the
        middleware chain and the view, and ``close()`` for a response whose content is in
        memory: its ``request_finished`` (database connections kept or closed by
        CONN_MAX_AGE and the pool) then runs before the bytes are sent, which nothing of a
        complete response needs. A streaming response keeps its iterator open until sent.
        """
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        # Django's create_request gives (request, None), or (None, the 400 or 413 response).
        response = (
            self.get_response(request)
            if request is not None
            else cast(HttpResponseBase, error_response)
        )
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size  # as Django's run_get_response
        if not response.streaming:
            response.close()
        served.append(response)
        return response

    def finish_abandoned(self, served: list[HttpResponseBase]) -> None:
        """On the request's thread, after ``serve`` (the thread runs one call at a time): a
        request whose client left before its response was sent ends once, as under Django
        (request_finished), whether ``serve`` had closed its response or not."""
        if not served:
            signals.request_finished.send(sender=self.__class__)  # serve failed or never ran
        elif served[0].streaming:
            served[0].close()

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        """Django's ``handle`` with one hop (``serve``): the body read, the request served,
        the response sent, a client that goes away meanwhile noticed as Django does."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        served: list[HttpResponseBase] = []

        async def process_request() -> HttpResponseBase:
            response = await sync_to_async(self.serve, thread_sensitive=True)(
                scope, body_file, served
            )
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while it was being sent
            return response

        tasks = [
            # As Django's: the disconnect listener first, the request's task second.
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = cast(HttpResponseBase, tasks[1].result())
        except asyncio.CancelledError:
            # The client left first; ``serve`` may still be running on the thread.
            await sync_to_async(self.finish_abandoned, thread_sensitive=True)(served)
        else:
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=True)()
        body_file.close()

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
