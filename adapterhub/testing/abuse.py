"""Abusive HTTP clients against a live ``adapterhub serve`` app, with streams measured beside them.

Used by ``tests/adapterhub/serving/http/test_abuse.py`` (small sizes) and
``benchmarks/serve_abuse.py`` (the RELIABILITY.md table). Every client talks only to the
loopback URL it is given, sends a bounded number of bytes, and stops by itself.

:func:`run_abuse` keeps well-behaved streams running the whole time (each one a real SSE
completion), records when each of their chunks arrived, and sends the abuse while they run:

* ``huge_prompt``: a prompt of N characters (the tiny model's byte tokenizer makes N tokens)
  that the server must refuse (400: over the context window) after tokenizing it;
* ``oversize``: a body over ``--max-body-bytes`` with a ``Content-Length`` (413 before reading);
* ``oversize_chunked``: the same size streamed chunked, with no length (413 at the cap);
* ``trickle``: a body announced and then sent a few bytes at a time (408 at ``--body-timeout``).
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse


@dataclass
class Outcome:
    """What one abusive client sent and what it got back."""

    case: str
    bytes_sent: int
    statuses: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class AbuseReport:
    outcomes: list[Outcome]
    gaps_during_s: list[float]
    """Gaps between consecutive chunks of the well-behaved streams while abuse ran."""
    gaps_before_s: list[float]
    streams_ok: int
    streams_failed: int
    window_s: float
    lag_before_s: float | None = None
    """The server's worst event-loop lag while only the streams ran (None: not measured)."""
    lag_during_s: float | None = None
    """... and while the abuse ran beside them."""

    def gap_stats(self, gaps: list[float]) -> dict[str, float]:
        if not gaps:
            return {"n": 0, "median_ms": 0.0, "max_ms": 0.0}
        return {"n": len(gaps), "median_ms": round(statistics.median(gaps) * 1000, 1), "max_ms": round(max(gaps) * 1000, 1)}


def _client(timeout: float) -> Any:
    """An httpx client for plain-http loopback URLs. ``verify=False`` skips loading the CA
    bundle, a C call that holds the GIL for ~0.1-0.2 s per client: these clients share the
    server's process in tests, and that pause would be measured as the server's own lag."""
    import httpx

    return httpx.Client(verify=False, timeout=timeout)


def _host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    assert u.hostname in ("127.0.0.1", "localhost", "::1"), "abuse clients only talk to loopback"
    return u.hostname, int(u.port or 80)


def _status_of(sock: socket.socket, timeout: float) -> int:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0  # closed without an answer
        data += chunk
    return int(data.split(b" ", 2)[1])


def huge_prompt(url: str, chars: int, model: str, headers: dict[str, str] | None = None) -> Outcome:
    body = json.dumps({"model": model, "prompt": "a" * chars, "max_tokens": 1}).encode()
    t0 = time.perf_counter()
    with _client(120) as client:
        r = client.post(url + "/v1/completions", content=body,
                        headers={"content-type": "application/json", **(headers or {})})
    return Outcome("huge_prompt", len(body), [r.status_code], time.perf_counter() - t0)


def oversize(url: str, size: int, chunked: bool, headers: dict[str, str] | None = None) -> Outcome:
    import httpx

    piece = b"x" * 65536

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < size:
            yield piece
            sent += len(piece)

    t0 = time.perf_counter()
    try:
        with _client(60) as client:
            content = chunks() if chunked else b"x" * size
            status = client.post(url + "/v1/completions", content=content, headers=headers).status_code
    except httpx.HTTPError:
        status = 0  # the server answered 413 and closed while we were still sending
    return Outcome("oversize_chunked" if chunked else "oversize", size, [status], time.perf_counter() - t0)


def trickle(url: str, announced: int, every_s: float, give_up_s: float, headers: dict[str, str] | None = None) -> Outcome:
    """Announce ``announced`` bytes, send one every ``every_s`` until the server answers."""
    host, port = _host_port(url)
    t0 = time.perf_counter()
    sent = 0
    status = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"{extra}Content-Length: {announced}\r\n\r\n".encode())
        sock.setblocking(False)
        while time.perf_counter() - t0 < give_up_s and sent < announced:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                data = None
            if data is not None:
                status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
                break
            try:
                sock.send(b" ")
                sent += 1
            except OSError:
                break
            time.sleep(every_s)
        if not status:
            sock.setblocking(True)
            try:
                status = _status_of(sock, 5)
            except OSError:
                status = 0
    return Outcome("trickle", sent, [status], time.perf_counter() - t0)


class _Streams:
    """Well-behaved streaming clients, one after another, recording chunk arrival times."""

    def __init__(self, url: str, model: str, max_tokens: int) -> None:
        self.url, self.model, self.max_tokens = url, model, max_tokens
        self.arrivals: list[list[float]] = []
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="abuse-streams", daemon=True)

    def __enter__(self) -> _Streams:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        import httpx

        body = {"model": self.model, "prompt": "Tell me a story.", "max_tokens": self.max_tokens, "stream": True,
                "temperature": 1.0, "seed": 7, "stop": []}
        with _client(60) as client:
            while not self._stop.is_set():
                times: list[float] = []
                try:
                    with client.stream("POST", self.url + "/v1/completions", json=body) as r:
                        for line in r.iter_lines():
                            if line.startswith("data: ") and line != "data: [DONE]":
                                times.append(time.perf_counter())
                    self.ok += 1 if r.status_code == 200 else 0
                    self.failed += 0 if r.status_code == 200 else 1
                except httpx.HTTPError:
                    self.failed += 1
                self.arrivals.append(times)

    def gaps(self, lo: float, hi: float) -> list[float]:
        out = []
        for times in self.arrivals:
            out += [b - a for a, b in zip(times, times[1:], strict=False) if lo <= a and b <= hi]
        return out


def run_abuse(url: str, model: str, *, cases: list[Callable[[], Outcome]], warmup_s: float = 1.0,
              stream_tokens: int = 64, lag: Any = None) -> AbuseReport:
    """Streams alone for ``warmup_s``, then every case at once beside them (see module docs).

    ``lag``: the server's :class:`~adapterhub.access.LoopLag` when it runs in
    this process; its worst value is read for each of the two phases."""
    lag_before = None
    with _Streams(url, model, stream_tokens) as streams:
        t_warm = time.perf_counter()
        time.sleep(warmup_s)
        if lag is not None:
            lag_before = lag.reset()
        t0 = time.perf_counter()
        outcomes: list[Outcome] = []
        threads = [threading.Thread(target=lambda c=c: outcomes.append(c()), daemon=True) for c in cases]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        t1 = time.perf_counter()
        lag_during = None if lag is None else lag.reset()
        time.sleep(0.2)
    return AbuseReport(outcomes, streams.gaps(t0, t1), streams.gaps(t_warm, t0), streams.ok, streams.failed, t1 - t0,
                       lag_before, lag_during)
