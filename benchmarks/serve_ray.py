"""``adapterhub serve --ray``: adapter-aware routing against round-robin, and the Ray hop's cost.

Setup: ``--adapters`` LoRA adapters pushed to a fresh local registry; requests pick an
adapter with Zipf(1.0) popularity (adapter k with weight 1/k, one seeded sequence for
every phase); each replica may hold ``--resident`` adapters. Three servers, each a real
``adapterhub serve`` subprocess on 127.0.0.1:

1. ``serve`` alone (one process) and ``serve --ray --replicas N`` (multiplexed routing) run
   side by side: ``--low-load`` sequential requests (one client, the bare base, greedy,
   ``--max-tokens``) alternate between them, so both see the same machine noise; the Ray
   hop's overhead is the ratio of their p50 latencies. The single server then idles while
2. the Ray server takes ``--warmup`` + ``--requests`` streamed requests from ``--clients``
   closed-loop clients;
3. ``serve --ray --replicas N --ray-routing round-robin`` (the adapter hidden from Ray, so
   its router balances on queue length alone; each engine's own LRU evicts): the same
   streamed requests.

Adapter loads are counted from ``/metrics`` (``adapterhub_replica_adapter_loads_total``,
summed over replicas) over the measured requests only (after the warm-up), so figures are
for a warm cluster. TTFT is measured by the client: request sent to first text chunk.

    .venv/bin/python benchmarks/serve_ray.py [--model tiny|smollm2] [--replicas 2] [--adapters 64]
        [--resident 16] [--requests 1000] [--clients 4] [--json]

Goals: multiplexed loads ≤ 1/3 of round-robin's; the Ray hop ≤ 1.15× single-process latency.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ALIASES = {"tiny": "tiny-random-llama", "smollm2": "smollm2-135m-instruct"}
ENTRY = "import sys; from adapterhub.cli.main import main; sys.exit(main(sys.argv[1:]))"
PROMPT = "The film was a quiet triumph:"


def zipf_names(n_adapters: int, count: int, seed: int) -> list[str]:
    weights = [1.0 / k for k in range(1, n_adapters + 1)]
    rng = random.Random(seed)
    return [f"bench/a{i}" for i in rng.choices(range(n_adapters), weights=weights, k=count)]


def push_adapters(alias: str, n: int, root: Path, scale: float) -> None:
    from adapterhub.registry.client import Registry

    from adapterhub.basemodels import load_base
    from adapterhub.testing.adapters import make_adapter

    base = load_base(alias)
    reg = Registry(progress=False)
    for i in range(n):
        d = root / f"a{i}"
        make_adapter("lora", base.model, d, config={"r": 4, "alpha": 8}, name=f"bench/a{i}", version="1.0.0",
                     seed=100 + i, scale=scale)
        reg.push(d, f"bench/a{i}", version="1.0.0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(alias: str, extra: list[str], log: Path, threads: int) -> Iterator[str]:
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ahbench", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", ENTRY, "serve", "--base", alias, "--port", str(port),
                                 "--threads", str(threads), "--grace", "5", *extra],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def low_load_latency(urls: list[str], alias: str, n: int, max_tokens: int) -> list[list[float]]:
    """Sequential requests (one client, the bare base) alternating between the servers of
    ``urls``: each server's latencies, both taken under the same machine noise."""
    out: list[list[float]] = [[] for _ in urls]
    with httpx.Client(timeout=120) as c:
        for i in range(n + 3):  # 3 warm-up rounds
            for j, url in enumerate(urls):
                t0 = time.perf_counter()
                r = c.post(url + "/v1/completions", json={"model": alias, "prompt": PROMPT, "max_tokens": max_tokens,
                                                          "temperature": 0})
                r.raise_for_status()
                if i >= 3:
                    out[j].append(time.perf_counter() - t0)
    return out


