"""``http://`` / ``https://`` stores: an adapterhub hub, through its JSON registry API.

``adapterhub push DIR team/x@1.0.0 --to https://hub.example``, ``pull --from``, ``ls
--from`` and named remotes work as for the other stores; the hub holds the bytes in
whatever store it serves (a directory, S3, ...). The API is ``docs/hub-api.md``; the
hub side is ``registry/hub/api.py``.

**Tokens** come from ``ADAPTERHUB_TOKEN`` (or a file named by ``ADAPTERHUB_TOKEN_FILE``),
or from the commands' ``--token`` (handy interactively, but a command line is visible to
every user in ``ps`` and lands in shell history, so CI should use the variable), and travel
as ``Authorization: Bearer``; never in the URL (URLs end up in logs, shell history and the
remotes file). Redirects are not followed, so the header never reaches another host. A hub
serves plain http; ``https://`` works when a TLS proxy fronts it, and a hub mounted
under a path (``https://example.com/hub``) works too.

**Integrity**: like every store, nothing unverified becomes visible. A blob download
is hashed while it streams into a temp file and renamed into place only when size and
sha256 match; a broken download resumes with a ``Range`` request (``If-Range``: the
blob's ETag) instead of starting over. A manifest's bytes are checked against the
hub's ``ETag`` (their sha256). Uploads are verified by the hub before they are stored.

**Failures**: connection errors, timeouts and 502/503/504 are retried a bounded number
of times with backoff and jitter (requests that create something — a version, a record
— only when the request cannot have been sent), then ``RemoteUnavailableError``. 401 →
``AuthenticationError``, 403 → ``AccessDeniedError``, 404 → ``AdapterNotFoundError``,
409 → ``VersionExistsError``, each one line. URL options: ``connect_timeout``,
``read_timeout``, ``max_attempts`` (or ``ADAPTERHUB_HTTP_CONNECT_TIMEOUT`` /
``_READ_TIMEOUT`` / ``_MAX_ATTEMPTS``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit

import httpx
from adapterhub.registry.atomic import temp_path
from adapterhub.registry.local import check_digest
from adapterhub.registry.names import split_name, validate_tag, validate_version
from adapterhub.registry.remotes import env_float

from adapterhub.errors import (
    AccessDeniedError,
    AdapterNotFoundError,
    AuthenticationError,
    ConfigError,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    RemoteUnavailableError,
    SignatureError,
    StoreError,
    VersionExistsError,
)
from adapterhub.net import is_loopback
from adapterhub.protocols.store import Progress

TOKEN_ENV = "ADAPTERHUB_TOKEN"
TOKEN_FILE_ENV = "ADAPTERHUB_TOKEN_FILE"
CHUNK = 1024 * 1024
HEAD_FIRST = 8 * 1024 * 1024  # above this, ask whether the hub has a blob before uploading it
MAX_SMALL = 4 * 1024 * 1024  # manifests, records, JSON listings
_RETRY_STATUS = {502, 503, 504}
_OPTIONS = {"connect_timeout", "read_timeout", "max_attempts"}


def token_from_env() -> str | None:
    """``ADAPTERHUB_TOKEN``, else the first line of the file ``ADAPTERHUB_TOKEN_FILE`` names."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    source = TOKEN_ENV
    if not token and os.environ.get(TOKEN_FILE_ENV):
        path = Path(os.environ[TOKEN_FILE_ENV]).expanduser()
        source = f"{TOKEN_FILE_ENV} ({path})"
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read the token file ({type(exc).__name__})") from None
    if not token:
        return None
    return check_token(token, source)


def check_token(token: str, source: str) -> str:
    """``token`` if it can travel in an ``Authorization`` header, else a one-line error."""
    if not token or any(ord(c) < 33 or ord(c) > 126 for c in token):
        # Never echo it: it is a secret, even when malformed.
        raise ConfigError(f"{source}: the token must be non-empty printable ASCII without spaces")
    return token


