"""The s3:// store against a real SeaweedFS server, and against failing endpoints."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.s3 import S3Store

from adapterhub.errors import (
    ConfigError,
    IntegrityError,
    RemoteUnavailableError,
    StoreError,
    VersionExistsError,
)
from adapterhub.manifest import MANIFEST_NAME, WEIGHTS_NAME
from adapterhub.testing.seaweed import Seaweed
from adapterhub.testing.stores import StoreConformance

MakeAdapter = Callable[..., Path]


@pytest.fixture(scope="module")
def bucket(seaweed: Seaweed) -> str:
    return seaweed.bucket


@pytest.fixture
def s3_env(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Seaweed:
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    return seaweed


@pytest.fixture
def s3_url(s3_env: Seaweed, bucket: str) -> str:
    return f"s3://{bucket}/{uuid.uuid4().hex[:10]}"


@pytest.mark.s3
class TestS3StoreConformance(StoreConformance):
    @pytest.fixture
    def store(self, s3_url: str) -> S3Store:
        return S3Store(s3_url)


@pytest.mark.s3
def test_seaweedfs_honours_if_none_match(s3_env: Seaweed, bucket: str) -> None:
    """The property versions rely on, checked directly with boto3."""
    from botocore.exceptions import ClientError

    c = s3_env.client()
    key = f"probe/{uuid.uuid4().hex}"
    c.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        c.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"


@pytest.mark.s3
def test_push_pull_through_registry(home: Path, s3_url: str, make_adapter: MakeAdapter) -> None:
    reg = Registry(progress=False)
    a = make_adapter(seed=7)
    assert reg.push(a, "team/s3", version="1.0.0", tag="prod", to=s3_url) == "team/s3@1.0.0"
    assert reg.publish(a, "team/s3", version="1.0.0", to=s3_url).created is False  # same bytes: no-op
    with pytest.raises(VersionExistsError, match="different contents"):
        reg.push(make_adapter(seed=8), "team/s3", version="1.0.0", to=s3_url)
    path = reg.pull("team/s3:prod", from_=s3_url)
    assert (path / WEIGHTS_NAME).read_bytes() == (a / WEIGHTS_NAME).read_bytes()
    assert json.loads((path / MANIFEST_NAME).read_text())["version"] == "1.0.0"
    assert reg.ls(from_=s3_url)[0]["tags"] == {"latest": "1.0.0", "prod": "1.0.0"}
    reg.attach_evaluation("team/s3@1.0.0", {"kind": "forgetting", "ok": True}, to=s3_url)
    assert reg.show("team/s3", from_=s3_url)["evaluations"] == [{"kind": "forgetting", "ok": True}]
    assert reg.push(a, "team/s3", to=s3_url) == "team/s3@1.0.1"  # automatic next version
    assert reg.rm("team/s3@1.0.0", to=s3_url) == ["team/s3@1.0.0"]
    assert S3Store(s3_url).list_versions("team/s3") == ["1.0.1"]


@pytest.mark.s3
def test_endpoint_from_url_option_and_remote(home: Path, seaweed: Seaweed, bucket: str, monkeypatch: pytest.MonkeyPatch, make_adapter: MakeAdapter) -> None:
    from adapterhub.cli.main import main

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    assert main(["remote", "add", "team", f"s3://{bucket}/{prefix}", "--endpoint-url", seaweed.endpoint]) == 0
    assert main(["push", str(make_adapter()), "x@1.0.0", "--to", "team"]) == 0
    assert main(["pull", "x@1.0.0", "--from", f"s3://{bucket}/{prefix}", "--endpoint-url", seaweed.endpoint]) == 0


@pytest.mark.s3
def test_corrupt_remote_blob_is_never_served(home: Path, s3_env: Seaweed, s3_url: str, make_adapter: MakeAdapter) -> None:
    reg = Registry(progress=False)
    a = make_adapter(seed=8)
    reg.push(a, "x", version="1.0.0", to=s3_url)
    store = S3Store(s3_url)
    digest = next(store.iter_blobs())
    data = bytearray((a / WEIGHTS_NAME).read_bytes())
    data[-5] ^= 0x04
    s3_env.client().put_object(Bucket=store.bucket, Key=store._blob_key(digest), Body=bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        reg.pull("x@1.0.0", from_=s3_url)
    cache = reg.cache_for(reg.store(s3_url))
    assert not cache.has_blob(digest) and cache.list_versions("x") == []


@pytest.mark.s3
def test_wrong_credentials(s3_env: Seaweed, s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError, match="access denied") as info:
        S3Store(s3_url).put_version("x", "1.0.0", b"{}")
    assert not isinstance(info.value, RemoteUnavailableError)


def test_bad_urls() -> None:
    for url in ("s3://A_Bad_Bucket/x", "s3://ok-bucket/../x", "s3://ok-bucket/x?bogus=1", "s3://ok-bucket/x?max_attempts=abc"):
        with pytest.raises(ConfigError):
            S3Store(url)


# --- failing endpoints ------------------------------------------------------------------------


class _Fake(http.server.BaseHTTPRequestHandler):
    mode = "500"
    hits = 0
    release = threading.Event()
    last_started: type[_Fake]

    def _any(self) -> None:
        type(self).hits += 1
        if self.mode == "hang":
            self.release.wait(30)
            return
        body = b"<Error><Code>InternalError</Code><Message>boom</Message></Error>"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    servers: list[http.server.ThreadingHTTPServer] = []
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")

    def start(mode: str) -> str:
        handler = type("Handler", (_Fake,), {"mode": mode, "hits": 0, "release": threading.Event()})
        _Fake.last_started = handler
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.RequestHandlerClass.release.set()  # type: ignore[attr-defined]
        srv.shutdown()
        srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(fn: Callable[[], object]) -> tuple[BaseException, float]:
    t0 = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - returned for the asserts
        return exc, time.monotonic() - t0
    raise AssertionError("expected a failure")


def test_endpoint_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = S3Store(f"s3://bucket/p?endpoint_url=http://127.0.0.1:{_closed_port()}&max_attempts=3&connect_timeout=1")
    exc, seconds = _timed(lambda: store.get_version("x", "1.0.0"))
    assert isinstance(exc, RemoteUnavailableError) and "after 3 attempt(s)" in str(exc) and "\n" not in str(exc)
    assert seconds < 10


def test_endpoint_500(fake_endpoint: Callable[[str], str]) -> None:
    url = fake_endpoint("500")
    store = S3Store(f"s3://bucket/p?endpoint_url={url}&max_attempts=3")
    exc, seconds = _timed(lambda: store.put_version("x", "1.0.0", b"{}"))
    assert isinstance(exc, RemoteUnavailableError) and "HTTP 500" in str(exc)
    handler = store._client.meta.endpoint_url  # the store talked to the fake, not AWS
    assert handler == url and seconds < 10


def test_endpoint_500_counts_attempts(fake_endpoint: Callable[[str], str]) -> None:
    url = fake_endpoint("500")
    store = S3Store(f"s3://bucket/p?endpoint_url={url}&max_attempts=4")
    with pytest.raises(RemoteUnavailableError):
        store.has_blob(hashlib.sha256(b"x").hexdigest())
    assert _Fake.last_started.hits == 4  # bounded: exactly max_attempts requests


def test_endpoint_hangs(fake_endpoint: Callable[[str], str]) -> None:
    url = fake_endpoint("hang")
    store = S3Store(f"s3://bucket/p?endpoint_url={url}&max_attempts=2&read_timeout=0.5&connect_timeout=0.5")
    exc, seconds = _timed(lambda: store.get_tag("x", "latest"))
    assert isinstance(exc, RemoteUnavailableError) and "Timeout" in str(exc)
    assert seconds < 6, seconds


def test_registry_push_to_down_endpoint_leaves_local_store_alone(home: Path, make_adapter: MakeAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    reg = Registry(progress=False)
    url = f"s3://bucket/p?endpoint_url=http://127.0.0.1:{_closed_port()}&max_attempts=2&connect_timeout=0.5"
    with pytest.raises(RemoteUnavailableError):
        reg.push(make_adapter(), "x", version="1.0.0", to=url)
    assert list(reg.local.list_names()) == []


def test_missing_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3Store(f"s3://bucket/p?endpoint_url=http://127.0.0.1:{_closed_port()}")
    with pytest.raises(StoreError, match="no AWS credentials"):
        store.get_version("x", "1.0.0")


@pytest.mark.s3
def test_push_uploads_the_validated_bytes_signed_with_their_digest(home: Path, s3_url: str, make_adapter: MakeAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    """No second read or hash of the weights: the digest is the SigV4 payload hash."""
    from adapterhub.registry import s3
    from botocore import auth

    payloads: list[str] = []
    reg = Registry(progress=False)
    store = reg.store(s3_url)
    assert isinstance(store, S3Store) and store._known_payload
    cls = auth.AUTH_TYPE_MAPS[s3._KNOWN_PAYLOAD_SIGNER]
    real = cls.payload
    monkeypatch.setattr(cls, "payload", lambda self, request: payloads.append(real(self, request)) or payloads[-1])
    a = make_adapter(seed=21)
    # The file is not read again after validation: changing it now changes nothing pushed.
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: pytest.fail(f"re-read {p}") if p.name == WEIGHTS_NAME else real_read_bytes(p))
    reg.push(a, "team/signed", version="1.0.0", to=s3_url)
    monkeypatch.undo()
    digest = json.loads((a / MANIFEST_NAME).read_text())["files"][0]["sha256"]
    assert payloads == [digest]  # only the blob PUT uses the known-digest signer
    assert (reg.pull("team/signed@1.0.0", from_=s3_url) / WEIGHTS_NAME).read_bytes() == (a / WEIGHTS_NAME).read_bytes()


@pytest.mark.s3
def test_service_refuses_bytes_that_do_not_match_the_digest(s3_url: str) -> None:
    """The upload carries ChecksumSHA256: the service itself verifies the blob's bytes."""
    store = S3Store(s3_url)
    data = b"the real bytes" * 1000
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityError):
        store.put_blob_verified(wrong, data)
    assert not store.has_blob(wrong)


@pytest.mark.s3
def test_big_blob_with_wrong_size_under_its_key_is_replaced(s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty object left by an interrupted upload does not count as the blob."""
    from adapterhub.registry import s3

    monkeypatch.setattr(s3, "_HEAD_FIRST", 1024)  # take the HEAD-first path with a small blob
    store = S3Store(s3_url)
    data = os.urandom(4096)
    digest = hashlib.sha256(data).hexdigest()
    store._client.put_object(Bucket=store.bucket, Key=store._blob_key(digest), Body=b"")
    src = tmp_path / "blob"
    src.write_bytes(data)
    store.put_blob(digest, src)
    dest = tmp_path / "back"
    store.get_blob(digest, dest, len(data))
    assert dest.read_bytes() == data
    store.put_blob_verified(digest, data)  # right size now: HEAD says stored, nothing sent
