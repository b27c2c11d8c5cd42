"""``rouge``: ROUGE-1/2/L/Lsum on top of Google's ``rouge-score``.

Numbers are rouge-score's own: every example is scored by ``RougeScorer.score`` (one
reference) or ``RougeScorer.score_multi`` (several references: per ROUGE type the
reference with the highest F-measure wins), and the corpus score is the plain mean of
the per-example precision, recall and F-measure. That mean is what rouge-score users
compute by hand; ``BootstrapAggregator`` would add resampling noise.

One shortcut, exact by construction: when neither text of a pair contains a newline,
rougeLsum sees one sentence on each side, the union LCS is then the plain LCS, and
rouge-score's rougeLsum equals its rougeL bit for bit. The LCS table is most of
rouge-score's time, so for such pairs we let rouge-score compute rougeL once and reuse
it (the tests compare against unmodified ``RougeScorer.score`` calls).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from adapterhub.protocols.evaluator import EvaluatorContext

from ._common import EvaluatorOptions, mean
from .base import ExampleEvaluator, ExampleScorer, Row

RougeType = Literal["rouge1", "rouge2", "rougeL", "rougeLsum"]
ALL_TYPES: tuple[RougeType, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_FIELDS = ("precision", "recall", "fmeasure")


@dataclasses.dataclass(frozen=True)
class RougeOptions(EvaluatorOptions):
    rouge_types: tuple[RougeType, ...] = ALL_TYPES
    use_stemmer: bool = False
    """Porter stemming before matching (rouge-score's ``use_stemmer``; off by default, as there)."""
    split_summaries: bool = False
    """rougeLsum: split sentences with nltk instead of on newlines (needs nltk's punkt data)."""
    per_example: bool = True
    """Keep rouge-score's per-example ``{type: Score}`` dicts (they are computed anyway)."""


class RougeEvaluator(ExampleEvaluator):
    name = "rouge"
    description = "ROUGE-1/2/L/Lsum precision, recall and F1 (rouge-score); corpus = mean of examples"
    options_type = RougeOptions

    def scorer(self, options: Any, context: EvaluatorContext | None) -> ExampleScorer:
        from rouge_score import rouge_scorer

        opts: RougeOptions = options
        types = list(dict.fromkeys(opts.rouge_types))
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=opts.use_stemmer, split_summaries=opts.split_summaries)
        if not opts.split_summaries and "rougeL" in types and "rougeLsum" in types:
            lite = rouge_scorer.RougeScorer(
                [t for t in types if t != "rougeLsum"], use_stemmer=opts.use_stemmer
            ).score

            def single(target: str, prediction: str) -> dict[str, Any]:
                if "\n" in target or "\n" in prediction:
                    return scorer.score(target, prediction)  # type: ignore[no-any-return]
                row: dict[str, Any] = lite(target, prediction)
                row["rougeLsum"] = row["rougeL"]
                return row

        else:
            single = scorer.score

        def example(prediction: str, targets: Sequence[str]) -> dict[str, Any]:
            # With one target score_multi equals score(); skip its per-type argmax.
            if len(targets) == 1:
                return single(targets[0], prediction)
            # RougeScorer.score_multi's rule: per type, the target with the highest
            # F-measure (first one on ties, like np.argmax), via the shortcut above.
            each = [single(t, prediction) for t in targets]
            return {t: max(each, key=lambda d: d[t].fmeasure)[t] for t in types}

        return example

    def aggregate(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        types = list(dict.fromkeys(options.rouge_types))
        return {t: {f: mean([row[t][k] for row in rows]) for k, f in enumerate(_FIELDS)} for t in types}

    def headline(self, corpus: Mapping[str, Any], options: Any) -> dict[str, float]:
        return {t: corpus[t]["fmeasure"] * 100.0 for t in corpus}

    def statistics(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        from adapterhub.evaluation.intervals import Statistic

        # The corpus score *is* the mean of the per-example F1s, so resampling examples
        # and re-averaging re-computes exactly the corpus number.
        types = list(dict.fromkeys(options.rouge_types))
        return {t: Statistic.of("mean", [100.0 * row[t][2] for row in rows]) for t in types}
