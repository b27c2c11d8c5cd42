"""Registry faults: concurrent pushers, kill -9 at every push stage, disk full.

* 8 processes push the same ``name@version`` at once (local store and SeaweedFS S3):
  exactly one wins, the others get ``VersionExistsError``, the stored bytes are the
  winner's.
* A push is SIGKILLed (``ADAPTERHUB_TEST_CRASH_AT``) mid-blob, after the blobs and after
  the manifest: a partial version is never visible, a re-push succeeds, ``gc`` reclaims
  the orphans.
* The disk fills up during a push (a 1 MiB tmpfs when mounting is allowed, else
  ``RLIMIT_FSIZE``): a typed ``StoreError``, no temp files, earlier versions intact.

Pushers run as real processes forked from a forkserver that preloaded torch and the
registry once, so eight processes start in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import time
from collections.abc import Iterator
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest
from adapterhub.registry.atomic import is_temp_name
from adapterhub.registry.client import Registry
from adapterhub.registry.faults import ENV as CRASH_ENV
from adapterhub.registry.local import LocalStore

from adapterhub.errors import AdapterNotFoundError, StoreError
from adapterhub.manifest import MANIFEST_NAME, WEIGHTS_NAME
from adapterhub.testing.seaweed import Seaweed
from adapterhub.testing.seaweed import seaweed as seaweed  # noqa: F401 - fixture
from adapterhub.testing.stores import disk_full_worker, push_worker, write_test_adapter


@pytest.fixture(scope="module")
def ctx() -> ForkServerContext:
    c = mp.get_context("forkserver")
    # Preload what every pusher imports (torch, and the plugins that push validation
    # asks the catalog about) so each forked pusher starts in milliseconds.
    from adapterhub.defaults import DEFAULT_PLUGINS

    c.set_forkserver_preload(["torch", "transformers", "adapterhub.registry.client", "adapterhub.registry.s3", "adapterhub.artifact", *DEFAULT_PLUGINS])
    return c


def _collect(out: Any, procs: list[Any], n: int) -> list[tuple[str, str]]:
    results: list[tuple[str, str]] = []
    deadline = time.monotonic() + 120
    while len(results) < n and time.monotonic() < deadline:
        try:
            results.append(out.get(timeout=0.5))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and out.empty():
                break
    for p in procs:
        p.join(30)
    return results


def _race(ctx: ForkServerContext, home: Path, adapters: list[Path], to: str | None, env: dict[str, str]) -> list[tuple[str, str]]:
    barrier, out = ctx.Barrier(len(adapters)), ctx.Queue()
    procs = [
        ctx.Process(target=push_worker, args=(str(home), str(a), "team/race", "1.0.0", to, env, barrier, out))
        for a in adapters
    ]
    for p in procs:
        p.start()
    return _collect(out, procs, len(procs))


def _winner_seed(results: list[tuple[str, str]], adapters: list[Path], pulled: Path) -> int:
    got = (pulled / WEIGHTS_NAME).read_bytes()
    seeds = [i for i, a in enumerate(adapters) if (a / WEIGHTS_NAME).read_bytes() == got]
    assert len(seeds) == 1
    return seeds[0]


def test_eight_local_pushers_one_winner(ctx: ForkServerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    adapters = [write_test_adapter(tmp_path / f"a{i}", seed=100 + i) for i in range(8)]
    results = _race(ctx, home, adapters, None, {})
    kinds = sorted(k for k, _ in results)
    assert kinds == ["lost"] * 7 + ["won"], results
    assert all("already exists" in msg for k, msg in results if k == "lost")
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    reg = Registry(progress=False)
    pulled = reg.pull("team/race@1.0.0")
    _winner_seed(results, adapters, pulled)  # exactly one pusher's bytes, verified on pull
    assert json.loads((pulled / MANIFEST_NAME).read_text())["version"] == "1.0.0"
    # the losers' blobs are orphans that gc reclaims; the winner's version stays intact
    assert len(list(reg.local.iter_blobs())) == 8
    reg.gc(grace_s=0)
    assert len(list(reg.local.iter_blobs())) == 1 and reg.verify()["ok"]


@pytest.mark.s3
def test_eight_s3_pushers_one_winner(ctx: ForkServerContext, seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = seaweed.new_prefix()
    home = tmp_path / "home"
    adapters = [write_test_adapter(tmp_path / f"a{i}", seed=200 + i) for i in range(8)]
    results = _race(ctx, home, adapters, url, seaweed.env())
    assert sorted(k for k, _ in results) == ["lost"] * 7 + ["won"], results
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    pulled = Registry(progress=False).pull("team/race@1.0.0", from_=url)
    _winner_seed(results, adapters, pulled)


# --- kill -9 at each stage ------------------------------------------------------------------------


def _crash_push(ctx: ForkServerContext, home: Path, adapter: Path, stage: str, to: str | None = None, env: dict[str, str] | None = None) -> int:
    out = ctx.Queue()
    p = ctx.Process(target=push_worker, args=(str(home), str(adapter), "team/crash", "1.0.0", to, {CRASH_ENV: stage, **(env or {})}, None, out))
    p.start()
    p.join(120)
    return int(p.exitcode if p.exitcode is not None else 0)


def _temps(root: Path) -> list[Path]:
    return [Path(d, f) for d, dirs, files in os.walk(root) for f in files + dirs if is_temp_name(f)]


@pytest.mark.parametrize("stage", ["mid-blob", "after-blobs", "after-manifest"])
def test_kill_9_during_local_push(ctx: ForkServerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    home = tmp_path / "home"
    adapter = write_test_adapter(tmp_path / "a", seed=7, width=512, modules=4)  # ~130 kB
    assert _crash_push(ctx, home, adapter, stage) == -signal.SIGKILL
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    reg = Registry(progress=False)
    store = reg.local
    if stage == "mid-blob":
        assert _temps(store.root / "blobs"), "the crash should have left a partial temp blob"
        assert list(store.iter_blobs()) == []  # a partial blob is never under a digest name
    if stage in ("mid-blob", "after-blobs"):
        # the partial version is never visible, by any route
        assert store.list_versions("team/crash") == [] and list(store.list_names()) == []
        with pytest.raises(AdapterNotFoundError):
            reg.pull("team/crash")
        assert reg.search(name="team/crash") == []
        plan = reg.gc(dry_run=True, grace_s=0)
        assert plan.temps or plan.blobs
        assert reg.push(adapter, "team/crash", version="1.0.0") == "team/crash@1.0.0"  # re-push succeeds
    else:
        # the version was created whole before the kill: complete and verified, but the
        # tags were not moved yet (name resolution falls back to the highest version)
        assert store.list_versions("team/crash") == ["1.0.0"] and store.list_tags("team/crash") == {}
        assert [r["ref"] for r in reg.search(name="team/crash")] == ["team/crash@1.0.0"]  # index repaired
        # a retried push of the same bytes completes it (moves the tags) as a no-op
        assert reg.publish(adapter, "team/crash", version="1.0.0").created is False
        assert store.list_tags("team/crash") == {"latest": "1.0.0"}
        assert reg.push(adapter, "team/crash") == "team/crash@1.0.1"
    pulled = reg.pull("team/crash@1.0.0")
    assert (pulled / WEIGHTS_NAME).read_bytes() == (adapter / WEIGHTS_NAME).read_bytes()
    reg.gc(grace_s=0)
    assert _temps(store.root) == [] and list(store.root.joinpath("pending").iterdir()) == []
    assert reg.verify()["ok"]


@pytest.mark.s3
@pytest.mark.parametrize("stage", ["mid-blob", "after-blobs", "after-manifest"])
def test_kill_9_during_s3_push(ctx: ForkServerContext, seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    from adapterhub.registry.s3 import S3Store

    url = seaweed.new_prefix()
    home = tmp_path / "home"
    adapter = write_test_adapter(tmp_path / "a", seed=8, width=512, modules=4)
    assert _crash_push(ctx, home, adapter, stage, to=url, env=seaweed.env()) == -signal.SIGKILL
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    store = S3Store(url)
    reg = Registry(progress=False)
    if stage == "mid-blob":
        assert list(store.iter_blobs()) == []  # an interrupted upload creates no object
    if stage != "after-manifest":
        assert store.list_versions("team/crash") == []
        with pytest.raises(AdapterNotFoundError):
            reg.pull("team/crash", from_=url)
        assert reg.push(adapter, "team/crash", version="1.0.0", to=url) == "team/crash@1.0.0"
    else:
        assert store.list_versions("team/crash") == ["1.0.0"] and store.list_tags("team/crash") == {}
    pulled = reg.pull("team/crash@1.0.0", from_=url)
    assert (pulled / WEIGHTS_NAME).read_bytes() == (adapter / WEIGHTS_NAME).read_bytes()


# --- disk full -------------------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root / CAP_SYS_ADMIN; skipped otherwise)."""
    mnt = tmp_path / "tinyfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); the RLIMIT_FSIZE test covers disk full")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _state(reg: Registry) -> tuple[list[str], list[str]]:
    return list(reg.local.iter_blobs()), [f"{n}@{v}" for n in reg.local.list_names() for v in reg.local.list_versions(n)]


