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

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapterhub.errors import ConfigError, EvaluationError
from adapterhub.protocols.evaluator import EvalResult, EvaluatorContext

from ._common import check_inputs

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


class EvaluateBridge:
    name = "evaluate"
    description = "any Hugging Face `evaluate` metric by name: --metric evaluate:<metric> (offline: a local script dir)"
    needs_model = False

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

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        context: EvaluatorContext | None = None,
        **options: Any,
    ) -> EvalResult:
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
        compute_kwargs = {k: v for k, v in options.items() if k not in _OWN_OPTIONS}
        refs = check_inputs(self.name, predictions, references)
        if fmt == "flat" or (fmt == "auto" and all(len(r) == 1 for r in refs)):
            if any(len(r) != 1 for r in refs):
                raise ConfigError("evaluator 'evaluate': references_format=flat needs exactly one reference per example")
            ref_arg: list[Any] = [r[0] for r in refs]
        else:
            ref_arg = [list(r) for r in refs]
        metric = self.load(metric_name)
        try:
            raw = metric.compute(predictions=list(predictions), references=ref_arg, **compute_kwargs)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"evaluate metric {metric_name!r} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        corpus = _jsonable(dict(raw or {}))
        label = Path(metric_name.rstrip("/")).name or metric_name
        headline: dict[str, float] = {}
        for key, value in corpus.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
                headline[key if key == label else f"{label}.{key}"] = float(value) * scale
        return EvalResult(evaluator=f"{self.name}:{label}", corpus=corpus, headline=headline)
