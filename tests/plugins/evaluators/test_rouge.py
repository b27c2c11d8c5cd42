"""ROUGE numbers equal rouge-score's own, to 1e-9, on the edge cases the issue names."""

from __future__ import annotations

import math

import pytest
from adapterhub.plugins.evaluators.rouge import ALL_TYPES, RougeEvaluator
from evaluator_corpora import ALL
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from adapterhub.errors import ConfigError, DataError

FIELDS = ("precision", "recall", "fmeasure")


def reference_scores(preds, refs, use_stemmer=False):
    """What a rouge-score user computes: score/score_multi per example, then the mean."""
    scorer = rouge_scorer.RougeScorer(list(ALL_TYPES), use_stemmer=use_stemmer)
    rows = [scorer.score(r[0], p) if len(r) == 1 else scorer.score_multi(r, p) for p, r in zip(preds, refs, strict=True)]
    corpus = {t: {f: math.fsum(getattr(row[t], f) for row in rows) / len(rows) for f in FIELDS} for t in ALL_TYPES}
    return rows, corpus


def assert_matches(preds, refs, use_stemmer=False):
    res = RougeEvaluator().score(preds, refs, use_stemmer=use_stemmer)
    rows, corpus = reference_scores(preds, refs, use_stemmer)
    for t in ALL_TYPES:
        for f in FIELDS:
            assert res.corpus[t][f] == pytest.approx(corpus[t][f], abs=1e-9), (t, f)
        assert res.headline[t] == pytest.approx(corpus[t]["fmeasure"] * 100, abs=1e-7)
    assert res.per_example is not None
    for ours, theirs in zip(res.per_example, rows, strict=True):
        for t in ALL_TYPES:
            assert tuple(ours[t]) == pytest.approx(tuple(theirs[t]), abs=1e-12), t
    return res


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("use_stemmer", [False, True])
def test_matches_rouge_score(name, use_stemmer):
    preds, refs = ALL[name]
    assert_matches(preds, refs, use_stemmer)


def test_multi_refs_take_the_best_reference():
    res = RougeEvaluator().score(["hello world"], [["completely different", "hello world"]])
    assert res.corpus["rouge1"]["fmeasure"] == 1.0
    assert res.headline["rougeL"] == 100.0


def test_score_multi_tie_picks_first_reference_like_numpy_argmax():
    # Two references with equal rouge1 F but different precision/recall split.
    pred = "a b c d"
    refs = ["a b x", "a b y z w"]
    scorer = rouge_scorer.RougeScorer(list(ALL_TYPES))
    expected = scorer.score_multi(refs, pred)
    res = RougeEvaluator().score([pred], [refs])
    for t in ALL_TYPES:
        assert tuple(res.per_example[0][t]) == tuple(expected[t])


def test_subset_of_types_and_no_per_example():
    res = RougeEvaluator().score(["a b"], [["a b c"]], rouge_types=["rouge2"], per_example=False)
    assert list(res.corpus) == ["rouge2"]
    assert res.per_example is None


def test_bad_option_is_one_line_config_error():
    with pytest.raises(ConfigError, match="stem") as exc:
        RougeEvaluator().score(["a"], [["a"]], stem=True)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="rouge_types"):
        RougeEvaluator().score(["a"], [["a"]], rouge_types=["rouge9"])


def test_misaligned_and_empty_inputs_raise_data_error():
    with pytest.raises(DataError, match="2 predictions but 1"):
        RougeEvaluator().score(["a", "b"], [["a"]])
    with pytest.raises(DataError, match="no predictions"):
        RougeEvaluator().score([], [])
    with pytest.raises(DataError, match="example 0 has no reference"):
        RougeEvaluator().score(["a"], [[]])


def test_bare_string_reference_is_one_reference():
    a = RougeEvaluator().score(["the cat"], ["the cat sat"])
    b = RougeEvaluator().score(["the cat"], [["the cat sat"]])
    assert a.corpus == b.corpus


words = st.sampled_from(["the", "cat", "sat", "on", "mat", "dog", "runs", "running", "a", "é", "東京", ".", "\n", " ", ""])
texts = st.lists(words, max_size=12).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(texts, st.lists(texts, min_size=1, max_size=3)), min_size=1, max_size=5))
def test_property_equal_to_rouge_score(pairs):
    preds = [p for p, _ in pairs]
    refs = [r for _, r in pairs]
    assert_matches(preds, refs)
