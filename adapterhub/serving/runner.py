"""Tensors and forwards: the engine's model runner over one ``AdapterHost``.

The runner builds each forward's inputs, runs it through the host's per-row adapter
routes, samples, and owns the KV caches: one :class:`~adapterhub.serving.cache.SlotCache`
per decode *group*. The *shared* group holds bare-base rows and the rows of every
``mixed_batch`` method (LoRA, prefix tuning, IA³...) together; each selective adapter,
which rewrites base weights, gets a group of its own (as ``AdapterHost`` groups rows).

It makes no scheduling decision (:mod:`.scheduler` does) and hands no token to a client
(the engine does); every call runs on the engine thread under the host's forward lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from adapterhub.host.decode import enter_routes
from adapterhub.host.packed import Chunk, RowKV, Segment, packed_forward
from adapterhub.serving.cache import SlotCache
from adapterhub.serving.grammar import GrammarBackend
from adapterhub.serving.prefix_cache import PrefixCache, root_of
from adapterhub.serving.request import TokenLogprob
from adapterhub.serving.rows import Group, Row
from adapterhub.serving.sampling import pick

if TYPE_CHECKING:
    from adapterhub.host.host import AdapterHost
    from adapterhub.host.pool import PoolEntry
    from adapterhub.serving.scheduler import PrefillWork


@dataclass
class Stepped:
    """What one packed forward produced."""

    decoded: list[tuple[Row, int, torch.Tensor]]
    """Each decoding row, its next token, and that position's logits."""
    done: list[tuple[Row, int, torch.Tensor]]
    """Rows whose whole prompt is now in their cache, their first token, and its logits."""
    prompt_tokens: int
    """Prompt tokens this forward consumed."""


@dataclass
class Prefilled:
    """What one prefill forward produced for the rows whose prompt it completed."""

    done: list[tuple[Row, int]]
    """Rows whose whole prompt is now in the cache, with their index in the forward."""
    tokens: list[int]
    """The first sampled token of each ``done`` row."""
    logits: torch.Tensor
    """The last position's logits, one row per forward row (float32, on the model's device)."""
    prompt_tokens: int
    """Prompt tokens this forward consumed (all its rows)."""
    cache: Any
    mask: torch.Tensor


