"""Strict safetensors I/O: the only way adapterhub deserialises weights.

Every byte of a weights file's structure is validated here *before* any tensor is
built, so hostile or damaged files fail with one :class:`~adapterhub.errors.UnsafeFileError`
line that names the file and the reason (never a Rust panic, a half-loaded dict, or a
multi-gigabyte allocation driven by a lying header). The tensors are then views into the
one buffer the file was read into (see ``_deserialize``); the ``safetensors`` library
writes files, and reads them only on big-endian hosts. Nothing here ever calls
``torch.load`` or unpickles anything.

The safetensors layout is::

    [8 bytes: little-endian u64 N][N bytes: JSON header][data region]

and the header maps ``name -> {"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the data region) plus an optional ``"__metadata__"`` object of str -> str.
We require what a well-formed writer produces: a dtype from a whitelist, non-negative
integer shapes, offsets that tile the data region exactly (sorted, contiguous, no gaps,
no overlaps, nothing past the end of the file, no trailing bytes) and a byte span per
tensor equal to ``numel * itemsize``.

Public API::

    inspect_safetensors(path) -> dict[str, TensorInfo]     # header only, no data read
    load_safetensors(path, device="cpu") -> dict[str, Tensor]
    load_safetensors_bytes(data, source) -> dict[str, Tensor]
    read_metadata(path) -> dict[str, str]
    save_safetensors(tensors, path, metadata=None)          # atomic
    atomic_write_bytes(path, data)                          # temp file + fsync + rename
    check_finite(tensors, source)                           # NaN/Inf -> ArtifactError
    all_finite(tensors.values()) -> bool                    # exact, one pass when possible
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import ArtifactError, UnsafeFileError

# The safetensors library itself refuses headers over 100 MB; matching it means every
# file we accept is one the library accepts too, and a lying length cannot make us
# allocate more than this before we know better.
MAX_HEADER_BYTES = 100_000_000
MAX_DIMS = 16
MAX_TENSORS = 1_000_000
MAX_INDEX = 2**63 - 1

# safetensors dtype tag -> (torch dtype, itemsize). Only dtypes torch can represent.
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "U16": (torch.uint16, 2),
    "I16": (torch.int16, 2),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "U32": (torch.uint32, 4),
    "I32": (torch.int32, 4),
    "F32": (torch.float32, 4),
    "U64": (torch.uint64, 8),
    "I64": (torch.int64, 8),
    "F64": (torch.float64, 8),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}
_TORCH_TO_TAG = {dt: tag for tag, (dt, _) in DTYPES.items()}

Buffer = bytes | bytearray | memoryview
"""What the in-memory reader takes: any bytes-like object of the whole file."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as declared by a validated header."""

    name: str
    dtype: str
    """safetensors dtype tag, e.g. ``"F32"``."""
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype][0]

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    data_len: int


# --- recognising things that are not safetensors --------------------------------------
def _sniff(prefix: bytes) -> str | None:
    """Name well-known non-safetensors formats from the first bytes, or ``None``."""
    if prefix.startswith(b"version https://git-lfs"):
        return "a git-LFS pointer file, not the weights (run `git lfs pull`, or download the real file)"
    if prefix.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch .bin/.pt checkpoint renamed .safetensors?); pickle-based files are never loaded"
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        return "a Python pickle (a PyTorch .bin/.pt file renamed .safetensors?); pickle files are never loaded"
    if prefix.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file, not safetensors"
    if prefix.startswith(b"GGUF"):
        return "a GGUF file, not safetensors"
    head = prefix.lstrip()[:15].lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml")):
        return "an HTML/XML document (an error page saved instead of the weights?)"
    return None


def _fail(source: str, reason: str) -> UnsafeFileError:
    # One line, always: a reason built from hostile JSON could carry newlines.
    return UnsafeFileError(f"{source}: unsafe weights file: {reason}".replace("\n", " ").replace("\r", " "))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() in C, then a length check: a header of 400 tensors calls this 400 times, and
    # a Python loop per object cost ~1.5 ms per adapter load.
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:80]!r}")
            seen.add(key)
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _plausible(prefix: bytes, file_size: int) -> bool:
    """Does this start like a safetensors file (sane length word, then '{')?"""
    if len(prefix) < 9 or file_size < 9:
        return False
    (n,) = struct.unpack("<Q", prefix[:8])
    return 2 <= n <= MAX_HEADER_BYTES and 8 + n <= file_size and prefix[8:9] == b"{"


