"""HTTP load test of ``adapterhub serve`` (issue 14): streaming clients over many adapters.

Two phases, same base, same adapters, same request mix, same closed-loop clients:

1. **engine**: ``--clients`` threads submit straight to an in-process
   :class:`~adapterhub.serving.Engine` for ``--duration`` seconds (the engine's own figure);
2. **http**: ``adapterhub serve`` runs as a subprocess (``--adapter DIR`` for each adapter)
   and the same threads stream ``POST /v1/completions`` (SSE) for ``--duration`` seconds.

Request ``i`` of client ``c`` names adapter ``(c + i) % (adapters + 1)`` (the last one is the
bare base) and prompt ``(c * 7 + i) % len(PROMPTS)``, greedy, ``--max-tokens`` tokens. Every
answer is compared with the engine's greedy answer for its (prompt, adapter), computed
once beforehand, so a response routed to the wrong adapter counts as *mixed up*; a
non-200, a broken stream or a missing ``[DONE]`` counts as *failed*.

Pass criteria (printed, and in ``--json``): zero failed and zero mixed-up responses;
server RSS growth ≤ 5 % between the second and the last window (10 s windows for a 60 s
run, ``duration / 6`` for shorter smoke runs); HTTP completion tokens/s ≥ 0.85× the
engine's own.

    .venv/bin/python benchmarks/serve_http.py [--model tiny|smollm2] [--clients 32] [--adapters 16]
        [--duration 60] [--max-tokens 32] [--json] [--out DIR]

``--model tiny --duration 10`` is a smoke run; SmolLM2 runs are for a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapterhub.testing.procs import ServerDied, wait_healthy

PROMPTS = [
    "The film was a quiet triumph:",
    "Summarize: the committee met on Tuesday and agreed to postpone the vote.",
    "Translate to English: god morgon, hur mår du?",
    "Q: What is the capital of France?\nA:",
    "Once upon a time",
    "def fibonacci(n):",
    "A list of three fruits:",
    "The weather today is",
]
ALIASES = {"tiny": "tiny-random-llama", "smollm2": "smollm2-135m-instruct"}
ENTRY = "import sys; from adapterhub.cli.main import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Tally:
    tokens: int = 0
    ok: int = 0
    failed: int = 0
    mixed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, tokens: int, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.tokens += tokens
            setattr(self, outcome, getattr(self, outcome) + 1)
            if detail and len(self.errors) < 5:
                self.errors.append(detail)


def job(c: int, i: int, names: list[str | None]) -> tuple[int, str | None]:
    return (c * 7 + i) % len(PROMPTS), names[(c + i) % len(names)]


def closed_loop(clients: int, duration: float, one: Callable[[int, int, Tally], None]) -> tuple[Tally, float]:
    tally = Tally()
    stop_at = time.perf_counter() + duration

    def client(c: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            one(c, i, tally)
            i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.perf_counter() - t0


def make_adapters(alias: str, n: int, root: Path, scale: float) -> list[Path]:
    from adapterhub.basemodels import load_base
    from adapterhub.testing.adapters import make_adapter

    base = load_base(alias)
    dirs = []
    for i in range(n):
        d = root / f"a{i}"
        make_adapter("lora", base.model, d, config={"r": 4, "alpha": 8}, name=f"bench/a{i}", version="1.0.0",
                     seed=100 + i, scale=scale)
        dirs.append(d)
    return dirs


def engine_phase(alias: str, dirs: list[Path], args: argparse.Namespace) -> tuple[dict[tuple[int, str | None], str], dict[str, Any]]:
    from adapterhub.host import AdapterHost
    from adapterhub.serving import Engine, EngineConfig, make_request

    host = AdapterHost(alias)
    names: list[str | None] = [host.load(d).name for d in dirs]
    names.append(None)
    config = EngineConfig(max_running=args.clients, max_queue=max(256, 2 * args.clients))
    with Engine(host, config) as eng:
        keys = [(p, a) for p in range(len(PROMPTS)) for a in names]
        outs = eng.generate([make_request(PROMPTS[p], a, raw=True, max_tokens=args.max_tokens) for p, a in keys])
        refs = {k: o.text for k, o in zip(keys, outs, strict=True)}

        def one(c: int, i: int, tally: Tally) -> None:
            p, a = job(c, i, names)
            try:
                h = eng.submit(make_request(PROMPTS[p], a, raw=True, max_tokens=args.max_tokens))
                text = "".join(d.text for d in h)
                n = h.result().completion_tokens
            except Exception as exc:  # noqa: BLE001 - counted, not raised
                tally.add(0, "failed", repr(exc))
                return
            tally.add(n, "ok" if text == refs[(p, a)] else "mixed", "" if text == refs[(p, a)] else f"{a}: {text!r}")

        tally, wall = closed_loop(args.clients, args.duration, one)
    return refs, {"tokens_per_s": tally.tokens / wall, "requests": tally.ok + tally.mixed + tally.failed,
                  "failed": tally.failed, "mixed": tally.mixed, "errors": tally.errors, "names": names}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def http_phase(alias: str, dirs: list[Path], refs: dict[tuple[int, str | None], str], names: list[str | None],
               args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-c", ENTRY, "serve", "--base", alias, "--port", str(port), "--max-running", str(args.clients),
           "--max-queue", str(max(256, 2 * args.clients)), "--grace", "30", "--threads", str(args.threads)]
    for d in dirs:
        cmd += ["--adapter", str(d)]
    log = open(Path(args.out) / "serve_http-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(url, proc, timeout=600, interval=0.5)
        except (ServerDied, TimeoutError) as exc:
            raise SystemExit(f"{exc}; see {log.name}") from None
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sampler() -> None:
            t0 = time.perf_counter()
            while not done.wait(1.0):
                samples.append((time.perf_counter() - t0, _rss_kb(proc.pid)))

        local = threading.local()

        def one(c: int, i: int, tally: Tally) -> None:
            p, a = job(c, i, names)
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(timeout=120)
            body = {"model": a or alias, "prompt": PROMPTS[p], "max_tokens": args.max_tokens, "temperature": 0,
                    "stream": True}
            parts: list[str] = []
            usage: dict[str, Any] | None = None
            try:
                with client.stream("POST", url + "/v1/completions", json=body) as r:
                    if r.status_code != 200:
                        tally.add(0, "failed", f"status {r.status_code}: {r.read()[:200]!r}")
                        return
                    finished = False
                    for line in r.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        if line == "data: [DONE]":
                            finished = True
                            break
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            tally.add(0, "failed", str(chunk["error"]))
                            return
                        for ch in chunk.get("choices", []):
                            parts.append(ch.get("text", ""))
                        usage = chunk.get("usage") or usage
            except httpx.HTTPError as exc:
                tally.add(0, "failed", repr(exc))
                return
            if not finished or usage is None:
                tally.add(0, "failed", "stream ended without [DONE] or usage")
                return
            text = "".join(parts)
            good = text == refs[(p, a)]
            tally.add(int(usage["completion_tokens"]), "ok" if good else "mixed", "" if good else f"{a}: {text!r}")

        sampling = threading.Thread(target=sampler, daemon=True)
        sampling.start()
        tally, wall = closed_loop(args.clients, args.duration, one)
        done.set()
        sampling.join()
        metrics = httpx.get(url + "/metrics", timeout=10).text
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    window = min(10.0, args.duration / 6)
    second = [kb for t, kb in samples if window <= t < 2 * window]
    last = [kb for t, kb in samples if t >= wall - window]
    growth = (statistics.mean(last) / statistics.mean(second) - 1) * 100 if second and last else None
    return {
        "tokens_per_s": tally.tokens / wall, "requests": tally.ok + tally.mixed + tally.failed,
        "failed": tally.failed, "mixed": tally.mixed, "errors": tally.errors,
        "rss_mb_second_window": statistics.mean(second) / 1024 if second else None,
        "rss_mb_last_window": statistics.mean(last) / 1024 if last else None,
        "rss_growth_pct": growth, "window_s": window, "server_exit_code": proc.returncode,
        "metrics_lines": sum(1 for ln in metrics.splitlines() if ln and not ln.startswith("#")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(ALIASES), default="tiny")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--adapters", type=int, default=16)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (engine phase and server)")
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    ap.add_argument("--out", default=None, help="directory for the server log and result files (default: a temp dir)")
    args = ap.parse_args(argv)
    args.out = args.out or tempfile.mkdtemp(prefix="serve-http-")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ADAPTERHUB_HOME", tempfile.mkdtemp(prefix="serve-http-home-"))
    import torch

    torch.set_num_threads(args.threads)
    alias = ALIASES[args.model]
    dirs = make_adapters(alias, args.adapters, Path(args.out) / "adapters", scale=1.5 if args.model == "tiny" else 1.0)
    refs, engine = engine_phase(alias, dirs, args)
    names = engine.pop("names")
    if len({refs[(0, a)] for a in names}) < 2:
        print("warning: the adapters give the same greedy text: mixed-up answers would go unnoticed", file=sys.stderr)
    http = http_phase(alias, dirs, refs, names, args)
    ratio = http["tokens_per_s"] / engine["tokens_per_s"] if engine["tokens_per_s"] else None
    checks = {
        "no_failed": http["failed"] == 0 and engine["failed"] == 0,
        "no_mixed": http["mixed"] == 0 and engine["mixed"] == 0,
        "rss_growth_le_5pct": http["rss_growth_pct"] is not None and http["rss_growth_pct"] <= 5.0,
        "http_ge_0.85x_engine": ratio is not None and ratio >= 0.85,
    }
    result = {"model": args.model, "clients": args.clients, "adapters": args.adapters, "duration_s": args.duration,
              "max_tokens": args.max_tokens, "engine": engine, "http": http, "http_over_engine": ratio, "checks": checks}
    (Path(args.out) / f"serve_http-{args.model}.json").write_text(json.dumps(result, indent=2))
    print(f"engine: {engine['tokens_per_s']:.1f} tok/s over {engine['requests']} requests "
          f"({engine['failed']} failed, {engine['mixed']} mixed up)")
    rss = http["rss_growth_pct"]
    print(f"http:   {http['tokens_per_s']:.1f} tok/s over {http['requests']} requests "
          f"({http['failed']} failed, {http['mixed']} mixed up); server RSS growth "
          f"{'n/a' if rss is None else f'{rss:+.2f} %'}; http/engine {ratio:.2f}x" if ratio else "http: no tokens")
    for e in (engine["errors"] + http["errors"])[:5]:
        print(f"  error: {e}")
    print("checks: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in checks.items()))
    if args.json:
        print(json.dumps(result))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
