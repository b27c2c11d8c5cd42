"""Strict safetensors I/O: round trips, and every malformed file refused with one typed line."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from adapterhub.errors import ArtifactError, UnsafeFileError
from adapterhub.safeio import (
    MAX_HEADER_BYTES,
    all_finite,
    atomic_write_bytes,
    check_finite,
    inspect_safetensors,
    load_safetensors,
    load_safetensors_bytes,
    read_metadata,
    save_safetensors,
)


def raw_file(header: dict[str, object], data: bytes, pad_to: int | None = None) -> bytes:
    hdr = json.dumps(header).encode()
    if pad_to is not None:
        hdr += b" " * (pad_to - len(hdr))
    return struct.pack("<Q", len(hdr)) + hdr + data


def good_bytes() -> bytes:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]},
    }
    return raw_file(header, struct.pack("<ff", 1.5, -2.0) + struct.pack("<q", 7))


def refused(tmp_path: Path, content: bytes, name: str = "w.safetensors") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnsafeFileError) as info:
        load_safetensors(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    # inspect (header only) must refuse the same file, for the same reason.
    with pytest.raises(UnsafeFileError) as info2:
        inspect_safetensors(path)
    assert str(info2.value) == msg
    return msg


def test_round_trip_all_dtypes_and_metadata(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "i64": torch.arange(6).reshape(2, 3),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 7),
        "u8": torch.arange(4, dtype=torch.uint8),
    }
    path = tmp_path / "x.safetensors"
    size = save_safetensors(tensors, path, metadata={"format": "pt", "note": "hi"})
    assert size == path.stat().st_size
    loaded = load_safetensors(path)
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    info = inspect_safetensors(path)
    assert info["f32"].shape == (3, 4) and info["f32"].dtype == "F32" and info["f32"].nbytes == 48
    assert info["empty"].numel == 0
    assert read_metadata(path) == {"format": "pt", "note": "hi"}
    assert set(load_safetensors_bytes(path.read_bytes(), "mem")) == set(tensors)


def test_save_handles_shared_and_non_contiguous_tensors(tmp_path: Path) -> None:
    w = torch.randn(4, 6)
    tensors = {"w": w, "alias": w, "row": w[1], "t": w.t()}
    path = tmp_path / "s.safetensors"
    save_safetensors(tensors, path)
    loaded = load_safetensors(path)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v)


def test_bytearray_is_shared_and_bytes_are_copied(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(3, 5), "b": torch.randn(5).bfloat16(), "i": torch.arange(4)}
    path = tmp_path / "v.safetensors"
    save_safetensors(tensors, path)
    buf = bytearray(path.read_bytes())
    views = load_safetensors_bytes(buf, "mem")
    for k, v in tensors.items():
        assert views[k].dtype == v.dtype and torch.equal(views[k], v) and views[k].is_contiguous()
    views["w"][0, 0] = 42.0  # a view: the buffer changes with it
    assert torch.equal(load_safetensors_bytes(buf, "mem")["w"][0, 0], torch.tensor(42.0))
    frozen = path.read_bytes()
    copied = load_safetensors_bytes(frozen, "mem")
    copied["w"].zero_()  # immutable bytes are never written through
    assert frozen == path.read_bytes()


def test_misaligned_tensor_is_copied_not_viewed(tmp_path: Path) -> None:
    # A U8 of 1 byte first puts the F32 at data offset 1: not 4-byte aligned.
    header = {
        "u": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "f": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]},
    }
    content = raw_file(header, b"\x07" + struct.pack("<ff", 1.5, -2.0), pad_to=64)
    got = load_safetensors_bytes(bytearray(content), "mem")
    assert got["u"].tolist() == [7] and got["f"].tolist() == [1.5, -2.0]


def test_all_finite_is_exact() -> None:
    big = torch.full((4,), 3e38)  # finite values whose sum overflows to inf
    assert all_finite([big])
    assert all_finite([big, torch.full((3,), -3e38)])
    assert not all_finite([torch.tensor([1.0, float("inf")])])
    assert not all_finite([torch.tensor([float("inf"), float("-inf")])])
    assert not all_finite([torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)])
    assert not all_finite([torch.tensor([float("inf")], dtype=torch.float16)])
    assert all_finite([torch.randn(8, 8), torch.arange(3), torch.zeros(0)])
    transposed = torch.tensor([[1.0, float("nan")], [2.0, 3.0]]).t()
    assert not transposed.is_contiguous() and not all_finite([transposed])


def test_all_finite_over_views_of_one_buffer() -> None:
    flat = torch.randn(100)
    parts = [flat[0:30].view(5, 6), flat[30:70], flat[70:100].view(3, 10)]
    assert all_finite(parts)
    flat[75] = float("nan")
    assert not all_finite(parts)
    # A bad value *between* the views is not in any tensor: still finite (exact fallback).
    flat[75] = 0.0
    flat[31] = float("inf")
    assert all_finite([parts[0], parts[2]])
    # Huge but finite values that overflow the one-span sum fall back to exact tests.
    flat[31] = 0.0
    flat[:] = 3e38
    assert all_finite(parts)


def test_header_length_that_looks_like_pickle_magic_is_accepted(tmp_path: Path) -> None:
    # N = 640 is b"\x80\x02..." little-endian: a naive pickle sniff would refuse it.
    content = raw_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0\0\x80\x3f", pad_to=640)
    assert content[:2] == b"\x80\x02"
    path = tmp_path / "ok.safetensors"
    path.write_bytes(content)
    assert load_safetensors(path)["a"].item() == 1.0


def test_truncated_file(tmp_path: Path) -> None:
    data = good_bytes()
    msg = refused(tmp_path, data[:-3])
    assert "truncated" in msg
    assert "truncated" in refused(tmp_path, data[:5])
    assert "truncated" in refused(tmp_path, b"")


def test_header_past_end_of_file(tmp_path: Path) -> None:
    data = good_bytes()
    assert "past end of file" in refused(tmp_path, data[:20])
    assert "past end of file" in refused(tmp_path, struct.pack("<Q", 5000) + b"{}")


def test_header_over_cap(tmp_path: Path) -> None:
    msg = refused(tmp_path, struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" + b" " * 100)
    assert "cap" in msg


def test_overlapping_offsets(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    assert "overlap" in refused(tmp_path, raw_file(header, b"\0" * 12))


def test_gap_between_tensors(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
    }
    assert "gap" in refused(tmp_path, raw_file(header, b"\0" * 12))


def test_trailing_bytes(tmp_path: Path) -> None:
    assert "trailing" in refused(tmp_path, good_bytes() + b"junk")


def test_span_disagrees_with_shape(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    assert "needs 12" in refused(tmp_path, raw_file(header, b"\0" * 8))


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}, "dtype"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": [0, 2**64 + 1], "data_offsets": [0, 0]}, "too large"),
        ({"dtype": "F32", "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]}, "too large"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, "before begin"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, "data_offsets"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}, "exactly"),
        ([1, 2], "exactly"),
    ],
)
def test_bad_entries(tmp_path: Path, entry: object, needle: str) -> None:
    assert needle in refused(tmp_path, raw_file({"a": entry}, b"\0" * 4))


def test_bad_header_json(tmp_path: Path) -> None:
    def framed(hdr: bytes) -> bytes:
        return struct.pack("<Q", len(hdr)) + hdr

    assert "not valid JSON" in refused(tmp_path, framed(b"{not json"))
    assert "not valid JSON" in refused(tmp_path, framed(b'{"a": 1, "a": 2}'))  # duplicate key
    assert "not valid JSON" in refused(tmp_path, framed(b"{\xff\xfe}"))
    assert "start with" in refused(tmp_path, framed(b"[1, 2]"))
    assert "__metadata__" in refused(tmp_path, framed(b'{"__metadata__": {"k": 1}}'))
    deep = b"{\"a\":" + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "not valid JSON" in refused(tmp_path, framed(deep))  # RecursionError, caught


def test_lfs_pointer(tmp_path: Path) -> None:
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 1234\n"
    assert "git-LFS pointer" in refused(tmp_path, pointer)


def test_pickle_renamed_safetensors(tmp_path: Path) -> None:
    # A plain pickle payload (never unpickled here: we only write its bytes).
    blob = pickle.dumps({"weight": [1.0, 2.0]}, protocol=4)
    assert "pickle" in refused(tmp_path, blob)
    assert "pickle" in refused(tmp_path, pickle.dumps([1, 2, 3], protocol=2))


def test_torch_bin_renamed_safetensors(tmp_path: Path) -> None:
    # torch.save writes a zip archive (with a pickle inside); build the same shape of file.
    bin_path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(bin_path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        zf.writestr("archive/version", "3\n")
    msg = refused(tmp_path, bin_path.read_bytes())
    assert "zip" in msg and ".bin" in msg


def test_real_torch_save_file_is_refused(tmp_path: Path) -> None:
    bin_path = tmp_path / "real.bin"
    torch.save({"w": torch.ones(2)}, bin_path)
    assert "zip" in refused(tmp_path, bin_path.read_bytes())


def test_other_formats_named(tmp_path: Path) -> None:
    assert "HTML" in refused(tmp_path, b"<!DOCTYPE html><html><body>404</body></html>")
    assert "GGUF" in refused(tmp_path, b"GGUF" + b"\0" * 100)


def test_not_found_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFileError, match="not found"):
        load_safetensors(tmp_path / "missing.safetensors")
    with pytest.raises(UnsafeFileError, match="directory"):
        load_safetensors(tmp_path)


def test_atomic_write_leaves_no_temp_and_keeps_old_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"

    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_save_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a torch.Tensor"):
        save_safetensors({"a": [1, 2]}, tmp_path / "x.safetensors")  # type: ignore[dict-item]
    with pytest.raises(ArtifactError, match="metadata"):
        save_safetensors({"a": torch.ones(1)}, tmp_path / "x.safetensors", metadata={"k": 1})  # type: ignore[dict-item]
    assert not any(tmp_path.iterdir())


def test_check_finite() -> None:
    check_finite({"a": torch.ones(3), "i": torch.arange(3)}, "src")
    with pytest.raises(ArtifactError, match=r"src: tensor 'b' has 1 non-finite value\(s\) \(NaN\)"):
        check_finite({"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}, "src")
    with pytest.raises(ArtifactError, match="Inf"):
        check_finite({"c": torch.tensor([float("inf")]).bfloat16()}, "src")


def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    # Opening a FIFO for reading blocks until a writer appears; keep a writer open.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(UnsafeFileError, match="not a regular file"):
            load_safetensors(fifo)
    finally:
        os.close(fd)


ENTRIES: list[object] = [
    {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    {"dtype": "BF16", "shape": [], "data_offsets": [8, 10]},
    {"dtype": "F32", "shape": [0, 5], "data_offsets": [4, 4]},
    {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]},
    {"dtype": "F32", "shape": [True, 3], "data_offsets": [0, 12]},
    {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]},
    {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]},
    {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},
    {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]},
    {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]},
    {"dtype": "F32", "shape": [2], "data_offsets": [0, False]},
    {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]},
    {"dtype": None, "shape": [2], "data_offsets": [0, 8]},
    {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "extra": 1},
    {"dtype": "F32", "shape": [2], "offsets": [0, 8]},
    {"dtype": "F32", "shape": [1] * 17, "data_offsets": [0, 4]},
    {"dtype": "U8", "shape": [2**40, 2**40, 0], "data_offsets": [0, 0]},
    ["dtype", "shape", "data_offsets"],
]


@pytest.mark.parametrize("entry", ENTRIES)
def test_fast_header_path_agrees_with_the_checked_one(entry: object) -> None:
    from adapterhub.safeio import _checked_entry, _fast_entry

    fast = _fast_entry("t", entry)
    try:
        checked = _checked_entry("t", entry, "src")
    except UnsafeFileError:
        assert fast is None
    else:
        assert fast == checked
    assert _fast_entry("", entry) is None