def _checked_entry(name: str, entry: Any, source: str) -> TensorInfo:
    """One header entry, checked step by step to name what is wrong (UnsafeFileError)."""
    label = repr(name[:80])
    if not name:
        raise _fail(source, "empty tensor name")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _fail(source, f"tensor {label}: entry must be an object with exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _fail(source, f"tensor {label}: dtype {str(dtype)[:20]!r} is not one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
        raise _fail(source, f"tensor {label}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    # Even with a zero dimension (numel 0), every size must be representable: the
    # library parses dims as u64 and torch needs the product of the others in int64.
    if math.prod(max(d, 1) for d in shape) > MAX_INDEX:
        raise _fail(source, f"tensor {label}: shape {shape[:MAX_DIMS]} is too large to represent")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets):
        raise _fail(source, f"tensor {label}: data_offsets must be two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise _fail(source, f"tensor {label}: data_offsets end {end} is before begin {begin}")
    itemsize = DTYPES[dtype][1]
    expected = math.prod(shape) * itemsize
    if end - begin != expected:
        raise _fail(source, f"tensor {label}: spans {end - begin} bytes but {dtype}{shape} needs {expected}")
    return TensorInfo(name, dtype, tuple(shape), (begin, end))


def _fast_entry(name: str, entry: Any) -> TensorInfo | None:
    """The entry if it is well-formed, else None (then ``_checked_entry`` says why).

    The same rules as ``_checked_entry`` with exact type tests and no per-check
    generators: a 420-tensor header took ~1.9 ms through the step-by-step checks.
    """
    if not name or type(entry) is not dict or len(entry) != 3:
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if type(dtype) is not str:
        return None
    spec = DTYPES.get(dtype)
    if spec is None or type(shape) is not list or len(shape) > MAX_DIMS or type(offsets) is not list or len(offsets) != 2:
        return None
    numel = bound = 1
    for d in shape:
        if type(d) is not int or d < 0:  # type(True) is bool, so booleans fail here too
            return None
        numel *= d
        bound *= d or 1
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or begin < 0 or bound > MAX_INDEX:
        return None
    if end - begin != numel * spec[1]:
        return None
    return TensorInfo(name, dtype, tuple(shape), (begin, end))


def _parse_header(prefix: bytes, file_size: int, source: str) -> _Header:
    """Validate the length word and JSON header against the file's total size.

    ``prefix`` holds at least the first ``8 + N`` bytes (or the whole file if shorter).
    """
    if not _plausible(prefix, file_size):
        # Only now name foreign formats: a real header length can begin with bytes that
        # look like a pickle opcode (N = 640 starts with 0x80 0x02), so sniffing first
        # would misjudge valid files.
        sniffed = _sniff(prefix[:64])
        if sniffed is not None:
            raise _fail(source, f"this is {sniffed}")
    if file_size < 8:
        raise _fail(source, f"file is truncated: {file_size} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES:
        raise _fail(source, f"header length {n} is over the {MAX_HEADER_BYTES}-byte cap")
    if n < 2:
        raise _fail(source, f"header length {n} is too small for a JSON object")
    if 8 + n > file_size:
        raise _fail(source, f"header past end of file: declares {n} header bytes but only {file_size - 8} follow (truncated?)")
    raw = prefix[8 : 8 + n]
    if not raw.startswith(b"{"):
        raise _fail(source, "header does not start with '{'")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(source, f"header is not valid JSON ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise _fail(source, "header is not a JSON object")

    metadata: dict[str, str] = {}
    meta = obj.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise _fail(source, "__metadata__ must be an object of string -> string")
        metadata = meta
    if len(obj) > MAX_TENSORS:
        raise _fail(source, f"{len(obj)} tensors is over the {MAX_TENSORS} cap")

    tensors: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        tensors[name] = _fast_entry(name, entry) or _checked_entry(name, entry, source)

    # The offsets must tile [0, data_len) exactly: sorted, contiguous, no overlap.
    data_len = file_size - 8 - n
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.data_offsets, t.name)):
        begin, end = info.data_offsets
        if begin < cursor:
            raise _fail(source, f"tensor {info.name[:80]!r}: data_offsets [{begin}, {end}] overlap the previous tensor (ends at {cursor})")
        if begin > cursor:
            raise _fail(source, f"tensor {info.name[:80]!r}: gap of {begin - cursor} unreferenced bytes before it at offset {cursor}")
        cursor = end
    if cursor > data_len:
        raise _fail(source, f"file is truncated: tensors need {cursor} data bytes but only {data_len} are present")
    if cursor < data_len:
        raise _fail(source, f"{data_len - cursor} trailing bytes after the last tensor")
    return _Header(tensors, metadata, 8 + n, data_len)


def _open_regular(path: Path) -> tuple[Any, int]:
    source = str(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by callers
    except FileNotFoundError:
        raise UnsafeFileError(f"{source}: weights file not found") from None
    except IsADirectoryError:
        raise UnsafeFileError(f"{source}: is a directory, not a weights file") from None
    except OSError as exc:
        raise UnsafeFileError(f"{source}: cannot open ({exc.strerror})") from None
    st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode):
        fh.close()
        raise UnsafeFileError(f"{source}: not a regular file")
    return fh, st.st_size


def read_exactly(fh: Any, size: int) -> memoryview | None:
    """Read exactly ``size`` bytes into a new writable buffer; None if the file is shorter or longer.

    ``readinto`` an uninitialised (numpy) buffer: ``read()`` would copy once more and a
    ``bytearray`` would first zero-fill every page; for a 20 MB adapter each of those
    costs about as much as the read itself. The buffer is writable, so
    :func:`_deserialize` can share it with the tensors.
    """
    import numpy as np

    buf = np.empty(size, dtype=np.uint8).data  # a writable memoryview of the array
    got = 0
    while got < size:
        n = fh.readinto(buf[got:])
        if not n:
            return None
        got += n
    if fh.read(1):
        return None
    return buf


def _read_header_from(fh: Any, size: int, source: str) -> _Header:
    first = fh.read(min(size, 64))
    if _plausible(first, size):
        (n,) = struct.unpack("<Q", first[:8])
        if 8 + n > len(first):
            first += fh.read(8 + n - len(first))
    return _parse_header(first, size, source)


def inspect_safetensors(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Validate a file's structure and return its tensors' declarations (no data read)."""
    p = Path(path)
    fh, size = _open_regular(p)
    with fh:
        return dict(_read_header_from(fh, size, str(p)).tensors)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The validated ``__metadata__`` of a safetensors file."""
    p = Path(path)
    fh, size = _open_regular(p)
    with fh:
        return dict(_read_header_from(fh, size, str(p)).metadata)


def _deserialize(data: Buffer, header: _Header, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a validated file as views into one writable buffer.

    Why not ``safetensors.torch.load``: it copies every tensor out of the bytes, which for
    a 20 MB adapter of 420 tensors took ~4 ms of a ~12 ms verified read. The header has
    been validated (offsets tile the data region exactly, spans equal numel * itemsize),
    so every view lies inside the buffer. Read-only buffers (``bytes``) are copied once
    into a ``bytearray`` (torch tensors must be writable); a writable buffer is shared. A
    tensor whose start is not aligned to its item size is copied out instead of viewed.
    """
    if sys.byteorder != "little":  # safetensors is little-endian; let the library swap
        return _deserialize_with_library(bytes(data), header, source)
    writable = isinstance(data, bytearray) or (isinstance(data, memoryview) and not data.readonly)
    buf: bytearray | memoryview = data if writable else bytearray(data)  # type: ignore[assignment]
    start = header.data_start
    flats: dict[torch.dtype, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for name, info in header.tensors.items():
        dtype, itemsize = DTYPES[info.dtype]
        begin, end = info.data_offsets
        if begin == end:
            out[name] = torch.empty(info.shape, dtype=dtype)
            continue
        at = start + begin
        if at % itemsize:
            out[name] = torch.frombuffer(bytearray(buf[at : start + end]), dtype=dtype).view(info.shape)
            continue
        flat = flats.get(dtype)
        if flat is None:
            # The whole buffer reinterpreted from byte 0 (malloc-aligned): element k of
            # this view starts at byte k * itemsize.
            flat = flats[dtype] = torch.frombuffer(buf, dtype=dtype, count=len(buf) // itemsize)
        out[name] = flat.as_strided(info.shape, _contiguous_strides(info.shape), at // itemsize)
    return out


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return tuple(strides)


def _deserialize_with_library(data: bytes, header: _Header, source: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)
    except Exception as exc:  # our validation should make this unreachable; stay typed anyway
        raise _fail(source, f"safetensors refused it ({exc.__class__.__name__}: {str(exc)[:160]})") from None
    if set(tensors) != set(header.tensors):
        raise _fail(source, "safetensors returned different tensors than the header declares")
    return tensors


def load_safetensors_bytes(data: Buffer, source: str = "<bytes>") -> dict[str, torch.Tensor]:
    """Validate and deserialise an in-memory safetensors file (e.g. a verified blob).

    A writable buffer (``bytearray``, writable ``memoryview``) is shared: the tensors are
    views into it (no copy).
    """
    if isinstance(data, memoryview) and (data.ndim != 1 or data.itemsize != 1):
        data = data.cast("B")
    prefix = bytes(data[:64])
    if _plausible(prefix, len(data)):
        # Slice exactly the declared header: copying a fixed 100 MB window of a large
        # verified blob would be waste.
        (n,) = struct.unpack("<Q", prefix[:8])
        prefix = bytes(data[: 8 + n])
    header = _parse_header(prefix, len(data), source)
    return _deserialize(data, header, source)


def load_safetensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Validate then load every tensor of ``path`` (CPU first, then moved to ``device``)."""
    p = Path(path)
    source = str(p)
    fh, size = _open_regular(p)
    with fh:
        # Validate the header before reading the data region, so a lying file cannot make
        # us read gigabytes; then read exactly the declared size (the file may be changing
        # under us: a short read is truncation, extra bytes are trailing bytes).
        header = _read_header_from(fh, size, source)
        fh.seek(0)
        data = read_exactly(fh, size)
    if data is None:
        raise _fail(source, f"file changed while reading (not {size} bytes any more)")
    tensors = _deserialize(data, header, source)
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors


# --- writing -----------------------------------------------------------------------------
def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A process-unique temp name in the same directory (so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one.

    Temp file in the same directory, fsync, ``os.replace``, fsync the directory. On any
    failure (disk full, ...) the temp file is removed and the original stays intact.
    """
    p = Path(path)
    tmp = temp_path_for(p)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(p.parent)


def _owned(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no storage (safetensors refuses shared ones)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise ArtifactError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise ArtifactError(f"tensor {name!r} is a {type(t).__name__}, not a torch.Tensor")
        if t.dtype not in _TORCH_TO_TAG:
            raise ArtifactError(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot store")
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.nbytes:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def save_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Atomically write ``tensors`` as a safetensors file; returns its size in bytes."""
    from safetensors.torch import save as st_save

    meta = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ArtifactError(f"{path}: safetensors metadata must be str -> str")
    data = st_save(_owned(tensors), metadata=meta or None)
    atomic_write_bytes(path, data)
    return len(data)


# IEEE exponent masks: a value is NaN or +-Inf exactly when all exponent bits are set.
_EXPONENT = {
    torch.float16: (torch.int16, 0x7C00),
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float32: (torch.int32, 0x7F800000),
    torch.float64: (torch.int64, 0x7FF0000000000000),
}


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True if no floating tensor holds NaN or +-Inf (exact).

    Fast path: a sum is finite only if every summand is, so one finite sum proves a whole
    span clean. Tensors that are views of one buffer (what :func:`load_safetensors_bytes`
    returns) are summed as one flat span: one reduction for a 420-tensor adapter instead
    of 420 (0.4 ms instead of ~4 ms for 20 MB). A non-finite sum, i.e. a bad value or a
    legitimate overflow of huge values, falls back to the exact per-tensor bit test.
    """
    groups: dict[tuple[int, torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        if not t.is_floating_point() or t.numel() == 0:
            continue
        if t.is_contiguous():
            # The storage's start address, without building a storage object per tensor.
            start = t.data_ptr() - int(t.storage_offset()) * t.element_size()
            groups.setdefault((start, t.dtype, t.device), []).append(t)
        elif not _sum_or_exact_finite([t]):
            return False
    for group in groups.values():
        lo = min(t.storage_offset() for t in group)
        hi = max(t.storage_offset() + t.numel() for t in group)
        covered = sum(t.numel() for t in group)
        first = group[0]
        in_bounds = hi * first.element_size() <= first.untyped_storage().nbytes()
        if len(group) > 1 and hi - lo <= 2 * covered and in_bounds:
            # The span may include bytes between the tensors; a non-finite value there
            # only sends us to the exact test, never to a wrong answer.
            span = first.detach().as_strided((hi - lo,), (1,), lo)
            if _sum_is_finite(span):
                continue
        if not _sum_or_exact_finite(group):
            return False
    return True


def _sum_is_finite(t: torch.Tensor) -> bool:
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    return bool(torch.isfinite(t.sum(dtype=acc)))


def _sum_or_exact_finite(group: list[torch.Tensor]) -> bool:
    return all(_sum_is_finite(t) or _exactly_finite(t) for t in group)


def _exactly_finite(t: torch.Tensor) -> bool:
    """The exact test on the raw bits (every IEEE dtype, bf16 included; no mask tensor)."""
    spec = _EXPONENT.get(t.dtype)
    if spec is None or t.device.type != "cpu":
        return bool(torch.isfinite(t).all())
    int_dtype, mask = spec
    bits = t.detach().contiguous().view(int_dtype).numpy()
    return not bool(((bits & mask) == mask).any())


def check_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse NaN/Inf in floating tensors with one ArtifactError naming source and tensor."""
    if all_finite(tensors.values()):
        return
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
            raise ArtifactError(f"{source}: tensor {name!r} has {bad} non-finite value(s) ({kind})")
