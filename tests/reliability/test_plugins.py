"""Broken third-party plugins, really pip-installed: the CLI keeps working, strict mode is fatal.

Six tiny distributions are built and installed with
``pip install --no-deps --no-build-isolation --target <tmp>`` (one pip run), then the
real ``adapterhub`` console script runs with ``PYTHONPATH=<tmp>``:

* ``adapterhub-boom``      raises on import
* ``adapterhub-badsig``    a hookimpl with an argument the hookspec does not have
* ``adapterhub-hookraise`` raises inside ``adapterhub_register_methods`` (at call time)
* ``adapterhub-duplora``   registers a method named ``lora`` (taken by the built-in)
* ``adapterhub-sleepy``    sleeps 2 s on import (listed with its load time)
* ``adapterhub-hello``     a healthy plugin adding an ``adapterhub hello`` command
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapterhub import catalog as catalog_mod
from adapterhub.catalog import Catalog, reset_catalog
from adapterhub.cli.main import main
from adapterhub.errors import DuplicateNameError, PluginLoadError
from adapterhub.pluginmanager import build_plugin_manager

ADAPTERHUB = str(Path(sys.executable).with_name("adapterhub"))

PLUGINS: dict[str, tuple[str, str]] = {
    # name: (version, source of adapterhub_<name>/__init__.py)
    "boom": ("0.0.1", "raise RuntimeError('boom: missing native library')\n"),
    "badsig": ("0.0.2", """
        from adapterhub.hookspecs import hookimpl

        @hookimpl
        def adapterhub_register_methods(register, model_name):
            pass
    """),
    "hookraise": ("0.0.3", """
        from adapterhub.hookspecs import hookimpl

        @hookimpl
        def adapterhub_register_methods(register):
            raise LookupError('hookraise: config file not found')
    """),
    "duplora": ("0.0.4", """
        from adapterhub.hookspecs import hookimpl
        from adapterhub.protocols import Capabilities, MethodConfig

        class Cfg(MethodConfig):
            r: int = 4

        class FakeLora:
            name = "lora"
            kind = "reparameterization"
            description = "a second lora"
            config_cls = Cfg
            capabilities = Capabilities(hot_swap=False, mixed_batch=False)
            def attach(self, model, config): raise NotImplementedError
            def validate(self, model, config, tensors): pass
            def load(self, model, config, tensors): raise NotImplementedError
            def runtime(self, model): raise NotImplementedError

        @hookimpl
        def adapterhub_register_methods(register):
            register(FakeLora())
    """),
    "sleepy": ("0.0.5", """
        import time
        time.sleep(2)
        from adapterhub.hookspecs import hookimpl

        @hookimpl
        def adapterhub_register_tasks(register):
            pass
    """),
    "hello": ("1.2.3", """
        from adapterhub.hookspecs import hookimpl

        class Hello:
            name = "hello"
            help = "greet"
            def configure(self, parser):
                parser.add_argument("--who", default="third-party plugin")
            def run(self, args):
                print(f"hello from a {args.who}")
                return 0

        @hookimpl
        def adapterhub_register_commands(register):
            register(Hello())
    """),
}
BROKEN = ("boom", "badsig", "hookraise", "duplora")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugin-dists")
    dirs = []
    for name, (version, source) in PLUGINS.items():
        proj = root / f"adapterhub-{name}"
        pkg = proj / f"adapterhub_{name}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(textwrap.dedent(source))
        (proj / "pyproject.toml").write_text(textwrap.dedent(f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "adapterhub-{name}"
            version = "{version}"

            [project.entry-points.adapterhub]
            {name} = "adapterhub_{name}"

            [tool.setuptools]
            packages = ["adapterhub_{name}"]
        """))
        dirs.append(str(proj))
    target = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), *dirs]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr
    return target


