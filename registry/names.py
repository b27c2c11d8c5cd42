"""Adapter names, versions, tags and references — one rule, checked everywhere.

The rule (compatible with Hugging Face repo ids, so an adapter name can also be a Hub
repo name):

* a **name** is ``name`` or ``namespace/name``;
* each **segment** matches ``[A-Za-z0-9][A-Za-z0-9._-]*``, is at most 96 characters,
  does not end with ``.`` or ``-``, and contains neither ``..`` nor ``--``;
* ASCII only: unicode look-alikes (``ａdapter``, Cyrillic ``а``), NUL and control
  characters, separators other than one ``/``, and absolute paths are all refused;
* a **version** is semver-like: ``MAJOR.MINOR.PATCH`` with an optional
  ``-prerelease`` (``1.2.0``, ``0.3.1-rc.1``), at most 64 characters;
* a **tag** is one segment (``latest``, ``prod``, ``v2``), at most 64 characters;
* a **reference** is ``name`` (the ``latest`` tag, else the highest version),
  ``name@1.2.0`` (an exact, immutable version) or ``name:tag``.

Names are case-sensitive. The rule keeps every name a safe relative path, but store code
still resolves each path and checks it stays inside the store root (:func:`safe_join`),
so a symlink planted inside the store cannot lead a read or write outside it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from adapterhub.errors import InvalidNameError

MAX_SEGMENT = 96
MAX_VERSION = 64
MAX_TAG = 64
# A name of two segments fits the manifest's 200-character name field.
MAX_NAME = 2 * MAX_SEGMENT + 1
DEFAULT_TAG = "latest"
# Directory used for names without a namespace. It can never collide with a namespace:
# segments must start with a letter or digit.
NO_NAMESPACE = "_"

_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(?:-([0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*))?\Z")


def _show(text: str) -> str:
    """A printable, bounded rendering of hostile input for a one-line error."""
    shown = ascii(text)
    return shown if len(shown) <= 80 else shown[:77] + "...'"


def _check_segment(segment: str, whole: str, what: str, limit: int = MAX_SEGMENT) -> None:
    if not segment:
        raise InvalidNameError(f"invalid {what} {_show(whole)}: empty segment")
    if not segment.isascii():
        raise InvalidNameError(f"invalid {what} {_show(whole)}: only ASCII letters, digits, '.', '_' and '-' are allowed")
    if len(segment) > limit:
        raise InvalidNameError(f"invalid {what} {_show(whole)}: segment is {len(segment)} characters, the limit is {limit}")
    if not _SEGMENT_RE.match(segment):
        raise InvalidNameError(
            f"invalid {what} {_show(whole)}: segments must start with a letter or digit and contain only letters, digits, '.', '_' and '-'"
        )
    if ".." in segment or "--" in segment:
        raise InvalidNameError(f"invalid {what} {_show(whole)}: '..' and '--' are not allowed")
    if segment[-1] in ".-":
        raise InvalidNameError(f"invalid {what} {_show(whole)}: must not end with '.' or '-'")


def validate_name(name: str) -> str:
    """Return ``name`` unchanged if it follows the rule, else raise InvalidNameError."""
    if not isinstance(name, str):
        raise InvalidNameError(f"adapter name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidNameError("adapter name is empty")
    if len(name) > MAX_NAME:
        raise InvalidNameError(f"invalid adapter name {_show(name)}: {len(name)} characters, the limit is {MAX_NAME}")
    if name.startswith("/") or name.startswith("\\"):
        raise InvalidNameError(f"invalid adapter name {_show(name)}: absolute paths are not names")
    if ".." in name:
        raise InvalidNameError(f"invalid adapter name {_show(name)}: '..' is not allowed (names are never paths)")
    parts = name.split("/")
    if len(parts) > 2:
        raise InvalidNameError(f"invalid adapter name {_show(name)}: use 'name' or 'namespace/name' (one '/')")
    for part in parts:
        _check_segment(part, name, "adapter name")
    return name


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not version.isascii() or len(version) > MAX_VERSION or not _VERSION_RE.match(version):
        raise InvalidNameError(
            f"invalid version {_show(str(version))}: expected MAJOR.MINOR.PATCH with an optional -prerelease, e.g. 1.2.0"
        )
    return version


def validate_tag(tag: str) -> str:
    if not isinstance(tag, str):
        raise InvalidNameError(f"tag must be a string, got {type(tag).__name__}")
    _check_segment(tag, tag, "tag", MAX_TAG)
    if _VERSION_RE.match(tag):
        # A tag spelled like a version would make `show`/`ls` output ambiguous.
        raise InvalidNameError(f"invalid tag {_show(tag)}: a tag must not look like a version")
    return tag


def split_name(name: str) -> tuple[str, str]:
    """``ns/name`` -> (``ns``, ``name``); ``name`` -> (``_``, ``name``) for path building."""
    validate_name(name)
    if "/" in name:
        ns, base = name.split("/", 1)
        return ns, base
    return NO_NAMESPACE, name


def join_name(namespace: str, base: str) -> str:
    """Inverse of :func:`split_name` (used when listing a store)."""
    return base if namespace == NO_NAMESPACE else f"{namespace}/{base}"


def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Semver ordering: releases sort after their prereleases; numeric ids numerically."""
    m = _VERSION_RE.match(version)
    if m is None:
        raise InvalidNameError(f"invalid version {_show(version)}")
    major, minor, patch, pre = m.groups()
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), 0, ids  # type: ignore[return-value]


