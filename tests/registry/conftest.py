"""Fixtures for the registry tests: a fresh home per test, adapters, and SeaweedFS.

``seaweed`` (from :mod:`adapterhub.testing.seaweed`) is a real SeaweedFS S3 server on
127.0.0.1, started once per test process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from adapterhub.testing.seaweed import seaweed  # noqa: F401 - a fixture
from adapterhub.testing.stores import write_test_adapter


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("ADAPTERHUB_HOME", str(h))
    return h


@pytest.fixture
def registry(home: Path) -> object:
    from adapterhub.registry.client import Registry

    return Registry(progress=False)


@pytest.fixture
def make_adapter(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def make(seed: int = 0, **kw: object) -> Path:
        return write_test_adapter(tmp_path / f"adapter-{next(counter)}", seed=seed, **kw)  # type: ignore[arg-type]

    return make


