"""A normal (non-editable) install into a fresh venv imports and lists every built-in plugin.

The fresh venv sees the dependencies (torch, transformers, pip...) through one plain path
line in a ``.pth`` file pointing at the project venv's site-packages. A plain path line
does not process *that* directory's ``.pth`` files, so the project's editable install
stays invisible: whatever ``adapterhub`` the new venv imports is the one pip built from a
clean copy of the source tree here. No network is used (``--no-index``).

It also drives ``adapterhub install``/``uninstall`` for real in that venv, including
while an installed plugin is broken and strict mode is on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from adapterhub.defaults import DEFAULT_PLUGINS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "adapterhub", "plugins", "registry")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def _clean_env(**extra: str) -> dict[str, str]:
    keep = ("ADAPTERHUB_HOME", "ADAPTERHUB_MODEL_CACHE")
    env = {k: v for k, v in os.environ.items() if (not k.startswith("ADAPTERHUB_") or k in keep) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:  # a clean copy: the build writes build/ and *.egg-info beside it
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, src / name)
    env_dir = root / "venv"
    done = _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root)
    assert done.returncode == 0, done.stderr
    py = env_dir / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout.strip())
    assert purelib.is_dir() and str(purelib).startswith(str(env_dir))
    (purelib / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The editable adapterhub must not be visible before the install.
    probe = _run([str(py), "-c", "import importlib.util as u; print(u.find_spec('adapterhub'))"], cwd=root, env=_clean_env())
    assert probe.stdout.strip() == "None", probe.stdout
    pip = [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src)]
    done = _run(pip, cwd=root, env=_clean_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    return env_dir


def _purelib(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def test_installed_package_imports_from_the_venv_without_top_level_plugins_or_registry(venv: Path) -> None:
    code = textwrap.dedent(f"""
        import importlib.util, json, adapterhub
        mods = {list(DEFAULT_PLUGINS)!r}
        print(json.dumps({{
            "adapterhub": adapterhub.__file__,
            "plugins": importlib.util.find_spec("plugins") is not None,
            "registry": importlib.util.find_spec("registry") is not None,
            "origins": {{m: (importlib.util.find_spec(m) or None) and importlib.util.find_spec(m).origin for m in mods}},
        }}))
    """)
    done = _run([str(venv / "bin" / "python"), "-c", code], cwd=venv, env=_clean_env())
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    site = _purelib(venv)
    assert info["adapterhub"] == str(site / "adapterhub" / "__init__.py")
    assert info["plugins"] is False and info["registry"] is False
    for module, origin in info["origins"].items():
        assert origin is not None and origin.startswith(str(site / "adapterhub")), (module, origin)
    top_level = sorted(p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth")))
    assert top_level == ["adapterhub"]
    record = next(site.glob("adapterhub-*.dist-info")) / "RECORD"
    roots = {line.split("/", 1)[0] for line in record.read_text().splitlines()}
    assert {r for r in roots if not r.endswith(".dist-info") and not r.startswith("..")} == {"adapterhub"}
    assert (site / "adapterhub" / "py.typed").is_file()
    # The hub's templates and stylesheet are package data: a normal install serves pages.
    hub = site / "adapterhub" / "registry" / "hub"
    for page in ("base.html", "browse.html", "adapter.html", "compare.html", "plugins.html", "error.html", "login.html"):
        assert (hub / "templates" / page).is_file(), page
    assert (hub / "static" / "hub.css").is_file()


def test_installed_console_script_lists_every_builtin_plugin(venv: Path) -> None:
    done = _run([str(venv / "bin" / "adapterhub"), "plugins", "--json"], cwd=venv, env=_clean_env())
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    for module in DEFAULT_PLUGINS:
        assert rows[module]["builtin"] is True and rows[module]["version"] == "0.1.0"
        assert rows[module]["status"] == "loaded", (module, rows[module]["error"])


def _dist(root: Path, name: str, source: str) -> Path:
    proj = root / f"adapterhub-{name}"
    (proj / f"adapterhub_{name}").mkdir(parents=True)
    (proj / f"adapterhub_{name}" / "__init__.py").write_text(textwrap.dedent(source))
    (proj / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "adapterhub-{name}"
        version = "0.3.0"

        [project.entry-points.adapterhub]
        {name} = "adapterhub_{name}"

        [tool.setuptools]
        packages = ["adapterhub_{name}"]
    """))
    return proj


HELLO = """
from adapterhub.hookspecs import hookimpl

class Hello:
    name = "hello"
    help = "greet"
    def configure(self, parser): pass
    def run(self, args):
        print("hello")
        return 0

@hookimpl
def adapterhub_register_commands(register):
    register(Hello())
"""


def test_install_and_uninstall_work_even_with_a_broken_plugin(venv: Path, tmp_path: Path) -> None:
    exe = str(venv / "bin" / "adapterhub")
    boom = _dist(tmp_path, "boom", "raise RuntimeError('broken on import')\n")
    hello = _dist(tmp_path, "hello", HELLO)
    site = _purelib(venv)

    done = _run([exe, "install", "--no-deps", "--no-build-isolation", str(boom)], cwd=tmp_path, env=_clean_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "new plugins: boom (adapterhub_boom)" in done.stdout
    assert next(site.glob("adapterhub_boom-0.3.0.dist-info")).is_dir()

    # Strict mode and a broken plugin: install still runs (it never builds the catalog).
    strict = _clean_env(ADAPTERHUB_STRICT_PLUGINS="1")
    done = _run([exe, "install", "--no-deps", "--no-build-isolation", str(hello)], cwd=tmp_path, env=strict, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "new plugins: hello (adapterhub_hello)" in done.stdout

    done = _run([exe, "plugins", "--json"], cwd=tmp_path, env=_clean_env())
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["boom"]["status"] == "failed" and "broken on import" in rows["boom"]["error"]
    assert rows["hello"]["status"] == "loaded" and rows["hello"]["registered"] == {"commands": ["hello"]}
    assert rows["hello"]["version"] == "0.3.0"

    done = _run([exe, "uninstall", "adapterhub-boom", "adapterhub-hello"], cwd=tmp_path, env=strict, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not list(site.glob("adapterhub_boom*")) and not list(site.glob("adapterhub_hello*"))


def test_the_venv_holds_no_cuda_or_triton_packages() -> None:
    """Torch is pinned to the CPU build first and xgrammar is installed without its declared
    triton: a resolver that slipped would pull gigabytes of CUDA wheels (issue 24)."""
    from importlib.metadata import distributions

    names = {(d.metadata["Name"] or "").lower() for d in distributions()}
    assert not {n for n in names if n.startswith("nvidia-") or n in ("triton", "pytorch-triton")}, names
    import torch
    import xgrammar  # noqa: F401 - structured output is installed, and imports without triton

    assert torch.version.cuda is None
