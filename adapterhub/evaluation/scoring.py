"""Scoring texts without a model: evaluator lookup, prediction/reference files, options.

This is what ``adapterhub score`` runs, kept import-light (no torch, no transformers)
so that scoring 10 000 lines costs what the metric library costs plus file reading.

File formats (chosen by extension unless ``fmt`` says otherwise):

* text (any extension but ``.jsonl``/``.json``): one example per line, UTF-8; a final
  newline does not start an extra example, an empty line is an empty example, ``\\r\\n``
  endings are accepted. Only ``\\n`` separates lines (text may contain other Unicode
  line separators).
* JSONL (``.jsonl``/``.json``): one JSON value per line: a string (one text), a list of
  strings (several references), or an object with ``prediction`` / ``references`` /
  ``reference`` keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from adapterhub.errors import ConfigError, DataError, EvaluationError

if TYPE_CHECKING:
    from adapterhub.protocols.evaluator import EvalResult, Evaluator

FileFormat = Literal["auto", "text", "jsonl"]
MAX_FILE_BYTES = 2 * 1024**3  # refuse absurd inputs before reading them into memory


def resolve_evaluator(spec: str) -> tuple[Evaluator, dict[str, Any]]:
    """``"rouge"`` → (rouge evaluator, {}); ``"evaluate:meteor"`` → (bridge, {"metric": "meteor"}).

    The part after the first colon becomes the evaluator's ``metric`` option, so any
    plugin evaluator can take a sub-name the same way.
    """
    from adapterhub.catalog import get_catalog

    name, sep, arg = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"empty evaluator name in {spec!r}")
    evaluator = get_catalog().evaluator(name)
    options: dict[str, Any] = {}
    if sep:
        if not arg:
            raise ConfigError(f"evaluator spec {spec!r} has nothing after the colon (e.g. evaluate:meteor)")
        options["metric"] = arg
    return evaluator, options


def parse_option_values(pairs: Sequence[str]) -> dict[str, Any]:
    """``["tokenize=intl", "use_stemmer=true", "rouge_types=rouge1,rougeL"]`` → typed dict.

    Values are read as JSON when they parse (``true``, ``3``, ``["a"]``), as a list when
    they contain a comma, and as a plain string otherwise.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"option {pair!r} is not key=value")
        value: Any
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = [v.strip() for v in raw.split(",")] if "," in raw else raw
        out[key] = value
    return out


def _detect(path: Path, fmt: FileFormat) -> Literal["text", "jsonl"]:
    if fmt != "auto":
        return fmt
    return "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "text"


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES} byte limit")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _lines(text: str) -> list[str]:
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" not in text:  # the common case: no per-line work
        return lines
    # \r\n files: drop the \r the split leaves behind (only at line ends).
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _json_rows(path: Path, text: str) -> list[Any]:
    rows: list[Any] = []
    for lineno, line in enumerate(_lines(text), 1):
        if not line.strip():
            raise DataError(f"{path}:{lineno}: empty line in a JSONL file (write \"\" for an empty text)")
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    return rows


def read_predictions(path: str | Path, fmt: FileFormat = "auto") -> list[str]:
    """Predictions, one per example (see module docs for the formats)."""
    p = Path(path)
    text = _read_text(p)
    if _detect(p, fmt) == "text":
        return _lines(text)
    out: list[str] = []
    for lineno, row in enumerate(_json_rows(p, text), 1):
        if isinstance(row, dict):
            row = row.get("prediction")
        if not isinstance(row, str):
            raise DataError(f"{p}:{lineno}: expected a JSON string or {{\"prediction\": \"...\"}}")
        out.append(row)
    return out


def read_references(path: str | Path, fmt: FileFormat = "auto") -> list[Sequence[str]]:
    """References per example: a tuple of one or more strings each."""
    p = Path(path)
    text = _read_text(p)
    if _detect(p, fmt) == "text":
        return [(line,) for line in _lines(text)]
    out: list[Sequence[str]] = []
    for lineno, row in enumerate(_json_rows(p, text), 1):
        if isinstance(row, dict):
            row = row.get("references", row.get("reference"))
        if isinstance(row, str):
            out.append((row,))
        elif isinstance(row, list) and row and all(isinstance(r, str) for r in row):
            out.append(tuple(row))
        else:
            raise DataError(f"{p}:{lineno}: expected a string or a non-empty list of strings as references")
    return out


def score_texts(
    metric: str,
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    options: Mapping[str, Any] | None = None,
) -> EvalResult:
    """Score with the evaluator ``metric`` (``rouge``, ``bleu``, ``evaluate:meteor``...)."""
    evaluator, opts = resolve_evaluator(metric)
    if getattr(evaluator, "needs_model", False):
        raise EvaluationError(
            f"evaluator {evaluator.name!r} needs a model; use `adapterhub eval --base B --tasks ...` instead of `score`"
        )
    opts.update(options or {})
    return evaluator.score(predictions, references, None, **opts)


def score_files(
    metric: str,
    predictions: str | Path,
    references: str | Path,
    options: Mapping[str, Any] | None = None,
    fmt: FileFormat = "auto",
) -> EvalResult:
    """Read both files, check they line up, and score them."""
    preds = read_predictions(predictions, fmt)
    refs = read_references(references, fmt)
    if len(preds) != len(refs):
        raise DataError(f"{predictions} has {len(preds)} examples but {references} has {len(refs)}")
    if not preds:
        raise DataError(f"{predictions}: no examples to score (the file is empty)")
    return score_texts(metric, preds, refs, options)
