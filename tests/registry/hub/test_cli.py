"""``adapterhub hub`` as a real process: serves a store, sees new pushes, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapterhub.cli.main import main
from adapterhub.testing.hub import SAMPLES, publish_samples

ENTRY = "import sys; from adapterhub.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_options_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hub", "--port", "0"]) != 0
    assert "--port" in capsys.readouterr().err
    assert main(["hub", "--max-upload", "0"]) != 0
    assert "invalid --max-upload" in capsys.readouterr().err
    assert main(["hub", "--forwarded-allow-ips", "10.0.0.1,proxy.example"]) != 0
    err = capsys.readouterr().err.strip()
    assert "invalid --forwarded-allow-ips entry 'proxy.example'" in err and len(err.splitlines()) == 1
    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens:\n  - name: a\n    token: secret-value-123\n    scope: admin\n")
    assert main(["hub", "--tokens", str(bad)]) != 0
    err = capsys.readouterr().err.strip()
    assert "scope" in err and "secret-value-123" not in err and len(err.splitlines()) == 1


@pytest.mark.timeout(120)
def test_hub_process_serves_refreshes_and_stops_on_sigterm(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    publish_samples(store, tmp_path, SAMPLES[:2], home=tmp_path / "home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ADAPTERHUB_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "hub", "--registry", store, "--port", str(port), "--refresh", "0.2", "--max-upload", "0.5",
         "--log-format", "json", "--log-level", "info", "--forwarded-allow-ips", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "hub did not start"
            try:
                r = httpx.get(url + "/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200 and "team/sentiment" in r.text and "1 adapter" in r.text
        assert httpx.get(url + "/api/v1/", timeout=5).json()["max_blob_bytes"] == 512 * 1024
        # A push straight to the store shows up after the background refresh.
        publish_samples(store, tmp_path / "more", SAMPLES[2:3], home=tmp_path / "home")
        deadline = time.monotonic() + 30
        while "team/summaries" not in httpx.get(url + "/", timeout=5).text:
            assert time.monotonic() < deadline, "the hub never saw the new push"
            time.sleep(0.2)
        assert httpx.get(url + "/a/team/summaries", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        err = proc.stderr.read() if proc.stderr else ""
        assert "1 adapter from" in err and "read-only, open to read" in err
        # --log-format json: one object per line; the access lines are the hub's, with ids.
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        access = [r for r in records if r["logger"] == "adapterhub.registry.hub.access"]
        assert any(r["path"] == "/a/team/summaries" and r["status"] == 200 and r["request_id"] and r["token"] == "-" for r in access)
        assert not [r for r in records if r["logger"] == "uvicorn.access"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