def test_disk_full_tmpfs(tiny_fs: Path, tmp_path: Path) -> None:
    reg = Registry(root=tiny_fs / "registry", progress=False)
    small = write_test_adapter(tmp_path / "small", seed=1)  # ~4 kB
    big = write_test_adapter(tmp_path / "big", seed=2, width=4096, rank=8, modules=4)  # ~1 MB
    reg.push(small, "team/x", version="1.0.0")
    before = _state(reg)
    with pytest.raises(StoreError, match="no space left") as info:
        reg.push(big, "team/x", version="2.0.0")
    assert "\n" not in str(info.value)
    assert _temps(tiny_fs) == [], "temp files must be removed after a failed write"
    assert _state(reg) == before
    pulled = reg.pull("team/x@1.0.0")
    assert hashlib.sha256((pulled / WEIGHTS_NAME).read_bytes()).digest() == hashlib.sha256((small / WEIGHTS_NAME).read_bytes()).digest()
    assert reg.verify()["ok"]


def test_disk_full_rlimit_fsize(ctx: ForkServerContext, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    small = write_test_adapter(tmp_path / "small", seed=1)
    big = write_test_adapter(tmp_path / "big", seed=2, width=1024, rank=8, modules=4)  # ~260 kB
    out = ctx.Queue()
    p = ctx.Process(target=disk_full_worker, args=(str(root), str(small), str(big), 64 * 1024, out))
    p.start()
    [(kind, msg)] = _collect(out, [p], 1)
    assert kind == "StoreError" and "no space left" in msg and "\n" not in msg, (kind, msg)
    store = LocalStore(root)
    assert _temps(root) == []
    assert store.list_versions("team/x") == ["1.0.0"]
    reg = Registry(root=root, progress=False)
    assert (reg.pull("team/x@1.0.0") / WEIGHTS_NAME).read_bytes() == (small / WEIGHTS_NAME).read_bytes()
