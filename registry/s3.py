"""``s3://bucket/prefix`` stores: AWS S3 and S3-compatible services (MinIO, SeaweedFS, R2).

Same layout as the local store, as object keys under ``prefix``::

    <prefix>/blobs/sha256/ab/ab12...                 content-addressed files
    <prefix>/adapters/<ns>/<name>/versions/<v>.json  created with If-None-Match: *
    <prefix>/adapters/<ns>/<name>/tags/<tag>
    <prefix>/adapters/<ns>/<name>/records/<v>/<id>.json
    <prefix>/adapters/<ns>/<name>/signatures/<v>/<sha256>.sig

**Immutability** comes from the server: a version is written with ``PutObject`` and
``If-None-Match: *``, so the service refuses (HTTP 412) to create a key that exists and
two pushers of one version cannot both win. (409 ``ConditionalRequestConflict``, AWS's
answer to two conditional writes in flight at once, is retried and then yields 412.)
A service that ignores the header would silently let the last writer win; SeaweedFS
4.x, AWS S3 (since 2024-08), MinIO and R2 honour it.

**Configuration** (usual AWS conventions): credentials from the default boto3 chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``~/.aws``); endpoint from the URL option ``endpoint_url`` (the CLI's
``--endpoint-url``), else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; region from
``region`` / ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (default ``us-east-1``).

**Failures**: connection errors, timeouts (short connect/read timeouts), 5xx, throttling
and 409 conflicts are retried a bounded number of times with exponential backoff and
jitter, then raised as ``RemoteUnavailableError``; nothing is retried forever. Options
``connect_timeout``, ``read_timeout`` and ``max_attempts`` can be set in the URL query or
``ADAPTERHUB_S3_CONNECT_TIMEOUT`` / ``ADAPTERHUB_S3_READ_TIMEOUT`` / ``ADAPTERHUB_S3_MAX_ATTEMPTS``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from adapterhub.registry.atomic import copy_verified
from adapterhub.registry.faults import ENV as CRASH_ENV
from adapterhub.registry.faults import crash_point
from adapterhub.registry.local import check_digest
from adapterhub.registry.names import split_name, validate_tag, validate_version
from adapterhub.registry.remotes import env_float

from adapterhub.errors import (
    AdapterNotFoundError,
    ConfigError,
    IntegrityError,
    RemoteUnavailableError,
    StoreError,
    VersionExistsError,
)
from adapterhub.protocols.store import Progress

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_PREFIX_SEG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_RETRY_CODES = {"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable", "ConditionalRequestConflict", "Throttling"}
_SMALL = 64 * 1024 * 1024  # single PutObject below this; multipart above
_HEAD_FIRST = 8 * 1024 * 1024  # above this, check existence before uploading
_CHUNK = 1024 * 1024


class _HookedReader(io.BytesIO):
    """Request body that reports bytes sent (progress) and hosts the mid-blob crash hook."""

    def __init__(self, data: bytes, progress: Progress | None) -> None:
        super().__init__(data)
        self._progress = progress
        self._sent = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if chunk:
            self._sent += len(chunk)
            if self._progress is not None:
                self._progress(len(chunk))
            crash_point("mid-blob")
        return chunk


# The sha256 of the body of the PutObject this thread is sending, when the caller knows
# it (a content-addressed blob: the digest is its key). See _install_known_payload_signer.
_KNOWN_PAYLOAD = threading.local()
_KNOWN_PAYLOAD_SIGNER = "adapterhub-s3v4-known-payload"


def _install_known_payload_signer(client: Any) -> bool:
    """Let blob uploads sign with the digest they already have instead of re-hashing.

    SigV4 over plain HTTP signs ``x-amz-content-sha256``, the sha256 of the body, which
    botocore computes with one more pass over every upload. For a blob that sha256 *is*
    its digest, verified just before. This registers a signer (botocore's S3 SigV4
    signer, except that it takes the payload hash from ``_KNOWN_PAYLOAD`` when set) and
    picks it, through the client's ``choose-signer`` event, only for a PutObject sent
    while ``_KNOWN_PAYLOAD`` is set on the sending thread; everything else is signed as
    usual, and so is a request botocore would not payload-sign anyway (HTTPS with a
    checksum). AWS S3 checks the body against the signed hash; the blob upload also
    carries ``ChecksumSHA256``, which SeaweedFS and AWS check. If botocore's internals
    differ from what this expects, nothing is installed and uploads hash as before.
    """
    try:
        from botocore import auth
        from botocore.handlers import set_operation_specific_signer

        base = auth.AUTH_TYPE_MAPS["s3v4"]
        if not all(hasattr(base, m) for m in ("payload", "_should_sha256_sign_payload", "_is_streaming_checksum_payload")):
            return False
        if _KNOWN_PAYLOAD_SIGNER not in auth.AUTH_TYPE_MAPS:

            class KnownPayloadS3SigV4Auth(base):  # type: ignore[misc, valid-type]
                def payload(self, request: Any) -> str:
                    known = getattr(_KNOWN_PAYLOAD, "sha256", None)
                    if known is None or self._is_streaming_checksum_payload(request) or not self._should_sha256_sign_payload(request):
                        return str(super().payload(request))
                    return known

            auth.AUTH_TYPE_MAPS[_KNOWN_PAYLOAD_SIGNER] = KnownPayloadS3SigV4Auth

        def choose(signature_version: Any = None, context: Any = None, signing_name: Any = None, **kwargs: Any) -> Any:
            if getattr(_KNOWN_PAYLOAD, "sha256", None) is None:
                return None
            chosen = set_operation_specific_signer(context=context if context is not None else {}, signing_name=signing_name)
            if (chosen or signature_version) != "s3v4":
                return None  # another auth scheme (unsigned, SigV4a, S3 Express): leave it alone
            return _KNOWN_PAYLOAD_SIGNER

        client.meta.events.register_first("choose-signer.s3.PutObject", choose, unique_id=_KNOWN_PAYLOAD_SIGNER)
        return True
    except Exception:  # noqa: BLE001 - an optimisation only; uploads work without it
        return False


class S3Store:
    """A :class:`~adapterhub.protocols.store.Store` on an S3-compatible bucket."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ConfigError(f"not an s3:// URL: {url!r}")
        self.bucket = parts.netloc
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise ConfigError(f"invalid S3 bucket name {self.bucket!r} in {url!r}")
        segs = [s for s in parts.path.split("/") if s]
        for s in segs:
            if not _PREFIX_SEG.match(s) or ".." in s:
                raise ConfigError(f"invalid S3 prefix segment {s!r} in {url!r}")
        self.prefix = "/".join(segs)
        opts = dict(parse_qsl(parts.query))
        unknown = set(opts) - {"endpoint_url", "region", "connect_timeout", "read_timeout", "max_attempts"}
        if unknown:
            raise ConfigError(f"unknown s3 URL option(s) {', '.join(sorted(unknown))} in {url!r}")
        self.endpoint_url = opts.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self.region = opts.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        try:
            self.connect_timeout = float(opts.get("connect_timeout") or env_float("ADAPTERHUB_S3_CONNECT_TIMEOUT", 5.0))
            self.read_timeout = float(opts.get("read_timeout") or env_float("ADAPTERHUB_S3_READ_TIMEOUT", 30.0))
            self.max_attempts = max(1, int(float(opts.get("max_attempts") or env_float("ADAPTERHUB_S3_MAX_ATTEMPTS", 4))))
        except ValueError:
            raise ConfigError(f"invalid numeric option in {url!r}") from None
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        self.url = url
        self.label = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "") + where
        self._client = client if client is not None else self._make_client()
        self._known_payload = _install_known_payload_signer(self._client)

    def __repr__(self) -> str:
        return f"S3Store({self.label!r})"

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # we retry ourselves (bounded)
            s3={"addressing_style": "path"} if self.endpoint_url else {},
            max_pool_connections=16,
            # Every blob is verified end to end by its sha256 (before upload, after
            # download), so botocore's extra CRC32 pass over each body buys nothing.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        return session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)

    # -- keys -------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join(([self.prefix] if self.prefix else []) + list(parts))

    def _blob_key(self, digest: str) -> str:
        check_digest(digest)
        return self._key("blobs", "sha256", digest[:2], digest)

    def _name_key(self, name: str, *rest: str) -> str:
        ns, base = split_name(name)
        return self._key("adapters", ns, base, *rest)

    def _version_key(self, name: str, version: str) -> str:
        return self._name_key(name, "versions", f"{validate_version(version)}.json")

    def _tag_key(self, name: str, tag: str) -> str:
        return self._name_key(name, "tags", validate_tag(tag))

    # -- the one place that talks to the service -----------------------------------------
    def _call(self, op: str, attempt_body: Callable[[], dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            ParamValidationError,
        )

        last = ""
        for attempt in range(self.max_attempts):
            if attempt:
                # Exponential backoff with full jitter, capped: 0.25 s, 0.5 s, 1 s, 2 s...
                time.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.25 * 2 ** (attempt - 1)))
            call_kwargs = dict(kwargs)
            if attempt_body is not None:
                call_kwargs.update(attempt_body())
            try:
                return getattr(self._client, op)(**call_kwargs)
            except ClientError as exc:
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if status in _RETRY_STATUS or code in _RETRY_CODES:
                    last = f"HTTP {status} {code}".strip()
                    continue
                raise
            except NoCredentialsError:
                raise StoreError(f"{self.label}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)") from None
            except ParamValidationError as exc:
                raise StoreError(f"{self.label}: invalid request: {exc}") from None
            except BotoCoreError as exc:  # connection refused/reset, timeouts
                last = f"{type(exc).__name__}: {exc}"
                continue
        raise RemoteUnavailableError(f"{self.label}: {op} failed after {self.max_attempts} attempt(s): {last}")

    @staticmethod
    def _code(exc: Exception) -> tuple[int, str]:
        resp = getattr(exc, "response", {}) or {}
        return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0), str(resp.get("Error", {}).get("Code", ""))

    def _is_missing(self, exc: Exception) -> bool:
        status, code = self._code(exc)
        return status == 404 or code in ("NoSuchKey", "404", "NotFound")

    def _get_bytes(self, key: str, what: str, limit: int = 4 * 1024 * 1024) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        def fetch() -> bytes:
            try:
                resp = self._call("get_object", Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if self._is_missing(exc):
                    raise AdapterNotFoundError(f"{what} not found in {self.label}") from None
                raise self._error(exc, f"read {what}") from None
            if int(resp.get("ContentLength") or 0) > limit:
                raise IntegrityError(f"{self.label}/{key}: over the {limit} byte limit")
            return bytes(resp["Body"].read(limit + 1))

        for attempt in range(self.max_attempts):
            try:
                return fetch()
            except BotoCoreError as exc:  # the body stream broke after the headers came
                if attempt + 1 == self.max_attempts:
                    raise RemoteUnavailableError(f"{self.label}: reading {what} failed: {exc}") from None
        raise AssertionError("unreachable")

    def _error(self, exc: Exception, action: str) -> StoreError:
        status, code = self._code(exc)
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreError(f"{self.label}: access denied while trying to {action} ({code}); check the AWS credentials")
        if code == "NoSuchBucket":
            return StoreError(f"{self.label}: bucket {self.bucket!r} does not exist")
        return StoreError(f"{self.label}: could not {action}: HTTP {status} {code}")

    def _exists(self, key: str) -> bool:
        return self._stored_size(key) is not None

    def _stored_size(self, key: str) -> int | None:
        """Size of the object at ``key`` (HEAD), or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            resp = self._call("head_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise self._error(exc, f"check {key}") from None
        return int(resp.get("ContentLength") or 0)

    def _already_stored(self, key: str, size: int) -> bool:
        # A blob of the right size under its digest is the blob: uploads are verified by
        # the service (ChecksumSHA256) or multipart (never visible until complete). An
        # object of another size (e.g. an empty one left by an interrupted upload to a
        # service that stored it anyway) is overwritten.
        return self._stored_size(key) == size

    def _put(self, key: str, data: bytes, what: str, **extra: Any) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("put_object", Bucket=self.bucket, Key=key, Body=data, ContentLength=len(data), **extra)
        except ClientError as exc:
            raise self._error(exc, f"write {what}") from None

    def _delete(self, key: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("delete_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if not self._is_missing(exc):
                raise self._error(exc, f"delete {key}") from None

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[tuple[str, bool]]:
        """(key or common prefix, is_prefix) under ``prefix``, following pagination."""
        from botocore.exceptions import ClientError

        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            try:
                resp = self._call("list_objects_v2", **kwargs)
            except ClientError as exc:
                raise self._error(exc, f"list {prefix}") from None
            for cp in resp.get("CommonPrefixes", []) or []:
                yield cp["Prefix"], True
            for obj in resp.get("Contents", []) or []:
                yield obj["Key"], False
            if not resp.get("IsTruncated"):
                return
            token = resp.get("NextContinuationToken")

    # -- blobs ------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self._exists(self._blob_key(digest))

    def blob_size(self, digest: str) -> int | None:
        """The stored size of a blob (one HEAD), None when absent: a hub in front of this
        store answers HEAD and validates pushes with it instead of downloading blobs."""
        return self._stored_size(self._blob_key(digest))

    def put_blob(self, digest: str, source: Path, progress: Progress | None = None) -> None:
        key = self._blob_key(digest)
        try:
            size = os.stat(source).st_size
        except OSError as exc:
            raise StoreError(f"cannot read {source}: {exc.strerror or exc}") from None
        # Big blobs: ask first, uploading them again would be expensive. Small ones are
        # just PUT: the key is the content's hash, so overwriting an existing blob writes
        # the same bytes, and a HEAD round trip would cost more than the upload it saves.
        if size > _HEAD_FIRST and self._already_stored(key, size):
            return
        if size <= _SMALL:
            data = Path(source).read_bytes()
            # Verify before uploading: the store only ever holds bytes matching their name.
            if hashlib.sha256(data).hexdigest() != digest:
                raise IntegrityError(f"{source}: sha256 does not match the digest {digest[:16]}... it is pushed as")
            self._put_small(key, digest, data, progress)
            return
        self._put_large(key, digest, Path(source), progress)

    def put_blob_verified(self, digest: str, data: bytes | bytearray | memoryview, progress: Progress | None = None) -> None:
        """Upload ``data``, which the caller has already hashed and found to be ``digest``.

        A push validates the weights from the very bytes it then hands over here, so
        they are neither read nor hashed again. The digest also serves as the request's
        SigV4 payload hash (``x-amz-content-sha256``, which AWS checks) and is sent as
        ``ChecksumSHA256`` (which AWS and SeaweedFS check): the service refuses
        bytes that do not match, so the upload is verified end to end without a second
        hash on this side. Blobs over 64 MiB go multipart (not checksummed per object).
        """
        key = self._blob_key(digest)
        if len(data) > _HEAD_FIRST and self._already_stored(key, len(data)):
            return
        if not isinstance(data, bytes):
            # One immutable copy: retries re-send the body, and botocore treats bytes
            # (one sendall, known length) better than other buffers.
            data = bytes(data)
        if len(data) <= _SMALL:
            self._put_small(key, digest, data, progress)
        else:
            self._put_large(key, digest, data, progress)

    def _put_small(self, key: str, digest: str, data: bytes, progress: Progress | None) -> None:
        from botocore.exceptions import ClientError

        # A bytes body goes out in one sendall; a file-like body would be sent in 8 KiB
        # reads through Python (~20% slower for 2 MB). The reader is only used when
        # the crash-test hook needs to fire mid-upload.
        hooked = os.environ.get(CRASH_ENV) == "mid-blob"
        _KNOWN_PAYLOAD.sha256 = digest if self._known_payload else None
        try:
            # ChecksumSHA256: the service hashes what it receives and refuses to store
            # anything else (BadDigest), so a truncated, interrupted or corrupted upload
            # never lands under the digest's key. Free for us: it is the key.
            self._call("put_object", lambda: {"Body": _HookedReader(data, None) if hooked else data},
                       Bucket=self.bucket, Key=key, ContentLength=len(data),
                       ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode("ascii"))
        except ClientError as exc:
            if self._code(exc)[1] in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
                raise IntegrityError(f"{self.label}: the service refused blob {digest[:12]}...: the bytes sent do not hash to its digest") from None
            raise self._error(exc, f"upload blob {digest[:12]}") from None
        finally:
            _KNOWN_PAYLOAD.sha256 = None
        if progress is not None:
            progress(len(data))

    def _put_large(self, key: str, digest: str, source: Path | bytes, progress: Progress | None) -> None:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(source, Path):
            h = hashlib.sha256()
            with open(source, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            if h.hexdigest() != digest:
                raise IntegrityError(f"{source}: sha256 does not match the digest {digest[:16]}... it is pushed as")
        config = TransferConfig(multipart_threshold=_SMALL, multipart_chunksize=16 * 1024 * 1024, max_concurrency=4)
        for attempt in range(self.max_attempts):
            try:
                if isinstance(source, Path):
                    self._client.upload_file(str(source), self.bucket, key, Config=config, Callback=progress)
                else:
                    self._client.upload_fileobj(io.BytesIO(source), self.bucket, key, Config=config, Callback=progress)
                return
            except ClientError as exc:
                raise self._error(exc, f"upload blob {digest[:12]}") from None
            except (BotoCoreError, S3UploadFailedError) as exc:  # the latter wraps transport errors
                if attempt + 1 == self.max_attempts:
                    raise RemoteUnavailableError(f"{self.label}: uploading blob {digest[:12]} failed: {exc}") from None
                time.sleep(0.25 * 2**attempt)

    def get_blob(self, digest: str, dest: Path, size: int, progress: Progress | None = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._blob_key(digest)
        for attempt in range(self.max_attempts):
            try:
                resp = self._call("get_object", Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if self._is_missing(exc):
                    raise AdapterNotFoundError(f"blob {digest} not found in {self.label}") from None
                raise self._error(exc, f"download blob {digest[:12]}") from None
            try:
                copy_verified(resp["Body"], Path(dest), digest, size, f"{self.label}/{key}", progress, sync=False)
                return
            except BotoCoreError as exc:  # stream broke mid-body; copy_verified removed its temp
                if attempt + 1 == self.max_attempts:
                    raise RemoteUnavailableError(f"{self.label}: downloading blob {digest[:12]} failed: {exc}") from None

    def iter_blobs(self) -> Iterator[str]:
        base = self._key("blobs", "sha256") + "/"
        for key, _ in self._list(base):
            leaf = key.rsplit("/", 1)[-1]
            if re.fullmatch(r"[0-9a-f]{64}", leaf):
                yield leaf

    def delete_blob(self, digest: str) -> None:
        self._delete(self._blob_key(digest))

    # -- versions ---------------------------------------------------------------------
    def put_version(self, name: str, version: str, manifest: bytes) -> None:
        from botocore.exceptions import ClientError

        key = self._version_key(name, version)
        try:
            self._call("put_object", Bucket=self.bucket, Key=key, Body=manifest, ContentLength=len(manifest),
                       IfNoneMatch="*", ContentType="application/json")
        except ClientError as exc:
            status, code = self._code(exc)
            if status == 412 or code == "PreconditionFailed":
                raise VersionExistsError(f"{name}@{version} already exists in {self.label}; versions are immutable") from None
            raise self._error(exc, f"create {name}@{version}") from None
        except RemoteUnavailableError as exc:
            # Retried 409s end here too: a concurrent creator is still in flight, so
            # this writer did not get the version.
            if "ConditionalRequestConflict" in str(exc) or "HTTP 409" in str(exc):
                raise VersionExistsError(f"{name}@{version} is being created concurrently in {self.label}") from None
            raise

    def get_version(self, name: str, version: str) -> bytes:
        return self._get_bytes(self._version_key(name, version), f"{name}@{version}")

    def list_versions(self, name: str) -> list[str]:
        base = self._name_key(name, "versions") + "/"
        out = []
        for key, _ in self._list(base):
            leaf = key[len(base):]
            if leaf.endswith(".json") and "/" not in leaf:
                try:
                    out.append(validate_version(leaf[:-5]))
                except ValueError:
                    continue
        return out

    def list_names(self) -> Iterator[str]:
        from adapterhub.registry.names import join_name

        top = self._key("adapters") + "/"
        for ns_prefix, is_prefix in self._list(top, "/"):
            if not is_prefix:
                continue
            ns = ns_prefix[len(top):].rstrip("/")
            for name_prefix, is_p in self._list(ns_prefix, "/"):
                if not is_p:
                    continue
                base = name_prefix[len(ns_prefix):].rstrip("/")
                try:
                    name = join_name(ns, base)
                    if self.list_versions(name):
                        yield name
                except ValueError:
                    continue

    def delete_version(self, name: str, version: str) -> None:
        key = self._version_key(name, version)
        if not self._exists(key):
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.label}")
        self._delete(key)
        for kind in ("records", "signatures"):
            for k, _ in list(self._list(self._name_key(name, kind, version) + "/")):
                self._delete(k)

    # -- tags -------------------------------------------------------------------------
    def set_tag(self, name: str, tag: str, version: str) -> None:
        validate_version(version)
        self._put(self._tag_key(name, tag), f"{version}\n".encode(), f"tag {name}:{tag}")

    def get_tag(self, name: str, tag: str) -> str:
        raw = self._get_bytes(self._tag_key(name, tag), f"tag {name}:{tag}", 256)
        try:
            return validate_version(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"{self.label}: tag {name}:{tag} does not hold a version") from None

    def list_tags(self, name: str) -> dict[str, str]:
        base = self._name_key(name, "tags") + "/"
        out = {}
        for key, _ in self._list(base):
            tag = key[len(base):]
            try:
                out[tag] = self.get_tag(name, tag)
            except (ValueError, AdapterNotFoundError):
                continue
        return dict(sorted(out.items()))

    def delete_tag(self, name: str, tag: str) -> None:
        key = self._tag_key(name, tag)
        if not self._exists(key):
            raise AdapterNotFoundError(f"tag {name}:{tag} not found in {self.label}")
        self._delete(key)

    # -- records ----------------------------------------------------------------------
    def add_record(self, name: str, version: str, record: bytes) -> str:
        if not self._exists(self._version_key(name, version)):
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.label}")
        rid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # sorts in creation order
        self._put(self._name_key(name, "records", version, f"{rid}.json"), record, f"record of {name}@{version}")
        return rid

    def list_records(self, name: str, version: str) -> list[bytes]:
        validate_version(version)
        base = self._name_key(name, "records", version) + "/"
        keys = sorted(k for k, _ in self._list(base) if k.endswith(".json"))
        return [self._get_bytes(k, f"record {k}") for k in keys]

    # -- signatures: immutable, named by their sha256 -------------------------------------
    def _signature_key(self, name: str, version: str, sig_id: str) -> str:
        return self._name_key(name, "signatures", validate_version(version), f"{check_digest(sig_id)}.sig")

    def put_signature(self, name: str, version: str, sig_id: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        if not self._exists(self._version_key(name, version)):
            raise AdapterNotFoundError(f"{name}@{version} not found in {self.label}")
        key = self._signature_key(name, version, sig_id)
        try:
            # Conditional create, as for versions: a signature object never changes.
            self._call("put_object", Bucket=self.bucket, Key=key, Body=data, ContentLength=len(data),
                       IfNoneMatch="*", ContentType="application/json")
        except ClientError as exc:
            status, code = self._code(exc)
            if status == 412 or code == "PreconditionFailed":
                return False  # named by its sha256: the same bytes are already there
            raise self._error(exc, f"store a signature of {name}@{version}") from None
        except RemoteUnavailableError as exc:
            if "ConditionalRequestConflict" in str(exc) or "HTTP 409" in str(exc):
                return False  # a concurrent put of the same bytes
            raise
        return True

    def list_signatures(self, name: str, version: str) -> list[bytes]:
        base = self._name_key(name, "signatures", validate_version(version)) + "/"
        keys = sorted(k for k, _ in self._list(base) if k.endswith(".sig"))
        return [self._get_bytes(k, f"signature {k}") for k in keys]

    def delete_signature(self, name: str, version: str, sig_id: str) -> None:
        key = self._signature_key(name, version, sig_id)
        if not self._exists(key):
            raise AdapterNotFoundError(f"signature {sig_id[:12]} of {name}@{version} not found in {self.label}")
        self._delete(key)
