"""The threads a request's ORM work runs on: one per request, as in Django's handler, reused.

Used by the MCP endpoint (mcp_sdk.ProtectedMCPApp) and by Django's own requests (integrations.asgi).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

from asgiref.sync import AsyncToSync, ThreadSensitiveContext, sync_to_async

T = TypeVar("T")

# asgiref >= 3.13: a ThreadSensitiveContext can run on an executor the caller keeps.
_CONTEXT_TAKES_EXECUTOR = "executor" in inspect.signature(ThreadSensitiveContext).parameters


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

    async def run(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """``fn(**kwargs)`` on this request's thread (where its ``thread_sensitive`` work runs),
        in a copy of the caller's context variables.

        For sync code that neither calls back into async code, nor sets a context variable
        the caller reads, nor reads an asgiref ``Local`` the caller set (Django's active
        translation, current timezone, urlconf: this thread sees its own) — the token
        verification, whose answers are English constants and whose database connections
        are per thread anyway. Submitted to the thread directly instead of through
        ``sync_to_async``, whose bookkeeping for those cases (the calling loop recorded for
        ``async_to_sync``, every context variable and ``Local`` carried over and back) cost
        ~80 µs of each MCP call's ~400 µs over the unauthenticated floor
        (docs/performance.md).
        """
        if self.executor is None:  # no thread of ours (under async_to_sync): asgiref's rules
            return cast(T, await sync_to_async(fn, thread_sensitive=True)(**kwargs))
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(context.run, fn, **kwargs))

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
