"""The serving engine on the tiny model: equality with ``generate``, scheduling, limits.

Every adapter here is made with a large scale so each one drives the tiny model to its
own greedy output; the tests first check that the references really differ, so "row i
got its own adapter's tokens" cannot pass vacuously.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from adapterhub.registry.client import Registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.errors import (
    AdapterNotFoundError,
    ConfigError,
    ContextLengthError,
    IntegrityError,
    QueueFullError,
)
from adapterhub.host import AdapterHost
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.serving import Engine, EngineConfig, make_request
from adapterhub.serving.rows import Group
from adapterhub.serving.runner import Runner
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_llama

PROMPTS = [
    "Hello there, how are you today?",
    "A wonderful, moving film.",
    "x",
    "Summarize: the quick brown fox jumps over the lazy dog. " * 4,
    "Translate to English: god morgon",
]
METHODS = {
    "lora": ("lora", {"r": 4, "alpha": 8}),
    "lora2": ("lora", {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj", "o_proj"]}),
    "prefix": ("prefix-tuning", {"num_virtual_tokens": 4}),
    "sel": ("layer-selective", {"layers": "1"}),
}


def _base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok, path=None)


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine-adapters")
    base = _base()
    out = {}
    for i, (name, (method, cfg)) in enumerate(METHODS.items()):
        make_adapter(method, base.model, root / name, config=cfg, name=f"t/{name}", version="1.0.0", seed=10 + i, scale=1.5)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def host(adapter_dirs: dict[str, Path]) -> AdapterHost:
    h = AdapterHost(_base())
    for name, d in adapter_dirs.items():
        h.load(d, name=name)
    return h


@pytest.fixture(scope="module")
def references(host: AdapterHost) -> dict[tuple[str, str | None], list[int]]:
    """``AdapterHost.generate`` alone, per (prompt, adapter): what the engine must match."""
    refs = {}
    for p in PROMPTS:
        for a in [None, *METHODS]:
            refs[(p, a)] = host.generate([p], [a or "<base>"], max_new_tokens=10)[0].token_ids
    # The adapters must be distinguishable, or the routing tests below prove nothing.
    for p in PROMPTS:
        outs = [tuple(refs[(p, a)]) for a in [None, *METHODS]]
        assert len(set(outs)) >= len(outs) - 1, f"adapters not distinguishable on {p!r}: {outs}"
    return refs


def test_greedy_equals_generate_with_joins_and_leaves(host: AdapterHost, references: dict) -> None:
    # Small prefill chunks and staggered arrivals: rows join while others decode, and
    # leave at different lengths (max_tokens 3..10), every method kind in the batch.
    rng = random.Random(0)
    with Engine(host, EngineConfig(max_prefill_tokens=8, max_running=6)) as eng:
        jobs = []
        for (prompt, adapter), ref in references.items():
            n = rng.randint(3, 10)
            jobs.append((eng.submit(make_request(prompt, adapter, max_tokens=n)), ref[:n], adapter))
            if rng.random() < 0.3:
                time.sleep(0.005)
        for handle, want, adapter in jobs:
            got = handle.result(timeout=120)
            assert got.token_ids == want, (adapter, got.token_ids, want)
            assert got.adapter == (None if adapter is None else f"{adapter}@1.0.0")
        assert eng.stats()["steps"] > 0


def test_every_method_kind_shares_a_step(host: AdapterHost, references: dict) -> None:
    with Engine(host, EngineConfig(max_prefill_tokens=512)) as eng:
        prompt = PROMPTS[1]
        handles = {a: eng.submit(make_request(prompt, a, max_tokens=10)) for a in [None, *METHODS]}
        for a, h in handles.items():
            assert h.result(timeout=60).token_ids == references[(prompt, a)]
        # All five ran side by side: one after another would take 5 x 10 steps.
        assert eng.stats()["steps"] <= 16, eng.stats()["steps"]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_no_request_gets_another_adapters_tokens(host: AdapterHost, references: dict, seed: int) -> None:
    rng = random.Random(seed)
    names: list[str | None] = [None, *METHODS]
    with Engine(host, EngineConfig(max_prefill_tokens=rng.choice([4, 16, 64]), max_running=rng.randint(1, 8))) as eng:
        jobs = []
        for _ in range(12):
            p, a = rng.choice(PROMPTS), rng.choice(names)
            jobs.append((eng.submit(make_request(p, a, max_tokens=rng.randint(1, 10))), p, a))
            time.sleep(rng.choice([0, 0, 0.002, 0.01]))
        for h, p, a in jobs:
            got = h.result(timeout=120).token_ids
            assert got == references[(p, a)][: len(got)], (p, a)
            others = [b for b in names if b != a and references[(p, b)][: len(got)] != references[(p, a)][: len(got)]]
            for b in others:
                assert got != references[(p, b)][: len(got)]


def test_seeded_sampling_is_independent_of_the_batch(host: AdapterHost) -> None:
    req = make_request(PROMPTS[0], "lora", temperature=1.3, top_p=0.9, top_k=50, seed=7, max_tokens=12)
    with Engine(host) as eng:
        alone = eng.submit(req).result(timeout=60).token_ids
    with Engine(host, EngineConfig(max_prefill_tokens=6)) as eng:
        crowd = [eng.submit(make_request(p, a, temperature=0.8, seed=i, max_tokens=8)) for i, (p, a) in enumerate(zip(PROMPTS, ["sel", None, "prefix", "lora2", "lora"], strict=True))]
        mixed = eng.submit(req)
        crowd += [eng.submit(make_request(p, "prefix", max_tokens=5)) for p in PROMPTS]
        assert mixed.result(timeout=60).token_ids == alone
        for h in crowd:
            h.result(timeout=60)
        other_seed = eng.submit(make_request(PROMPTS[0], "lora", temperature=1.3, top_p=0.9, top_k=50, seed=8, max_tokens=12))
        assert other_seed.result(timeout=60).token_ids != alone


def test_stop_strings_are_cut_and_never_streamed(host: AdapterHost) -> None:
    with Engine(host) as eng:
        full = eng.submit(make_request(PROMPTS[3], "lora", max_tokens=10)).result(timeout=60)
        assert len(full.text) > 4
        stop = full.text[2:4]
        h = eng.submit(make_request(PROMPTS[3], "lora", max_tokens=10, stop=[stop, "never-there"]))
        streamed = "".join(d.text for d in h)
        done = h.result()
        assert done.finish_reason == "stop"
        assert done.text == full.text[: full.text.index(stop)]
        assert streamed == done.text


def test_finish_reasons_and_usage(host: AdapterHost) -> None:
    with Engine(host) as eng:
        c = eng.submit(make_request(PROMPTS[0], None, max_tokens=3)).result(timeout=60)
    assert c.finish_reason == "length" and c.completion_tokens == 3 and c.prompt_tokens > 3


def test_logprobs(host: AdapterHost) -> None:
    with Engine(host) as eng:
        c = eng.submit(make_request(PROMPTS[0], "lora", max_tokens=4, logprobs=True, top_logprobs=3)).result(timeout=60)
    assert len(c.logprobs) == 4
    for tok, lp in zip(c.token_ids, c.logprobs, strict=True):
        assert lp.token_id == tok and lp.logprob <= 0.0 and len(lp.top) == 3
        assert lp.top[0][2] >= lp.top[1][2] >= lp.top[2][2]
        assert lp.top[0][0] == tok  # greedy: the chosen token is the most likely one


def test_bad_sampling_values_are_one_line_config_errors() -> None:
    for bad in ({"top_p": 2.0}, {"temperature": -1}, {"top_logprobs": 9, "logprobs": True}, {"max_tokens": -1}, {"prompt_logprobs": 6}, {"temprature": 1}):
        with pytest.raises(ConfigError) as err:
            make_request("hi", **bad)
        assert "\n" not in str(err.value)


def test_streaming_sync_and_async(host: AdapterHost) -> None:
    with Engine(host) as eng:
        want = eng.submit(make_request(PROMPTS[1], "prefix", max_tokens=8)).result(timeout=60)
        h = eng.submit(make_request(PROMPTS[1], "prefix", max_tokens=8))
        deltas = list(h)
        assert [t for d in deltas for t in d.token_ids] == want.token_ids
        assert deltas[-1].finish_reason == "length" and all(d.finish_reason is None for d in deltas[:-1])

        async def consume() -> list[int]:
            h2 = eng.submit(make_request(PROMPTS[1], "prefix", max_tokens=8))
            return [t async for d in h2 for t in d.token_ids]

        assert asyncio.run(consume()) == want.token_ids


def test_cancel_frees_the_row(host: AdapterHost) -> None:
    with Engine(host, EngineConfig(max_running=1)) as eng:
        long = eng.submit(make_request(PROMPTS[0], "lora", max_tokens=400))
        next(iter(long))  # it is decoding
        queued = eng.submit(make_request(PROMPTS[1], None, max_tokens=3))
        long.cancel()
        assert long.result(timeout=60).finish_reason == "cancelled"
        # The only slot came free: the queued request runs to the end.
        assert queued.result(timeout=60).finish_reason == "length"
        stats = eng.stats()
        assert stats["running"] == 0 and stats["queue_depth"] == 0
        assert host.entry("lora").refs == 0  # the adapter pin was released


def test_queue_full_refuses_at_once(host: AdapterHost) -> None:
    eng = Engine(host, EngineConfig(max_queue=2, max_running=1))
    try:
        with host.forward_lock:  # hold the engine before its first step: nothing leaves the queue
            a = eng.submit(make_request(PROMPTS[0], None, max_tokens=2))
            b = eng.submit(make_request(PROMPTS[0], None, max_tokens=2))
            t0 = time.perf_counter()
            with pytest.raises(QueueFullError, match="queue is full"):
                eng.submit(make_request(PROMPTS[0], None, max_tokens=2))
            assert time.perf_counter() - t0 < 1.0
        for h in (a, b):
            assert h.result(timeout=60).finish_reason == "length"
        stats = eng.stats()
        assert stats["refused"] == 1 and stats["requests"] == 2
        # Once the queue drained, requests are taken again.
        assert eng.submit(make_request(PROMPTS[0], None, max_tokens=2)).result(timeout=60).finish_reason == "length"
    finally:
        eng.close()


def test_context_overflow_refused_before_the_batch(host: AdapterHost) -> None:
    with Engine(host, EngineConfig(max_model_len=64)) as eng:
        with pytest.raises(ContextLengthError, match="context window of 64"):
            eng.submit(make_request("word " * 80, None, max_tokens=4))
        with pytest.raises(ContextLengthError):
            eng.submit(make_request("hi", "lora", max_tokens=1000))
        assert eng.stats()["requests"] == 0
    window = host.context_window
    with Engine(host) as eng, pytest.raises(ContextLengthError, match=str(window)):
        eng.submit(make_request("hi", None, max_tokens=window))


def test_a_prompt_too_long_for_any_tokenization_is_refused_untokenized(host: AdapterHost, monkeypatch: pytest.MonkeyPatch) -> None:
    with Engine(host, EngineConfig(max_model_len=64)) as eng:
        bound = eng.max_prompt_chars
        assert bound == 2 * 12 * 64  # the tiny tokenizer's longest entry is <|im_start|> (12)
        calls: list[int] = []
        real = host.tokenizer.__class__.__call__

        def counting(self: object, text: str, *a: object, **k: object) -> object:
            calls.append(len(text))
            return real(self, text, *a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(host.tokenizer.__class__, "__call__", counting)
        with pytest.raises(ContextLengthError, match=f"more than 64 tokens can hold .at most {bound} characters"):
            eng.submit(make_request("a" * (bound + 1), None, raw=True, max_tokens=1))
        assert calls == []  # never tokenized
        with pytest.raises(ContextLengthError, match="context window of 64"):
            eng.submit(make_request("a" * bound, None, raw=True, max_tokens=1))
        assert calls == [bound]  # under the bound: tokenized, then refused by its token count


def test_engine_close_cancels_and_refuses(host: AdapterHost) -> None:
    eng = Engine(host, EngineConfig(max_running=1))
    h = eng.submit(make_request(PROMPTS[0], None, max_tokens=300))
    eng.close()
    assert h.result(timeout=30).finish_reason in ("cancelled", "length")
    from adapterhub.errors import EngineClosedError

    with pytest.raises(EngineClosedError):
        eng.submit(make_request("hi"))


# --- adapters from the registry ------------------------------------------------------------
@pytest.fixture()
def registry(adapter_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    reg = Registry(progress=False)
    reg.push(adapter_dirs["lora"], "team/a", version="1.0.0")
    reg.push(adapter_dirs["lora2"], "team/b", version="1.0.0")
    reg.push(adapter_dirs["prefix"], "team/p", version="1.0.0")
    return reg


def _fresh_host() -> AdapterHost:
    return AdapterHost(_base())


def test_cold_adapter_loads_once_for_concurrent_requests(registry: Registry, references: dict) -> None:
    host = _fresh_host()
    with Engine(host) as eng:
        handles = [eng.submit(make_request(PROMPTS[1], "team/a", max_tokens=10)) for _ in range(6)]
        handles += [eng.submit(make_request(PROMPTS[1], "team/a@1.0.0", max_tokens=10)) for _ in range(2)]
        for h in handles:
            c = h.result(timeout=60)
            assert c.token_ids == references[(PROMPTS[1], "lora")]
            assert c.adapter == "team/a@1.0.0"
        assert eng.stats()["adapter_loads"] == 1
        assert host.loaded() == ["team/a@1.0.0"]


def test_a_failing_load_fails_only_its_requests(registry: Registry, references: dict) -> None:
    # Corrupt the stored weights of team/b: its load fails verification.
    name, directory = registry.fetch("team/b@1.0.0")
    blob = (directory / "adapter.safetensors").resolve()
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    host = _fresh_host()
    with Engine(host) as eng:
        good = [eng.submit(make_request(PROMPTS[0], a, max_tokens=10)) for a in ("team/a", None, "team/p")]
        bad = [eng.submit(make_request(PROMPTS[0], "team/b", max_tokens=10)) for _ in range(3)]
        missing = eng.submit(make_request(PROMPTS[0], "team/nope", max_tokens=10))
        for h, a in zip(good, ("lora", None, "prefix"), strict=True):
            assert h.result(timeout=60).token_ids == references[(PROMPTS[0], a)]
        for h in bad:
            with pytest.raises(IntegrityError):
                h.result(timeout=60)
        with pytest.raises(AdapterNotFoundError, match="team/nope"):
            missing.result(timeout=60)
        assert eng.stats()["adapter_load_failures"] >= 2


def test_request_finishes_on_its_version_while_latest_moves(registry: Registry, adapter_dirs: dict[str, Path], references: dict) -> None:
    host = _fresh_host()
    with Engine(host, EngineConfig(resolve_ttl_s=0.0, max_running=2)) as eng:
        first = eng.submit(make_request(PROMPTS[3], "team/a", max_tokens=10))
        next(iter(first))  # decoding on 1.0.0
        registry.push(adapter_dirs["prefix"], "team/a", version="2.0.0")  # latest -> 2.0.0
        second = eng.submit(make_request(PROMPTS[3], "team/a", max_tokens=10))
        pinned = eng.submit(make_request(PROMPTS[3], "team/a@1.0.0", max_tokens=10))
        a, b, c = first.result(timeout=60), second.result(timeout=60), pinned.result(timeout=60)
        assert a.adapter == "team/a@1.0.0" and a.token_ids == references[(PROMPTS[3], "lora")]
        assert b.adapter == "team/a@2.0.0" and b.token_ids == references[(PROMPTS[3], "prefix")]
        assert c.adapter == "team/a@1.0.0" and c.token_ids == references[(PROMPTS[3], "lora")]
        assert sorted(host.loaded()) == ["team/a@1.0.0", "team/a@2.0.0"]


def test_loaded_adapters_are_bounded_and_in_use_ones_stay(registry: Registry, references: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _fresh_host()
    real_step = Runner.step

    def slow_step(self: Runner, group: Group | None, chunks: Any) -> Any:  # 200 steps take >= 4 s:
        time.sleep(0.02)  # the other load surely ends first, even on a loaded machine
        return real_step(self, group, chunks)

    monkeypatch.setattr(Runner, "step", slow_step)
    with Engine(host, EngineConfig(max_loaded_adapters=1, max_running=4)) as eng:
        busy = eng.submit(make_request(PROMPTS[0], "team/a", max_tokens=200))
        next(iter(busy))
        other = eng.submit(make_request(PROMPTS[0], "team/b", max_tokens=3)).result(timeout=60)
        assert other.adapter == "team/b@1.0.0"
        assert not busy.done and "team/a@1.0.0" in host.loaded()  # in use: never evicted
        busy.cancel()
        busy.result(timeout=60)
        eng.submit(make_request(PROMPTS[0], "team/p", max_tokens=3)).result(timeout=60)
        assert len(host.loaded()) == 1 and eng.stats()["adapter_evictions"] >= 1


def test_loads_do_not_stop_decoding(registry: Registry) -> None:
    """While a cold adapter is pulled and verified, running rows keep getting tokens."""
    host = _fresh_host()
    gate = threading.Event()
    real_prepare = host.prepare

    def slow_prepare(*args, **kwargs):  # type: ignore[no-untyped-def]
        gate.wait(30)
        return real_prepare(*args, **kwargs)

    host.prepare = slow_prepare  # type: ignore[method-assign]
    with Engine(host) as eng:
        running = eng.submit(make_request(PROMPTS[0], None, max_tokens=30))
        cold = eng.submit(make_request(PROMPTS[0], "team/a", max_tokens=3))
        got = 0
        for delta in running:
            got += len(delta.token_ids)
        assert got == 30 and not cold.done  # the whole request ran while the load was held
        gate.set()
        assert cold.result(timeout=60).adapter == "team/a@1.0.0"


def test_close_returns_while_a_cold_fetch_hangs(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 requests wait on one cold adapter whose fetch never returns (a dead registry):
    close() still returns within a bound, every request ends, and the loader threads
    (one fetching, one following it) are left as daemons that cannot block the exit."""
    release = threading.Event()
    fetching = threading.Event()
    real_fetch = Registry.fetch

    def hung_fetch(self: Registry, ref: str, *args: object, **kwargs: object) -> object:
        fetching.set()
        release.wait(120)
        return real_fetch(self, ref, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Registry, "fetch", hung_fetch)
    eng = Engine(_fresh_host())
    try:
        handles = [eng.submit(make_request(PROMPTS[0], "team/a", max_tokens=4)) for _ in range(6)]
        handles += [eng.submit(make_request(PROMPTS[0], "team/a@1.0.0", max_tokens=4)) for _ in range(2)]
        assert fetching.wait(30)
        assert eng.stats()["queue_depth"] == 8
        t0 = time.monotonic()
        eng.close()
        took = time.monotonic() - t0
        assert took < 10, f"close() took {took:.1f} s"
        for h in handles:
            assert h.done
            assert h.result(timeout=0).finish_reason == "cancelled"
        loaders = [t for t in threading.enumerate() if t.name.startswith("adapterhub-load")]
        assert all(t.daemon for t in loaders)
        assert eng.stats()["queue_depth"] == 0
    finally:
        release.set()


