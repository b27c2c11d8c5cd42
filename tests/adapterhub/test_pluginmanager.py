"""The plugin-manager factory: isolation of each plugin, env vars, strict mode.

Plugins here are real modules written to a temp dir and loaded through real
``importlib.metadata.EntryPoint`` objects (the pip-installed variants live in
``tests/reliability/test_plugins.py``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pluggy
import pytest

from adapterhub import __version__
from adapterhub.defaults import DEFAULT_PLUGINS, ENTRY_POINT_GROUP
from adapterhub.errors import PluginLoadError
from adapterhub.pluginmanager import build_plugin_manager, describe_error

GOOD = """
from adapterhub.hookspecs import hookimpl

class Hello:
    name = "hello-{tag}"
    help = "say hello"
    def configure(self, parser): pass
    def run(self, args): return 0

@hookimpl
def adapterhub_register_commands(register):
    register(Hello())
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], EntryPoint]]:
    """Write ``name.py`` with the given source and return an entry point for it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def make(name: str, source: str) -> EntryPoint:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return EntryPoint(name=name.removeprefix("ahtest_"), value=name, group=ENTRY_POINT_GROUP)

    yield make
    for name in written:  # failed imports are not cached, successful ones are
        sys.modules.pop(name, None)


def test_builtins_missing_module_is_recorded_not_raised(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    good = plugin_dir("ahtest_good", GOOD.format(tag="a"))
    pm = build_plugin_manager(builtins=["adapterhub.cli.core_commands", "adapterhub.plugins.does_not_exist"], entry_points=[good], environ={})
    core = pm.record("adapterhub.cli.core_commands")
    assert core.status == "loaded" and core.builtin and core.version == __version__
    missing = pm.record("adapterhub.plugins.does_not_exist")
    assert missing.status == "failed" and missing.builtin
    assert missing.error == "import failed: ModuleNotFoundError: No module named 'adapterhub.plugins.does_not_exist'"
    assert pm.record("good").status == "loaded" and not pm.record("good").builtin
    assert pm.record("good").version == "unknown"  # a bare EntryPoint has no distribution


def test_import_error_is_isolated_and_located(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    boom = plugin_dir("ahtest_boom", "x = 1\nraise RuntimeError('kaboom\\nsecond line')\n")
    good = plugin_dir("ahtest_good", GOOD.format(tag="b"))
    pm = build_plugin_manager(builtins=[], entry_points=[boom, good], environ={})
    rec = pm.record("boom")
    assert rec.status == "failed" and rec.plugin is None
    assert rec.error is not None and "\n" not in rec.error
    assert rec.error.startswith("import failed: RuntimeError: kaboom second line (at ")
    assert rec.error.endswith("ahtest_boom.py:2)")
    assert rec.traceback is not None and "Traceback" in rec.traceback
    assert pm.record("good").status == "loaded"
    assert len(pm.hook.adapterhub_register_commands.get_hookimpls()) == 1


def test_exit_on_import_is_a_failure_not_an_exit(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    ep = plugin_dir("ahtest_exits", "import sys\nsys.exit(3)\n")
    pm = build_plugin_manager(builtins=[], entry_points=[ep], environ={})
    assert pm.record("exits").status == "failed"
    assert "SystemExit: 3" in (pm.record("exits").error or "")


def test_wrong_hook_signature_fails_validation_and_leaves_no_hookimpl(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    # The evaluator hook sorts before the bad one, so pluggy has registered it when it
    # rejects the methods hook: the plugin must be unregistered completely.
    ep = plugin_dir(
        "ahtest_badsig",
        """
        from adapterhub.hookspecs import hookimpl

        @hookimpl
        def adapterhub_register_evaluators(register):
            pass

        @hookimpl
        def adapterhub_register_methods(register, model):
            pass
        """,
    )
    pm = build_plugin_manager(builtins=[], entry_points=[ep], environ={})
    rec = pm.record("badsig")
    assert rec.status == "failed"
    assert rec.error is not None and rec.error.startswith("invalid hook: PluginValidationError:")
    assert "model" in rec.error and "\n" not in rec.error
    assert pm.hook.adapterhub_register_evaluators.get_hookimpls() == []
    assert pm.hook.adapterhub_register_methods.get_hookimpls() == []


def test_unknown_adapterhub_hook_fails(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    ep = plugin_dir(
        "ahtest_typo",
        """
        from adapterhub.hookspecs import hookimpl

        @hookimpl
        def adapterhub_register_method(register):  # typo: singular
            pass
        """,
    )
    pm = build_plugin_manager(builtins=[], entry_points=[ep], environ={})
    assert pm.record("typo").status == "failed"
    assert "unknown hook 'adapterhub_register_method'" in (pm.record("typo").error or "")
    with pytest.raises(pluggy.PluginValidationError):  # what pluggy itself would say
        pm2 = pluggy.PluginManager("adapterhub")
        from adapterhub.hookspecs import AdapterhubSpec

        pm2.add_hookspecs(AdapterhubSpec)
        pm2.register(sys.modules["ahtest_typo"])
        pm2.check_pending()


@pytest.mark.parametrize("source", ["raise ImportError('no torch here')\n", "def f(:\n"])
def test_strict_mode_raises_one_line_plugin_load_error(plugin_dir: Callable[[str, str], EntryPoint], source: str) -> None:
    ep = plugin_dir("ahtest_strict", source)
    with pytest.raises(PluginLoadError) as info:
        build_plugin_manager(builtins=[], entry_points=[ep], environ={"ADAPTERHUB_STRICT_PLUGINS": "1"})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("plugin 'strict' failed (ADAPTERHUB_STRICT_PLUGINS=1): import failed:")
    assert isinstance(info.value, ImportError)  # PluginLoadError(ImportError)


def test_strict_mode_passes_when_everything_loads(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    ep = plugin_dir("ahtest_good", GOOD.format(tag="c"))
    pm = build_plugin_manager(builtins=["adapterhub.cli.core_commands"], entry_points=[ep], environ={"ADAPTERHUB_STRICT_PLUGINS": "true"})
    assert [r.status for r in pm.records.values()] == ["loaded", "loaded"]


def test_only_named_plugins_load_and_unknown_names_are_reported(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    a = plugin_dir("ahtest_a", GOOD.format(tag="a"))
    b = plugin_dir("ahtest_b", GOOD.format(tag="b"))
    c = plugin_dir("ahtest_c", "raise RuntimeError('must not even be imported')\n")
    pm = build_plugin_manager(
        builtins=["adapterhub.cli.core_commands"], entry_points=[a, b, c], environ={"ADAPTERHUB_PLUGINS": " a , nosuch,adapterhub.cli.core_commands"}
    )
    assert set(pm.records) == {"adapterhub.cli.core_commands", "a", "nosuch"}
    assert pm.record("a").status == "loaded"
    assert pm.record("nosuch").status == "failed"
    assert "no entry point of group 'adapterhub' has that name" in (pm.record("nosuch").error or "")
    assert "ahtest_c" not in sys.modules and "ahtest_b" not in sys.modules


def test_disable_autoload_keeps_builtins(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    a = plugin_dir("ahtest_a", GOOD.format(tag="a"))
    pm = build_plugin_manager(
        builtins=["adapterhub.cli.core_commands"], entry_points=[a], environ={"ADAPTERHUB_DISABLE_PLUGIN_AUTOLOAD": "1", "ADAPTERHUB_PLUGINS": "a"}
    )
    assert list(pm.records) == ["adapterhub.cli.core_commands"]


def test_duplicate_plugin_names_second_fails(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    a1 = plugin_dir("ahtest_x1", GOOD.format(tag="1"))
    a2 = plugin_dir("ahtest_x2", GOOD.format(tag="2"))
    same1 = EntryPoint(name="same", value=a1.value, group=ENTRY_POINT_GROUP)
    same2 = EntryPoint(name="same", value=a2.value, group=ENTRY_POINT_GROUP)
    pm = build_plugin_manager(builtins=[], entry_points=[same1, same2], environ={})
    assert pm.record("same").status == "loaded" and pm.record("same").source == "ahtest_x1"
    second = [r for r in pm.records.values() if r.name != "same"]
    assert len(second) == 1 and second[0].status == "failed"
    assert "plugin name 'same' is already taken by 'ahtest_x1'" in (second[0].error or "")


def test_entry_point_aliasing_a_builtin_module_does_not_unregister_it(plugin_dir: Callable[[str, str], EntryPoint]) -> None:
    alias = EntryPoint(name="alias", value="adapterhub.cli.core_commands", group=ENTRY_POINT_GROUP)
    pm = build_plugin_manager(builtins=["adapterhub.cli.core_commands"], entry_points=[alias], environ={})
    assert pm.record("alias").status == "failed"
    assert pm.record("adapterhub.cli.core_commands").status == "loaded"
    assert pm.is_registered(sys.modules["adapterhub.cli.core_commands"])


def test_plugin_stdout_is_redirected_and_load_time_recorded(plugin_dir: Callable[[str, str], EntryPoint], capsys: pytest.CaptureFixture[str]) -> None:
    ep = plugin_dir("ahtest_chatty", "import time\nprint('hello from import')\ntime.sleep(0.3)\n")
    t0 = time.perf_counter()
    pm = build_plugin_manager(builtins=[], entry_points=[ep], environ={})
    out, err = capsys.readouterr()
    assert out == "" and "hello from import" in err
    assert 0.3 <= pm.record("chatty").load_seconds <= time.perf_counter() - t0


def test_describe_error_is_one_line_and_capped() -> None:
    try:
        raise ValueError("a\n" * 500)
    except ValueError as exc:
        line = describe_error(exc)
    assert "\n" not in line and len(line) <= 400 and line.endswith("...")


def test_nothing_is_built_at_import_and_core_cli_does_not_import_torch() -> None:
    code = (
        "import sys, adapterhub, adapterhub.catalog, adapterhub.pluginmanager, adapterhub.cli.main, adapterhub.cli.core_commands\n"
        "import adapterhub.catalog as c\n"
        f"loaded = [m for m in {list(DEFAULT_PLUGINS)!r} if m in sys.modules and m != 'adapterhub.cli.core_commands']\n"
        "assert c._catalog is None, 'catalog built at import'\n"
        "assert not loaded, loaded\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
