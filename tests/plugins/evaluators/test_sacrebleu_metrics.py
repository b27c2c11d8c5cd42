"""BLEU and chrF equal sacrebleu's own numbers and signatures, to 1e-9."""

from __future__ import annotations

import pytest
import sacrebleu
from adapterhub.plugins.evaluators.sacrebleu_metrics import BleuEvaluator, ChrfEvaluator
from evaluator_corpora import ALL
from sacrebleu.metrics import BLEU, CHRF

from adapterhub.errors import ConfigError

# sacrebleu's corpus API cannot score an empty corpus or a first reference of None, so
# the all-empty corpus keeps its (empty-string) references as they are.
CASES = sorted(ALL)


def streams(refs):
    """Reference streams built independently of the plugin: None where an example has fewer."""
    width = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("tokenize", ["13a", "intl", "char"])
def test_corpus_bleu_matches_sacrebleu(name, tokenize):
    preds, refs = ALL[name]
    expected = sacrebleu.corpus_bleu(preds, streams(refs), tokenize=tokenize)
    res = BleuEvaluator().score(preds, refs, tokenize=tokenize)
    assert res.corpus["score"] == pytest.approx(expected.score, abs=1e-9)
    assert res.headline["bleu"] == pytest.approx(expected.score, abs=1e-9)
    assert res.corpus["counts"] == list(expected.counts)
    assert res.corpus["totals"] == list(expected.totals)
    assert res.corpus["bp"] == pytest.approx(expected.bp, abs=1e-12)
    assert (res.corpus["sys_len"], res.corpus["ref_len"]) == (expected.sys_len, expected.ref_len)
    metric = BLEU(tokenize=tokenize)
    metric.corpus_score(preds, streams(refs))
    assert res.corpus["signature"] == metric.get_signature().format()
    assert f"tok:{tokenize}" in res.corpus["signature"]


def test_signature_reports_variable_reference_counts():
    preds, refs = ALL["multi_refs"]
    sig = BleuEvaluator().score(preds, refs).corpus["signature"]
    assert sig.startswith("nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:")


@pytest.mark.parametrize("name", CASES)
def test_sentence_bleu_matches_sacrebleu(name):
    preds, refs = ALL[name]
    res = BleuEvaluator().score(preds, refs, per_example=True)
    assert res.per_example is not None
    for row, p, r in zip(res.per_example, preds, refs, strict=True):
        assert row["sentence_bleu"] == pytest.approx(sacrebleu.sentence_bleu(p, r).score, abs=1e-9)


def test_lowercase_and_smoothing_options_reach_sacrebleu():
    preds, refs = ALL["normal"]
    expected = sacrebleu.corpus_bleu(preds, streams(refs), lowercase=True, smooth_method="floor", smooth_value=0.1)
    res = BleuEvaluator().score(preds, refs, lowercase=True, smooth_method="floor", smooth_value=0.1)
    assert res.corpus["score"] == pytest.approx(expected.score, abs=1e-9)
    assert "case:lc" in res.corpus["signature"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_matches_sacrebleu(name, word_order):
    preds, refs = ALL[name]
    metric = CHRF(word_order=word_order)
    expected = metric.corpus_score(preds, streams(refs))
    res = ChrfEvaluator().score(preds, refs, word_order=word_order, per_example=True)
    assert res.corpus["score"] == pytest.approx(expected.score, abs=1e-9)
    assert res.headline["chrf"] == pytest.approx(expected.score, abs=1e-9)
    assert res.corpus["signature"] == metric.get_signature().format()
    for row, p, r in zip(res.per_example, preds, refs, strict=True):
        assert row["sentence_chrf"] == pytest.approx(sacrebleu.sentence_chrf(p, r, word_order=word_order).score, abs=1e-9)


def test_default_chrf_equals_corpus_chrf():
    preds, refs = ALL["unicode"]
    assert ChrfEvaluator().score(preds, refs).corpus["score"] == pytest.approx(
        sacrebleu.corpus_chrf(preds, streams(refs)).score, abs=1e-9
    )


def test_unknown_tokenizer_is_one_line_config_error():
    with pytest.raises(ConfigError, match="tokenize is one of .*13a") as exc:
        BleuEvaluator().score(["a"], [["a"]], tokenize="moses")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="beta"):
        ChrfEvaluator().score(["a"], [["a"]], beta="high")
