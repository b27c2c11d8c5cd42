"""``adapterhub generate`` and ``adapterhub chat``: the host from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from adapterhub.errors import DataError
from adapterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from adapterhub.protocols.command import Command


def _host(args: argparse.Namespace) -> Any:  # AdapterHost, imported lazily (torch is slow)
    from adapterhub.host import AdapterHost

    return AdapterHost(args.base, device=args.device, registry_url=getattr(args, "registry", None))


def _read_batch(path: str) -> tuple[list[str], list[str | None]]:
    prompts: list[str] = []
    adapters: list[str | None] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read batch file ({exc.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise DataError(f"{path}:{lineno}: each row needs a string 'prompt' (and optional 'adapter')")
        adapter = row.get("adapter")
        if adapter is not None and not isinstance(adapter, str):
            raise DataError(f"{path}:{lineno}: 'adapter' must be a string or null")
        prompts.append(row["prompt"])
        adapters.append(adapter)
    if not prompts:
        raise DataError(f"{path}: no prompts in batch file")
    return prompts, adapters


class GenerateCommand:
    name = "generate"
    help = "greedy generation on a base model, with one adapter or a mixed batch"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("prompts", nargs="*", help="prompts (one adapter for all)")
        parser.add_argument("--base", default="smollm2-135m-instruct", help="base model alias, directory or HF id")
        parser.add_argument("--adapter", action="append", default=[], help="adapter dir or registry ref (repeatable with --batch)")
        parser.add_argument("--batch", help="JSONL file of {\"prompt\": ..., \"adapter\": ...} rows: one mixed batch")
        parser.add_argument("--max-new-tokens", type=int, default=64)
        parser.add_argument("--raw", action="store_true", help="do not apply the chat template")
        parser.add_argument("--device", default=None)
        parser.add_argument("--json", action="store_true", help="one JSON object per prompt (JSON lines)")

    def run(self, args: argparse.Namespace) -> int:
        if bool(args.prompts) == bool(args.batch):
            raise DataError("give either PROMPT... or --batch FILE.jsonl")
        # Validate the input before paying for loading the base model.
        batch = _read_batch(args.batch) if args.batch else None
        host = _host(args)
        if batch is not None:
            prompts, refs = batch
            names: dict[str, str] = {}
            for ref in [*args.adapter, *(r for r in refs if r)]:
                if ref not in names:
                    names[ref] = host.load(ref).name
            rows: list[str | None] = [names[r] if r else None for r in refs]
        else:
            prompts = list(args.prompts)
            if len(args.adapter) > 1:
                raise DataError("with PROMPT... give at most one --adapter (use --batch for several)")
            one = host.load(args.adapter[0]).name if args.adapter else None
            rows = [one] * len(prompts)
        results = host.generate(prompts, rows, max_new_tokens=args.max_new_tokens, raw=args.raw)
        for r in results:
            if args.json:
                print(json.dumps(r.as_dict(), ensure_ascii=False))
            else:
                print(f"[{r.adapter or 'base'}] {r.prompt}\n  → {r.completion}")
        return 0


def chat_loop(host: Any, stdin: TextIO, out: Callable[[str], None], max_new_tokens: int, raw: bool) -> None:
    """Read prompts line by line; ``:use NAME``, ``:adapters``, ``:load REF``, ``:quit``.

    A bad command or an unloaded adapter prints one error line and the session goes on.
    """
    from adapterhub.errors import AdapterhubError
    from adapterhub.host import BASE

    current: str | None = host.default_adapter
    for line in stdin:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        try:
            if not text.startswith(":"):
                gen = host.generate([text], [current or BASE], max_new_tokens=max_new_tokens, raw=raw)[0]
                out(f"[{gen.adapter or 'base'}] {gen.completion}")
                continue
            cmd, _, arg = text[1:].partition(" ")
            arg = arg.strip()
            if cmd in ("quit", "exit", "q"):
                return
            if cmd == "adapters":
                for a in host.adapters():
                    mark = "*" if a["name"] == current else " "
                    out(f"{mark} {a['name']}@{a['version'] or '-'}  {a['method']}  {a['bytes']} bytes")
            elif cmd == "use":
                if arg in ("", "base", BASE):
                    current = None
                else:
                    host.entry(arg)  # raises AdapterUnloadedError naming the loaded adapters
                    current = arg
                out(f"using {current or 'base'}")
            elif cmd == "load":
                entry = host.load(arg)
                out(f"loaded {entry.label} ({entry.method.name}) in {entry.swap_ms:.1f} ms")
            else:
                out(f"unknown command :{cmd} (try :use NAME, :adapters, :load REF, :quit)")
        except AdapterhubError as exc:
            out(f"error: {exc}")


class ChatCommand:
    name = "chat"
    help = "interactive chat on stdin; ':use NAME' switches adapter live, ':adapters' lists the pool"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--base", default="smollm2-135m-instruct")
        parser.add_argument("--adapter", action="append", default=[], help="adapter dir or registry ref (repeatable)")
        parser.add_argument("--max-new-tokens", type=int, default=128)
        parser.add_argument("--raw", action="store_true")
        parser.add_argument("--device", default=None)

    def run(self, args: argparse.Namespace) -> int:
        host = _host(args)
        first: str | None = None
        for ref in args.adapter:
            entry = host.load(ref)
            first = first or entry.name
        host.default_adapter = first
        print(f"chat on {host.base.name}; adapters: {', '.join(a['name'] for a in host.adapters()) or 'none'}; :quit to leave", file=sys.stderr)

        def out(s: str) -> None:
            print(s, flush=True)

        chat_loop(host, sys.stdin, out, args.max_new_tokens, args.raw)
        return 0


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    register(GenerateCommand())
    register(ChatCommand())
