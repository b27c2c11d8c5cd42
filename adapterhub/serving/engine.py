"""The serving engine: continuous batching across adapters on one ``AdapterHost``.

One engine thread runs *steps*. A step, under the host's forward lock:

1. publishes adapters the loader threads prepared, and wakes their requests;
2. removes cancelled requests (their rows leave now, their cache is freed);
3. admits queued requests (FIFO) while rows and KV budget allow;
4. runs **one decode forward per group** over every running row of that group: the
   *shared* group holds bare-base rows and rows of every ``mixed_batch`` method (LoRA,
   prefix tuning, IA³...) together; each selective adapter, which rewrites base
   weights, has a group of its own (as ``AdapterHost`` groups rows);
5. prefills at most ``max_prefill_tokens`` prompt tokens of admitted requests, in
   chunks (a long prompt spreads over several steps), so a step's extra time over a
   plain decode step is bounded whatever prompts arrive. A request whose prefill ends
   samples its first token from the chunk's logits and joins its group's batch.

Requests join and leave at step boundaries without waiting for each other; each row's
KV lives in its group's :class:`~adapterhub.serving.cache.SlotCache`. The engine knows
nothing of HTTP; see docs/serving.md for the design and the chosen policies.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from adapterhub.errors import (
    AdapterhubError,
    AdapterUnloadedError,
    ContextLengthError,
    EngineClosedError,
    QueueFullError,
)
from adapterhub.host.decode import enter_routes
from adapterhub.serving.adapters import AdapterManager, Ticket
from adapterhub.serving.cache import SlotCache
from adapterhub.serving.config import EngineConfig
from adapterhub.serving.handle import RequestHandle
from adapterhub.serving.request import Completion, Delta, FinishReason, Request, TokenLogprob
from adapterhub.serving.sampling import logprobs_of, new_generator, pick
from adapterhub.serving.text import TextStream

if TYPE_CHECKING:
    from adapterhub.host.host import AdapterHost
    from adapterhub.host.pool import PoolEntry

BASE_NAMES = ("", "<base>")
_ids = itertools.count(1)


@dataclass(eq=False)
class _Row:
    """Engine-side state of one request, from submit to finish."""

    handle: RequestHandle
    request: Request
    submitted: float
    key: str | None = None  # pool key once known (None: bare base)
    ticket: Ticket | None = None
    entry: PoolEntry | None = None
    acquired: bool = False
    admitted: bool = False  # left the admission queue (prefilling or decoding)
    prompt_ids: list[int] = field(default_factory=list)
    rendered_for: str | None = None  # uid of the adapter version whose template rendered the prompt
    reserved: int = 0  # prompt + max_tokens (KV admission accounting)
    # prefill
    done_prefill: int = 0
    pcache: Any = None
    pmask: torch.Tensor | None = None
    # decode
    group: _Group | None = None
    position: int = 0
    last_token: int = 0
    out_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: TextStream | None = None
    generator: torch.Generator | None = None
    first_token_at: float | None = None

    @property
    def rid(self) -> str:
        return self.handle.request_id


class _Group:
    """Rows that share one decode forward, and their KV cache."""

    def __init__(self, key: str, cache: SlotCache) -> None:
        self.key = key
        self.cache = cache
        self.rows: list[_Row] = []


class Engine:
    """Continuous-batching server of one ``AdapterHost`` (see module docs).

    >>> with Engine(host) as engine:                                   # doctest: +SKIP
    ...     handle = engine.submit(make_request("Hi!", "team/x", temperature=0.7, seed=1))
    ...     for delta in handle:
    ...         print(delta.text, end="")
    """

    def __init__(self, host: AdapterHost, config: EngineConfig | None = None, *, registry_url: str | None = None) -> None:
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
        )
        self._eos = set(host.eos_ids())
        cfg = host.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self._geometry = (
            int(text_cfg.num_hidden_layers),
            int(getattr(text_cfg, "num_key_value_heads", None) or text_cfg.num_attention_heads),
            int(getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads),
        )
        param = next(host.model.parameters())
        self._dtype, self._device = param.dtype, param.device
        self._cv = threading.Condition()
        self._inbox: deque[_Row] = deque()
        self._queued = 0  # submitted, not yet prefilling (bounded by max_queue)
        self._n_running = 0  # rows decoding (written by the engine thread only)
        self._dead: BaseException | None = None
        self._waiting: list[_Row] = []  # for an adapter load
        self._ready: deque[_Row] = deque()  # adapter pinned, waiting for a prefill slot
        self._prefilling: list[_Row] = []
        self._groups: dict[str, _Group] = {}
        self._closing = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.counters: dict[str, int] = {
            "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "steps": 0, "prefill_forwards": 0, "refused": 0,
        }
        self.finished: dict[str, int] = {}

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
        """Stop: every unfinished request ends with finish_reason ``cancelled``."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        else:
            self._shutdown()
        self.adapters.close()

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
        rid = request.request_id or f"req-{next(_ids)}"
        handle = RequestHandle(rid, request)
        handle._on_cancel = self._wake
        row = _Row(handle=handle, request=request, submitted=handle.submitted)
        ref = request.adapter if request.adapter is not None else self.host.default_adapter
        if ref is not None and ref not in BASE_NAMES and ref != self.host.base.name:
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
        """Queue depth, running rows, adapter loads and counters (for metrics and tests)."""
        with self._cv:
            return {
                "queue_depth": self._queued,
                "running": self._n_running,
                "prefilling": len(self._prefilling),
                "waiting_for_adapter": len(self._waiting),
                "adapter_loads": self.adapters.loads,
                "adapter_load_failures": self.adapters.load_failures,
                "adapter_evictions": self.adapters.evictions,
                "finished": dict(self.finished),
                **self.counters,
            }

    # --- helpers -----------------------------------------------------------------------
    def _tokenize(self, row: _Row, entry: PoolEntry | None) -> None:
        req = row.request
        text = self.host.render(req.prompt if req.prompt is not None else req.chat(), entry, raw=req.raw)
        ids = self.host.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ContextLengthError("the prompt is empty after tokenization")
        total = len(ids) + req.sampling.max_tokens
        if total > self.max_model_len:
            raise ContextLengthError(
                f"prompt ({len(ids)} tokens) + max_tokens ({req.sampling.max_tokens}) = {total} "
                f"exceeds the context window of {self.max_model_len} tokens"
            )
        if total > self.config.max_kv_tokens:
            raise ContextLengthError(f"prompt + max_tokens = {total} exceeds --max-kv-tokens {self.config.max_kv_tokens}")
        row.prompt_ids = list(ids)
        row.reserved = total
        row.rendered_for = None if entry is None else entry.uid

    def _group_for(self, entry: PoolEntry | None) -> _Group:
        key = self._group_key(entry)
        g = self._groups.get(key)
        if g is None:
            layers, heads, dim = self._geometry
            g = _Group(key, SlotCache(layers, heads, dim, dtype=self._dtype, device=self._device))
            self._groups[key] = g
        return g

    def _running_rows(self) -> int:
        return sum(len(g.rows) for g in self._groups.values())

    # --- the loop (engine thread) ----------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(
            self._inbox or self._ready or self._prefilling or any(g.rows for g in self._groups.values())
            or any(r.ticket is not None and r.ticket.done for r in self._waiting)
            or any(r.handle.cancelled for r in self._waiting)
            or self.adapters.has_commits()
        )

    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - a bug must not leave clients hanging
            self._dead = exc
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
                self._intake(new)
                self.adapters.commit_ready()
                self._settle_waiting()
                self.adapters.trim()
                self._reap_cancelled()
                self._admit()
                if self._prefilling or self._n_running:
                    self._step()

    def _intake(self, rows: list[_Row]) -> None:
        for row in rows:
            if row.ticket is not None:
                self._waiting.append(row)
            else:
                self._pin(row)

    def _pin(self, row: _Row) -> None:
        """Acquire the row's adapter version (pinned until the row finishes) and queue it."""
        try:
            if row.key is not None:
                row.entry = self.host.acquire([row.key])[0]
                row.acquired = True
                self.adapters.touch(row.key)
                row.handle.adapter = None if row.entry is None else row.entry.label
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
                    self._waiting.append(row)
                    return
                row.key = found
                self._pin(row)
                return
            raise
        except AdapterhubError as exc:
            self._fail(row, exc)
            return
        self._ready.append(row)

    def _settle_waiting(self) -> None:
        still: list[_Row] = []
        for row in self._waiting:
            if row.handle.cancelled:
                self._finish(row, "cancelled")
            elif row.ticket is not None and row.ticket.done:
                ticket, row.ticket = row.ticket, None
                if ticket.error is not None:
                    self._fail(row, ticket.error)
                else:
                    row.key = ticket.key
                    try:
                        self._pin(row)
                    except AdapterhubError as exc:
                        self._fail(row, exc)
            else:
                still.append(row)
        self._waiting = still

    def _reap_cancelled(self) -> None:
        for row in [r for r in self._ready if r.handle.cancelled]:
            self._ready.remove(row)
            self._finish(row, "cancelled")
        for row in [r for r in self._prefilling if r.handle.cancelled]:
            self._prefilling.remove(row)
            self._finish(row, "cancelled")
        for g in self._groups.values():
            for row in [r for r in g.rows if r.handle.cancelled]:
                self._finish(row, "cancelled")

    def _admit(self) -> None:
        busy = self._running_rows() + len(self._prefilling)
        reserved = sum(r.reserved for g in self._groups.values() for r in g.rows) + sum(r.reserved for r in self._prefilling)
        while self._ready and busy < self.config.max_running:
            row = self._ready[0]
            if busy and reserved + row.reserved > self.config.max_kv_tokens:
                break  # wait for rows to finish; FIFO, so a big request is not starved
            self._ready.popleft()
            row.admitted = True
            with self._cv:
                self._queued -= 1
            row.text = TextStream(self.host.tokenizer, row.request.sampling.stop)
            row.generator = new_generator(row.request.sampling.seed)
            self._prefilling.append(row)
            busy += 1
            reserved += row.reserved

    # --- one step ----------------------------------------------------------------------------
    def _step(self) -> None:
        self.adapters.commit_ready()  # loads that finished meanwhile publish before the forward
        self.counters["steps"] += 1
        for g in list(self._groups.values()):
            if g.rows:
                try:
                    self._decode(g)
                except Exception as exc:  # noqa: BLE001 - fail this group's rows, keep serving
                    for row in list(g.rows):
                        self._fail(row, exc)
        # The chunk bound protects decoding rows, and so does running one prefill forward
        # per step while rows decode: every forward reads all the weights again (on a
        # CPU, ~100 ms of a 64-token chunk's ~220 ms), so several small forwards would
        # stall the batch longer than one. Short fresh prompts therefore share one
        # left-padded forward. With no row decoding there is nothing to stall: prompts
        # are prefilled faster (still bounded per step).
        decoding = self._n_running > 0
        budget = self.max_prefill_tokens if decoding else 8 * self.max_prefill_tokens
        if decoding and 2 * self._n_running <= self.config.max_running and len(self._prefilling) > 1:
            # Filling a half-empty batch beats protecting its few rows: every decode step
            # costs about the same (the weights are read once) whether it serves 4 rows
            # or 16, so a larger chunk now buys many fuller steps later.
            budget *= 4
        while self._prefilling and budget > 0:
            rows, n = self._next_prefill(budget)
            budget -= n * len(rows)
            try:
                self._prefill(rows, n)
            except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving
                for row in rows:
                    if row in self._prefilling:
                        self._prefilling.remove(row)
                    self._fail(row, exc)
            if decoding:
                break

    def _group_key(self, entry: PoolEntry | None) -> str:
        return "" if entry is None or entry.method.capabilities.mixed_batch else entry.uid

    def _next_prefill(self, budget: int) -> tuple[list[_Row], int]:
        """The rows of the next prefill forward and its length: a chunk of the head
        request, or several whole fresh prompts (same group) padded to the longest."""
        head = self._prefilling[0]
        left = len(head.prompt_ids) - head.done_prefill
        if head.done_prefill or left >= budget:
            return [head], min(left, budget)
        rows, width, key = [head], left, self._group_key(head.entry)
        for row in self._prefilling[1:]:
            wider = max(width, len(row.prompt_ids))
            if row.done_prefill or self._group_key(row.entry) != key or wider * (len(rows) + 1) > budget:
                break
            rows.append(row)
            width = wider
        return rows, width

    def _forward(self, entries: Sequence[PoolEntry | None], kwargs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        with ExitStack() as stack:
            call = enter_routes(stack, self.host.routes(entries), kwargs)
            out = self.host.model(**call, use_cache=True, logits_to_keep=1)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            call["cache"] = cache
            return out.logits[:, -1].float().cpu(), call

    def _prefill(self, rows: list[_Row], n: int) -> None:
        """One prefill forward: ``n`` more tokens of ``rows[0]``, or whole fresh prompts."""
        entries = [r.entry for r in rows]
        self.host.ensure_resident(entries)
        dev = self._device
        head = rows[0]
        lo = head.done_prefill
        if lo:  # a later chunk of one request: continue its cache
            assert head.pmask is not None
            ids = torch.tensor([head.prompt_ids[lo : lo + n]], device=dev)
            pos = torch.arange(head.position, head.position + n, device=dev).unsqueeze(0)
            mask = torch.cat([head.pmask, head.pmask.new_ones(1, n)], dim=1)
            kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "cache": head.pcache}
        else:  # first forward of each row, left-padded to a common width
            pad = self._pad_id()
            ids = torch.full((len(rows), n), pad, dtype=torch.long, device=dev)
            mask = torch.zeros(len(rows), n, dtype=torch.long, device=dev)
            for i, r in enumerate(rows):
                take = r.prompt_ids[:n]
                ids[i, n - len(take) :] = torch.tensor(take, device=dev)
                mask[i, n - len(take) :] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        logits, call = self._forward(entries, kwargs)
        self.counters["prefill_forwards"] += 1
        cache, full_mask, positions = call["cache"], call["attention_mask"], call["position_ids"]
        for i, row in enumerate(rows):
            # A route may have widened the mask (prefix slots) and moved positions: the
            # row continues from what its first forward actually used.
            # (Only a request prefilled alone is ever left half-done: fresh prompts share
            # a forward only when every one of them fits whole.)
            row.pcache, row.pmask = cache, full_mask[i : i + 1]
            row.position = int(positions[i, -1]) + 1
            took = min(n, len(row.prompt_ids) - row.done_prefill)
            row.done_prefill += took
            self.counters["prompt_tokens"] += took
            if row.done_prefill < len(row.prompt_ids):
                continue
            self._prefilling.remove(row)
            token = pick(logits[i : i + 1], [row.request.sampling], [row.generator])[0]  # type: ignore[list-item]
            if self._emit(row, token, logits[i]):
                continue
            g = self._group_for(row.entry)
            g.cache.add_row(cache, full_mask[i], index=i)
            row.pcache, row.pmask = None, None
            row.group = g
            g.rows.append(row)
            self._n_running += 1
            row.last_token = token

    def _pad_id(self) -> int:
        tok = self.host.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        return min(self._eos) if self._eos else 0

    def _decode(self, g: _Group) -> None:
        rows = g.rows
        self.host.ensure_resident([r.entry for r in rows])
        g.cache.reserve(1)
        ids = torch.tensor([[r.last_token] for r in rows], device=self._device)
        pos = torch.tensor([[r.position] for r in rows], device=self._device)
        mask = g.cache.step_mask(1, self._dtype)
        logits, _ = self._forward([r.entry for r in rows], {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "cache": g.cache})
        g.cache.advance(1)
        tokens = pick(logits, [r.request.sampling for r in rows], [r.generator for r in rows])  # type: ignore[misc]
        for i, (row, token) in enumerate(zip(list(rows), tokens, strict=True)):
            row.position += 1
            row.last_token = token
            self._emit(row, token, logits[i])

    # --- output ----------------------------------------------------------------------------
    def _emit(self, row: _Row, token: int, logits: torch.Tensor) -> bool:
        """Hand one sampled token to the client; True if the request finished."""
        now = time.perf_counter()
        if row.first_token_at is None:
            row.first_token_at = now
        sp = row.request.sampling
        assert row.text is not None
        if token in self._eos:
            self._finish(row, "stop")
            return True
        row.out_ids.append(token)
        self.counters["completion_tokens"] += 1
        lps: list[TokenLogprob] = []
        if sp.logprobs:
            lp, top = logprobs_of(logits, token, sp.top_logprobs)
            dec = self.host.tokenizer.decode
            lps = [TokenLogprob(token, dec([token]), lp, tuple((t, dec([t]), v) for t, v in top))]
            row.logprobs.extend(lps)
        text = row.text.push(token)
        if row.text.stopped:
            self._finish(row, "stop", Delta(text, [token], lps))
            return True
        if len(row.out_ids) >= sp.max_tokens:
            self._finish(row, "length", Delta(text + row.text.finish(), [token], lps))
            return True
        row.handle._push(Delta(text, [token], lps))
        return False

    def _leave(self, row: _Row) -> None:
        """Take the row out of every structure; free its cache row and unpin its adapter."""
        g = row.group
        if g is not None and row in g.rows:
            i = g.rows.index(row)
            moved = g.cache.remove_row(i)
            last = g.rows.pop()
            if moved is not None:
                g.rows[i] = last
            row.group = None
            self._n_running -= 1
            if not g.rows and g.key:  # a selective adapter's group: free its cache
                del self._groups[g.key]
        row.pcache = row.pmask = None
        if row.acquired:
            row.acquired = False
            self.host.release([row.entry])
        if not row.admitted:
            row.admitted = True
            with self._cv:
                self._queued -= 1

    def _finish(self, row: _Row, reason: FinishReason, last: Delta | None = None) -> None:
        self._leave(row)
        tail = "" if row.text is None else row.text.finish()
        if last is None:
            last = Delta(tail, [])
        elif tail:
            last.text += tail
        last.finish_reason = reason
        row.handle._push(last)
        self.finished[reason] = self.finished.get(reason, 0) + 1
        now = time.perf_counter()
        completion = Completion(
            request_id=row.rid,
            text="" if row.text is None else row.text.text,
            token_ids=list(row.out_ids),
            finish_reason=reason,
            adapter=None if row.entry is None else row.entry.label,
            prompt_tokens=len(row.prompt_ids),
            logprobs=row.logprobs,
            ttft_s=None if row.first_token_at is None else row.first_token_at - row.submitted,
            latency_s=now - row.submitted,
        )
        row.handle._finish(completion)

    def _fail(self, row: _Row, error: BaseException) -> None:
        self._leave(row)
        self.finished["error"] = self.finished.get("error", 0) + 1
        row.handle._finish(None, error)

    def _shutdown(self) -> None:
        with self._cv:
            rows = list(self._inbox)
            self._inbox.clear()
        rows += self._waiting + list(self._ready) + self._prefilling
        rows += [r for g in self._groups.values() for r in g.rows]
        self._waiting, self._prefilling = [], []
        self._ready.clear()
        for row in rows:
            if not row.handle.done:
                self._finish(row, "cancelled")
