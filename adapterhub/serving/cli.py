"""``adapterhub generate`` and ``adapterhub chat``: the serving engine from the command line.

Both commands load the base and the named adapters once, then run every prompt through
one :class:`~adapterhub.serving.Engine`, so the command line samples, stops and streams
exactly as a served request does (greedy output equals ``AdapterHost.generate``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from adapterhub.errors import ConfigError, DataError
from adapterhub.hookspecs import hookimpl
from adapterhub.refs import is_base_word
from adapterhub.serving.options import engine_config

if TYPE_CHECKING:
    from adapterhub.host.host import AdapterHost
    from adapterhub.protocols.command import Command
    from adapterhub.serving.engine import Engine
    from adapterhub.serving.handle import RequestHandle

# Sampling field -> the flag that sets it, so an invalid value names what the user typed.
_FLAGS = {
    "temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "seed": "--seed",
    "stop": "--stop", "max_tokens": "--max-new-tokens",
}


def _host(args: argparse.Namespace) -> AdapterHost:
    from adapterhub.host import AdapterHost  # lazily: torch is slow to import
    from adapterhub.serving.options import adapter_budget_bytes

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("invalid --threads: must be >= 1")
        import torch

        torch.set_num_threads(args.threads)

    return AdapterHost(args.base, device=args.device, registry_url=args.registry, device_budget_bytes=adapter_budget_bytes(args))


def _add_common(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument("--base", default="smollm2-135m-instruct", help="base model alias, directory or HF id")
    parser.add_argument("--registry", default=None, metavar="URL", help="registry that adapter refs are pulled from (default: local)")
    parser.add_argument("--raw", action="store_true", help="do not apply the chat template")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--max-new-tokens", "--max-tokens", dest="max_new_tokens", type=int, default=max_new_tokens,
                        help=f"tokens to generate at most (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; higher samples more freely")
    parser.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set of tokens with this much probability")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the K most likely tokens (0: no cut)")
    parser.add_argument("--seed", type=int, default=None, help="sampler seed of every request: same seed, same output")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="end the completion before TEXT (repeatable)")
    from adapterhub.serving.options import add_engine_options

    add_engine_options(parser)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's sampling settings from the flags, checked before the base model loads."""
    from adapterhub.serving.request import make_request  # pydantic only, no torch

    params: dict[str, Any] = {
        "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed,
        "stop": tuple(args.stop), "max_tokens": args.max_new_tokens,
    }
    try:
        if args.max_new_tokens < 1:  # the engine takes 0 (score the prompt only); generating needs one
            raise ConfigError("invalid max_tokens: must be at least 1")
        make_request("", None, **params)
    except ConfigError as exc:
        field, sep, reason = str(exc).removeprefix("invalid ").partition(":")
        flag = _FLAGS.get(field)
        raise ConfigError(f"invalid {flag}:{reason}" if sep and flag else str(exc)) from None
    return params


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


def _label(host: AdapterHost, name: str | None) -> str:
    return host.entry(name).label if name is not None else "base"


def _stream(handle: RequestHandle, out: TextIO) -> str:
    """Write each delta as it arrives; returns the whole text. The line is always ended,
    so an error raised mid-stream is printed below the partial reply, not glued to it."""
    parts: list[str] = []
    try:
        for delta in handle:
            if delta.text:
                parts.append(delta.text)
                out.write(delta.text)
                out.flush()
    finally:
        out.write("\n")
        out.flush()
    return "".join(parts)


class GenerateCommand:
    name = "generate"
    help = "generation on a base model (greedy or sampled), with one adapter or a mixed batch"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("prompts", nargs="*", help="prompts (one adapter for all)")
        parser.add_argument("--adapter", action="append", default=[], help="adapter dir or registry ref (repeatable with --batch)")
        parser.add_argument("--batch", help="JSONL file of {\"prompt\": ..., \"adapter\": ...} rows: one mixed batch")
        parser.add_argument("--json", action="store_true", help="one JSON object per prompt (JSON lines)")
        parser.add_argument("--stream", action="store_true", help="print the completion as it is generated (one PROMPT, no --json)")
        _add_common(parser, max_new_tokens=64)

    def run(self, args: argparse.Namespace) -> int:
        if bool(args.prompts) == bool(args.batch):
            raise DataError("give either PROMPT... or --batch FILE.jsonl")
        if args.prompts and len(args.adapter) > 1:
            raise DataError("with PROMPT... give at most one --adapter (use --batch for several)")
        # A stream of interleaved prompts or of JSON would be unreadable: one prompt only.
        if args.stream and (args.batch or args.json or len(args.prompts) != 1):
            raise DataError("--stream takes exactly one PROMPT (not --batch or --json)")
        # Validate the input before paying for loading the base model.
        sampling = _sampling(args)
        config = engine_config(args)
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
            one = host.load(args.adapter[0]).name if args.adapter else None
            rows = [one] * len(prompts)

        from adapterhub.serving import Engine, make_request

        requests = [make_request(p, a, raw=args.raw, **sampling) for p, a in zip(prompts, rows, strict=True)]
        with Engine(host, config) as engine:
            handles = [engine.submit(r) for r in requests]  # all decode together
            if args.stream:
                sys.stdout.write(f"[{_label(host, rows[0])}] {prompts[0]}\n  → ")
                _stream(handles[0], sys.stdout)
                return 0
            for prompt, handle in zip(prompts, handles, strict=True):
                c = handle.result()
                if args.json:
                    row = {"prompt": prompt, "adapter": c.adapter, "completion": c.text,
                           "token_ids": c.token_ids, "finish_reason": c.finish_reason}
                    print(json.dumps(row, ensure_ascii=False))
                else:
                    print(f"[{c.adapter or 'base'}] {prompt}\n  → {c.text}")
        return 0


