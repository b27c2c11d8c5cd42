"""``adapterhub serve --ray --replicas 2`` as a real process: a local Ray on 127.0.0.1,
two engine replicas on Ray Serve, the tiny model, adapters pulled from a registry.

Everything is observed from outside, as a client and an operator would: the official
``openai`` client, ``/metrics`` (loads and resident adapters per replica, replica pids),
and the process table (no raylet or GCS left once the server is gone, even when a test
failed: the module fixture SIGTERMs, then kills, and the check runs after it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from adapterhub.registry.client import Registry
from prometheus_client.parser import text_string_to_metric_families

from adapterhub.cli.main import main
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_llama

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow

BASE = "tiny-random-llama"
PROMPT = "A wonderful, moving film."
ADAPTERS = {"team-a/lora": ("lora", {"r": 4, "alpha": 8}),
            "team-b/lora": ("lora", {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj", "o_proj"]}),
            "team-a/prefix": ("prefix-tuning", {"num_virtual_tokens": 4})}
OPS, TEAM_A = "sk-ops-0123456789", "sk-team-a-0123456789"
ENTRY = "import sys; from adapterhub.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ray-serve")
    home = root / "home"
    old = os.environ.get("ADAPTERHUB_HOME")
    os.environ["ADAPTERHUB_HOME"] = str(home)
    try:
        reg = Registry(progress=False)
        model, _ = tiny_llama(seed=0)
        for i, (name, (method, cfg)) in enumerate(ADAPTERS.items()):
            d = root / name.replace("/", "_")
            make_adapter(method, model, d, config=cfg, name=name, version="1.0.0", seed=10 + i, scale=1.5)
            reg.push(d, name, version="1.0.0")
        (root / "keys.yaml").write_text(
            f"keys:\n  - name: ops\n    key: {OPS}\n    admin: true\n"
            f"  - name: team-a\n    key: {TEAM_A}\n    adapters: ['team-a/*']\n")
        yield root
    finally:
        if old is None:
            os.environ.pop("ADAPTERHUB_HOME", None)
        else:
            os.environ["ADAPTERHUB_HOME"] = old


@pytest.fixture(scope="module")
def references(home: Path) -> dict[str | None, str]:
    """What ``adapterhub generate --raw`` answers for each adapter (and the bare base)."""
    out: dict[str | None, str] = {}
    for name in [None, *ADAPTERS]:
        argv = ["generate", "--base", BASE, "--raw", "--max-new-tokens", "8", "--json", PROMPT]
        buf = _capture(argv + (["--adapter", name] if name else []))
        out[name] = json.loads(buf.splitlines()[-1])["completion"]
    assert len(set(out.values())) == len(out), f"adapters indistinguishable: {out}"
    return out


def _capture(argv: list[str]) -> str:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(home: Path, leftover_ray: Callable[[str], list[str]]) -> Iterator[dict[str, Any]]:
    tmp = tempfile.mkdtemp(prefix="ahray", dir="/tmp")  # short: Ray's unix sockets live here
    port = _free_port()
    env = {**os.environ, "RAY_TMPDIR": tmp, "ADAPTERHUB_HOME": str(home / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", "--ray", "--replicas", "2", "--base", BASE, "--port", str(port),
         "--threads", "1", "--api-keys", str(home / "keys.yaml"), "--max-loaded-adapters", "2", "--grace", "10"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(home / "serve.log", "w"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (home / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not become healthy"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield {"url": url, "proc": proc, "log": home / "serve.log", "tmp": tmp}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        # Ray's processes share the server's fate; give them a moment to go, then insist.
        deadline = time.monotonic() + 30
        while leftover_ray(tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = leftover_ray(tmp)
        for line in left:
            with contextlib.suppress(OSError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
        assert not left, f"Ray processes left behind: {left}"
        assert proc.returncode == 0, (home / "serve.log").read_text()[-3000:]


def _client(server: dict[str, Any], key: str = OPS) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=key, max_retries=0, timeout=120)


def metrics(server: dict[str, Any]) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(server["url"] + "/metrics", headers={"authorization": f"Bearer {OPS}"}, timeout=10).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def per_replica(m: dict[str, Any], name: str) -> dict[str, float]:
    return {labels["replica"]: v for labels, v in m.get(name, [])}


def test_each_adapter_gets_its_own_greedy_output(server: dict[str, Any], references: dict) -> None:
    client = _client(server)
    for name in [None, *ADAPTERS]:
        r = client.completions.create(model=name or BASE, prompt=PROMPT, max_tokens=8, temperature=0)
        assert r.choices[0].text == references[name], name
        assert r.model == (f"{name}@1.0.0" if name else BASE)
    # Concurrent and mixed: every answer is its own adapter's.
    names = [None, *ADAPTERS] * 4
    results: dict[int, str] = {}

    def one(i: int) -> None:
        results[i] = client.completions.create(model=names[i] or BASE, prompt=PROMPT, max_tokens=8,
                                               temperature=0).choices[0].text
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [results[i] for i in range(len(names))] == [references[n] for n in names]


def test_a_stream_works_and_ends_with_done(server: dict[str, Any], references: dict) -> None:
    client = _client(server)
    chunks = list(client.completions.create(model="team-a/lora", prompt=PROMPT, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == references["team-a/lora"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert {c.model for c in chunks} == {"team-a/lora@1.0.0"}


def test_requests_for_one_adapter_stick_to_the_replicas_holding_it(server: dict[str, Any]) -> None:
    client = _client(server)
    m0 = metrics(server)
    before = per_replica(m0, "adapterhub_replica_adapter_loads_total")
    assert len(before) == 2, before
    # The concurrent mix of the first test may have put it on both replicas already (Ray
    # routes to another replica when the holder is busy): only new holders count here.
    held_before = {labels["replica"] for labels, _ in m0.get("adapterhub_replica_adapter_loaded", [])
                   if labels["adapter"] == "team-b/lora@1.0.0"}
    for _ in range(12):
        client.completions.create(model="team-b/lora", prompt=PROMPT, max_tokens=2, temperature=0)
    time.sleep(1.0)  # replicas post their figures every 0.25 s
    m = metrics(server)
    after = per_replica(m, "adapterhub_replica_adapter_loads_total")
    loads = sum(after.values()) - sum(before.values())
    # One load at most (none if a replica held it already): round-robin would load it on both.
    assert loads <= 1, (before, after)
    holders = {labels["replica"] for labels, _ in m["adapterhub_replica_adapter_loaded"]
               if labels["adapter"] == "team-b/lora@1.0.0"}
    assert holders, m["adapterhub_replica_adapter_loaded"]
    # Sequential requests stick: no replica that lacked it loads it, once one holds it.
    assert len(holders - held_before) <= (0 if held_before else 1), (held_before, holders)
    assert sum(v for _, v in m["adapterhub_ray_replicas"]) == 2


def test_admin_load_and_unload_reach_the_replicas(server: dict[str, Any]) -> None:
    auth = {"authorization": f"Bearer {OPS}"}
    r = httpx.post(server["url"] + "/v1/adapters/load", json={"model": "team-a/lora"}, headers=auth, timeout=120)
    assert r.json() == {"id": "team-a/lora@1.0.0", "loaded": True}
    time.sleep(1.0)
    held = [labels for labels, _ in metrics(server)["adapterhub_replica_adapter_loaded"]
            if labels["adapter"] == "team-a/lora@1.0.0"]
    assert held, "loaded on no replica"
    r = httpx.post(server["url"] + "/v1/adapters/unload", json={"model": "team-a/lora"}, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json() == {"unloaded": ["team-a/lora@1.0.0"]}
    deadline = time.monotonic() + 10
    while any(labels["adapter"] == "team-a/lora@1.0.0" for labels, _ in metrics(server)["adapterhub_replica_adapter_loaded"]):
        assert time.monotonic() < deadline, "a replica kept the unloaded adapter"
        time.sleep(0.25)
    team = {"authorization": f"Bearer {TEAM_A}"}
    assert httpx.post(server["url"] + "/v1/adapters/load", json={"model": "team-a/lora"}, headers=team).status_code == 403


def test_keys_and_tenants_hold_as_in_one_process(server: dict[str, Any], references: dict) -> None:
    team = _client(server, TEAM_A)
    r = team.completions.create(model="team-a/prefix", prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.choices[0].text == references["team-a/prefix"]
    with pytest.raises(openai.NotFoundError) as nf:
        team.completions.create(model="team-b/lora", prompt=PROMPT, max_tokens=8)
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        team.completions.create(model="team-a/missing", prompt=PROMPT, max_tokens=8)
    with pytest.raises(openai.AuthenticationError):
        _client(server, "sk-wrong").completions.create(model=BASE, prompt=PROMPT, max_tokens=2)
    assert httpx.get(server["url"] + "/metrics", headers={"authorization": f"Bearer {TEAM_A}"}).status_code == 403
    ids = [m.id for m in team.models.list()]
    assert BASE in ids and "team-a/lora" in ids and "team-b/lora" not in ids
    with pytest.raises(openai.BadRequestError) as bad:
        team.completions.create(model="team-a/lora", prompt=PROMPT, max_tokens=8, n=2)
    assert bad.value.body["param"] == "n"  # type: ignore[index]


def test_a_killed_replica_loses_no_request_silently_and_comes_back(server: dict[str, Any], references: dict) -> None:
    client = _client(server)
    m = metrics(server)
    pids = {labels["replica"]: int(labels["pid"]) for labels, _ in m["adapterhub_replica_running"]}
    assert len(pids) == 2
    names = list(ADAPTERS) * 6
    outcomes: dict[int, Any] = {}

    def one(i: int) -> None:
        try:
            if i % 2:  # streams: once a chunk was sent, a lost replica can only be a 503
                chunks = client.completions.create(model=names[i], prompt=PROMPT, max_tokens=400, temperature=0,
                                                   stream=True)
                outcomes[i] = "".join(c.choices[0].text for c in chunks if c.choices)
            else:
                r = client.completions.create(model=names[i], prompt=PROMPT, max_tokens=400, temperature=0)
                outcomes[i] = r.choices[0].text
        except (openai.APIStatusError, openai.APIError) as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    # The victim: the busiest replica (adapters stick to their replicas, so one may be idle).
    deadline = time.monotonic() + 30
    while not any((running := per_replica(metrics(server), "adapterhub_replica_running")).values()):
        assert time.monotonic() < deadline, "no replica ever ran a request"
        time.sleep(0.1)
    victim_id = max(running, key=lambda r: running[r])
    victim = pids[victim_id]
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert len(outcomes) == len(names)
    failed = 0
    for i, out in outcomes.items():
        if isinstance(out, openai.APIStatusError):
            failed += 1
            assert out.status_code == 503 and out.body["code"] == "replica_unavailable", out  # type: ignore[index]
        elif isinstance(out, openai.APIError):  # a stream cut after its first chunk: the error event
            failed += 1
            assert "replica" in str(out.message), out
        else:  # never another adapter's answer: the long greedy text starts with the 8-token one
            assert out.startswith(references[names[i]]), (names[i], out)
    retried = sum(v for _, v in metrics(server)["adapterhub_ray_retries_total"])
    assert failed + retried >= 1, "the kill hit no request: the test proved nothing"
    # Ray replaces the replica: two replicas report again, the dead one is gone.
    deadline = time.monotonic() + 90
    while True:
        now = per_replica(metrics(server), "adapterhub_replica_running")
        if len(now) == 2 and victim_id not in now:
            break
        assert time.monotonic() < deadline, f"replica not replaced: {now}"
        time.sleep(1)
    r = client.completions.create(model="team-a/lora", prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.choices[0].text == references["team-a/lora"]
    print(f"killed replica {victim}: {failed} of {len(names)} requests failed cleanly, {retried:g} re-sent, "
          "the rest correct")
