"""The SQLite search index: filters, metric thresholds, and rebuilding from manifests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.index import _HOST, Condition, parse_where

from adapterhub.errors import ConfigError, StoreError
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


def test_processes_creating_the_index_at_once_neither_fail_nor_corrupt_it(tmp_path: Path) -> None:
    """Eight processes opening a store with no index yet, 120 times over. Before the index
    was created atomically, SQLite refused the concurrent switch to WAL with "database is
    locked" (without waiting), the refused process deleted the file under the others,
    and they failed with "disk I/O error" or "no such table" (about 1 round in 50)."""
    import multiprocessing as mp
    import queue
    import runpy
    import time

    worker = Path(__file__).with_name("index_race_worker.py")
    ctx = mp.get_context("spawn")  # no fork of a process that has torch's threads
    roots = [str(tmp_path / f"s{i}") for i in range(120)]
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=runpy.run_path, args=(str(worker), {"ARGS": (roots, barrier, out)}, "__index_race_worker__"))
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    results: list[list[str]] = []
    deadline = time.monotonic() + 240
    try:
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=1.0))
            except queue.Empty:
                died = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not died, f"a worker died before reporting (exit codes {died})"
                assert time.monotonic() < deadline, f"only {len(results)} of {len(procs)} workers reported in 240 s"
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert [e for r in results for e in r] == []
    for root in roots:  # one complete index per store, and no temporary left behind
        # (-wal/-shm stay when the last connection could not get the lock to checkpoint)
        names = {p.name for p in Path(root).iterdir() if "index" in p.name} - {"index.sqlite-wal", "index.sqlite-shm"}
        assert names == {"index.lock", "index.sqlite"}
        assert Registry(root=root).search() == []


def test_an_index_replaced_under_an_open_registry_gets_its_later_updates(populated: Registry, make_adapter: MakeAdapter) -> None:
    """A process whose index file was replaced (found corrupt elsewhere, or deleted by a
    user) must write to the new file, not to the unlinked one it still has open."""
    populated.search()  # the connection is open
    path = populated.local.root / "index.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    other = Registry(root=populated.local.root)
    assert len(other.search()) == 4  # recreated and rebuilt by another client
    populated.push(make_adapter(seed=9), "team/late")
    assert "team/late@0.1.0" in refs(other.search(name="late"))  # no rebuild between: the push reached the new file


def test_a_busy_index_is_an_error_not_a_reason_to_delete_it(populated: Registry) -> None:
    """Only a missing, corrupt or foreign index file is replaced: one that cannot be
    opened for another reason is reported, and the file is left for its other users."""
    import sqlite3

    populated.index.close()
    path = populated.local.root / "index.sqlite"
    inode = path.stat().st_ino
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")  # in WAL mode, exclusive locking mode shuts other connections out
    try:
        import adapterhub.registry.index as index_module

        index = index_module.Index(populated.local)
        real = sqlite3.connect

        def impatient(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            return real(*args, **{**kwargs, "timeout": 0.2})

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(index_module.sqlite3, "connect", impatient)
            with pytest.raises(StoreError, match="cannot be opened: database is locked"):
                index.search()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert path.stat().st_ino == inode
    assert len(populated.search()) == 4


def test_search_works_where_the_lock_file_cannot_be_written(populated: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store the user may only read (root ignores file modes, so the refusal is
    simulated): the lock is taken on a read-only descriptor, or skipped if none exists."""
    import adapterhub.registry.index as index_module

    want = refs(populated.search())
    populated.index.close()
    real_open = os.open

    def refusing(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith("index.lock") and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(index_module.os, "open", refusing)
    assert refs(Registry(root=populated.local.root).search()) == want  # read-only descriptor
    (populated.local.root / "index.lock").unlink()
    assert refs(Registry(root=populated.local.root).search()) == want  # no lock file at all


def test_an_index_that_cannot_be_created_is_one_line_error(populated: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adapterhub.registry.index as index_module

    populated.index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{populated.local.root / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    # Where the temporary file cannot be made (as in a directory this user may not write).
    monkeypatch.setattr(index_module, "temp_path", lambda final: tmp_path / "no-such-dir" / final.name)
    with pytest.raises(StoreError, match=r"^cannot create search index .*index\.sqlite: unable to open database file$"):
        Registry(root=populated.local.root).search()
    monkeypatch.undo()
    assert len(Registry(root=populated.local.root).search()) == 4  # nothing half-made is left in the way
