"""Shared CLI output helpers: aligned tables, JSON that never breaks on odd values."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from adapterhub.cli.output import dumps, format_table, print_json_line


class _Cfg(BaseModel):
    r: int = 4


def test_table_aligns_formats_and_cuts_long_cells() -> None:
    text = format_table(("name", "ok", "note"), [("a", True, None), ("longer-name", False, "x" * 100)])
    lines = text.splitlines()
    assert lines[0] == "NAME         OK   NOTE"
    assert lines[1] == "a            yes  -"
    assert lines[2].startswith("longer-name  no   xxx") and lines[2].endswith("…") and len(lines[2]) == 13 + 5 + 80


def test_table_collapses_newlines_in_cells() -> None:
    assert format_table(("e",), [("line one\nline two",)]).splitlines()[1] == "line one line two"


def test_json_serialises_paths_sets_datetimes_and_pydantic_models() -> None:
    obj = {"p": Path("/x/y"), "s": {"b", "a"}, "t": (1, 2), "d": datetime(2024, 1, 2, tzinfo=timezone.utc), "c": _Cfg(), "u": "é"}
    assert json.loads(dumps(obj)) == {"p": "/x/y", "s": ["a", "b"], "t": [1, 2], "d": "2024-01-02 00:00:00+00:00", "c": {"r": 4}, "u": "é"}
    buf = io.StringIO()
    print_json_line({"a": 1}, file=buf)
    print_json_line({"b": 2}, file=buf)
    assert buf.getvalue() == '{"a": 1}\n{"b": 2}\n'
