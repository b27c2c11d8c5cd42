"""``hf://org/repo[/prefix]`` stores: adapters in a Hugging Face Hub repository.

Layout inside the repo (under the optional prefix), the same as every other store, plus
model cards::

    <prefix>/blobs/sha256/ab/ab12...                  content-addressed files (LFS/Xet)
    <prefix>/adapters/<ns>/<name>/versions/<v>.json   immutable manifests
    <prefix>/adapters/<ns>/<name>/tags/<tag>
    <prefix>/adapters/<ns>/<name>/records/<v>/<id>.json
    <prefix>/adapters/<ns>/<name>/signatures/<v>/<sha256>.sig
    <prefix>/adapters/<ns>/<name>/README.md           model card of the latest push
    README.md                                         repo card (only if absent or ours)

A repo can hold one adapter (``hf://org/sentiment-lora``: its root README is that
adapter's card) or many under a prefix (``hf://org/adapters/team``).

Every change is one Hub commit. A version is created by a commit made with
``parent_commit`` = the head at which the version was checked absent: if anyone
committed meanwhile the Hub refuses it (HTTP 412), we re-check and retry, so two pushers
of one version cannot both win. Reads pin a revision: ``?revision=`` in the URL (a branch,
tag or commit sha; default ``main``). With ``HF_HUB_OFFLINE=1`` reads are served from the
local Hugging Face cache (``HF_HUB_CACHE``) — a version pulled once pulls offline.

``?staging=/path`` replaces the Hub by a local folder that receives exactly the files the
commits would upload (with the same conditional-commit rule): a dry run for reviewing a
push, and how the offline tests exercise this module. Not verified here against the live
Hub (no network in this environment); see docs/registry.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from adapterhub.registry.atomic import atomic_write, copy_verified
from adapterhub.registry.local import check_digest
from adapterhub.registry.names import join_name, split_name, validate_tag, validate_version

from adapterhub.errors import (
    AdapterNotFoundError,
    ConfigError,
    IntegrityError,
    RemoteUnavailableError,
    StoreError,
    VersionExistsError,
)
from adapterhub.manifest import Manifest, parse_manifest
from adapterhub.protocols.store import Progress

_SEG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
CARD_MARK = "<!-- adapterhub:model-card -->"
_COMMIT_TRIES = 8


class _Conflict(Exception):
    """The branch moved since the parent commit we built on."""


class Backend(Protocol):
    def head(self) -> str: ...

    def list_files(self, rev: str) -> list[str]: ...

    def download(self, path: str, rev: str) -> Path: ...

    def commit(self, adds: dict[str, bytes | Path], deletes: list[str], parent: str | None, message: str) -> str: ...


class FolderBackend:
    """A local folder standing in for the Hub: files as they would be committed.

    Commits are serialised by a lock file and carry a revision counter, so a commit on a
    stale parent is refused like the Hub refuses it (this emulates the server side).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _rev_file(self) -> Path:
        return self.root / ".revision"

    def head(self) -> str:
        try:
            return self._rev_file().read_text().strip() or "0"
        except FileNotFoundError:
            return "0"

    def list_files(self, rev: str) -> list[str]:
        out = []
        for dirpath, dirnames, files in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in files:
                if not f.startswith("."):
                    out.append(str(Path(dirpath, f).relative_to(self.root)))
        return sorted(out)

    def download(self, path: str, rev: str) -> Path:
        p = self.root / path
        if not p.is_file():
            raise AdapterNotFoundError(f"{path} not found")
        return p

    def commit(self, adds: dict[str, bytes | Path], deletes: list[str], parent: str | None, message: str) -> str:
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.head()
            if parent is not None and parent != current:
                raise _Conflict(f"head is {current}, not {parent}")
            for path, content in adds.items():
                data = content if isinstance(content, bytes) else Path(content).read_bytes()
                atomic_write(self.root / path, data)
            for path in deletes:
                (self.root / path).unlink(missing_ok=True)
            new = str(int(current) + 1)
            atomic_write(self._rev_file(), new.encode())
            return new


