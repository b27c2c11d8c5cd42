"""The search index of a local store: SQLite, rebuilt from the manifests at will.

The manifests are the truth; the index is a cache that makes ``search`` fast over
thousands of adapters (name, task, method, base fingerprint, tag, metric thresholds).
Losing or corrupting ``index.sqlite`` loses nothing: it is rebuilt automatically.

Keeping it in step without locks: a process that changes the store first drops a
*pending marker* (``pending/<host>-<pid>-<rand>``), changes the store, updates the index
and removes the marker. A marker left behind by a dead process (same host and the pid is
gone, or older than :data:`STALE_S`) means the index may have missed a change, so the
next search rebuilds it. A rebuild scans the manifests inside one SQLite write
transaction, so it serialises with concurrent index updates and cannot drop them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapterhub.registry.local import LocalStore
from adapterhub.registry.names import version_key

from adapterhub.errors import ConfigError
from adapterhub.manifest import Manifest, parse_manifest

SCHEMA_VERSION = "5"
STALE_S = 120.0
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"
_WHERE = re.compile(r"^\s*([A-Za-z0-9_.:/-]+)\s*(>=|<=|==|!=|=|>|<)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_OPS = {">": ">", "<": "<", ">=": ">=", "<=": "<=", "=": "=", "==": "=", "!=": "!="}

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, vkey TEXT NOT NULL, task TEXT, method TEXT NOT NULL,
    method_kind TEXT NOT NULL, base_name TEXT NOT NULL, base_sha256 TEXT NOT NULL,
    created TEXT NOT NULL, size INTEGER NOT NULL, trainable INTEGER NOT NULL,
    description TEXT NOT NULL, metrics_json TEXT NOT NULL, UNIQUE(name, version));
CREATE TABLE IF NOT EXISTS tags(name TEXT NOT NULL, tag TEXT NOT NULL, version TEXT NOT NULL,
    PRIMARY KEY(name, tag));
CREATE TABLE IF NOT EXISTS metrics(vid INTEGER NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_by_metric ON metrics(metric, value, vid);
CREATE INDEX IF NOT EXISTS metrics_by_vid ON metrics(vid, metric, value);
CREATE INDEX IF NOT EXISTS versions_order ON versions(name, vkey);
CREATE INDEX IF NOT EXISTS versions_task ON versions(task);
CREATE INDEX IF NOT EXISTS versions_method ON versions(method);
CREATE INDEX IF NOT EXISTS versions_base ON versions(base_sha256);
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags(tag, name, version);
"""


@dataclass(frozen=True)
class Condition:
    """One ``--where`` threshold: ``metric OP value`` (``task.metric`` narrows the task)."""

    task: str | None
    metric: str
    op: str
    value: float


def parse_where(text: str) -> Condition:
    m = _WHERE.match(text)
    if not m:
        raise ConfigError(f"invalid --where {text!r}: expected METRIC OP NUMBER, e.g. rougeL>0.3 or sentiment-rt.accuracy>=0.8")
    field, op, value = m.groups()
    task: str | None = None
    if "." in field:
        task, field = field.rsplit(".", 1)
    return Condition(task, field, _OPS[op], float(value))


