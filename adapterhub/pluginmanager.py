"""The plugin-manager factory: built-ins and entry-point plugins, each loaded in isolation.

Nothing here runs at import time: :func:`build_plugin_manager` is called by the catalog
(``adapterhub.catalog.get_catalog``) the first time something needs a plugin, so
``import adapterhub`` stays cheap and a broken plugin can never break an import.

Every plugin — a module of ``DEFAULT_PLUGINS`` or an entry point of group ``adapterhub``
— gets a :class:`PluginRecord`. A plugin that raises on import, or whose hookimpls fail
pluggy's validation (wrong argument names, an unknown ``adapterhub_*`` hook), is
unregistered and recorded as ``failed`` with a one-line error; the rest keep working.

Environment variables (read when the factory runs, not at import):

* ``ADAPTERHUB_STRICT_PLUGINS=1``: any plugin failure raises :class:`PluginLoadError`.
* ``ADAPTERHUB_PLUGINS=a,b``: load only these third-party entry points (built-ins stay).
* ``ADAPTERHUB_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points at all (built-ins stay).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from adapterhub import __version__
from adapterhub.defaults import DEFAULT_PLUGINS, ENTRY_POINT_GROUP
from adapterhub.errors import DuplicateNameError, PluginLoadError
from adapterhub.hookspecs import PROJECT, AdapterhubSpec

if TYPE_CHECKING:  # importlib.metadata is imported only when a distribution declares a plugin
    import importlib.metadata

ENV_STRICT = "ADAPTERHUB_STRICT_PLUGINS"
ENV_ONLY = "ADAPTERHUB_PLUGINS"
ENV_NO_AUTOLOAD = "ADAPTERHUB_DISABLE_PLUGIN_AUTOLOAD"

Status = Literal["loaded", "failed"]
# Long messages are cut so `adapterhub plugins` stays a readable table; the full
# traceback is kept on the record for `adapterhub -v plugins`.
_MAX_ERROR_CHARS = 400
_TRUTHY = {"1", "true", "yes", "on"}


@dataclass
class PluginRecord:
    """What ``adapterhub plugins`` shows about one plugin."""

    name: str
    """Built-ins: the module path; entry points: the entry-point name."""
    source: str
    """The module path (built-ins) or entry-point value (``pkg.mod:obj``)."""
    version: str
    builtin: bool
    distribution: str | None = None
    status: Status = "loaded"
    error: str | None = None
    load_seconds: float = 0.0
    registered: dict[str, list[str]] = field(default_factory=dict)
    """Filled by the catalog: kind (``methods``, ``commands``, ...) → names."""
    traceback: str | None = field(default=None, repr=False)
    plugin: object | None = field(default=None, repr=False)
    """The registered plugin object (module), ``None`` once failed."""

    def fail(self, error: str, tb: str | None = None) -> None:
        self.status = "failed"
        self.error = error
        self.traceback = tb
        self.registered = {}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "builtin": self.builtin,
            "distribution": self.distribution,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "registered": {k: list(v) for k, v in self.registered.items() if v},
            "load_seconds": round(self.load_seconds, 4),
        }


class AdapterhubPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers every plugin it tried to load."""

    def __init__(self, *, strict: bool = False) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(AdapterhubSpec)
        self.strict = strict
        self.records: dict[str, PluginRecord] = {}

    def record(self, name: str) -> PluginRecord:
        return self.records[name]

    def loaded_records(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.status == "loaded"]

    def fail_plugin(self, record: PluginRecord, exc: BaseException, *, during: str, message: str | None = None) -> None:
        """Unregister ``record``'s plugin and mark it failed (raise in strict mode).

        ``message`` replaces the generated ``during: Type: text (at file:line)`` line
        when the error is adapterhub's own and already says everything (duplicates).
        """
        line = message if message is not None else f"{during}: {describe_error(exc)}"
        if record.plugin is not None and self.is_registered(record.plugin):
            self.unregister(record.plugin)
        record.plugin = None
        record.fail(line, "".join(traceback.format_exception(exc)))
        if self.strict:
            if isinstance(exc, DuplicateNameError):  # already names both plugins
                raise exc
            raise PluginLoadError(f"plugin {record.name!r} failed ({ENV_STRICT}=1): {line}") from exc


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    value = (environ if environ is not None else os.environ).get(name, "")
    return value.strip().lower() in _TRUTHY