class HubBackend:
    """The real Hugging Face Hub through ``huggingface_hub``."""

    def __init__(self, repo_id: str, repo_type: str, revision: str, endpoint: str | None) -> None:
        from huggingface_hub import HfApi

        self.repo_id, self.repo_type, self.revision = repo_id, repo_type, revision
        self.api = HfApi(endpoint=endpoint)
        self.endpoint = endpoint

    @staticmethod
    def offline() -> bool:
        return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")

    @staticmethod
    def cache_dir() -> str | None:
        return os.environ.get("HF_HUB_CACHE") or None

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            yield
        except LocalEntryNotFoundError:
            if self.offline():
                raise AdapterNotFoundError(f"{what}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1 (hf://{self.repo_id})") from None
            raise AdapterNotFoundError(f"{what}: not found in hf://{self.repo_id}") from None
        except EntryNotFoundError:
            raise AdapterNotFoundError(f"{what}: not found in hf://{self.repo_id}") from None
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise StoreError(f"hf://{self.repo_id}@{self.revision}: repository or revision not found ({type(exc).__name__})") from None
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", 0)
            if status == 412:
                raise _Conflict(str(exc)) from None
            if status in (401, 403):
                raise StoreError(f"hf://{self.repo_id}: access denied while trying to {what} (set HF_TOKEN)") from None
            raise RemoteUnavailableError(f"hf://{self.repo_id}: {what} failed: HTTP {status}") from None
        except OSError as exc:  # connection errors surface as OSError subclasses
            raise RemoteUnavailableError(f"hf://{self.repo_id}: {what} failed: {type(exc).__name__}: {exc}") from None

    def head(self) -> str:
        if self.offline():
            return self.revision
        with self._errors("resolve the revision"):
            return str(self.api.repo_info(self.repo_id, revision=self.revision, repo_type=self.repo_type).sha)
        raise AssertionError("unreachable")

    def list_files(self, rev: str) -> list[str]:
        if self.offline():
            from huggingface_hub import snapshot_download

            with self._errors("list files"):
                snap = Path(snapshot_download(self.repo_id, repo_type=self.repo_type, revision=rev, cache_dir=self.cache_dir(), local_files_only=True))  # type: ignore[arg-type]
                return sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
        with self._errors("list files"):
            return sorted(self.api.list_repo_files(self.repo_id, revision=rev, repo_type=self.repo_type))
        raise AssertionError("unreachable")

    def download(self, path: str, rev: str) -> Path:
        from huggingface_hub import hf_hub_download

        with self._errors(f"download {path}"):
            return Path(str(hf_hub_download(
                self.repo_id, path, repo_type=self.repo_type, revision=rev, cache_dir=self.cache_dir(),
                local_files_only=self.offline(), endpoint=self.endpoint,
            )))
        raise AssertionError("unreachable")

    def commit(self, adds: dict[str, bytes | Path], deletes: list[str], parent: str | None, message: str) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        if self.offline():
            raise StoreError(f"hf://{self.repo_id}: cannot push with HF_HUB_OFFLINE=1")
        ops: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=c if isinstance(c, bytes) else str(c)) for p, c in adds.items()]
        ops += [CommitOperationDelete(path_in_repo=p) for p in deletes]
        with self._errors("commit"):
            info = self.api.create_commit(
                self.repo_id, ops, commit_message=message, repo_type=self.repo_type,
                revision=self.revision, parent_commit=parent,
            )
            return str(getattr(info, "oid", "") or self.head())
        raise AssertionError("unreachable")


