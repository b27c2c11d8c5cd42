"""One packed forward per step, and the prefix cache: same tokens as without them.

The tiny model and adapters made with a large scale, so every adapter changes the
greedy answer (a cached block served to the wrong adapter shows up as other tokens).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.host import AdapterHost
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.serving import Engine, EngineConfig, make_request
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_llama

METHODS = {
    "a": ("lora", {"r": 4, "alpha": 8}),
    "b": ("lora", {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj", "o_proj"]}),
    "p": ("prefix-tuning", {"num_virtual_tokens": 4}),
    "s": ("layer-selective", {"layers": "1"}),
}
# Prompts that share long starts (a system prompt, a conversation so far) and differ after.
STEM = "You are a careful assistant. Answer briefly and exactly. " * 3
PROMPTS = [STEM + "What is two plus two?", STEM + "Name a colour.", STEM + "What is two plus three?",
           "Unrelated short prompt.", STEM]


def _base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok, path=None)


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packed-adapters")
    base = _base()
    out = {}
    for i, (name, (method, cfg)) in enumerate(METHODS.items()):
        make_adapter(method, base.model, root / name, config=cfg, name=f"t/{name}", version="1.0.0", seed=30 + i, scale=1.5)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def host(adapter_dirs: dict[str, Path]) -> AdapterHost:
    h = AdapterHost(_base())
    for name, d in adapter_dirs.items():
        h.load(d, name=name)
    return h


def _run(host: AdapterHost, jobs: list[tuple[str, str | None, int]], config: EngineConfig, seed: int) -> tuple[list[list[int]], dict]:
    """Submit ``jobs`` (prompt, adapter, max_tokens) in random bursts; token ids in job order."""
    rng = random.Random(seed)
    with Engine(host, config) as eng:
        handles = []
        for prompt, adapter, n in jobs:
            handles.append(eng.submit(make_request(prompt, adapter, max_tokens=n)))
            if rng.random() < 0.4:
                time.sleep(rng.choice([0.0, 0.002, 0.01]))
        out = [h.result(timeout=120).token_ids for h in handles]
        return out, eng.stats()


def test_every_method_packs_and_a_step_is_one_forward(host: AdapterHost) -> None:
    for name in METHODS:
        assert host.packable(host.entry(name)), name
    jobs = [(p, a, 6) for p in PROMPTS for a in [None, *METHODS]]
    refs = {(p, a): host.generate([p], [a or "<base>"], max_new_tokens=6)[0].token_ids for p, a, _ in jobs}
    got, stats = _run(host, jobs, EngineConfig(max_prefill_tokens=16, max_running=8, prefix_cache=False), seed=1)
    for (p, a, _), ids in zip(jobs, got, strict=True):
        assert ids == refs[(p, a)], (p, a)
    # Without a selective adapter running, every step is one forward (decode + chunks).
    base_jobs = [(p, a, 6) for p in PROMPTS for a in (None, "a", "b", "p")]
    _, stats = _run(host, base_jobs, EngineConfig(max_prefill_tokens=16, max_running=8), seed=2)
    assert stats["forwards"] == stats["steps"] and stats["prefill_forwards"] <= stats["steps"]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_the_prefix_cache_changes_no_token_and_is_never_shared_across_adapters(host: AdapterHost, seed: int) -> None:
    rng = random.Random(seed)
    # Two LoRA adapters and the base (plus prefix tuning, whose cache starts with its
    # virtual tokens) on the *same* prompts, in random order: a block cached for one must
    # never serve another.
    jobs = [(p, a, rng.randint(1, 6)) for p in PROMPTS for a in (None, "a", "b", "p") for _ in range(2)]
    rng.shuffle(jobs)
    cfg = {"max_prefill_tokens": rng.choice([8, 16, 64]), "max_running": rng.choice([2, 4, 8]), "prefix_block_tokens": 4}
    off, _ = _run(host, jobs, EngineConfig(**cfg, prefix_cache=False), seed)
    on, stats = _run(host, jobs, EngineConfig(**cfg), seed)
    assert on == off
    assert stats["prefix_cache"]["hits"] > 0  # the property was exercised, not vacuous


def test_a_new_version_under_the_same_name_never_reads_the_old_blocks(adapter_dirs: dict[str, Path], tmp_path: Path) -> None:
    h = AdapterHost(_base())
    h.load(adapter_dirs["a"], name="x")
    with Engine(h, EngineConfig(prefix_block_tokens=4)) as eng:
        first = eng.submit(make_request(PROMPTS[0], "x", max_tokens=6)).result(timeout=60).token_ids
        # Same name, same version label, other weights (a local rebuild): other files' sha256.
        make_adapter("lora", _base().model, tmp_path / "x2", config={"r": 4, "alpha": 8}, name="t/a", version="1.0.0", seed=77, scale=1.5)
        h.load(tmp_path / "x2", name="x")
        hits = eng.stats()["prefix_cache"]["hits"]
        second = eng.submit(make_request(PROMPTS[0], "x", max_tokens=6)).result(timeout=60).token_ids
        assert eng.stats()["prefix_cache"]["hits"] == hits  # nothing reused across the two
        alone = h.generate([PROMPTS[0]], ["x"], max_new_tokens=6)[0].token_ids
    assert second == alone and second != first


def test_a_chat_turn_reuses_the_previous_turn(host: AdapterHost) -> None:
    with Engine(host, EngineConfig(prefix_block_tokens=4)) as eng:
        turn1 = [{"role": "user", "content": STEM}]
        a1 = eng.submit(make_request(turn1, "a", max_tokens=8)).result(timeout=60)
        turn2 = [*turn1, {"role": "assistant", "content": a1.text}, {"role": "user", "content": "Shorter, please."}]
        before = eng.stats()["prefix_cache"]["hits"]
        a2 = eng.submit(make_request(turn2, "a", max_tokens=8)).result(timeout=60)
        hit = eng.stats()["prefix_cache"]["hits"] - before
    assert hit >= (a1.prompt_tokens // 4) * 4  # at least turn 1's whole blocks
    with Engine(host, EngineConfig(prefix_cache=False)) as eng:
        assert eng.submit(make_request(turn2, "a", max_tokens=8)).result(timeout=60).token_ids == a2.token_ids


def test_the_prefix_cache_stays_within_max_kv_tokens(host: AdapterHost) -> None:
    budget = 160
    seen: list[int] = []
    with Engine(host, EngineConfig(max_kv_tokens=budget, prefix_block_tokens=4, max_running=2)) as eng:
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.append(eng.stats()["prefix_cache"]["tokens"])
                time.sleep(0.001)

        t = threading.Thread(target=watch)
        t.start()
        try:
            for i in range(12):
                eng.submit(make_request(f"prompt number {i} " * 4, None, max_tokens=4)).result(timeout=60)
        finally:
            stop.set()
            t.join()
        stats = eng.stats()["prefix_cache"]
    assert max(seen) <= budget and stats["evictions"] > 0 and stats["tokens"] > 0


def test_prompt_logprob_rows_are_computed_not_cached(host: AdapterHost) -> None:
    with Engine(host, EngineConfig(prefix_block_tokens=4)) as eng:
        eng.submit(make_request(PROMPTS[0], "a", max_tokens=2)).result(timeout=60)
        hits = eng.stats()["prefix_cache"]["hits"]
        c = eng.submit(make_request(PROMPTS[0], "a", max_tokens=1, logprobs=0, prompt_logprobs=0)).result(timeout=60)
        assert eng.stats()["prefix_cache"]["hits"] == hits
    assert c.prompt_logprobs is not None and len(c.prompt_logprobs) == c.prompt_tokens


def test_rows_on_a_method_without_packed_forwards_use_per_row_forwards(host: AdapterHost, monkeypatch: pytest.MonkeyPatch) -> None:
    # A third-party runtime without PackedRuntime (the IA³ example is one): its rows and
    # the decode groups they sit in run the per-row path, beside packed rows.
    real = host.packable
    monkeypatch.setattr(host, "packable", lambda e: real(e) and (e is None or e.method.name != "prefix-tuning"))
    jobs = [(p, a, 5) for p in PROMPTS[:3] for a in (None, "a", "p", "s")]
    refs = {(p, a): host.generate([p], [a or "<base>"], max_new_tokens=5)[0].token_ids for p, a, _ in jobs}
    got, stats = _run(host, jobs, EngineConfig(max_prefill_tokens=16, max_running=6), seed=3)
    for (p, a, _), ids in zip(jobs, got, strict=True):
        assert ids == refs[(p, a)], (p, a)
    assert stats["forwards"] > stats["steps"]  # some steps ran per-row forwards


def test_a_request_that_ends_with_its_first_token_still_leaves_its_prompt(host: AdapterHost) -> None:
    with Engine(host, EngineConfig(prefix_block_tokens=4)) as eng:
        eng.submit(make_request(PROMPTS[1], "b", max_tokens=1)).result(timeout=60)
        assert eng.stats()["prefix_cache"]["tokens"] >= 16
        again = eng.submit(make_request(PROMPTS[1], "b", max_tokens=4)).result(timeout=60)
        assert eng.stats()["prefix_cache"]["hits"] >= 16
    assert again.token_ids == host.generate([PROMPTS[1]], ["b"], max_new_tokens=4)[0].token_ids
