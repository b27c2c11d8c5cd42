"""``evaluate``: a bridge to any metric of the Hugging Face ``evaluate`` library.

Used as ``--metric evaluate:meteor`` (the part after the colon becomes the ``metric``
option). ``evaluate.load`` downloads the metric's script from the Hub; offline it fails
with ``FileNotFoundError: Couldn't find a module script at ./meteor/meteor.py``, which
reads like a local problem. The bridge turns that into one line that says what is
missing and how to provide a local copy (a directory holding ``<metric>.py``, loaded by
path).

Options other than ``metric``, ``scale`` and ``references_format`` go to
``metric.compute`` unchanged (e.g. ``lang=en`` for bertscore).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adapterhub.errors import ConfigError, EvaluationError
from adapterhub.protocols.evaluator import EvaluatorContext

from .base import ExampleEvaluator, Row

_OWN_OPTIONS = ("metric", "scale", "references_format")


def offline_message(metric: str, cause: BaseException) -> str:
    base = Path(metric.rstrip("/")).name or metric
    return (
        f"evaluate metric {metric!r} is not available offline: evaluate.load() fetches its script "
        f"from the Hugging Face Hub ({cause.__class__.__name__}); provide a local copy, a directory "
        f"holding {base}.py (from github.com/huggingface/evaluate, metrics/{base}/), and pass its path: "
        f'--metric evaluate:/path/to/{base} (Python: evaluate.load("/path/to/{base}"))'
    )


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays → plain Python, so results survive json.dumps."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class BridgeOptions:
    """The bridge's own options plus everything else, passed on to ``metric.compute``."""

    metric: str
    scale: float = 100.0
    references_format: str = "auto"
    compute_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return Path(self.metric.rstrip("/")).name or self.metric


class EvaluateBridge(ExampleEvaluator):
    """On the shared loop with its corpus-only shape: the library computes one corpus
    dict from all texts (``aggregate``), there are no per-example rows, and its options
    are free-form (``parse``: unknown keys go to ``compute``, not refused)."""

    name = "evaluate"
    description = "any Hugging Face `evaluate` metric by name: --metric evaluate:<metric> (offline: a local script dir)"

    def load(self, metric: str) -> Any:
        """``evaluate.load(metric)`` with the offline failure turned into EvaluationError."""
        try:
            import evaluate
        except ImportError as exc:  # pragma: no cover - evaluate is a dependency
            raise EvaluationError(f"the evaluate bridge needs the 'evaluate' package ({exc})") from None
        try:
            return evaluate.load(metric)
        except (FileNotFoundError, ConnectionError) as exc:
            # Offline, evaluate reports the missing Hub script as a local FileNotFoundError;
            # huggingface_hub's offline-mode and connection errors are ConnectionErrors.
            raise EvaluationError(offline_message(metric, exc)) from None

    def parse(self, options: Mapping[str, Any]) -> BridgeOptions:
        metric_name = options.get("metric")
        if not isinstance(metric_name, str) or not metric_name:
            raise ConfigError("evaluator 'evaluate' needs a metric name: --metric evaluate:<metric> (option metric=...)")
        try:
            scale = float(options.get("scale", 100.0))
        except (TypeError, ValueError):
            raise ConfigError(f"evaluator 'evaluate': option 'scale' must be a number, got {options.get('scale')!r}") from None
        fmt = options.get("references_format", "auto")
        if fmt not in ("auto", "flat", "nested"):
            raise ConfigError(f"evaluator 'evaluate': references_format must be auto, flat or nested, got {fmt!r}")
        rest = {k: v for k, v in options.items() if k not in _OWN_OPTIONS}
        return BridgeOptions(metric=metric_name, scale=scale, references_format=fmt, compute_kwargs=rest)

    def score_rows(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        options: Any,
        context: EvaluatorContext | None,
    ) -> list[Row]:
        return []  # the metric scores the corpus in one compute() call

    def aggregate(
        self, rows: Sequence[Row], predictions: Sequence[str], references: Sequence[Sequence[str]], options: Any
    ) -> dict[str, Any]:
        opts: BridgeOptions = options
        fmt = opts.references_format
        if fmt == "flat" or (fmt == "auto" and all(len(r) == 1 for r in references)):
            if any(len(r) != 1 for r in references):
                raise ConfigError("evaluator 'evaluate': references_format=flat needs exactly one reference per example")
            ref_arg: list[Any] = [r[0] for r in references]
        else:
            ref_arg = [list(r) for r in references]
        metric = self.load(opts.metric)
        try:
            raw = metric.compute(predictions=list(predictions), references=ref_arg, **opts.compute_kwargs)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"evaluate metric {opts.metric!r} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        return dict(_jsonable(dict(raw or {})))

    def headline(self, corpus: Mapping[str, Any], options: Any) -> dict[str, float]:
        opts: BridgeOptions = options
        headline: dict[str, float] = {}
        for key, value in corpus.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
                headline[key if key == opts.label else f"{opts.label}.{key}"] = float(value) * opts.scale
        return headline

    def result_name(self, options: Any) -> str:
        return f"{self.name}:{options.label}"