def test_a_moved_tag_is_picked_up_in_the_background(registry: Registry, adapter_dirs: dict[str, Path]) -> None:
    host = _fresh_host()
    with Engine(host, EngineConfig(resolve_ttl_s=0.05)) as eng:
        assert eng.submit(make_request(PROMPTS[0], "team/a", max_tokens=2)).result(timeout=60).adapter == "team/a@1.0.0"
        registry.push(adapter_dirs["prefix"], "team/a", version="2.0.0")
        time.sleep(0.1)
        served = []
        deadline = time.time() + 30
        while time.time() < deadline:
            served.append(eng.submit(make_request(PROMPTS[0], "team/a", max_tokens=2)).result(timeout=60).adapter)
            if served[-1] == "team/a@2.0.0":
                break
        # The stale resolution kept serving (no request waited for the registry) until
        # the background refresh had loaded the new version.
        assert served[0] == "team/a@1.0.0" and served[-1] == "team/a@2.0.0"


def test_short_fresh_prompts_share_one_prefill_forward(host: AdapterHost, references: dict) -> None:
    eng = Engine(host, EngineConfig(max_prefill_tokens=512))
    try:
        with host.forward_lock:  # every request is queued before the first step
            names = [None, "lora", "prefix", "lora2", None, "sel"]
            handles = [eng.submit(make_request(PROMPTS[1], a, max_tokens=10)) for a in names]
            deadline = time.time() + 10
            while eng.stats()["queue_depth"] and time.time() < deadline:
                time.sleep(0.01)
        for h, a in zip(handles, names, strict=True):
            assert h.result(timeout=60).token_ids == references[(PROMPTS[1], a)]
        # Five mixed-batch rows left-padded into one forward; the selective one alone.
        assert eng.stats()["prefill_forwards"] == 2
    finally:
        eng.close()


