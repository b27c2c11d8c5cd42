"""exact_match / accuracy: the documented normalisation and label matching."""

from __future__ import annotations

import pytest
from adapterhub.plugins.evaluators._common import first_word, normalize
from adapterhub.plugins.evaluators.match import AccuracyEvaluator, ExactMatchEvaluator


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive", "positive"),
        ("  POSITIVE.  ", "positive"),
        ('"positive!"', "positive"),
        ("«Négatif»", "négatif"),
        ("“Yes,” she said.", "yes,” she said"),
        ("don't", "don't"),
        ("(a)  b\n\tc ...", "a) b c"),
        ("...", ""),
        ("", ""),
        ("ÅÄÖ", "åäö"),
        ("100%", "100"),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive. The reviewer loved it", "positive"),
        ("positive, clearly", "positive"),
        ("  Negative!", "negative"),
        ("**positive**", "positive"),
        ("", ""),
        ("?!", ""),
    ],
)
def test_first_word(text, expected):
    assert first_word(text) == expected


def test_accuracy_compares_first_word():
    preds = ["Positive. Great film", "negative", "The review is positive", "", "NEGATIVE!"]
    refs = [["positive"], ["positive"], ["positive"], ["negative"], ["negative"]]
    res = AccuracyEvaluator().score(preds, refs, per_example=True)
    assert res.corpus == {"accuracy": 0.4, "correct": 2, "total": 5}
    assert res.headline == {"accuracy": 40.0}
    assert [r["correct"] for r in res.per_example] == [True, False, False, False, True]


def test_exact_match_whole_answer_and_any_reference():
    preds = ["The Cat.", "the cat sat", "Stockholm", "  ", "東京！"]
    refs = [["the cat"], ["the cat"], ["Gothenburg", "stockholm"], [""], ["東京"]]
    res = ExactMatchEvaluator().score(preds, refs)
    assert res.corpus["correct"] == 4  # "the cat sat" ≠ "the cat"; full-width ！ is punctuation
    assert res.headline["exact_match"] == pytest.approx(80.0)


def test_unknown_option_refused():
    from adapterhub.errors import ConfigError

    with pytest.raises(ConfigError, match="first_word"):
        AccuracyEvaluator().score(["a"], [["a"]], first_word=False)
