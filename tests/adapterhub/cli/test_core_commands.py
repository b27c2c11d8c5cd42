"""Core commands over the real built-in catalog: plugins, methods, evaluators, tasks, models, stores.

``install``/``uninstall`` against a real environment are exercised in a fresh venv by
``tests/adapterhub/test_packaging.py``; here only their failure paths run.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from adapterhub import catalog as catalog_mod
from adapterhub.catalog import Catalog, get_catalog, reset_catalog
from adapterhub.cli.main import main
from adapterhub.defaults import DEFAULT_PLUGINS, ENTRY_POINT_GROUP
from adapterhub.pluginmanager import build_plugin_manager


@pytest.fixture(scope="module")
def real_catalog() -> Iterator[Catalog]:
    reset_catalog()
    yield get_catalog()
    reset_catalog()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0
    out, _ = capsys.readouterr()
    return json.loads(out)  # stdout is exactly one JSON document


def test_plugins_json_lists_every_builtin(real_catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "plugins", "--json")
    assert isinstance(rows, list)
    by_name = {r["name"]: r for r in rows}
    for module in DEFAULT_PLUGINS:
        row = by_name[module]
        assert row["builtin"] is True and row["version"] == "0.1.0"
        assert set(row) >= {"name", "version", "status", "error", "registered", "load_seconds"}
        assert row["status"] in ("loaded", "failed")
        assert (row["error"] is None) == (row["status"] == "loaded")
        assert row["load_seconds"] >= 0
    core = by_name["adapterhub.cli.core_commands"]
    assert core["status"] == "loaded"
    assert set(core["registered"]["commands"]) == {"plugins", "install", "uninstall", "methods", "evaluators", "tasks", "models", "stores"}


def test_plugins_table(real_catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATUS", "LOAD_S", "REGISTERED", "/", "ERROR"]
    assert len(lines) == 1 + len(real_catalog.plugins)
    core = next(line for line in lines if line.startswith("adapterhub.cli.core_commands "))
    assert " loaded " in core and "commands: plugins, install" in core


def test_methods_json_has_kind_capabilities_schema_and_owner(real_catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "methods", "--json")
    assert isinstance(rows, list)
    assert [r["name"] for r in rows] == sorted(real_catalog.methods)
    for row in rows:
        method = real_catalog.method(row["name"])
        assert row["kind"] == method.kind and row["kind"] in ("reparameterization", "additive", "selective", "full")
        assert row["capabilities"] == {
            "hot_swap": method.capabilities.hot_swap,
            "mixed_batch": method.capabilities.mixed_batch,
            "merge": method.capabilities.merge,
        }
        assert row["config_schema"]["type"] == "object"
        assert row["config_schema"]["additionalProperties"] is False  # extra="forbid"
        assert row["plugin"] == real_catalog.owner("methods", row["name"])


@pytest.mark.parametrize(("command", "kind", "key"), [("evaluators", "evaluators", "name"), ("tasks", "tasks", "name"), ("models", "base_models", "name"), ("stores", "stores", "scheme")])
def test_list_commands_match_the_catalog(real_catalog: Catalog, capsys: pytest.CaptureFixture[str], command: str, kind: str, key: str) -> None:
    rows = run_json(capsys, command, "--json")
    assert isinstance(rows, list)
    assert [r[key] for r in rows] == sorted(getattr(real_catalog, kind))
    for row in rows:
        assert row["plugin"] == real_catalog.owner(kind, row[key])
    assert main([command]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith(key.upper()) and len(table) == 1 + len(rows)


def test_models_survives_a_raising_source_and_failed_plugins_exit_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ahcore_models.py").write_text(textwrap.dedent("""
        from adapterhub.hookspecs import hookimpl

        class Flaky:
            name = "flaky"
            description = "raises in available()"
            def available(self): raise OSError("disk gone")
            def local_dir(self): raise OSError("disk gone")

        class Fine:
            name = "fine"
            description = "always there"
            def available(self): return (True, "/models/fine")
            def local_dir(self): return "/models/fine"

        @hookimpl
        def adapterhub_register_base_models(register):
            register(Flaky())
            register(Fine())
    """))
    (tmp_path / "ahcore_boom.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint(name=n, value=f"ahcore_{n}", group=ENTRY_POINT_GROUP) for n in ("models", "boom")]
    monkeypatch.setattr(catalog_mod, "_catalog", Catalog(build_plugin_manager(builtins=["adapterhub.cli.core_commands"], entry_points=eps, environ={})))
    try:
        rows = run_json(capsys, "models", "--json")
        assert rows == [
            {"name": "fine", "available": True, "detail": "/models/fine", "description": "always there", "plugin": "models"},
            {"name": "flaky", "available": False, "detail": "available() raised OSError: disk gone", "description": "raises in available()", "plugin": "models"},
        ]
        assert main(["plugins"]) == 0
        out, err = capsys.readouterr()
        assert "import failed: RuntimeError: broken on purpose" in out
        assert "1 plugin(s) failed to load" in err
    finally:
        sys.modules.pop("ahcore_models", None)
        reset_catalog()


def test_install_reports_pip_failure(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["install", "--no-deps", str(tmp_path / "no-such-project")])
    assert rc != 0
    err = capsys.readouterr().err
    assert f"-m pip install --no-deps {tmp_path / 'no-such-project'}" in err
    assert err.rstrip().endswith(f"adapterhub: error: pip install failed (exit {rc})")
