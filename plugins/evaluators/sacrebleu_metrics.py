"""``bleu`` and ``chrf``: corpus BLEU and chrF from ``sacrebleu``, with its signature.

The corpus score is sacrebleu's own ``corpus_score`` (not a mean of sentence scores).
Several references per example become sacrebleu reference streams; an example with
fewer references than the widest one gets ``None`` in the missing streams, which
sacrebleu treats as "no reference" (its signature then says ``nrefs:var``).
``bleu`` can add per-example sentence BLEU computed exactly as
``sacrebleu.sentence_bleu`` does (effective n-gram order on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from adapterhub.errors import ConfigError
from adapterhub.protocols.evaluator import EvaluatorContext

from ._common import EvaluatorOptions, reference_streams
from .base import ExampleEvaluator, ExampleScorer, Row


@dataclasses.dataclass(frozen=True)
class BleuOptions(EvaluatorOptions):
    tokenize: str = "13a"
    """sacrebleu tokenizer: ``13a`` (default, WMT standard), ``intl``, ``char``, ``zh``, ``ja-mecab``, ``none``..."""
    lowercase: bool = False
    smooth_method: str = "exp"
    smooth_value: float | None = None
    use_effective_order: bool = False
    force: bool = True
    """Skip sacrebleu's "looks tokenized" warning (generated text often ends in `` .``)."""
    per_example: bool = False
    """Add sentence BLEU per example (``sacrebleu.sentence_bleu`` semantics)."""


@dataclasses.dataclass(frozen=True)
class ChrfOptions(EvaluatorOptions):
    char_order: int = 6
    word_order: int = 0
    """2 gives chrF++."""
    beta: int = 2
    lowercase: bool = False
    whitespace: bool = False
    eps_smoothing: bool = False
    per_example: bool = False


def _make_bleu(opts: BleuOptions, effective_order: bool) -> Any:
    from sacrebleu.metrics import BLEU

    try:
        return BLEU(
            lowercase=opts.lowercase,
            force=opts.force,
            tokenize=opts.tokenize,
            smooth_method=opts.smooth_method,
            smooth_value=opts.smooth_value,
            effective_order=effective_order,
        )
    except (KeyError, AssertionError, ValueError) as exc:
        # sacrebleu reports a bad tokenizer as KeyError('x') and a bad smoothing method
        # with an assert: turn both into one readable line.
        raise ConfigError(
            f"evaluator 'bleu': invalid option ({exc!s}); tokenize is one of {', '.join(BLEU.TOKENIZERS)}"
            f" and smooth_method one of {', '.join(BLEU.SMOOTH_DEFAULTS)}"
        ) from None


class _SacrebleuEvaluator(ExampleEvaluator):
    """Corpus score from sacrebleu's ``corpus_score`` (not a mean of rows); rows are the
    optional sentence scores, computed only when ``per_example`` is asked for."""

    scale = 1.0  # sacrebleu reports 0–100 already

    def metric(self, options: Any, sentence: bool) -> Any:
        raise NotImplementedError

    def scorer(self, options: Any, context: EvaluatorContext | None) -> ExampleScorer:
        sent = self.metric(options, True)
        return lambda prediction, refs: {f"sentence_{self.name}": sent.sentence_score(prediction, list(refs)).score}

    def score_rows(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        options: Any,
        context: EvaluatorContext | None,
    ) -> list[Row]:
        return super().score_rows(predictions, references, options, context) if options.per_example else []

    def corpus_fields(self, res: Any) -> dict[str, Any]:
        raise NotImplementedError

    def aggregate(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        metric = self.metric(options, False)
        res = metric.corpus_score(list(predictions), reference_streams(references))
        return {**self.corpus_fields(res), "signature": metric.get_signature().format()}

    def headline(self, corpus: Mapping[str, Any], options: Any) -> dict[str, float]:
        return {self.name: corpus["score"]}

    def statistics(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        import numpy as np

        from adapterhub.evaluation.intervals import Statistic

        # sacrebleu's corpus score is a function of the *summed* sentence statistics
        # (n-gram matches and totals, lengths): its own corpus_score is exactly
        # _aggregate_and_compute(_extract_corpus_statistics(...)). So a resample sums the
        # drawn examples' rows and runs sacrebleu's formula on them, not a mean of
        # sentence scores, which would be another metric.
        metric = self.metric(options, False)
        stats = metric._extract_corpus_statistics(list(predictions), reference_streams(references))

        def score(summed: Any) -> Any:
            return np.array([metric._compute_score_from_stats(list(row)).score for row in summed])

        return {self.name: Statistic.of("corpus", stats, score)}


class BleuEvaluator(_SacrebleuEvaluator):
    name = "bleu"
    description = "corpus BLEU (sacrebleu, tokenizer 13a by default) with its signature; optional sentence BLEU"
    options_type = BleuOptions

    def metric(self, options: Any, sentence: bool) -> Any:
        # Sentence BLEU always uses the effective n-gram order (sacrebleu.sentence_bleu).
        return _make_bleu(options, True if sentence else options.use_effective_order)

    def corpus_fields(self, res: Any) -> dict[str, Any]:
        return {
            "name": res.name,
            "score": res.score,
            "counts": list(res.counts),
            "totals": list(res.totals),
            "precisions": list(res.precisions),
            "bp": res.bp,
            "sys_len": res.sys_len,
            "ref_len": res.ref_len,
        }


class ChrfEvaluator(_SacrebleuEvaluator):
    name = "chrf"
    description = "corpus chrF (sacrebleu; word_order=2 for chrF++) with its signature"
    options_type = ChrfOptions

    def metric(self, options: Any, sentence: bool) -> Any:
        from sacrebleu.metrics import CHRF

        return CHRF(
            char_order=options.char_order,
            word_order=options.word_order,
            beta=options.beta,
            lowercase=options.lowercase,
            whitespace=options.whitespace,
            eps_smoothing=options.eps_smoothing,
        )

    def corpus_fields(self, res: Any) -> dict[str, Any]:
        return {"name": res.name, "score": res.score, "char_order": res.char_order, "word_order": res.word_order, "beta": res.beta}