CHAT_COMMANDS = (
    (":use NAME", "switch adapter: a loaded name, or a registry ref (loaded first); 'base' for the bare base; starts a new conversation"),
    (":adapters", "list the loaded adapters (* marks the one in use)"),
    (":load REF", "load an adapter directory or registry ref without switching to it"),
    (":reset", "forget the conversation and start a new one"),
    (":help", "list these commands"),
    (":quit", "leave the chat (also :exit, :q, or end of input)"),
)


class _Chat:
    """One chat session: the adapter in use and the conversation so far."""

    def __init__(self, engine: Engine, out: TextIO, adapter: str | None, sampling: dict[str, Any], raw: bool) -> None:
        self.engine = engine
        self.host = engine.host
        self.out = out
        self.adapter = adapter
        self.sampling = sampling
        self.raw = raw
        self.history: list[dict[str, str]] = []

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def reply(self, text: str) -> None:
        """Stream the answer to ``text``; the exchange joins the conversation once complete."""
        from adapterhub.errors import ContextLengthError
        from adapterhub.serving import make_request

        turn = [*self.history, {"role": "user", "content": text}]
        # Raw prompts have no chat template to carry earlier turns: each line stands alone.
        request = make_request(text if self.raw else turn, self.adapter, raw=self.raw, **self.sampling)
        try:
            handle = self.engine.submit(request)
        except ContextLengthError as exc:
            if not self.history:
                raise
            raise ContextLengthError(f"{exc}; :reset starts a new conversation") from None
        self.out.write(f"[{_label(self.host, self.adapter)}] ")
        try:
            answer = _stream(handle, self.out)
        except KeyboardInterrupt:
            # Ctrl-C stops this reply, not the session (as in a shell); the turn is dropped.
            handle.cancel()
            self.say("(cancelled)")
            return
        if not self.raw:
            self.history = [*turn, {"role": "assistant", "content": answer}]

    def command(self, cmd: str, arg: str) -> bool:
        """Run one ``:`` command; False ends the session."""
        if cmd in ("quit", "exit", "q"):
            return False
        if cmd == "help":
            for name, what in CHAT_COMMANDS:
                self.say(f"{name:<10} {what}")
        elif cmd == "adapters":
            pool = self.host.adapters()
            for a in pool:
                mark = "*" if a["name"] == self.adapter else " "
                self.say(f"{mark} {a['name']}@{a['version'] or '-'}  {a['method']}  {a['bytes']} bytes")
            if not pool:
                self.say("no adapters loaded (:load REF or :use REF adds one)")
        elif cmd == "use":
            if is_base_word(arg, self.host.base.name):
                self.adapter = None
            elif arg in self.host.loaded():
                self.adapter = arg
            else:
                self.adapter = self._load(arg).name  # a failure keeps the adapter in use
            self.history = []
            self.say(f"using {self.adapter or 'base'} (new conversation)")
        elif cmd == "load":
            self._load(arg)
        elif cmd == "reset":
            self.history = []
            self.say("new conversation")
        else:
            self.say(f"unknown command :{cmd} (:help lists the commands)")
        return True

    def _load(self, ref: str) -> Any:
        entry = self.host.load(ref)
        self.say(f"loaded {entry.label} ({entry.method.name}) in {entry.swap_ms:.1f} ms")
        return entry


def chat_loop(
    engine: Engine, stdin: TextIO, out: TextIO, *, adapter: str | None = None,
    sampling: dict[str, Any] | None = None, raw: bool = False,
) -> None:
    """Read lines from ``stdin``: a ``:`` command (``:help`` lists them) or a chat turn.

    Replies stream to ``out`` as they are generated. A bad command, a failed load or a
    failed request prints one ``error: ...`` line and the session goes on.
    """
    from adapterhub.errors import AdapterhubError

    chat = _Chat(engine, out, adapter, dict(sampling or {}), raw)
    for line in stdin:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        try:
            if not text.startswith(":"):
                chat.reply(text)
                continue
            cmd, _, arg = text[1:].partition(" ")
            if not chat.command(cmd, arg.strip()):
                return
        except AdapterhubError as exc:
            chat.say(f"error: {' '.join(str(exc).split())}")


class ChatCommand:
    name = "chat"
    help = "interactive multi-turn chat on stdin, streamed; ':use NAME' switches adapter live, ':help' lists commands"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--adapter", action="append", default=[], help="adapter dir or registry ref (repeatable; the first is used)")
        _add_common(parser, max_new_tokens=128)

    def run(self, args: argparse.Namespace) -> int:
        sampling = _sampling(args)
        config = engine_config(args)
        host = _host(args)
        first: str | None = None
        for ref in args.adapter:
            entry = host.load(ref)
            first = first or entry.name
        names = ", ".join(a["name"] for a in host.adapters()) or "none"
        print(f"chat on {host.base.name}; adapters: {names}; :help lists the commands, :quit leaves", file=sys.stderr)

        from adapterhub.serving import Engine

        with Engine(host, config) as engine:
            chat_loop(engine, sys.stdin, sys.stdout, adapter=first, sampling=sampling, raw=args.raw)
        return 0


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    register(GenerateCommand())
    register(ChatCommand())
