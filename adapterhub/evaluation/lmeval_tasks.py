"""Our task packs as lm-evaluation-harness tasks: local YAML over a local JSON file.

lm-eval reads tasks from YAML (``--include_path DIR``); a task whose ``dataset_path`` is
``json`` with ``dataset_kwargs.data_files`` reads a local file, so nothing is downloaded.
:func:`export_task` writes, for one task pack, its test examples (the first ``limit``,
the same ones ``adapterhub eval --limit`` takes) to ``<name>.jsonl`` and one or two tasks:

* ``adapterhub_<pack>`` (``generate_until``): greedy generation, at most the pack's
  ``max_new_tokens``, stopped at the base's end-of-turn token only (a ``\\n\\n`` stop, lm-eval's
  default, would cut answers that ``adapterhub eval`` scores whole), scored per example by
  the pack's own evaluator (``accuracy``: first word after normalisation; ``exact_match``)
  from ``adapterhub_lmeval_utils.py`` beside the YAML: the same code, so the same rule.
* ``adapterhub_<pack>_mc`` (``multiple_choice``, label tasks only): the label set as the
  choices, ``target_delimiter: ""`` because the completion follows the assistant header
  directly, as in training (lm-eval's default would score ``" positive"``). Needs prompt
  logprobs (``echo``) from the server.

The prompt is the bare user text (``doc_to_text: "{{prompt}}"``): the chat template is
applied on the way (``--apply_chat_template``; see :mod:`.lmeval`), never baked in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import ConfigError

if TYPE_CHECKING:
    from adapterhub.protocols.task import TaskPack

PREFIX = "adapterhub_"
MC_SUFFIX = "_mc"
PER_EXAMPLE = ("accuracy", "exact_match")
"""Evaluators scored example by example (lm-eval averages them); corpus metrics (rouge,
bleu) are not exported."""
MAX_CHOICES = 10
"""A task with more distinct answers than this is not a label task."""

UTILS = '''"""Written by adapterhub (adapterhub.evaluation.lmeval_tasks): lm-eval scores each
generation with adapterhub's own evaluator, so the rule is the one `adapterhub eval` uses."""

from adapterhub.evaluation.scoring import resolve_evaluator


def process_results(doc, results):
    evaluator, options = resolve_evaluator(doc["evaluator"])
    row = evaluator.score_example(results[0], doc["references"], evaluator.parse(options))
    return {"acc": 1.0 if row["correct"] else 0.0}
'''


@dataclass(frozen=True)
class Exported:
    """What :func:`export_task` wrote: lm-eval task names by kind, and the data file."""

    pack: str
    generate: str
    multiple_choice: str | None
    data_file: Path
    examples: int


def lm_eval_name(pack: str, multiple_choice: bool = False) -> str:
    """``sentiment-rt`` → ``adapterhub_sentiment_rt`` (lm-eval task names are identifiers)."""
    return PREFIX + re.sub(r"[^0-9A-Za-z]+", "_", pack).strip("_").lower() + (MC_SUFFIX if multiple_choice else "")


def _yaml(fields: dict[str, Any]) -> str:
    # JSON is YAML: every value quoted exactly, no YAML library needed for a flat config.
    lines = [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in fields.items() if not k.startswith("!")]
    lines += [f"{k[1:]}: {v}" for k, v in fields.items() if k.startswith("!")]  # YAML tags (!function)
    return "\n".join(lines) + "\n"


def check_exportable(pack: TaskPack) -> str:
    """The evaluator ``pack`` is exported with, or a one-line ConfigError (before any
    model is loaded)."""
    evaluator = pack.evaluators[0] if pack.evaluators else ""
    if evaluator not in PER_EXAMPLE:
        raise ConfigError(f"task {pack.name!r} is scored by {evaluator!r}, a corpus metric; --lm-eval exports "
                          f"tasks scored by {' or '.join(PER_EXAMPLE)} (pass lm-eval's own task names for others)")
    return evaluator


def export_task(pack: TaskPack, directory: Path, *, limit: int | None = None, eos: str | None = None) -> Exported:
    """Write ``pack``'s test examples and its lm-eval task YAML(s) into ``directory``."""
    from adapterhub.evaluation.harness import select_examples

    evaluator = check_exportable(pack)
    examples = select_examples(pack, "test", limit)
    directory.mkdir(parents=True, exist_ok=True)
    name = lm_eval_name(pack.name)
    data = directory / f"{name}.jsonl"
    labels = sorted({ex.completion for ex in examples} | {r for ex in examples for r in ex.references})
    rows = [{"prompt": ex.prompt, "completion": ex.completion, "references": list(ex.refs()), "evaluator": evaluator,
             "label": labels.index(ex.completion)} for ex in examples]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (directory / "adapterhub_lmeval_utils.py").write_text(UTILS, encoding="utf-8")
    common = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
    }
    gen = {
        "task": name, **common,
        "output_type": "generate_until",
        "doc_to_target": "{{completion}}",
        "generation_kwargs": {"until": [eos] if eos else [], "max_gen_toks": pack.max_new_tokens,
                              "do_sample": False, "temperature": 0},
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1, "adapterhub_task": pack.name, "evaluator": evaluator},
        "!process_results": "!function adapterhub_lmeval_utils.process_results",
    }
    (directory / f"{name}.yaml").write_text(_yaml(gen), encoding="utf-8")
    mc_name = None
    if evaluator == "accuracy" and 2 <= len(labels) <= MAX_CHOICES:
        mc_name = lm_eval_name(pack.name, multiple_choice=True)
        mc = {
            "task": mc_name, **common,
            "output_type": "multiple_choice",
            "doc_to_target": "{{label}}",
            "doc_to_choice": labels,
            "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1, "adapterhub_task": pack.name},
        }
        (directory / f"{mc_name}.yaml").write_text(_yaml(mc), encoding="utf-8")
    return Exported(pack.name, name, mc_name, data, len(examples))
