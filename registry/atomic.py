"""Crash-safe file writes for the stores.

Every write goes to a process-unique temporary file *in the target's directory* (so the
final rename is atomic on one filesystem), is fsynced, then renamed into place, and the
directory is fsynced so the rename itself survives a power cut. A reader therefore sees
either nothing or the complete file, never a half-written one.

Two kinds of "into place":

* :func:`atomic_write` / :func:`replace_file` — replace whatever is there (tags,
  content-addressed blobs, whose bytes are identical by construction).
* :func:`create_exclusive` — create-if-absent (immutable versions). The complete temp
  file is hard-linked to the final name; ``link`` fails with ``EEXIST`` if anything is
  there, so of two writers exactly one wins, without any lock. Filesystems without hard
  links fall back to ``O_CREAT|O_EXCL`` on the final name (still one winner; a crash
  mid-write there leaves a truncated file that readers report as corrupt).

No lock is needed for correctness anywhere; temp names start with ``.`` so listings skip
them, and ``gc`` removes ones left by killed processes.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from adapterhub.errors import AdapterhubError, IntegrityError, StoreError, VersionExistsError

TMP_MARK = ".tmp-"
CHUNK = 1024 * 1024


def temp_path(final: Path) -> Path:
    """A name no other process or thread will pick, next to ``final``."""
    return final.parent / f".{final.name}{TMP_MARK}{os.getpid()}-{os.urandom(6).hex()}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TMP_MARK in name


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some filesystems cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _store_error(exc: OSError, path: Path, action: str) -> StoreError:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT or exc.errno == errno.EFBIG:
        return StoreError(f"no space left while {action} {path} ({os.strerror(exc.errno)})")
    return StoreError(f"could not {action} {path}: {exc.strerror or exc}")


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def _temp_for(final: Path, action: str) -> Iterator[tuple[Path, BinaryIO]]:
    """Open a fresh temp file beside ``final``; remove it unless the body renamed it."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _store_error(exc, final.parent, "create directory") from None
    tmp = temp_path(final)
    try:
        fh = open(tmp, "xb")
    except OSError as exc:
        raise _store_error(exc, tmp, action) from None
    try:
        with fh:
            yield tmp, fh
    except AdapterhubError:
        _unlink_quiet(tmp)
        raise
    except OSError as exc:
        _unlink_quiet(tmp)
        if exc.errno is None:
            raise  # not a filesystem error (e.g. a network read timeout from a download)
        raise _store_error(exc, final, action) from None
    except BaseException:
        _unlink_quiet(tmp)
        raise
    # The body renamed or linked the temp away; a leftover (link path) is removed here.
    _unlink_quiet(tmp)


def _finish(fh: BinaryIO, sync: bool = True) -> None:
    fh.flush()
    if sync:
        os.fsync(fh.fileno())


def atomic_write(final: Path, data: bytes, sync: bool = True) -> None:
    """Replace ``final`` with ``data`` atomically (temp + fsync + rename + dir fsync).

    ``sync=False`` keeps the atomic rename but skips the fsyncs: for caches, whose
    contents are re-verified on every read and can always be fetched again.
    """
    with _temp_for(final, "write") as (tmp, fh):
        fh.write(data)
        _finish(fh, sync)
        os.replace(tmp, final)
    if sync:
        fsync_dir(final.parent)


def create_exclusive(final: Path, data: bytes, what: str, sync: bool = True) -> None:
    """Create ``final`` with ``data`` only if it does not exist (VersionExistsError)."""
    with _temp_for(final, "write") as (tmp, fh):
        fh.write(data)
        _finish(fh, sync)
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise VersionExistsError(f"{what} already exists; versions are immutable") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                raise
            _create_excl_fallback(final, data, what)
    if sync:
        fsync_dir(final.parent)


def _create_excl_fallback(final: Path, data: bytes, what: str) -> None:
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise VersionExistsError(f"{what} already exists; versions are immutable") from None
    try:
        os.write(fd, data)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        _unlink_quiet(final)
        raise
    os.close(fd)


def copy_verified(
    source: BinaryIO,
    final: Path,
    sha256: str,
    size: int | None,
    name: str,
    progress: Callable[[int], None] | None = None,
    crash_hook: Callable[[int], None] | None = None,
    sync: bool = True,
) -> None:
    """Stream ``source`` into ``final`` while hashing; rename only if size+sha256 match.

    Used for blobs: what lands under the blob's name is always exactly the bytes its
    name promises. ``crash_hook(bytes_written)`` lets fault tests kill the process
    mid-write.
    """
    with _temp_for(final, "write") as (tmp, fh):
        digest = hashlib.sha256()
        written = 0
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            fh.write(chunk)
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))
            if crash_hook is not None:
                crash_hook(written)
        _finish(fh, sync)
        if size is not None and written != size:
            raise IntegrityError(f"{name}: size {written} bytes, expected {size}")
        if digest.hexdigest() != sha256:
            raise IntegrityError(f"{name}: sha256 {digest.hexdigest()[:16]}..., expected {sha256[:16]}...")
        os.chmod(tmp, 0o444)  # blobs are immutable; discourage in-place edits of pulled files
        os.replace(tmp, final)
    if sync:
        fsync_dir(final.parent)


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, hex sha256) of a file, read once in large chunks."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
        size = fh.tell()
    return size, digest.hexdigest()


def verify_file(path: Path, size: int, sha256: str, name: str | None = None) -> None:
    """IntegrityError naming the file unless its size and sha256 match."""
    label = name or str(path)
    try:
        st_size = os.stat(path).st_size
    except FileNotFoundError:
        raise IntegrityError(f"{label}: file is missing") from None
    if st_size != size:
        raise IntegrityError(f"{label}: size {st_size} bytes, expected {size} (truncated or replaced)")
    got_size, got = sha256_file(path)
    if got_size != size or got != sha256:
        raise IntegrityError(f"{label}: sha256 mismatch (got {got[:16]}..., expected {sha256[:16]}...); the file is corrupt")


def remove_stale_temps(directory: Path, older_than_s: float, now: float) -> list[Path]:
    """Temp files under ``directory`` older than ``older_than_s`` (left by killed writers)."""
    found: list[Path] = []
    if not directory.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(directory):
        for entry in filenames + dirnames:
            if is_temp_name(entry):
                p = Path(dirpath) / entry
                try:
                    if now - p.lstat().st_mtime >= older_than_s:
                        found.append(p)
                except FileNotFoundError:
                    continue
    return found
