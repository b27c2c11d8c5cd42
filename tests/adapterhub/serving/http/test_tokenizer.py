"""vLLM's tokenizer routes (``/tokenize``, ``/detokenize``, ``/tokenizer_info``) on the
tiny model, over a real server. Counts are checked against what the completion routes
report as ``usage.prompt_tokens``: the point of the routes is that they agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapterhub.host import AdapterHost
from adapterhub.serving import Engine, EngineConfig
from adapterhub.serving.http.app import create_app
from adapterhub.serving.http.inprocess import serve_in_process
from adapterhub.serving.http.keys import KeyRing, KeySpec
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_loaded

BASE = "tiny-random-llama"
OPS, TEAM = "sk-ops-0123456789", "sk-team-0123456789"
MESSAGES = [{"role": "user", "content": "Is this review positive? A wonderful, moving film."}]



@pytest.fixture(scope="module")
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter recorded as trained with ``chat-short`` (served with an empty system turn)."""
    d = tmp_path_factory.mktemp("tok-adapters") / "short"
    make_adapter("lora", tiny_loaded().model, d, config={"r": 2, "alpha": 4}, name="t/short", version="1.0.0")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest.setdefault("provenance", {}).setdefault("hyperparameters", {})["template"] = "chat-short"
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.fixture(scope="module")
def url(short_dir: Path) -> Iterator[str]:
    host = AdapterHost(tiny_loaded())
    host.load(short_dir, name="short")
    keys = KeyRing([KeySpec(name="ops", key=OPS, admin=True), KeySpec(name="team", key=TEAM, adapters=["other"])])
    with Engine(host, EngineConfig(max_running=4)) as eng, serve_in_process(create_app(eng, base_alias=BASE, keys=keys)) as u:
        yield u


def _post(url: str, path: str, body: dict[str, Any], key: str = OPS) -> httpx.Response:
    return httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _chat_prompt_tokens(url: str, model: str) -> int:
    r = _post(url, "/v1/chat/completions", {"model": model, "messages": MESSAGES, "max_tokens": 1, "temperature": 0})
    assert r.status_code == 200, r.text
    return int(r.json()["usage"]["prompt_tokens"])


@pytest.mark.parametrize("model", [BASE, "short"])
def test_messages_count_is_what_chat_completions_feeds_the_model(url: str, model: str) -> None:
    r = _post(url, "/tokenize", {"model": model, "messages": MESSAGES})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) == _chat_prompt_tokens(url, model)
    assert body["max_model_len"] > body["count"]


def test_an_adapter_s_training_template_changes_the_tokens(url: str) -> None:
    base = _post(url, "/tokenize", {"model": BASE, "messages": MESSAGES}).json()
    short = _post(url, "/tokenize", {"model": "short", "messages": MESSAGES}).json()
    text = _post(url, "/detokenize", {"tokens": short["tokens"]}).json()["prompt"]
    assert text.startswith("<|im_start|>system\n<|im_end|>")  # chat-short's empty system turn
    assert short["tokens"] != base["tokens"]


def test_prompt_round_trips_and_matches_completions(url: str) -> None:
    prompt = "A wonderful, moving film. <|im_end|> ünïcödé"
    r = _post(url, "/tokenize", {"prompt": prompt, "add_special_tokens": False, "return_token_strs": True})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert len(r.json()["token_strs"]) == len(tokens)
    assert _post(url, "/detokenize", {"tokens": tokens}).json() == {"prompt": prompt}
    c = _post(url, "/v1/completions", {"model": BASE, "prompt": prompt, "max_tokens": 1, "temperature": 0})
    assert c.json()["usage"]["prompt_tokens"] == len(tokens)


def test_tokenizer_info_has_what_lm_eval_reads(url: str) -> None:
    r = httpx.get(url + "/tokenizer_info", headers={"Authorization": f"Bearer {TEAM}"}, timeout=30)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["eos_token"] == "<|im_end|>" and "bos_token" in info and "pad_token" in info
    assert "<|im_start|>" in info["chat_template"]
    assert isinstance(info["model_max_length"], int) and info["model_max_length"] > 0
    eos_id = _post(url, "/tokenize", {"prompt": info["eos_token"]}).json()["tokens"]
    assert len(eos_id) == 1  # lm-eval takes encode(eos_token)[0] as the EOS id


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": MESSAGES, "chat_template": "{{ messages }}"}, "chat_template"),
    ({"messages": MESSAGES, "add_generation_prompt": False}, "add_generation_prompt"),
    ({"messages": MESSAGES, "continue_final_message": True}, "continue_final_message"),
    ({"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": "a", "messages": MESSAGES}, "prompt"),
    ({"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens"),
    ({"messages": "hello"}, "messages"),
])
def test_unsupported_or_bad_fields_are_a_400_naming_them(url: str, body: dict[str, Any], param: str) -> None:
    r = _post(url, "/tokenize", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("tokens", [[1, -1], [10**9], "abc", [1.5], [True]])
def test_detokenize_rejects_what_is_not_token_ids(url: str, tokens: Any) -> None:
    r = _post(url, "/detokenize", {"tokens": tokens})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens", r.text


def test_same_keys_as_every_route(url: str) -> None:
    assert httpx.post(url + "/tokenize", json={"prompt": "x"}, timeout=30).status_code == 401
    assert httpx.get(url + "/tokenizer_info", timeout=30).status_code == 401
    # A key limited to other adapters may not tokenize for this one: 404, as for completions.
    r = _post(url, "/tokenize", {"model": "short", "prompt": "x"}, key=TEAM)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert _post(url, "/tokenize", {"model": "nope/missing", "prompt": "x"}).status_code == 404
    assert _post(url, "/tokenize", {"prompt": "x"}, key=TEAM).status_code == 200


class _RemoteOnly:
    """An engine like ``serve --ray``'s: no tokenizer or adapter pool in this process."""

    class host:  # noqa: N801 - a namespace standing in for HostView
        class base:  # noqa: N801
            name = BASE

        @staticmethod
        def adapters() -> list[dict[str, Any]]:
            return []

        @staticmethod
        def loaded() -> list[str]:
            return []

    healthy = True

    def start(self) -> _RemoteOnly:
        return self

    def stats(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/tokenize", {"prompt": "x"}), ("POST", "/detokenize", {"tokens": [1]}), ("GET", "/tokenizer_info", None),
    ("POST", "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "team/a"}),
])
def test_without_a_local_tokenizer_the_routes_say_so(method: str, path: str, body: Any) -> None:
    app = create_app(_RemoteOnly(), base_alias=BASE)  # type: ignore[arg-type]
    with serve_in_process(app) as u:
        r = httpx.request(method, u + path, json=body, timeout=30)
    assert r.status_code == 501 and "serve --ray" in r.json()["error"]["message"], r.text
