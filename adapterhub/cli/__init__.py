"""The ``adapterhub`` command line: one entry point, sub-commands contributed by plugins.

``main`` lives in :mod:`adapterhub.cli.main`; table/JSON helpers shared by every
command in :mod:`adapterhub.cli.output`; the core commands (``plugins``, ``install``,
``methods`` ...) are an ordinary built-in plugin, :mod:`adapterhub.cli.core_commands`.
"""

from __future__ import annotations

from adapterhub.cli.main import main

__all__ = ["main"]
