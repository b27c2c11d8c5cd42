"""Serving under churn: threads generate while another thread loads, replaces, unloads.

Every response must come from exactly one adapter version: we record which version
answered each request and replay every (prompt, version) single-threaded afterwards;
the tokens must be identical. The only error allowed is AdapterUnloadedError for
requests that named an adapter which was unloaded at that moment.
"""

from __future__ import annotations

import os
import random
import resource
import threading
import time
from pathlib import Path

import pytest

from adapterhub.errors import AdapterUnloadedError
from adapterhub.host import AdapterHost
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_llama

REQUESTS = int(os.environ.get("ADAPTERHUB_CHURN_REQUESTS", "1000"))
THREADS = 4
PROMPTS = ["good film", "bad plot", "so-so acting overall", "x"]
NAMES = ["a", "b", "c"]
TOKENS = 4


def _host() -> AdapterHost:
    model, tok = tiny_llama(seed=0)
    return AdapterHost(LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok))


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six distinct versions (LoRA and prefix) that the churn thread cycles through."""
    root = tmp_path_factory.mktemp("churn")
    model, _ = tiny_llama(seed=0)
    out: dict[str, Path] = {}
    for i in range(6):
        method = "lora" if i % 2 == 0 else "prefix-tuning"
        cfg = {"r": 4, "alpha": 8, "target_modules": "all-linear"} if method == "lora" else {"num_virtual_tokens": 4}
        v = f"1.0.{i}"
        make_adapter(method, model, root / v, config=cfg, name="churn", version=v, seed=100 + i, scale=3.0)
        out[v] = root / v
    # Precondition: versions answer differently, or the replay check below would be vacuous.
    host = _host()
    for v, path in out.items():
        host.load(path, name=f"v{v}")
    for prompt in PROMPTS:
        answers = {tuple(host.generate([prompt], [f"v{v}"], max_new_tokens=TOKENS)[0].token_ids) for v in out}
        assert len(answers) >= 4, f"versions are not distinguishable on {prompt!r}: {answers}"
    return out


def test_threads_never_mix_versions(versions: dict[str, Path]) -> None:
    host = _host()
    vlist = sorted(versions)
    for n in NAMES:
        host.load(versions[vlist[0]], name=n)
    records: list[tuple[str, str | None, list[int]]] = []
    served = 0
    errors: list[BaseException] = []
    unloaded_errors = 0
    lock = threading.Lock()
    stop = threading.Event()
    per_thread = REQUESTS // THREADS

    def client(seed: int) -> None:
        nonlocal unloaded_errors, served
        rng = random.Random(seed)
        for _ in range(per_thread):
            rows = [rng.choice(NAMES) for _ in range(2)]
            prompts = [rng.choice(PROMPTS) for _ in range(2)]
            try:
                gens = host.generate(prompts, rows, max_new_tokens=TOKENS)
            except AdapterUnloadedError:
                with lock:
                    unloaded_errors += 1
                continue
            except BaseException as exc:  # anything else is a failure
                errors.append(exc)
                return
            with lock:
                served += 1
                records.extend((g.prompt, g.adapter, g.token_ids) for g in gens)

    def churn() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            name = rng.choice(NAMES)
            op = rng.random()
            try:
                time.sleep(0.002)  # churn continuously, but let requests through
                if op < 0.1:
                    host.unload(name)
                else:
                    host.load(versions[rng.choice(vlist)], name=name)
            except AdapterUnloadedError:
                pass  # unloading a name that is already unloaded
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    churner = threading.Thread(target=churn)
    churner.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    churner.join()
    assert not errors, errors[0]
    assert served + unloaded_errors == per_thread * THREADS
    assert served >= REQUESTS // 4, f"only {served} of {REQUESTS} requests were served"
    assert len({label for _, label, _ in records}) >= 6  # many versions were really exercised

    # Replay each (prompt, version) alone on a fresh host.
    replay = _host()
    for v, path in versions.items():
        replay.load(path, name=f"v{v}")
    expected: dict[tuple[str, str], list[int]] = {}
    for prompt, label, tokens in records:
        assert label is not None and label.count("@") == 1
        version = label.split("@")[1]
        key = (prompt, version)
        if key not in expected:
            expected[key] = replay.generate([prompt], [f"v{version}"], max_new_tokens=TOKENS)[0].token_ids
        assert tokens == expected[key], f"{label} answered {prompt!r} with tokens of another version"


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_rss_stays_flat_over_many_swaps(versions: dict[str, Path]) -> None:
    host = _host()
    vlist = sorted(versions)
    swaps = int(os.environ.get("ADAPTERHUB_SWAPS", "2000"))

    def cycle(n: int) -> None:
        for i in range(n):
            host.load(versions[vlist[i % len(vlist)]], name=NAMES[i % len(NAMES)])
            if i % 10 == 0:
                host.generate(["x"], [NAMES[i % len(NAMES)]], max_new_tokens=1)

    cycle(100)
    early = _rss_kb()
    cycle(swaps)
    late = _rss_kb()
    assert late <= early * 1.05, f"RSS grew from {early} kB to {late} kB over {swaps} swaps"
