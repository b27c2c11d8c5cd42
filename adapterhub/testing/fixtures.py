"""pytest fixtures for adapterhub and plugin tests.

Enable in a ``conftest.py`` with ``pytest_plugins = ["adapterhub.testing.fixtures"]``.

* ``adapterhub_home`` — a fresh ``ADAPTERHUB_HOME`` in ``tmp_path`` (registry, caches);
  the converted-model cache (``ADAPTERHUB_MODEL_CACHE``) is left alone so the one-time
  SmolLM2 conversion stays shared.
* ``tiny_model`` — ``(model, tokenizer)`` from :func:`adapterhub.testing.models.tiny_llama`,
  built fresh per test (about 20 ms) so tests may modify it freely.
* ``tiny_base`` — the same model as a :class:`~adapterhub.protocols.LoadedBase` named
  ``tiny-random-llama`` (what ``load_base("tiny-random-llama")`` gives, without disk I/O).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.testing.models import tiny_llama

TINY_NAME = "tiny-random-llama"


@pytest.fixture
def adapterhub_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "adapterhub-home"
    home.mkdir()
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    yield home


@pytest.fixture
def tiny_model() -> tuple[Any, Any]:
    return tiny_llama(seed=0)


@pytest.fixture
def tiny_base() -> LoadedBase:
    model, tokenizer = tiny_llama(seed=0)
    return LoadedBase(name=TINY_NAME, model=model, tokenizer=tokenizer, path=None)
