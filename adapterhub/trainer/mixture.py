"""Task mixtures: a fixed share of every batch comes from other tasks (against forgetting).

``train(..., mix="chitchat=0.1,faq-instruct=0.1")`` / ``adapterhub train --mix ...``
draws 10 % of the rows of every optimizer step from each of those task packs' train
splits; ``mix_data="extra.jsonl=0.2"`` / ``--mix-data FILE[=FRACTION]`` (default
fraction 0.1) does the same from a JSONL file of prompt/completion (or Alpaca) rows.

Semantics (see ``docs/training-mixtures.md``):

* **Rows, exact over the run.** With ``S`` rows per optimizer step and total mixture
  fraction ``F``, the mixed rows up to step ``s`` are ``floor(F · S · (s + 1))``: each
  step holds ``floor`` or ``ceil`` of ``F · S`` mixed rows and the run as a whole is
  within one row of ``F``. Mixed rows are shared out between the sources by smooth
  weighted round-robin, so each source is within about one row of its own share too.
  There is no sampling noise in the counts.
* **Which rows** are seeded: each source is walked in a seeded random order, reshuffled
  each time it is used up. The primary data keeps its length-bucketed epoch order
  (:class:`~adapterhub.trainer.data.BatchSchedule`); a step takes the next ``S − k``
  primary rows of it. The whole schedule is a pure function of (seed, step), so
  ``--resume`` continues a mixed run exactly.
* **Formatting.** Mixed rows are task-pack examples (their prompts carry their own
  task's instruction) rendered with the run's template, the same path as the primary
  rows and as inference (:mod:`adapterhub.prompting`).
* **Loss.** The fraction is of *rows*. The loss stays the token mean over completion
  tokens, so a source with long completions (a FAQ answer) weighs more per row than a
  two-token sentiment label; the manifest records the token share the mixture actually
  had (``mix[].completion_token_share``).
"""

from __future__ import annotations

import bisect
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapterhub.errors import ConfigError
from adapterhub.trainer.data import BatchSchedule, TrainingData, load_data

DEFAULT_MIX_DATA_FRACTION = 0.1

MixSpec = tuple[tuple[str, float], ...]


