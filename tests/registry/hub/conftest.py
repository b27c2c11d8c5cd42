"""Fixtures shared by the hub's page tests: a store filled by real pushes, a live hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from adapterhub.registry.local import LocalStore

from adapterhub.testing.hub import publish_samples


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """A store with the sample adapters (metrics, forgetting, loss curves, tags, 2 versions)."""
    tmp = tmp_path_factory.mktemp("hubstore")
    publish_samples(f"file://{tmp / 'store'}", tmp, home=tmp / "home")
    return LocalStore(tmp / "store")


@pytest.fixture(scope="module")
def hub_url(sample_store: LocalStore) -> Iterator[str]:
    """A read-only hub (no tokens file) over ``sample_store`` on 127.0.0.1."""
    from adapterhub.registry.hub.app import build_app
    from adapterhub.registry.hub.state import HubState

    from adapterhub.serving.http.inprocess import serve_in_process

    with serve_in_process(build_app(HubState.open(sample_store))) as url:
        yield url


def store_root(store: LocalStore) -> Path:
    return Path(store.root)
