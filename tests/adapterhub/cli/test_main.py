"""``adapterhub`` main: one-line errors, exit codes, -v, broken commands, strict rescue."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from adapterhub import __version__
from adapterhub import catalog as catalog_mod
from adapterhub.catalog import Catalog, reset_catalog
from adapterhub.cli.main import main
from adapterhub.defaults import ENTRY_POINT_GROUP
from adapterhub.pluginmanager import build_plugin_manager

COMMANDS = """
import argparse
from adapterhub.errors import ConfigError
from adapterhub.hookspecs import hookimpl

class Echo:
    name = "echo"
    help = "print words"
    def configure(self, parser):
        parser.add_argument("words", nargs="*")
        parser.add_argument("--fail", choices=["user", "bug", "interrupt"])
    def run(self, args):
        if args.fail == "user":
            raise ConfigError("bad option --x: expected an integer")
        if args.fail == "bug":
            raise ZeroDivisionError("division by zero")
        if args.fail == "interrupt":
            raise KeyboardInterrupt
        print(" ".join(args.words))
        return 0

class Broken:
    name = "broken"
    help = "configure raises"
    def configure(self, parser):
        raise RuntimeError("argparse conflict in plugin")
    def run(self, args):
        return 0

@hookimpl
def adapterhub_register_commands(register):
    register(Echo())
    register(Broken())
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """Run ``main`` against a catalog of the core commands plus the test commands."""
    (tmp_path / "ahcli_cmds.py").write_text(textwrap.dedent(COMMANDS))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="cmds", value="ahcli_cmds", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(catalog_mod, "_catalog", Catalog(build_plugin_manager(builtins=["adapterhub.cli.core_commands"], entry_points=[ep], environ={})))

    def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    yield run
    sys.modules.pop("ahcli_cmds", None)
    reset_catalog()


def test_runs_plugin_command(cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("echo", "hello", "world", capsys=capsys) == (0, "hello world\n", "")


def test_user_error_is_one_line_exit_1(cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli("echo", "--fail", "user", capsys=capsys)
    assert (rc, out) == (1, "")
    assert err == "adapterhub: error: bad option --x: expected an integer\n"


def test_verbose_shows_traceback(cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli("-v", "echo", "--fail", "user", capsys=capsys)
    assert rc == 1 and "Traceback (most recent call last)" in err
    assert err.rstrip().endswith("adapterhub: error: bad option --x: expected an integer")


def test_unexpected_error_is_still_one_line(cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli("echo", "--fail", "bug", capsys=capsys)
    assert rc == 1
    assert err == "adapterhub: error: unexpected ZeroDivisionError: division by zero (rerun with -v for the traceback)\n"


def test_keyboard_interrupt_exits_130(cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli("echo", "--fail", "interrupt", capsys=capsys)
    assert rc == 130 and "interrupted" in err and "Traceback" not in err


def test_broken_command_does_not_break_the_cli(cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("echo", "still", "works", capsys=capsys)[0] == 0
    rc, _, err = cli("broken", capsys=capsys)
    assert rc == 1
    assert err == (
        "adapterhub: error: command 'broken' of plugin 'cmds' is unavailable: "
        "RuntimeError: argparse conflict in plugin (at " + err.split("(at ", 1)[1]
    )
    assert err.count("\n") == 1


def test_version_help_and_usage_errors(cli: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("--version", capsys=capsys) == (0, f"adapterhub {__version__}\n", "")
    rc, out, _ = cli(capsys=capsys)
    assert rc == 0 and "usage: adapterhub" in out and "echo" in out and "plugins" in out
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_strict_mode_failure_is_one_line_but_install_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ahcli_boom.py").write_text("raise RuntimeError('broken plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    boom = EntryPoint(name="boom", value="ahcli_boom", group=ENTRY_POINT_GROUP)
    strict = {"ADAPTERHUB_STRICT_PLUGINS": "1"}
    monkeypatch.setattr(catalog_mod, "build_plugin_manager", lambda: build_plugin_manager(builtins=["adapterhub.cli.core_commands"], entry_points=[boom], environ=strict))
    reset_catalog()
    try:
        assert main(["plugins"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("adapterhub: error: plugin 'boom' failed (ADAPTERHUB_STRICT_PLUGINS=1): import failed: RuntimeError: broken plugin")
        assert err.count("\n") == 1
        # install/uninstall bypass the broken catalog: the error is install's own.
        assert main(["install"]) == 1
        assert capsys.readouterr().err == "adapterhub: error: install: name at least one package (PKG or -e PATH)\n"
        assert main(["uninstall", "adapterhub"]) == 1
        assert "refusing to uninstall adapterhub itself" in capsys.readouterr().err
    finally:
        reset_catalog()


def test_console_script_runs_out_of_process() -> None:
    exe = Path(sys.executable).with_name("adapterhub")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (0, f"adapterhub {__version__}\n")
    # --version answers before any plugin is loaded: no torch, no catalog.
    assert out.stderr == ""


def test_unknown_command_hints_at_failed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ahcli_trainer.py").write_text("raise ImportError('trainer needs a newer torch')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="trainer", value="ahcli_trainer", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(catalog_mod, "_catalog", Catalog(build_plugin_manager(builtins=["adapterhub.cli.core_commands"], entry_points=[ep], environ={})))
    try:
        with pytest.raises(SystemExit) as info:
            main(["train"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "invalid choice: 'train'" in err and err.rstrip().endswith("(1 plugin(s) failed to load: see `adapterhub plugins`)")
    finally:
        reset_catalog()