def model_card(manifest: Manifest, store_url: str) -> str:
    """A Hub model card (YAML front matter + Markdown) from a version's manifest."""
    tags = ["adapterhub", manifest.method] + ([manifest.task] if manifest.task else [])
    front = [
        "---",
        "library_name: adapterhub",
        f"base_model: {json.dumps(manifest.base.name)}",
        "tags:",
        *[f"- {json.dumps(t)}" for t in tags],
        "---",
    ]
    ref = f"{manifest.name}@{manifest.version}"
    lines = [
        *front,
        CARD_MARK,
        f"# {manifest.name}",
        "",
        manifest.description or f"A {manifest.method} adapter for `{manifest.base.name}`"
        + (f", trained on `{manifest.task}`." if manifest.task else "."),
        "",
        f"- version: `{manifest.version}`",
        f"- method: `{manifest.method}` ({manifest.method_kind}), config `{json.dumps(manifest.method_config, sort_keys=True)}`",
        f"- base: `{manifest.base.name}` ({manifest.base.architecture}), weights sha256 `{manifest.base.weights_sha256[:16]}…`",
        f"- trainable parameters: {manifest.trainable_parameters:,}",
        "",
    ]
    if manifest.metrics:
        lines += ["## Metrics", "", "| task | metric | value |", "|---|---|---|"]
        for task, values in sorted(manifest.metrics.items()):
            lines += [f"| {task} | {m} | {v:.4f} |" for m, v in sorted(values.items())]
        lines.append("")
    if manifest.forgetting and manifest.forgetting.rows:
        lines += ["## Forgetting", "", "| task | metric | base | adapted | delta | flagged |", "|---|---|---|---|---|---|"]
        for r in manifest.forgetting.rows:
            lines.append(f"| {r.task} | {r.metric} | {r.base:.4f} | {r.adapted:.4f} | {r.delta:+.4f} | {'yes' if r.flagged else ''} |")
        lines.append("")
    lines += ["## Use", "", "```bash", f"adapterhub pull {ref} --from {store_url}", "```", ""]
    return "\n".join(lines)


