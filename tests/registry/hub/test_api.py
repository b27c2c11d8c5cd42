"""The hub's JSON API over a live server: access rules, validation, blobs, hostile paths."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.http import HttpStore
from adapterhub.registry.local import LocalStore

from adapterhub.errors import VersionExistsError
from adapterhub.protocols.store import Store
from adapterhub.testing.hubserver import RunningHub, running_hub, token_for, write_tokens
from adapterhub.testing.stores import write_test_adapter

TOKENS = {
    "admin": ("write", ["*"]),
    "team": ("write", ["team/*"]),
    "reader": ("read", ["*"]),
    "teamreader": ("read", ["team/*"]),
}
API = "/api/v1"


def auth(name: str | None) -> dict[str, str]:
    return {} if name is None else {"Authorization": f"Bearer {token_for(name)}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningHub, Path]]:
    """A hub with tokens over a local store holding team/x@1.0.0 (tag prod) and other/y@1.0.0."""
    tmp = tmp_path_factory.mktemp("hubapi")
    tokens = write_tokens(tmp / "tokens.yaml", TOKENS)
    with running_hub(tmp / "hubstore", tokens=tokens) as hub:
        reg = Registry(root=tmp / "home", progress=False)
        reg.use_store(hub.url, HttpStore(hub.url, token=token_for("admin")))
        reg.push(write_test_adapter(tmp / "a", seed=1, task="sentiment-rt"), "team/x", version="1.0.0", tag="prod", to=hub.url)
        reg.push(write_test_adapter(tmp / "b", seed=2, task="aclsum"), "other/y", version="1.0.0", to=hub.url)
        reg.attach_evaluation("team/x@1.0.0", {"kind": "forgetting", "rows": []}, to=hub.url)
        yield hub, tmp


@pytest.fixture
def hub(world: tuple[RunningHub, Path]) -> RunningHub:
    return world[0]


def call(hub: RunningHub, method: str, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
    headers = {**auth(who), **kw.pop("headers", {})}
    return httpx.request(method, hub.url + API + path, headers=headers, timeout=30, **kw)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == r.status_code and "\n" not in body["error"]["message"]
    return dict(body["error"])


# --- access ------------------------------------------------------------------------------------
def test_without_a_tokens_file_the_hub_is_read_only_and_open(tmp_path: Path) -> None:
    src = write_test_adapter(tmp_path / "a", seed=5)
    Registry(root=tmp_path / "store", progress=False).push(src, "team/x", version="1.0.0")
    with running_hub(tmp_path / "store") as h:
        assert call(h, "GET", "/").json()["read_only"] is True
        assert call(h, "GET", "/adapters/team/x").json()["versions"] == ["1.0.0"]
        assert call(h, "GET", "/adapters/team/x/versions/1.0.0/manifest").status_code == 200
        digest = hashlib.sha256(b"x").hexdigest()
        for method, path in [("PUT", f"/blobs/{digest}"), ("DELETE", "/adapters/team/x/versions/1.0.0"),
                             ("PUT", "/adapters/team/x/tags/prod"), ("DELETE", "/adapters/team/x/tags/latest"),
                             ("POST", "/adapters/team/x/versions/1.0.0/records")]:
            for who in (None, "admin"):  # no token can write to a read-only hub
                r = call(h, method, path, who, content=b"x")
                assert r.status_code == 403 and "read-only" in error_of(r)["message"], (method, path)
        assert LocalStore(tmp_path / "store").list_tags("team/x") == {"latest": "1.0.0"}


@pytest.mark.parametrize(("method", "path", "who", "status"), [
    ("GET", "/search", None, 401),
    ("GET", "/adapters/team/x", None, 401),
    ("GET", "/search", "reader", 200),
    ("GET", "/adapters/team/x", "teamreader", 200),
    ("GET", "/adapters/other/y", "teamreader", 403),
    ("GET", "/adapters/other/y/versions/1.0.0/manifest", "teamreader", 403),
    ("GET", "/adapters/other/y", "team", 403),  # a write token reads only what it covers
    ("GET", "/blobs", "teamreader", 403),  # listing blobs needs adapters: ['*']
    ("GET", "/blobs", "reader", 200),
    ("PUT", "/adapters/team/x/tags/stable", None, 401),
    ("PUT", "/adapters/team/x/tags/stable", "reader", 403),
    ("PUT", "/adapters/other/y/tags/stable", "team", 403),
    ("PUT", "/adapters/team/x/tags/stable", "team", 200),
    ("DELETE", "/adapters/team/x/tags/nope", "teamreader", 403),
    ("DELETE", "/blobs/" + "0" * 64, "team", 403),  # blobs are shared: only an unrestricted token deletes
    ("PUT", "/blobs/" + hashlib.sha256(b"hello").hexdigest(), "reader", 403),
])
def test_access_rules(hub: RunningHub, method: str, path: str, who: str | None, status: int) -> None:
    r = call(hub, method, path, who, content=b'{"version": "1.0.0"}' if method == "PUT" else None)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer") and error_of(r)["code"] == "unauthorized"
    elif status == 403:
        assert error_of(r)["code"] == "forbidden"


def test_a_wrong_token_is_401_never_anonymous_and_a_cookie_never_writes(hub: RunningHub) -> None:
    for header in ("Bearer nope-not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer"):
        r = call(hub, "GET", "/search", headers={"Authorization": header})
        assert r.status_code == 401 and "nope" not in r.text
    # The pages' login cookie (a session id) reads through the API too, and never writes.
    login = httpx.post(hub.url + "/login", content=f"token={token_for('admin')}",
                       headers={"content-type": "application/x-www-form-urlencoded"}, timeout=30)
    assert login.status_code == 303
    cookies = dict(login.cookies)
    assert call(hub, "GET", "/adapters/team/x", cookies=cookies).status_code == 200
    # A token in place of the session id is no session: anonymous, and this hub needs a token.
    assert call(hub, "GET", "/adapters/team/x", cookies={"adapterhub_session": token_for("admin")}).status_code == 401
    r = call(hub, "PUT", "/adapters/team/x/tags/cookie", cookies=cookies, content=b'{"version": "1.0.0"}')
    assert r.status_code == 401 and "cookie" not in HttpStore(hub.url, token=token_for("admin")).list_tags("team/x")
    me = call(hub, "GET", "/", "teamreader").json()["you"]
    assert me == {"name": "teamreader", "scope": "read", "adapters": ["team/*"]}


def test_search_and_listings_hide_what_a_token_cannot_read(hub: RunningHub) -> None:
    everything = call(hub, "GET", "/search", "reader").json()
    assert {r["name"] for r in everything["results"]} >= {"team/x", "other/y"}
    team = call(hub, "GET", "/search", "teamreader").json()
    assert {r["name"] for r in team["results"]} == {"team/x"} and team["total"] == 1
    assert call(hub, "GET", "/adapters", "teamreader").json() == {"names": ["team/x"], "next": None}
    found = call(hub, "GET", "/search", "reader", params={"task": "aclsum"}).json()["results"]
    assert [r["ref"] for r in found] == ["other/y@1.0.0"] and found[0]["headline"]["task"] == "aclsum"
    r = call(hub, "GET", "/search", "reader", params={"where": "rougeL>>x"})
    assert r.status_code == 400 and error_of(r)["code"] == "bad_request"


def test_search_filter_no_task_forgotten_is_on_the_api_too(hub: RunningHub) -> None:
    # The API shares the pages' query layer. These adapters carry no forgetting report in
    # their manifests: "no task forgotten" is unknown for them, so none is listed.
    assert call(hub, "GET", "/search", "reader").json()["total"] >= 2
    assert call(hub, "GET", "/search", "reader", params={"no_forgotten": "1"}).json()["total"] == 0


def test_summary_show_tags_records_and_paging(hub: RunningHub) -> None:
    s = call(hub, "GET", "/adapters/team/x", "reader").json()
    assert s["versions"] == ["1.0.0"] and s["latest"] == "1.0.0" and s["tags"]["prod"] == "1.0.0"
    show = call(hub, "GET", "/adapters/team/x/versions/1.0.0", "reader").json()
    assert show["ref"] == "team/x@1.0.0" and "prod" in show["tags"] and show["manifest"]["task"] == "sentiment-rt"
    assert show["evaluations"] == [{"kind": "forgetting", "rows": []}]
    assert call(hub, "GET", "/adapters/team/x/tags/prod", "reader").json()["version"] == "1.0.0"
    assert call(hub, "GET", "/adapters/team/nothing", "reader").status_code == 404
    assert call(hub, "GET", "/adapters/team/nothing/versions", "reader").json()["versions"] == []
    first = call(hub, "GET", "/adapters", "reader", params={"limit": 1}).json()
    second = call(hub, "GET", "/adapters", "reader", params={"limit": 1, "after": first["next"]}).json()
    assert first["names"] == ["other/y"] and second["names"] == ["team/x"]
    blobs = call(hub, "GET", "/blobs", "reader", params={"limit": 1}).json()
    assert len(blobs["blobs"]) == 1 and blobs["next"] == blobs["blobs"][0]
    r = call(hub, "POST", "/adapters/team/x/versions/1.0.0/records", "team", content=b"not json")
    assert r.status_code == 400
    r = call(hub, "POST", "/adapters/team/x/versions/1.0.0/records", "team", content=b"[" * 2_000_000)
    assert r.status_code == 413 and error_of(r)["code"] == "too_large"
    r = call(hub, "PUT", "/adapters/team/x/tags/ghost", "team", content=b'{"version": "9.9.9"}')
    assert r.status_code == 404  # no tag on a version that does not exist


def test_unknown_routes_and_methods_answer_json(hub: RunningHub) -> None:
    assert call(hub, "GET", "/nope").status_code == 404 and error_of(call(hub, "GET", "/nope"))
    r = call(hub, "PATCH", "/adapters/team/x/tags/prod", "admin")
    assert r.status_code == 405 and error_of(r)


# --- pushes: validation before anything is visible ------------------------------------------------
def _manifest_of(hub: RunningHub, name: str = "team/x", version: str = "1.0.0") -> dict[str, Any]:
    return dict(call(hub, "GET", f"/adapters/{name}/versions/{version}/manifest", "reader").json())


@pytest.mark.parametrize(("change", "code", "why"), [
    (lambda m: b"{not json", "invalid_manifest", "not valid JSON"),
    (lambda m: json.dumps({**m, "surprise": 1}).encode(), "invalid_manifest", "surprise"),
    (lambda m: json.dumps({**m, "name": "team/other"}).encode(), "invalid_manifest", "pushed as"),
    (lambda m: json.dumps({**m, "version": "3.0.0"}).encode(), "invalid_manifest", "pushed as"),
    (lambda m: json.dumps({**m, "files": [{**m["files"][0], "sha256": "ab" * 32}]}).encode(), "integrity", "upload the blobs"),
    (lambda m: json.dumps({**m, "files": [{**m["files"][0], "size": m["files"][0]["size"] + 1}]}).encode(), "integrity", "holds"),
])
def test_a_push_that_fails_validation_changes_nothing(hub: RunningHub, world: tuple[RunningHub, Path],
                                                      change: Callable[[dict[str, Any]], bytes], code: str, why: str) -> None:
    m = {**_manifest_of(hub), "name": "team/bad", "version": "2.0.0"}
    r = call(hub, "PUT", "/adapters/team/bad/versions/2.0.0/manifest", "admin", content=change(m))
    assert r.status_code == 422 and error_of(r)["code"] == code and why in error_of(r)["message"], r.text
    store = LocalStore(world[1] / "hubstore")
    assert store.list_versions("team/bad") == [] and store.list_tags("team/bad") == {}
    assert "team/bad" not in {x["name"] for x in call(hub, "GET", "/search", "reader").json()["results"]}


def test_re_pushing_the_same_bytes_is_a_no_op_and_other_bytes_a_409(hub: RunningHub, world: tuple[RunningHub, Path]) -> None:
    tmp = world[1]
    reg = Registry(root=tmp / "home2", progress=False)
    reg.use_store(hub.url, HttpStore(hub.url, token=token_for("team")))
    assert reg.publish(tmp / "a", "team/x", version="1.0.0", to=hub.url).created is False  # the directory pushed first
    with pytest.raises(VersionExistsError, match="different contents"):
        reg.push(write_test_adapter(tmp / "other", seed=9), "team/x", version="1.0.0", to=hub.url)
    raw = call(hub, "GET", "/adapters/team/x/versions/1.0.0/manifest", "reader").content
    r = call(hub, "PUT", "/adapters/team/x/versions/1.0.0/manifest", "team", content=raw)
    assert r.status_code == 409 and error_of(r)["code"] == "version_exists"
    # A write through the API is visible to this hub's search at once (read-your-writes).
    reg.push(write_test_adapter(tmp / "fresh", seed=3, task="chitchat"), "team/fresh", version="0.1.0", to=hub.url)
    assert [x["ref"] for x in call(hub, "GET", "/search", "reader", params={"q": "fresh"}).json()["results"]] == ["team/fresh@0.1.0"]
    assert call(hub, "DELETE", "/adapters/team/fresh/versions/0.1.0", "team").status_code == 204
    assert call(hub, "GET", "/search", "reader", params={"q": "fresh"}).json()["total"] == 0


# --- blobs: ETag, ranges, uploads ---------------------------------------------------------------
def test_blob_etag_ranges_head_and_conditional_get(hub: RunningHub) -> None:
    f = _manifest_of(hub)["files"][0]
    digest, size = f["sha256"], f["size"]
    full = call(hub, "GET", f"/blobs/{digest}", "reader")
    data = full.content
    assert full.status_code == 200 and hashlib.sha256(data).hexdigest() == digest and len(data) == size
    assert full.headers["etag"] == f'"{digest}"' and full.headers["accept-ranges"] == "bytes"
    for header, want in [("bytes=0-9", data[:10]), ("bytes=10-", data[10:]), ("bytes=-5", data[-5:]),
                         (f"bytes=5-{size + 100}", data[5:])]:
        r = call(hub, "GET", f"/blobs/{digest}", "reader", headers={"Range": header})
        assert r.status_code == 206 and r.content == want, header
        start = size - 5 if header == "bytes=-5" else int(header[6:].split("-")[0])
        assert r.headers["content-range"] == f"bytes {start}-{size - 1 if header != 'bytes=0-9' else 9}/{size}"
    for header in (f"bytes={size}-", "bytes=-0"):
        r = call(hub, "GET", f"/blobs/{digest}", "reader", headers={"Range": header})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}" and error_of(r)
    for header in ("bytes=0-1,4-5", "items=0-3", "bytes=9-2"):  # ignored: the whole blob
        assert call(hub, "GET", f"/blobs/{digest}", "reader", headers={"Range": header}).content == data
    stale = call(hub, "GET", f"/blobs/{digest}", "reader", headers={"Range": "bytes=0-3", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data
    head = call(hub, "HEAD", f"/blobs/{digest}", "reader")
    assert head.status_code == 200 and head.headers["content-length"] == str(size) and head.content == b""
    head = call(hub, "HEAD", f"/blobs/{digest}", "reader", headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["content-length"] == "10"
    assert call(hub, "GET", f"/blobs/{digest}", "reader", headers={"If-None-Match": f'"{digest}"'}).status_code == 304
    assert call(hub, "HEAD", "/blobs/" + "0" * 64, "reader").status_code == 404
    manifest = call(hub, "GET", "/adapters/team/x/versions/1.0.0/manifest", "reader")
    assert manifest.headers["etag"] == '"' + hashlib.sha256(manifest.content).hexdigest() + '"'


def test_uploads_are_verified_and_capped(hub: RunningHub, world: tuple[RunningHub, Path]) -> None:
    store = LocalStore(world[1] / "hubstore")
    data = os.urandom(5000)
    digest = hashlib.sha256(data).hexdigest()
    lying = hashlib.sha256(b"other bytes").hexdigest()
    r = call(hub, "PUT", f"/blobs/{lying}", "team", content=data)
    assert r.status_code == 422 and error_of(r)["code"] == "integrity" and not store.has_blob(lying)
    hub.state.max_blob_bytes = 4096
    try:
        r = call(hub, "PUT", f"/blobs/{digest}", "team", content=data)
        assert r.status_code == 413 and not store.has_blob(digest)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming
            yield data[:3000]
            yield data[3000:]
        r = call(hub, "PUT", f"/blobs/{digest}", "team", content=chunks())
        assert r.status_code == 413 and not store.has_blob(digest)
    finally:
        hub.state.max_blob_bytes = 16 * 1024**3
    r = call(hub, "PUT", f"/blobs/{digest}", "team", content=data)
    assert r.status_code == 201 and store.has_blob(digest) and r.headers["etag"] == f'"{digest}"'


class ProtocolOnly:
    """A store that is only the Store protocol (like a third-party plugin): no paths, no sizes."""

    def __init__(self, inner: LocalStore) -> None:
        self._inner = inner
        self.url = "proto://test"

    def __getattr__(self, name: str) -> Any:
        if name in ("blob_path", "blob_size", "open_version", "root"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_blobs_of_a_store_that_cannot_give_paths_or_sizes(tmp_path: Path) -> None:
    src = write_test_adapter(tmp_path / "a", seed=6)
    Registry(root=tmp_path / "store", progress=False).push(src, "team/p", version="1.0.0")
    store: Store = ProtocolOnly(LocalStore(tmp_path / "store"))  # type: ignore[assignment]
    with running_hub(store) as h:
        f = _manifest_of(h, "team/p")["files"][0]
        r = call(h, "GET", f"/blobs/{f['sha256']}", headers={"Range": "bytes=2-5"})
        assert r.status_code == 206 and r.content == (src / f["path"]).read_bytes()[2:6]
        pulled = Registry(root=tmp_path / "home", progress=False).pull("team/p@1.0.0", from_=h.url)
        assert (pulled / f["path"]).read_bytes() == (src / f["path"]).read_bytes()
        head = call(h, "HEAD", f"/blobs/{f['sha256']}")  # the size from the index, nothing fetched
        assert head.status_code == 200 and head.headers["content-length"] == str(f["size"])
        orphan = tmp_path / "orphan.bin"
        orphan.write_bytes(b"published by no manifest")
        digest = hashlib.sha256(orphan.read_bytes()).hexdigest()
        store.put_blob(digest, orphan)
        assert call(h, "HEAD", f"/blobs/{digest}").status_code == 404 == call(h, "GET", f"/blobs/{digest}").status_code


# --- hostile paths ---------------------------------------------------------------------------------
HOSTILE = [
    "../x", "..%2Fx", "%2e%2e/%2e%2e/etc/passwd", "%2e%2e%2f%2e%2e%2fsecret.txt", "team/../../x", "team/..%2F..%2Fsecret.txt",
    "..\\..\\secret.txt", "team%5C..%5C..%5Csecret.txt", "nul%00byte/x", "team/x%00", "x" * 300 + "/y", "team/" + "y" * 5000,
    "%EF%BD%81dapter/x", "%D0%B0dapter/x", "%3Cscript%3Ealert(1)%3C%2Fscript%3E/x", "team/%3Cimg%20src%3Dx%3E",
    "/etc/passwd", "%2Fetc%2Fpasswd/x", ".hidden/x", "team/.git", "team/x%20y", "%252e%252e/x", "team/x.", "-team/x",
    "team/x;rm%20-rf", "team/x%0d%0aSet-Cookie:%20a=b", "_/..", "_/%2e%2e", "team/x/../../../secret.txt",
]


def _raw(url: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)  # the path exactly as written, never normalised
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _tree(root: Path, skip: Path) -> dict[str, bytes]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and skip not in p.parents:
            out[str(p)] = p.read_bytes()
    return out


def test_hostile_paths_never_reach_outside_the_store(hub: RunningHub, world: tuple[RunningHub, Path]) -> None:
    tmp = world[1]
    sentinel = b"SENTINEL-OUTSIDE-THE-STORE"
    (tmp / "secret.txt").write_bytes(sentinel)
    (tmp / "etc").mkdir(exist_ok=True)
    (tmp / "etc" / "passwd").write_bytes(sentinel)
    store_root = tmp / "hubstore"
    before = _tree(tmp, store_root)
    manifest = json.dumps(_manifest_of(hub)).encode()
    admin = {"Authorization": f"Bearer {token_for('admin')}", "Content-Type": "application/json"}
    tried = 0
    for hostile in HOSTILE:
        paths = [
            f"{API}/adapters/{hostile}", f"{API}/adapters/{hostile}/versions", f"{API}/adapters/{hostile}/versions/1.0.0/manifest",
            f"{API}/adapters/team/x/versions/{hostile}/manifest", f"{API}/adapters/team/x/tags/{hostile}",
            f"{API}/blobs/{hostile}", f"{API}/adapters/{hostile}/versions/1.0.0/records",
        ]
        for path in paths:
            for method, body in (("GET", None), ("PUT", manifest), ("DELETE", None), ("POST", b"{}")):
                status, got = _raw(hub.url, method, path, admin, body)
                tried += 1
                assert status in (400, 404, 405), (method, path, status, got[:200])
                assert sentinel not in got and b"Traceback" not in got
                if got.startswith(b"{"):
                    assert "\n" not in json.loads(got)["error"]["message"]
    assert tried >= 20 * 4
    assert _tree(tmp, store_root) == before  # nothing written or changed outside the store
    escaped = [p for p in store_root.rglob("*") if p.is_symlink() or ".." in p.parts]
    assert not escaped and LocalStore(store_root).list_versions("team/x") == ["1.0.0"]


# --- tokens never in logs ---------------------------------------------------------------------------
def test_tokens_never_appear_in_the_server_log(hub: RunningHub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for logger in ("uvicorn", "uvicorn.access", "uvicorn.error", "adapterhub", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=logger)
    wrong = "wrong-token-that-must-not-be-logged"
    for who_header in (f"Bearer {token_for('admin')}", f"Bearer {wrong}", f"Basic {wrong}"):
        for method, path in [("GET", "/search"), ("PUT", "/adapters/team/x/tags/logcheck"), ("GET", "/blobs/zz"),
                             ("PUT", "/adapters/team/x/versions/1.0.0/manifest"), ("GET", "/adapters/team/x")]:
            call(hub, method, path, headers={"Authorization": who_header}, content=b'{"version": "1.0.0"}' if method == "PUT" else None)
    call(hub, "GET", "/search", cookies={"adapterhub_session": wrong})
    HttpStore(hub.url, token=token_for("team")).list_tags("team/x")
    # The access log is on (request lines are logged), so the check below proves something.
    assert any(r.name == "uvicorn.access" for r in caplog.records)
    for secret in [token_for(n) for n in TOKENS] + [wrong]:
        assert secret not in caplog.text
