"""Task packs exported as lm-eval tasks: the data file, the YAML lm-eval loads, the scoring
rule (our evaluator's, example by example), and what cannot be exported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from adapterhub.catalog import get_catalog
from adapterhub.errors import ConfigError
from adapterhub.evaluation.lmeval_tasks import export_task, lm_eval_name


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("export")
    return d, export_task(get_catalog().task("sentiment-rt"), d, limit=5, eos="<|im_end|>")


def test_the_first_test_examples_are_written_as_adapterhub_eval_takes_them(exported) -> None:
    d, ex = exported
    rows = [json.loads(line) for line in ex.data_file.read_text(encoding="utf-8").splitlines()]
    examples = get_catalog().task("sentiment-rt").load("test")[:5]
    assert [r["prompt"] for r in rows] == [e.prompt for e in examples]
    assert [r["completion"] for r in rows] == [e.completion for e in examples]
    assert {r["evaluator"] for r in rows} == {"accuracy"}
    assert (ex.generate, ex.multiple_choice) == ("adapterhub_sentiment_rt", "adapterhub_sentiment_rt_mc")


def test_lm_eval_loads_both_tasks_from_local_files(exported) -> None:
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager, get_task_dict

    d, ex = exported
    tasks = get_task_dict([ex.generate, ex.multiple_choice], TaskManager(include_path=str(d), include_defaults=False))
    gen, mc = tasks[ex.generate], tasks[ex.multiple_choice]
    docs = list(gen.test_docs())
    assert len(docs) == 5 and gen.doc_to_text(docs[0]) == docs[0]["prompt"]
    assert gen.config.generation_kwargs["until"] == ["<|im_end|>"] and gen.config.generation_kwargs["max_gen_toks"] == 4
    assert mc.doc_to_choice(docs[0]) == ["negative", "positive"] and mc.config.target_delimiter == ""
    assert mc.doc_to_choice(docs[0])[mc.doc_to_target(docs[0])] == docs[0]["completion"]


@pytest.mark.parametrize(("answer", "label", "score"), [
    ("Positive. The reviewer loved it", "positive", 1.0), ("  negative!", "negative", 1.0),
    ("positively", "positive", 0.0), ("", "positive", 0.0),
])
def test_generations_are_scored_by_our_evaluator(exported, answer: str, label: str, score: float) -> None:
    d, _ = exported
    spec = importlib.util.spec_from_file_location("adapterhub_lmeval_utils", Path(d) / "adapterhub_lmeval_utils.py")
    assert spec is not None and spec.loader is not None
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    doc = {"references": [label], "evaluator": "accuracy"}
    assert utils.process_results(doc, [answer]) == {"acc": score}


def test_corpus_metric_tasks_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="corpus metric") as e:
        export_task(get_catalog().task("summarize-aclsum"), tmp_path, limit=2)
    assert "\n" not in str(e.value)


def test_names_are_lm_eval_identifiers() -> None:
    assert lm_eval_name("translate-sv-en") == "adapterhub_translate_sv_en"
    assert lm_eval_name("sentiment-rt", multiple_choice=True) == "adapterhub_sentiment_rt_mc"
