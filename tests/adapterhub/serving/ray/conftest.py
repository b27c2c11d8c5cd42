"""What the ``serve --ray`` tests share: finding Ray processes left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def ray_processes(tag: str) -> list[str]:
    """raylet / gcs_server processes whose command line holds ``tag`` (our Ray temp dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tag in cmd and ("raylet" in cmd or "gcs_server" in cmd):
            found.append(f"{pid}: {cmd[:120]}")
    return found


@pytest.fixture(scope="session")
def leftover_ray() -> Callable[[str], list[str]]:
    return ray_processes


@pytest.fixture(scope="session", autouse=True)
def no_ray_left_after_the_suite() -> Iterator[None]:
    """Every test here gives its Ray a temp dir named /tmp/ahray*: none may outlive the run."""
    yield
    deadline = time.monotonic() + 30
    while ray_processes("/tmp/ahray") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes("/tmp/ahray"), ray_processes("/tmp/ahray")
