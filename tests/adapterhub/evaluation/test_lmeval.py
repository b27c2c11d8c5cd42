"""The real lm-evaluation-harness (0.4.13) against a live ``adapterhub serve`` app on the
tiny model, over our ``sentiment-rt`` pack exported as local YAML + JSON.

Every run compares lm-eval's per-example generations with a reference computed without
HTTP: ``adapterhub eval``'s own predictions when the chat template is applied (the
default of ``eval --lm-eval``), the host's raw greedy completions otherwise. The adapter
is made with a large scale so its answers differ from the base's (checked first).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapterhub.catalog import get_catalog
from adapterhub.evaluation.harness import run_eval
from adapterhub.evaluation.lmeval_tasks import export_task
from adapterhub.host import AdapterHost
from adapterhub.serving import Engine, EngineConfig
from adapterhub.serving.http.app import create_app
from adapterhub.serving.http.inprocess import serve_in_process
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_loaded

lm_eval = pytest.importorskip("lm_eval")

BASE = "tiny-random-llama"
ADAPTER = "t/lora"
N = 12



@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lmeval-adapter") / "lora"
    make_adapter("lora", tiny_loaded().model, d, config={"r": 4, "alpha": 8}, name=ADAPTER, version="1.0.0", seed=5, scale=1.5)
    return d


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("lmeval-tasks")
    exported = export_task(get_catalog().task("sentiment-rt"), d, limit=N, eos="<|im_end|>")
    assert exported.examples == N
    return d, exported.generate


@pytest.fixture(scope="module")
def server(adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AdapterHost, Path]]:
    host = AdapterHost(tiny_loaded())
    host.load(adapter_dir, name=ADAPTER)
    tok_dir = tmp_path_factory.mktemp("tokenizer")
    host.tokenizer.save_pretrained(tok_dir)  # lm-eval's huggingface backend reads it from disk
    with Engine(host, EngineConfig(max_running=4)) as eng, serve_in_process(create_app(eng, base_alias=BASE)) as url:
        yield url, host, tok_dir


@pytest.fixture(scope="module")
def ours(adapter_dir: Path) -> dict[str, tuple[list[str], float]]:
    """``adapterhub eval``'s predictions and accuracy (0-1) for the base and the adapter."""
    out = {}
    for model, adapter in ((BASE, None), (ADAPTER, adapter_dir)):
        run = run_eval(tiny_loaded(), ["sentiment-rt"], adapter=adapter, limit=N, cache=False, progress=False)
        t = run.tasks[0]
        out[model] = (t.predictions, t.headline()["accuracy"] / 100.0)
    assert out[BASE][0] != out[ADAPTER][0]  # the adapter's answers are visibly its own
    return out


def _evaluate(lm: Any, tasks: tuple[Path, str], chat: bool) -> tuple[list[str], float]:
    from lm_eval.tasks import TaskManager

    directory, name = tasks
    # include_defaults=False: indexing lm-eval's thousands of built-in task files takes 20 s.
    manager = TaskManager(include_path=str(directory), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager,
                                  apply_chat_template=chat, log_samples=True)
    samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    assert len(samples) == N
    return [s["filtered_resps"][0] for s in samples], float(res["results"][name]["acc,none"])


@pytest.mark.parametrize("model", [BASE, ADAPTER])
def test_chat_completions_with_the_chat_template_scores_what_adapterhub_eval_scores(
    server: tuple[str, AdapterHost, Path], tasks: tuple[Path, str], ours: dict[str, tuple[list[str], float]], model: str,
) -> None:
    from lm_eval.models.openai_completions import LocalChatCompletion

    url = server[0]
    lm = LocalChatCompletion(base_url=url + "/v1/chat/completions", model=model, eos_string="<|im_end|>", max_retries=1)
    predictions, acc = _evaluate(lm, tasks, chat=True)
    expected, expected_acc = ours[model]
    assert [p.strip() for p in predictions] == [e.strip() for e in expected]
    assert acc == pytest.approx(expected_acc)


