"""The README is the user's manual: its commands and its Python example must run as written.

Every ``$ ...`` line of its ``console`` blocks runs, in order, in one scratch directory
with a throw-away ADAPTERHUB_HOME; the ``python`` block runs and must print exactly the
``text`` block that follows it. A line ending in `` &`` (``adapterhub serve ... &``) starts
in the background, as in a shell; ``kill %N`` stops the N-th of those, and any still
running when the tour ends (or fails) are stopped then. The README's ports (8000, 8080,
8081) become free ports, so the tour never meets another server.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ADAPTERHUB_HOME"] = str(tmp / "home")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_readme_has_the_two_commands_first() -> None:
    first = _blocks("bash")[0]
    assert first.splitlines()[0].startswith("make test") and first.splitlines()[1].startswith("make demo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the server drains and exits 0), then SIGKILL if it does not."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.mark.realmodel
def test_cli_tour_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "preds.txt").write_text("the cat sat on mat\n")
    (tmp_path / "refs.txt").write_text("the cat sat on the mat\n")
    commands = [line[2:] for block in _blocks("console") for line in block.splitlines() if line.startswith("$ ")]
    tour = [c for c in commands if not c.startswith(("adapterhub install", "adapterhub plugins"))]
    assert len(tour) >= 9
    # Each port the README names (serve's 8000, the hubs' 8080 and 8081) becomes a free one.
    ports = {p: str(_free_port()) for p in ("8000", "8080", "8081")}
    env = _env(tmp_path)
    background: list[subprocess.Popen[bytes]] = []
    try:
        for cmd in tour:
            for readme_port, port in ports.items():
                cmd = cmd.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port}").replace(f"--port {readme_port}", f"--port {port}")
            kill = re.fullmatch(r"kill %(\d+)", cmd.strip())
            if kill:
                proc = background[int(kill.group(1)) - 1]
                assert _stop(proc) == 0, f"{proc.args!r} did not exit cleanly on SIGTERM"
                continue
            if cmd.rstrip().endswith("&"):
                log = (tmp_path / f"background-{len(background) + 1}.log").open("wb")
                background.append(subprocess.Popen(["bash", "-c", f"exec {cmd.rstrip()[:-1]}"], cwd=tmp_path, env=env,
                                                   stdout=log, stderr=subprocess.STDOUT))
                continue
            res = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, f"{cmd!r} failed:\n{res.stderr[-2000:]}"
            assert res.stdout.strip(), f"{cmd!r} printed nothing"
    finally:
        for proc in background:
            _stop(proc)


def test_python_example_prints_what_the_readme_says(tmp_path: Path) -> None:
    code = _blocks("python")[0]
    # the first ``text`` block after the python block (others show e.g. the demo's output)
    after = README[README.index(f"```python\n{code}```") :]
    expected = re.findall(r"```text\n(.*?)```", after, flags=re.S)[0]
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == expected
