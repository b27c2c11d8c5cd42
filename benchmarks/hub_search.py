"""The hub's search page over 10,000 adapters: server-side render time.

Goal (issue 15): the search result page for a store of 10,000 adapters renders in
<= 300 ms server-side. Measured here as the whole request through the ASGI app in
process (routing, query, Jinja2 render, response body), without a network, and also as
CPU time of the serving thread, since wall time on this shared 2-core machine moves with
whatever else runs. The same query through the local SQLite index (`adapterhub search`,
results only, no page) is timed in the same run as the reference, and the ratio reported.

The store holds 10,000 versions written through the store API in the layout pushes
produce (valid manifests, one shared weights blob), with descriptions, tasks, methods,
three metrics each and tags; the hub's cache reads them once (cold build timed too).

    .venv/bin/python benchmarks/hub_search.py              # 10,000 adapters, 30 repeats
    .venv/bin/python benchmarks/hub_search.py --count 2000 --repeats 5

Writes ``benchmarks/results/hub_search.json`` and ``hub_search.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_bench import machine  # noqa: E402 - benchmarks share the machine description

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("sentiment-rt", "summarize-aclsum", "chitchat", "faq-instruct", "translate-sv-en")
METHODS = ("lora", "lora", "prefix-tuning", "layer-selective", "full")
WORDS = ("movie", "review", "summary", "faq", "construction", "swedish", "chat", "legal", "medical", "support")
GOAL_MS = 300.0


def fill(root: Path, count: int) -> None:
    from adapterhub.registry.local import LocalStore

    from adapterhub.manifest import MANIFEST_NAME
    from adapterhub.testing.stores import write_test_adapter

    adapter = write_test_adapter(root / "small", seed=2)
    template = json.loads((adapter / MANIFEST_NAME).read_text())
    store = LocalStore(root / "store", durable=False)  # setup, not what is measured
    entry = template["files"][0]
    store.put_blob(entry["sha256"], adapter / entry["path"])
    rng = random.Random(0)
    for i in range(count):
        task = TASKS[i % len(TASKS)]
        m = dict(template)
        words = " ".join(rng.choice(WORDS) for _ in range(8))
        m.update(
            name=f"team{i % 50}/adapter-{i}", version="1.0.0", task=task, method=METHODS[i % len(METHODS)],
            description=f"Adapter {i} for {task}: {words}.",
            metrics={task: {"accuracy": rng.random(), "rougeL": rng.random() * 0.6, "bleu": rng.random() * 40}},
        )
        store.put_version(m["name"], "1.0.0", json.dumps(m).encode())
        store.set_tag(m["name"], "latest", "1.0.0")
        if i % 10 == 0:
            store.set_tag(m["name"], "prod", "1.0.0")


QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    # label: (page query string, the same query for Index.search)
    "browse, first page (50 rows)": ("/", {}),
    "browse, page 100 of 200": ("/?page=100", {}),
    "free text 'legal medical'": ("/?q=legal+medical", {}),
    "task + rougeL>0.3, sorted by rougeL": ("/?task=summarize-aclsum&where=rougeL%3E0.3&sort=rougeL", {"task": "summarize-aclsum", "where": ["rougeL>0.3"]}),
    "method=lora, tag=prod": ("/?method=lora&tag=prod", {"method": "lora", "tag": "prod"}),
    "sorted by accuracy, 200 rows": ("/?sort=accuracy&per_page=200", {"where": ["accuracy>=0"]}),
}


def run(count: int, repeats: int) -> dict[str, Any]:
    import httpx
    from adapterhub.registry.client import Registry
    from adapterhub.registry.hub.app import build_app
    from adapterhub.registry.hub.state import HubState
    from adapterhub.registry.local import LocalStore

    work = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    t0 = time.perf_counter()
    fill(work, count)
    fill_s = time.perf_counter() - t0
    state = HubState.open(LocalStore(work / "store"), ttl_s=3600)
    t0 = time.perf_counter()
    snap = state.cache.snapshot()
    cold_s = time.perf_counter() - t0
    assert len(snap.latest) == count, len(snap.latest)
    reg = Registry(root=work / "store", progress=False)
    reg.rebuild_index()

    import asyncio

    async def measure() -> dict[str, Any]:
        out: dict[str, Any] = {}
        transport = httpx.ASGITransport(app=build_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            for label, (path, index_query) in QUERIES.items():
                walls, cpus, refs, size, status = [], [], [], 0, 0
                for _ in range(repeats):
                    c0, w0 = time.thread_time(), time.perf_counter()
                    r = await client.get(path)
                    walls.append(time.perf_counter() - w0)
                    cpus.append(time.thread_time() - c0)
                    size, status = len(r.content), r.status_code
                    w0 = time.perf_counter()
                    reg.search(**index_query, limit=None)
                    refs.append(time.perf_counter() - w0)
                assert status == 200, (label, status)
                med = statistics.median(walls) * 1000
                out[label] = {
                    "path": path, "bytes": size,
                    "median_ms": round(med, 2), "p95_ms": round(sorted(walls)[int(0.95 * (len(walls) - 1))] * 1000, 2),
                    "cpu_median_ms": round(statistics.median(cpus) * 1000, 2),
                    "sqlite_index_search_median_ms": round(statistics.median(refs) * 1000, 2),
                    "ratio_to_index_search": round(med / max(statistics.median(refs) * 1000, 1e-6), 2),
                    "meets_goal": med <= GOAL_MS,
                }
        return out

    pages = asyncio.run(measure())
    return {
        "benchmark": "hub_search", "adapters": count, "repeats": repeats, "goal_ms": GOAL_MS,
        "torch_threads": None, "fill_s": round(fill_s, 1), "cold_cache_build_s": round(cold_s, 2),
        "machine": machine(), "load_average_at_end": os.getloadavg(), "pages": pages,
        "all_meet_goal": all(p["meets_goal"] for p in pages.values()),
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# Hub search page over {res['adapters']:,} adapters",
        "",
        f"Whole request through the ASGI app in process (routing, query, Jinja2 render), median of {res['repeats']};"
        f" goal <= {res['goal_ms']:.0f} ms. Reference in the same run: the same filter through the local SQLite"
        " index (`adapterhub search`: result rows only, no page).",
        "",
        "| query | page bytes | median ms | p95 ms | CPU ms | SQLite index search ms | ratio | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, p in res["pages"].items():
        lines.append(f"| {label} | {p['bytes']:,} | {p['median_ms']:.1f} | {p['p95_ms']:.1f} | {p['cpu_median_ms']:.1f} |"
                     f" {p['sqlite_index_search_median_ms']:.1f} | {p['ratio_to_index_search']:.2f}x | {'met' if p['meets_goal'] else 'MISSED'} |")
    m = res["machine"]
    lines += [
        "",
        f"Cold cache build (every manifest read and parsed once): {res['cold_cache_build_s']:.2f} s; later refreshes list"
        " names, versions and tags and read only new manifests.",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; load average at start {m['load_average_at_start']},"
        f" at end {[round(x, 2) for x in res['load_average_at_end']]}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    res = run(args.count, args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hub_search.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "hub_search.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