def describe_error(exc: BaseException) -> str:
    """One line: ``Type: message (at file:line)`` — the location of the innermost frame."""
    text = " ".join(str(exc).split()) if str(exc) else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    # Point at the plugin's own code: importlib's frozen frames and our loader are noise.
    own = {os.path.abspath(__file__), os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalog.py")}
    frames = [
        f
        for f in (traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else [])
        if not f.filename.startswith("<") and os.path.abspath(f.filename) not in own and "importlib" not in f.filename
    ]
    if frames:
        last = frames[-1]
        where = os.path.join(os.path.basename(os.path.dirname(last.filename)), os.path.basename(last.filename))
        line += f" (at {where}:{last.lineno})"
    if len(line) > _MAX_ERROR_CHARS:
        line = line[: _MAX_ERROR_CHARS - 3] + "..."
    return line


@contextlib.contextmanager
def plugin_output_to_stderr() -> Iterator[None]:
    """Plugin code may print; keep stdout clean for ``--json`` output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _check_pending(pm: AdapterhubPluginManager, plugin: object) -> None:
    """pluggy only flags unknown hooks in ``check_pending``; do it for one plugin now."""
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not impl.optionalhook:
                raise pluggy.PluginValidationError(
                    plugin, f"unknown hook {caller.name!r} (no such hookspec in adapterhub.hookspecs)"
                )


def _register(pm: AdapterhubPluginManager, record: PluginRecord, load: Any) -> None:
    """Import (``load()``), register and validate one plugin; failures are recorded."""
    start = time.perf_counter()
    try:
        try:
            with plugin_output_to_stderr():
                plugin = load()
        except (Exception, SystemExit) as exc:  # SystemExit: a plugin calling exit() on import
            pm.fail_plugin(record, exc, during="import failed")
            return
        try:
            pm.register(plugin, name=record.name)
            record.plugin = plugin
            _check_pending(pm, plugin)
        except (pluggy.PluginValidationError, ValueError) as exc:
            # ValueError: pluggy refuses a second plugin of the same name/object.
            if record.plugin is None and pm.is_registered(plugin) and pm.get_name(plugin) == record.name:
                record.plugin = plugin
            pm.fail_plugin(record, exc, during="invalid hook")
    finally:
        record.load_seconds = time.perf_counter() - start


def _declares_group(path: str, group: str) -> bool:
    """Whether the ``entry_points.txt`` at ``path`` has a ``[group]`` section."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError):  # no entry points; a one-file .egg-info
        return False
    if group.encode() not in data:
        return False
    # importlib.metadata's own rule: a "[name]" line, name stripped.
    text = data.decode("utf-8", "replace")
    return any(ln.strip().startswith("[") and ln.strip().endswith("]") and ln.strip()[1:-1].strip() == group for ln in text.splitlines())


def may_have_entry_points(group: str = ENTRY_POINT_GROUP) -> bool:
    """A cheap, conservative "could ``entry_points(group=group)`` find anything?".

    Importing :mod:`importlib.metadata` and reading every installed distribution's
    metadata costs tens of milliseconds, a large share of a quick command such as
    ``adapterhub score``, while most environments have no third-party plugin. This only
    lists the directories on ``sys.path`` and reads the ``entry_points.txt`` of their
    ``*.dist-info``/``*.egg-info``; anything it cannot judge (a zip or egg on
    ``sys.path``, a distribution finder besides the standard one, an unreadable
    directory) answers True, and the caller asks importlib.metadata as before.
    """
    from importlib.machinery import PathFinder

    if any(getattr(f, "find_distributions", None) is not None and f is not PathFinder for f in sys.meta_path):
        return True
    for entry in sys.path:
        root = entry or "."
        if root.lower().endswith(".egg"):
            return True
        try:
            with os.scandir(root) as it:
                names = [e.name for e in it]
        except (FileNotFoundError, NotADirectoryError):
            if os.path.isfile(root):  # a zip archive on sys.path
                return True
            continue
        except OSError:
            return True
        for name in names:
            if name.lower().endswith((".dist-info", ".egg-info")) and _declares_group(os.path.join(root, name, "entry_points.txt"), group):
                return True
    return False


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    if not may_have_entry_points(ENTRY_POINT_GROUP):
        return []
    import importlib.metadata

    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    # Deterministic order (the first registrant of a duplicate name keeps it).
    return sorted(eps, key=lambda ep: (ep.name, ep.value))


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, "unknown"
    return dist.metadata["Name"], dist.version


def build_plugin_manager(
    *,
    builtins: Iterable[str] | None = None,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AdapterhubPluginManager:
    """Build a fresh plugin manager: hookspecs, built-ins, then entry-point plugins.

    ``builtins`` defaults to ``DEFAULT_PLUGINS`` and ``entry_points`` to the installed
    entry points of group ``adapterhub``; tests pass their own. Raises
    :class:`PluginLoadError` only in strict mode.
    """
    env = environ if environ is not None else os.environ
    pm = AdapterhubPluginManager(strict=env_flag(ENV_STRICT, env))

    for module in DEFAULT_PLUGINS if builtins is None else tuple(builtins):
        if module in pm.records:
            continue
        record = PluginRecord(name=module, source=module, version=__version__, builtin=True, distribution="adapterhub")
        pm.records[module] = record
        _register(pm, record, lambda m=module: importlib.import_module(m))

    if env_flag(ENV_NO_AUTOLOAD, env):
        return pm
    only_raw = env.get(ENV_ONLY, "").strip()
    only = {n.strip() for n in only_raw.split(",") if n.strip()} if only_raw else None

    eps = _entry_points() if entry_points is None else list(entry_points)
    seen: set[str] = set()
    for ep in eps:
        if only is not None and ep.name not in only:
            continue
        seen.add(ep.name)
        dist_name, version = _dist_of(ep)
        name = ep.name if ep.name not in pm.records else f"{ep.name}@{dist_name or ep.value}"
        record = PluginRecord(name=name, source=ep.value, version=version, builtin=False, distribution=dist_name)
        pm.records[name] = record
        if name != ep.name:
            pm.fail_plugin(record, ValueError(f"plugin name {ep.name!r} is already taken by {pm.records[ep.name].source!r}"), during="duplicate plugin name")
            continue
        _register(pm, record, ep.load)

    # Naming a built-in in ADAPTERHUB_PLUGINS is harmless: built-ins always load.
    for missing in sorted((only or set()) - seen - {n for n, r in pm.records.items() if r.builtin}):
        record = PluginRecord(name=missing, source="", version="unknown", builtin=False)
        pm.records[missing] = record
        pm.fail_plugin(
            record,
            LookupError(f"{ENV_ONLY} names {missing!r} but no entry point of group {ENTRY_POINT_GROUP!r} has that name"),
            during="not installed",
        )
    return pm
