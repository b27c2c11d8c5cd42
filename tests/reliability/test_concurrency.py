"""Eight processes push and pull the same adapters while some are ``kill -9``-ed.

For ``ADAPTERHUB_CONCURRENCY_SECONDS`` (default 10; the soak runs 60) eight worker
processes (``concurrency_worker.py``) run random operations against one store — the
local registry, then a prefix on a real SeaweedFS S3 server — sharing one
``ADAPTERHUB_HOME`` (so the local pull cache is contended too):

* push one of three shared adapters to ``team/shared`` (automatic versions),
* push one of them to ``team/fixed@1.0.{0..5}`` (fixed versions: pushers race),
* write a fresh adapter and push it to ``team/unique`` (new blobs every time),
* pull ``name``, ``name:latest`` or ``name@version``.

The parent SIGKILLs a random worker every 0.2-0.6 s and starts a replacement; two of
the first workers also die at the registry's own crash points (mid-blob and after the
blobs, via ``ADAPTERHUB_TEST_CRASH_AT``) so the leftovers gc must reclaim exist in every
run, not only when a random kill happens to land mid-write.

Afterwards:

* no worker saw an error other than the expected typed ones (``VersionExistsError`` for
  a taken fixed version, ``AdapterNotFoundError`` for a pull before any push);
* every visible version is intact (``Registry.verify()`` re-hashes every blob; each
  version pulls and its weights are byte-identical to what its manifest records) and
  holds a content some worker really pushed;
* one content per version: every push and pull any worker completed for a ref saw the
  same weights, the one stored now, and no ref was created twice (a same-bytes push to
  a taken version is a no-op that reports created=False);
* the search index lists exactly the stored versions (repaired after the kills);
* local store: temp files and orphan blobs are counted, ``gc`` reclaims every one, and
  afterwards nothing referenced is missing.

On S3 the same invariants are checked by listing the bucket and pulling every version
into a fresh home. ``Registry.gc`` only manages the local store, so orphan blobs left in
the bucket by killed pushes are counted and reported (junit property), not reclaimed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import runpy
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest
from adapterhub.registry.atomic import is_temp_name
from adapterhub.registry.client import Registry

from adapterhub.manifest import WEIGHTS_NAME, parse_manifest
from adapterhub.protocols.store import Store
from adapterhub.testing.seaweed import Seaweed
from adapterhub.testing.seaweed import seaweed as seaweed  # noqa: F401 - fixture
from adapterhub.testing.stores import write_test_adapter

SECONDS = float(os.environ.get("ADAPTERHUB_CONCURRENCY_SECONDS", "10"))
WORKERS = 8
WORKER = Path(__file__).with_name("concurrency_worker.py")
RUN_NAME = "__concurrency_worker__"
CRASH_ENV = "ADAPTERHUB_TEST_CRASH_AT"
Record = Callable[[str, object], None]


@pytest.fixture(scope="module")
def ctx() -> ForkServerContext:
    c = mp.get_context("forkserver")
    # Preload what every worker imports so a replacement starts in milliseconds. If
    # another test module started the (process-wide) forkserver first, its preload is
    # kept; the worker runs through runpy, so it does not need to be importable there.
    from adapterhub.defaults import DEFAULT_PLUGINS

    c.set_forkserver_preload(["torch", "transformers", "adapterhub.registry.client", "adapterhub.registry.s3", "adapterhub.artifact",
                            "boto3", "botocore.session", "boto3.s3.transfer", *DEFAULT_PLUGINS])
    # Start the forkserver (and pay for its imports) before any storm's clock starts.
    warm = c.Process(target=time.sleep, args=(0,))
    warm.start()
    warm.join(300)
    return c


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Storm:
    kills: int = 0
    incarnations: int = 0
    hung: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    torn_lines: int = 0


def _storm(ctx: ForkServerContext, tmp: Path, home: Path, url: str | None, env: dict[str, str], shared: list[tuple[str, str]], seconds: float) -> Storm:
    logs = tmp / "logs"
    logs.mkdir()
    rng = random.Random(1234)
    deadline = time.time() + seconds
    storm = Storm()

    def spawn(slot: int, extra_env: dict[str, str] | None = None) -> Any:
        storm.incarnations += 1
        n = storm.incarnations
        cfg = {
            "home": str(home), "env": {**env, **(extra_env or {})}, "url": url, "seed": n, "shared": shared,
            "scratch": str(tmp / "scratch" / f"w{n}"), "log": str(logs / f"w{n}.jsonl"), "deadline": deadline,
            # A worker that must die at a crash point pushes new blobs first.
            "first_op": "push-unique" if extra_env else None,
        }
        p = ctx.Process(target=runpy.run_path, args=(str(WORKER), {"CFG": cfg}, RUN_NAME), daemon=True)
        p.start()
        return p

    procs = [spawn(i, {CRASH_ENV: "mid-blob"} if i == 0 else {CRASH_ENV: "after-blobs"} if i == 1 else None) for i in range(WORKERS)]
    crashers = {procs[0].pid, procs[1].pid}  # they kill themselves; random kills spare them
    next_kill = time.time() + rng.uniform(0.2, 0.6)
    while time.time() < deadline - 0.3:
        for i, p in enumerate(procs):
            if not p.is_alive():
                p.join()
                procs[i] = spawn(i)
        if time.time() >= next_kill:
            victim = procs[rng.randrange(WORKERS)]
            if victim.is_alive() and victim.pid is not None and victim.pid not in crashers:
                os.kill(victim.pid, signal.SIGKILL)
                storm.kills += 1
            next_kill = time.time() + rng.uniform(0.2, 0.6)
        time.sleep(0.02)
    for p in procs:
        p.join(max(5.0, deadline - time.time() + 90))  # finish the operation in flight
        if p.is_alive():
            storm.hung += 1
            p.kill()
            p.join()
    for log in sorted(logs.iterdir()):
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                storm.events.append(json.loads(line))
            except json.JSONDecodeError:
                storm.torn_lines += 1  # a kill mid-write; only complete lines count
    return storm


def _contents(store: Store) -> dict[str, tuple[str, list[str]]]:
    """ref -> (weights sha256, every blob digest) of each version visible in ``store``."""
    out: dict[str, tuple[str, list[str]]] = {}
    for name in store.list_names():
        for v in store.list_versions(name):
            m = parse_manifest(store.get_version(name, v), f"{name}@{v}")
            assert (m.name, m.version) == (name, v), f"{name}@{v} holds the manifest of {m.name}@{m.version}"
            weights = [f.sha256 for f in m.files if f.path == WEIGHTS_NAME]
            assert len(weights) == 1
            out[f"{name}@{v}"] = (weights[0], [f.sha256 for f in m.files])
    return out


def _check_events(storm: Storm, stored: dict[str, tuple[str, list[str]]], shared: list[tuple[str, str]], record: Record) -> None:
    ev = storm.events
    errors = [e for e in ev if e["ev"] == "error"]
    assert not errors, f"{len(errors)} unexpected errors, first: {errors[0]}"
    assert storm.hung == 0, f"{storm.hung} workers did not finish their last operation"
    started = {(e["w"], e["id"]) for e in ev if e["ev"] == "start"}
    done = [e for e in ev if e["ev"] == "done"]
    expected = [e for e in ev if e["ev"] == "expected"]
    counts = Counter(e["op"] for e in done)
    assert counts["pull"] > 0 and counts["push-shared"] + counts["push-fixed"] > 0 and counts["push-unique"] > 0, (counts, ev)
    assert storm.kills >= 3, f"only {storm.kills} kills in the run"

    # Every stored content is one a worker really pushed.
    legit = {sha for _, sha in shared} | {e["sha"] for e in ev if e["ev"] == "start" and "sha" in e}
    for ref, (sha, _) in stored.items():
        assert sha in legit, f"{ref} holds weights {sha[:12]} that no worker pushed"
    # One content per version, over the whole run.
    seen: dict[str, set[str]] = defaultdict(set)
    for e in done:
        seen[e["ref"]].add(e["sha"])
    for ref, shas in seen.items():
        assert ref in stored, f"{ref} was pushed/pulled during the run but is not visible now"
        assert shas == {stored[ref][0]}, f"{ref} was seen with {len(shas)} contents: {sorted(s[:12] for s in shas)}"
    # A same-bytes push to a taken fixed version succeeds as a no-op (created False); the
    # "one content per version" check above already holds it to the stored sha.
    pushed = Counter(e["ref"] for e in done if e["op"] != "pull" and e.get("created", True))
    twice = [r for r, n in pushed.items() if n > 1]
    assert not twice, f"refs pushed successfully more than once: {twice}"
    for op, n in [("ops_started", len(started)), ("ops_done", len(done)), ("ops_expected_error", len(expected)),
                  ("ops_killed", len(started - {(e["w"], e["id"]) for e in done + expected})), ("kills", storm.kills),
                  ("incarnations", storm.incarnations), ("versions", len(stored)), ("torn_log_lines", storm.torn_lines)]:
        record(op, n)


def _temps(root: Path) -> list[Path]:
    return [Path(d, f) for d, dirs, files in os.walk(root) for f in files + dirs if is_temp_name(f)]


def _orphans(store: Any, stored: dict[str, tuple[str, list[str]]]) -> list[str]:
    referenced = {d for _, digests in stored.values() for d in digests}
    return [d for d in store.iter_blobs() if d not in referenced]


def _shared(tmp: Path) -> list[tuple[str, str]]:
    out = []
    for i in range(3):
        d = write_test_adapter(tmp / f"shared{i}", seed=10 + i, width=512, modules=4)  # ~65 kB of weights
        out.append((str(d), _sha(d / WEIGHTS_NAME)))
    return out


def test_local_store_push_pull_kill9(ctx: ForkServerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property: Record) -> None:
    home = tmp_path / "home"
    shared = _shared(tmp_path)
    storm = _storm(ctx, tmp_path, home, None, {}, shared, SECONDS)
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    reg = Registry(progress=False)
    stored = _contents(reg.local)
    _check_events(storm, stored, shared, record_property)

    report = reg.verify()
    assert report["ok"], report["problems"][:3]
    assert report["versions"] == len(stored)
    for ref, (sha, _) in stored.items():
        assert _sha(reg.pull(ref) / WEIGHTS_NAME) == sha, ref
    refs = {r["ref"] for r in reg.search()}
    assert refs == set(stored), f"index differs from the store: {sorted(refs ^ set(stored))[:5]}"

    temps_before, orphans_before = _temps(reg.local.root), _orphans(reg.local, stored)
    record_property("temps_before_gc", len(temps_before))
    record_property("orphan_blobs_before_gc", len(orphans_before))
    assert temps_before, "the mid-blob crash should have left a temp file"
    assert orphans_before, f"the after-blobs crash should have left an orphan blob: {[e for e in storm.events if e['w'] == 2]}"
    plan = reg.gc(grace_s=0)
    assert set(plan.blobs) == set(orphans_before)
    temps_after, orphans_after = _temps(reg.local.root), _orphans(reg.local, _contents(reg.local))
    record_property("temps_after_gc", len(temps_after))
    record_property("orphan_blobs_after_gc", len(orphans_after))
    assert temps_after == [] and orphans_after == []
    assert list((reg.local.root / "pending").glob("*")) == []
    assert _contents(reg.local) == stored  # gc removed nothing that is referenced
    assert reg.verify()["ok"]


@pytest.mark.s3
def test_s3_push_pull_kill9(ctx: ForkServerContext, seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property: Record) -> None:
    from adapterhub.registry.s3 import S3Store

    url = seaweed.new_prefix()
    home = tmp_path / "home"
    shared = _shared(tmp_path)
    storm = _storm(ctx, tmp_path, home, url, seaweed.env(), shared, SECONDS)
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    store = S3Store(url)
    stored = _contents(store)
    _check_events(storm, stored, shared, record_property)
    missing = [d for _, digests in stored.values() for d in digests if not store.has_blob(d)]
    assert not missing, f"visible versions reference missing blobs: {missing[:3]}"

    # Pull every version into a fresh home: each blob is downloaded and re-hashed.
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "fresh"))
    fresh = Registry(progress=False)
    for ref, (sha, _) in stored.items():
        assert _sha(fresh.pull(ref, from_=url) / WEIGHTS_NAME) == sha, ref
    record_property("orphan_blobs_left_in_bucket", len(_orphans(store, stored)))

    # The workers' shared pull cache survived the kills and gc cleans its leftovers.
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    reg = Registry(progress=False)
    record_property("cache_temps_before_gc", len(_temps(reg.local.root)))
    reg.gc(grace_s=0)
    assert _temps(reg.local.root) == []
    cache = reg.cache_for(store)
    for ref, (sha, _) in _contents(cache).items():
        assert stored[ref][0] == sha, f"the pull cache holds other weights for {ref}"
        name, v = ref.split("@")
        view, _ = cache.open_version(name, v)  # re-hashes every file
        assert _sha(view / WEIGHTS_NAME) == sha