def cli(site: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTERHUB_") or k in ("ADAPTERHUB_HOME", "ADAPTERHUB_MODEL_CACHE")}
    full["PYTHONPATH"] = str(site)
    full.update(env)
    return subprocess.run([ADAPTERHUB, *argv], capture_output=True, text=True, timeout=300, env=full)


def test_broken_plugins_are_listed_as_failed_and_cli_exits_0(site: Path) -> None:
    done = cli(site, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert set(PLUGINS) <= set(rows)
    for name in BROKEN:
        assert rows[name]["status"] == "failed" and rows[name]["builtin"] is False
        assert rows[name]["registered"] == {}
        assert "\n" not in rows[name]["error"]
    assert rows["boom"]["error"] == "import failed: RuntimeError: boom: missing native library (at adapterhub_boom/__init__.py:1)"
    assert rows["badsig"]["error"].startswith("invalid hook: PluginValidationError: Plugin 'badsig' for hook 'adapterhub_register_methods'")
    assert "model_name" in rows["badsig"]["error"]
    assert rows["hookraise"]["error"].startswith("adapterhub_register_methods raised: LookupError: hookraise: config file not found (at adapterhub_hookraise/__init__.py:")
    assert rows["duplora"]["error"].startswith("method 'lora' is registered by both 'adapterhub.plugins.lora' and 'duplora'")
    # Versions come from the installed distributions.
    assert [rows[n]["version"] for n in PLUGINS] == [v for v, _ in PLUGINS.values()]
    assert rows["hello"]["distribution"] == "adapterhub-hello"
    sleepy = rows["sleepy"]
    assert sleepy["status"] == "loaded" and 2.0 <= sleepy["load_seconds"] < 30
    assert rows["hello"]["status"] == "loaded" and rows["hello"]["registered"] == {"commands": ["hello"]}
    assert rows["adapterhub.plugins.lora"]["status"] == "loaded"
    assert rows["adapterhub.plugins.lora"]["registered"]["methods"] == ["lora"]


def test_strict_mode_is_fatal_with_one_line(site: Path) -> None:
    done = cli(site, "plugins", ADAPTERHUB_STRICT_PLUGINS="1", ADAPTERHUB_PLUGINS="boom")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        "adapterhub: error: plugin 'boom' failed (ADAPTERHUB_STRICT_PLUGINS=1): import failed: RuntimeError: boom: missing native library"
    )


# In-process runs over the same pip-installed entry points (real importlib.metadata
# discovery, real built-ins): cheap enough to cover every failure kind and env var.
@pytest.fixture
def on_path(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(site))
    yield
    for name in PLUGINS:
        sys.modules.pop(f"adapterhub_{name}", None)


# Built-ins the in-process strict runs need (lora: the name duplora collides with).
STRICT_BUILTINS = ("adapterhub.plugins.lora", "adapterhub.cli.core_commands")


@pytest.mark.parametrize("name", BROKEN)
def test_strict_each_failure_kind_in_process(on_path: None, name: str) -> None:
    env = {"ADAPTERHUB_STRICT_PLUGINS": "1", "ADAPTERHUB_PLUGINS": name}
    with pytest.raises((PluginLoadError, DuplicateNameError)) as info:
        Catalog(build_plugin_manager(builtins=STRICT_BUILTINS, environ=env))
    msg = str(info.value)
    assert "\n" not in msg and repr(name) in msg
    if name == "duplora":
        assert isinstance(info.value, DuplicateNameError)
        assert msg.startswith("method 'lora' is registered by both 'adapterhub.plugins.lora' and 'duplora'")
    else:
        assert msg.startswith(f"plugin '{name}' failed (ADAPTERHUB_STRICT_PLUGINS=1): ")


def test_commands_still_work_with_broken_plugins_installed(on_path: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Every installed plugin but the slow one, through the real default built-ins.
    env = {"ADAPTERHUB_PLUGINS": "hello," + ",".join(BROKEN)}
    cat = Catalog(build_plugin_manager(environ=env))
    assert {r.name for r in cat.failed} >= set(BROKEN)
    monkeypatch.setattr(catalog_mod, "_catalog", cat)
    try:
        assert main(["hello", "--who", "survivor"]) == 0
        assert capsys.readouterr().out == "hello from a survivor\n"
        assert main(["methods", "--json"]) == 0
        methods = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
        assert methods["lora"]["plugin"] == "adapterhub.plugins.lora"
        assert methods["lora"]["description"] != "a second lora"
    finally:
        reset_catalog()


def test_env_vars_select_plugins_in_process(on_path: None) -> None:
    only = Catalog(build_plugin_manager(environ={"ADAPTERHUB_PLUGINS": "hello,boom"}))
    third = {r.name: r.status for r in only.plugins if not r.builtin}
    assert third == {"boom": "failed", "hello": "loaded"}
    assert "hello" in only.commands and only.owner("commands", "hello") == "hello"
    assert only.owner("methods", "lora") == "adapterhub.plugins.lora"

    none = Catalog(build_plugin_manager(environ={"ADAPTERHUB_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    assert all(r.builtin for r in none.plugins) and "hello" not in none.commands
    assert "plugins" in none.commands  # built-ins stay
