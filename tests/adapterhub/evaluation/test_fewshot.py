"""Few-shot evaluation (--shots): drawn from train only, seeded, rendered as prior turns,
fitted to the context window by dropping shots, and recorded with the result."""

from __future__ import annotations

import json

import pytest
from adapterhub.plugins.tasks._common import examples_sha256

from adapterhub.cli.main import main
from adapterhub.errors import ConfigError
from adapterhub.evaluation.cache import PredictionCache
from adapterhub.evaluation.fewshot import draw_shots
from adapterhub.evaluation.generation import ModelGenerator
from adapterhub.evaluation.harness import EvalRun, evaluate_task
from adapterhub.protocols.task import Example


class SplitTask:
    """A task pack whose train and test splits are told apart by their prompts."""

    name = "split-task"
    description = "train/test split test task"
    evaluators = ("exact_match",)
    max_new_tokens = 2

    def __init__(self, n_train: int = 40, n_test: int = 4, long_test: bool = False) -> None:
        body = " word" * 20 if long_test else ""
        self.splits = {
            "train": [Example(f"train prompt {i}", f"train answer {i}") for i in range(n_train)],
            "test": [Example(f"test prompt {i}{body}", f"answer {i}") for i in range(n_test)],
        }

    def load(self, split: str) -> list[Example]:
        return list(self.splits.get(split, []))

    def data_hash(self, split: str) -> str:
        return examples_sha256(self.load(split))


