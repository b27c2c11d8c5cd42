"""``adapterhub serve`` as a real process: bad options fail before the base loads; SIGTERM drains."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from adapterhub.cli.main import main
from adapterhub.testing.procs import ServerDied, wait_healthy

ENTRY = "import sys; from adapterhub.cli.main import main; sys.exit(main(sys.argv[1:]))"


def test_a_malformed_keys_file_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "keys.yaml"
    f.write_text("keys:\n  - name: a\n    key: sk-secret-value\n    adapters: 3\n")
    assert main(["serve", "--base", "tiny-random-llama", "--api-keys", str(f)]) != 0
    err = capsys.readouterr().err
    assert "keys.0.adapters" in err and "sk-secret-value" not in err
    assert main(["serve", "--max-queue", "0"]) != 0
    assert "--max-queue" in capsys.readouterr().err


@pytest.mark.parametrize(("entry", "needle"), [
    ("key: sk-secret-value\n    key_sha256: " + "a" * 64, "keys.0: give exactly one of key or key_sha256"),
    ("adapters: ['team/*']", "keys.0: give exactly one of key or key_sha256"),
    ("key: sk-secret-value\n    adapters: ['team/*', '']", "keys.0.adapters: patterns must not be empty"),
])
def test_keys_file_entries_are_checked_like_the_hubs_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, needle: str,
) -> None:
    f = tmp_path / "keys.yaml"
    f.write_text(f"keys:\n  - name: a\n    {entry}\n")
    assert main(["serve", "--base", "tiny-random-llama", "--api-keys", str(f)]) != 0
    err = capsys.readouterr().err
    assert needle in err and "sk-secret-value" not in err and err.count("\n") == 1, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(300)
def test_sigterm_lets_running_requests_finish_then_exits_0(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ADAPTERHUB_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", "--base", "tiny-random-llama", "--port", str(port), "--grace", "120",
         "--threads", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        try:
            wait_healthy(url, proc)
        except ServerDied:
            raise AssertionError(proc.communicate()[1]) from None
        streams: list[list[str]] = [[] for _ in range(2)]
        started = [threading.Event() for _ in streams]

        def consume(i: int) -> None:
            # Seeded so both answers run to max_tokens: unseeded, the tiny model often samples
            # EOS within a few dozen tokens and a stream could end before SIGTERM.
            body = {"model": "tiny-random-llama", "prompt": f"Hello {i}", "max_tokens": 480, "stream": True, "seed": 50}
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
                for ln in r.iter_lines():
                    if ln:
                        streams[i].append(ln)
                        started[i].set()

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(streams))]
        for t in threads:
            t.start()
        assert all(e.wait(60) for e in started)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(200)
        code = proc.wait(200)
        err = proc.stderr.read() if proc.stderr else ""
        assert code == 0, err
        assert "Waiting for connections to close" in err  # streams were still running
        for lines in streams:  # every running request finished normally
            assert lines[-1] == "data: [DONE]"
            final = json.loads(lines[-2][6:])
            assert final["choices"][0]["finish_reason"] in ("length", "stop")
            assert final["usage"]["completion_tokens"] >= 1
        with pytest.raises(httpx.TransportError):  # nothing listens any more
            httpx.get(url + "/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.timeout(300)
def test_sigterm_exits_0_within_grace_while_requests_wait_on_a_hung_registry(tmp_path: Path) -> None:
    """8 requests wait on one cold adapter whose registry accepts the connection and never
    answers (read timeout 120 s): SIGTERM still ends the process with 0 within --grace
    plus the bounded loader shutdown, and every client gets an answer or a closed stream."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def swallow() -> None:  # accepts and holds every connection, never reads or answers
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(hole.accept()[0])
            except OSError:
                continue

    threading.Thread(target=swallow, daemon=True).start()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ADAPTERHUB_HOME": str(tmp_path / "home"), "ADAPTERHUB_HTTP_MAX_ATTEMPTS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", "--base", "tiny-random-llama", "--port", str(port), "--grace", "2",
         "--threads", "1", "--registry", f"http://127.0.0.1:{hole.getsockname()[1]}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    statuses: list[int | str] = []
    try:
        try:
            wait_healthy(url, proc)
        except ServerDied:
            raise AssertionError(proc.communicate()[1]) from None

        def ask() -> None:
            try:
                r = httpx.post(url + "/v1/completions", json={"model": "team/cold", "prompt": "x", "max_tokens": 2},
                               timeout=60)
                statuses.append(r.status_code)
            except httpx.TransportError as exc:
                statuses.append(type(exc).__name__)

        clients = [threading.Thread(target=ask) for _ in range(8)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 30
        while not held:  # the loader reached the registry: the requests now wait on it
            assert time.monotonic() < deadline, "the loader never connected to the registry"
            time.sleep(0.05)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        took = time.monotonic() - t0
        for t in clients:
            t.join(30)
        err = proc.stderr.read() if proc.stderr else ""
        assert code == 0, err
        assert took < 2 + 10, f"exit took {took:.1f} s"  # grace 2 s + the loaders' bounded close
        assert len(statuses) == 8  # every client got an answer or a closed connection, none hangs
        # Cut short by the shutdown: "shutting down" (503), never a bare 500 from uvicorn.
        assert statuses == [503] * 8, (statuses, err[-3000:])
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for s in held:
            s.close()
        hole.close()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