class Runner:
    """Forwards, sampling and the decode groups' KV caches (see module docs)."""

    def __init__(self, host: AdapterHost, prefix_block_tokens: int | None = None) -> None:
        self.host = host
        # None: no prefix cache (--no-prefix-cache).
        self.prefix = PrefixCache(prefix_block_tokens) if prefix_block_tokens else None
        self._roots: dict[str, bytes] = {}
        cfg = host.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self._geometry = (
            int(text_cfg.num_hidden_layers),
            int(getattr(text_cfg, "num_key_value_heads", None) or text_cfg.num_attention_heads),
            int(getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads),
        )
        param = next(host.model.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.eos = frozenset(host.eos_ids())
        tok = host.tokenizer
        self._pad = int(tok.pad_token_id) if tok.pad_token_id is not None else (min(self.eos) if self.eos else 0)
        self.groups: dict[str, Group] = {}
        self.grammar = GrammarBackend(tok, int(text_cfg.vocab_size), sorted(self.eos))

    # --- groups ------------------------------------------------------------------------------
    @staticmethod
    def group_key(entry: PoolEntry | None) -> str:
        """Rows with one key can share a forward: "" for the shared group, else the
        selective adapter version's uid."""
        return "" if entry is None or entry.method.capabilities.mixed_batch else entry.uid

    def decoding(self) -> int:
        return sum(len(g.rows) for g in self.groups.values())

    def decode_rows(self) -> list[Row]:
        return [r for g in self.groups.values() for r in g.rows]

    def join(self, row: Row, prefilled: Prefilled, index: int) -> None:
        """Move a row whose prompt is prefilled into its group's batch."""
        key = self.group_key(row.entry)
        g = self.groups.get(key)
        if g is None:
            layers, heads, dim = self._geometry
            g = self.groups[key] = Group(key, SlotCache(layers, heads, dim, dtype=self.dtype, device=self.device))
        g.add(row, prefilled.cache, prefilled.mask[index], index)
        row.pcache, row.pmask = None, None

    def leave(self, row: Row) -> None:
        """Free the row's cache (its group row, or a half-done prefill's cache)."""
        g = row.group
        if g is not None:
            g.remove(row)
            if not g.rows and g.key:  # a selective adapter's group: free its cache
                del self.groups[g.key]
        row.pcache = row.pmask = row.kv = None

    # --- packed forwards ---------------------------------------------------------------------
    def packable(self, row: Row) -> bool:
        """True when the row's method can share a packed forward (module docs of
        ``adapterhub.host.packed``); other rows are served by per-row forwards."""
        return self.host.packable(row.entry)

    def packable_group(self, g: Group) -> bool:
        return all(self.host.packable(r.entry) for r in g.rows)

    def _root(self, entry: PoolEntry | None) -> bytes:
        """The prefix-cache root of an adapter version (or the base): never a name alone."""
        uid = "" if entry is None else entry.uid
        root = self._roots.get(uid)
        if root is None:
            if entry is None:
                root = root_of("<base>", [self.host.fingerprint.weights_sha256])
            else:
                root = root_of(entry.label, [f.sha256 for f in entry.manifest.files])
            if len(self._roots) > 4096:
                self._roots.clear()
            self._roots[uid] = root
        return root

    def start(self, row: Row) -> None:
        """Give an admitted packable row its own cache: its adapter's initial state (prefix
        tuning's virtual tokens), then the longest run of cached blocks its prompt starts
        with. The rest of the prompt is prefilled by :meth:`step`."""
        layers, heads, dim = self._geometry
        initial = self.host.initial_kv(row.entry)
        t0 = 0 if initial is None else int(initial[0].shape[2])
        row.kv = RowKV(layers, heads, dim, t0 + len(row.prompt_ids), dtype=self.dtype, device=self.device)
        if initial is not None:
            row.kv.extend(*initial)
        row.kv_start = row.position = t0
        row.packed = True
        # A row that reports prompt logprobs needs every position's logits: no reuse.
        if self.prefix is not None and row.request.sampling.prompt_logprobs is None:
            # At least the last prompt token is computed: its logits give the first token.
            for block in self.prefix.lookup(self._root(row.entry), row.prompt_ids, len(row.prompt_ids) - 1):
                row.kv.extend(block.keys, block.values)
            hit = row.kv.length - t0
            row.done_prefill = row.cached_tokens = hit
            row.position = t0 + hit

    def step(self, group: Group | None, chunks: Sequence[tuple[Row, int]]) -> Stepped:
        """One packed forward: the next token of every row of ``group`` and the next ``n``
        prompt tokens of each ``(row, n)`` in ``chunks`` (same group key), laid end to end."""
        decoding = list(group.rows) if group is not None else []
        rows = decoding + [r for r, _ in chunks]
        self.host.ensure_resident([r.entry for r in rows])
        segments: list[Segment] = []
        ids: list[int] = []
        pos: list[int] = []
        spans: list[tuple[PoolEntry | None, int, int]] = []
        keep: list[int] = []
        if group is not None and decoding:
            segments.append(group.cache.decode_segment())
            for i, r in enumerate(decoding):
                ids.append(r.last_token)
                pos.append(r.position)
                spans.append((r.entry, i, i + 1))
            keep.extend(range(len(decoding)))
        parts: list[tuple[Row, int, int, int]] = []  # row, took, first kept index, kept count
        for row, n in chunks:
            assert row.kv is not None, "a packed prefill row has its own cache (start)"
            at, lo = len(ids), row.done_prefill
            segments.append(row.kv.chunk(n))
            ids.extend(row.prompt_ids[lo : lo + n])
            pos.extend(range(row.position, row.position + n))
            spans.append((row.entry, at, at + n))
            scoring = row.request.sampling.prompt_logprobs is not None
            ends = lo + n == len(row.prompt_ids)
            kept = n if scoring else int(ends)
            parts.append((row, n, len(keep), kept))
            keep.extend(range(at + n - kept, at + n))
        t = torch.tensor
        logits = packed_forward(
            self.host.model, t([ids], device=self.device), t([pos], device=self.device), segments,
            self.host.token_routes(spans), t(keep, dtype=torch.long, device=self.device),
        ).float()
        if group is not None and decoding:
            group.cache.advance(1)
        done: list[tuple[Row, torch.Tensor]] = []
        consumed = 0
        for (row, n, k0, kept), seg in zip(parts, segments[len(segments) - len(parts) :], strict=True):
            assert isinstance(seg, Chunk)
            seg.commit()
            if row.request.sampling.prompt_logprobs is not None:
                self._score_prompt(row, logits[k0 : k0 + kept], n)
            row.done_prefill += n
            row.position += n
            consumed += n
            if row.done_prefill == len(row.prompt_ids):
                done.append((row, logits[k0 + kept - 1]))
        picked = [logits[i] for i in range(len(decoding))] + [lg for _, lg in done]
        tokens = self.sample(torch.stack(picked), decoding + [r for r, _ in done]) if picked else []
        decoded = [(r, tok, logits[i]) for i, (r, tok) in enumerate(zip(decoding, tokens, strict=False))]
        for r, tok, _ in decoded:
            r.position += 1
            r.last_token = tok
        finished = [(r, tok, lg) for (r, lg), tok in zip(done, tokens[len(decoding) :], strict=True)]
        return Stepped(decoded, finished, consumed)

    def join_kv(self, row: Row, budget: int) -> None:
        """Move a row whose packed prefill is done into its group (and its prompt's full
        blocks into the prefix cache, within ``budget`` tokens)."""
        kv = row.kv
        assert kv is not None
        if self.prefix is not None:
            t0 = row.kv_start
            self.prefix.insert(self._root(row.entry), row.prompt_ids, lambda a, b: kv.span(t0 + a, t0 + b), budget)
        key = self.group_key(row.entry)
        g = self.groups.get(key)
        if g is None:
            layers, heads, dim = self._geometry
            g = self.groups[key] = Group(key, SlotCache(layers, heads, dim, dtype=self.dtype, device=self.device))
        keys, values = kv.span(0, kv.length)
        g.add_kv(row, list(keys.unbind(0)), list(values.unbind(0)))
        row.kv = None

    def remember(self, row: Row, budget: int) -> None:
        """Keep a finishing row's prompt + answer blocks in the prefix cache (the next turn
        of a chat starts with them); a row that ends with its first token keeps its prompt's."""
        if self.prefix is None or not row.packed:
            return
        kv, t0 = row.kv, row.kv_start
        if kv is not None:
            if kv.length - t0 == len(row.prompt_ids):
                self.prefix.insert(self._root(row.entry), row.prompt_ids, lambda a, b: kv.span(t0 + a, t0 + b), budget)
            return
        g = row.group
        if g is None:
            return
        i = g.rows.index(row)
        fed = g.cache.end - g.cache.first[i] - t0  # tokens whose keys are in the cache
        seq = (row.prompt_ids + row.out_ids)[:fed]
        self.prefix.insert(self._root(row.entry), seq, lambda a, b: g.cache.row_kv(i, t0 + a, t0 + b), budget)

    # --- forwards ----------------------------------------------------------------------------
    def _forward(self, entries: Sequence[PoolEntry | None], kwargs: dict[str, Any],
                 every_position: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        """One routed forward: the last position's logits (float32, on the device), or with
        ``every_position`` all of them (B, T, V) on the device; and the call's kwargs."""
        with ExitStack() as stack:
            call = enter_routes(stack, self.host.routes(entries), kwargs)
            out = self.host.model(**call, use_cache=True, logits_to_keep=0 if every_position else 1)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            call["cache"] = cache
            if every_position:
                return out.logits, call
            return out.logits[:, -1].float(), call  # stays on the device: sampling is there too

    def prefill(self, work: PrefillWork) -> Prefilled:
        """Run one prefill forward (either mode of :class:`PrefillWork`) and sample the
        first token of every row it completes."""
        rows = list(work.rows)
        self.host.ensure_resident([r.entry for r in rows])
        kwargs = self._chunk_inputs(rows[0], work.n) if work.continues else self._fresh_inputs(rows, work.n)
        # Prompt logprobs come from this very forward: it keeps every position's logits
        # (not just the last) when a row asks for them.
        scoring = any(r.request.sampling.prompt_logprobs is not None for r in rows)
        logits, call = self._forward([r.entry for r in rows], kwargs, every_position=scoring)
        if scoring:
            every, logits = logits, logits[:, -1].float()
        cache, full_mask, positions = call["cache"], call["attention_mask"], call["position_ids"]
        done: list[tuple[Row, int]] = []
        consumed = 0
        for i, row in enumerate(rows):
            if scoring and row.request.sampling.prompt_logprobs is not None:
                took = min(work.n, len(row.prompt_ids) - row.done_prefill)
                self._score_prompt(row, every[i, work.n - took if not work.continues else 0 :], took)
            # A route may have widened the mask (prefix slots) and moved positions: the
            # row continues from what its first forward actually used.
            row.pcache, row.pmask = cache, full_mask[i : i + 1]
            row.position = int(positions[i, -1]) + 1
            took = min(work.n, len(row.prompt_ids) - row.done_prefill)
            row.done_prefill += took
            consumed += took
            if row.done_prefill == len(row.prompt_ids):
                done.append((row, i))
        tokens = self.sample(logits[[i for _, i in done]], [r for r, _ in done]) if done else []
        return Prefilled(done, tokens, logits, consumed, cache, full_mask)

    def _score_prompt(self, row: Row, logits: torch.Tensor, took: int) -> None:
        """Log-probabilities of the ``took`` prompt tokens this forward read for ``row``
        (``logits``: their positions, in order). Position p predicts token p + 1, so a
        chunk's first token is scored by the previous chunk's last position, and the
        prompt's first token by nothing (None, as OpenAI reports it)."""
        lo = row.done_prefill
        top_n = row.request.sampling.prompt_logprobs or 0
        ids = row.prompt_ids[lo : lo + took]
        lp = torch.log_softmax(logits[:took].float(), dim=-1)
        prev = None if row.prev_logits is None else torch.log_softmax(row.prev_logits.float(), dim=-1)
        # predictor of token j (j = lo..lo+took-1): position j-1, i.e. local j-lo-1, or prev
        preds = ([prev] if lo > 0 else []) + [lp[k] for k in range(took - 1)]
        decode = self.host.tokenizer.decode
        out = [] if lo > 0 else [TokenLogprob(ids[0], decode([ids[0]]), None)]
        for k, dist in enumerate(preds):
            token = ids[k + (0 if lo > 0 else 1)]
            assert dist is not None
            top: tuple[tuple[int, str, float], ...] = ()
            if top_n:
                values, alt = torch.topk(dist, top_n)
                top = tuple((int(t), decode([int(t)]), float(v)) for t, v in zip(alt.tolist(), values.tolist(), strict=True))
            out.append(TokenLogprob(token, decode([token]), float(dist[token]), top))
        row.prompt_logprobs.extend(out)
        row.prev_logits = logits[took - 1].detach().float().cpu() if lo + took < len(row.prompt_ids) else None

    def _chunk_inputs(self, row: Row, n: int) -> dict[str, Any]:
        """The next ``n`` prompt tokens of a request begun earlier, continuing its cache."""
        assert row.pmask is not None, "a continued prefill keeps its mask"
        lo = row.done_prefill
        ids = torch.tensor([row.prompt_ids[lo : lo + n]], device=self.device)
        pos = torch.arange(row.position, row.position + n, device=self.device).unsqueeze(0)
        mask = torch.cat([row.pmask, row.pmask.new_ones(1, n)], dim=1)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "cache": row.pcache}

    def _fresh_inputs(self, rows: list[Row], width: int) -> dict[str, Any]:
        """The first forward of each row, left-padded to ``width`` (a long prompt's first chunk)."""
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long, device=self.device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            take = r.prompt_ids[:width]
            ids[i, width - len(take) :] = torch.tensor(take, device=self.device)
            mask[i, width - len(take) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}

    def decode(self, g: Group) -> tuple[list[int], torch.Tensor]:
        """One decode forward over every row of ``g``: the sampled tokens and their logits."""
        rows = g.rows
        self.host.ensure_resident([r.entry for r in rows])
        g.cache.reserve(1)
        ids = torch.tensor([[r.last_token] for r in rows], device=self.device)
        pos = torch.tensor([[r.position] for r in rows], device=self.device)
        mask = g.cache.step_mask(1, self.dtype)
        logits, _ = self._forward([r.entry for r in rows], {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "cache": g.cache})
        g.cache.advance(1)
        tokens = self.sample(logits, rows)
        for row, token in zip(rows, tokens, strict=True):
            row.position += 1
            row.last_token = token
        return tokens, logits

    def sample(self, logits: torch.Tensor, rows: Sequence[Row]) -> list[int]:
        """One token per row from its own sampling settings and seeded generator; a row with
        structured output picks among what its grammar allows (the mask is applied to a
        copy, so the logprobs reported stay the model's own)."""
        if any(r.constraint is not None for r in rows):
            logits = logits.clone()
            for i, r in enumerate(rows):
                if r.constraint is not None:
                    logits[i] = r.constraint.masked(logits[i])
        tokens = pick(logits, [r.request.sampling for r in rows], [r.generator for r in rows])  # type: ignore[misc]
        for r, t in zip(rows, tokens, strict=True):
            if r.constraint is not None:
                r.constraint.accept(t)
        return tokens
