"""The `evaluate` bridge: offline failure is one clear line; a local metric copy works."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from adapterhub.plugins.evaluators.hf_evaluate import EvaluateBridge

from adapterhub.errors import ConfigError, EvaluationError

LOCAL_METRIC = textwrap.dedent(
    '''
    import datasets
    import evaluate


    class Mymatch(evaluate.Metric):
        def _info(self):
            return evaluate.MetricInfo(
                description="share of predictions equal to their reference",
                citation="",
                inputs_description="predictions, references: lists of strings",
                features=[
                    datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                    datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                ],
            )

        def _compute(self, predictions, references):
            hits = [p in r if isinstance(r, list) else p == r for p, r in zip(predictions, references)]
            return {"mymatch": sum(hits) / len(hits)}
    '''
)


@pytest.fixture
def modules_cache(hf_modules_cache, tmp_path):
    """A scratch directory; evaluate's module copies go to the session cache (conftest)."""
    return tmp_path


def test_offline_metric_is_one_line_with_the_fix(modules_cache, monkeypatch):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    monkeypatch.chdir(modules_cache)  # evaluate.load("meteor") also looks in ./meteor/
    with pytest.raises(EvaluationError) as exc:
        EvaluateBridge().score(["a b c"], [["a b c"]], metric="meteor")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "not available offline" in msg
    assert "meteor.py" in msg
    assert "--metric evaluate:/path/to/meteor" in msg
    assert 'evaluate.load("/path/to/meteor")' in msg
    assert not isinstance(exc.value, FileNotFoundError)


def test_local_metric_directory_works(modules_cache):
    metric_dir = modules_cache / "mymatch"
    metric_dir.mkdir()
    (metric_dir / "mymatch.py").write_text(LOCAL_METRIC)
    res = EvaluateBridge().score(["a", "b", "c", "d"], [["a"], ["x"], ["c"], ["d"]], metric=str(metric_dir))
    assert res.evaluator == "evaluate:mymatch"
    assert res.corpus == {"mymatch": 0.75}
    assert res.headline == {"mymatch": 75.0}
    res1 = EvaluateBridge().score(["a"], [["a"]], metric=str(metric_dir), scale=1)
    assert res1.headline == {"mymatch": 1.0}
    # several references per example reach the metric as lists
    multi = EvaluateBridge().score(["a", "b"], [["x", "a"], ["y"]], metric=str(metric_dir))
    assert multi.corpus == {"mymatch": 0.5}


def test_missing_local_directory_is_the_same_clear_error(tmp_path: Path, modules_cache):
    with pytest.raises(EvaluationError, match="not available offline"):
        EvaluateBridge().score(["a"], [["a"]], metric=str(tmp_path / "nope"))


def test_metric_option_required():
    with pytest.raises(ConfigError, match="evaluate:<metric>"):
        EvaluateBridge().score(["a"], [["a"]])
