"""The pytest fixtures plugin authors enable with ``pytest_plugins``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from adapterhub import paths
from adapterhub.fingerprint import fingerprint
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.testing.fixtures import adapterhub_home, tiny_base, tiny_model  # noqa: F401


def test_adapterhub_home_is_isolated(adapterhub_home: Path) -> None:  # noqa: F811
    assert os.environ["ADAPTERHUB_HOME"] == str(adapterhub_home) and adapterhub_home.is_dir()
    assert paths.registry_dir() == adapterhub_home / "registry"


def test_tiny_base_and_model(tiny_base: LoadedBase, tiny_model: tuple[Any, Any]) -> None:  # noqa: F811
    model, tokenizer = tiny_model
    assert tiny_base.name == "tiny-random-llama" and tiny_base.model is not model
    assert fingerprint(tiny_base.model, "t") == fingerprint(model, "t")
    assert tokenizer.padding_side == "left" and tiny_base.tokenizer.pad_token == "<pad>"
