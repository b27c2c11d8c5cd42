"""Core CLI commands, shipped as an ordinary built-in plugin (see ``DEFAULT_PLUGINS``).

``plugins``, ``methods``, ``evaluators``, ``tasks``, ``models`` and ``stores`` show what
the catalog holds; ``install``/``uninstall`` run pip in the interpreter adapterhub runs
in. The pip commands never touch the catalog, so they work while an installed plugin is
broken (even under ``ADAPTERHUB_STRICT_PLUGINS=1``, via :func:`rescue_commands`).
Nothing here imports torch: listing plugins costs only what the plugins themselves cost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapterhub.cli.output import add_json_flag, print_json, print_table
from adapterhub.defaults import ENTRY_POINT_GROUP
from adapterhub.errors import ConfigError
from adapterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from adapterhub.catalog import Catalog
    from adapterhub.protocols import Command


def _catalog() -> Catalog:
    from adapterhub.catalog import get_catalog

    return get_catalog()


def _registered_summary(registered: dict[str, list[str]]) -> str:
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in registered.items() if names)


class PluginsCommand:
    name = "plugins"
    help = "list plugins with version, status (loaded/failed), error and what each registered"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        cat = _catalog()
        records = cat.plugins
        if args.json:
            print_json([r.to_json() for r in records])
            return 0
        rows = [
            (r.name, r.version, r.status, f"{r.load_seconds:.3f}", r.error if r.status == "failed" else _registered_summary(r.registered))
            for r in records
        ]
        print_table(("name", "version", "status", "load_s", "registered / error"), rows)
        failed = cat.failed
        if failed:
            print(f"\n{len(failed)} plugin(s) failed to load; the others work. Set ADAPTERHUB_STRICT_PLUGINS=1 to make this fatal.", file=sys.stderr)
            if getattr(args, "verbose", False):
                for r in failed:
                    print(f"\n--- {r.name} ---\n{r.traceback or r.error}", file=sys.stderr)
        # Failed plugins are information, not an error of this command.
        return 0


def _ep_snapshot() -> set[tuple[str, str]]:
    import importlib.metadata

    return {(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


class _PipCommand:
    """Shared by install/uninstall: pip in *this* interpreter's environment."""

    name = ""
    help = ""

    def _pip(self, pip_args: list[str]) -> int:
        import subprocess

        cmd = [sys.executable, "-m", "pip", *pip_args]
        print("$ " + " ".join(cmd), file=sys.stderr)
        return subprocess.run(cmd, check=False).returncode


class InstallCommand(_PipCommand):
    name = "install"
    help = "pip-install plugin packages into the environment adapterhub runs in"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("packages", nargs="*", metavar="PKG", help="requirement or local path")
        parser.add_argument("-e", "--editable", action="append", default=[], metavar="PATH", help="install a local project in editable mode")
        parser.add_argument("-U", "--upgrade", action="store_true")
        parser.add_argument("--no-deps", action="store_true")
        parser.add_argument("--no-build-isolation", action="store_true")

    def run(self, args: argparse.Namespace) -> int:
        if not args.packages and not args.editable:
            raise ConfigError("install: name at least one package (PKG or -e PATH)")
        pip_args = ["install"]
        pip_args += ["--upgrade"] if args.upgrade else []
        pip_args += ["--no-deps"] if args.no_deps else []
        pip_args += ["--no-build-isolation"] if args.no_build_isolation else []
        for path in args.editable:
            pip_args += ["-e", path]
        pip_args += list(args.packages)
        before = _ep_snapshot()
        rc = self._pip(pip_args)
        if rc != 0:
            print(f"adapterhub: error: pip install failed (exit {rc})", file=sys.stderr)
            return rc
        added = sorted(_ep_snapshot() - before)
        if added:
            print("new plugins: " + ", ".join(f"{n} ({v})" for n, v in added))
        print("run `adapterhub plugins` to check they load")
        return 0


class UninstallCommand(_PipCommand):
    name = "uninstall"
    help = "pip-uninstall plugin packages from the environment adapterhub runs in"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("packages", nargs="+", metavar="PKG")

    def run(self, args: argparse.Namespace) -> int:
        if any(p.strip().lower() == "adapterhub" for p in args.packages):
            raise ConfigError("uninstall: refusing to uninstall adapterhub itself with adapterhub (use pip)")
        rc = self._pip(["uninstall", "-y", *args.packages])
        if rc != 0:
            print(f"adapterhub: error: pip uninstall failed (exit {rc})", file=sys.stderr)
        return rc


