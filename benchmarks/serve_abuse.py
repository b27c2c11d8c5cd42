"""Abuse cases against a real ``adapterhub serve`` process: what it answers, how late its
event loop ran, what happened to well-behaved streams beside them, RSS before and after.

    .venv/bin/python benchmarks/serve_abuse.py --model tiny --json
    .venv/bin/python benchmarks/serve_abuse.py --model smollm2 --json

Writes ``benchmarks/results/serve_abuse_<model>.json`` and prints the table rows that
RELIABILITY.md ("Serving under abuse") shows; the last line of ``--json`` is one JSON
object. The server runs in its own process (``--threads 1``) on 127.0.0.1; the clients
(``adapterhub.testing.abuse``, the same ones the tests use) run here. The loop's lag is
read from the server's ``adapterhub_event_loop_lag_seconds`` histogram: the figure is the
upper bound of the highest bucket any probe landed in during the abuse.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from adapterhub.testing import abuse
from adapterhub.testing.procs import ServerDied, wait_healthy

RESULTS = Path(__file__).with_name("results")
BASES = {"tiny": "tiny-random-llama", "smollm2": "smollm2-135m-instruct"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _lag_buckets(url: str) -> dict[float, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    out = {}
    for m in re.finditer(r'adapterhub_event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text):
        out[float("inf") if m.group(1) == "+Inf" else float(m.group(1))] = float(m.group(2))
    return out


def _worst_bucket(before: dict[float, float], after: dict[float, float]) -> float:
    """Upper bound of the highest bucket that gained probes (cumulative histogram)."""
    gained = {le: after[le] - before.get(le, 0.0) for le in after}
    total = gained.get(float("inf"), 0.0)
    for le in sorted(gained):
        if gained[le] >= total:
            return le
    return float("inf")


def run(model: str, body_timeout: float) -> dict[str, Any]:
    base = BASES[model]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapterhub", "serve", "--base", base, "--port", str(port), "--threads", "1",
         "--body-timeout", str(body_timeout), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        try:
            wait_healthy(url, proc, timeout=600, interval=0.5)
        except (ServerDied, TimeoutError) as exc:
            raise SystemExit(f"{exc}: {proc.communicate()[1][-2000:] if proc.poll() is not None else ''}") from None
        # Warm up (first forwards, thread pools) so the figures are the abuse's own.
        abuse.run_abuse(url, base, cases=[], warmup_s=2.0, stream_tokens=32)
        rss_before = _rss(proc.pid)
        lag_before = _lag_buckets(url)
        big = 4 * 1024 * 1024 + 1
        cases = [
            *[(lambda: abuse.huge_prompt(url, 1_000_000, base)) for _ in range(4)],
            *[(lambda: abuse.oversize(url, 2 * big, chunked=False)) for _ in range(4)],
            *[(lambda: abuse.oversize(url, 2 * big, chunked=True)) for _ in range(4)],
            *[(lambda: abuse.trickle(url, announced=10_000, every_s=0.05, give_up_s=body_timeout + 30)) for _ in range(8)],
        ]
        t0 = time.perf_counter()
        report = abuse.run_abuse(url, base, cases=cases, warmup_s=2.0, stream_tokens=32)
        took = time.perf_counter() - t0
        lag_after = _lag_buckets(url)
        rss_after = _rss(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    by_case: dict[str, dict[str, Any]] = {}
    for o in report.outcomes:
        row = by_case.setdefault(o.case, {"clients": 0, "bytes_each": o.bytes_sent, "statuses": {}, "max_s": 0.0})
        row["clients"] += 1
        key = str(o.statuses[0])
        row["statuses"][key] = row["statuses"].get(key, 0) + 1
        row["max_s"] = round(max(row["max_s"], o.seconds), 2)
    return {
        "model": base, "body_timeout_s": body_timeout, "duration_s": round(took, 1), "cases": by_case,
        "loop_lag_max_bucket_s": _worst_bucket(lag_before, lag_after),
        "stream_gaps_before": report.gap_stats(report.gaps_before_s),
        "stream_gaps_during": report.gap_stats(report.gaps_during_s),
        "streams_ok": report.streams_ok, "streams_failed": report.streams_failed,
        "rss_before_mb": round(rss_before / 2**20, 1), "rss_after_mb": round(rss_after / 2**20, 1),
        "exit_code_on_sigterm": code, "host": os.uname().nodename, "cpus": os.cpu_count(),
    }


def table(r: dict[str, Any]) -> str:
    lines = []
    for case, row in r["cases"].items():
        statuses = ", ".join(f"{n}× {s}" for s, n in row["statuses"].items())
        lines.append(f"| {r['model']} | {case} | {row['clients']} | {row['bytes_each']:,} | {statuses} | {row['max_s']} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(BASES), default="tiny")
    ap.add_argument("--body-timeout", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.model, args.body_timeout)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"serve_abuse_{args.model}.json").write_text(json.dumps(r, indent=2) + "\n")
    print(table(r))
    print(f"loop lag during abuse: <= {r['loop_lag_max_bucket_s'] * 1000:.0f} ms; stream gaps during: "
          f"{r['stream_gaps_during']} (before: {r['stream_gaps_before']}); RSS {r['rss_before_mb']} -> "
          f"{r['rss_after_mb']} MB; SIGTERM exit {r['exit_code_on_sigterm']}")
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
