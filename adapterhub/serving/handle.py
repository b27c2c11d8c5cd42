"""The client's side of one request: stream deltas (sync or async), cancel, get the result.

The engine thread appends deltas under a condition variable; a synchronous consumer
waits on it, an asynchronous one registers its event loop and is woken with
``call_soon_threadsafe``. Several consumers may read the same handle: each iterator
keeps its own position in the (bounded: one entry per token) delta list.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from adapterhub.serving.request import Completion, Delta, Request


class RequestHandle:
    """Returned by :meth:`Engine.submit`. Iterate for deltas; :meth:`result` blocks."""

    def __init__(self, request_id: str, request: Request) -> None:
        self.request_id = request_id
        self.request = request
        self._cond = threading.Condition()
        self._deltas: list[Delta] = []
        self._done = False
        self._error: BaseException | None = None
        self._completion: Completion | None = None
        self._cancel = threading.Event()
        self._wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._on_cancel: Callable[[], None] | None = None  # wakes a sleeping engine
        self.adapter: str | None = None
        """``name@version`` serving this request, set once its adapter is pinned (before
        the first delta); None for the bare base or while a cold adapter loads."""
        self.submitted = time.perf_counter()

    # --- engine side -------------------------------------------------------------------
    def _push(self, delta: Delta) -> None:
        with self._cond:
            self._deltas.append(delta)
            self._cond.notify_all()
            wakers = list(self._wakers)
        self._wake(wakers)

    def _finish(self, completion: Completion | None, error: BaseException | None = None, last: Delta | None = None) -> None:
        """End the request; ``last`` (the delta with the finish reason) is published in the
        same critical section, so whoever sees it can read :meth:`result` at once."""
        with self._cond:
            if self._done:
                return
            if last is not None:
                self._deltas.append(last)
            self._completion, self._error, self._done = completion, error, True
            self._cond.notify_all()
            wakers = list(self._wakers)
        self._wake(wakers)

    @staticmethod
    def _wake(wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in wakers:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                pass

    # --- client side ---------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to stop this request; its row leaves at the next step."""
        self._cancel.set()
        if self._on_cancel is not None:
            self._on_cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> Completion:
        """Wait for the end and return the completion (re-raises the request's error)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"request {self.request_id} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._completion is not None
        return self._completion

    def __iter__(self) -> Iterator[Delta]:
        i = 0
        while True:
            with self._cond:
                while i >= len(self._deltas) and not self._done:
                    self._cond.wait()
                fresh = self._deltas[i:]
                done = self._done
            i += len(fresh)
            yield from fresh
            if done and i >= len(self._deltas):
                if self._error is not None:
                    raise self._error
                return

    async def __aiter__(self) -> AsyncIterator[Delta]:
        async for batch in self.batches():
            for delta in batch:
                yield delta

    async def batches(self) -> AsyncIterator[list[Delta]]:
        """Every delta produced since the last wake-up, as one list: a consumer that
        falls behind (an HTTP writer under load) catches up in one send, not N."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waker = (loop, event)
        with self._cond:
            self._wakers.append(waker)
        try:
            i = 0
            while True:
                event.clear()
                with self._cond:
                    fresh = self._deltas[i:]
                    done = self._done
                i += len(fresh)
                if fresh:
                    yield fresh
                if done and not fresh:
                    with self._cond:
                        if i >= len(self._deltas):
                            break
                    continue
                if not fresh:
                    await event.wait()
            if self._error is not None:
                raise self._error
        finally:
            with self._cond:
                self._wakers.remove(waker)