def loads(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("adapterhub_replica_adapter_loads_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('replica="')[1].split('"')[0]] = float(value)
    return out


def closed_loop(url: str, names: list[str], clients: int, max_tokens: int) -> tuple[list[float], int]:
    """Stream every request of ``names`` with ``clients`` threads; TTFT per request, failures."""
    ttft: list[float] = []
    failed = [0]
    it = iter(enumerate(names))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=300) as c:
            while True:
                with lock:
                    nxt = next(it, None)
                if nxt is None:
                    return
                t0, first = time.perf_counter(), None
                body = {"model": nxt[1], "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
                try:
                    with c.stream("POST", url + "/v1/completions", json=body) as r:
                        if r.status_code != 200:
                            failed[0] += 1
                            continue
                        for line in r.iter_lines():
                            if first is None and line.startswith("data: {") and '"text":"' in line:
                                first = time.perf_counter() - t0
                except httpx.HTTPError:
                    failed[0] += 1
                    continue
                if first is not None:
                    with lock:
                        ttft.append(first)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ttft, failed[0]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000.0 if xs else float("nan")


def routing_phase(alias: str, routing: str, args: argparse.Namespace, warm: list[str], measured: list[str],
                  out: Path, single_url: str | None) -> dict[str, Any]:
    extra = ["--ray", "--replicas", str(args.replicas), "--max-loaded-adapters", str(args.resident),
             "--ray-routing", routing]
    with server(alias, extra, out / f"serve-ray-{routing}.log", args.threads) as url:
        res: dict[str, Any] = {}
        if single_url is not None:
            res["latency"], res["single"] = low_load_latency([url, single_url], alias, args.low_load, args.max_tokens)
        closed_loop(url, warm, args.clients, args.max_tokens)
        before = loads(url)
        t0 = time.perf_counter()
        ttft, failed = closed_loop(url, measured, args.clients, args.max_tokens)
        took = time.perf_counter() - t0
        time.sleep(1.0)  # replicas post their counters every 0.25 s
        after = loads(url)
    n = sum(after.values()) - sum(before.values())
    res.update({"loads": n, "loads_per_1k": 1000.0 * n / len(measured), "ttft": ttft, "failed": failed,
                "seconds": took, "loads_per_replica": {k: after[k] - before.get(k, 0.0) for k in after}})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(ALIASES), default="tiny")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--adapters", type=int, default=64)
    ap.add_argument("--resident", type=int, default=16, help="adapters each replica may hold")
    ap.add_argument("--requests", type=int, default=1000, help="measured requests per routing mode")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--low-load", type=int, default=40, help="sequential requests for the Ray hop's overhead")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="serve-ray-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ADAPTERHUB_HOME", tempfile.mkdtemp(prefix="serve-ray-home-"))
    alias = ALIASES[args.model]
    push_adapters(alias, args.adapters, out / "adapters", scale=1.5 if args.model == "tiny" else 1.0)
    warm = zipf_names(args.adapters, args.warmup, seed=1)
    measured = zipf_names(args.adapters, args.requests, seed=2)

    with server(alias, [], out / "serve-single.log", args.threads) as single_url:  # idle while not asked
        mux = routing_phase(alias, "multiplexed", args, warm, measured, out, single_url)
    rr = routing_phase(alias, "round-robin", args, warm, measured, out, None)
    single = mux["single"]

    overhead = statistics.median(mux["latency"]) / statistics.median(single)
    result = {
        "model": args.model, "replicas": args.replicas, "adapters": args.adapters, "resident_per_replica": args.resident,
        "requests": args.requests, "clients": args.clients, "max_tokens": args.max_tokens,
        "loads_per_1k_multiplexed": round(mux["loads_per_1k"], 1), "loads_per_1k_round_robin": round(rr["loads_per_1k"], 1),
        "loads_per_replica_multiplexed": mux["loads_per_replica"], "loads_per_replica_round_robin": rr["loads_per_replica"],
        "ttft_p50_ms_multiplexed": round(pct(mux["ttft"], 0.5), 1), "ttft_p99_ms_multiplexed": round(pct(mux["ttft"], 0.99), 1),
        "ttft_p50_ms_round_robin": round(pct(rr["ttft"], 0.5), 1), "ttft_p99_ms_round_robin": round(pct(rr["ttft"], 0.99), 1),
        "failed_multiplexed": mux["failed"], "failed_round_robin": rr["failed"],
        "latency_p50_ms_single": round(1000 * statistics.median(single), 1),
        "latency_p50_ms_ray": round(1000 * statistics.median(mux["latency"]), 1),
        "ray_hop_overhead": round(overhead, 3),
        "ray_hop_ms": round(1000 * (statistics.median(mux["latency"]) - statistics.median(single)), 1),
    }
    ratio = result["loads_per_1k_multiplexed"] / max(result["loads_per_1k_round_robin"], 1e-9)
    result["loads_ratio"] = round(ratio, 3)
    result["checks"] = {"multiplexed_le_third_of_round_robin": ratio <= 1 / 3, "ray_hop_le_1.15x": overhead <= 1.15,
                        "no_failed": mux["failed"] == 0 and rr["failed"] == 0}
    (out / f"serve_ray-{args.model}.json").write_text(json.dumps(result, indent=2))
    print(f"loads per 1k requests: multiplexed {result['loads_per_1k_multiplexed']}, round-robin "
          f"{result['loads_per_1k_round_robin']} ({ratio:.2f}x)")
    print(f"TTFT p50/p99 ms: multiplexed {result['ttft_p50_ms_multiplexed']}/{result['ttft_p99_ms_multiplexed']}, "
          f"round-robin {result['ttft_p50_ms_round_robin']}/{result['ttft_p99_ms_round_robin']}")
    print(f"low-load latency p50: single process {result['latency_p50_ms_single']} ms, through Ray "
          f"{result['latency_p50_ms_ray']} ms ({overhead:.2f}x)")
    print("checks: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in result["checks"].items()))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
