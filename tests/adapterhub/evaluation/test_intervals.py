"""adapterhub.evaluation.intervals against published values and simulated experiments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adapterhub.errors import EvaluationError
from adapterhub.evaluation.intervals import (
    Statistic,
    bootstrap_ci,
    bootstrap_means,
    ci_text,
    examples_for,
    interval,
    newcombe_paired,
    paired_interval,
    percentile,
    verdict,
    wilson,
)
from adapterhub.evaluation.scoring import resolve_evaluator


# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison
# of seven methods", Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score
# interval without continuity correction), 95 %.
@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombes_table(successes: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson(successes, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_wilson_bounds_are_exact_at_the_edges() -> None:
    assert wilson(0, 8)[0] == 0.0
    assert wilson(8, 8)[1] == 1.0
    assert wilson(8, 8)[0] < 1.0  # unlike the Wald interval, it does not collapse at n/n


@pytest.mark.parametrize(("args", "needle"), [((1, 0), "at least one"), ((5, 4), "between 0 and n=4")])
def test_wilson_bad_input(args: tuple[int, int], needle: str) -> None:
    with pytest.raises(EvaluationError, match=needle):
        wilson(*args)


def test_bootstrap_covers_the_true_mean_95_percent_of_the_time() -> None:
    # 2,000 simulated experiments of 60 per-example scores each, drawn like ROUGE F1s
    # (100 × Beta(2, 5): bounded, skewed right); the true mean is 100 × 2/7. A correct
    # 95 % interval covers it in 93–97 % of them (binomial noise of 2,000 trials: ±1 %).
    # (On strongly skewed data, e.g. exponential, the percentile bootstrap at n=60 covers
    # only ~92 %: a known property of the method, not of this code.)
    rng = np.random.default_rng(12345)
    truth = 100 * 2 / 7
    covered = 0
    for chunk in range(10):
        data = 100 * rng.beta(2, 5, size=(200, 60))
        means = bootstrap_means(data, resamples=1000, seed=chunk)
        lo, hi = np.quantile(means, [0.025, 0.975], axis=-1)
        covered += int(((lo <= truth) & (truth <= hi)).sum())
    assert 0.93 <= covered / 2000 <= 0.97, covered / 2000


def test_paired_bootstrap_covers_the_true_difference() -> None:
    # 2,000 paired experiments: 50 examples, per-example difficulty shared by both models
    # (large), the adapted model 3 points lower on average. The paired interval must
    # cover −3 about 95 % of the time, and be much narrower than the unpaired spread.
    rng = np.random.default_rng(7)
    covered, widths = 0, []
    for e in range(2000 // 100):
        difficulty = rng.normal(50, 20, size=(100, 50))
        base = difficulty + rng.normal(0, 4, size=(100, 50))
        adapted = difficulty - 3 + rng.normal(0, 4, size=(100, 50))
        means = bootstrap_means(adapted - base, resamples=1000, seed=e)
        lo, hi = np.quantile(means, [0.025, 0.975], axis=-1)
        covered += int(((lo <= -3) & (-3 <= hi)).sum())
        widths.extend(hi - lo)
    assert 0.93 <= covered / 2000 <= 0.97
    assert float(np.mean(widths)) < 5  # unpaired: difficulty's 20-point spread would give ~22


def test_seeded_and_reproducible() -> None:
    values = list(np.random.default_rng(0).normal(size=40))
    assert bootstrap_ci(values, 500, seed=3) == bootstrap_ci(values, 500, seed=3)
    assert bootstrap_ci(values, 500, seed=3) != bootstrap_ci(values, 500, seed=4)
    assert all(math.isnan(v) for v in bootstrap_ci([], 10, 0))


def test_corpus_statistic_recomputes_sacrebleu_not_a_mean_of_sentences() -> None:
    preds = ["the cat sat on the mat", "a dog ran", "hello world there", "the quick brown fox", "it rains today"]
    refs = [["the cat sat on mat"], ["the dog ran away"], ["hello there world"], ["a quick brown fox jumps"], ["it is raining today"]]
    evaluator, options = resolve_evaluator("bleu")
    result = evaluator.score(preds, refs, **options)
    assert result.statistics is not None
    stat = result.statistics()["bleu"]
    assert stat.kind == "corpus"
    assert stat.value() == pytest.approx(result.headline["bleu"], abs=1e-9)  # all examples once = corpus BLEU
    # A resample that draws example 0 five times is that sentence's BLEU, not an average.
    import sacrebleu

    only_first = np.zeros((1, 5))
    only_first[0, 0] = 5
    expected = sacrebleu.corpus_bleu([preds[0]] * 5, [[refs[0][0]] * 5]).score
    assert stat.weighted(only_first)[0] == pytest.approx(expected)
    iv = interval(stat, resamples=500, seed=1)
    assert iv.method == "bootstrap" and iv.n == 5 and iv.low <= iv.value <= iv.high


def test_interval_kinds_per_evaluator() -> None:
    preds, refs = ["positive", "negative", "positive", "negative"], [["positive"], ["positive"], ["positive"], ["negative"]]
    for name, metric, method in (("accuracy", "accuracy", "wilson"), ("rouge", "rougeL", "bootstrap"), ("chrf", "chrf", "bootstrap")):
        evaluator, options = resolve_evaluator(name)
        res = evaluator.score(preds, refs, **options)
        assert res.statistics is not None
        iv = interval(res.statistics()[metric])
        assert iv.method == method and iv.n == 4
        assert iv.value == pytest.approx(res.headline[metric])
    lo, hi = wilson(3, 4)
    assert interval(Statistic.of("proportion", [1, 0, 1, 1])).low == pytest.approx(100 * lo)
    assert interval(Statistic.of("proportion", [1, 0, 1, 1])).high == pytest.approx(100 * hi)


def test_paired_proportions_that_all_agree_do_not_collapse() -> None:
    # 8 examples, both models right on the same 5: no discordant pair, so every bootstrap
    # resample gives a difference of exactly 0. That would claim certainty on 8 examples;
    # Newcombe's paired interval is used instead, and it is wide.
    same = [1, 1, 1, 1, 1, 0, 0, 0]
    iv = paired_interval(Statistic.of("proportion", same), Statistic.of("proportion", same))
    assert iv.method == "newcombe-paired" and iv.value == 0.0
    assert iv.low < -20 and iv.high > 20 and iv.low == pytest.approx(-iv.high)
    assert verdict(iv.low, iv.high, 2.0) == "unresolved"
    # n/n correct in both: the margins are empty, phi is 0, the bound is Wilson's for 0/n.
    lo, hi = newcombe_paired([0, 0], [0, 0])
    assert hi == pytest.approx(wilson(0, 2)[1]) and lo == pytest.approx(-hi)


def test_newcombe_paired_covers_the_true_difference() -> None:
    # 2,000 paired experiments of 30 examples: base right 70 % of the time; the adapter
    # loses 15 % of those and gains 10 % of the rest (true difference −7.5 points).
    rng = np.random.default_rng(3)
    truth = 0.7 * 0.85 + 0.3 * 0.1 - 0.7
    base = rng.random((2000, 30)) < 0.7
    u = rng.random((2000, 30))
    adapted = np.where(base, u > 0.15, u < 0.1)
    covered = sum(lo <= truth <= hi for lo, hi in (newcombe_paired(b, a) for b, a in zip(base, adapted, strict=True)))
    assert 0.93 <= covered / 2000 <= 0.99  # Newcombe's method 10 runs slightly conservative


def test_paired_interval_needs_the_same_examples() -> None:
    with pytest.raises(EvaluationError, match="same examples"):
        paired_interval(Statistic.of("mean", [1, 2, 3]), Statistic.of("mean", [1, 2]))


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(-9.0, -4.0, "forgotten"), (-12.0, 3.0, "unresolved"), (-1.5, 4.0, "kept"), (1.0, 6.0, "kept"), (-2.5, -2.1, "forgotten")],
)
def test_verdict(low: float, high: float, expected: str) -> None:
    assert verdict(low, high, 2.0) == expected


def test_examples_for_scales_with_root_n() -> None:
    assert examples_for(8.0, 20, 2.0) == 320  # half the width takes four times the examples
    assert examples_for(1.0, 20, 2.0) == 20  # already fine: never fewer than measured
    assert examples_for(0.0, 20, 2.0) is None
    with pytest.raises(EvaluationError, match="above 0"):
        examples_for(1.0, 20, 0.0)


def test_percentile_and_text() -> None:
    assert percentile(np.arange(1001, dtype=float)) == pytest.approx((25.0, 975.0))
    assert ci_text(1.234, 5.0) == "[1.2, 5.0]"
    assert ci_text(-3.21, 1.0, signed=True) == "[-3.2, +1.0]"
    assert ci_text(None, 1.0) == "-"