_WARNED: set[str] = set()


def _warn_cleartext(host: str) -> None:
    """Once per host and process: a token over plain http can be read by anyone on the path.
    A warning, not a refusal: a hub on a trusted network (a VPN, a cluster) is a fair setup."""
    if host not in _WARNED:
        _WARNED.add(host)
        print(f"adapterhub: warning: the token goes to {host} unencrypted (http://); use https:// "
              "(a TLS proxy in front of the hub, docs/hub-api.md)", file=sys.stderr)


class HttpStore:
    """A :class:`~adapterhub.protocols.store.Store` on an adapterhub hub's JSON API."""

    def __init__(self, url: str, token: str | None = None, transport: httpx.BaseTransport | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"not an http(s):// URL: {url!r}")
        if not parts.hostname:
            raise ConfigError(f"no host in {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"{parts.scheme}://{parts.hostname}: credentials do not go in the URL; set {TOKEN_ENV}")
        if parts.fragment:
            raise ConfigError(f"unexpected #fragment in {url!r}")
        opts = dict(parse_qsl(parts.query, keep_blank_values=True))
        if "token" in opts or "access_token" in opts:
            raise ConfigError(f"{parts.scheme}://{parts.netloc}: tokens never go in URLs (they end up in logs); set {TOKEN_ENV}")
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ConfigError(f"unknown http store option(s) {', '.join(sorted(unknown))} in {url!r}")
        try:
            connect = float(opts.get("connect_timeout") or env_float("ADAPTERHUB_HTTP_CONNECT_TIMEOUT", 5.0))
            read = float(opts.get("read_timeout") or env_float("ADAPTERHUB_HTTP_READ_TIMEOUT", 120.0))
            self.max_attempts = max(1, int(float(opts.get("max_attempts") or env_float("ADAPTERHUB_HTTP_MAX_ATTEMPTS", 4))))
        except ValueError:
            raise ConfigError(f"invalid numeric option in {url!r}") from None
        prefix = parts.path.rstrip("/")
        self.url = url.rstrip("/") if not parts.query else url
        self.label = f"{parts.scheme}://{parts.netloc}{prefix}"
        self._token = token if token is not None else token_from_env()
        if self._token and parts.scheme == "http" and not is_loopback(parts.hostname):
            _warn_cleartext(parts.hostname)
        headers = {"User-Agent": "adapterhub-http-store", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._client = httpx.Client(
            base_url=f"{parts.scheme}://{parts.netloc}{prefix}/api/v1/",
            headers=headers,
            timeout=httpx.Timeout(read, connect=connect, pool=read),
            follow_redirects=False,  # a redirect must not carry the token to another host
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def __repr__(self) -> str:
        return f"HttpStore({self.label!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths: every name/version/tag/digest validated before a request is made -----------
    @staticmethod
    def _adapter(name: str) -> str:
        ns, base = split_name(name)  # ns is "_" (NO_NAMESPACE) for names without one, as the hub expects
        return f"adapters/{ns}/{base}"

    def _version_path(self, name: str, version: str, *rest: str) -> str:
        return "/".join([self._adapter(name), "versions", validate_version(version), *rest])

    def _tag_path(self, name: str, tag: str) -> str:
        return f"{self._adapter(name)}/tags/{validate_tag(tag)}"

    @staticmethod
    def _blob_path(digest: str) -> str:
        return f"blobs/{check_digest(digest)}"

    # -- the one place that talks to the hub ------------------------------------------------------
    def _request(self, method: str, path: str, *, idempotent: bool = True, ok: Iterable[int] = (200,),
                 content: Callable[[], Any] | None = None, **kwargs: Any) -> httpx.Response:
        """Send with bounded retries; the response (body read) if its status is in ``ok``."""
        last = ""
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.25 * 2 ** (attempt - 1)))
            try:
                resp = self._client.request(method, path, content=None if content is None else content(), **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = f"{type(exc).__name__}: {exc}"  # never sent: safe to retry anything
                continue
            except httpx.TransportError as exc:
                if not idempotent:
                    raise RemoteUnavailableError(f"{self.label}: {method} {path} failed ({type(exc).__name__}: {exc}); it may or may not have taken effect") from None
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in ok:
                return resp
            if resp.status_code in _RETRY_STATUS and idempotent:
                last = f"HTTP {resp.status_code}"
                continue
            self._raise_for(resp, path)
        raise RemoteUnavailableError(f"{self.label}: {method} {path} failed after {self.max_attempts} attempt(s): {last}")

    def _raise_for(self, resp: httpx.Response, path: str) -> NoReturn:
        status = resp.status_code
        code, message = "", ""
        try:
            err = json.loads(resp.read()[:65536])["error"]
            code, message = str(err.get("code", "")), " ".join(str(err.get("message", "")).split())
        except (ValueError, KeyError, TypeError, httpx.HTTPError):
            if status == 404:
                raise StoreError(f"{self.label}: no adapterhub hub API at {path} (HTTP 404); is this a hub's address?") from None
        where = f"{self.label}: {message or f'HTTP {status}'}"
        if status == 401:
            hint = f" (the token in {TOKEN_ENV} was refused)" if self._token else f"; set {TOKEN_ENV} to one of this hub's tokens"
            raise AuthenticationError(where + hint)
        if status == 403:
            raise AccessDeniedError(where)
        if status == 404:
            raise AdapterNotFoundError(where)
        if status == 409:
            raise VersionExistsError(where)
        if status == 400 and code in ("invalid_name", "invalid_digest"):
            raise InvalidNameError(where)
        if status == 422:
            raise (ManifestError if code == "invalid_manifest" else SignatureError if code == "signature" else IntegrityError)(where)
        if status in (400, 413):
            raise ConfigError(where)
        if status >= 500:
            raise RemoteUnavailableError(where)
        raise StoreError(f"{where} (HTTP {status})")

    def _json(self, path: str, **kwargs: Any) -> Any:
        resp = self._request("GET", path, **kwargs)
        if len(resp.content) > MAX_SMALL * 4:
            raise IntegrityError(f"{self.label}: answer to {path} is over {MAX_SMALL * 4} bytes")
        try:
            return resp.json()
        except ValueError:
            raise StoreError(f"{self.label}: answer to {path} is not JSON; is this a hub's address?") from None

    def _pages(self, path: str, key: str) -> Iterator[str]:
        after = ""
        while True:
            page = self._json(path, params={"after": after, "limit": 1000} if after else {"limit": 1000})
            yield from (str(x) for x in page.get(key, []))
            after = page.get("next") or ""
            if not after:
                return

    # -- blobs ----------------------------------------------------------------------------------
    def blob_size(self, digest: str) -> int | None:
        """The hub's size of a blob (HEAD), or None when it has none."""
        resp = self._request("HEAD", self._blob_path(digest), ok=(200, 404))
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("content-length", "-1"))

    def has_blob(self, digest: str) -> bool:
        return self.blob_size(digest) is not None

    def put_blob(self, digest: str, source: Path, progress: Progress | None = None) -> None:
        path = self._blob_path(digest)
        try:
            size = os.stat(source).st_size
        except OSError as exc:
            raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from None
        if size > HEAD_FIRST and self.blob_size(digest) == size:
            return  # the hub has these bytes (it verified them when they came)

        def body() -> Iterator[bytes]:
            with open(source, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
                    if progress is not None:
                        progress(len(chunk))
        self._upload(path, body, size)

    def put_blob_verified(self, digest: str, data: bytes | bytearray | memoryview, progress: Progress | None = None) -> None:
        """Upload bytes the caller has already hashed (a push's validated weights); the hub checks them again."""
        path = self._blob_path(digest)
        view = memoryview(data).cast("B")
        if len(view) > HEAD_FIRST and self.blob_size(digest) == len(view):
            return

        def body() -> Iterator[bytes]:
            for start in range(0, len(view), CHUNK):
                chunk = view[start:start + CHUNK]
                yield bytes(chunk)
                if progress is not None:
                    progress(len(chunk))
        self._upload(path, body, len(view))

    def _upload(self, path: str, body: Callable[[], Iterator[bytes]], size: int) -> None:
        # Content-Length given: the hub refuses an over-size blob before reading it.
        self._request("PUT", path, ok=(200, 201), content=body,
                      headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def get_blob(self, digest: str, dest: Path, size: int, progress: Progress | None = None) -> None:
        path = self._blob_path(digest)
        dest = Path(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(dest)
            fh = open(tmp, "xb")
        except OSError as exc:
            raise StoreError(f"could not write {dest}: {exc.strerror or exc}") from None
        try:
            with fh:
                h = self._download(path, fh, digest, size, progress)
            written = os.stat(tmp).st_size
            if written != size:
                raise IntegrityError(f"{self.label} blob {digest[:16]}...: size {written} bytes, expected {size}")
            if h.hexdigest() != digest:
                raise IntegrityError(f"{self.label} blob {digest[:16]}...: sha256 {h.hexdigest()[:16]}..., expected {digest[:16]}...")
            os.chmod(tmp, 0o444)  # blobs are immutable, as the other stores hand them out
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _download(self, path: str, fh: Any, digest: str, size: int, progress: Progress | None) -> Any:
        """Stream the blob into ``fh``, resuming with Range after a broken connection."""
        h = hashlib.sha256()
        written = 0
        failures = 0
        while True:
            headers = {"Range": f"bytes={written}-", "If-Range": f'"{digest}"'} if written else {}
            try:
                with self._client.stream("GET", path, headers=headers) as resp:
                    if resp.status_code == 200 and written:
                        fh.seek(0)  # the hub sent the whole blob: start over
                        fh.truncate()
                        h, written = hashlib.sha256(), 0
                    elif resp.status_code == 206:
                        if not resp.headers.get("content-range", "").startswith(f"bytes {written}-"):
                            raise IntegrityError(f"{self.label} blob {digest[:16]}...: the hub resumed at the wrong offset")
                    elif resp.status_code != 200:
                        if resp.status_code in _RETRY_STATUS:
                            raise httpx.RemoteProtocolError(f"HTTP {resp.status_code}")
                        if resp.status_code == 416 and written:
                            # Nothing after `written`: the blob is shorter than promised.
                            raise IntegrityError(f"{self.label} blob {digest[:16]}...: only {written} bytes, expected {size}")
                        self._raise_for(resp, path)
                    declared = resp.headers.get("content-length")
                    if declared is not None and declared.isdigit() and written + int(declared) > size:
                        raise IntegrityError(f"{self.label} blob {digest[:16]}...: {written + int(declared)} bytes, expected {size}")
                    for chunk in resp.iter_bytes(CHUNK):
                        if written + len(chunk) > size:  # never store more than promised
                            raise IntegrityError(f"{self.label} blob {digest[:16]}...: more than the expected {size} bytes")
                        fh.write(chunk)
                        h.update(chunk)
                        written += len(chunk)
                        failures = 0  # progress: a new chance to finish
                        if progress is not None:
                            progress(len(chunk))
                return h
            except httpx.TransportError as exc:
                failures += 1
                if failures >= self.max_attempts:
                    raise RemoteUnavailableError(f"{self.label}: downloading blob {digest[:12]} failed after {failures} attempt(s): {type(exc).__name__}: {exc}") from None
                time.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.25 * 2 ** (failures - 1)))

    def iter_blobs(self) -> Iterator[str]:
        return self._pages("blobs", "blobs")

    def delete_blob(self, digest: str) -> None:
        self._request("DELETE", self._blob_path(digest), idempotent=False, ok=(200, 204, 404))

    # -- versions ---------------------------------------------------------------------------------
    def put_version(self, name: str, version: str, manifest: bytes) -> None:
        # Not retried once it may have been sent: a lost answer to a create that won
        # must not turn into a 409 for the writer who actually won.
        self._request("PUT", self._version_path(name, version, "manifest"), idempotent=False, ok=(200, 201),
                      content=lambda: manifest, headers={"Content-Type": "application/json", "If-None-Match": "*"})

    def get_version(self, name: str, version: str) -> bytes:
        resp = self._request("GET", self._version_path(name, version, "manifest"))
        data = resp.content
        if len(data) > MAX_SMALL:
            raise IntegrityError(f"{self.label}: manifest of {name}@{version} is over the {MAX_SMALL} byte limit")
        etag = resp.headers.get("etag", "").strip().removeprefix("W/").strip('"')
        if etag and etag != hashlib.sha256(data).hexdigest():
            raise IntegrityError(f"{self.label}: manifest of {name}@{version} does not hash to the hub's ETag (damaged in transit)")
        return data

    def list_versions(self, name: str) -> list[str]:
        found = self._json(f"{self._adapter(name)}/versions").get("versions", [])
        out = []
        for v in found:
            try:
                out.append(validate_version(str(v)))
            except ValueError:
                continue
        return out

    def list_names(self) -> Iterator[str]:
        return self._pages("adapters", "names")

    def delete_version(self, name: str, version: str) -> None:
        self._request("DELETE", self._version_path(name, version), idempotent=False, ok=(200, 204))

    # -- tags -----------------------------------------------------------------------------------------
    def set_tag(self, name: str, tag: str, version: str) -> None:
        body = json.dumps({"version": validate_version(version)}).encode()
        self._request("PUT", self._tag_path(name, tag), content=lambda: body, headers={"Content-Type": "application/json"})

    def get_tag(self, name: str, tag: str) -> str:
        got = self._json(self._tag_path(name, tag)).get("version")
        try:
            return validate_version(str(got))
        except ValueError:
            raise IntegrityError(f"{self.label}: tag {name}:{tag} does not hold a version") from None

    def list_tags(self, name: str) -> dict[str, str]:
        raw = self._json(f"{self._adapter(name)}/tags").get("tags", {})
        return {str(t): str(v) for t, v in sorted(raw.items())} if isinstance(raw, dict) else {}

    def delete_tag(self, name: str, tag: str) -> None:
        self._request("DELETE", self._tag_path(name, tag), idempotent=False, ok=(200, 204))

    # -- records ----------------------------------------------------------------------------------------
    def add_record(self, name: str, version: str, record: bytes) -> str:
        resp = self._request("POST", self._version_path(name, version, "records"), idempotent=False, ok=(200, 201),
                             content=lambda: record, headers={"Content-Type": "application/json"})
        return str(resp.json()["id"])

    def list_records(self, name: str, version: str) -> list[bytes]:
        texts = self._json(self._version_path(name, version, "records")).get("records", [])
        return [str(t).encode("utf-8") for t in texts]

    # -- signatures (immutable, named by their sha256: a PUT is safe to retry) -----------------------
    def put_signature(self, name: str, version: str, sig_id: str, data: bytes) -> bool:
        resp = self._request("PUT", self._version_path(name, version, "signatures", check_digest(sig_id)), ok=(200, 201),
                             content=lambda: data, headers={"Content-Type": "application/json"})
        return resp.status_code == 201

    def list_signatures(self, name: str, version: str) -> list[bytes]:
        found = self._json(self._version_path(name, version, "signatures")).get("signatures", [])
        return [str(s["bundle"]).encode("utf-8") for s in found if isinstance(s, dict) and "bundle" in s]

    def delete_signature(self, name: str, version: str, sig_id: str) -> None:
        self._request("DELETE", self._version_path(name, version, "signatures", check_digest(sig_id)),
                      idempotent=False, ok=(200, 204))
