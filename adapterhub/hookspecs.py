"""The adapterhub hook specifications (pluggy project name ``adapterhub``).

Hooks *find* things: each registration hook receives a ``register`` callback and calls
it once per object the plugin contributes. The registered objects *do* the work and
implement the protocols in :mod:`adapterhub.protocols`. The plugin manager calls every
plugin's registration hooks in isolation, so a plugin that raises is recorded as failed
and the others still register.

A plugin is any module (or object) with functions decorated by :data:`hookimpl`,
exposed under the entry-point group ``adapterhub``::

    [project.entry-points.adapterhub]
    ia3 = "adapterhub_ia3.plugin"

Built-ins are listed in ``adapterhub.defaults.DEFAULT_PLUGINS`` and loaded through the
same path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from adapterhub.protocols import (
        BaseModelSource,
        Command,
        Evaluator,
        Method,
        StoreFactory,
        TaskPack,
    )

PROJECT = "adapterhub"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class AdapterhubSpec:
    """Namespace of hook specifications (added to the plugin manager by the factory)."""

    @hookspec
    def adapterhub_register_methods(self, register: Callable[[Method], None]) -> None:
        """Register PEFT methods (objects implementing ``Method``).

        Method names are unique across all plugins; a duplicate is an error naming both
        plugins.
        """

    @hookspec
    def adapterhub_register_evaluators(self, register: Callable[[Evaluator], None]) -> None:
        """Register evaluators (objects implementing ``Evaluator``) by their ``name``."""

    @hookspec
    def adapterhub_register_stores(self, register: Callable[[str, StoreFactory], None]) -> None:
        """Register store factories by URL scheme: ``register("s3", factory)``.

        ``factory(url)`` returns an object implementing ``Store``.
        """

    @hookspec
    def adapterhub_register_tasks(self, register: Callable[[TaskPack], None]) -> None:
        """Register task packs (objects implementing ``TaskPack``) by their ``name``."""

    @hookspec
    def adapterhub_register_base_models(self, register: Callable[[BaseModelSource], None]) -> None:
        """Register base-model aliases (objects implementing ``BaseModelSource``)."""

    @hookspec
    def adapterhub_register_commands(self, register: Callable[[Command], None]) -> None:
        """Register ``adapterhub`` CLI sub-commands (objects implementing ``Command``)."""

    @hookspec(firstresult=True)
    def adapterhub_resolve_base_model(self, spec: str) -> BaseModelSource | None:
        """Who knows this base model? Return a source for ``spec`` or ``None``.

        Called only when ``spec`` is neither a registered alias nor a local directory,
        so a plugin can claim whole families of ids (e.g. ``org/*``). The first
        non-``None`` answer wins.
        """
