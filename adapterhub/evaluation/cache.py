"""Atomic JSON files and the base-model results cache.

Writes go to a process-unique temp file in the target directory, are fsynced and then
renamed over the target, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


CACHE_FORMAT = 1


class PredictionCache:
    """Base-model outputs keyed by everything that determines them.

    A key is the sha256 of a canonical JSON of (base fingerprint, task, split, split data
    hash, example count, generation settings, ...). Entries are small JSON files under
    ``paths.eval_cache_dir()``, written atomically; an unreadable or mismatching entry is
    a miss (and is rewritten), never an error: the cache only saves time.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from adapterhub.paths import eval_cache_dir

            root = eval_cache_dir()
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        import hashlib

        canonical = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"v{CACHE_FORMAT}" / key[:2] / f"{key}.json"

    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            obj = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(obj, dict) or obj.get("key") != key:
            return None
        return obj

    def get(self, key: str) -> list[str] | None:
        """Cached predictions for ``key``, or None."""
        obj = self._read(key)
        preds = obj.get("predictions") if obj else None
        if isinstance(preds, list) and all(isinstance(p, str) for p in preds):
            self.hits += 1
            return preds
        self.misses += 1
        return None

    def put(self, key: str, predictions: list[str], meta: dict[str, Any] | None = None) -> None:
        atomic_write_json(self.path(key), {"key": key, "predictions": list(predictions), "meta": meta or {}})

    def get_value(self, key: str) -> float | None:
        """A cached number (e.g. the base's perplexity on the general-text sample)."""
        obj = self._read(key)
        value = obj.get("value") if obj else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.hits += 1
            return float(value)
        self.misses += 1
        return None

    def put_value(self, key: str, value: float, meta: dict[str, Any] | None = None) -> None:
        atomic_write_json(self.path(key), {"key": key, "value": value, "meta": meta or {}})
