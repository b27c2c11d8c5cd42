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
from collections.abc import Sequence
from typing import Any, Literal

from adapterhub.protocols.evaluator import EvalResult, EvaluatorContext

from ._common import EvaluatorOptions, check_inputs, mean, parse_options

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


class RougeEvaluator:
    name = "rouge"
    description = "ROUGE-1/2/L/Lsum precision, recall and F1 (rouge-score); corpus = mean of examples"
    needs_model = False

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        context: EvaluatorContext | None = None,
        **options: Any,
    ) -> EvalResult:
        opts = parse_options(self.name, RougeOptions, options)
        refs = check_inputs(self.name, predictions, references)
        from rouge_score import rouge_scorer

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

        def multi(targets: Sequence[str], prediction: str) -> dict[str, Any]:
            # RougeScorer.score_multi's rule: per type, the target with the highest
            # F-measure (first one on ties, like np.argmax), via the shortcut above.
            each = [single(t, prediction) for t in targets]
            return {t: max(each, key=lambda d: d[t].fmeasure)[t] for t in types}

        # With one target score_multi equals score(); skip its per-type argmax.
        rows = [single(r[0], p) if len(r) == 1 else multi(r, p) for p, r in zip(predictions, refs, strict=True)]
        corpus: dict[str, Any] = {}
        headline: dict[str, float] = {}
        for t in types:
            col = [row[t] for row in rows]
            corpus[t] = {f: mean([s[k] for s in col]) for k, f in enumerate(_FIELDS)}
            headline[t] = corpus[t]["fmeasure"] * 100.0
        return EvalResult(
            evaluator=self.name,
            corpus=corpus,
            headline=headline,
            per_example=rows if opts.per_example else None,
        )
