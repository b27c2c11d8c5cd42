"""Hostile weights files, manifests and adapter directories (Hypothesis, a few hundred cases).

Contract under test (see ``adapterhub.testing.hostile``): every input is either accepted
exactly as declared or refused with the typed error in one line naming the file; known-bad
inputs are always refused and valid controls always accepted. The soak version with
>= 10,000 cases is ``benchmarks/soak_hostile.py``.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.artifact import read_adapter, write_adapter
from adapterhub.manifest import BaseFingerprint
from adapterhub.testing import hostile

# No example database (nothing written into the repo), no deadline (2 shared cores make
# per-example timings noisy); each case is still milliseconds.
FUZZ = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="adapterhub-hostile-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    hostile.check_safetensors_bytes(data)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_engine_weights_files(rng: random.Random) -> None:
    category, expect, data = hostile.hostile_safetensors(rng)
    hostile.check_safetensors_bytes(data, expect, source=f"{category}.safetensors")


@settings(max_examples=40, deadline=None, database=None)
@given(st.randoms(use_true_random=False))
def test_engine_weights_files_via_path(scratch: Path, rng: random.Random) -> None:
    category, expect, data = hostile.hostile_safetensors(rng)
    hostile.check_safetensors_file(scratch / f"{category}.safetensors", data, expect)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3"]) | st.text(max_size=5),
        "shape": st.lists(st.integers(-2, 5) | st.integers(2**62, 2**65), max_size=3) | _json,
        "data_offsets": st.lists(st.integers(-2, 80), min_size=0, max_size=3) | _json,
    }
)


@FUZZ
@given(st.dictionaries(st.text(max_size=10), _entry | _json, max_size=4), st.binary(max_size=80))
def test_structured_headers(header: dict[str, object], data: bytes) -> None:
    """Headers that are JSON-valid but structurally anything, over arbitrary data."""
    hostile.check_safetensors_bytes(hostile.encode(header, data))


@FUZZ
@given(st.integers(0, 2**64 - 1), st.binary(max_size=64))
def test_any_length_word(n: int, tail: bytes) -> None:
    hostile.check_safetensors_bytes(struct.pack("<Q", n) + tail)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_engine_manifests(rng: random.Random) -> None:
    category, expect, data = hostile.hostile_manifest(rng)
    hostile.check_manifest_bytes(data, expect, source=f"{category}/manifest.json")


@FUZZ
@given(_json)
def test_arbitrary_json_manifests(obj: object) -> None:
    hostile.check_manifest_bytes(json.dumps(obj).encode())


@pytest.fixture(scope="module")
def pristine_adapter(scratch: Path) -> Path:
    # The base fingerprint plays no part here; a literal one keeps transformers unimported.
    base = BaseFingerprint(name="tiny", architecture="LlamaForCausalLM", model_type="llama", weights_sha256="ab" * 32, num_parameters=1, dtype="float32")
    out = scratch / "pristine"
    write_adapter(
        out,
        {"name": "fuzz", "method": "lora", "method_kind": "reparameterization", "base": base},
        {"layer.lora_A": torch.randn(4, 16), "layer.lora_B": torch.randn(16, 4)},
    )
    return out


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False))
def test_damaged_adapter_directories(scratch: Path, pristine_adapter: Path, rng: random.Random) -> None:
    case = Path(tempfile.mkdtemp(dir=scratch))
    try:
        target = case / "adapter"
        shutil.copytree(pristine_adapter, target)
        category, must_refuse = hostile.mutate_adapter_dir(rng, target)
        hostile.check_adapter_dir(target, must_refuse, read_adapter)
    finally:
        shutil.rmtree(case, ignore_errors=True)


def test_pristine_adapter_reads(pristine_adapter: Path) -> None:
    assert hostile.check_adapter_dir(pristine_adapter, False, read_adapter) == "accepted"
