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

SCHEMA_VERSION = "1"
STALE_S = 120.0
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"
_WHERE = re.compile(r"^\s*([A-Za-z0-9_.:/-]+)\s*(>=|<=|==|!=|=|>|<)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_OPS = {">": ">", "<": "<", ">=": ">=", "<=": "<=", "=": "=", "==": "=", "!=": "!="}

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions(
    name TEXT NOT NULL, version TEXT NOT NULL, task TEXT, method TEXT NOT NULL,
    method_kind TEXT NOT NULL, base_name TEXT NOT NULL, base_sha256 TEXT NOT NULL,
    created TEXT NOT NULL, size INTEGER NOT NULL, trainable INTEGER NOT NULL,
    description TEXT NOT NULL, PRIMARY KEY(name, version));
CREATE TABLE IF NOT EXISTS tags(name TEXT NOT NULL, tag TEXT NOT NULL, version TEXT NOT NULL,
    PRIMARY KEY(name, tag));
CREATE TABLE IF NOT EXISTS metrics(name TEXT NOT NULL, version TEXT NOT NULL, task TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_by_metric ON metrics(metric, value);
CREATE INDEX IF NOT EXISTS metrics_by_version ON metrics(name, version);
CREATE INDEX IF NOT EXISTS versions_task ON versions(task);
CREATE INDEX IF NOT EXISTS versions_method ON versions(method);
CREATE INDEX IF NOT EXISTS versions_base ON versions(base_sha256);
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags(tag);
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
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_DDL)
        return conn

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            conn = self._connect()
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            built = row is not None and row[0] == SCHEMA_VERSION
        except sqlite3.DatabaseError:
            # Corrupt or not a database: the index is only a cache; start over.
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
    def _rows(manifest: Manifest) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        name, version = manifest.name, manifest.version or ""
        row = (
            name, version, manifest.task, manifest.method, manifest.method_kind, manifest.base.name,
            manifest.base.weights_sha256, manifest.created.isoformat(), sum(f.size for f in manifest.files),
            manifest.trainable_parameters, manifest.description[:500],
        )
        metrics = [
            (name, version, task, metric, float(value))
            for task, values in manifest.metrics.items()
            for metric, value in values.items()
        ]
        return row, metrics

    def _insert(self, conn: sqlite3.Connection, manifest: Manifest) -> None:
        row, metrics = self._rows(manifest)
        conn.execute("DELETE FROM metrics WHERE name=? AND version=?", row[:2])
        conn.execute("INSERT OR REPLACE INTO versions VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
        conn.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", metrics)

    def add_version(self, manifest: Manifest) -> None:
        conn = self._open()
        with _txn(conn):
            self._insert(conn, manifest)

    def remove_version(self, name: str, version: str) -> None:
        conn = self._open()
        with _txn(conn):
            conn.execute("DELETE FROM versions WHERE name=? AND version=?", (name, version))
            conn.execute("DELETE FROM metrics WHERE name=? AND version=?", (name, version))
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
        sql = ["SELECT name, version, task, method, method_kind, base_name, base_sha256, created, size FROM versions v WHERE 1=1"]
        args: list[Any] = []
        if name:
            if any(c in name for c in "*?"):
                sql.append("AND name GLOB ?")
                args.append(name)
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
            sql.append("AND (base_sha256 LIKE ? OR base_name = ?)")
            args.extend([base.lower() + "%", base])
        if tag:
            sql.append("AND EXISTS (SELECT 1 FROM tags t WHERE t.name=v.name AND t.version=v.version AND t.tag=?)")
            args.append(tag)
        for cond in where:
            c = parse_where(cond) if isinstance(cond, str) else cond
            clause = f"EXISTS (SELECT 1 FROM metrics m WHERE m.name=v.name AND m.version=v.version AND m.metric=? AND m.value {c.op} ?"
            args.extend([c.metric, c.value])
            if c.task is not None:
                clause += " AND m.task=?"
                args.append(c.task)
            sql.append("AND " + clause + ")")
        rows = conn.execute(" ".join(sql), args).fetchall()
        rows.sort(key=lambda r: (r[0], version_key(r[1])), reverse=False)
        out = []
        for r in rows[:limit] if limit else rows:
            out.append({
                "name": r[0], "version": r[1], "ref": f"{r[0]}@{r[1]}", "task": r[2], "method": r[3],
                "method_kind": r[4], "base": r[5], "base_sha256": r[6], "created": r[7], "size": r[8],
            })
        if out:
            self._attach_details(conn, out)
        return out

    def _attach_details(self, conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
        keys = {(r["name"], r["version"]): r for r in rows}
        for r in rows:
            r["tags"], r["metrics"] = [], {}
        names = sorted({r["name"] for r in rows})
        for chunk in range(0, len(names), 500):
            part = names[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            for n, t, v in conn.execute(f"SELECT name, tag, version FROM tags WHERE name IN ({marks})", part):
                if (n, v) in keys:
                    keys[(n, v)]["tags"].append(t)
            for n, v, task, metric, value in conn.execute(
                f"SELECT name, version, task, metric, value FROM metrics WHERE name IN ({marks})", part
            ):
                if (n, v) in keys:
                    keys[(n, v)]["metrics"].setdefault(task, {})[metric] = value

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

