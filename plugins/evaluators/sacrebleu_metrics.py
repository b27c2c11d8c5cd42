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
from collections.abc import Sequence
from typing import Any

from adapterhub.errors import ConfigError
from adapterhub.protocols.evaluator import EvalResult, EvaluatorContext

from ._common import EvaluatorOptions, check_inputs, parse_options, reference_streams


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


class BleuEvaluator:
    name = "bleu"
    description = "corpus BLEU (sacrebleu, tokenizer 13a by default) with its signature; optional sentence BLEU"
    needs_model = False

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        context: EvaluatorContext | None = None,
        **options: Any,
    ) -> EvalResult:
        opts = parse_options(self.name, BleuOptions, options)
        refs = check_inputs(self.name, predictions, references)
        metric = _make_bleu(opts, opts.use_effective_order)
        res = metric.corpus_score(list(predictions), reference_streams(refs))
        corpus: dict[str, Any] = {
            "name": res.name,
            "score": res.score,
            "counts": list(res.counts),
            "totals": list(res.totals),
            "precisions": list(res.precisions),
            "bp": res.bp,
            "sys_len": res.sys_len,
            "ref_len": res.ref_len,
            "signature": metric.get_signature().format(),
        }
        per_example = None
        if opts.per_example:
            sent = _make_bleu(opts, True)
            per_example = [{"sentence_bleu": sent.sentence_score(p, list(r)).score} for p, r in zip(predictions, refs, strict=True)]
        return EvalResult(self.name, corpus, {"bleu": res.score}, per_example)


class ChrfEvaluator:
    name = "chrf"
    description = "corpus chrF (sacrebleu; word_order=2 for chrF++) with its signature"
    needs_model = False

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        context: EvaluatorContext | None = None,
        **options: Any,
    ) -> EvalResult:
        opts = parse_options(self.name, ChrfOptions, options)
        refs = check_inputs(self.name, predictions, references)
        from sacrebleu.metrics import CHRF

        def make() -> Any:
            return CHRF(
                char_order=opts.char_order,
                word_order=opts.word_order,
                beta=opts.beta,
                lowercase=opts.lowercase,
                whitespace=opts.whitespace,
                eps_smoothing=opts.eps_smoothing,
            )

        metric = make()
        res = metric.corpus_score(list(predictions), reference_streams(refs))
        corpus = {
            "name": res.name,
            "score": res.score,
            "char_order": res.char_order,
            "word_order": res.word_order,
            "beta": res.beta,
            "signature": metric.get_signature().format(),
        }
        per_example = None
        if opts.per_example:
            sent = make()
            per_example = [{"sentence_chrf": sent.sentence_score(p, list(r)).score} for p, r in zip(predictions, refs, strict=True)]
        return EvalResult(self.name, corpus, {"chrf": res.score}, per_example)
