"""AdapterHost: loading, swapping, mixed batches, failed swaps, pool and versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapterhub.errors import AdapterUnloadedError, IncompatibleAdapterError
from adapterhub.host import BASE, AdapterHost
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.safeio import load_safetensors
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_llama

PROMPTS = ["hello there", "a much longer prompt that needs more padding", "short", "the movie was great"]


def _base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    model, _ = tiny_llama(seed=0)
    specs = {
        "lora-a": ("lora", {"r": 4, "alpha": 8, "target_modules": "all-linear"}, 1),
        "lora-b": ("lora", {"r": 2, "alpha": 2}, 2),
        "prefix-a": ("prefix-tuning", {"num_virtual_tokens": 5}, 3),
        "prefix-b": ("prefix-tuning", {"num_virtual_tokens": 3}, 4),
        "sel-a": ("layer-selective", {"layers": "1", "kinds": ["norm"]}, 5),
    }
    out: dict[str, Path] = {}
    for name, (method, cfg, seed) in specs.items():
        make_adapter(method, model, root / name, config=cfg, name=name, seed=seed, scale=0.3)
        out[name] = root / name
    return out


@pytest.fixture()
def host(adapters: dict[str, Path]) -> AdapterHost:
    h = AdapterHost(_base())
    for name, path in adapters.items():
        h.load(path, name=name)
    return h


def _alone(host: AdapterHost, prompt: str, adapter: str | None) -> torch.Tensor:
    return host.logits([prompt], [adapter or BASE])[0]


def test_every_kind_changes_outputs_and_base_stays_bit_identical(host: AdapterHost) -> None:
    before = {k: v.clone() for k, v in host.model.state_dict().items()}
    base = _alone(host, PROMPTS[0], None)
    for name in ("lora-a", "lora-b", "prefix-a", "prefix-b", "sel-a"):
        out = _alone(host, PROMPTS[0], name)
        assert out.shape == base.shape
        assert (out - base).abs().max() > 1e-4, f"{name} did not change the logits"
    after = host.model.state_dict()
    # Selective swaps write into base tensors during a request and must restore them.
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def test_mixed_batch_equals_each_row_alone(host: AdapterHost) -> None:
    rows = ["lora-a", "prefix-a", None, "lora-b", "sel-a", "prefix-b", "lora-a", None]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(rows))]
    mixed = host.logits(prompts, [r or BASE for r in rows])
    for p, r, got in zip(prompts, rows, mixed, strict=True):
        want = _alone(host, p, r)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-5, r


def test_generate_mixed_batch_matches_single_rows(host: AdapterHost) -> None:
    rows = ["lora-a", "prefix-a", None, "sel-a"]
    gens = host.generate(PROMPTS, [r or BASE for r in rows], max_new_tokens=6)
    for p, r, g in zip(PROMPTS, rows, gens, strict=True):
        single = host.generate([p], [r or BASE], max_new_tokens=6)[0]
        assert g.token_ids == single.token_ids
        assert g.adapter == (None if r is None else r)


def test_failed_swap_leaves_state_and_outputs_exactly(host: AdapterHost, adapters: dict[str, Path], tmp_path: Path) -> None:
    for name in ("lora-a", "prefix-a", "sel-a"):
        bad = tmp_path / f"bad-{name}"
        manifest_src = adapters[name]
        tensors = load_safetensors(manifest_src / "adapter.safetensors")
        last = sorted(tensors)[-1]
        tensors[last] = torch.zeros(tuple(s + 1 for s in tensors[last].shape))
        model, _ = tiny_llama(seed=0)
        from adapterhub.artifact import write_adapter
        from adapterhub.manifest import read_manifest

        m = read_manifest(manifest_src)
        write_adapter(bad, m.model_dump(exclude={"files"}), tensors)
        before = [_alone(host, PROMPTS[1], n) for n in (name, None)]
        pool_before = host.adapters()
        with pytest.raises(IncompatibleAdapterError):
            host.load(bad, name=name)  # replacing an existing name: must not half-apply
        after = [_alone(host, PROMPTS[1], n) for n in (name, None)]
        for b, a in zip(before, after, strict=True):
            assert torch.equal(b, a)
        assert host.adapters() == pool_before


def test_other_base_is_refused(adapters: dict[str, Path]) -> None:
    model, tok = tiny_llama(seed=1)  # same shapes, different weights
    h = AdapterHost(LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok))
    with pytest.raises(IncompatibleAdapterError, match="trained on base"):
        h.load(adapters["lora-a"])


def test_full_finetune_is_not_hot_swappable(tmp_path: Path) -> None:
    model, tok = tiny_llama(seed=0)
    make_adapter("full", model, tmp_path / "full", name="full")
    h = AdapterHost(LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok))
    with pytest.raises(IncompatibleAdapterError, match="cannot be hot-swapped"):
        h.load(tmp_path / "full")


def test_unload_and_unknown_adapter(host: AdapterHost) -> None:
    host.unload("lora-b")
    with pytest.raises(AdapterUnloadedError, match="lora-b"):
        host.generate(["x"], ["lora-b"], max_new_tokens=1)
    assert "lora-b" not in [a["name"] for a in host.adapters()]


def test_replacing_a_version_keeps_in_flight_requests_on_the_old_one(host: AdapterHost, adapters: dict[str, Path]) -> None:
    old_out = _alone(host, PROMPTS[0], "lora-a")
    pinned = host._pool.acquire(["lora-a"])  # a request in flight on the old version
    host.load(adapters["lora-b"], name="lora-a")  # replace the name with other weights
    assert pinned[0] is not None and pinned[0].resident and pinned[0].retired
    new_out = _alone(host, PROMPTS[0], "lora-a")
    assert not torch.equal(old_out, new_out)
    dropped = host._pool.release(pinned)
    assert dropped == [pinned[0]]
    host._drop(dropped)
    assert not pinned[0].resident


def test_lru_eviction_under_device_budget(adapters: dict[str, Path]) -> None:
    h = AdapterHost(_base())
    first = h.load(adapters["lora-a"], name="a")
    h.device_budget = None
    h._pool.device_budget_bytes = first.nbytes + 1  # room for one adapter
    want = _alone(h, PROMPTS[2], "a")
    h.load(adapters["lora-b"], name="b")
    states = {a["name"]: a["resident"] for a in h.adapters()}
    assert states == {"a": False, "b": True}
    got = _alone(h, PROMPTS[2], "a")  # made resident again on demand
    assert torch.equal(want, got)
    assert {a["name"]: a["resident"] for a in h.adapters()} == {"a": True, "b": False}


def test_generation_json_shape(host: AdapterHost) -> None:
    g = host.generate(["hi"], ["lora-a"], max_new_tokens=3)[0]
    d = json.loads(json.dumps(g.as_dict()))
    assert set(d) == {"prompt", "adapter", "completion", "token_ids"}
    assert len(d["token_ids"]) <= 3


@pytest.mark.parametrize("ref", ["", "a" * 300, "../../etc/passwd", "x\x00y", "/abs/path/that/does/not/exist"])
def test_bad_refs_are_typed_one_line_errors(ref: str) -> None:
    from adapterhub.errors import AdapterhubError

    h = AdapterHost(_base())
    with pytest.raises(AdapterhubError) as info:
        h.load(ref)
    assert "\n" not in str(info.value)
    assert h.adapters() == []


def _corrupt_copy(src: Path, dst: Path, at: int) -> None:
    """Copy an adapter directory and flip one byte of its weights; the manifest is kept."""
    import shutil

    shutil.copytree(src, dst)
    weights = dst / "adapter.safetensors"
    data = bytearray(weights.read_bytes())
    data[at % len(data)] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["data", "header"])
def test_corrupted_weights_fail_the_hash_after_staging_and_change_nothing(
    host: AdapterHost, adapters: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from adapterhub import artifact
    from adapterhub.errors import IntegrityError

    monkeypatch.setattr(artifact, "_ASYNC_HASH_BYTES", 0)  # hash on the helper thread, as for big adapters
    runtime = host._runtimes["lora"]
    staged: list[object] = []
    real_stage = runtime.stage  # type: ignore[attr-defined]

    def spy(plan: object) -> None:
        real_stage(plan)
        staged.append(dict(plan.extra))  # type: ignore[attr-defined]

    monkeypatch.setattr(runtime, "stage", spy)
    bad = tmp_path / "bad"
    # "data": a weight byte (parses fine, only the digest catches it); "header": a brace
    # of the JSON header (the parser would call it malformed; the digest names it corrupted).
    _corrupt_copy(adapters["lora-b"], bad, -5 if where == "data" else 8)
    before = {n: _alone(host, PROMPTS[0], n) for n in ("lora-a", "lora-b", None)}
    pool_before = host.adapters()

    def slots_available() -> int:  # free-listed slots + never-used slots under capacity
        return len(runtime._free) + runtime._capacity - runtime._high_water  # type: ignore[attr-defined]

    available = slots_available()
    with pytest.raises(IntegrityError, match="sha256 .* does not match"):
        host.load(bad, name="lora-b")
    if where == "data":
        assert staged and "staged" in staged[0]  # the copy really ran before the check failed
    for n, logits in before.items():
        assert torch.equal(_alone(host, PROMPTS[0], n), logits)
    assert host.adapters() == pool_before
    assert slots_available() == available  # the staged slot was handed back
    # Nothing leaked: the good adapter still loads, serves, and takes a free slot.
    host.load(adapters["lora-b"], name="lora-b2")
    assert torch.equal(_alone(host, PROMPTS[0], "lora-b2"), before["lora-b"])
