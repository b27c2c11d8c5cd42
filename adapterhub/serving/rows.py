"""A request inside the engine: its named state, and the decode groups rows share.

A row moves through one state machine, and its state is a field, not the list it sits in::

    WAITING ──(cold adapter)──► LOADING ──(pinned)──► WAITING
    WAITING ──(admitted)──► PREFILLING ──(last prompt chunk)──► DECODING ──► FINISHED

Any state may go straight to FINISHED (cancelled, failed, closed). :meth:`Row.move`
refuses every other transition, so a scheduling bug shows up as an error at the step
where it happens instead of a row silently served twice or never.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from adapterhub.host.packed import RowKV
    from adapterhub.host.pool import PoolEntry
    from adapterhub.serving.adapters import Ticket
    from adapterhub.serving.cache import SlotCache
    from adapterhub.serving.handle import RequestHandle
    from adapterhub.serving.request import Request, TokenLogprob
    from adapterhub.serving.text import TextStream


class RowState(enum.Enum):
    WAITING = "waiting"
    """Queued (counts against ``max_queue``); pinned to its adapter once the engine took it."""
    LOADING = "loading"
    """Its adapter is being pulled and verified by a loader thread."""
    PREFILLING = "prefilling"
    """Admitted: its prompt runs through the model, one chunk per step."""
    DECODING = "decoding"
    """In its group's batch: one token per step."""
    FINISHED = "finished"
    """Out of every structure; its handle has the completion or the error."""


_NEXT: dict[RowState, frozenset[RowState]] = {
    RowState.WAITING: frozenset({RowState.LOADING, RowState.PREFILLING, RowState.FINISHED}),
    RowState.LOADING: frozenset({RowState.WAITING, RowState.FINISHED}),
    RowState.PREFILLING: frozenset({RowState.DECODING, RowState.FINISHED}),
    RowState.DECODING: frozenset({RowState.FINISHED}),
    RowState.FINISHED: frozenset(),
}

QUEUED = frozenset({RowState.WAITING, RowState.LOADING})
"""States that count against ``max_queue`` (not yet admitted)."""


@dataclass(eq=False)
class Row:
    """Engine-side state of one request, from submit to finish."""

    handle: RequestHandle
    request: Request
    submitted: float
    state: RowState = RowState.WAITING
    key: str | None = None  # pool key once known (None: bare base)
    ticket: Ticket | None = None  # the adapter load it waits for (LOADING)
    entry: PoolEntry | None = None  # the pinned adapter version (None: bare base)
    acquired: bool = False  # holds a pin on ``entry`` (released when it finishes)
    prompt_ids: list[int] = field(default_factory=list)
    rendered_for: str | None = None  # uid of the adapter version whose template rendered the prompt
    reserved: int = 0  # prompt + max_tokens (KV admission accounting)
    # prefill: a prompt longer than one chunk keeps its partial cache here between steps
    done_prefill: int = 0
    pcache: Any = None
    pmask: torch.Tensor | None = None
    kv: RowKV | None = None  # packed prefill: the row's own cache until it joins its group
    kv_start: int = 0  # columns before the prompt (an adapter's initial state, e.g. virtual tokens)
    packed: bool = False  # prefilled by packed forwards (its cache columns are exactly its tokens)
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # with prompt_logprobs
    prev_logits: torch.Tensor | None = None  # a chunk's last logits: they score the next chunk's first token
    # decode
    group: Group | None = None
    position: int = 0
    last_token: int = 0
    out_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    end_logprob: TokenLogprob | None = None  # the end-of-sequence token that finished it (with logprobs)
    constraint: Any = None  # the row's grammar matcher (structured output), on the engine thread
    text: TextStream | None = None
    generator: torch.Generator | None = None
    first_token_at: float | None = None

    @property
    def rid(self) -> str:
        return self.handle.request_id

    @property
    def label(self) -> str | None:
        """``name@version`` of the pinned adapter (None: the bare base or not pinned yet)."""
        return None if self.entry is None else self.entry.label

    def move(self, to: RowState) -> None:
        if to not in _NEXT[self.state]:
            raise RuntimeError(f"engine bug: request {self.rid} cannot go from {self.state.value} to {to.value}")
        self.state = to


class Group:
    """Decoding rows that share one forward, and their KV cache (row i is cache row i)."""

    def __init__(self, key: str, cache: SlotCache) -> None:
        self.key = key
        self.cache = cache
        self.rows: list[Row] = []

    def add(self, row: Row, cache: Any, mask: torch.Tensor, index: int) -> None:
        """Append ``row`` with its prefill cache row ``index`` of ``cache``."""
        self.cache.add_row(cache, mask, index=index)
        self.rows.append(row)
        row.group = self

    def add_kv(self, row: Row, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Append ``row`` with its own per-layer keys/values ``(kv_heads, length, head_dim)``."""
        self.cache.add_row_kv(keys, values)
        self.rows.append(row)
        row.group = self

    def remove(self, row: Row) -> None:
        """Free ``row``'s cache row; the last row moves into the hole (no copy of the rest)."""
        i = self.rows.index(row)
        moved = self.cache.remove_row(i)
        last = self.rows.pop()
        if moved is not None:
            self.rows[i] = last
        row.group = None