@pytest.mark.parametrize(("backend", "tokenized"), [("huggingface", False), ("auto", False), ("auto", True)])
@pytest.mark.parametrize("model", [BASE, ADAPTER])
def test_completions_without_a_template_reach_the_model_unchanged(
    server: tuple[str, AdapterHost, Path], tasks: tuple[Path, str], backend: str, tokenized: bool, model: str,
) -> None:
    """No chat template (lm-eval 0.4.13 cannot apply one with text prompts or the remote
    tokenizer): the prompt as text, or as ids from ``/tokenize``, reaches the model as is;
    ``auto`` finds our tokenizer routes and uses them."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    url, host, tok_dir = server
    args: dict[str, Any] = {"tokenizer": str(tok_dir)} if backend == "huggingface" else {}
    lm = LocalCompletionsAPI(base_url=url + "/v1/completions", model=model, tokenizer_backend=backend,
                             tokenized_requests=tokenized, max_retries=1, **args)
    if backend == "auto":
        assert lm.tokenizer_backend == "remote" and type(lm.tokenizer).__name__ == "RemoteTokenizer"
        assert lm.eos_string == "<|im_end|>" and lm.eot_token_id == host.tokenizer.eos_token_id
    predictions, _ = _evaluate(lm, tasks, chat=False)
    prompts = [ex.prompt for ex in get_catalog().task("sentiment-rt").load("test")[:N]]
    expected = host.generate(prompts, None if model == BASE else model, max_new_tokens=4, raw=True, batch_size=1)
    assert predictions == [g.completion for g in expected]


@pytest.mark.parametrize("model", [BASE, ADAPTER])
def test_completions_with_token_ids_and_the_chat_template_score_what_adapterhub_eval_scores(
    server: tuple[str, AdapterHost, Path], tasks: tuple[Path, str], ours: dict[str, tuple[list[str], float]], model: str,
) -> None:
    """``tokenized_requests=True`` + ``--apply_chat_template`` on the base's tokenizer: the
    one completions setup of lm-eval 0.4.13 that renders the template (as token ids)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    url, _, tok_dir = server
    lm = LocalCompletionsAPI(base_url=url + "/v1/completions", model=model, tokenizer_backend="huggingface",
                             tokenizer=str(tok_dir), tokenized_requests=True, max_retries=1)
    predictions, acc = _evaluate(lm, tasks, chat=True)
    expected, expected_acc = ours[model]
    assert [p.strip() for p in predictions] == [e.strip() for e in expected]
    assert acc == pytest.approx(expected_acc)


# --- loglikelihood (multiple_choice): prompt logprobs through echo ----------------------------------
def _reference_loglikelihoods(host: AdapterHost, adapter: str | None, contexts: list[str], choices: list[str]) -> list[list[float]]:
    """Per context, each choice's summed log-probability, split as lm-eval splits it
    (trailing whitespace of the context moves to the continuation), from the host's own
    prefill logits: no engine, no HTTP."""
    import torch

    tok = host.tokenizer
    out = []
    for ctx in contexts:
        row = []
        for choice in choices:
            n_space = len(ctx) - len(ctx.rstrip())
            context, continuation = (ctx[:-n_space], ctx[-n_space:] + choice) if n_space else (ctx, choice)
            whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
            n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
            logits = host.logits([context + continuation], adapter, raw=True)[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            row.append(float(sum(logp[i - 1, whole[i]] for i in range(n_ctx, len(whole)))))
        out.append(row)
    return out


MC_CASES = [  # (tokenizer_backend, tokenized_requests, apply_chat_template)
    ("huggingface", True, True),
    ("huggingface", False, False),  # ids decoded back to text by the local tokenizer
    ("auto", True, False),  # auto -> remote: /tokenize
    ("auto", False, False),  # auto -> remote: /tokenize, then /detokenize for the text
]


@pytest.mark.parametrize(("backend", "tokenized", "chat"), MC_CASES)
@pytest.mark.parametrize("model", [BASE, ADAPTER])
def test_multiple_choice_loglikelihoods_are_the_model_s(
    server: tuple[str, AdapterHost, Path], tasks: tuple[Path, str], model: str, backend: str, tokenized: bool, chat: bool,
) -> None:
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from lm_eval.tasks import TaskManager

    from adapterhub.prompting import format_prompt

    url, host, tok_dir = server
    directory, gen_name = tasks
    name = gen_name + "_mc"
    args: dict[str, Any] = {"tokenizer": str(tok_dir)} if backend == "huggingface" else {}
    lm = LocalCompletionsAPI(base_url=url + "/v1/completions", model=model, tokenizer_backend=backend,
                             tokenized_requests=tokenized, max_retries=1, **args)
    manager = TaskManager(include_path=str(directory), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, apply_chat_template=chat, log_samples=True)
    samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    got = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    examples = get_catalog().task("sentiment-rt").load("test")[:N]
    contexts = [format_prompt(host.tokenizer, e.prompt) if chat else e.prompt for e in examples]
    expected = _reference_loglikelihoods(host, None if model == BASE else model, contexts, ["negative", "positive"])
    assert [x for row in got for x in row] == pytest.approx([x for row in expected for x in row], abs=2e-3)
    labels = [["negative", "positive"].index(e.completion) for e in examples]
    acc = sum(max(range(2), key=lambda j, r=r: r[j]) == y for r, y in zip(expected, labels, strict=True)) / N
    assert float(res["results"][name]["acc,none"]) == pytest.approx(acc)
