"""Base fingerprints: same shapes + different weights detected; caches never go stale."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from adapterhub import fingerprint as fpmod
from adapterhub.errors import IncompatibleAdapterError
from adapterhub.fingerprint import check_compatible, fingerprint, hash_state, remember_source
from adapterhub.testing.models import save_model_dir, tiny_llama


def test_deterministic_and_seed_sensitive() -> None:
    a, _ = tiny_llama(seed=0)
    b, _ = tiny_llama(seed=0)
    c, _ = tiny_llama(seed=1)
    fa, fb, fc = fingerprint(a, "tiny"), fingerprint(b, "tiny"), fingerprint(c, "tiny")
    assert fa == fb
    assert fa.architecture == "LlamaForCausalLM" and fa.model_type == "llama" and fa.dtype == "float32"
    assert fa.num_parameters == sum(p.numel() for p in a.parameters())
    # Same architecture and shapes, different weights: detected.
    assert fc.weights_sha256 != fa.weights_sha256
    check_compatible(fa, fb)
    with pytest.raises(IncompatibleAdapterError, match="same architecture, different weights"):
        check_compatible(fa, fc)


def test_single_weight_change_detected_and_cache_invalidated() -> None:
    model, _ = tiny_llama()
    before = fingerprint(model, "tiny")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 7] += 1e-6  # in place: same data_ptr
    after = fingerprint(model, "tiny")
    assert after.weights_sha256 != before.weights_sha256
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 7] -= 1e-6
    # float round-off may or may not restore the exact bits; the hash must follow the bits.
    assert fingerprint(model, "tiny").weights_sha256 == hash_state(model.state_dict())


def test_optimizer_step_invalidates_cache() -> None:
    model, _ = tiny_llama()
    before = fingerprint(model, "tiny").weights_sha256
    p = model.model.norm.weight
    p.requires_grad_(True)
    opt = torch.optim.SGD([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    assert fingerprint(model, "tiny").weights_sha256 != before


def test_dtype_is_part_of_identity() -> None:
    f32, _ = tiny_llama()
    bf16, _ = tiny_llama(dtype=torch.bfloat16)
    a, b = fingerprint(f32, "tiny"), fingerprint(bf16, "tiny")
    assert b.dtype == "bfloat16" and a.weights_sha256 != b.weights_sha256
    with pytest.raises(IncompatibleAdapterError, match="load the base in float32"):
        check_compatible(a, b)


def test_architecture_mismatch_message_is_one_line() -> None:
    small, _ = tiny_llama()
    other, _ = tiny_llama(num_hidden_layers=3)
    fa = fingerprint(small, "tiny-random-llama")
    fo = fingerprint(other, "tiny-3-layers").model_copy(update={"architecture": "MistralForCausalLM"})
    with pytest.raises(IncompatibleAdapterError) as info:
        check_compatible(fa, fo, adapter="demo@1")
    msg = str(info.value)
    assert "\n" not in msg and "demo@1 was trained on 'tiny-random-llama'" in msg and "tiny-3-layers" in msg
    with pytest.raises(IncompatibleAdapterError, match="'touched'"):
        check_compatible(fa.model_copy(update={"scope": "touched"}), fa)


def test_memory_cache_avoids_rehash(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = tiny_llama()
    fingerprint(model, "tiny")
    calls = []
    monkeypatch.setattr(fpmod, "hash_state", lambda state: calls.append(1) or "0" * 64)
    fingerprint(model, "tiny")
    assert calls == []  # served from the per-object cache


def test_disk_cache_for_loaded_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTERHUB_MODEL_CACHE", str(tmp_path / "cache"))
    model, tok = tiny_llama()
    d = save_model_dir(model, tok, tmp_path / "m")
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    remember_source(loaded, d, torch.float32)
    first = fingerprint(loaded, "m")
    # Saved and reloaded weights hash the same as the in-memory model.
    assert first.weights_sha256 == fingerprint(model, "m").weights_sha256
    assert len(list((tmp_path / "cache" / "fingerprints").iterdir())) == 1

    again = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    remember_source(again, d, torch.float32)
    monkeypatch.setattr(fpmod, "hash_state", lambda state: (_ for _ in ()).throw(AssertionError("re-hashed")))
    assert fingerprint(again, "m") == first  # from disk, no hashing

    # Changing a weight after loading must not be answered from the disk cache.
    with torch.no_grad():
        again.model.norm.weight[0] = 5.0
    monkeypatch.undo()
    monkeypatch.setenv("ADAPTERHUB_MODEL_CACHE", str(tmp_path / "cache"))
    assert fingerprint(again, "m").weights_sha256 != first.weights_sha256

    # Rewriting the files changes the key (size/mtime): the stale record is not used.
    time.sleep(0.01)
    other, _ = tiny_llama(seed=5)
    save_model_dir(other, tok, d)
    third = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    remember_source(third, d, torch.float32)
    assert fingerprint(third, "m").weights_sha256 == fingerprint(other, "m").weights_sha256 != first.weights_sha256