class _ListCommand:
    """``adapterhub <kind>``: a table, or a JSON list with ``--json``."""

    def __init__(self, name: str, help: str, kind: str, describe: Callable[[str, Any, Catalog], dict[str, Any]], columns: tuple[str, ...]) -> None:
        self.name = name
        self.help = help
        self.kind = kind
        self._describe = describe
        self._columns = columns

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        cat = _catalog()
        items: dict[str, Any] = getattr(cat, self.kind)
        rows = [self._describe(name, items[name], cat) for name in sorted(items)]
        if args.json:
            print_json(rows)
        else:
            headers = [c.rsplit(".", 1)[-1] for c in self._columns]
            print_table(headers, ([_cell(row, c) for c in self._columns] for row in rows))
        return 0


def _cell(row: dict[str, Any], column: str) -> Any:
    value: Any = row
    for part in column.split("."):  # "capabilities.hot_swap" reads a nested field
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return value


def _describe_method(name: str, m: Any, cat: Catalog) -> dict[str, Any]:
    caps = m.capabilities
    try:
        schema: Any = m.config_cls.model_json_schema()
    except Exception as exc:  # a plugin's broken config model must not break the listing
        schema = {"error": f"{type(exc).__name__}: {exc}"}
    from adapterhub.protocols.method import training_defaults_of

    try:
        found = training_defaults_of(m)
        defaults: dict[str, Any] | None = found.as_dict() if found is not None else None
    except Exception as exc:  # a plugin's bad defaults show up here, not as a broken listing
        defaults = {"error": str(exc)}
    return {
        "name": name,
        "kind": m.kind,
        "description": getattr(m, "description", ""),
        "capabilities": {"hot_swap": bool(caps.hot_swap), "mixed_batch": bool(caps.mixed_batch), "merge": bool(getattr(caps, "merge", False))},
        "config_schema": schema,
        "training_defaults": defaults,
        "default_lr": _default_lr(defaults),
        "plugin": cat.owner("methods", name),
    }


def _default_lr(defaults: dict[str, Any] | None) -> str:
    """The ``DEFAULT_LR`` column: the method's own, or what the trainer falls back to."""
    if defaults is None:
        from adapterhub.trainer.config import TrainConfig

        return f"{TrainConfig.lr:g} (trainer)"
    if "error" in defaults:
        return "invalid"
    return f"{defaults['lr']:g}"


def _describe_evaluator(name: str, e: Any, cat: Catalog) -> dict[str, Any]:
    return {"name": name, "needs_model": bool(getattr(e, "needs_model", False)), "description": getattr(e, "description", ""), "plugin": cat.owner("evaluators", name)}


def _describe_task(name: str, t: Any, cat: Catalog) -> dict[str, Any]:
    return {
        "name": name,
        "evaluators": list(getattr(t, "evaluators", ())),
        "max_new_tokens": getattr(t, "max_new_tokens", None),
        "description": getattr(t, "description", ""),
        "plugin": cat.owner("tasks", name),
    }


def _describe_model(name: str, src: Any, cat: Catalog) -> dict[str, Any]:
    try:
        ok, detail = src.available()
    except Exception as exc:  # one broken source must not hide the others
        ok, detail = False, f"available() raised {type(exc).__name__}: {exc}"
    return {"name": name, "available": bool(ok), "detail": detail, "description": getattr(src, "description", ""), "plugin": cat.owner("base_models", name)}


def _describe_store(scheme: str, factory: Any, cat: Catalog) -> dict[str, Any]:
    target = getattr(factory, "__qualname__", type(factory).__qualname__)
    return {"scheme": scheme, "factory": f"{getattr(factory, '__module__', '?')}.{target}", "plugin": cat.owner("stores", scheme)}


def list_commands() -> list[_ListCommand]:
    return [
        _ListCommand("methods", "list PEFT methods (kind, capabilities, default lr; config schema and training defaults with --json)", "methods", _describe_method,
                     ("name", "kind", "capabilities.hot_swap", "capabilities.mixed_batch", "capabilities.merge", "default_lr", "plugin", "description")),
        _ListCommand("evaluators", "list evaluators", "evaluators", _describe_evaluator, ("name", "needs_model", "plugin", "description")),
        _ListCommand("tasks", "list task packs", "tasks", _describe_task, ("name", "evaluators", "max_new_tokens", "plugin", "description")),
        _ListCommand("models", "list base-model aliases and whether they are available offline", "base_models", _describe_model,
                     ("name", "available", "detail", "plugin", "description")),
        _ListCommand("stores", "list adapter store URL schemes", "stores", _describe_store, ("scheme", "plugin", "factory")),
    ]


def rescue_commands() -> list[Command]:
    """The commands that must work without a healthy catalog."""
    return [InstallCommand(), UninstallCommand()]


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    for cmd in [PluginsCommand(), *rescue_commands(), *list_commands()]:
        register(cmd)


__all__ = ["adapterhub_register_commands", "list_commands", "rescue_commands"]
