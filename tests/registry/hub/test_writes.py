"""Writes through the hub go through the registry client: the local search index follows
them, and a pushed version passes the checks ``adapterhub push`` makes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.http import HttpStore

from adapterhub.testing.hubserver import running_hub, token_for, write_tokens
from adapterhub.testing.stores import write_test_adapter

API = "/api/v1"


def _admin(tmp_path: Path) -> Path:
    return write_tokens(tmp_path / "tokens.yaml", {"admin": ("write", ["*"])})


def test_a_push_through_the_hub_is_in_the_local_registrys_search_and_ls(tmp_path: Path) -> None:
    """The hub serves the local registry (`adapterhub hub` without --registry): what is
    pushed, tagged and removed through it is what `adapterhub search` / `ls` show."""
    home = tmp_path / "registry"
    local = Registry(root=home, progress=False)  # another process on the hub's machine
    assert local.search() == []  # its index exists before the pushes: they must update it
    with running_hub(home, tokens=_admin(tmp_path)) as hub:
        client = Registry(root=tmp_path / "client-home", progress=False)
        client.use_store(hub.url, HttpStore(hub.url, token=token_for("admin")))
        client.push(write_test_adapter(tmp_path / "a", seed=1, task="sentiment-rt"), "team/x", version="1.0.0", tag="prod", to=hub.url)
        client.push(write_test_adapter(tmp_path / "b", seed=2, task="aclsum"), "team/x", version="1.1.0", to=hub.url)

        assert [r["ref"] for r in local.search(task="sentiment-rt")] == ["team/x@1.0.0"]
        assert [r["ref"] for r in local.search(tag="prod")] == ["team/x@1.0.0"]
        (row,) = local.ls()
        assert row["name"] == "team/x" and row["latest"] == "1.1.0" and row["tags"] == {"latest": "1.1.0", "prod": "1.0.0"}

        client.rm("team/x:prod", to=hub.url)
        assert local.search(tag="prod") == []
        client.rm("team/x@1.1.0", to=hub.url)
        assert [r["ref"] for r in local.search(name="team/x")] == ["team/x@1.0.0"]
        assert not any((home / "pending").iterdir())  # every change finished its marker


def _put_blob(url: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    r = httpx.put(f"{url}{API}/blobs/{digest}", content=data, headers={"Authorization": f"Bearer {token_for('admin')}"}, timeout=30)
    assert r.status_code == 201, r.text
    return digest


@pytest.mark.parametrize(("weights", "why"), [
    (b"\x80\x04K\x01." + b"\0" * 64, "safetensors"),  # a pickle where safetensors belongs
    (None, "rank"),  # real safetensors whose LoRA rank disagrees with the config
])
def test_the_hub_refuses_what_push_would_refuse(tmp_path: Path, weights: bytes | None, why: str) -> None:
    """The manifest and its blobs are consistent; the weights are not publishable."""
    src = write_test_adapter(tmp_path / "a", seed=1)
    manifest = json.loads((src / "manifest.json").read_text())
    if weights is None:
        manifest["method_config"] = {**manifest["method_config"], "r": 2}
    with running_hub(tmp_path / "registry", tokens=_admin(tmp_path)) as hub:
        entry = manifest["files"][0]
        data = weights if weights is not None else (src / entry["path"]).read_bytes()
        entry.update(sha256=_put_blob(hub.url, data), size=len(data))
        manifest.update(name="team/bad", version="1.0.0")
        r = httpx.put(f"{hub.url}{API}/adapters/team/bad/versions/1.0.0/manifest", content=json.dumps(manifest).encode(),
                      headers={"Authorization": f"Bearer {token_for('admin')}"}, timeout=30)
        body = r.json()["error"]
        assert r.status_code == 422 and why in body["message"].lower(), r.text
        assert "/tmp" not in body["message"] and str(tmp_path) not in body["message"]  # no path of the hub's machine
        assert Registry(root=tmp_path / "registry", progress=False).search(name="team/bad") == []
        assert not os.listdir(tmp_path / "registry" / "adapters") if (tmp_path / "registry" / "adapters").exists() else True
