"""CLI commands contributed by plugins (``adapterhub_register_commands``)."""

from __future__ import annotations

import argparse
from typing import Protocol, runtime_checkable


@runtime_checkable
class Command(Protocol):
    """One ``adapterhub <name>`` sub-command.

    ``configure`` adds arguments to the sub-parser; ``run`` executes and returns the
    process exit code. User errors are raised as ``AdapterhubError`` (the CLI prints
    them as one line); ``--json`` output goes to stdout with progress on stderr.
    """

    name: str
    help: str

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...
