"""The serving engine: continuous batching across adapters on one ``AdapterHost``.

Three parts, one job each (docs/serving.md, "Inside the engine"):

* :class:`Engine` (this module) is what callers see: ``submit``, ``cancel`` (on the
  handle), ``load``/``unload``, ``stats``, ``close``. It owns the engine thread, every
  row's :class:`~adapterhub.serving.rows.RowState`, and what clients receive;
* :class:`~adapterhub.serving.scheduler.Scheduler` decides who runs each step: which
  waiting requests are admitted and how many prompt tokens go into which forward;
* :class:`~adapterhub.serving.runner.Runner` builds the tensors, runs one forward per
  decode group and per prefill, samples, and owns the KV caches.

One engine thread runs *steps*. A step, under the host's forward lock: publishes the
adapters loader threads prepared and wakes their requests; drops cancelled requests;
admits waiting ones; runs one decode forward per group; then prefills within the step's
budget. Requests join and leave at step boundaries without waiting for each other.
The engine knows nothing of HTTP.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from adapterhub.errors import (
    AdapterhubError,
    AdapterUnloadedError,
    EngineClosedError,
    QueueFullError,
)
from adapterhub.refs import is_base
from adapterhub.serving.adapters import AdapterManager, Ticket
from adapterhub.serving.config import EngineConfig
from adapterhub.serving.handle import RequestHandle
from adapterhub.serving.output import completion_of, token_output
from adapterhub.serving.prompts import PromptEncoder
from adapterhub.serving.request import Completion, Delta, FinishReason, Request
from adapterhub.serving.rows import QUEUED, Group, Row, RowState
from adapterhub.serving.runner import Prefilled, Runner
from adapterhub.serving.sampling import new_generator
from adapterhub.serving.scheduler import PrefillWork, Scheduler
from adapterhub.serving.text import TextStream

if TYPE_CHECKING:
    import torch

    from adapterhub.host.host import AdapterHost
    from adapterhub.host.pool import PoolEntry

log = logging.getLogger(__name__)
_ids = itertools.count(1)

CLOSE_JOIN_S = 30.0
"""How long :meth:`Engine.close` waits for a step in progress (one forward) to end."""


class Engine:
    """Continuous-batching server of one ``AdapterHost`` (see module docs).

    >>> with Engine(host) as engine:                                   # doctest: +SKIP
    ...     handle = engine.submit(make_request("Hi!", "team/x", temperature=0.7, seed=1))
    ...     for delta in handle:
    ...         print(delta.text, end="")
    """

    def __init__(self, host: AdapterHost, config: EngineConfig | None = None, *, registry_url: str | None = None,
                 trust: Any = None) -> None:
        self.host = host
        self.config = config or EngineConfig()
        window = host.context_window
        cpu = host.device == "cpu" or str(host.device).startswith("cpu")
        # A step's prefill chunk should cost about what a decode step costs: on 2 CPU
        # cores a 64-token chunk of SmolLM2-135M does; an accelerator takes far more.
        self.max_prefill_tokens = self.config.max_prefill_tokens or (64 if cpu else 512)
        self.max_model_len = min(self.config.max_model_len or window, window)
        self.adapters = AdapterManager(
            host,
            registry_url=registry_url if registry_url is not None else host.registry_url,
            max_loaded=self.config.max_loaded_adapters,
            loader_threads=self.config.loader_threads,
            resolve_ttl_s=self.config.resolve_ttl_s,
            wake=self._wake,
            trust=trust,  # serve --require-signed: a TrustPolicy (registry/trust.py)
        )
        self.prompts = PromptEncoder(host, self.max_model_len, self.config.max_kv_tokens)
        self.max_prompt_chars = self.prompts.max_prompt_chars
        self.runner = Runner(host, self.config.prefix_block_tokens if self.config.prefix_cache else None)
        self.scheduler = Scheduler(self.config, self.max_prefill_tokens, lambda r: self.runner.group_key(r.entry),
                                   self.runner.packable)
        self._cv = threading.Condition()
        self._inbox: deque[Row] = deque()  # submitted by client threads, taken by the engine thread
        self._queued = 0  # submitted, not yet admitted (bounded by max_queue; under _cv)
        # Every row the engine thread holds, in queue order: a row moves to the end when
        # it enters a queue (pinned after its load, admitted), so filtering by state gives
        # FIFO order for waiting rows and admission order for prefilling ones.
        self._rows: dict[Row, None] = {}
        self._dead: BaseException | None = None
        self._closing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.counters: dict[str, int] = {
            "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "steps": 0, "forwards": 0, "prefill_forwards": 0,
            "refused": 0,
        }
        self.finished: dict[str, int] = {}
        self._by_state = dict.fromkeys(RowState, 0)  # rows per state, for stats() (under _cv)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Engine:
        with self._start_lock:
            if self._closing:
                raise EngineClosedError("the engine is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="adapterhub-engine", daemon=True)
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop: every unfinished request ends with finish_reason ``cancelled``.

        Returns within a bound whatever the loaders do: pending loads are failed at once
        and a hung fetch is left to its daemon thread.
        """
        with self._cv:
            if self._closed:
                return  # closed already (a shutdown timer and the server's exit both close)
            self._closing = self._closed = True
            self._cv.notify_all()
        self.adapters.close()  # first: settles tickets, so no row waits on a load
        if self._thread is not None:
            self._thread.join(CLOSE_JOIN_S)
            if self._thread.is_alive():
                log.error("engine thread did not stop within %.0f s of close()", CLOSE_JOIN_S)
        else:
            self._shutdown()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    # --- client API (any thread) ---------------------------------------------------------
    def submit(self, request: Request) -> RequestHandle:
        """Queue a request; returns its handle at once.

        Refused at once (nothing queued): :class:`QueueFullError` when ``max_queue``
        requests are already waiting, :class:`ContextLengthError` when the prompt plus
        ``max_tokens`` exceeds the context window (checked here when the adapter is
        already loaded or the prompt is raw, else as soon as the adapter is), and
        :class:`InvalidNameError` for a malformed adapter reference.
        """
        self.start()
        if request.sampling.constraint is not None:
            self.runner.grammar.compile(request.sampling.constraint)  # a schema that cannot compile: ConfigError now
        rid = request.request_id or f"req-{next(_ids)}"
        handle = RequestHandle(rid, request)
        handle._on_cancel = self._wake
        row = Row(handle=handle, request=request, submitted=handle.submitted)
        ref = request.adapter if request.adapter is not None else self.host.default_adapter
        if not is_base(ref, self.host.base.name):
            assert ref is not None
            found = self.adapters.lookup(ref)
            if isinstance(found, Ticket):
                row.ticket = found
            else:
                row.key = found
        if row.ticket is None:
            try:
                entry = self.host.entry(row.key) if row.key is not None else None
            except AdapterUnloadedError:
                pass  # unloaded since lookup: the engine thread looks it up again (_pin)
            else:
                self._tokenize(row, entry)  # raises ContextLengthError before anything is queued
        with self._cv:
            if self._closing or self._dead is not None:
                raise EngineClosedError(f"the engine is closed{f' ({self._dead})' if self._dead else ''}")
            if self._queued >= self.config.max_queue:
                self.counters["refused"] += 1
                raise QueueFullError(
                    f"request queue is full ({self.config.max_queue} waiting; raise --max-queue or retry later)"
                )
            self._queued += 1
            self.counters["requests"] += 1
            self._inbox.append(row)
            self._cv.notify_all()
        return handle

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        """Submit every request, then wait for all (errors are raised in order)."""
        handles = [self.submit(r) for r in requests]
        return [h.result() for h in handles]

    @property
    def healthy(self) -> bool:
        """True while the engine takes requests (not closed, its thread not dead)."""
        thread_ok = self._thread is None or self._thread.is_alive()
        return not self._closing and self._dead is None and thread_ok

    def load(self, ref: str, timeout: float | None = None) -> str:
        """Make ``ref`` (pool name or registry reference) loaded; returns its pool key.

        Uses the same single-flight loads as requests do; raises the load's error
        (``AdapterNotFoundError``, ``IntegrityError``...) or ``TimeoutError``.
        """
        self.start()
        found = self.adapters.lookup(ref)
        if not isinstance(found, Ticket):
            return found
        if not found.wait(timeout):
            raise TimeoutError(f"loading {ref!r} took longer than {timeout} s")
        if found.error is not None:
            raise found.error
        assert found.key is not None
        return found.key

    def unload(self, name: str) -> None:
        """Unload a pool entry; requests already running on it finish first."""
        self.host.unload(name)
        self.adapters.forget(name)

    def stats(self) -> dict[str, Any]:
        """Queue depth, rows per state, adapter loads and counters (for metrics and tests)."""
        with self._cv:
            return {
                "queue_depth": self._queued,
                "running": self._by_state[RowState.DECODING],
                "prefilling": self._by_state[RowState.PREFILLING],
                "waiting_for_adapter": self._by_state[RowState.LOADING],
                "adapter_loads": self.adapters.loads,
                "adapter_load_failures": self.adapters.load_failures,
                "adapter_evictions": self.adapters.evictions,
                "finished": dict(self.finished),
                # Plain ints written by the engine thread: a reader may see one step old.
                "prefix_cache": None if self.runner.prefix is None else self.runner.prefix.stats(),
                **self.counters,
            }

    # --- the loop (engine thread) ----------------------------------------------------------
    def _in(self, state: RowState) -> list[Row]:
        return [r for r in self._rows if r.state is state]

    def _move(self, row: Row, to: RowState) -> None:
        """Every state change goes through here: the per-state counts stay exact."""
        was = row.state
        row.move(to)
        with self._cv:
            self._by_state[was] -= 1
            self._by_state[to] += 1

    def _requeue(self, row: Row, state: RowState) -> None:
        self._move(row, state)
        self._rows.pop(row, None)
        self._rows[row] = None

    def _has_work(self) -> bool:
        return bool(
            self._inbox
            or any(r.state is not RowState.LOADING or r.handle.cancelled or (r.ticket is not None and r.ticket.done)
                   for r in self._rows)
            or self.adapters.has_commits()
        )

    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - a bug must not leave clients hanging
            self._dead = exc
            log.exception("engine thread died; every request fails")
            raise
        finally:
            self._shutdown()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closing and not self._has_work():
                    self._cv.wait(timeout=1.0)
                if self._closing:
                    break
            # Scheduling happens under the forward lock too, so requests that arrived
            # while another thread held it join this very step.
            with self.host.forward_lock:
                with self._cv:
                    new = list(self._inbox)
                    self._inbox.clear()
                for row in new:
                    self._take(row)
                    if row.ticket is not None:
                        self._move(row, RowState.LOADING)
                    else:
                        self._pin(row)
                self.adapters.commit_ready()
                self._settle_loads()
                self.adapters.trim()
                self._reap_cancelled()
                self._admit()
                if self.runner.decoding() or self._in(RowState.PREFILLING):
                    self._step()

    def _take(self, row: Row) -> None:
        """A row from the inbox enters the engine thread's table (as WAITING)."""
        self._rows[row] = None
        with self._cv:
            self._by_state[RowState.WAITING] += 1

    def _tokenize(self, row: Row, entry: PoolEntry | None) -> None:
        enc = self.prompts.encode(row.request, entry)
        row.prompt_ids, row.reserved = enc.ids, enc.reserved
        row.rendered_for = None if entry is None else entry.uid

    def _pin(self, row: Row) -> None:
        """Acquire the row's adapter version (pinned until the row finishes): it waits now."""
        try:
            if row.key is not None:
                row.entry = self.host.acquire([row.key])[0]
                row.acquired = True
                self.adapters.touch(row.key)
                row.handle.adapter = row.label
            pinned = None if row.entry is None else row.entry.uid
            if not row.prompt_ids or row.rendered_for != pinned:
                # Not rendered yet, or rendered for a version replaced since submit: the
                # template must be the one of the version that serves the request.
                self._tokenize(row, row.entry)
        except AdapterUnloadedError:
            if row.request.adapter is not None and row.key is not None and not row.acquired:
                # Unloaded between lookup and pin (LRU or an operator): load it again.
                found = self.adapters.lookup(row.request.adapter)
                if isinstance(found, Ticket):
                    row.key, row.ticket = None, found
                    if row.state is not RowState.LOADING:
                        self._move(row, RowState.LOADING)
                    return
                row.key = found
                self._pin(row)
                return
            raise
        except AdapterhubError as exc:
            self._fail(row, exc)
            return
        if row.state is RowState.LOADING:
            self._requeue(row, RowState.WAITING)

    def _settle_loads(self) -> None:
        for row in self._in(RowState.LOADING):
            if row.handle.cancelled:
                self._finish(row, "cancelled")
            elif row.ticket is not None and row.ticket.done:
                ticket, row.ticket = row.ticket, None
                if ticket.error is not None:
                    self._fail(row, ticket.error)
                    continue
                row.key = ticket.key
                try:
                    self._pin(row)
                except AdapterhubError as exc:
                    self._fail(row, exc)

    def _reap_cancelled(self) -> None:
        for row in [r for r in self._rows if r.handle.cancelled and r.state is not RowState.LOADING]:
            self._finish(row, "cancelled")

    def _admit(self) -> None:
        busy = self._in(RowState.PREFILLING) + self.runner.decode_rows()
        for row in self.scheduler.admit(self._in(RowState.WAITING), busy):
            self._requeue(row, RowState.PREFILLING)
            with self._cv:
                self._queued -= 1
            row.text = TextStream(self.host.tokenizer, row.request.sampling.stop)
            row.generator = new_generator(row.request.sampling.seed, self.runner.device)
            if row.request.sampling.constraint is not None:
                row.constraint = self.runner.grammar.matcher(row.request.sampling.constraint)
            if self.runner.packable(row):
                self.runner.start(row)  # its own cache, from the prefix cache where it can
        if self.runner.prefix is not None:
            self.runner.prefix.trim(self._kv_budget())  # running rows' reservations come first

    def _kv_budget(self) -> int:
        """KV tokens the prefix cache may hold: what admitted rows have not reserved."""
        busy = self._in(RowState.PREFILLING) + self.runner.decode_rows()
        return self.config.max_kv_tokens - sum(r.reserved for r in busy)

    # --- one step ----------------------------------------------------------------------------
    def _step(self) -> None:
        self.adapters.commit_ready()  # loads that finished meanwhile publish before the forward
        self.counters["steps"] += 1
        plan = self.scheduler.plan_step(list(self.runner.groups.values()), self._in(RowState.PREFILLING),
                                        self.runner.packable_group)
        for f in plan:
            if f.work is not None:
                self._prefill(f.work)
            elif f.group is not None and not f.group.rows and not f.chunks:
                continue  # every row of the group left earlier in this step (a failed forward)
            elif f.per_row:
                assert f.group is not None
                self._decode(f.group)
            else:
                self._packed(f.group, f.chunks)

    def _decode(self, g: Group) -> None:
        """A per-row decode forward (a group holding a row whose method cannot pack)."""
        self.counters["forwards"] += 1
        try:
            tokens, logits = self.runner.decode(g)
        except Exception as exc:  # noqa: BLE001 - fail this group's rows, keep serving
            self._fail_forward("decode", list(g.rows), exc)
            return
        for i, (row, token) in enumerate(zip(list(g.rows), tokens, strict=True)):
            self._emit(row, token, logits[i])

    def _packed(self, g: Group | None, chunks: Sequence[tuple[Row, int]]) -> None:
        """Run one packed forward and hand out what it produced."""
        rows = (list(g.rows) if g is not None else []) + [r for r, _ in chunks]
        self.counters["forwards"] += 1
        try:
            out = self.runner.step(g, chunks)
        except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving
            self._fail_forward("packed", rows, exc)
            return
        if chunks:
            self.counters["prefill_forwards"] += 1
        self.counters["prompt_tokens"] += out.prompt_tokens
        for row, token, logits in out.decoded:
            self._emit(row, token, logits)
        for row, token, logits in out.done:
            if row.request.sampling.max_tokens == 0:  # scoring the prompt only: no token
                self._finish(row, "length")
            elif not self._emit(row, token, logits):
                row.last_token = token
                self.runner.join_kv(row, self._kv_budget())
                self._move(row, RowState.DECODING)

    def _prefill(self, work: PrefillWork) -> None:
        self.counters["forwards"] += 1
        try:
            out = self.runner.prefill(work)
        except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving
            self._fail_forward("prefill", list(work.rows), exc)
            return
        self.counters["prefill_forwards"] += 1
        self.counters["prompt_tokens"] += out.prompt_tokens
        for (row, i), token in zip(out.done, out.tokens, strict=True):
            if row.request.sampling.max_tokens == 0:  # scoring the prompt only: no token
                self._finish(row, "length")
            elif not self._emit(row, token, out.logits[i]):
                self._join(row, out, i, token)

    def _join(self, row: Row, out: Prefilled, i: int, token: int) -> None:
        row.last_token = token
        self.runner.join(row, out, i)
        self._move(row, RowState.DECODING)

    def _fail_forward(self, what: str, rows: list[Row], exc: BaseException) -> None:
        log.error(
            "%s forward failed; its requests fail, the engine keeps serving", what, exc_info=exc,
            extra={"fields": {"request_ids": ",".join(r.rid for r in rows),
                              "adapters": ",".join(sorted({r.label or "<base>" for r in rows}))}},
        )
        for row in rows:
            self._fail(row, exc)

    # --- output ----------------------------------------------------------------------------
    def _emit(self, row: Row, token: int, logits: torch.Tensor) -> bool:
        """Hand one sampled token to the client; True if the request finished."""
        delta, reason = token_output(row, token, logits, eos=self.runner.eos, decode=self.host.tokenizer.decode)
        if reason is None:
            self.counters["completion_tokens"] += 1
            row.handle._push(delta)
            return False
        if delta.token_ids:
            self.counters["completion_tokens"] += 1
        self._finish(row, reason, delta)
        return True

    def _leave(self, row: Row) -> None:
        """Take the row out of the engine; free its cache row and unpin its adapter."""
        self.runner.leave(row)
        if row.state in QUEUED:
            with self._cv:
                self._queued -= 1
        self._move(row, RowState.FINISHED)
        self._rows.pop(row, None)
        if row.acquired:
            row.acquired = False
            self.host.release([row.entry])

    def _finish(self, row: Row, reason: FinishReason, last: Delta | None = None) -> None:
        if reason != "cancelled" and row.state in (RowState.DECODING, RowState.PREFILLING):
            self.runner.remember(row, self._kv_budget() + row.reserved)  # its own reservation ends now
        self._leave(row)
        tail = "" if row.text is None else row.text.finish()
        if last is None:
            last = Delta(tail, [])
        elif tail:
            last.text += tail
        last.finish_reason = reason
        self.finished[reason] = self.finished.get(reason, 0) + 1
        # The last delta and the completion arrive together: a consumer that sees the
        # finish reason can read the result without waiting.
        row.handle._finish(completion_of(row, reason, self.host.tokenizer.decode), last=last)

    def _fail(self, row: Row, error: BaseException) -> None:
        self._leave(row)
        self.finished["error"] = self.finished.get("error", 0) + 1
        row.handle._finish(None, error)

    def _shutdown(self) -> None:
        with self._cv:
            new = list(self._inbox)
            self._inbox.clear()
        for row in new:
            self._take(row)
        for row in list(self._rows):
            if not row.handle.done:
                self._finish(row, "cancelled")
        self._rows.clear()
