"""The SQLite search index: filters, metric thresholds, and rebuilding from manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.index import _HOST, Condition, parse_where

from adapterhub.errors import ConfigError
from adapterhub.testing.stores import TEST_BASE

MakeAdapter = Callable[..., Path]


@pytest.fixture
def populated(registry: Registry, make_adapter: MakeAdapter) -> Registry:
    other_base = {**TEST_BASE, "name": "other-base", "weights_sha256": "cd" * 32}
    registry.push(make_adapter(seed=1, task="sentiment-rt", metrics={"sentiment-rt": {"accuracy": 0.82}}), "team/sent", tag="prod")
    registry.push(make_adapter(seed=2, task="sentiment-rt", metrics={"sentiment-rt": {"accuracy": 0.61}}), "team/sent")
    registry.push(make_adapter(seed=3, task="summarize-aclsum", metrics={"summarize-aclsum": {"rougeL": 0.35, "rouge1": 0.41}}), "team/summ")
    registry.push(make_adapter(seed=4, task="summarize-aclsum", metrics={"summarize-aclsum": {"rougeL": 0.21}}, base=other_base), "lab/summ")
    return registry


def refs(rows: list[dict]) -> list[str]:
    return [r["ref"] for r in rows]


def test_filters(populated: Registry) -> None:
    r = populated
    assert refs(r.search()) == ["lab/summ@0.1.0", "team/sent@0.1.0", "team/sent@0.1.1", "team/summ@0.1.0"]
    assert refs(r.search(name="summ")) == ["lab/summ@0.1.0", "team/summ@0.1.0"]
    assert refs(r.search(name="team/*")) == ["team/sent@0.1.0", "team/sent@0.1.1", "team/summ@0.1.0"]
    assert refs(r.search(task="sentiment-rt")) == ["team/sent@0.1.0", "team/sent@0.1.1"]
    assert refs(r.search(method="lora", tag="prod")) == ["team/sent@0.1.0"]
    assert refs(r.search(base="cdcd")) == ["lab/summ@0.1.0"]
    assert refs(r.search(base="other-base")) == ["lab/summ@0.1.0"]
    assert refs(r.search(where=["rougeL>0.3"])) == ["team/summ@0.1.0"]
    assert refs(r.search(where=["accuracy>=0.8"])) == ["team/sent@0.1.0"]
    assert refs(r.search(where=["sentiment-rt.accuracy<0.7"])) == ["team/sent@0.1.1"]
    assert refs(r.search(where=["rougeL>0.1", "rouge1>0.4"])) == ["team/summ@0.1.0"]
    assert r.search(where=["bleu>0"]) == []
    row = r.search(name="team/summ")[0]
    assert row["metrics"] == {"summarize-aclsum": {"rougeL": 0.35, "rouge1": 0.41}} and row["tags"] == ["latest"]


def test_where_parsing() -> None:
    assert parse_where("rougeL>0.3") == Condition(None, "rougeL", ">", 0.3)
    assert parse_where(" task-a.accuracy >= 80 ") == Condition("task-a", "accuracy", ">=", 80.0)
    assert parse_where("x==1e-3").op == "="
    for bad in ("rougeL", "rougeL>>0.3", "rougeL>abc", "'; DROP TABLE versions; --", "a>1 OR 1=1"):
        with pytest.raises(ConfigError):
            parse_where(bad)


def test_ls(populated: Registry) -> None:
    rows = {r["name"]: r for r in populated.ls()}
    assert rows["team/sent"]["versions"] == ["0.1.0", "0.1.1"]
    assert rows["team/sent"]["tags"] == {"latest": "0.1.1", "prod": "0.1.0"}


def test_losing_the_index_loses_nothing(populated: Registry, home: Path) -> None:
    want = refs(populated.search())
    populated.index.close()
    index = populated.local.root / "index.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    assert refs(Registry().search()) == want  # missing: rebuilt
    Registry().index.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    assert refs(Registry().search()) == want  # corrupt: rebuilt
    assert populated.rebuild_index() == len(want)


def test_crash_between_manifest_and_index_is_repaired(populated: Registry, make_adapter: MakeAdapter) -> None:
    """A version created by a process that died before updating the index still shows."""
    store = populated.local
    manifest = json.loads(store.get_version("team/summ", "0.1.0"))
    manifest["version"] = "9.0.0"
    # A marker of a dead process on this host, as a killed pusher leaves it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    store.root.joinpath("pending").mkdir(exist_ok=True)
    store.root.joinpath("pending", f"{_HOST}-{int(dead.stdout)}-deadbeef").touch()
    store.put_version("team/summ", "9.0.0", json.dumps(manifest).encode())
    assert "team/summ@9.0.0" in refs(populated.search(name="team/summ"))
    assert list(store.root.joinpath("pending").iterdir()) == []


def test_rm_updates_index(populated: Registry) -> None:
    populated.rm("team/sent@0.1.0")
    assert refs(populated.search(name="team/sent")) == ["team/sent@0.1.1"]
    assert populated.search(tag="prod") == []


def test_name_substring_is_literal_and_case_insensitive(registry: Registry, make_adapter: MakeAdapter) -> None:
    for name in ("team/a_b", "team/axb", "team/Big-One", "team/p50"):
        registry.push(make_adapter(seed=len(name)), name)
    assert refs(registry.search(name="a_b")) == ["team/a_b@0.1.0"]  # '_' is not a wildcard
    assert refs(registry.search(name="BIG-one")) == ["team/Big-One@0.1.0"]
    assert registry.search(name="p%") == [] and registry.search(name="\\") == []
    assert refs(registry.search(name="p50")) == ["team/p50@0.1.0"]


def test_row_tags_follow_tag_changes(populated: Registry) -> None:
    r = populated

    def tags_of(ref: str) -> list[str]:
        return next(row["tags"] for row in r.search(name=ref.split("@")[0]) if row["ref"] == ref)

    assert tags_of("team/sent@0.1.0") == ["prod"] and tags_of("team/sent@0.1.1") == ["latest"]
    r.tag("team/sent@0.1.1", "prod")
    assert tags_of("team/sent@0.1.0") == [] and tags_of("team/sent@0.1.1") == ["latest", "prod"]
    r.rm("team/sent:prod")
    assert tags_of("team/sent@0.1.1") == ["latest"]
    assert refs(r.search(tag="prod")) == []
    r.rebuild_index()
    assert tags_of("team/sent@0.1.1") == ["latest"]


def test_index_of_an_older_schema_is_rebuilt(populated: Registry) -> None:
    import sqlite3

    want = refs(populated.search())
    populated.index.close()
    path = populated.local.root / "index.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='5' WHERE key='schema'")
    conn.execute("ALTER TABLE versions DROP COLUMN tags")
    conn.commit()
    conn.close()
    assert Registry().rebuild_index() == len(want)  # an explicit rebuild, too, starts over
    assert refs(Registry().search()) == want


def test_search_does_not_import_the_manifest_model(populated: Registry) -> None:
    """`search` in a new process reads SQLite only: no pydantic, protocols or thread pool."""
    code = (
        "import sys, json\n"
        "from adapterhub.registry.client import Registry\n"
        f"rows = Registry(root={str(populated.local.root)!r}).search(name='sent')\n"
        "heavy = [m for m in ('pydantic', 'adapterhub.manifest', 'adapterhub.protocols', 'concurrent.futures', 'torch') if m in sys.modules]\n"
        "print(json.dumps([len(rows), heavy]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [2, []]
