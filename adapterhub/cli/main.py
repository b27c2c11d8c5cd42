"""``adapterhub`` — the console script. Sub-commands come from the catalog (plugins).

Error contract: an :class:`~adapterhub.errors.AdapterhubError` prints
``adapterhub: error: <one line>`` on stderr and exits 1 (``-v`` adds the traceback);
Ctrl-C exits 130; argparse usage errors exit 2. A command whose ``configure`` raises
does not break the CLI: invoking it gives a one-line error, every other command works.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from adapterhub import __version__
from adapterhub.errors import AdapterhubError, PluginLoadError

PROG = "adapterhub"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _err(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def _leading_options(argv: Sequence[str]) -> list[str]:
    """Options before the sub-command (``adapterhub -v plugins`` → ``["-v"]``)."""
    out: list[str] = []
    for tok in argv:
        if not tok.startswith("-"):
            break
        out.append(tok)
    return out


def _first_command(argv: Sequence[str]) -> str | None:
    return next((tok for tok in argv if not tok.startswith("-")), None)


class _BrokenCommand:
    """Stands in for a plugin command whose ``configure`` raised."""

    def __init__(self, name: str, owner: str, error: str) -> None:
        self.name = name
        self.help = f"(unavailable: plugin {owner!r} is broken)"
        self._message = f"command {name!r} of plugin {owner!r} is unavailable: {error}"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(self, args: argparse.Namespace) -> int:
        raise PluginLoadError(self._message)


class _Parser(argparse.ArgumentParser):
    """Adds a hint to "invalid choice" when plugins failed: the command may be theirs."""

    failed_plugins = 0

    def error(self, message: str) -> NoReturn:
        if self.failed_plugins and "invalid choice" in message:
            message += f" ({self.failed_plugins} plugin(s) failed to load: see `adapterhub plugins`)"
        super().error(message)


def build_parser(
    commands: dict[str, object],
    owners: dict[str, str] | None = None,
    strict: bool = False,
    failed_plugins: int = 0,
    only: str | None = None,
) -> argparse.ArgumentParser:
    """The argparse tree for ``commands`` (name → ``Command``).

    With ``only`` (the command about to run, a known name), the other commands get no
    sub-parser: argparse parses one sub-command, and building and configuring some 30
    of them costs more start-up than a quick command is worth. Strict mode still
    configures every command, so a broken ``configure`` stays fatal there.
    """
    from adapterhub.pluginmanager import describe_error

    parser = _Parser(
        prog=PROG,
        description="Train, evaluate, store and hot-swap PEFT adapters on one frozen base model.",
        epilog="Plugins add commands; `adapterhub plugins` lists what is loaded.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    parser.failed_plugins = failed_plugins
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(commands):
        cmd = commands[name]
        if only is not None and name != only and not strict:
            continue  # never parsed; top-level usage shows COMMAND, not the list
        try:
            # Configure a scratch parser first so a raising configure() cannot leave a
            # half-built sub-parser behind.
            cmd.configure(argparse.ArgumentParser(prog=f"{PROG} {name}", add_help=False))  # type: ignore[attr-defined]
        except Exception as exc:
            owner = (owners or {}).get(name, "?")
            if strict:
                raise PluginLoadError(f"command {name!r} of plugin {owner!r} failed to configure: {describe_error(exc)}") from exc
            cmd = _BrokenCommand(name, owner, describe_error(exc))
        help_text = str(getattr(cmd, "help", ""))
        sp = sub.add_parser(name, help=help_text, description=help_text)
        cmd.configure(sp)  # type: ignore[attr-defined]
        sp.set_defaults(_command=cmd)
    return parser


def _run(argv: list[str]) -> int:
    if "--version" in _leading_options(argv):  # answer without loading any plugin
        print(f"{PROG} {__version__}")
        return 0
    from adapterhub.catalog import get_catalog

    try:
        cat = get_catalog()
        commands: dict[str, object] = dict(cat.commands)
        owners = {n: cat.owner("commands", n) for n in commands}
        strict = cat.pm.strict
        failed = len(cat.failed)
    except AdapterhubError:
        # Strict mode and a broken plugin: keep `install`/`uninstall` usable so the
        # user can repair the environment; everything else reports the error.
        from adapterhub.cli.core_commands import rescue_commands

        rescue = {c.name: c for c in rescue_commands()}
        if _first_command(argv) not in rescue:
            raise
        commands, owners, strict, failed = dict(rescue), {}, False, 0

    # Top-level help (or no/unknown command) configures every command: its listing
    # marks the broken ones as unavailable.
    lead = _leading_options(argv)
    first = _first_command(argv)
    only = first if first in commands and not ({"-h", "--help"} & set(lead)) else None
    parser = build_parser(commands, owners, strict=strict, failed_plugins=failed, only=only)
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    cmd = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return 0
    rc = cmd.run(args)
    return int(rc or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    lead = _leading_options(args)
    verbose = "-v" in lead or "--verbose" in lead
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `adapterhub plugins | head`: the reader left; exit quietly, and stop Python
        # from complaining again when it flushes stdout at shutdown.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_ERROR
    except AdapterhubError as err:
        if verbose:
            traceback.print_exc()
        _err(str(err))
        return EXIT_ERROR
    except Exception as err:  # a bug (ours or a plugin's): still one line unless -v
        if verbose:
            traceback.print_exc()
        _err(f"unexpected {type(err).__name__}: {err} (rerun with -v for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":  # python -m adapterhub.cli.main
    sys.exit(main())
