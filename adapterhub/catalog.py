"""The catalog: the in-memory index of everything plugins registered, and who registered it.

("Registry" always means adapter storage in adapterhub; this is the *catalog*.)

The catalog calls each plugin's registration hookimpls **one plugin at a time**, with a
``register`` callback bound to that plugin, so it knows the owner of every name and a
plugin that raises only fails itself. A plugin's registrations are staged and committed
together: a plugin that fails halfway (raises, registers a malformed object, or takes a
name another plugin already has) contributes nothing, is unregistered from the plugin
manager and is listed as ``failed``. Duplicate names are never silently renamed: the
first registrant (built-ins load first) keeps the name and the error names both plugins;
in strict mode (``ADAPTERHUB_STRICT_PLUGINS=1``) the error is raised.

Building the catalog must stay cheap (every command does it): a method registered as a
:class:`~adapterhub.lazy.LazyMethod` is checked here for what it declares (name, kind,
capabilities); its config class and implementation are imported and checked on first
use, and a broken one then raises ``PluginLoadError`` naming the method and the plugin.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapterhub.errors import AdapterhubError, BaseModelError, DuplicateNameError, UnknownNameError
from adapterhub.lazy import LazyMethod
from adapterhub.pluginmanager import (
    AdapterhubPluginManager,
    PluginRecord,
    build_plugin_manager,
    describe_error,
    plugin_output_to_stderr,
)

if TYPE_CHECKING:  # the protocols import torch; the catalog must not
    from adapterhub.protocols import (
        BaseModelSource,
        Command,
        Evaluator,
        Method,
        StoreFactory,
        TaskPack,
    )

# kind → (registration hook, singular label, callables every registered object must have)
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "methods": ("adapterhub_register_methods", "method", ("attach", "validate", "load", "runtime")),
    "evaluators": ("adapterhub_register_evaluators", "evaluator", ("score",)),
    "tasks": ("adapterhub_register_tasks", "task", ("load", "data_hash")),
    "base_models": ("adapterhub_register_base_models", "base model", ("available", "local_dir")),
    "stores": ("adapterhub_register_stores", "store scheme", ()),
    "commands": ("adapterhub_register_commands", "command", ("configure", "run")),
}
METHOD_KINDS = ("reparameterization", "additive", "selective", "full")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")


class _Staged:
    """One plugin's registrations, committed only if the whole plugin succeeds."""

    def __init__(self, catalog: Catalog, record: PluginRecord) -> None:
        self.catalog = catalog
        self.record = record
        self.items: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, name: Any, obj: Any) -> None:
        label = KINDS[kind][1]
        if not isinstance(name, str) or not name:
            raise TypeError(f"plugin {self.record.name!r} registered a {label} without a string name: {obj!r}")
        owner = self.catalog._owners.get((kind, name))
        if owner is not None:
            raise DuplicateNameError(
                f"{label} {name!r} is registered by both {owner!r} and {self.record.name!r} "
                f"(names are never renamed; uninstall or disable one of them)"
            )
        if name in self.items[kind]:
            raise DuplicateNameError(f"{label} {name!r} is registered twice by plugin {self.record.name!r}")
        self.items[kind][name] = obj

    def callback(self, kind: str) -> Callable[..., None]:
        required = KINDS[kind][2]
        label = KINDS[kind][1]

        def _check(obj: Any) -> None:
            missing = [m for m in required if not callable(getattr(obj, m, None))]
            if missing:
                name = getattr(obj, "name", obj)
                raise TypeError(f"{label} {name!r} from plugin {self.record.name!r} lacks {', '.join(missing)}()")

        if kind == "stores":

            def register_store(scheme: str, factory: StoreFactory) -> None:
                if not isinstance(scheme, str) or not _SCHEME.match(scheme):
                    raise ValueError(f"store scheme {scheme!r} from plugin {self.record.name!r} is not a URL scheme")
                if not callable(factory):
                    raise TypeError(f"store factory for {scheme!r} from plugin {self.record.name!r} is not callable")
                self.add(kind, scheme, factory)

            return register_store

        def register(obj: Any) -> None:
            _check(obj)
            if kind == "methods":
                _check_method(obj, self.record.name)
            self.add(kind, getattr(obj, "name", None), obj)

        return register


def _check_method(method: Any, plugin: str) -> None:
    kind = getattr(method, "kind", None)
    if kind not in METHOD_KINDS:
        raise TypeError(f"method {getattr(method, 'name', method)!r} from plugin {plugin!r} has kind {kind!r}; expected one of {', '.join(METHOD_KINDS)}")
    caps = getattr(method, "capabilities", None)
    if not all(isinstance(getattr(caps, a, None), bool) for a in ("hot_swap", "mixed_batch")):
        raise TypeError(f"method {method.name!r} from plugin {plugin!r} has no Capabilities(hot_swap=..., mixed_batch=...)")
    if isinstance(method, LazyMethod):
        # Its config and code are imported on first use, which checks them with the
        # same messages; asking for config_cls here would import them for every command.
        method.plugin = plugin
        return
    if not callable(getattr(getattr(method, "config_cls", None), "model_validate", None)):
        raise TypeError(f"method {method.name!r} from plugin {plugin!r} has no pydantic config_cls")