class Recording(ModelGenerator):
    """The real tiny-model generator, keeping what each call was given."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.seen: dict[str, list[tuple[str, str]]] = {}
        self.texts: dict[str, str] = {}

    def __call__(self, prompts, max_new_tokens, shots=None):
        for p, s in zip(prompts, shots or [[]] * len(prompts), strict=True):
            self.seen[p] = list(s)
            self.texts[p] = self.render(p, s)
        return super().__call__(prompts, max_new_tokens, shots)


def gen(tiny, **kw):
    return Recording(tiny.model, tiny.tokenizer, batch_size=4, **kw)


def test_shots_come_only_from_train_and_are_reproducible():
    task = SplitTask()
    train, test = task.load("train"), task.load("test")
    a = draw_shots(train, test, 3, seed=0)
    assert all(len(s) == 3 for s in a)
    assert {p for s in a for p, _ in s} <= {ex.prompt for ex in train}
    assert a == draw_shots(train, test, 3, seed=0)
    assert a != draw_shots(train, test, 3, seed=1)
    # A test example's shots depend on itself and the seed, not on its neighbours.
    assert draw_shots(train, test[2:], 3, seed=0) == a[2:]
    # A train duplicate of the test prompt is never its shot.
    dup = [Example(test[0].prompt, "leak"), *train[:3]]
    assert all(p != test[0].prompt for p, _ in draw_shots(dup, test[:1], 3, seed=0)[0])


def test_too_few_train_examples_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match="only 2 train examples"):
        evaluate_task(SplitTask(n_train=2), gen(tiny), shots=3, progress=False)


@pytest.mark.parametrize(("template", "marker"), [("chat", "<|im_start|>assistant\ntrain answer"), ("alpaca", "### Response:\ntrain answer")])
def test_k_shots_reach_the_model_as_prior_turns(tiny, template, marker):
    task = SplitTask()
    g = gen(tiny, template=template)
    res = evaluate_task(task, g, shots=2, seed=7, progress=False)
    expected = draw_shots(task.load("train"), task.load("test"), 2, seed=7)
    for ex, shots in zip(task.load("test"), expected, strict=True):
        assert g.seen[ex.prompt] == shots
        assert g.texts[ex.prompt].count(marker) == 2
    assert res.shots["shots"] == 2 and res.shots["seed"] == 7 and res.shots["shots_dropped"] == 0
    zero = evaluate_task(task, gen(tiny, template=template), progress=False)
    assert zero.shots["shots"] == 0 and zero.prompt_tokens_mean < res.prompt_tokens_mean


def test_overflow_drops_shots_not_the_test_input(tiny):
    task = SplitTask(long_test=True)
    g = gen(tiny)
    full = evaluate_task(task, g, shots=4, progress=False)
    assert full.shots["shots_dropped"] == 0
    window = int(full.prompt_tokens_mean) - 20 + task.max_new_tokens
    g = gen(tiny)
    cut = evaluate_task(task, g, shots=4, context_window=window, progress=False)
    rec = cut.shots
    assert rec["shots_dropped"] > 0 and rec["min_shots"] < 4 and rec["context_window"] == window
    assert sum(4 - len(s) for s in g.seen.values()) == rec["shots_dropped"]
    for ex in task.load("test"):
        assert ex.prompt in g.texts[ex.prompt]  # the whole test input is still there
        assert len(tiny.tokenizer(g.texts[ex.prompt], add_special_tokens=False)["input_ids"]) + task.max_new_tokens <= window
    # A window too small even for the bare prompt keeps the prompt and says so.
    tiny_window = evaluate_task(task, gen(tiny), shots=2, context_window=10, progress=False)
    assert tiny_window.shots["min_shots"] == 0 and tiny_window.shots["prompts_over_window"] == 4


def test_cache_key_includes_shots_and_seed(tiny, tmp_path):
    task, cache = SplitTask(), PredictionCache(tmp_path / "c")
    key = {"base": "tiny"}

    def once(**kw):
        return evaluate_task(task, gen(tiny), progress=False, cache=cache, cache_key=key, **kw).cached

    assert not once(shots=1, seed=0)
    assert once(shots=1, seed=0)
    assert not once(shots=1, seed=1)
    assert not once(shots=2, seed=0)
    assert not once()


def test_result_and_record_carry_shots_seed_and_prompt_tokens(tiny):
    res = evaluate_task(SplitTask(), gen(tiny), shots=1, seed=3, progress=False)
    doc = res.to_dict()
    assert doc["shots"] == 1 and doc["seed"] == 3 and doc["prompt_tokens_mean"] > 0
    rec = EvalRun("tiny", "team/x@1.0.0", [res]).record()
    assert rec["shots"] == 1 and rec["seed"] == 3
    assert rec["tasks"]["split-task"]["shots_dropped"] == 0 and rec["metrics"] == {"split-task": res.headline()}


# --- the CLI ----------------------------------------------------------------------------------------
def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_eval_json_has_shots_and_prompt_tokens(capsys, home):
    argv = ["eval", "--base", "tiny-random-llama", "--tasks", "sentiment-rt", "--limit", "2", "--json"]
    rc, out, err = run(capsys, *argv, "--shots", "2", "--seed", "5")
    assert rc == 0, err
    [few] = json.loads(out)["tasks"]
    rc, out, err = run(capsys, *argv)
    [zero] = json.loads(out)["tasks"]
    assert few["shots"] == 2 and few["seed"] == 5 and zero["shots"] == 0
    assert few["prompt_tokens_mean"] > zero["prompt_tokens_mean"] > 0


def test_published_adapter_record_says_how_it_was_evaluated(capsys, home, tmp_path):
    from adapterhub.registry.client import Registry

    from adapterhub.testing.adapters import make_adapter
    from adapterhub.testing.models import tiny_llama

    model, _ = tiny_llama(seed=0)
    make_adapter("lora", model, tmp_path / "ad", config={"r": 4}, scale=0.3, task="sentiment-rt", name="sent")
    rc, out, err = run(capsys, "eval", "--adapter", str(tmp_path / "ad"), "--tasks", "sentiment-rt", "--limit", "2", "--shots", "1")
    assert rc == 0 and "few-shot metrics are not stored in the manifest" in err
    assert out.splitlines()[0].split()[:4] == ["TASK", "N", "SHOTS", "PROMPT_TOK"]
    ref = Registry(progress=False).push(tmp_path / "ad", "team/sent", "1.0.0")
    rc, out, err = run(capsys, "eval", "--adapter", ref, "--tasks", "sentiment-rt", "--limit", "2", "--shots", "1", "--seed", "4")
    assert rc == 0, err
    [rec] = [r for r in Registry(progress=False).evaluations(ref) if r.get("kind") == "eval"]
    assert rec["shots"] == 1 and rec["seed"] == 4 and rec["tasks"]["sentiment-rt"]["shots"] == 1
    # n and the interval travel with the record, so `show` and the hub never recompute them
    assert rec["intervals"]["sentiment-rt"]["accuracy"]["n"] == 2
    assert rec["intervals"]["sentiment-rt"]["accuracy"]["method"] == "wilson"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--shots", "-1"], "--shots must be 0 or more"),
        (["--context-window", "0"], "--context-window must be at least 1"),
        (["--forgetting", "--adapter", "x", "--shots", "1"], "--forgetting compares zero-shot"),
    ],
)
def test_bad_few_shot_flags_are_one_line(capsys, home, extra, needle):
    rc, out, err = run(capsys, "eval", "--base", "tiny-random-llama", "--tasks", "sentiment-rt", *extra)
    assert rc == 1 and needle in err and len(err.strip().splitlines()) == 1, err


def test_model_aware_evaluator_sees_the_few_shot_prompts(tiny):
    task = SplitTask()
    task.evaluators = ("perplexity",)
    g = gen(tiny)
    seen = []
    make = g.context
    g.context = lambda prompts, shots=None: seen.append(shots) or make(prompts, shots)  # type: ignore[method-assign]
    evaluate_task(task, g, shots=2, progress=False)
    assert seen and [len(s) for s in seen[0]] == [2] * 4
    assert seen[0] == [g.seen[ex.prompt] for ex in task.load("test")]