class HFStore:
    """A :class:`~adapterhub.protocols.store.Store` in a Hugging Face Hub repository."""

    def __init__(self, url: str, backend: Backend | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "hf":
            raise ConfigError(f"not an hf:// URL: {url!r}")
        segs = [parts.netloc] + [s for s in unquote(parts.path).split("/") if s]
        if len(segs) < 2:
            raise ConfigError(f"hf:// URL {url!r} needs org/repo (hf://org/repo[/prefix])")
        for s in segs:
            if not _SEG.match(s) or ".." in s or "--" in s:
                raise ConfigError(f"invalid segment {s!r} in {url!r}")
        self.repo_id = f"{segs[0]}/{segs[1]}"
        self.prefix = "/".join(segs[2:])
        opts = dict(parse_qsl(parts.query))
        unknown = set(opts) - {"revision", "repo_type", "staging", "endpoint"}
        if unknown:
            raise ConfigError(f"unknown hf URL option(s) {', '.join(sorted(unknown))} in {url!r}")
        self.revision = opts.get("revision", "main")
        repo_type = opts.get("repo_type", "model")
        if repo_type not in ("model", "dataset"):
            raise ConfigError(f"repo_type must be model or dataset, not {repo_type!r}")
        self.url = url
        if backend is not None:
            self.backend: Backend = backend
        elif opts.get("staging"):
            self.backend = FolderBackend(Path(opts["staging"]).expanduser())
        else:
            self.backend = HubBackend(self.repo_id, repo_type, self.revision, opts.get("endpoint"))

    def __repr__(self) -> str:
        return f"HFStore({self.url!r})"

    # -- paths --------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join(([self.prefix] if self.prefix else []) + list(parts))

    def _blob_path(self, digest: str) -> str:
        check_digest(digest)
        return self._path("blobs", "sha256", digest[:2], digest)

    def _name_path(self, name: str, *rest: str) -> str:
        ns, base = split_name(name)
        return self._path("adapters", ns, base, *rest)

    def _version_path(self, name: str, version: str) -> str:
        return self._name_path(name, "versions", f"{validate_version(version)}.json")

    def _tag_path(self, name: str, tag: str) -> str:
        return self._name_path(name, "tags", validate_tag(tag))

    def _files(self, under: str) -> list[str]:
        return [f for f in self.backend.list_files(self.backend.head()) if f.startswith(under)]

    def _read(self, path: str, what: str, rev: str | None = None) -> bytes:
        try:
            local = self.backend.download(path, rev or self.backend.head())
        except AdapterNotFoundError:
            raise AdapterNotFoundError(f"{what} not found in {self.url}{self._offline_note()}") from None
        data = local.read_bytes()
        if len(data) > 4 * 1024 * 1024 and not path.startswith(self._path("blobs")):
            raise IntegrityError(f"{self.url}: {path} is over the 4 MiB limit")
        return data

    def _offline_note(self) -> str:
        if isinstance(self.backend, HubBackend) and HubBackend.offline():
            return " (not in the local Hugging Face cache, and HF_HUB_OFFLINE=1)"
        return ""

    def _commit(self, adds: dict[str, bytes | Path], deletes: list[str], message: str) -> None:
        try:
            self.backend.commit(adds, deletes, None, message)
        except _Conflict as exc:  # parent=None never conflicts; be explicit anyway
            raise StoreError(f"{self.url}: commit refused: {exc}") from None

    # -- blobs --------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        path = self._blob_path(digest)
        return path in self._files(path)

    def put_blob(self, digest: str, source: Path, progress: Progress | None = None) -> None:
        if self.has_blob(digest):
            return
        h = hashlib.sha256()
        size = 0
        with open(source, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        if h.hexdigest() != digest:
            raise IntegrityError(f"{source}: sha256 does not match the digest {digest[:16]}... it is pushed as")
        self._commit({self._blob_path(digest): Path(source)}, [], f"adapterhub: blob {digest[:12]}")
        if progress is not None:
            progress(size)

    def get_blob(self, digest: str, dest: Path, size: int, progress: Progress | None = None) -> None:
        path = self._blob_path(digest)
        try:
            local = self.backend.download(path, self.backend.head())
        except AdapterNotFoundError:
            raise AdapterNotFoundError(f"blob {digest} not found in {self.url}") from None
        with open(local, "rb") as fh:
            copy_verified(fh, Path(dest), digest, size, f"{self.url}/{path}", progress, sync=False)

    def iter_blobs(self) -> Iterator[str]:
        base = self._path("blobs", "sha256") + "/"
        for f in self._files(base):
            leaf = f.rsplit("/", 1)[-1]
            if re.fullmatch(r"[0-9a-f]{64}", leaf):
                yield leaf

    def delete_blob(self, digest: str) -> None:
        path = self._blob_path(digest)
        if path in self._files(path):
            self._commit({}, [path], f"adapterhub: delete blob {digest[:12]}")

    # -- versions -------------------------------------------------------------------------
    def put_version(self, name: str, version: str, manifest: bytes) -> None:
        path = self._version_path(name, version)
        adds: dict[str, bytes | Path] = {path: manifest}
        adds.update(self._cards(name, manifest))
        for _ in range(_COMMIT_TRIES):
            head = self.backend.head()
            if path in self.backend.list_files(head):
                raise VersionExistsError(f"{name}@{version} already exists in {self.url}; versions are immutable")
            try:
                self.backend.commit(adds, [], head, f"adapterhub: publish {name}@{version}")
                return
            except _Conflict:
                time.sleep(0.05)  # someone committed since `head`: look again
        raise RemoteUnavailableError(f"{self.url}: could not create {name}@{version}: the branch kept moving")

    def _cards(self, name: str, manifest: bytes) -> dict[str, bytes | Path]:
        try:
            m = parse_manifest(manifest, name)
        except ValueError:
            return {}  # store-level tests may store arbitrary JSON; cards need a manifest
        card = model_card(m, self.url).encode()
        out: dict[str, bytes | Path] = {self._name_path(name, "README.md"): card}
        root = "README.md"
        try:
            current = self._read(root, "README.md").decode(errors="replace")
        except AdapterNotFoundError:
            current = None
        if current is None or CARD_MARK in current:
            out[root] = card
        return out

    def get_version(self, name: str, version: str) -> bytes:
        return self._read(self._version_path(name, version), f"{name}@{version}")

    def list_versions(self, name: str) -> list[str]:
        base = self._name_path(name, "versions") + "/"
        out = []
        for f in self._files(base):
            leaf = f[len(base):]
            if leaf.endswith(".json") and "/" not in leaf:
                with contextlib.suppress(ValueError):
                    out.append(validate_version(leaf[:-5]))
        return out

    def list_names(self) -> Iterator[str]:
        base = self._path("adapters") + "/"
        names: set[str] = set()
        for f in self._files(base):
            parts = f[len(base):].split("/")
            if len(parts) >= 4 and parts[2] == "versions":
                with contextlib.suppress(ValueError):
                    names.add(join_name(parts[0], parts[1]))
        yield from sorted(names)

    def delete_version(self, name: str, version: str) -> None:
        path = self._version_path(name, version)
        files = self._files(self._name_path(name))
        if path not in files:
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.url}")
        attached = (self._name_path(name, "records", version) + "/", self._name_path(name, "signatures", version) + "/")
        self._commit({}, [path] + [f for f in files if f.startswith(attached)], f"adapterhub: delete {name}@{version}")

    # -- tags ---------------------------------------------------------------------------
    def set_tag(self, name: str, tag: str, version: str) -> None:
        validate_version(version)
        self._commit({self._tag_path(name, tag): f"{version}\n".encode()}, [], f"adapterhub: tag {name}:{tag} -> {version}")

    def get_tag(self, name: str, tag: str) -> str:
        raw = self._read(self._tag_path(name, tag), f"tag {name}:{tag}")
        try:
            return validate_version(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"{self.url}: tag {name}:{tag} does not hold a version") from None

    def list_tags(self, name: str) -> dict[str, str]:
        base = self._name_path(name, "tags") + "/"
        out = {}
        for f in self._files(base):
            tag = f[len(base):]
            with contextlib.suppress(ValueError, AdapterNotFoundError):
                out[tag] = self.get_tag(name, tag)
        return dict(sorted(out.items()))

    def delete_tag(self, name: str, tag: str) -> None:
        path = self._tag_path(name, tag)
        if path not in self._files(path):
            raise AdapterNotFoundError(f"tag {name}:{tag} not found in {self.url}")
        self._commit({}, [path], f"adapterhub: untag {name}:{tag}")

    # -- records ------------------------------------------------------------------------
    def add_record(self, name: str, version: str, record: bytes) -> str:
        if self._version_path(name, version) not in self._files(self._name_path(name, "versions")):
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.url}")
        rid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._commit({self._name_path(name, "records", version, f"{rid}.json"): record}, [], f"adapterhub: record for {name}@{version}")
        return rid

    def list_records(self, name: str, version: str) -> list[bytes]:
        validate_version(version)
        base = self._name_path(name, "records", version) + "/"
        return [self._read(f, f"record {f}") for f in sorted(self._files(base)) if f.endswith(".json")]

    # -- signatures: immutable, named by their sha256 -----------------------------------------
    def _signature_path(self, name: str, version: str, sig_id: str) -> str:
        return self._name_path(name, "signatures", validate_version(version), f"{check_digest(sig_id)}.sig")

    def put_signature(self, name: str, version: str, sig_id: str, data: bytes) -> bool:
        if self._version_path(name, version) not in self._files(self._name_path(name, "versions")):
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.url}")
        path = self._signature_path(name, version, sig_id)
        if path in self._files(path):
            return False  # named by its sha256: the same bytes are already there
        self._commit({path: data}, [], f"adapterhub: signature for {name}@{version}")
        return True

    def list_signatures(self, name: str, version: str) -> list[bytes]:
        base = self._name_path(name, "signatures", validate_version(version)) + "/"
        return [self._read(f, f"signature {f}") for f in sorted(self._files(base)) if f.endswith(".sig")]

    def delete_signature(self, name: str, version: str, sig_id: str) -> None:
        path = self._signature_path(name, version, sig_id)
        if path not in self._files(path):
            raise AdapterNotFoundError(f"signature {sig_id[:12]} of {name}@{version} not found in {self.url}")
        self._commit({}, [path], f"adapterhub: delete signature of {name}@{version}")


def populate_hf_cache(staging: Path, repo_id: str, cache_dir: Path, commit: str | None = None, repo_type: str = "model") -> Path:
    """Lay ``staging``'s files out as the Hugging Face cache holds a downloaded snapshot.

    ``blobs/<sha256>`` + ``snapshots/<commit>/<path>`` symlinks + ``refs/main``: what
    ``hf_hub_download`` leaves behind, so offline reads (``HF_HUB_OFFLINE=1``) can be
    tested without the network. Returns the snapshot directory.
    """
    commit = commit or hashlib.sha1(str(sorted(FolderBackend(staging).list_files("0"))).encode()).hexdigest()
    repo_dir = cache_dir / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    for rel in FolderBackend(staging).list_files("0"):
        data = (staging / rel).read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snap