class Catalog:
    """Everything the loaded plugins registered, by kind and name, with owners."""

    def __init__(self, pm: AdapterhubPluginManager) -> None:
        self.pm = pm
        self.methods: dict[str, Method] = {}
        self.evaluators: dict[str, Evaluator] = {}
        self.tasks: dict[str, TaskPack] = {}
        self.base_models: dict[str, BaseModelSource] = {}
        self.stores: dict[str, StoreFactory] = {}
        self.commands: dict[str, Command] = {}
        self._owners: dict[tuple[str, str], str] = {}
        # Plugins registered on the manager by hand (tests, embedding applications)
        # get a record too, so their registrations are collected and owned like any other.
        for name, plugin in pm.list_name_plugin():
            if name not in pm.records and plugin is not None:
                pm.records[name] = PluginRecord(name=name, source=type(plugin).__module__, version="unknown", builtin=False, plugin=plugin)
        for record in pm.loaded_records():
            self._collect(record)

    # -- building ------------------------------------------------------------------------
    def _collect(self, record: PluginRecord) -> None:
        staged = _Staged(self, record)
        for kind, (hook_name, _, _) in KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is not record.plugin or impl.hookwrapper or impl.wrapper:
                    continue
                # A hookimpl may declare a subset of the spec's arguments (pluggy rule).
                kwargs = {"register": staged.callback(kind)}
                try:
                    with plugin_output_to_stderr():
                        impl.function(**{a: kwargs[a] for a in impl.argnames})
                except DuplicateNameError as exc:
                    self.pm.fail_plugin(record, exc, during="duplicate name", message=str(exc))
                    return
                except Exception as exc:
                    self.pm.fail_plugin(record, exc, during=f"{hook_name} raised")
                    return
        for kind, items in staged.items.items():
            getattr(self, kind).update(items)
            for name in items:
                self._owners[(kind, name)] = record.name
            if items:
                record.registered[kind] = list(items)

    # -- lookups ---------------------------------------------------------------------------
    @property
    def plugins(self) -> list[PluginRecord]:
        return list(self.pm.records.values())

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.pm.records.values() if r.status == "failed"]

    def owner(self, kind: str, name: str) -> str:
        """Name of the plugin that registered ``name`` under ``kind`` (e.g. ``"methods"``)."""
        if kind not in KINDS:
            raise UnknownNameError(f"unknown catalog kind {kind!r}; kinds: {', '.join(KINDS)}")
        try:
            return self._owners[(kind, name)]
        except KeyError:
            self._unknown(kind, name)
            raise

    def _unknown(self, kind: str, name: str) -> None:
        label = KINDS[kind][1]
        known = sorted(getattr(self, kind))
        msg = f"unknown {label} {name!r}; known: {', '.join(known)}" if known else f"unknown {label} {name!r}; none are registered"
        if self.failed:
            msg += f" ({len(self.failed)} plugin(s) failed to load: see `adapterhub plugins`)"
        raise UnknownNameError(msg)

    def _get(self, kind: str, name: str) -> Any:
        items: dict[str, Any] = getattr(self, kind)
        if name not in items:
            self._unknown(kind, name)
        return items[name]

    def method(self, name: str) -> Method:
        return self._get("methods", name)  # type: ignore[no-any-return]

    def evaluator(self, name: str) -> Evaluator:
        return self._get("evaluators", name)  # type: ignore[no-any-return]

    def task(self, name: str) -> TaskPack:
        return self._get("tasks", name)  # type: ignore[no-any-return]

    def base_model(self, name: str) -> BaseModelSource:
        return self._get("base_models", name)  # type: ignore[no-any-return]

    def command(self, name: str) -> Command:
        return self._get("commands", name)  # type: ignore[no-any-return]

    def store_factory(self, scheme: str) -> StoreFactory:
        """Factory for a scheme (``"s3"``) or for the scheme of a URL (``"s3://b/p"``)."""
        key = scheme.split("://", 1)[0].lower() if "://" in scheme else scheme.lower()
        return self._get("stores", key)  # type: ignore[no-any-return]

    def resolve_base_model(self, spec: str) -> BaseModelSource | None:
        """Ask plugins (firstresult, last registered first) who knows ``spec``.

        A plugin raising here is reported as a one-line :class:`BaseModelError` naming
        it, instead of an arbitrary traceback from deep inside the hook call.
        """
        caller = self.pm.hook.adapterhub_resolve_base_model
        for impl in reversed(caller.get_hookimpls()):  # pluggy's call order
            if impl.hookwrapper or impl.wrapper:
                continue
            try:
                result = impl.function(**{a: spec for a in impl.argnames})
            except AdapterhubError:
                raise
            except Exception as exc:
                raise BaseModelError(f"plugin {impl.plugin_name!r} failed to resolve base model {spec!r}: {describe_error(exc)}") from exc
            if result is not None:
                return result  # type: ignore[no-any-return,return-value]
        return None


_lock = threading.Lock()
_catalog: Catalog | None = None


def get_catalog() -> Catalog:
    """The process-wide catalog, built on first use (a strict-mode failure is not cached)."""
    global _catalog
    if _catalog is None:
        with _lock:
            if _catalog is None:
                _catalog = Catalog(build_plugin_manager())
    return _catalog


def reset_catalog() -> None:
    """Forget the cached catalog (tests; after ``adapterhub install``)."""
    global _catalog
    with _lock:
        _catalog = None


__all__ = ["KINDS", "Catalog", "get_catalog", "reset_catalog"]
