"""The pages' login: a session id in the cookie (never the token), POST-only same-origin
logout that ends the session, Secure behind a trusted https proxy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from adapterhub.registry.hub.sessions import Sessions
from adapterhub.registry.hub.tokens import COOKIE, HubPrincipal

from adapterhub.testing.hubserver import RunningHub, running_hub, token_for, write_tokens

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    tokens = write_tokens(tmp_path / "tokens.yaml", {"admin": ("write", ["*"])})
    with running_hub(tmp_path / "store", tokens=tokens) as h:
        yield h


def _login(client: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
    r = client.post("/login", content=f"token={token_for('admin')}", headers={**FORM, **(headers or {})})
    assert r.status_code == 303, r.text
    return r


def test_the_cookie_is_a_session_id_not_the_token(hub: RunningHub) -> None:
    with httpx.Client(base_url=hub.url, timeout=30) as browser:
        r = _login(browser)
        sid = browser.cookies[COOKIE]
        token = token_for("admin")
        assert token not in r.headers["set-cookie"] and token not in sid and sid != token
        attributes = r.headers["set-cookie"].lower()
        assert "httponly" in attributes and "samesite=strict" in attributes and "max-age=604800" in attributes
        assert "secure" not in attributes  # plain http, no proxy
        assert browser.get("/").status_code == 200 and browser.get("/api/v1/search").status_code == 200
        me = browser.get("/api/v1/").json()["you"]
        assert me == {"name": "admin", "scope": "read", "adapters": ["*"]}  # a session only ever reads


@pytest.mark.parametrize("forged", ["forged-session-id", token_for("admin"), "x" * 5000, ""])
def test_a_forged_or_unknown_session_reads_as_anonymous(hub: RunningHub, forged: str) -> None:
    with httpx.Client(base_url=hub.url, timeout=30, cookies={COOKIE: forged}) as browser:
        page = browser.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")  # as if no cookie
        assert browser.get("/api/v1/search").status_code == 401


def test_logout_is_post_only_same_origin_and_ends_the_session(hub: RunningHub) -> None:
    with httpx.Client(base_url=hub.url, timeout=30) as browser:
        _login(browser)
        sid = browser.cookies[COOKIE]
        assert browser.get("/logout").status_code == 405
        for header in ({"origin": "http://evil.example"}, {"referer": "http://evil.example/page"},
                       {"origin": hub.url.replace("127.0.0.1", "localhost")}):
            r = browser.post("/logout", headers=header)
            assert r.status_code == 403, header
        assert browser.get("/").status_code == 200  # still signed in: nothing was refused silently
        r = browser.post("/logout", headers={"origin": hub.url, "referer": hub.url + "/login"})
        assert r.status_code == 303
    with httpx.Client(base_url=hub.url, timeout=30, cookies={COOKIE: sid}) as replay:
        assert replay.get("/").status_code == 303  # the old cookie no longer works
        assert replay.get("/api/v1/search").status_code == 401


@pytest.mark.parametrize(("allow", "secure"), [("127.0.0.1", True), ("10.9.9.9", False)])
def test_secure_behind_a_trusted_https_proxy_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allow: str, secure: bool) -> None:
    # uvicorn's trusted proxies: what `adapterhub hub --forwarded-allow-ips` passes it, here
    # through its environment default (the in-process server takes no options).
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", allow)
    tokens = write_tokens(tmp_path / "tokens.yaml", {"admin": ("write", ["*"])})
    with running_hub(tmp_path / "store", tokens=tokens) as hub, httpx.Client(base_url=hub.url, timeout=30) as browser:
        r = _login(browser, {"x-forwarded-proto": "https"})
        assert ("secure" in r.headers["set-cookie"].lower().split("; ")) is secure


def test_sessions_are_bounded_and_expire() -> None:
    who = HubPrincipal("ci", "write", ("team/*",))
    table = Sessions(ttl_s=60, max_sessions=3)
    ids = [table.create(who) for _ in range(5)]
    assert len(table) == 3 and table.lookup(ids[0]) is None and table.lookup(ids[-1]) == HubPrincipal("ci", "read", ("team/*",))
    short = Sessions(ttl_s=0.01)
    sid = short.create(who)
    time.sleep(0.05)
    assert short.lookup(sid) is None and len(short) == 0