def test_engine_load_unload_and_health(registry: Registry) -> None:
    host = _fresh_host()
    eng = Engine(host)
    try:
        assert eng.load("team/a") == "team/a@1.0.0" == eng.load("team/a@1.0.0")
        assert eng.stats()["adapter_loads"] == 1 and eng.healthy
        with pytest.raises(AdapterNotFoundError):
            eng.load("team/nope")
        h = eng.submit(make_request(PROMPTS[0], "team/a", max_tokens=3))
        first = next(iter(h))
        assert h.adapter == "team/a@1.0.0" and first.t >= h.submitted
        h.result(timeout=60)
        eng.unload("team/a@1.0.0")
        assert host.loaded() == []
    finally:
        eng.close()
    assert not eng.healthy


def test_async_batches_catch_up_in_one_piece(host: AdapterHost) -> None:
    with Engine(host) as eng:
        h = eng.submit(make_request(PROMPTS[0], "lora", max_tokens=8))
        h.result(timeout=60)  # everything is produced before the consumer starts

        async def consume() -> list[list[int]]:
            return [[t for d in batch for t in d.token_ids] async for batch in h.batches()]

        batches = asyncio.run(consume())
        assert len(batches) == 1 and len(batches[0]) == 8
        times = [d.t for d in h]
        assert times == sorted(times)


