"""The adapter artifact's manifest (``manifest.json``).

An adapter is a directory holding ``manifest.json`` and ``adapter.safetensors`` (a full
fine-tune holds a model directory's safetensors files instead). The manifest is versioned
by ``format_version``; unknown fields and unknown versions are refused so that an old
reader never half-understands a newer artifact.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from adapterhub.errors import ManifestError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "adapter.safetensors"
# A manifest is small; refusing huge files early avoids parsing hostile input.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Optional(_Strict):
    """A model whose fields added after format_version 1 was fixed (``_ADDED``) are left
    out of its JSON while unset: a manifest or report without them serialises byte for
    byte as before (its sha256 and signatures hold), and adapterhub releases that predate
    them, which refuse unknown fields, can still read it."""

    _ADDED: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_unset_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for key in self._ADDED:
            if key in out and out[key] in (None, {}, []):
                del out[key]
        return out


class MetricInterval(_Strict):
    """A metric's sample size and confidence interval, stored so that readers (the hub,
    ``show``) never recompute them. Bounds are on the metric's headline scale."""

    n: int = Field(ge=0)
    low: float | None = None
    high: float | None = None
    level: float = Field(default=0.95, gt=0, lt=1)
    method: str = Field(max_length=64)
    """``wilson`` (proportions), ``bootstrap`` (resampled examples, corpus score
    recomputed), ``paired-bootstrap`` (a difference on the same examples), ``none``."""
    resamples: int | None = Field(default=None, ge=1)
    seed: int | None = None


class FileEntry(_Strict):
    path: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class BaseFingerprint(_Strict):
    """Identity of the frozen base an adapter was trained on.

    ``weights_sha256`` is a content hash over the base's tensors (names, dtypes,
    shapes and bytes, in sorted name order), so a same-shaped but different base is
    detected. ``scope`` says whether it covers the whole state or only touched tensors.
    """

    name: str = Field(max_length=512)
    architecture: str = Field(max_length=256)
    model_type: str = Field(max_length=128)
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scope: Literal["full", "touched"] = "full"
    num_parameters: int = Field(ge=0)
    dtype: str = Field(max_length=32)


class Provenance(_Strict):
    task: str | None = Field(default=None, max_length=256)
    data_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    split_seed: int | None = None
    num_examples: int | None = Field(default=None, ge=0)
    steps: int = Field(default=0, ge=0)
    seed: int | None = None
    seconds: float | None = Field(default=None, ge=0)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    loss_curve: list[float] = Field(default_factory=list, max_length=100_000)


class ForgettingRow(_Optional):
    """One task and metric, base vs adapted on the same examples.

    Reports written before intervals have only the first six fields; ``flagged`` then
    meant a point drop over the threshold. With an interval, ``flagged`` is
    ``verdict == "forgotten"``: what a reader that only knows ``flagged`` should act on.
    """

    _ADDED = frozenset({"n", "ci_low", "ci_high", "verdict", "resolution"})

    task: str = Field(max_length=256)
    metric: str = Field(max_length=128)
    base: float
    adapted: float
    delta: float
    flagged: bool
    n: int | None = Field(default=None, ge=0)
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: Literal["forgotten", "unresolved", "kept"] | None = None
    """*forgotten*: the whole interval lies below −threshold; *unresolved*: it straddles
    −threshold; *kept*: it lies at or above it."""
    resolution: float | None = Field(default=None, ge=0)
    """The interval's half-width: at this ``n``, a change smaller than this many points
    cannot be told from no change."""


class ForgettingReport(_Optional):
    _ADDED = frozenset({"interval"})

    threshold: float
    rows: list[ForgettingRow] = Field(default_factory=list, max_length=10_000)
    perplexity_base: float | None = None
    perplexity_adapted: float | None = None
    generation: dict[str, Any] = Field(default_factory=dict)
    created: datetime | None = None
    interval: dict[str, Any] | None = None
    """How the rows' intervals were computed: method, level, resamples, seed."""


class Manifest(_Optional):
    _ADDED = frozenset({"intervals"})

    # strict: JSON ``true`` or ``1.0`` must not pass as version 1 (lax int coercion would).
    format_version: int = Field(strict=True)
    name: str = Field(min_length=1, max_length=200)
    version: str | None = Field(default=None, max_length=64)
    task: str | None = Field(default=None, max_length=256)
    method: str = Field(min_length=1, max_length=128)
    method_kind: Literal["reparameterization", "additive", "selective", "full"]
    method_config: dict[str, Any] = Field(default_factory=dict)
    base: BaseFingerprint
    files: list[FileEntry] = Field(min_length=1, max_length=10_000)
    trainable_parameters: int = Field(default=0, ge=0)
    provenance: Provenance = Field(default_factory=Provenance)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    intervals: dict[str, dict[str, MetricInterval]] = Field(default_factory=dict)
    """``intervals[task][metric]``: ``n`` and the 95 % interval of ``metrics[task][metric]``
    (absent in manifests written before intervals, and for metrics without one)."""
    forgetting: ForgettingReport | None = None
    description: str = Field(default="", max_length=10_000)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {v} (this adapterhub reads {FORMAT_VERSION})")
        return v

    @field_validator("files")
    @classmethod
    def _unique_plain_paths(cls, files: list[FileEntry]) -> list[FileEntry]:
        seen: set[str] = set()
        for f in files:
            # Files live flat in the adapter directory: no separators, no dot names.
            if "/" in f.path or "\\" in f.path or f.path in (".", "..") or "\x00" in f.path:
                raise ValueError(f"file path {f.path!r} must be a plain file name")
            if f.path in seen:
                raise ValueError(f"file {f.path!r} listed twice")
            seen.add(f.path)
        return files

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise ManifestError(f"manifest of {self.name!r} lists no file {path!r}")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def parse_manifest(data: bytes | str, source: str = MANIFEST_NAME) -> Manifest:
    """Parse and validate manifest bytes; every failure is one ManifestError line."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{source}: manifest is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES} byte cap")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{source}: manifest must be a JSON object")
    version = obj.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ManifestError(f"{source}: unsupported format_version {obj.get('format_version')!r} (expected {FORMAT_VERSION})")
    try:
        return Manifest.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ManifestError(f"{source}: invalid manifest at {loc}: {first['msg']} ({exc.error_count()} error(s))") from None


def read_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest.json (is this an adapter directory?)") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a directory") from None
    return parse_manifest(data, str(path))
