"""The ``serve deploy`` application (``adapterhub.serving.ray.deploy:build``) behind Serve's
own HTTP proxy: the same API as ``adapterhub serve``, in a fresh process whose local Ray is
always shut down (the no-leftover check is the one of test_serve_ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import pytest

from adapterhub.errors import ConfigError

pytest.importorskip("ray.serve")

SCRIPT = r"""
import json, socket, sys, time
import httpx
from ray import serve
from adapterhub.serving.ray.cluster import start_ray
from adapterhub.serving.ray.deploy import build

with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
start_ray(None, 2)
try:
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build({"base": "tiny-random-llama", "replicas": 1, "threads": 1}), name="adapterhub", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):  # healthy once a replica has reported on the board
        health = httpx.get(url + "/health", timeout=30)
        if health.status_code == 200:
            break
        time.sleep(0.1)
    out = {"health": health.json()}
    r = httpx.post(url + "/v1/completions", json={"model": "tiny-random-llama", "prompt": "Hello", "max_tokens": 4,
                                                  "temperature": 0}, timeout=60)
    out["completion"] = r.json()
    out["unknown"] = httpx.post(url + "/v1/completions", json={"model": "team/none", "prompt": "Hi"}, timeout=60).json()
    print("RESULT " + json.dumps(out))
finally:
    serve.shutdown()
    import ray; ray.shutdown()
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_serve_deploy_application_answers_like_adapterhub_serve(leftover_ray: Callable[[str], list[str]]) -> None:
    tmp = tempfile.mkdtemp(prefix="ahray", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    deadline = time.monotonic() + 30
    while leftover_ray(tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftover_ray(tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["health"] == {"status": "ok", "base": "tiny-random-llama"}
    c = out["completion"]
    assert c["object"] == "text_completion" and c["model"] == "tiny-random-llama"
    assert c["usage"]["completion_tokens"] == 4
    assert out["unknown"]["error"]["code"] == "model_not_found"


def test_unknown_build_arguments_are_refused() -> None:
    from adapterhub.serving.ray.deploy import build

    with pytest.raises(ConfigError, match="unknown argument 'replica'"):
        build({"replica": 2})
    with pytest.raises(ConfigError, match="--replicas"):
        build({"replicas": 2, "min_replicas": 1, "max_replicas": 3})
