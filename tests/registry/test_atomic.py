"""Crash-safe writes: temp + fsync + rename, create-if-absent, verified copies."""

from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
import os
from pathlib import Path

import pytest
from adapterhub.registry.atomic import (
    atomic_write,
    copy_verified,
    create_exclusive,
    is_temp_name,
    remove_stale_temps,
    temp_path,
    verify_file,
)

from adapterhub.errors import IntegrityError, StoreError, VersionExistsError


def _leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if is_temp_name(p.name)]


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "tag"
    atomic_write(target, b"1.0.0\n")
    atomic_write(target, b"2.0.0\n")
    assert target.read_bytes() == b"2.0.0\n"
    assert _leftovers(target.parent) == []


def test_temp_names_are_unique_and_hidden(tmp_path: Path) -> None:
    names = {temp_path(tmp_path / "x").name for _ in range(1000)}
    assert len(names) == 1000
    assert all(is_temp_name(n) and n.startswith(".x") for n in names)


def test_create_exclusive_refuses_existing(tmp_path: Path) -> None:
    target = tmp_path / "1.0.0.json"
    create_exclusive(target, b"first", "a@1.0.0")
    with pytest.raises(VersionExistsError, match="a@1.0.0 already exists"):
        create_exclusive(target, b"second", "a@1.0.0")
    assert target.read_bytes() == b"first"
    assert _leftovers(tmp_path) == []


def _race(args: tuple[str, int]) -> str:
    path, i = args
    try:
        create_exclusive(Path(path), f"writer {i}".encode() * 1000, "race")
        return f"won {i}"
    except VersionExistsError:
        return "lost"


def test_create_exclusive_one_winner_across_processes(tmp_path: Path) -> None:
    target = tmp_path / "v.json"
    with mp.get_context("fork").Pool(8) as pool:
        results = pool.map(_race, [(str(target), i) for i in range(8)])
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1 and results.count("lost") == 7
    i = int(winners[0].split()[1])
    assert target.read_bytes() == f"writer {i}".encode() * 1000
    assert _leftovers(tmp_path) == []


def test_copy_verified_checks_digest_and_size(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    digest = hashlib.sha256(data).hexdigest()
    final = tmp_path / "blob"
    seen: list[int] = []
    copy_verified(io.BytesIO(data), final, digest, len(data), "src", progress=seen.append)
    assert final.read_bytes() == data and sum(seen) == len(data)
    bad = tmp_path / "bad"
    with pytest.raises(IntegrityError, match="sha256"):
        copy_verified(io.BytesIO(data[:-1] + b"X"), bad, digest, None, "src")
    with pytest.raises(IntegrityError, match="size"):
        copy_verified(io.BytesIO(data[:-1]), bad, digest, len(data), "src")
    assert not bad.exists() and _leftovers(tmp_path) == []


def test_verify_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"hello")
    verify_file(p, 5, hashlib.sha256(b"hello").hexdigest())
    with pytest.raises(IntegrityError, match=str(p)):
        verify_file(p, 5, hashlib.sha256(b"hellO").hexdigest())
    with pytest.raises(IntegrityError, match="truncated"):
        verify_file(p, 6, hashlib.sha256(b"hello").hexdigest())
    with pytest.raises(IntegrityError, match="missing"):
        verify_file(tmp_path / "nope", 1, "0" * 64)


def test_write_into_unwritable_place_is_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        atomic_write(blocker / "child", b"data")


def test_stale_temp_listing(tmp_path: Path) -> None:
    t = temp_path(tmp_path / "blob")
    t.write_bytes(b"partial")
    (tmp_path / "real").write_bytes(b"x")
    import time

    assert remove_stale_temps(tmp_path, 0, time.time() + 1) == [t]
    assert remove_stale_temps(tmp_path, 3600, time.time()) == []
