"""Confidence intervals for evaluation numbers: Wilson, bootstrap, paired bootstrap.

The one implementation behind ``adapterhub eval``, ``compare-baselines``, the forgetting
report, the demo and ``benchmarks/forgetting_mix.py``. Pure numpy, vectorised, seeded:
the same inputs and seed give the same interval on every machine.

* **Proportions** (accuracy, exact match): the Wilson score interval. It needs no
  resampling, stays inside [0, 100] and does not collapse to a point at 0/n or n/n, which
  the normal ("Wald") interval and the bootstrap both do on small samples.
* **Means of per-example scores** (ROUGE, whose corpus score *is* the plain mean): the
  percentile bootstrap over examples.
* **Corpus statistics** (BLEU, chrF, perplexity): the percentile bootstrap over examples
  that re-computes the corpus score from the resampled examples' summed sufficient
  statistics, not an average of sentence scores (which is a different metric).
* **Differences on the same examples** (forgetting): the paired bootstrap: one resample of
  example indices is applied to both models, so example difficulty cancels out. For a
  proportion where every pair agrees, the bootstrap collapses to a point; there
  Newcombe's paired Wilson interval is used instead.

Every resample is a row of multinomial counts over the examples, so a mean, a corpus
statistic and a paired difference are all the same matrix product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from adapterhub.errors import EvaluationError

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0

Kind = Literal["proportion", "mean", "corpus"]
Verdict = Literal["forgotten", "unresolved", "kept"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Interval:
    """A point value with its interval, on the headline's 0–100 scale."""

    value: float
    low: float
    high: float
    n: int
    method: str
    """``wilson``, ``bootstrap``, ``paired-bootstrap`` or ``newcombe-paired``."""
    level: float = LEVEL
    resamples: int | None = None
    seed: int | None = None

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def record(self) -> dict[str, Any]:
        """The stored form (``adapterhub.manifest.MetricInterval`` fields)."""
        out: dict[str, Any] = {"n": self.n, "low": self.low, "high": self.high, "level": self.level, "method": self.method}
        if self.resamples is not None:
            out |= {"resamples": self.resamples, "seed": self.seed}
        return out


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise EvaluationError(f"confidence level must be between 0 and 1, got {level}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion, as fractions in [0, 1] (Wilson 1927;
    Newcombe 1998, method 3, no continuity correction)."""
    if n <= 0:
        raise EvaluationError("a proportion needs at least one example")
    if not 0 <= successes <= n:
        raise EvaluationError(f"successes must be between 0 and n={n}, got {successes}")
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0/n and n/n one bound is exactly 0 or 1; the formula leaves rounding dust there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> FloatArray:
    """``resamples`` × ``n`` multinomial counts: row r says how often each example is
    drawn in bootstrap resample r (each row sums to n)."""
    if n <= 0:
        raise EvaluationError("a bootstrap needs at least one example")
    if resamples < 1:
        raise EvaluationError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def percentile(values: FloatArray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` range of the bootstrap distribution (last axis)."""
    _z(level)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], axis=-1)
    return float(lo), float(hi)


def bootstrap_means(values: npt.ArrayLike, resamples: int = RESAMPLES, seed: int = SEED) -> FloatArray:
    """Bootstrap means of ``values`` along the last axis; leading axes are independent
    experiments (each gets its own resamples). Shape: ``values.shape[:-1] + (resamples,)``."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[-1]
    if n == 0:
        raise EvaluationError("a bootstrap needs at least one example")
    rng = np.random.default_rng(seed)
    lead = x.shape[:-1]
    idx = rng.integers(0, n, size=(*lead, resamples, n))
    picked = np.take_along_axis(x[..., None, :], idx, axis=-1) if lead else x[idx]
    means: FloatArray = picked.mean(axis=-1)
    return means


def bootstrap_ci(diffs: Sequence[float], n: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (paired: one value per
    example). NaNs when there are no values, as the benchmark has always reported."""
    if len(diffs) == 0:
        return (float("nan"), float("nan"))
    return percentile(bootstrap_means(np.asarray(diffs, dtype=np.float64), n, seed), level)