def sortable_version(version: str) -> str:
    """A string whose byte order is semver precedence (for ORDER BY in SQLite)."""
    major, minor, patch, release, pre = version_key(version)
    head = f"{major:010d}.{minor:010d}.{patch:010d}"
    if release:
        return head + "~"  # '~' sorts after '-': a release after all its prereleases
    ids = ".".join(f"0{v:010d}" if kind == 0 else f"1{v}" for kind, v in pre)
    return f"{head}-{ids}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Index:
    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.path = store.root / "index.sqlite"
        self.pending = store.root / "pending"
        self._conn: sqlite3.Connection | None = None

    # -- connection and health --------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.OperationalError:
            row = None  # a new (or foreign) file: set it up below
        if row is None or row[0] != SCHEMA_VERSION:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_DDL)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            built = row is not None and row[0] == SCHEMA_VERSION
            if row is not None and not built:
                raise sqlite3.DatabaseError(f"index schema {row[0]}, this adapterhub writes {SCHEMA_VERSION}")
        except sqlite3.DatabaseError:
            # Corrupt, not a database, or an older schema: the index is only a cache.
            if conn is not None:
                conn.close()
            self._discard()
            conn = self._connect()
            built = False
        self._conn = conn
        if not built:
            self.rebuild()
        return conn

    def _discard(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _stale_markers(self) -> list[Path]:
        try:
            entries = os.listdir(self.pending)
        except FileNotFoundError:
            return []
        now = time.time()
        stale = []
        for entry in entries:
            p = self.pending / entry
            parts = entry.split("-")
            try:
                age = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            dead = False
            if len(parts) >= 3 and "-".join(parts[:-2]) == _HOST and parts[-2].isdigit():
                dead = not _pid_alive(int(parts[-2]))
            if dead or age > STALE_S:
                stale.append(p)
        return stale

    def ensure_fresh(self) -> sqlite3.Connection:
        conn = self._open()
        stale = self._stale_markers()
        if stale:
            self.rebuild()
            for p in stale:
                p.unlink(missing_ok=True)
        return conn

    @contextmanager
    def change(self) -> Iterator[None]:
        """Wrap a store mutation: marker, mutation, (caller updates index), unmark."""
        self.pending.mkdir(parents=True, exist_ok=True)
        marker = self.pending / f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        marker.touch()
        try:
            yield
        finally:
            # Reached on success and on handled errors (e.g. VersionExistsError); only
            # a killed process leaves its marker behind, which is what it is for.
            marker.unlink(missing_ok=True)

    # -- updates ----------------------------------------------------------------------
    @staticmethod
    def _row(manifest: Manifest) -> tuple[Any, ...]:
        return (
            manifest.name, manifest.version or "", sortable_version(manifest.version or "0.0.0"), manifest.task, manifest.method, manifest.method_kind,
            manifest.base.name, manifest.base.weights_sha256, manifest.created.isoformat(),
            sum(f.size for f in manifest.files), manifest.trainable_parameters, manifest.description[:500],
            # Denormalised copy for result rows; the metrics table below is for filtering.
            json.dumps(manifest.metrics, sort_keys=True),
        )

    def _insert(self, conn: sqlite3.Connection, manifest: Manifest) -> None:
        row = self._row(manifest)
        old = conn.execute("SELECT id FROM versions WHERE name=? AND version=?", row[:2]).fetchone()
        if old is not None:
            conn.execute("DELETE FROM metrics WHERE vid=?", old)
            conn.execute("DELETE FROM versions WHERE id=?", old)
        cur = conn.execute(
            "INSERT INTO versions(name, version, vkey, task, method, method_kind, base_name, base_sha256, created,"
            " size, trainable, description, metrics_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row,
        )
        vid = cur.lastrowid
        conn.executemany(
            "INSERT INTO metrics VALUES (?,?,?,?)",
            [(vid, task, metric, float(value)) for task, values in manifest.metrics.items() for metric, value in values.items()],
        )

    def add_version(self, manifest: Manifest) -> None:
        conn = self._open()
        with _txn(conn):
            self._insert(conn, manifest)

    def remove_version(self, name: str, version: str) -> None:
        conn = self._open()
        with _txn(conn):
            conn.execute("DELETE FROM metrics WHERE vid IN (SELECT id FROM versions WHERE name=? AND version=?)", (name, version))
            conn.execute("DELETE FROM versions WHERE name=? AND version=?", (name, version))
            conn.execute("DELETE FROM tags WHERE name=? AND version=?", (name, version))

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        conn = self._open()
        with _txn(conn):
            conn.execute("DELETE FROM tags WHERE name=?", (name,))
            conn.executemany("INSERT INTO tags VALUES (?,?,?)", [(name, t, v) for t, v in tags.items()])

    def rebuild(self) -> int:
        """Re-read every manifest and tag of the store; returns the number of versions."""
        conn = self._conn if self._conn is not None else self._connect()
        self._conn = conn
        count = 0
        with _txn(conn):
            conn.execute("DELETE FROM versions")
            conn.execute("DELETE FROM metrics")
            conn.execute("DELETE FROM tags")
            for name in self.store.list_names():
                for version in self.store.list_versions(name):
                    try:
                        manifest = parse_manifest(self.store.get_version(name, version), f"{name}@{version}")
                    except ValueError:
                        continue  # corrupt manifests are reported by `verify`, not indexed
                    self._insert(conn, manifest.model_copy(update={"name": name, "version": version}))
                    count += 1
                tags = self.store.list_tags(name)
                conn.executemany("INSERT INTO tags VALUES (?,?,?)", [(name, t, v) for t, v in tags.items()])
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("ANALYZE")  # planner statistics: pick the selective index per query
        return count

    # -- queries ----------------------------------------------------------------------
    def search(
        self,
        name: str | None = None,
        task: str | None = None,
        method: str | None = None,
        base: str | None = None,
        tag: str | None = None,
        where: Iterable[str | Condition] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        conn = self.ensure_fresh()
        # Tags and metrics come back in the same statement (tags aggregated per row,
        # metrics as the JSON stored with the row), so a query is one pass through SQLite.
        sql = [
            "SELECT id, name, version, task, method, method_kind, base_name, base_sha256, created, size,"
            " (SELECT group_concat(tag, ' ') FROM tags t WHERE t.name=v.name AND t.version=v.version), metrics_json"
            " FROM versions v WHERE 1=1"
        ]
        args: list[Any] = []
        if name:
            if any(c in name for c in "*?["):
                sql.append("AND name GLOB ?")
            else:
                sql.append("AND instr(lower(name), lower(?)) > 0")
            args.append(name)
        if task:
            sql.append("AND task = ?")
            args.append(task)
        if method:
            sql.append("AND method = ?")
            args.append(method)
        if base:
            # A sha256 prefix as an index range (LIKE would scan), or the base's name.
            lo = base.lower()
            sql.append("AND ((base_sha256 >= ? AND base_sha256 < ?) OR base_name = ?)")
            args.extend([lo, lo + "\uffff", base])
        if tag:
            # Driven from the tag index: only the versions carrying the tag are visited.
            sql.append("AND (name, version) IN (SELECT name, version FROM tags WHERE tag=?)")
            args.append(tag)
        narrowed = bool(name or task or method or base or tag)
        for cond in where:
            c = parse_where(cond) if isinstance(cond, str) else cond
            # Thresholds alone: evaluate each once through the (metric, value) index.
            # With other filters: probe the few candidate rows through (vid, metric).
            if narrowed:
                clause = f"EXISTS (SELECT 1 FROM metrics m INDEXED BY metrics_by_vid WHERE m.vid=v.id AND m.metric=? AND m.value {c.op} ?"
            else:
                clause = f"id IN (SELECT vid FROM metrics WHERE metric=? AND value {c.op} ?"
            args.extend([c.metric, c.value])
            if c.task is not None:
                clause += " AND task=?"
                args.append(c.task)
            sql.append("AND " + clause + ")")
        sql.append("ORDER BY name, vkey")
        if limit:
            sql.append("LIMIT ?")
            args.append(int(limit))
        rows = conn.execute(" ".join(sql), args).fetchall()
        loads = json.loads
        return [
            {
                "name": r[1], "version": r[2], "ref": f"{r[1]}@{r[2]}", "task": r[3], "method": r[4],
                "method_kind": r[5], "base": r[6], "base_sha256": r[7], "created": r[8], "size": r[9],
                "tags": sorted(r[10].split()) if r[10] else [], "metrics": loads(r[11]),
            }
            for r in rows
        ]

    def names(self) -> list[dict[str, Any]]:
        """Every adapter with its versions and tags (for ``ls``)."""
        conn = self.ensure_fresh()
        table: dict[str, dict[str, Any]] = {}
        for name, version, task, method in conn.execute("SELECT name, version, task, method FROM versions"):
            e = table.setdefault(name, {"name": name, "versions": [], "tags": {}, "task": task, "method": method})
            e["versions"].append(version)
        for name, tag, version in conn.execute("SELECT name, tag, version FROM tags"):
            if name in table:
                table[name]["tags"][tag] = version
        for e in table.values():
            e["versions"].sort(key=version_key)
            e["latest"] = e["tags"].get("latest", e["versions"][-1])
        return [table[n] for n in sorted(table)]


@contextmanager
def _txn(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

