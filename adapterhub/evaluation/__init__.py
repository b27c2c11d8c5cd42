"""Evaluation: scoring, batched greedy generation, the task harness, forgetting reports.

Python API (see ``docs/evaluation.md``)::

    from adapterhub.evaluation import score_texts, run_eval, run_forgetting

    score_texts("rouge", predictions, references).corpus      # rouge-score's numbers
    run_eval("smollm2-135m-instruct", ["sentiment-rt"], limit=50)
    run_forgetting(None, "path/to/adapter")                   # -> ForgettingReport

Import-light on purpose: ``adapterhub score`` must not pay for torch. Everything is
loaded on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # scoring without a model
    "resolve_evaluator": "adapterhub.evaluation.scoring",
    "score_texts": "adapterhub.evaluation.scoring",
    "score_files": "adapterhub.evaluation.scoring",
    "read_predictions": "adapterhub.evaluation.scoring",
    "read_references": "adapterhub.evaluation.scoring",
    # generation and the harness
    "Generator": "adapterhub.evaluation.generation",
    "ModelGenerator": "adapterhub.evaluation.generation",
    "HostGenerator": "adapterhub.evaluation.generation",
    "evaluate_task": "adapterhub.evaluation.harness",
    "run_eval": "adapterhub.evaluation.harness",
    "TaskEvaluation": "adapterhub.evaluation.harness",
    "EvalRun": "adapterhub.evaluation.harness",
    "resolve_adapter": "adapterhub.evaluation.loading",
    "EvalModels": "adapterhub.evaluation.loading",
    # confidence intervals (numpy only)
    "wilson": "adapterhub.evaluation.intervals",
    "bootstrap_ci": "adapterhub.evaluation.intervals",
    "interval": "adapterhub.evaluation.intervals",
    "paired_interval": "adapterhub.evaluation.intervals",
    "Statistic": "adapterhub.evaluation.intervals",
    "Interval": "adapterhub.evaluation.intervals",
    # forgetting, cache, reports
    "run_forgetting": "adapterhub.evaluation.forgetting",
    "run_forgetting_detailed": "adapterhub.evaluation.forgetting",
    "save_forgetting": "adapterhub.evaluation.forgetting",
    "ForgettingRun": "adapterhub.evaluation.forgetting",
    "PredictionCache": "adapterhub.evaluation.cache",
    "write_forgetting_report": "adapterhub.evaluation.report",
    "write_eval_report": "adapterhub.evaluation.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapterhub.evaluation' has no attribute {name!r}")


__all__ = sorted(_LAZY)
