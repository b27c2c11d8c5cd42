"""Hostile-input generators and oracles for weights files, manifests and adapter dirs.

One engine drives both the Hypothesis tests (``tests/reliability/test_hostile_files.py``,
a few hundred cases per ``make test``) and the soak benchmark
(``benchmarks/soak_hostile.py``, tens of thousands): each generator takes a
``random.Random`` (Hypothesis supplies shrinkable ones) and returns ``(category, data)``;
each ``check_*`` function runs the real loader and raises :class:`ContractViolation` if
the contract breaks:

* the loader either accepts, or raises the typed error (``UnsafeFileError`` for weights,
  ``ManifestError`` for manifests, an ``ArtifactError`` for adapter directories) with a
  one-line message naming the file — never another exception type;
* what is accepted is exactly what the header declares (every tensor's bytes are the
  declared slice of the file);
* categories that are known-bad (truncated, trailing bytes, foreign formats, ...) are
  always refused, and known-good ones (valid files) always accepted.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import ArtifactError, ManifestError, UnsafeFileError
from adapterhub.manifest import MANIFEST_NAME, WEIGHTS_NAME, parse_manifest
from adapterhub.safeio import DTYPES, MAX_HEADER_BYTES, inspect_safetensors, load_safetensors_bytes

ACCEPT, REFUSE, EITHER = "accept", "refuse", "either"


class ContractViolation(AssertionError):
    """The loader broke its contract on a hostile input (a real bug)."""


# --- valid material ------------------------------------------------------------------------
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-ÄßΩ语"


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_NAME_CHARS) for _ in range(rng.randint(1, 24)))


def valid_header(rng: random.Random) -> tuple[dict[str, Any], int]:
    """A random well-formed header and the data length it needs."""
    header: dict[str, Any] = {}
    names = {_name(rng) for _ in range(rng.randint(0, 5))}
    offset = 0
    for name in rng.sample(sorted(names), len(names)):
        dtype = rng.choice(sorted(DTYPES))
        shape = [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
        size = DTYPES[dtype][1]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if rng.random() < 0.3:
        header["__metadata__"] = {_name(rng): _name(rng) for _ in range(rng.randint(0, 3))}
    return header, offset


def encode(header: Any, data: bytes, pad: int = 0, raw_header: bytes | None = None) -> bytes:
    hdr = raw_header if raw_header is not None else json.dumps(header, ensure_ascii=False).encode()
    hdr += b" " * pad  # trailing spaces inside the header are legal (alignment padding)
    return struct.pack("<Q", len(hdr)) + hdr + data


def valid_file(rng: random.Random) -> bytes:
    header, n = valid_header(rng)
    return encode(header, rng.randbytes(n), pad=rng.choice([0, 0, rng.randint(1, 16)]))


def _foreign(rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return b"version https://git-lfs.github.com/spec/v1\noid sha256:" + rng.randbytes(32).hex().encode() + b"\nsize 1234\n"
    if kind == 1:
        return pickle.dumps({"w": [rng.random() for _ in range(rng.randint(0, 8))]}, protocol=rng.randint(2, 5))
    if kind == 2:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        return buf.getvalue()
    if kind == 3:
        return b"<!DOCTYPE html><html><body>" + rng.randbytes(rng.randint(0, 40)) + b"</body></html>"
    if kind == 4:
        return b"GGUF" + rng.randbytes(rng.randint(0, 64))
    if kind == 5:
        return b"\x93NUMPY\x01\x00" + rng.randbytes(rng.randint(0, 64))
    return b"<html>" + rng.randbytes(rng.randint(0, 40))


# --- structural mutations of a header --------------------------------------------------------
_BAD_VALUES: list[Any] = [-1, 1.5, True, None, "3", [], [1, 2], {"a": 1}, 2**62, 2**64 + 1, -(2**63)]


def _mutate_header(rng: random.Random, header: dict[str, Any]) -> Any:
    tensors = [k for k in header if k != "__metadata__"]
    choice = rng.randrange(12)
    if choice == 0 or not tensors:
        return rng.choice([[], 1, "x", None, [header], {"__metadata__": {"a": rng.choice(_BAD_VALUES)}}])
    name = rng.choice(tensors)
    entry = header[name]
    if choice == 1:
        entry["dtype"] = rng.choice([rng.choice(sorted(DTYPES)), "F128", "f32", "", 4, None, "BOOL "])
    elif choice == 2:
        shape = entry["shape"]
        if shape and rng.random() < 0.5:
            shape[rng.randrange(len(shape))] = rng.choice(_BAD_VALUES + [rng.randint(5, 2**40)])
        else:
            shape.append(rng.choice(_BAD_VALUES + [0, 2, 7]))
    elif choice == 3:
        offs = entry["data_offsets"]
        offs[rng.randrange(2)] = rng.choice(_BAD_VALUES + [offs[0] - 1, offs[1] + 1, offs[1] + 4096])
    elif choice == 4:
        entry["data_offsets"] = list(reversed(entry["data_offsets"]))
    elif choice == 5 and len(tensors) > 1:
        other = header[rng.choice([t for t in tensors if t != name] or tensors)]
        entry["data_offsets"] = list(other["data_offsets"])
    elif choice == 6:
        del entry[rng.choice(sorted(entry))]
    elif choice == 7:
        entry[rng.choice(["extra", "dtype2", "offsets"])] = rng.choice(_BAD_VALUES)
    elif choice == 8:
        header[name] = rng.choice(_BAD_VALUES)
    elif choice == 9:
        header[rng.choice(["", "__metadata__", name + "x"])] = rng.choice([entry, {"k": 1}, "v", None])
    elif choice == 10:
        entry["shape"] = [2**20, 2**20, 2**20]  # numel 2^60 with a tiny span
    else:
        header[rng.choice(["", " ", "\x00", name * 50])] = header.pop(name)
    return header


def hostile_safetensors(rng: random.Random) -> tuple[str, str, bytes]:
    """``(category, expectation, bytes)`` for one hostile (or control) weights file."""
    roll = rng.randrange(11)
    base = valid_file(rng)
    if roll == 0:
        return "valid", ACCEPT, base
    if roll == 1:
        return "random_bytes", EITHER, rng.randbytes(rng.randint(0, 300))
    if roll == 2:
        return "truncated", REFUSE, base[: rng.randrange(len(base))]
    if roll == 3:
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        return "bit_flip", EITHER, bytes(data)
    if roll == 4:
        return "trailing_bytes", REFUSE, base + rng.randbytes(rng.randint(1, 64))
    if roll == 5:
        (n,) = struct.unpack("<Q", base[:8])
        new = rng.choice([0, 1, 2, n - 1, n + 1, n + 8, len(base), MAX_HEADER_BYTES + 1, 2**63, 2**64 - 1, rng.randrange(2**64)])
        if new == n:
            new = n + 1
        return "length_word", REFUSE, struct.pack("<Q", new) + base[8:]
    if roll == 6:
        (n,) = struct.unpack("<Q", base[:8])
        header = json.loads(base[8 : 8 + n])
        mutated = _mutate_header(rng, header)
        return "header_mutation", EITHER, encode(mutated, base[8 + n :])
    if roll == 7:
        return "foreign_format", REFUSE, _foreign(rng) + (rng.randbytes(rng.randint(0, 32)) if rng.random() < 0.5 else b"")
    if roll == 8:
        # Text-level damage json.dumps cannot produce: duplicate keys, deep nesting.
        (n,) = struct.unpack("<Q", base[:8])
        raw = base[8 : 8 + n].rstrip()
        if rng.random() < 0.5 and len(raw) > 2:
            dup = b'{"dup": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}, "dup": 1, ' + raw[1:]
            return "duplicate_key", REFUSE, encode(None, base[8 + n :], raw_header=dup)
        depth = rng.choice([64, 1000, 100_000])
        deep = b'{"deep": ' + b"[" * depth + b"]" * depth + b"}"
        return "deep_nesting", REFUSE, encode(None, b"", raw_header=deep)
    if roll == 9:
        # 2-4 non-empty F32 tensors, then one is moved: +gap leaves a hole, -4 overlaps.
        sizes = [4 * rng.randint(1, 4) for _ in range(rng.randint(2, 4))]
        header, offset = {}, 0
        for i, size in enumerate(sizes):
            header[f"t{i}"] = {"dtype": "F32", "shape": [size // 4], "data_offsets": [offset, offset + size]}
            offset += size
        victim = f"t{rng.randrange(1, len(sizes))}"
        delta = rng.choice([-4, rng.randint(1, 16)])
        b0, e0 = header[victim]["data_offsets"]
        header[victim]["data_offsets"] = [b0 + delta, e0 + delta]
        # Data covers the furthest declared end, so only the gap/overlap itself is wrong.
        end = max(v["data_offsets"][1] for v in header.values())
        return "gap_or_overlap", REFUSE, encode(header, rng.randbytes(max(offset, end)))
    header, _ = valid_header(rng)
    header["huge"] = {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 16]}
    return "huge_shape", REFUSE, encode(header, rng.randbytes(16))


# --- oracles -------------------------------------------------------------------------------------
def _one_line(msg: str, source: str, what: str) -> None:
    if "\n" in msg or "\r" in msg:
        raise ContractViolation(f"{what}: multi-line error: {msg!r}")
    if source not in msg:
        raise ContractViolation(f"{what}: error does not name the file {source!r}: {msg!r}")


def _declared(data: bytes) -> dict[str, Any]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    return dict(header)


def check_safetensors_bytes(data: bytes, expect: str = EITHER, source: str = "fuzz.safetensors") -> str:
    """Run the strict loader on ``data``; return ``"accepted"`` or the refusal reason."""
    try:
        tensors = load_safetensors_bytes(data, source)
    except UnsafeFileError as exc:
        _one_line(str(exc), source, "weights")
        if "safetensors refused it" in str(exc):
            # Our validation must be at least as strict as the library's own parser.
            raise ContractViolation(f"validation passed a file the safetensors library refuses: {exc}") from None
        if expect == ACCEPT:
            raise ContractViolation(f"valid file refused: {exc}") from None
        return _reason(str(exc))
    except Exception as exc:
        raise ContractViolation(f"untyped {exc.__class__.__name__} escaped: {exc}") from exc
    if expect == REFUSE:
        raise ContractViolation(f"known-bad file accepted ({len(data)} bytes, tensors {sorted(tensors)[:5]})")
    declared = _declared(data)
    if set(declared) != set(tensors):
        raise ContractViolation("accepted tensors differ from the header's names")
    (n,) = struct.unpack("<Q", data[:8])
    start = 8 + n
    for name, t in tensors.items():
        entry = declared[name]
        if list(t.shape) != entry["shape"] or t.dtype != DTYPES[entry["dtype"]][0]:
            raise ContractViolation(f"tensor {name!r}: shape/dtype differ from the header")
        b, e = entry["data_offsets"]
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        if raw != data[start + b : start + e]:
            raise ContractViolation(f"tensor {name!r}: bytes differ from the declared slice")
    return "accepted"


def check_safetensors_file(path: Path, data: bytes, expect: str = EITHER) -> str:
    """Same contract through the file-path reader (header-only inspect must agree)."""
    path.write_bytes(data)
    outcome = check_safetensors_bytes(data, expect, str(path))
    try:
        inspect_safetensors(path)
        inspected = "accepted"
    except UnsafeFileError as exc:
        _one_line(str(exc), str(path), "inspect")
        inspected = _reason(str(exc))
    except Exception as exc:
        raise ContractViolation(f"inspect: untyped {exc.__class__.__name__} escaped: {exc}") from exc
    if inspected != outcome:
        raise ContractViolation(f"inspect says {inspected!r} but load says {outcome!r}")
    return outcome


def _reason(msg: str) -> str:
    """A coarse reason label for statistics (the text after the file name)."""
    tail = msg.split("unsafe weights file: ", 1)[-1].split(": ", 1)[-1] if "unsafe weights file: " in msg else msg.split(": ", 1)[-1]
    words = [w for w in tail.replace("'", " ").split() if w.isalpha()][:3]
    return " ".join(words) or "other"


# --- manifests --------------------------------------------------------------------------------
def valid_manifest(rng: random.Random) -> dict[str, Any]:
    hexd = rng.randbytes(32).hex()
    return {
        "format_version": 1,
        "name": _name(rng),
        "version": rng.choice([None, "1.0.0", "2"]),
        "task": rng.choice([None, "summarize", "qa"]),
        "method": rng.choice(["lora", "prefix_tuning", "layer_select", "full"]),
        "method_kind": rng.choice(["reparameterization", "additive", "selective", "full"]),
        "method_config": {"r": rng.randint(1, 64)},
        "base": {
            "name": "tiny-random-llama", "architecture": "LlamaForCausalLM", "model_type": "llama",
            "weights_sha256": hexd, "num_parameters": rng.randint(0, 10**9), "dtype": "float32",
        },
        "files": [{"path": WEIGHTS_NAME, "size": rng.randint(0, 10**9), "sha256": hexd}],
        "metrics": {"qa": {"rougeL": rng.random()}},
    }


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [path] if path else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _leaves(v, path + (i,))
    return out


def _parent(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        obj = obj[key]
    return obj


def hostile_manifest(rng: random.Random) -> tuple[str, str, bytes]:
    obj = valid_manifest(rng)
    roll = rng.randrange(9)
    if roll == 0:
        return "valid", ACCEPT, json.dumps(obj).encode()
    if roll == 1:
        # Only the strict (extra="forbid") objects: method_config and metrics are free-form.
        holder = rng.choice([obj, obj["base"], obj["files"][0]])
        holder["unknown_" + _name(rng)] = 1
        return "unknown_field", REFUSE, json.dumps(obj).encode()
    if roll == 2:
        obj["format_version"] = rng.choice([0, 2, 99, "1", None, 1.0, 1.0001, -1, True])
        return "unknown_version", REFUSE, json.dumps(obj).encode()
    if roll == 3:
        key = rng.choice(["name", "method", "method_kind", "base", "files", "format_version"])
        del obj[key]
        return "missing_field", REFUSE, json.dumps(obj).encode()
    if roll == 4:
        path = rng.choice(_leaves(obj))
        _parent(obj, path)[path[-1]] = rng.choice(_BAD_VALUES + ["x" * rng.randint(300, 20_000)])
        return "bad_type", EITHER, json.dumps(obj).encode()
    if roll == 5:
        limits = {"name": 200, "description": 10_000, "version": 64, "task": 256}
        field = rng.choice(sorted(limits))
        obj[field] = "x" * rng.choice([limits[field] + 1, limits[field] + rng.randint(2, 100_000), 5 * 1024 * 1024])
        return "huge_string", REFUSE, json.dumps(obj).encode()
    raw = json.dumps(obj).encode()
    if roll == 6:
        return "truncated", REFUSE, raw[: rng.randrange(len(raw))]
    if roll == 7:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return "byte_noise", EITHER, bytes(data)
    return "random_bytes", EITHER, rng.randbytes(rng.randint(0, 200))


def check_manifest_bytes(data: bytes, expect: str = EITHER, source: str = "fuzz/manifest.json") -> str:
    try:
        m = parse_manifest(data, source)
    except ManifestError as exc:
        _one_line(str(exc), source, "manifest")
        if expect == ACCEPT:
            raise ContractViolation(f"valid manifest refused: {exc}") from None
        return "refused"
    except Exception as exc:
        raise ContractViolation(f"manifest: untyped {exc.__class__.__name__} escaped: {exc}") from exc
    if expect == REFUSE:
        raise ContractViolation(f"known-bad manifest accepted: {data[:200]!r}")
    if parse_manifest(m.to_json(), source) != m:
        raise ContractViolation("accepted manifest does not round-trip")
    return "accepted"


# --- whole adapter directories --------------------------------------------------------------------
def mutate_adapter_dir(rng: random.Random, directory: Path) -> tuple[str, bool]:
    """Damage an adapter directory in place; returns (category, must_be_refused)."""
    weights, manifest = directory / WEIGHTS_NAME, directory / MANIFEST_NAME
    data = weights.read_bytes()
    roll = rng.randrange(8)
    if roll == 0:
        weights.write_bytes(data[: rng.randrange(len(data))])
        return "truncated_weights", True
    if roll == 1:
        b = bytearray(data)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        weights.write_bytes(bytes(b))
        return "bit_flip_weights", True
    if roll == 2:
        weights.write_bytes(data + rng.randbytes(rng.randint(1, 32)))
        return "appended_weights", True
    if roll == 3:
        weights.write_bytes(_foreign(rng))
        return "foreign_weights", True
    if roll == 4:
        weights.unlink()
        return "missing_weights", True
    if roll == 5:
        outside = directory.parent / f"outside-{rng.randrange(10**9)}.safetensors"
        outside.write_bytes(data)
        weights.unlink()
        weights.symlink_to(outside)
        return "symlinked_weights", True
    if roll == 6:
        _, _, raw = hostile_manifest(rng)
        manifest.write_bytes(raw)
        return "hostile_manifest", False
    obj = json.loads(manifest.read_text())
    entry = obj["files"][0]
    entry[rng.choice(["size", "sha256"])] = rng.choice([entry["size"] + 1, max(0, entry["size"] - 1), "0" * 64, "f" * 64])
    manifest.write_text(json.dumps(obj))
    return "manifest_lies", True


def check_adapter_dir(directory: Path, must_refuse: bool, reader: Callable[[Path], Any]) -> str:
    try:
        reader(directory)
    except ArtifactError as exc:
        _one_line(str(exc), str(directory), "adapter")
        return exc.__class__.__name__
    except Exception as exc:
        raise ContractViolation(f"adapter: untyped {exc.__class__.__name__} escaped: {exc}") from exc
    if must_refuse:
        raise ContractViolation(f"damaged adapter was accepted: {directory}")
    return "accepted"
