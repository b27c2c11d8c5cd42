"""The hf:// store, offline: staged commits (layout + model card) and cached pulls.

The Hub is unreachable here. What runs for real: the store logic over a folder that
receives exactly what the commits would upload (``?staging=``), the conditional-commit
rule, and reads through ``huggingface_hub`` itself from a populated local cache with
``HF_HUB_OFFLINE=1``. Uploading to the live Hub is not exercised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.hf import CARD_MARK, HFStore, populate_hf_cache

from adapterhub.errors import AdapterNotFoundError, ConfigError, StoreError, VersionExistsError
from adapterhub.manifest import MANIFEST_NAME, WEIGHTS_NAME
from adapterhub.testing.stores import StoreConformance

MakeAdapter = Callable[..., Path]


class TestHFStagingConformance(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> HFStore:
        return HFStore(f"hf://org/repo/team?staging={tmp_path / 'staging'}")


def test_url_parsing() -> None:
    s = HFStore("hf://org/repo/sub/dir?revision=v1&staging=/tmp/x")
    assert (s.repo_id, s.prefix, s.revision) == ("org/repo", "sub/dir", "v1")
    for bad in ("hf://org", "hf://org/../x", "hf://org/re--po", "hf://org/repo?bogus=1", "hf://org/repo?repo_type=space"):
        with pytest.raises(ConfigError):
            HFStore(bad)


def test_push_layout_and_model_card(home: Path, tmp_path: Path, make_adapter: MakeAdapter) -> None:
    staging = tmp_path / "staging"
    url = f"hf://org/adapters?staging={staging}"
    reg = Registry(progress=False)
    a = make_adapter(seed=3, task="summarize-aclsum", metrics={"summarize-aclsum": {"rougeL": 0.3412, "bleu": 12.5}})
    assert reg.push(a, "team/summ", version="1.0.0", tag="prod", to=url) == "team/summ@1.0.0"
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file() and not p.name.startswith("."))
    digest = json.loads((a / MANIFEST_NAME).read_text())["files"][0]["sha256"]
    assert files == [
        "README.md",
        "adapters/team/summ/README.md",
        "adapters/team/summ/tags/latest",
        "adapters/team/summ/tags/prod",
        "adapters/team/summ/versions/1.0.0.json",
        f"blobs/sha256/{digest[:2]}/{digest}",
    ]
    card = (staging / "adapters/team/summ/README.md").read_text()
    assert card.startswith("---\nlibrary_name: adapterhub\nbase_model: \"tiny-random-llama\"")
    assert CARD_MARK in card and "| summarize-aclsum | rougeL | 0.3412 |" in card and "| summarize-aclsum | bleu | 12.5000 |" in card
    assert f"adapterhub pull team/summ@1.0.0 --from {url}" in card
    assert (staging / "README.md").read_text() == card
    # a user-written root README is never overwritten
    (staging / "README.md").write_text("# my repo\n")
    reg.push(make_adapter(seed=4), "team/other", version="1.0.0", to=url)
    assert (staging / "README.md").read_text() == "# my repo\n"
    assert reg.publish(a, "team/summ", version="1.0.0", to=url).created is False  # same bytes: no-op
    with pytest.raises(VersionExistsError, match="different contents"):
        reg.push(make_adapter(seed=9), "team/summ", version="1.0.0", to=url)


def test_offline_pull_from_populated_cache(home: Path, tmp_path: Path, make_adapter: MakeAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = tmp_path / "staging"
    reg = Registry(progress=False)
    a = make_adapter(seed=5)
    reg.push(a, "team/sent", version="1.0.0", tag="prod", to=f"hf://org/repo?staging={staging}")
    cache = tmp_path / "hf-cache"
    populate_hf_cache(staging, "org/repo", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    reg2 = Registry(progress=False)
    for ref in ("team/sent@1.0.0", "team/sent:prod", "team/sent"):
        path = reg2.pull(ref, from_="hf://org/repo")
        assert (path / WEIGHTS_NAME).read_bytes() == (a / WEIGHTS_NAME).read_bytes()
        assert json.loads((path / MANIFEST_NAME).read_text())["version"] == "1.0.0"
    assert [r["name"] for r in reg2.ls(from_="hf://org/repo")] == ["team/sent"]
    with pytest.raises(AdapterNotFoundError, match="not in the local Hugging Face cache") as info:
        reg2.pull("team/sent@2.0.0", from_="hf://org/repo")
    assert "\n" not in str(info.value)
    with pytest.raises(StoreError):
        reg2.push(a, "team/sent", version="3.0.0", to="hf://org/repo")  # pushing needs the network


def test_uncached_repo_offline(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(AdapterNotFoundError, match="HF_HUB_OFFLINE=1"):
        Registry(progress=False).pull("x@1.0.0", from_="hf://org/never-downloaded")
