"""Blob bytes in and out of the hub: ranged, ETag-ed downloads and verified, capped uploads.

Blobs are read and written through the registry client (``Registry.open_blob`` /
``put_blob``). Downloads stream the store's file (a local store's blob file directly; any
other store's blob is first fetched and verified into an unlinked temp file) with ``ETag`` = the
sha256, ``Accept-Ranges: bytes`` and single-range ``Range`` requests (206, or 416 when
unsatisfiable; several ranges are answered with the whole blob, as RFC 9110 allows).
Uploads stream into a temp file, refusing more than the hub's cap, and only a body whose
sha256 is the digest in the URL is handed to ``Registry.put_blob`` (the store verifies it
again, as every store does): nothing unverified becomes visible.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from adapterhub.errors import AdapterNotFoundError, IntegrityError

from .state import HubState

CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


class ApiError(Exception):
    """An answer of the API other than 2xx: status, a stable code and one line."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def etag_of(digest: str) -> str:
    return f'"{digest}"'


def etag_matches(header: str | None, etag: str) -> bool:
    """Does an ``If-None-Match`` header name ``etag`` (or ``*``)?"""
    if not header:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``Range`` → (start, end exclusive); None to ignore it (several ranges, other units,
    bad syntax); ApiError 416 when it is well-formed but beyond the blob."""
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.groups()
    unsatisfiable = ApiError(416, "range_not_satisfiable", f"range {header.strip()[:60]!r} is outside the blob's {size} bytes",
                             {"Content-Range": f"bytes */{size}"})
    if not first:
        if not last:
            return None
        n = int(last)
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - n), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None  # "bytes=5-2" is invalid syntax: ignored, the whole blob is sent
    if start >= size:
        raise unsatisfiable
    return start, min(end, size)


def file_response(request: Request, fh: BinaryIO | None, size: int, etag: str, media_type: str) -> Response:
    """Answer GET/HEAD with ``fh`` (closed when done; None for HEAD): conditional, ranged, streamed."""
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if fh is None:
        assert request.method == "HEAD", "only HEAD is answered without the bytes"
        fh = io.BytesIO()
    try:
        if etag_matches(request.headers.get("if-none-match"), etag):
            fh.close()
            return Response(status_code=304, headers=headers)
        start, end, status = 0, size, 200
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if wanted and (if_range is None or if_range.strip() == etag):
            span = parse_range(wanted, size)
            if span is not None:
                start, end, status = span[0], span[1], 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            fh.close()
            return Response(status_code=status, headers=headers, media_type=media_type)
    except BaseException:
        fh.close()
        raise
    return StreamingResponse(_chunks(fh, start, end), status_code=status, headers=headers, media_type=media_type)


async def _chunks(fh: BinaryIO, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        await run_in_threadpool(fh.seek, start)
        left = end - start
        while left > 0:
            chunk = await run_in_threadpool(fh.read, min(CHUNK, left))
            if not chunk:
                break  # the file shrank under us; the short body tells the client
            left -= len(chunk)
            yield chunk
    finally:
        fh.close()


def _size_from_index(state: HubState, digest: str) -> int | None:
    """The size a published manifest records for ``digest`` (stores that cannot say)."""
    for attempt in range(2):
        snap = state.cache.snapshot() if attempt == 0 else state.cache.refresh()
        for entries in snap.versions.values():
            for e in entries:
                for f in e.manifest.files:
                    if f.sha256 == digest:
                        return f.size
    return None


def served_size(state: HubState, digest: str) -> int:
    """The size the hub serves a blob with; AdapterNotFoundError when it serves none."""
    size = state.client.blob_size(digest)
    if size is not None and size < 0:
        # The store has it but cannot say how big: get_blob needs the size to verify, so
        # take it from the manifest that publishes the blob. Unpublished blobs are not
        # served by such stores (HEAD says the same as GET: not found).
        size = _size_from_index(state, digest)
    if size is None:
        raise AdapterNotFoundError(f"blob {digest} not found")
    return size


def open_blob(state: HubState, digest: str) -> tuple[BinaryIO, int]:
    """An open file of the blob's bytes and its size (blocking: call in a thread)."""
    return state.client.open_blob(digest, served_size(state, digest))


def _write(fh: BinaryIO, h: hashlib._Hash, data: bytes) -> None:
    h.update(data)
    fh.write(data)


async def receive_upload(request: Request, digest: str, limit: int) -> Path:
    """Stream the request body into a temp file; its sha256 must be ``digest``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"blob of {int(declared)} bytes is over this hub's limit of {limit} bytes")
    fd, name = tempfile.mkstemp(prefix=".hub-upload-")
    path = Path(name)
    fh = os.fdopen(fd, "wb")
    h = hashlib.sha256()
    got = 0
    pending: list[bytes] = []
    buffered = 0
    try:
        async for chunk in request.stream():
            got += len(chunk)
            if got > limit:
                raise ApiError(413, "too_large", f"blob is over this hub's limit of {limit} bytes")
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= CHUNK:
                # Hash and write off the event loop, in batches (one thread hop per ~256 KiB).
                await run_in_threadpool(_write, fh, h, b"".join(pending))
                pending.clear()
                buffered = 0
        if pending:
            await run_in_threadpool(_write, fh, h, b"".join(pending))
        fh.close()
        if h.hexdigest() != digest:
            raise IntegrityError(f"the {got} bytes sent hash to {h.hexdigest()[:16]}..., not to the blob's digest {digest[:16]}...")
        return path
    except BaseException:
        fh.close()
        path.unlink(missing_ok=True)
        raise
