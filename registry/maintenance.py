"""Local-store upkeep: garbage collection and re-verification (``adapterhub gc`` / ``verify``).

Both work on the local store only, through its public calls, and are reached through
:meth:`Registry.gc` and :meth:`Registry.verify` (the one client API).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.registry.atomic import is_temp_name, remove_stale_temps, sha256_file
from adapterhub.registry.client import GC_GRACE_S, parse_manifest

from adapterhub.errors import AdapterNotFoundError

if TYPE_CHECKING:
    from adapterhub.registry.index import Index
    from adapterhub.registry.local import LocalStore


@dataclass
class GcPlan:
    """What ``gc`` deletes, in order: dangling tags, stale views and temps, then blobs."""

    tags: list[str] = field(default_factory=list)
    views: list[Path] = field(default_factory=list)
    temps: list[Path] = field(default_factory=list)
    quarantine: list[Path] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    blob_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tags": self.tags, "views": [str(p) for p in self.views], "temps": [str(p) for p in self.temps],
            "quarantine": [str(p) for p in self.quarantine], "blobs": self.blobs, "blob_bytes": self.blob_bytes,
        }



def collect_garbage(store: LocalStore, index: Index, *, dry_run: bool = False, grace_s: float = GC_GRACE_S) -> GcPlan:
    """Plan, then delete: dangling tags, stale views/temps, quarantined and orphan blobs.

    Blobs younger than ``grace_s`` are spared: a push in progress has stored (or
    touched) its blobs but not yet written the manifest that references them.
    """
    now = time.time()
    plan = GcPlan()
    referenced: set[str] = set()
    live_views: set[Path] = set()
    for name in store.list_names():
        versions = set(store.list_versions(name))
        for v in versions:
            try:
                m = parse_manifest(store.get_version(name, v), f"{name}@{v}")
            except ValueError:
                continue
            referenced.update(f.sha256 for f in m.files)
            live_views.add(store.view_path(name, v))
        for t, tv in store.list_tags(name).items():
            if tv not in versions:
                plan.tags.append(f"{name}:{t}")
    views_root = store.root / "views"
    if views_root.is_dir():
        for ns in os.listdir(views_root):
            for base in os.listdir(views_root / ns) if (views_root / ns).is_dir() else []:
                for v in os.listdir(views_root / ns / base) if (views_root / ns / base).is_dir() else []:
                    p = (views_root / ns / base / v).resolve()
                    if not is_temp_name(v) and p not in live_views:
                        plan.views.append(p)
    for top in ("blobs", "adapters", "views", "remotes"):
        plan.temps.extend(remove_stale_temps(store.root / top, grace_s, now))
    qdir = store.root / "quarantine"
    if qdir.is_dir():
        plan.quarantine = sorted(qdir.iterdir())
    for digest in store.iter_blobs():
        if digest in referenced:
            continue
        p = store.blob_path(digest)
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if now - st.st_mtime >= grace_s:
            plan.blobs.append(digest)
            plan.blob_bytes += st.st_size
    if dry_run:
        return plan
    for ref in plan.tags:
        name, _, t = ref.rpartition(":")
        try:
            store.delete_tag(name, t)
        except AdapterNotFoundError:
            pass
    for p in plan.views + plan.temps + plan.quarantine:
        if p.is_dir() and not p.is_symlink():
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for digest in plan.blobs:
        store.delete_blob(digest)
    if plan.tags:
        index.rebuild()
    return plan


def verify_blobs(store: LocalStore, targets: list[tuple[str, str]] | None) -> dict[str, Any]:
    """Re-hash the blobs of ``targets`` (``(name, version)``; None: every version and every
    blob of the store); quarantine corrupt ones."""
    problems: list[str] = []
    checked_versions = 0
    whole = targets is None
    if targets is None:
        targets = [(n, v) for n in store.list_names() for v in store.list_versions(n)]
    digests: dict[str, int] = {}
    for name, version in targets:
        try:
            m = parse_manifest(store.get_version(name, version), f"{name}@{version}")
        except ValueError as exc:
            problems.append(str(exc))
            continue
        checked_versions += 1
        for f in m.files:
            digests.setdefault(f.sha256, f.size)
    if whole:
        for d in store.iter_blobs():
            digests.setdefault(d, -1)
    for digest, size in sorted(digests.items()):
        path = store.blob_path(digest)
        if not path.is_file():
            problems.append(f"{path}: blob is missing")
            continue
        got_size, got = sha256_file(path)
        if got != digest or (size >= 0 and got_size != size):
            moved = store.quarantine_blob(digest)
            problems.append(f"{path}: corrupt (sha256 {got[:12]}..., {got_size} bytes); moved to {moved}")
    return {"versions": checked_versions, "blobs": len(digests), "problems": problems, "ok": not problems}