def latest_version(versions: list[str]) -> str | None:
    good = [v for v in versions if _VERSION_RE.match(v)]
    return max(good, key=version_key) if good else None


def next_version(versions: list[str]) -> str:
    """The automatic version of a push: the highest release's next patch, else ``0.1.0``."""
    releases = [v for v in versions if _VERSION_RE.match(v) and "-" not in v]
    if not releases:
        return "0.1.0"
    major, minor, patch, _, _ = version_key(max(releases, key=version_key))
    return f"{major}.{minor}.{patch + 1}"


@dataclass(frozen=True)
class Ref:
    """A parsed reference: exactly one of ``version``/``tag`` is set, or neither."""

    name: str
    version: str | None = None
    tag: str | None = None

    def __str__(self) -> str:
        if self.version:
            return f"{self.name}@{self.version}"
        if self.tag:
            return f"{self.name}:{self.tag}"
        return self.name

    @property
    def pinned(self) -> bool:
        return self.version is not None


def parse_ref(text: str) -> Ref:
    """Parse ``name``, ``name@1.2.0`` or ``name:tag`` (InvalidNameError on anything else)."""
    if not isinstance(text, str) or not text:
        raise InvalidNameError("empty adapter reference")
    return _parse_ref(text)


@lru_cache(maxsize=1024)
def _parse_ref(text: str) -> Ref:
    # Cached: a Ref is immutable, and a service pulling the same few references over and
    # over need not re-run the name rule each time. Errors are raised, never cached.
    if "@" in text and ":" in text:
        raise InvalidNameError(f"invalid reference {_show(text)}: use either name@version or name:tag, not both")
    if "@" in text:
        name, _, version = text.partition("@")
        return Ref(validate_name(name), version=validate_version(version))
    if ":" in text:
        name, _, tag = text.partition(":")
        return Ref(validate_name(name), tag=validate_tag(tag))
    return Ref(validate_name(text))


def parse_name_version(text: str) -> tuple[str, str | None]:
    """``NAME[@VERSION]`` as the push command takes it."""
    ref = parse_ref(text)
    if ref.tag is not None:
        raise InvalidNameError(f"invalid push target {_show(text)}: use NAME or NAME@VERSION (tags go in --tag)")
    return ref.name, ref.version


@lru_cache(maxsize=64)
def _resolved_root(root: str) -> str:
    return str(Path(root).resolve())


def safe_join(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing any result that resolves outside ``root``.

    Symlinks are followed: a symlink inside the store that points elsewhere is caught.
    Parts are validated names already; this is defence in depth. Fast path (every pull
    calls this): components below the root are ``lstat``-ed and only a symlink among
    them triggers a full ``resolve``; without symlinks and with no ``..`` the joined path
    *is* the resolved path. Plain strings, because pathlib costs more than the syscalls.
    """
    components: list[str] = []
    for part in parts:
        if not part or "\x00" in part or part.startswith("/"):
            raise InvalidNameError(f"path component {_show(part)} escapes the store")
        for comp in part.split("/"):
            if comp in ("", ".", ".."):
                raise InvalidNameError(f"path component {_show(part)} escapes the store")
            components.append(comp)
    base = _resolved_root(str(root))
    current = base
    checking = True
    for comp in components:
        current = f"{current}/{comp}"
        if not checking:
            continue
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            checking = False  # nothing below a missing component can be a symlink
            continue
        if stat.S_ISLNK(mode):
            target = base + "/" + "/".join(components)
            try:
                resolved = Path(target).resolve()
            except (RuntimeError, OSError):  # a symlink loop
                raise InvalidNameError(f"{_show('/'.join(parts))}: symlink loop inside the store at {base}") from None
            if not resolved.is_relative_to(base):
                raise InvalidNameError(f"{_show('/'.join(parts))} resolves to {resolved}, outside the store at {base}")
            return resolved
    return Path(current)
