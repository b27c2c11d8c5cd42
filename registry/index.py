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
The only lock (``index.lock``) guards creating and replacing the file itself; see
"connection and health" below.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.registry.atomic import TMP_MARK, temp_path
from adapterhub.registry.names import version_key

from adapterhub.errors import ConfigError, StoreError

if TYPE_CHECKING:  # the manifest model (pydantic) is only needed to write the index
    from adapterhub.registry.local import LocalStore

    from adapterhub.manifest import Manifest

SCHEMA_VERSION = "6"
# SQLite's page cache per connection, in KiB (the default is 2 MiB, less than the index of
# 10,000 adapters, so each full scan re-read pages from the OS). Memory is only taken as
# pages are read.
CACHE_KIB = 32 * 1024
STALE_S = 120.0


def _hostname() -> str:
    if hasattr(os, "uname"):
        return os.uname().nodename  # what socket.gethostname() returns, without importing socket
    import socket

    return socket.gethostname()


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", _hostname())[:64] or "host"
_WHERE = re.compile(r"^\s*([A-Za-z0-9_.:/-]+)\s*(>=|<=|==|!=|=|>|<)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_OPS = {">": ">", "<": "<", ">=": ">=", "<=": "<=", "=": "=", "==": "=", "!=": "!="}

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, vkey TEXT NOT NULL, task TEXT, method TEXT NOT NULL,
    method_kind TEXT NOT NULL, base_name TEXT NOT NULL, base_sha256 TEXT NOT NULL,
    created TEXT NOT NULL, size INTEGER NOT NULL, trainable INTEGER NOT NULL,
    description TEXT NOT NULL, metrics_json TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '',
    UNIQUE(name, version));
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
        self._ident: tuple[int, int] | None = None  # (device, inode) of the file _conn has open

    # -- connection and health --------------------------------------------------------
    # Many processes share one index file, and any of them may be killed at any moment.
    # So the file only ever appears complete: it is created under a temporary name (in
    # WAL mode, every table in place) and linked into place, and it is only opened, never
    # created, by ``sqlite3.connect`` (``mode=rw``). Switching a shared file to WAL or
    # running DDL on it concurrently fails with "database is locked" *without* waiting
    # for the busy timeout, which is why neither happens on the shared file. Creating and
    # discarding hold an exclusive ``flock`` on ``index.lock``, opening a shared one, so
    # no process pairs a new file with the write-ahead log of a discarded one. Only a
    # corrupt or foreign file is discarded; a busy or failing one is an error, because
    # deleting a file other processes are using is what turns "busy" into corruption.
    def _connect(self) -> tuple[sqlite3.Connection, str | None]:
        """A connection to the existing file and the schema version it holds (None: not built yet)."""
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", timeout=30.0, isolation_level=None, uri=True)
        try:
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute("PRAGMA synchronous=NORMAL")
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn, (row[0] if row is not None else None)

    def _connect_checked(self) -> tuple[sqlite3.Connection, bool]:
        """A connection to a usable index file, and whether it holds a built index."""
        for _ in range(5):
            with self._lock(fcntl.LOCK_SH):
                try:
                    conn, schema = self._connect()
                except sqlite3.DatabaseError as e:
                    if not _unusable(e):
                        raise StoreError(f"search index {self.path} cannot be opened: {e}") from e
                else:
                    self._ident = _ident(self.path)
                    # Another schema version: rebuild() recreates the tables in place.
                    return conn, schema == SCHEMA_VERSION
            # Missing, corrupt or not ours: replace it with a fresh empty index.
            with self._lock(fcntl.LOCK_EX):
                self._recreate()
        raise StoreError(f"search index {self.path} keeps disappearing while it is opened")

    @contextmanager
    def _lock(self, how: int) -> Iterator[None]:
        path = self.store.root / "index.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            try:  # a store this user may only read: flock works on a read-only descriptor
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                yield  # nobody can create the index here either, so there is nothing to serialise
                return
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _recreate(self) -> None:
        """Under the exclusive lock: replace a missing or unusable file with an empty index."""
        try:
            conn, _ = self._connect()
            conn.close()
            return  # another process replaced it while this one waited for the lock
        except sqlite3.DatabaseError as e:
            if not _unusable(e):
                raise StoreError(f"search index {self.path} cannot be opened: {e}") from e
        self._discard()
        for leftover in self.path.parent.glob(f".{self.path.name}{TMP_MARK}*"):
            leftover.unlink(missing_ok=True)  # of a process killed while creating; we hold the lock
        tmp = temp_path(self.path)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")  # recorded in the file: every opener uses WAL
                conn.executescript(f"BEGIN IMMEDIATE;{_DDL}COMMIT;")
            finally:
                conn.close()  # the last connection checkpoints: the file alone is the database
            os.link(tmp, self.path)
        except FileExistsError:
            pass
        except (sqlite3.Error, OSError) as e:  # e.g. a store directory this user may not write
            raise StoreError(f"cannot create search index {self.path}: {e}") from None
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            if _ident(self.path) == self._ident:
                return self._conn
            # Replaced since (another process found it corrupt, or a user deleted it):
            # writes to the old file would be lost, so move to the new one.
            self.close()
        self._conn, built = self._connect_checked()
        if not built:
            self.rebuild()
        return self._conn

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
        marker = self.pending / f"{_HOST}-{os.getpid()}-{os.urandom(4).hex()}"
        marker.touch()
        try:
            yield
        finally:
            # Reached on success and on handled errors (e.g. VersionExistsError); only
            # a killed process leaves its marker behind, which is what it is for.
            marker.unlink(missing_ok=True)

    # -- updates ----------------------------------------------------------------------
    @staticmethod
    def _row(manifest: Manifest, name: str, version: str) -> tuple[Any, ...]:
        return (
            name, version, sortable_version(version or "0.0.0"), manifest.task, manifest.method, manifest.method_kind,
            manifest.base.name, manifest.base.weights_sha256, manifest.created.isoformat(),
            sum(f.size for f in manifest.files), manifest.trainable_parameters, manifest.description[:500],
            # Denormalised copy for result rows; the metrics table below is for filtering.
            json.dumps(manifest.metrics, sort_keys=True),
        )

    def _insert(self, conn: sqlite3.Connection, manifest: Manifest, name: str | None = None, version: str | None = None) -> None:
        row = self._row(manifest, name or manifest.name, version or manifest.version or "")
        old = conn.execute("SELECT id FROM versions WHERE name=? AND version=?", row[:2]).fetchone()
        if old is not None:
            conn.execute("DELETE FROM metrics WHERE vid=?", old)
            conn.execute("DELETE FROM versions WHERE id=?", old)
        # The row carries its tags too (kept in step by _write_tags): a search reads them
        # with the row instead of probing the tags table once per result.
        tags = " ".join(sorted(t for (t,) in conn.execute("SELECT tag FROM tags WHERE name=? AND version=?", row[:2])))
        cur = conn.execute(
            "INSERT INTO versions(name, version, vkey, task, method, method_kind, base_name, base_sha256, created,"
            " size, trainable, description, metrics_json, tags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (*row, tags),
        )
        vid = cur.lastrowid
        conn.executemany(
            "INSERT INTO metrics VALUES (?,?,?,?)",
            [(vid, task, metric, float(value)) for task, values in manifest.metrics.items() for metric, value in values.items()],
        )

    @staticmethod
    def _write_tags(conn: sqlite3.Connection, name: str, tags: dict[str, str]) -> None:
        """Replace the tags of ``name``: the tags table (for ``--tag``) and each row's copy."""
        conn.execute("DELETE FROM tags WHERE name=?", (name,))
        conn.executemany("INSERT INTO tags VALUES (?,?,?)", [(name, t, v) for t, v in tags.items()])
        conn.execute("UPDATE versions SET tags='' WHERE name=? AND tags<>''", (name,))
        by_version: dict[str, list[str]] = {}
        for t, v in tags.items():
            by_version.setdefault(v, []).append(t)
        conn.executemany(
            "UPDATE versions SET tags=? WHERE name=? AND version=?",
            [(" ".join(sorted(ts)), name, v) for v, ts in by_version.items()],
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
            self._write_tags(conn, name, tags)

    def rebuild(self) -> int:
        """Re-read every manifest and tag of the store; returns the number of versions."""
        from adapterhub.manifest import parse_manifest

        if self._conn is None:
            self._conn, _ = self._connect_checked()
        conn = self._conn
        count = 0
        with _txn(conn):
            # Start from fresh tables (DDL is transactional in SQLite): this also moves an
            # index of an older schema to this one, in place, without deleting the file.
            for table in ("meta", "versions", "tags", "metrics"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for name in self.store.list_names():
                for version in self.store.list_versions(name):
                    try:
                        manifest = parse_manifest(self.store.get_version(name, version), f"{name}@{version}")
                    except ValueError:
                        continue  # corrupt manifests are reported by `verify`, not indexed
                    self._insert(conn, manifest, name, version)
                    count += 1
                self._write_tags(conn, name, self.store.list_tags(name))
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
        # One pass through SQLite: tags and metrics are stored with each row (the tags
        # and metrics tables serve the filters).
        sql = [
            "SELECT name, version, task, method, method_kind, base_name, base_sha256, created, size, tags, metrics_json"
            " FROM versions v WHERE 1=1"
        ]
        args: list[Any] = []
        if name:
            if any(c in name for c in "*?["):
                sql.append("AND name GLOB ?")
                args.append(name)
            else:
                # Case-insensitive substring. LIKE folds ASCII case as lower() does (names
                # are ASCII) without building a lowered copy of every name it scans.
                sql.append("AND name LIKE ? ESCAPE '\\'")
                args.append("%" + re.sub(r"([\\%_])", r"\\\1", name) + "%")
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
        if not rows:
            return []
        # One JSON parse for all rows' metrics instead of one per row.
        metrics = json.loads("[" + ",".join([r[10] for r in rows]) + "]")
        return [
            {
                "name": r[0], "version": r[1], "ref": f"{r[0]}@{r[1]}", "task": r[2], "method": r[3],
                "method_kind": r[4], "base": r[5], "base_sha256": r[6], "created": r[7], "size": r[8],
                "tags": r[9].split() if r[9] else [], "metrics": m,
            }
            for r, m in zip(rows, metrics, strict=True)
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


def _ident(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


# SQLITE_CORRUPT, SQLITE_CANTOPEN (missing: opened with mode=rw), SQLITE_NOTADB, and the
# messages of the same errors for Python 3.10, whose exceptions carry no error code.
_UNUSABLE_CODES = (11, 14, 26)
_UNUSABLE_MESSAGES = ("no such table", "file is not a database", "database disk image is malformed", "unable to open database file")


def _unusable(e: sqlite3.DatabaseError) -> bool:
    """Whether ``e`` says the file is missing, corrupt or not an adapterhub index (so
    replacing it loses nothing), rather than busy or failing (so replacing it would
    pull it from under other processes). "no such table": a file without our tables,
    empty (from a crash before creation was atomic) or foreign."""
    if getattr(e, "sqlite_errorcode", None) in _UNUSABLE_CODES:
        return True
    return str(e).startswith(_UNUSABLE_MESSAGES)


@contextmanager
def _txn(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

