"""Shared test corpora for the evaluator tests: (predictions, references) edge cases."""

from __future__ import annotations

NORMAL = (
    [
        "The cat sat on the mat.",
        "We propose a statistical method for ranking answers.",
        "Results improve by up to 20 % in MRR.",
        "the quick brown fox jumps over the lazy dog",
    ],
    [
        ["A cat sat on the mat."],
        ["They propose a statistical method which ranks candidate answers."],
        ["The proposed method outperforms baselines by up to 20% in MRR."],
        ["the quick brown dog jumps on the log"],
    ],
)
EMPTY_PREDICTIONS = (["", "", "something here"], [["a reference"], ["another one here"], ["something here"]])
ALL_EMPTY = (["", ""], [["not empty"], [""]])
UNICODE = (
    ["Smörgåsbord är gott på morgonen.", "東京は晴れです 😀", "naïve café — «quoted» text", "Ελληνικά κείμενα εδώ"],
    [["Smörgåsbord är gott."], ["東京は晴れ"], ["naïve café text"], ["Ελληνικά κείμενα"]],
)
MULTI_REFS = (
    ["the cat is on the mat", "there is a cat on the mat", "hello world", "good morning everyone"],
    [
        ["the cat is on the mat", "there is a cat on the mat"],
        ["a cat is on the mat"],
        ["hi world", "hello there world", "hello world"],
        ["good morning", "morning all"],
    ],
)
SINGLE_TOKEN = (["yes", "no", "maybe"], [["yes"], ["yes"], ["maybe"]])
MULTILINE = (
    ["First sentence here.\nSecond sentence there.", "one line only", "a\n\nb c", "\n"],
    [["First sentence here.\nAnother second sentence."], ["one line\nonly two"], ["b c\na"], ["x"]],
)

ALL = {
    "normal": NORMAL,
    "empty_predictions": EMPTY_PREDICTIONS,
    "all_empty": ALL_EMPTY,
    "unicode": UNICODE,
    "multi_refs": MULTI_REFS,
    "single_token": SINGLE_TOKEN,
    "multiline": MULTILINE,
}
