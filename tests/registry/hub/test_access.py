"""The hub's request log (registry/hub/access.py) over a live hub: request ids, access
lines with the token's name, failures with tracebacks, and never a token in any record."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.hub.access import MAX_ID_CHARS
from adapterhub.registry.local import LocalStore

from adapterhub.errors import StoreError
from adapterhub.testing.hubserver import RunningHub, running_hub, token_for, write_tokens
from adapterhub.testing.stores import write_test_adapter

ACCESS = "adapterhub.registry.hub.access"
API = "/api/v1"


class _FailingStore:
    """A real local store, except that two adapter names fail: one with a bug, one with the store."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.url = inner.url

    def list_versions(self, name: str) -> list[str]:
        if name == "team/bug":
            raise RuntimeError("a bug in the hub")
        if name == "team/down":
            raise StoreError("disk /srv/secret-path is gone")
        return self.inner.list_versions(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    # logs.configure() (run by a server command earlier in this process) stops propagation
    # to the root logger, where caplog listens.
    monkeypatch.setattr(logging.getLogger("adapterhub"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="adapterhub")
    return caplog


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    src = write_test_adapter(tmp_path / "a", seed=1)
    Registry(root=tmp_path / "store", progress=False).push(src, "team/x", version="1.0.0")
    tokens = write_tokens(tmp_path / "tokens.yaml", {"admin": ("write", ["*"]), "reader": ("read", ["*"])})
    with running_hub(_FailingStore(LocalStore(tmp_path / "store")), tokens=tokens) as h:  # type: ignore[arg-type]
        yield h


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [dict(r.fields) for r in caplog.records if r.name == ACCESS and hasattr(r, "fields") and "status" in r.fields]


def _settle(caplog: pytest.LogCaptureFixture, request_id: str) -> None:
    """Wait for the access line of ``request_id``: a server logs after it has answered."""
    deadline = time.monotonic() + 10
    while not any(f["request_id"] == request_id for f in _access(caplog)):
        assert time.monotonic() < deadline, f"no access line for {request_id}"
        time.sleep(0.01)


def test_every_request_gets_an_id_and_one_access_line(hub: RunningHub, logs: pytest.LogCaptureFixture) -> None:
    r = httpx.get(hub.url + API + "/adapters/team/x", headers={"Authorization": f"Bearer {token_for('reader')}",
                                                                "x-request-id": "client-id-42"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-id-42"  # honoured and returned
    generated = httpx.get(hub.url + "/login", timeout=30).headers["x-request-id"]
    assert 8 <= len(generated) <= MAX_ID_CHARS and generated != "client-id-42"
    for bad in ("x" * (MAX_ID_CHARS + 1), "two words", "tab\there"):
        got = httpx.get(hub.url + "/login", headers={"x-request-id": bad}, timeout=30).headers["x-request-id"]
        assert got != bad and " " not in got  # not printable or too long: a fresh id instead
    _settle(logs, "client-id-42")
    _settle(logs, generated)
    lines = _access(logs)
    mine = [f for f in lines if f["request_id"] == "client-id-42"]
    assert len(mine) == 1
    assert mine[0]["method"] == "GET" and mine[0]["path"] == API + "/adapters/team/x" and mine[0]["status"] == 200
    assert mine[0]["token"] == "reader" and isinstance(mine[0]["total_ms"], float)
    anonymous = [f for f in lines if f["request_id"] == generated]
    assert anonymous and anonymous[0]["token"] == "-" and anonymous[0]["path"] == "/login"


def test_error_bodies_carry_the_request_id(hub: RunningHub, logs: pytest.LogCaptureFixture) -> None:
    for path in ("/adapters/team/x", "/nope"):  # a handler's 401 and the router's 404
        r = httpx.get(hub.url + API + path, headers={"x-request-id": "err-1"}, timeout=30)
        assert r.status_code in (401, 404) and r.json()["error"]["request_id"] == "err-1"


def test_crashes_and_store_failures_are_logged_with_traceback_and_request_id(hub: RunningHub, logs: pytest.LogCaptureFixture) -> None:
    auth = {"Authorization": f"Bearer {token_for('reader')}"}
    r = httpx.get(hub.url + API + "/adapters/team/bug/versions", headers={**auth, "x-request-id": "crash-1"}, timeout=30)
    assert r.status_code == 500 and r.headers["x-request-id"] == "crash-1"
    assert r.json()["error"] == {"status": 500, "code": "internal", "message": "internal error", "request_id": "crash-1"}
    assert "a bug in the hub" not in r.text  # never a traceback to the client
    _settle(logs, "crash-1")
    crash = [rec for rec in logs.records if rec.exc_info and getattr(rec, "fields", {}).get("request_id") == "crash-1"]
    assert len(crash) == 1 and "a bug in the hub" in logs.text and "Traceback" in logs.text
    assert {f["status"] for f in _access(logs) if f["request_id"] == "crash-1"} == {500}

    r = httpx.get(hub.url + API + "/adapters/team/down/versions", headers={**auth, "x-request-id": "store-1"}, timeout=30)
    assert r.status_code == 500 and "secret-path" not in r.text and r.json()["error"]["request_id"] == "store-1"
    _settle(logs, "store-1")
    failed = [rec for rec in logs.records if rec.exc_info and getattr(rec, "fields", {}).get("request_id") == "store-1"]
    assert len(failed) == 1 and "secret-path" in logs.text  # the operator sees what the client does not

    page = httpx.get(hub.url + "/a/team/bug", headers={**auth, "x-request-id": "page-1"}, timeout=30)
    assert page.headers["x-request-id"] == "page-1" and page.status_code in (404, 500)


def test_no_token_ever_appears_in_a_log_record(hub: RunningHub, logs: pytest.LogCaptureFixture) -> None:
    secrets = [token_for("admin"), token_for("reader"), "wrong-token-never-logged"]
    for token in secrets:
        auth = {"Authorization": f"Bearer {token}"}
        httpx.get(hub.url + API + "/search", headers=auth, timeout=30)
        httpx.get(hub.url + "/", headers=auth, timeout=30)
        httpx.put(hub.url + API + "/adapters/team/x/tags/t", headers=auth, content=b'{"version": "1.0.0"}', timeout=30)
        httpx.get(hub.url + API + "/adapters/team/bug/versions", headers=auth, timeout=30)
    with httpx.Client(base_url=hub.url, timeout=30) as browser:  # the cookie flow
        login = browser.post("/login", content=f"token={token_for('admin')}", headers={"content-type": "application/x-www-form-urlencoded"})
        assert login.status_code == 303
        assert browser.get("/").status_code == 200 and browser.get(API + "/search").status_code == 200
        browser.post("/logout", headers={"origin": hub.url, "x-request-id": "last"})
    _settle(logs, "last")
    assert any(f["token"] == "admin" for f in _access(logs))  # names are logged, so the check below means something
    for record in logs.records:
        dump = f"{record.getMessage()} {getattr(record, 'fields', '')} {record.args} {record.exc_text or ''}"
        for secret in secrets:
            assert secret not in dump, record.name
    for secret in secrets:
        assert secret not in logs.text
