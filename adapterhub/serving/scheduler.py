"""Who runs this step: admission, and how many prompt tokens are prefilled in which forward.

The scheduler decides and touches no tensor; :mod:`.runner` carries its decisions out.
Its policies, each for a measured reason (docs/serving.md, "Scheduling"):

* **admission** is FIFO: the oldest waiting request is admitted while fewer than
  ``max_running`` rows are busy and its ``prompt + max_tokens`` fits in what
  ``max_kv_tokens`` has left. A request that does not fit blocks those behind it, so a
  large request is never starved by a stream of small ones.
* **the prefill budget** of a step bounds the time prompts add to it: ``max_prefill_tokens``
  while rows decode (a 64-token chunk of SmolLM2-135M costs about one decode step on two
  CPU cores), 4× that when the batch is less than half full (every decode step costs about
  the same whatever its row count, so filling the batch now buys fuller steps later),
  and 8× with nothing decoding (nobody to stall).
* **one prefill forward per step while rows decode**: every forward reads all the weights
  again (~100 ms of a 64-token chunk's ~220 ms on this CPU), so several small forwards
  would stall the batch longer than one. Short fresh prompts of one group therefore
  share a left-padded forward; a prompt longer than the budget is chunked alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapterhub.serving.config import EngineConfig
from adapterhub.serving.rows import Group, Row


@dataclass(frozen=True)
class PrefillWork:
    """One prefill forward: the next ``n`` prompt tokens of ``rows[0]`` alone (a *chunk*
    of a request begun earlier), or the whole prompts of fresh ``rows`` left-padded to
    width ``n``."""

    rows: tuple[Row, ...]
    n: int

    @property
    def continues(self) -> bool:
        """True for the next chunk of a request whose prefill began in an earlier forward."""
        return self.rows[0].done_prefill > 0

    @property
    def cost(self) -> int:
        return self.n * len(self.rows)


@dataclass(frozen=True)
class Chunks:
    """The prompt chunks of one step's packed forward: the next ``n`` prompt tokens of each
    row, all of the decode group ``key`` (their forward is that group's)."""

    key: str
    chunks: tuple[tuple[Row, int], ...]

    @property
    def cost(self) -> int:
        return sum(n for _, n in self.chunks)


@dataclass(frozen=True)
class Forward:
    """One forward of a step: a decode ``group`` (packed unless ``per_row``) with the step's
    prompt ``chunks`` of its rows' group riding along, chunks alone (``group`` None), or a
    per-row prefill ``work`` for rows whose method cannot pack."""

    group: Group | None = None
    chunks: tuple[tuple[Row, int], ...] = ()
    per_row: bool = False
    work: PrefillWork | None = None


class Scheduler:
    """The engine's policies over rows it is given (it owns no row; see module docs)."""

    def __init__(self, config: EngineConfig, max_prefill_tokens: int, group_key: Callable[[Row], str],
                 packable: Callable[[Row], bool] = lambda r: False) -> None:
        self.config = config
        self.max_prefill_tokens = max_prefill_tokens
        self._group_key = group_key  # rows of one key may share a forward
        self._packable = packable  # rows whose method can share a packed forward

    def plan_step(self, groups: Sequence[Group], prefilling: Sequence[Row], packable_group: Callable[[Group], bool]) -> list[Forward]:
        """The step's forwards: one per decode group with rows, the step's prompt chunks
        riding on the forward of their own group (one packed forward per step when every
        row packs), or a forward of their own when that group is not decoding."""
        decoding = sum(len(g.rows) for g in groups)
        prompt = self.plan_prefill(prefilling, self.prefill_budget(decoding, len(prefilling))) if prefilling else None
        out: list[Forward] = []
        for g in groups:
            if not g.rows:
                continue
            if not packable_group(g):
                out.append(Forward(group=g, per_row=True))
                continue
            chunks: tuple[tuple[Row, int], ...] = ()
            if isinstance(prompt, Chunks) and prompt.key == g.key:
                chunks, prompt = prompt.chunks, None
            out.append(Forward(group=g, chunks=chunks))
        if isinstance(prompt, Chunks):
            out.append(Forward(chunks=prompt.chunks))
        elif prompt is not None:
            out.append(Forward(work=prompt))
        return out

    def plan_prefill(self, prefilling: Sequence[Row], budget: int) -> Chunks | PrefillWork:
        """This step's prompt work for the head of ``prefilling`` (admission order).

        Packable rows: chunks of every packable row of the head's group, oldest first,
        until ``budget`` prompt tokens (no padding: each chunk is only its own tokens, and
        a row may stop mid-prompt and go on next step). Otherwise the per-row forward of
        :meth:`next_prefill`.
        """
        head = prefilling[0]
        if not self._packable(head):
            return self.next_prefill(prefilling, budget)
        key = self._group_key(head)
        out: list[tuple[Row, int]] = []
        for row in prefilling:
            if budget <= 0:
                break
            if self._group_key(row) != key or not self._packable(row):
                continue
            n = min(len(row.prompt_ids) - row.done_prefill, budget)
            out.append((row, n))
            budget -= n
        return Chunks(key, tuple(out))

    def admit(self, waiting: Sequence[Row], busy: Sequence[Row]) -> list[Row]:
        """Which ``waiting`` rows (oldest first) start prefilling now, given the ``busy``
        ones (prefilling or decoding)."""
        n = len(busy)
        reserved = sum(r.reserved for r in busy)
        out: list[Row] = []
        for row in waiting:
            if n >= self.config.max_running:
                break
            if n and reserved + row.reserved > self.config.max_kv_tokens:
                break  # FIFO: wait for rows to finish rather than let smaller ones pass
            out.append(row)
            n += 1
            reserved += row.reserved
        return out

    def prefill_budget(self, decoding: int, prefilling: int) -> int:
        """Prompt tokens this step may prefill, given how many rows decode and wait."""
        if not decoding:
            return 8 * self.max_prefill_tokens
        if 2 * decoding <= self.config.max_running and prefilling > 1:
            return 4 * self.max_prefill_tokens
        return self.max_prefill_tokens

    def next_prefill(self, prefilling: Sequence[Row], budget: int) -> PrefillWork:
        """The next forward for the head of ``prefilling`` (admission order), within ``budget``."""
        head = prefilling[0]
        left = len(head.prompt_ids) - head.done_prefill
        if head.done_prefill or left >= budget:
            return PrefillWork((head,), min(left, budget))
        rows, width, key = [head], left, self._group_key(head)
        for row in prefilling[1:]:
            wider = max(width, len(row.prompt_ids))
            if row.done_prefill or self._group_key(row) != key or wider * (len(rows) + 1) > budget:
                break
            rows.append(row)
            width = wider
        # Invariant the runner relies on: fresh rows share a forward only when each fits
        # whole, so only a request prefilled alone is ever left half done.
        return PrefillWork(tuple(rows), width)