def _fraction(raw: Any, what: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: fraction must be a number, got {raw!r}") from None
    if isinstance(raw, bool) or not math.isfinite(value) or not 0.0 < value < 1.0:
        raise ConfigError(f"{what}: fraction must be between 0 and 1 (exclusive), got {raw!r}")
    return value


def parse_mix(spec: str | Mapping[str, Any] | Sequence[Any] | None, *, option: str = "--mix") -> MixSpec:
    """``"a=0.1,b=0.2"``, ``{"a": 0.1}`` or ``[("a", 0.1)]`` → ``(("a", 0.1), ...)``."""
    if spec is None or spec == "" or spec == ():
        return ()
    pairs: list[tuple[Any, Any]]
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, frac = item.rpartition("=")
            if not sep or not name.strip():
                raise ConfigError(f"{option} expects TASK=FRACTION[,TASK=FRACTION...], got {item.strip()!r}")
            pairs.append((name.strip(), frac.strip()))
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        pairs = []
        for item in spec:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ConfigError(f"{option}: expected (name, fraction) pairs, got {item!r}")
            pairs.append((item[0], item[1]))
    out: list[tuple[str, float]] = []
    for name, frac in pairs:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{option}: source names must be non-empty strings, got {name!r}")
        if any(n == name for n, _ in out):
            raise ConfigError(f"{option}: {name!r} is listed twice")
        out.append((name, _fraction(frac, f"{option} {name}")))
    return tuple(out)


def parse_mix_data(spec: str | Mapping[str, Any] | Sequence[Any] | None) -> MixSpec:
    """``--mix-data FILE[=FRACTION]`` (repeatable; a list, a mapping or one string)."""
    if spec is None or spec == "" or spec == ():
        return ()
    if isinstance(spec, (str, os.PathLike)):
        spec = [spec]
    if isinstance(spec, Mapping):
        return parse_mix(spec, option="--mix-data")
    pairs: list[tuple[str, Any]] = []
    for item in spec:
        if isinstance(item, (tuple, list)):
            pairs.append((str(item[0]), item[1]))
            continue
        text = os.fspath(item)
        path, sep, frac = text.rpartition("=")
        if sep and path:
            try:
                float(frac)
            except ValueError:
                path, frac = text, ""  # an '=' that is part of the file name
        else:
            path, frac = text, ""
        pairs.append((path, frac or DEFAULT_MIX_DATA_FRACTION))
    return parse_mix(pairs, option="--mix-data")


def check_total(mix: MixSpec, mix_data: MixSpec) -> None:
    total = sum(f for _, f in mix) + sum(f for _, f in mix_data)
    if total >= 1.0 - 1e-9:
        raise ConfigError(
            f"mixture fractions add up to {total:g}; they must stay below 1 (the rest of each batch is the training data)"
        )


@dataclass(frozen=True)
class MixSource:
    label: str
    """``task:<name>`` or ``file:<path>``."""
    fraction: float
    data: TrainingData


def load_sources(mix: MixSpec, mix_data: MixSpec, *, primary: TrainingData) -> list[MixSource]:
    """Resolve task names and files; unknown tasks list the known ones (one line)."""
    check_total(mix, mix_data)
    sources: list[MixSource] = []
    if mix:
        from adapterhub.catalog import get_catalog

        known = sorted(get_catalog().tasks)
        for name, frac in mix:
            if name not in known:
                raise ConfigError(f"--mix: unknown task {name!r} (known tasks: {', '.join(known) or 'none installed'})")
            if primary.task == name:
                raise ConfigError(f"--mix: {name!r} is the training task itself; mix in other tasks")
            sources.append(MixSource(f"task:{name}", frac, load_data(name)))
    for path, frac in mix_data:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--mix-data: {p}: no such file")
        sources.append(MixSource(f"file:{p}", frac, load_data(p)))
    return sources


class MixSchedule:
    """Step batches of primary rows plus mixed rows (module docs); indexes one combined list.

    ``primary_lengths`` are the primary examples' token counts; ``source_lengths[j]`` those
    of source ``j``. Index ``i`` below ``len(primary_lengths)`` is a primary row; the
    sources follow in order (``offsets``).
    """

    def __init__(
        self, primary_lengths: Sequence[int], source_lengths: Sequence[Sequence[int]], fractions: Sequence[float],
        step_size: int, seed: int, *, bucket: bool = True,
    ) -> None:
        if len(source_lengths) != len(fractions) or not fractions:
            raise ValueError("one fraction per mixture source")
        self.primary = BatchSchedule(primary_lengths, step_size, seed, bucket=bucket)
        self.step_size = step_size
        self.seed = seed
        self.fractions = [float(f) for f in fractions]
        self.total = sum(self.fractions)
        self.offsets: list[int] = []
        self.lengths: list[int] = list(primary_lengths)
        for lens in source_lengths:
            if not lens:
                raise ConfigError("a mixture source has no usable rows")
            self.offsets.append(len(self.lengths))
            self.lengths += list(lens)
        self.sizes = [len(s) for s in source_lengths]
        self._assign: list[int] = []  # source of the g-th mixed row (smooth weighted round-robin)
        self._credit = [0.0] * len(self.fractions)
        self._counted: tuple[int, list[int]] = (0, [0] * len(self.fractions))
        self._orders: dict[int, tuple[int, list[int]]] = {}
        self._flat: tuple[int, list[int]] | None = None

    # -- counts ----------------------------------------------------------------------
    def mixed_before(self, step: int) -> int:
        """Mixed rows in steps ``0 .. step-1``."""
        # The epsilon keeps 0.1 · 10 from flooring to 0 through binary rounding.
        return int(math.floor(self.total * self.step_size * step + 1e-9))

    def _source_of(self, g: int) -> int:
        while len(self._assign) <= g:
            for j, f in enumerate(self.fractions):
                self._credit[j] += f
            j = max(range(len(self.fractions)), key=lambda k: self._credit[k])
            self._credit[j] -= self.total
            self._assign.append(j)
        return self._assign[g]

    def _counts_before(self, g: int) -> list[int]:
        """Mixed rows per source among the first ``g`` (cached: steps are walked in order)."""
        at, counts = self._counted
        if g < at:
            at, counts = 0, [0] * len(self.fractions)
        counts = list(counts)
        if g > 0:
            self._source_of(g - 1)
        for x in self._assign[at:g]:
            counts[x] += 1
        self._counted = (g, counts)
        return list(counts)

    # -- rows -----------------------------------------------------------------------
    def _source_row(self, j: int, n: int) -> int:
        epoch, pos = divmod(n, self.sizes[j])
        cached = self._orders.get(j)
        if cached is None or cached[0] != epoch:
            order = list(range(self.sizes[j]))
            random.Random(f"mix:{self.seed}:{j}:{epoch}").shuffle(order)
            cached = self._orders[j] = (epoch, order)
        return self.offsets[j] + cached[1][pos]

    def _primary_row(self, q: int) -> int:
        epoch, pos = divmod(q, len(self.primary.lengths))
        if self._flat is None or self._flat[0] != epoch:
            self._flat = (epoch, [i for b in self.primary.epoch_batches(epoch) for i in b])
        return self._flat[1][pos]

    def batch(self, step: int) -> list[int]:
        """Combined-list indices of step ``step`` (0-based): primary rows, then mixed rows."""
        g0, g1 = self.mixed_before(step), self.mixed_before(step + 1)
        q0 = step * self.step_size - g0
        q1 = (step + 1) * self.step_size - g1
        rows = [self._primary_row(q) for q in range(q0, q1)]
        if g1 > g0:
            counts = self._counts_before(g0)
            for g in range(g0, g1):
                j = self._source_of(g)
                rows.append(self._source_row(j, counts[j]))
                counts[j] += 1
        return rows

    def micro_batches(self, step: int, grad_accum: int) -> list[list[int]]:
        idx = sorted(self.batch(step), key=lambda i: self.lengths[i])
        size = -(-len(idx) // grad_accum)
        return [idx[j : j + size] for j in range(0, len(idx), size)]

    def source_of_index(self, i: int) -> int:
        """-1 for a primary row, else the mixture source's position."""
        return bisect.bisect_right(self.offsets, i) - 1

    def drawn(self, steps: int) -> list[int]:
        """Mixed rows drawn from each source over ``steps`` steps (for the manifest)."""
        return self._counts_before(self.mixed_before(steps))

    def token_shares(self, completion_lengths: Sequence[int], steps: int) -> list[float]:
        """Each source's share of the completion tokens (what the loss averages) over ``steps``."""
        per = [0] * len(self.fractions)
        total = 0
        for s in range(steps):
            for i in self.batch(s):
                n = completion_lengths[i]
                total += n
                src = self.source_of_index(i)
                if src >= 0:
                    per[src] += n
        return [p / total if total else 0.0 for p in per]


def provenance(sources: Sequence[MixSource], rows_drawn: Sequence[int], steps: int, step_size: int,
               token_share: Sequence[float], usable: Sequence[int]) -> list[dict[str, Any]]:
    """``provenance.hyperparameters.mix``: what was mixed in, from which data, how much.

    ``usable_examples``: rows left after over-length rows were skipped (all ranks).
    """
    total_rows = max(1, steps * step_size)
    return [
        {
            "source": s.label,
            "fraction": s.fraction,
            "data_sha256": s.data.sha256,
            "num_examples": len(s.data.examples),
            "usable_examples": u,
            "rows_drawn": n,
            "row_share": round(n / total_rows, 6),
            "completion_token_share": round(t, 6),
        }
        for s, n, t, u in zip(sources, rows_drawn, token_share, usable, strict=True)
    ]
