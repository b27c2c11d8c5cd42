"""The hub's JSON registry API under ``/api/v1`` (documented in ``docs/hub-api.md``).

Two layers of routes over the same store:

* **browse**: ``search`` (the query layer shared with the pages), an adapter's summary
  and ``show`` of one version (manifest, tags, evaluation records);
* **store**: the raw objects of the :class:`~adapterhub.protocols.store.Store` protocol
  (names, versions, manifests, tags, records, blobs), which the ``http(s)://`` store
  plugin (``registry/http.py``) speaks, so push/pull/ls work against a hub as against
  any other store.

An adapter is addressed as two path segments, ``{ns}/{base}``; a name without a
namespace uses ``_`` (which no namespace can be: segments start with a letter or
digit), so ``team/x`` is ``/adapters/team/x`` and ``solo`` is ``/adapters/_/solo``.
Every segment is a single path segment (Starlette's ``[^/]+``) and goes through the
naming rule (``registry/names.py``) or the digest pattern before the store is touched;
the local store still resolves every path inside its root (``safe_join``).

Errors are ``{"error": {"status": N, "code": "...", "message": "one line"}}``; the
message never holds a token and never a path of the hub's machine.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from adapterhub.registry.local import DIGEST_RE
from adapterhub.registry.names import (
    DEFAULT_TAG,
    NO_NAMESPACE,
    validate_name,
    validate_tag,
    validate_version,
    version_key,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from adapterhub.errors import (
    AccessDeniedError,
    AdapterhubError,
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
from adapterhub.manifest import MAX_MANIFEST_BYTES

from . import signed
from .access import note_caller, request_id_of
from .query import SearchQuery, search
from .state import HubState
from .tokens import ANONYMOUS_READER, COOKIE, HubPrincipal, authenticate
from .transfer import (
    ApiError,
    etag_matches,
    etag_of,
    file_response,
    open_blob,
    receive_upload,
    served_size,
)

log = logging.getLogger("adapterhub.registry.hub.api")

PREFIX = "/api/v1"
API_VERSION = 1
MAX_RECORD_BYTES = 1024 * 1024  # as Registry.attach_evaluation
MAX_SMALL_BODY = 4096  # a tag's JSON body
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")

# Library errors → (status, code). Order matters: subclasses first.
_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (AuthenticationError, 401, "unauthorized"),
    (AccessDeniedError, 403, "forbidden"),
    (InvalidNameError, 400, "invalid_name"),
    (AdapterNotFoundError, 404, "not_found"),
    (VersionExistsError, 409, "version_exists"),
    (ManifestError, 422, "invalid_manifest"),
    (IntegrityError, 422, "integrity"),
    (SignatureError, 422, "signature"),
    (ConfigError, 400, "bad_request"),
    (RemoteUnavailableError, 503, "unavailable"),
    (StoreError, 500, "store_error"),
)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   request_id: str | None = None) -> JSONResponse:
    line = " ".join(message.split())[:500] or code  # one line, bounded
    error: dict[str, object] = {"status": status, "code": code, "message": line}
    if request_id is not None:
        error["request_id"] = request_id  # what to quote when asking the hub's operator
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _answer(exc: Exception, state: HubState, request: Request) -> JSONResponse:
    rid = request_id_of(request)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, rid)
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, "http_error", str(exc.detail), dict(exc.headers or {}), rid)
    match = next(((status, code) for kind, status, code in _ERRORS if isinstance(exc, kind)), None)
    if match is None:
        raise exc
    status, code = match
    headers = {"WWW-Authenticate": 'Bearer realm="adapterhub"'} if status == 401 else None
    if status >= 500:
        # The store's own message can name paths or endpoints of the hub's machine: it
        # goes to the hub's log, the client gets the kind of failure.
        log.error("store failure in %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
                  exc_info=exc, extra={"fields": {"request_id": rid}})
        message = "the hub's store is unavailable, try again later" if status == 503 else "the hub's store failed (see the hub's log)"
        return error_response(status, code, message, headers, rid)
    # Stores name themselves by URL (file:///srv/...): clients see "this hub" instead.
    return error_response(status, code, str(exc).replace(f" in {state.store.url}", "").replace(state.store.url, "this hub"), headers, rid)


def _endpoint(state: HubState, fn: Callable[[Request], Awaitable[Response]]) -> Endpoint:
    @wraps(fn)
    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except (ApiError, HTTPException, AdapterhubError) as exc:
            return _answer(exc, state, request)
    return run


async def _blocking(fn: Callable[..., T], *args: Any) -> T:
    """Store calls block (disk, S3): never on the event loop."""
    return await run_in_threadpool(fn, *args)


# --- who is calling ------------------------------------------------------------------------
def _reader(request: Request, state: HubState) -> HubPrincipal:
    # The pages' login cookie may read here too (download links on pages); never write.
    who = authenticate(state.tokens, request.headers.get("authorization"), state.sessions.lookup(request.cookies.get(COOKIE)))
    if who is None:
        raise AuthenticationError("this hub needs a token to read (send 'Authorization: Bearer <token>')")
    note_caller(request, who.name)
    return who


def _writer(request: Request, state: HubState, name: str | None = None, *, everything: bool = False) -> HubPrincipal:
    if state.tokens is None:
        raise AccessDeniedError("this hub is read-only (it was started without --tokens)")
    # The header only: a cookie rides along on cross-site requests, a header does not.
    who = authenticate(state.tokens, request.headers.get("authorization"))
    if who is None or who is ANONYMOUS_READER:
        raise AuthenticationError("writing needs a write token (send 'Authorization: Bearer <token>')")
    note_caller(request, who.name)
    if who.scope != "write":
        raise AccessDeniedError(f"token {who.name!r} has read scope; writing needs a write token")
    if name is not None and not who.can_write(name):
        raise AccessDeniedError(f"token {who.name!r} may not write {name} (its adapters: {', '.join(who.patterns)})")
    if everything and not who.unrestricted:
        raise AccessDeniedError(f"token {who.name!r} covers only {', '.join(who.patterns)}; deleting blobs needs adapters: ['*']")
    return who


def _can_read(who: HubPrincipal, name: str) -> None:
    if not who.can_read(name):
        raise AccessDeniedError(f"token {who.name!r} may not read {name} (its adapters: {', '.join(who.patterns)})")


# --- path and query parameters ------------------------------------------------------------------
def _name(request: Request) -> str:
    ns, base = request.path_params["ns"], request.path_params["base"]
    return validate_name(base if ns == NO_NAMESPACE else f"{ns}/{base}")


def _version(request: Request) -> str:
    return validate_version(request.path_params["version"])


def _digest(request: Request) -> str:
    digest = request.path_params["digest"]
    if not DIGEST_RE.match(digest):
        raise ApiError(400, "invalid_digest", f"invalid blob digest {ascii(digest)[:80]}: expected 64 lowercase hex characters")
    return str(digest)


def _page(request: Request) -> tuple[str, int]:
    after = request.query_params.get("after") or ""
    raw = request.query_params.get("limit") or ""
    try:
        limit = int(raw) if raw else DEFAULT_LIMIT
    except ValueError:
        raise ApiError(400, "bad_request", f"limit must be an integer, got {raw[:40]!r}") from None
    return after[:256], min(max(limit, 1), MAX_LIMIT)


async def _body(request: Request, limit: int, what: str) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"{what} of {int(declared)} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    got = 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > limit:
            raise ApiError(413, "too_large", f"{what} is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _paged(items: list[str], limit: int) -> tuple[list[str], str | None]:
    """One page of the ``limit + 1`` smallest items, and the cursor of the next page."""
    page = items[:limit]
    return page, (page[-1] if len(items) > limit else None)


# --- the routes -------------------------------------------------------------------------------
def routes(state: HubState) -> list[BaseRoute]:
    store = state.store

    async def info(request: Request) -> Response:
        try:
            who: HubPrincipal | None = _reader(request, state)
        except AuthenticationError:
            if request.headers.get("authorization"):
                raise  # a presented, wrong token is reported here too
            who = None
        return JSONResponse({
            "service": "adapterhub-hub", "api": API_VERSION, "read_only": state.tokens is None,
            "validate": state.validate, "max_blob_bytes": state.max_blob_bytes,
            "you": None if who is None else who.as_dict(),
        })

    async def search_route(request: Request) -> Response:
        who = _reader(request, state)
        try:
            query = SearchQuery.parse(request.query_params, request.query_params.getlist("where"))
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        snap = await state.cache.current()  # cached, or built in a worker thread
        is_signed = signed.is_signed(state)
        results = await _blocking(search, snap, query, who.can_read, is_signed)  # judging signatures is CPU work
        return JSONResponse({
            "total": results.total, "page": results.page, "per_page": results.per_page, "pages": results.pages,
            "results": [e.summary() | {"signed": is_signed(e)} for e in results.entries],
        })

    async def names(request: Request) -> Response:
        who = _reader(request, state)
        after, limit = _page(request)

        def collect() -> list[str]:
            # Smallest names after `after`, whatever order the store lists them in.
            return heapq.nsmallest(limit + 1, (n for n in store.list_names() if n > after and who.can_read(n)))
        page, nxt = _paged(await _blocking(collect), limit)
        return JSONResponse({"names": page, "next": nxt})

    async def adapter(request: Request) -> Response:
        name = _name(request)
        _can_read(_reader(request, state), name)

        def summary() -> dict[str, Any]:
            versions = sorted(store.list_versions(name), key=version_key)
            if not versions:
                raise AdapterNotFoundError(f"no adapter named {name!r} on this hub")
            tags = store.list_tags(name)
            return {"name": name, "versions": versions, "tags": tags, "latest": tags.get(DEFAULT_TAG, versions[-1])}
        return JSONResponse(await _blocking(summary))

    async def versions(request: Request) -> Response:
        name = _name(request)
        _can_read(_reader(request, state), name)
        found = await _blocking(store.list_versions, name)
        return JSONResponse({"name": name, "versions": sorted(found, key=version_key)})

    async def version(request: Request) -> Response:
        name, v = _name(request), _version(request)
        if request.method == "DELETE":
            _writer(request, state, name)
            await state.write(state.client.delete_version, name, v)
            state.cache.forget(name, v)
            state.cache.invalidate()
            return Response(status_code=204)
        _can_read(_reader(request, state), name)
        return JSONResponse(await _blocking(_show, state, name, v))

    async def manifest(request: Request) -> Response:
        name, v = _name(request), _version(request)
        if request.method == "PUT":
            _writer(request, state, name)
            data = await _body(request, MAX_MANIFEST_BYTES, "manifest")
            # What `adapterhub push` checks, then its conditional create (409 if the
            # version exists) with the local index updated, through the same client calls.
            checked = await _blocking(state.client.check_version, name, v, data) if state.validate else None
            await state.write(state.client.create_version, name, v, data, None, checked)
            state.cache.invalidate()
            digest = _sha256(data)
            return JSONResponse({"ref": f"{name}@{v}", "sha256": digest, "size": len(data)}, status_code=201,
                                headers={"ETag": etag_of(digest)})
        _can_read(_reader(request, state), name)
        await _blocking(signed.require, state, name, v)  # hub --require-signed: 422 with the reason
        data = await _blocking(store.get_version, name, v)
        etag = etag_of(_sha256(data))
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag})
        # The bytes exactly as stored: clients hash and parse them themselves.
        return Response(data, media_type="application/json", headers={"ETag": etag})

    async def records(request: Request) -> Response:
        name, v = _name(request), _version(request)
        if request.method == "POST":
            _writer(request, state, name)
            data = await _body(request, MAX_RECORD_BYTES, "evaluation record")
            _check_record(data, strict=state.validate)
            rid = await _blocking(state.client.add_record, name, v, data)
            return JSONResponse({"id": rid}, status_code=201)
        _can_read(_reader(request, state), name)
        raw = await _blocking(store.list_records, name, v)
        texts = []
        for r in raw:
            try:
                texts.append(r.decode("utf-8"))
            except UnicodeDecodeError:
                continue  # not JSON text: no client could read it either
        return JSONResponse({"name": name, "version": v, "records": texts})

    async def tags(request: Request) -> Response:
        name = _name(request)
        _can_read(_reader(request, state), name)
        return JSONResponse({"name": name, "tags": await _blocking(store.list_tags, name)})

    async def tag(request: Request) -> Response:
        name, t = _name(request), validate_tag(request.path_params["tag"])
        if request.method == "GET":
            _can_read(_reader(request, state), name)
            return JSONResponse({"name": name, "tag": t, "version": await _blocking(store.get_tag, name, t)})
        _writer(request, state, name)
        if request.method == "DELETE":
            await state.write(state.client.rm, f"{name}:{t}")
            state.cache.invalidate()
            return Response(status_code=204)
        v = _tag_body(await _body(request, MAX_SMALL_BODY, "tag"))
        await state.write(state.client.tag, f"{name}@{v}", t)  # 404 unless the version exists: no dangling tags
        state.cache.invalidate()
        return JSONResponse({"name": name, "tag": t, "version": v})

    async def blobs(request: Request) -> Response:
        who = _reader(request, state)
        if not who.unrestricted:
            raise AccessDeniedError(f"token {who.name!r} covers only {', '.join(who.patterns)}; listing blobs needs adapters: ['*']")
        after, limit = _page(request)

        def collect() -> list[str]:
            return heapq.nsmallest(limit + 1, (d for d in store.iter_blobs() if d > after))
        page, nxt = _paged(await _blocking(collect), limit)
        return JSONResponse({"blobs": page, "next": nxt})

    async def blob(request: Request) -> Response:
        digest = _digest(request)
        if request.method == "PUT":
            _writer(request, state)
            tmp = await receive_upload(request, digest, state.max_blob_bytes)
            try:
                await _blocking(state.client.put_blob, digest, tmp)
            finally:
                tmp.unlink(missing_ok=True)
            return JSONResponse({"digest": digest}, status_code=201, headers={"ETag": etag_of(digest)})
        if request.method == "DELETE":
            _writer(request, state, everything=True)
            await _blocking(state.client.delete_blob, digest)
            return Response(status_code=204)
        _reader(request, state)
        # Blobs are content-addressed and shared between adapters: any reader may fetch
        # one by digest (it must know the digest, which only a readable manifest lists).
        if request.method == "HEAD":
            # Only the size: never fetch a blob from a remote store to answer HEAD.
            return file_response(request, None, await _blocking(served_size, state, digest), etag_of(digest), "application/octet-stream")
        fh, size = await _blocking(open_blob, state, digest)
        return file_response(request, fh, size, etag_of(digest), "application/octet-stream")

    def r(path: str, fn: Callable[[Request], Awaitable[Response]], methods: list[str]) -> Route:
        return Route(path, _endpoint(state, fn), methods=methods)

    def can_read(request: Request, name: str) -> None:
        _can_read(_reader(request, state), name)

    def can_write(request: Request, name: str) -> None:
        _writer(request, state, name)

    sig = signed.routes(state, can_read, can_write, _blocking, _body)

    adapter_path = "/adapters/{ns}/{base}"
    version_path = adapter_path + "/versions/{version}"
    return [Mount(PREFIX, routes=[
        r("/", info, ["GET"]),
        r("/search", search_route, ["GET"]),
        r("/adapters", names, ["GET"]),
        r(adapter_path, adapter, ["GET"]),
        r(adapter_path + "/versions", versions, ["GET"]),
        r(version_path, version, ["GET", "DELETE"]),
        r(version_path + "/manifest", manifest, ["GET", "PUT"]),
        r(version_path + "/records", records, ["GET", "POST"]),
        r(version_path + "/signatures", sig["listing"], ["GET"]),
        r(version_path + "/signatures/{sig_id}", sig["one"], ["PUT", "DELETE"]),
        r(adapter_path + "/tags", tags, ["GET"]),
        r(adapter_path + "/tags/{tag}", tag, ["GET", "PUT", "DELETE"]),
        r("/blobs", blobs, ["GET"]),
        r("/blobs/{digest}", blob, ["GET", "PUT", "DELETE"]),
    ])]


# --- helpers the routes run in threads ---------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _show(state: HubState, name: str, version: str) -> dict[str, Any]:
    """Like ``Registry.show``: the parsed manifest, the version's tags, its evaluation
    records, and its signatures judged against the hub's trust file."""
    from adapterhub.registry.client import parse_manifest, read_records

    store = state.store
    m = parse_manifest(store.get_version(name, version), f"{name}@{version}")
    evaluations = read_records(store, name, version)
    return signed.summary(state, signed.verdicts(state, name, version)) | {
        "ref": f"{name}@{version}",
        "tags": sorted(t for t, v in store.list_tags(name).items() if v == version),
        "versions": sorted(store.list_versions(name), key=version_key),
        "manifest": json.loads(m.model_dump_json()),
        "evaluations": evaluations,
    }


def _check_record(data: bytes, strict: bool) -> None:
    try:
        rec = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ApiError(400, "bad_request", "an evaluation record must be JSON text (UTF-8)") from None
    if strict and not isinstance(rec, dict):
        raise ApiError(400, "bad_request", "an evaluation record must be a JSON object")


def _tag_body(data: bytes) -> str:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict) or set(body) != {"version"} or not isinstance(body["version"], str):
        raise ApiError(400, "bad_request", 'a tag body is {"version": "MAJOR.MINOR.PATCH"}')
    return validate_version(body["version"])