# --- prompt logprobs (echo) ----------------------------------------------------------------
def _reference_prompt_logprobs(host: AdapterHost, prompt: str, adapter: str | None) -> tuple[list[int], list[float]]:
    """A direct log_softmax over one plain forward of the whole prompt (``AdapterHost.logits``)."""
    ids = host.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = host.logits([prompt], [adapter or "<base>"], raw=True)[0]
    lp = torch.log_softmax(full.float(), dim=-1)
    return ids, [float(lp[p, ids[p + 1]]) for p in range(len(ids) - 1)]


@pytest.mark.parametrize("chunk", [None, 7])
def test_prompt_logprobs_equal_a_direct_forward_for_every_adapter_kind(host: AdapterHost, chunk: int | None) -> None:
    """Base, LoRA, prefix and selective rows, sharing prefill forwards (chunk None: fresh
    prompts batched together) or chunked 7 tokens at a time: every prompt token's logprob
    equals the log_softmax of a plain forward, to 1e-4, and the first is None."""
    prompts = [PROMPTS[1], PROMPTS[3]]
    with Engine(host, EngineConfig(max_prefill_tokens=chunk)) as eng:
        handles = [
            (p, a, eng.submit(make_request(p, a, raw=True, max_tokens=0, prompt_logprobs=2)))
            for p in prompts for a in (None, "lora", "prefix", "sel")
        ]
        for p, a, h in handles:
            c = h.result(timeout=60)
            ids, ref = _reference_prompt_logprobs(host, p, a)
            assert c.finish_reason == "length" and c.token_ids == [] and c.prompt_token_ids == ids
            assert c.prompt_logprobs is not None and c.prompt_logprobs[0].logprob is None
            assert [t.token_id for t in c.prompt_logprobs] == ids
            got = [t.logprob for t in c.prompt_logprobs[1:] if t.logprob is not None]
            assert max(abs(x - y) for x, y in zip(got, ref, strict=True)) < 1e-4, (a, chunk)
            assert abs(sum(got) - sum(ref)) < 1e-3
            assert all(len(t.top) == 2 and t.top[0][2] >= t.logprob - 1e-6 for t in c.prompt_logprobs[1:] if t.logprob is not None)
    # The adapters really change the scores (or the equality above proves nothing).
    sums = {a: sum(_reference_prompt_logprobs(host, prompts[0], a)[1]) for a in (None, "lora", "prefix", "sel")}
    assert len({round(v, 3) for v in sums.values()}) == 4, sums


def test_token_id_prompts_and_generation_after_scoring(host: AdapterHost, references: dict) -> None:
    ids = host.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    with Engine(host) as eng:
        c = eng.submit(make_request(ids, "lora", max_tokens=10, prompt_logprobs=0, logprobs=True)).result(timeout=60)
        # Token ids are the raw prompt: the same greedy tokens as the text sent raw.
        raw = eng.submit(make_request(PROMPTS[0], "lora", raw=True, max_tokens=10)).result(timeout=60)
        assert c.token_ids == raw.token_ids and c.prompt_token_ids == ids and len(c.prompt_logprobs or []) == len(ids)
        with pytest.raises(ConfigError, match="outside the vocabulary"):
            eng.submit(make_request([1, 2, 10**6], None, max_tokens=1))