@dataclass(frozen=True)
class Statistic:
    """How one headline metric is recomputed from any subset of examples.

    ``stats`` holds one row of sufficient statistics per example. ``kind``:
    ``proportion`` (one 0/1 column; value = 100 × mean), ``mean`` (one column already
    on the headline's scale; value = mean), ``corpus`` (``score`` maps summed rows, shape
    (m, k), to m headline values: sacrebleu's corpus formula, a pooled perplexity...).
    """

    kind: Kind
    stats: FloatArray
    score: Callable[[FloatArray], FloatArray] | None = None

    @staticmethod
    def of(kind: Kind, stats: npt.ArrayLike, score: Callable[[FloatArray], FloatArray] | None = None) -> Statistic:
        arr = np.asarray(stats, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise EvaluationError(f"a statistic needs one row per example, got shape {arr.shape}")
        if kind == "corpus" and score is None:
            raise EvaluationError("a corpus statistic needs its score function")
        return Statistic(kind=kind, stats=arr, score=score)

    @property
    def n(self) -> int:
        return int(self.stats.shape[0])

    def weighted(self, counts: FloatArray) -> FloatArray:
        """The headline value under each row of example ``counts`` (m × n)."""
        sums = counts @ self.stats
        if self.kind == "corpus":
            assert self.score is not None
            return np.asarray(self.score(sums), dtype=np.float64).reshape(-1)
        scale = 100.0 if self.kind == "proportion" else 1.0
        out: FloatArray = scale * sums[:, 0] / counts.sum(axis=1)
        return out

    def value(self) -> float:
        return float(self.weighted(np.ones((1, self.n)))[0])


def interval(stat: Statistic, *, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Wilson for a proportion, else the percentile bootstrap of the (corpus) statistic."""
    value = stat.value()
    if stat.kind == "proportion":
        lo, hi = wilson(int(round(stat.stats[:, 0].sum())), stat.n, level)
        return Interval(value, 100 * lo, 100 * hi, stat.n, "wilson", level)
    lo, hi = percentile(stat.weighted(resample_counts(stat.n, resamples, seed)), level)
    return Interval(value, lo, hi, stat.n, "bootstrap", level, resamples, seed)


def paired_interval(
    base: Statistic, adapted: Statistic, *, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """``adapted − base`` on the same examples, with its paired-bootstrap interval."""
    if base.n != adapted.n:
        raise EvaluationError(f"paired interval needs the same examples: {base.n} base vs {adapted.n} adapted")
    counts = resample_counts(base.n, resamples, seed)
    diffs = adapted.weighted(counts) - base.weighted(counts)
    lo, hi = percentile(diffs, level)
    delta = adapted.value() - base.value()
    if hi - lo == 0 and base.kind == adapted.kind == "proportion":
        # Every pair agrees (no example right in one model and wrong in the other): the
        # bootstrap has nothing to resample and returns a zero-width interval, which on 8
        # examples would claim certainty. Newcombe's paired interval does not collapse.
        lo, hi = newcombe_paired(base.stats[:, 0], adapted.stats[:, 0], level)
        return Interval(delta, 100 * lo, 100 * hi, base.n, "newcombe-paired", level)
    return Interval(delta, lo, hi, base.n, "paired-bootstrap", level, resamples, seed)


def newcombe_paired(base: npt.ArrayLike, adapted: npt.ArrayLike, level: float = LEVEL) -> tuple[float, float]:
    """Interval of ``mean(adapted) − mean(base)`` for paired 0/1 outcomes, as fractions:
    Newcombe (1998), "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Statistics in Medicine 17:2635-2650, method 10
    (Wilson score intervals of both margins, combined with the phi correlation)."""
    b = np.asarray(base, dtype=bool)
    a = np.asarray(adapted, dtype=bool)
    n = len(b)
    both, only_a, only_b, neither = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum())
    p1, p2 = (both + only_a) / n, (both + only_b) / n  # adapted, base
    l1, u1 = wilson(both + only_a, n, level)
    l2, u2 = wilson(both + only_b, n, level)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    # phi with Newcombe's correction: a positive ad − bc is shrunk by n/2 (never below 0).
    raw = both * neither - only_a * only_b
    cross = max(raw - n / 2, 0.0) if raw > 0 else float(raw)
    phi = cross / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, d - below), min(1.0, d + above))


def verdict(low: float, high: float, threshold: float) -> Verdict:
    """*forgotten* only when the whole interval lies below −threshold; *unresolved* when
    it straddles −threshold; *kept* when it lies at or above it."""
    if high < -threshold:
        return "forgotten"
    if low < -threshold:
        return "unresolved"
    return "kept"


def examples_for(half_width: float, n: int, target: float) -> int | None:
    """Examples needed for an interval half-width of ``target`` points, from one measured
    at ``n`` (the half-width shrinks with √n). None when the measured interval has no
    width (no variation seen: nothing to extrapolate from)."""
    if target <= 0:
        raise EvaluationError(f"the resolution must be above 0 points, got {target}")
    if half_width <= 0 or not math.isfinite(half_width):
        return None
    return max(n, math.ceil(n * (half_width / target) ** 2))


def ci_text(low: float | None, high: float | None, digits: int = 1, signed: bool = False) -> str:
    """``[82.4, 96.1]`` (``[-3.2, +1.0]`` with ``signed``); ``-`` when there is none."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"[{f.format(low)}, {f.format(high)}]"
