"""vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` on the tiny model, over
a real server: vLLM's statuses and bodies, and the loaded adapter really answering under
its ``lora_name``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from adapterhub.registry.client import Registry

from adapterhub.host import AdapterHost
from adapterhub.serving import Engine, EngineConfig
from adapterhub.serving.http.app import create_app
from adapterhub.serving.http.inprocess import serve_in_process
from adapterhub.serving.http.keys import KeyRing, KeySpec
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_loaded

BASE = "tiny-random-llama"
OPS, TEAM = "sk-ops-0123456789", "sk-team-0123456789"
PROMPT = "A wonderful, moving film."



@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vllm-adapters") / "lora"
    make_adapter("lora", tiny_loaded().model, d, config={"r": 4, "alpha": 8}, name="t/lora", version="1.0.0", seed=3, scale=1.5)
    return d


@pytest.fixture
def server(lora_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Engine]]:
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    Registry(progress=False).push(lora_dir, "team/a", version="1.0.0")
    host = AdapterHost(tiny_loaded())
    host.load(lora_dir, name="direct")  # the reference output of these weights
    keys = KeyRing([KeySpec(name="ops", key=OPS, admin=True), KeySpec(name="team", key=TEAM)])
    with Engine(host, EngineConfig(max_running=4)) as eng, serve_in_process(create_app(eng, base_alias=BASE, keys=keys)) as u:
        yield u, eng


def _post(url: str, path: str, body: dict[str, Any], key: str | None = OPS) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + path, json=body, headers=headers, timeout=60)


def _text(url: str, model: str) -> str:
    r = _post(url, "/v1/completions", {"model": model, "prompt": PROMPT, "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


@pytest.mark.parametrize("path_kind", ["directory", "registry ref"])
def test_load_serve_unload_as_vllm_answers(server: tuple[str, Engine], lora_dir: Path, path_kind: str) -> None:
    url, eng = server
    expected = _text(url, "direct")
    assert expected != _text(url, BASE)  # so serving the adapter is visible in the output
    path = str(lora_dir) if path_kind == "directory" else "team/a@1.0.0"
    r = _post(url, "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": path})
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'sql' added successfully."
    assert r.headers["content-type"].startswith("text/plain")
    assert _text(url, "sql") == expected
    again = _post(url, "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": path})
    assert again.status_code == 400
    assert again.json()["error"] | {"request_id": None} == {
        "message": "The lora adapter 'sql' has already been loaded.", "type": "InvalidUserInput",
        "param": "lora_name", "code": 400, "request_id": None}
    un = _post(url, "/v1/unload_lora_adapter", {"lora_name": "sql"})
    assert un.status_code == 200 and un.text == "Success: LoRA adapter 'sql' removed successfully."
    assert "sql" not in eng.host.loaded()
    gone = _post(url, "/v1/unload_lora_adapter", {"lora_name": "sql"})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "NotFoundError"
    assert gone.json()["error"]["message"] == "The lora adapter 'sql' cannot be found."


@pytest.mark.parametrize(("route", "body", "status", "param"), [
    ("load", {"lora_name": "x"}, 400, "lora_path"),
    ("load", {"lora_path": "team/a"}, 400, "lora_name"),
    ("load", {"lora_name": BASE, "lora_path": "team/a"}, 400, "lora_name"),
    ("load", {"lora_name": "x", "lora_path": "team/missing@1.0.0"}, 404, "lora_path"),
    ("unload", {}, 400, "lora_name"),
    ("unload", {"lora_name": "never-loaded"}, 404, "lora_name"),
])
def test_bad_requests_get_vllm_statuses(server: tuple[str, Engine], route: str, body: dict[str, Any],
                                        status: int, param: str) -> None:
    r = _post(server[0], f"/v1/{route}_lora_adapter", body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["param"] == param and err["type"][0].isupper()


def test_a_corrupted_adapter_is_a_400_and_loads_nothing(server: tuple[str, Engine], lora_dir: Path, tmp_path: Path) -> None:
    url, eng = server
    bad = tmp_path / "bad"
    shutil.copytree(lora_dir, bad)
    blob = bad / "adapter.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = _post(url, "/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": str(bad)})
    assert r.status_code == 400, r.text
    assert "bad" not in eng.host.loaded()


def test_admin_keys_only(server: tuple[str, Engine], lora_dir: Path) -> None:
    url, eng = server
    body = {"lora_name": "sql", "lora_path": str(lora_dir)}
    assert _post(url, "/v1/load_lora_adapter", body, key=None).status_code == 401
    r = _post(url, "/v1/load_lora_adapter", body, key=TEAM)
    assert r.status_code == 403 and r.json()["error"]["code"] == 403
    assert _post(url, "/v1/unload_lora_adapter", {"lora_name": "direct"}, key=TEAM).status_code == 403
    assert "sql" not in eng.host.loaded() and "direct" in eng.host.loaded()
