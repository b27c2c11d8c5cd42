"""Servers run as child processes by tests and benchmarks: wait until one answers ``/health``."""

from __future__ import annotations

import subprocess
import time


class ServerDied(RuntimeError):
    """The server process exited before it became healthy."""


def wait_healthy(url: str, proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 120.0,
                 interval: float = 0.2) -> None:
    """Poll ``url + "/health"`` until it answers 200; :class:`ServerDied` if ``proc`` exits
    first (its exit code in the message), :class:`TimeoutError` past ``timeout``."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerDied(f"the server exited with {proc.returncode} before it became healthy")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy within {timeout:.0f} s")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
