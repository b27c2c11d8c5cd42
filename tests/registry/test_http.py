"""The http(s):// store against a live hub: conformance, the CLI round trip, failures."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from adapterhub.registry import remotes
from adapterhub.registry.client import Registry
from adapterhub.registry.http import HttpStore
from adapterhub.registry.hub.app import build_app
from adapterhub.registry.hub.state import HubState
from adapterhub.registry.local import LocalStore

from adapterhub.cli.main import main
from adapterhub.errors import (
    AccessDeniedError,
    AdapterNotFoundError,
    AuthenticationError,
    ConfigError,
    IntegrityError,
    RemoteUnavailableError,
    VersionExistsError,
)
from adapterhub.serving.http.inprocess import serve_in_process
from adapterhub.testing.hubserver import running_hub, token_for, write_tokens
from adapterhub.testing.stores import StoreConformance

MakeAdapter = Callable[..., Path]
TOKENS = {"ci": ("write", ["*"]), "team": ("write", ["team/*"]), "reader": ("read", ["*"])}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    return write_tokens(tmp_path / "tokens.yaml", TOKENS)


class TestHttpStoreConformance(StoreConformance):
    """Over a hub with validation off: the suite stores raw bytes, not manifests."""

    @pytest.fixture
    def store(self, tmp_path: Path, tokens_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpStore]:
        monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("ci"))  # the way users give it
        with running_hub(tmp_path / "hubstore", tokens=tokens_file, validate=False) as hub:
            with HttpStore(hub.url) as store:
                yield store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_push_pull_ls_show_and_a_named_remote_through_the_cli(
    home: Path, make_adapter: MakeAdapter, tmp_path: Path, tokens_file: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = make_adapter(seed=3), make_adapter(seed=4)
    with running_hub(tmp_path / "hubstore", tokens=tokens_file) as hub:
        monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("team"))
        code, out, err = run(capsys, "push", str(a), "team/x@1.0.0", "--to", hub.url, "--tag", "prod")
        assert (code, out.strip()) == (0, f"pushed team/x@1.0.0 to {hub.url} (tag prod)"), err
        code, out, _ = run(capsys, "push", str(a), "team/x@1.0.0", "--to", hub.url)
        assert (code, out.strip()) == (0, f"team/x@1.0.0 already up to date in {hub.url}")
        code, out, err = run(capsys, "push", str(b), "team/x@1.0.0", "--to", hub.url)
        assert code == 1 and "different contents" in err and err.count("\n") == 1

        # What the hub stored is what was pushed, byte for byte.
        stored = LocalStore(tmp_path / "hubstore")
        manifest = json.loads(stored.get_version("team/x", "1.0.0"))
        assert stored.list_tags("team/x") == {"latest": "1.0.0", "prod": "1.0.0"}

        monkeypatch.delenv("ADAPTERHUB_TOKEN")
        code, _, err = run(capsys, "pull", "team/x:prod", "--from", hub.url)
        assert code == 1 and "ADAPTERHUB_TOKEN" in err  # this hub does not read to anonymous
        monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("reader"))
        code, out, _ = run(capsys, "pull", "team/x:prod", "--from", hub.url, "--json")
        pulled = json.loads(out)
        assert code == 0 and pulled["ref"] == "team/x@1.0.0"
        for f in manifest["files"]:
            assert hashlib.sha256(Path(pulled["path"], f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert (Path(pulled["path"]) / "adapter.safetensors").read_bytes() == (a / "adapter.safetensors").read_bytes()

        code, out, _ = run(capsys, "ls", "--from", hub.url, "--json")
        assert json.loads(out) == [{"name": "team/x", "versions": ["1.0.0"], "tags": {"latest": "1.0.0", "prod": "1.0.0"}, "latest": "1.0.0"}]
        code, out, _ = run(capsys, "show", "team/x", "--from", hub.url, "--json")
        assert json.loads(out)["manifest"]["files"] == manifest["files"]
        code, _, err = run(capsys, "push", str(b), "team/y@1.0.0", "--to", hub.url)
        assert code == 1 and "read scope" in err

        code, _, _ = run(capsys, "remote", "add", "hub", hub.url)
        assert code == 0
        monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("team"))
        code, out, _ = run(capsys, "push", str(b), "team/x", "--to", "hub")  # the next patch version
        assert (code, out.strip()) == (0, f"pushed team/x@1.0.1 to {hub.url}")
        code, _, err = run(capsys, "push", str(b), "other/x@1.0.0", "--to", "hub")
        assert code == 1 and "may not write other/x" in err and token_for("team") not in err
        code, out, _ = run(capsys, "pull", "team/x", "--from", "hub", "--json")
        assert json.loads(out)["ref"] == "team/x@1.0.1"
        code, out, _ = run(capsys, "rm", "team/x@1.0.1", "--from", "hub")
        assert code == 0 and stored.list_versions("team/x") == ["1.0.0"]


def test_token_flag_overrides_the_environment_and_is_never_echoed(
    home: Path, make_adapter: MakeAdapter, tmp_path: Path, tokens_file: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    a = make_adapter(seed=5)
    monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("reader"))  # --token wins over it
    with running_hub(tmp_path / "hubstore", tokens=tokens_file) as hub:
        code, out, err = run(capsys, "push", str(a), "team/t@1.0.0", "--to", hub.url, "--token", token_for("team"))
        assert (code, out.strip()) == (0, f"pushed team/t@1.0.0 to {hub.url}"), err
        code, _, err = run(capsys, "push", str(a), "team/t@1.0.1", "--to", hub.url)  # the reader from the env
        assert code == 1 and "read scope" in err
        code, _, _ = run(capsys, "remote", "add", "hub", hub.url)
        code, out, _ = run(capsys, "tag", "team/t@1.0.0", "prod", "--to", "hub", "--token", token_for("team"))
        assert (code, out.strip()) == (0, "team/t:prod -> team/t@1.0.0")
        code, out, _ = run(capsys, "ls", "--from", "hub", "--token", token_for("reader"), "--json")
        assert json.loads(out)[0]["tags"] == {"latest": "1.0.0", "prod": "1.0.0"}
        wrong = "wrong-token-0123456789"
        code, _, err = run(capsys, "pull", "team/t", "--from", hub.url, "--token", wrong)
        assert code == 1 and "refused" in err and wrong not in err and err.count("\n") == 1
    for argv, message in (
        (("ls", "--token", "x-0123456789"), "--token applies to an http(s):// hub"),
        (("ls", "--from", str(tmp_path / "dir"), "--token", "x-0123456789"), "--token applies to http(s):// hubs, not file://"),
        (("ls", "--from", "http://127.0.0.1:9", "--token", "has space"), "--token: the token must be"),
        (("ls", "--from", "http://127.0.0.1:9", "--token", ""), "--token: the token must be"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 1 and message in err and err.count("\n") == 1, (argv, err)
        assert "has space" not in err


def test_a_token_over_plain_http_to_another_host_is_warned_once(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from adapterhub.registry import http

    monkeypatch.setattr(http, "_WARNED", set())
    monkeypatch.delenv("ADAPTERHUB_TOKEN", raising=False)
    monkeypatch.delenv("ADAPTERHUB_TOKEN_FILE", raising=False)
    token = "secret-token-0123456789"
    for url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "https://hub.example"):
        HttpStore(url, token=token).close()
    HttpStore("http://hub.example").close()  # no token: nothing to protect
    assert capsys.readouterr().err == ""
    HttpStore("http://hub.example", token=token).close()
    HttpStore("http://hub.example/sub", token=token).close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hub.example unencrypted" in err and "https://" in err and token not in err


def test_evaluation_records_and_tags_through_the_registry(home: Path, make_adapter: MakeAdapter, tmp_path: Path, tokens_file: Path) -> None:
    with running_hub(tmp_path / "hubstore", tokens=tokens_file) as hub:
        reg = Registry(progress=False)
        reg.use_store(hub.url, HttpStore(hub.url, token=token_for("ci")))  # the token without the environment
        reg.push(make_adapter(seed=1), "solo", version="0.1.0", to=hub.url)  # a name without a namespace
        reg.tag("solo@0.1.0", "stable", to=hub.url)
        reg.attach_evaluation("solo:stable", {"kind": "forgetting", "rows": [1, 2]}, to=hub.url)
        info = reg.show("solo:stable", from_=hub.url)
        assert info["tags"] == ["latest", "stable"] and info["evaluations"] == [{"kind": "forgetting", "rows": [1, 2]}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_hub_that_is_down_is_one_clear_error() -> None:
    store = HttpStore(f"http://127.0.0.1:{_free_port()}?max_attempts=2&connect_timeout=2")
    with pytest.raises(RemoteUnavailableError, match="after 2 attempt"):
        store.list_versions("team/x")


def test_urls_never_carry_credentials_and_options_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for bad, why in [
        ("https://hub.example?token=abc", "never go in URLs"),
        ("https://user:secret@hub.example", "do not go in the URL"),
        ("https://hub.example?colour=red", "unknown http store option"),
        ("https://hub.example?max_attempts=many", "invalid numeric option"),
        ("https://hub.example#frag", "fragment"),
        ("https://", "no host"),
    ]:
        with pytest.raises(ConfigError, match=why) as info:
            HttpStore(bad)
        assert "secret" not in str(info.value) and "abc" not in str(info.value)
    store = remotes.open_store("https://hub.example/registry/")  # through the catalog, like --to
    assert isinstance(store, HttpStore) and str(store._client.base_url) == "https://hub.example/registry/api/v1/"
    assert store.url == "https://hub.example/registry"

    monkeypatch.delenv("ADAPTERHUB_TOKEN", raising=False)
    secret = tmp_path / "token"
    secret.write_text("from-a-file-0123456789\n")
    monkeypatch.setenv("ADAPTERHUB_TOKEN_FILE", str(secret))
    assert HttpStore("http://hub.example")._client.headers["authorization"] == "Bearer from-a-file-0123456789"
    monkeypatch.setenv("ADAPTERHUB_TOKEN", "has a space")
    with pytest.raises(ConfigError, match="printable ASCII") as info:
        HttpStore("http://hub.example")
    assert "has a space" not in str(info.value)


def test_401_and_403_are_one_line_errors_naming_what_is_missing(tmp_path: Path, tokens_file: Path) -> None:
    with running_hub(tmp_path / "hubstore", tokens=tokens_file) as hub:
        with pytest.raises(AuthenticationError, match="set ADAPTERHUB_TOKEN") as info:
            HttpStore(hub.url, token="").list_versions("team/x")
        assert "\n" not in str(info.value)
        with pytest.raises(AuthenticationError, match="was refused"):
            HttpStore(hub.url, token="not-a-token-of-this-hub").list_versions("team/x")
        with pytest.raises(AccessDeniedError, match="'reader' has read scope"):
            HttpStore(hub.url, token=token_for("reader")).set_tag("team/x", "prod", "1.0.0")
        with pytest.raises(AdapterNotFoundError):
            HttpStore(hub.url, token=token_for("reader")).get_version("team/x", "1.0.0")


class _Faults:
    """ASGI middleware in front of a real hub: cut the first blob download mid-body,
    answer 503 a few times, or flip a byte of manifests."""

    def __init__(self, app: Any, cut_at: int | None = None, unavailable: int = 0, flip_manifest: bool = False) -> None:
        self.app, self.cut_at, self.unavailable, self.flip = app, cut_at, unavailable, flip_manifest
        self.ranges: list[str | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.unavailable > 0 and path.startswith("/api/"):
            self.unavailable -= 1
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return None
        if path.startswith("/api/v1/blobs/") and scope["method"] == "GET":
            self.ranges.append(dict(scope["headers"]).get(b"range", b"").decode() or None)
            if self.cut_at is not None:
                limit, self.cut_at, sent = self.cut_at, None, 0

                async def cutting(msg: Any) -> None:
                    nonlocal sent
                    if msg["type"] == "http.response.body" and sent + len(msg.get("body", b"")) > limit:
                        await send({**msg, "body": msg["body"][: limit - sent], "more_body": True})
                        raise ConnectionAbortedError("the test cuts this download")
                    sent += len(msg.get("body", b""))
                    await send(msg)
                return await self.app(scope, receive, cutting)
        if self.flip and path.endswith("/manifest") and scope["method"] == "GET":
            async def flipping(msg: Any) -> None:
                if msg["type"] == "http.response.body" and msg.get("body"):
                    body = bytearray(msg["body"])
                    body[len(body) // 2] ^= 0x01
                    msg = {**msg, "body": bytes(body)}
                await send(msg)
            return await self.app(scope, receive, flipping)
        return await self.app(scope, receive, send)


def _local_with_blob(root: Path, data: bytes) -> tuple[LocalStore, str]:
    store = LocalStore(root)
    src = root.parent / "src.bin"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    store.put_blob(digest, src)
    return store, digest


def test_a_broken_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    store, digest = _local_with_blob(tmp_path / "hubstore", data)
    faults = _Faults(build_app(HubState.open(store)), cut_at=1024 * 1024)
    with serve_in_process(faults) as url:
        seen: list[int] = []
        HttpStore(url).get_blob(digest, tmp_path / "out.bin", len(data), seen.append)
    assert (tmp_path / "out.bin").read_bytes() == data and sum(seen) == len(data)
    assert faults.ranges[0] is None and len(faults.ranges) == 2
    resumed_at = int(str(faults.ranges[1]).removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 1024 * 1024


def test_corrupt_bytes_never_land_and_5xx_is_retried_only_when_safe(tmp_path: Path, tokens_file: Path) -> None:
    data = os.urandom(200_000)
    store, digest = _local_with_blob(tmp_path / "hubstore", data)
    store.put_version("team/x", "1.0.0", b'{"any": "bytes"}')
    # A blob damaged on the hub's disk: the download is refused and leaves nothing.
    blob = store.blob_path(digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with running_hub(store, tokens=tokens_file, validate=False) as hub:
        with pytest.raises(IntegrityError, match="sha256"):
            HttpStore(hub.url, token=token_for("ci")).get_blob(digest, tmp_path / "out.bin", len(data))
        assert not (tmp_path / "out.bin").exists() and not list(tmp_path.glob(".out.bin*"))

    faults = _Faults(build_app(HubState.open(store)), unavailable=2, flip_manifest=True)
    with serve_in_process(faults) as url:
        http = HttpStore(url)
        assert http.list_versions("team/x") == ["1.0.0"]  # two 503s, then an answer
        with pytest.raises(IntegrityError, match="ETag"):
            http.get_version("team/x", "1.0.0")  # damaged in transit
        faults.unavailable = 1
        with pytest.raises(RemoteUnavailableError):  # a create is not repeated blindly
            HttpStore(url, token=token_for("ci")).put_version("team/x", "2.0.0", b"{}")


def test_versions_stay_immutable_across_hub_clients(tmp_path: Path, tokens_file: Path) -> None:
    with running_hub(tmp_path / "hubstore", tokens=tokens_file, validate=False) as hub:
        a, b = HttpStore(hub.url, token=token_for("ci")), HttpStore(hub.url, token=token_for("team"))
        a.put_version("team/x", "1.0.0", b'{"a": 1}')
        with pytest.raises(VersionExistsError):
            b.put_version("team/x", "1.0.0", b'{"b": 2}')
        assert b.get_version("team/x", "1.0.0") == b'{"a": 1}'


@pytest.mark.s3
def test_two_hubs_serve_one_bucket(seaweed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   tokens_file: Path, make_adapter: MakeAdapter) -> None:
    """No state in the hub: push through one, pull through the other; one version, one winner."""
    import uuid

    from adapterhub.registry.s3 import S3Store

    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    url = f"s3://{seaweed.bucket}/{uuid.uuid4().hex[:10]}"
    with running_hub(S3Store(url), tokens=tokens_file) as one, running_hub(S3Store(url), tokens=tokens_file) as two:
        reg = Registry(root=tmp_path / "home", progress=False)
        reg.use_store(one.url, HttpStore(one.url, token=token_for("team")))
        reg.use_store(two.url, HttpStore(two.url, token=token_for("team")))
        a = make_adapter(seed=11)
        assert reg.push(a, "team/s3hub", version="1.0.0", tag="prod", to=one.url) == "team/s3hub@1.0.0"
        pulled = reg.pull("team/s3hub:prod", from_=two.url)
        assert (pulled / "adapter.safetensors").read_bytes() == (a / "adapter.safetensors").read_bytes()
        assert HttpStore(two.url, token=token_for("reader")).has_blob(json.loads((a / "manifest.json").read_text())["files"][0]["sha256"])
        with pytest.raises(VersionExistsError, match="different contents"):
            reg.push(make_adapter(seed=12), "team/s3hub", version="1.0.0", to=two.url)
        found = httpx_get(two.url + "/api/v1/search?q=s3hub", token_for("reader"))
        assert [r["ref"] for r in found["results"]] == ["team/s3hub@1.0.0"]


def httpx_get(url: str, token: str) -> Any:
    import httpx

    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
