"""Small output helpers shared by all ``adapterhub`` commands.

Rules every command follows: results go to stdout (``--json``: one JSON document, or
JSON lines, and nothing else); progress bars, warnings and plugin chatter go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any, TypeVar

T = TypeVar("T")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def _default(obj: Any) -> Any:
    # Paths, datetimes, enums, frozensets...: their string form is what a user expects.
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    dump = getattr(obj, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_default, ensure_ascii=False)


def print_json(obj: Any, file: IO[str] | None = None) -> None:
    """One JSON document on stdout (or ``file``)."""
    out = file or sys.stdout
    out.write(dumps(obj) + "\n")
    out.flush()


def print_json_line(obj: Any, file: IO[str] | None = None) -> None:
    """One compact JSON object per line (for streams of results)."""
    out = file or sys.stdout
    out.write(json.dumps(obj, default=_default, ensure_ascii=False) + "\n")
    out.flush()


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], max_width: int = 80) -> str:
    """Plain aligned columns; cells longer than ``max_width`` are cut with an ellipsis."""

    def cell(value: Any) -> str:
        text = "-" if value is None else ("yes" if value is True else "no" if value is False else str(value))
        text = " ".join(text.split())
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body]
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], file: IO[str] | None = None) -> None:
    (file or sys.stdout).write(format_table(headers, rows) + "\n")


def warn(message: str) -> None:
    """A one-line warning on stderr (never on stdout, which may carry JSON)."""
    print(f"adapterhub: warning: {message}", file=sys.stderr)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """A tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm  # imported lazily: most commands never need it

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
