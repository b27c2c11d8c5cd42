"""Server logs for ``adapterhub serve`` and ``adapterhub hub``: one setup, two formats.

Every module logs through ``logging.getLogger(__name__)`` (so ``adapterhub.serving.engine``,
``adapterhub.registry.hub.api``...). Structured fields travel in ``extra={"fields": {...}}``:
the text format appends them as ``key=value``, the JSON format (one object per line, for
log shippers) merges them into the object. uvicorn's own loggers are routed through the
same handler so an operator reads one stream in one format.

What a log line may hold is a rule, not a habit: a key's or token's *name*, never the
secret; never a prompt or a completion unless the operator passed ``--log-prompts``
(:data:`LOG_PROMPTS`). Tests capture records and check both.

Standard library only: the CLI imports this at start-up, before pydantic or torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

LOG_PROMPTS = False
"""Set by ``--log-prompts``: request logs may then carry prompt and completion text."""

_HANDLER_NAME = "adapterhub-server"


def add_log_options(parser: argparse.ArgumentParser, *, prompts: bool = False) -> None:
    """``--log-level`` / ``--log-format`` (and ``--log-prompts`` for servers that see prompts)."""
    group = parser.add_argument_group("logs (stderr)")
    group.add_argument("--log-level", default="info", choices=LEVELS, help="least severe level written [default: info]")
    group.add_argument("--log-format", default="text", choices=FORMATS,
                       help="text: one readable line per event; json: one JSON object per line [default: text]")
    if prompts:
        group.add_argument("--log-prompts", action="store_true",
                           help="also log prompt and completion text (off by default: they may be private)")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    extra = getattr(record, "fields", None)
    return dict(extra) if isinstance(extra, dict) else {}


def _plain(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # A value with spaces or quotes is quoted, so a line still splits into key=value pairs.
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n\t')) else text


class TextFormatter(logging.Formatter):
    """``2026-12-07T23:21:41.123Z INFO adapterhub.serving.http message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [stamp, record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={_plain(v)}" for k, v in fields_of(record).items() if v is not None]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the fields, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created, "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        for k, v in fields_of(record).items():
            out.setdefault(k, v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"invalid --log-format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at each record, not the one at setup (a test
    harness swaps it, and a stream closed since must not break later logging)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "info", fmt: str = "text", *, prompts: bool = False, stream: Any = None) -> logging.Handler:
    """Route ``adapterhub.*`` and ``uvicorn.*`` logs to one stderr handler in ``fmt``.

    Idempotent: a second call replaces the handler this module installed, never another
    one (a test's capture handler, an embedding application's). Records still propagate
    to the root logger, which has no handler in a server process.
    """
    global LOG_PROMPTS
    if level not in LEVELS:
        raise ValueError(f"invalid --log-level {level!r}: expected one of {', '.join(LEVELS)}")
    LOG_PROMPTS = prompts
    handler: logging.StreamHandler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()  # type: ignore[type-arg]
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(fmt))
    for name in ("adapterhub", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        if name == "uvicorn.error":
            continue  # propagates to "uvicorn"
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        # uvicorn's own config (log_config=None keeps it off) would stop propagation;
        # we leave it on so a root handler (pytest's capture) still sees every record.
        logger.propagate = name == "adapterhub"
    # Our own access lines (request id, key name, adapter, timings) replace uvicorn's,
    # which know none of these.
    logging.getLogger("uvicorn.access").disabled = True
    return handler

