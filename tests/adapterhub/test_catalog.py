"""The catalog: per-plugin registration, owners, duplicates, lookups, base-model resolution."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from adapterhub import catalog as catalog_mod
from adapterhub.catalog import Catalog, get_catalog, reset_catalog
from adapterhub.defaults import DEFAULT_PLUGINS, ENTRY_POINT_GROUP
from adapterhub.errors import BaseModelError, DuplicateNameError, PluginLoadError, UnknownNameError
from adapterhub.pluginmanager import build_plugin_manager

# A complete (if useless) plugin: one object of every kind, so the owner bookkeeping of
# each registration hook is exercised.
FULL = """
from adapterhub.hookspecs import hookimpl
from adapterhub.protocols import Capabilities, MethodConfig

class Cfg(MethodConfig):
    scale: float = 1.0

class M:
    name = "{p}-method"
    kind = "additive"
    description = "test method"
    config_cls = Cfg
    capabilities = Capabilities(hot_swap=False, mixed_batch=False)
    def attach(self, model, config): raise NotImplementedError
    def validate(self, model, config, tensors): pass
    def load(self, model, config, tensors): raise NotImplementedError
    def runtime(self, model): raise NotImplementedError

class E:
    name = "{p}-eval"
    description = "test evaluator"
    needs_model = False
    def score(self, predictions, references, context=None, **options): raise NotImplementedError

class T:
    name = "{p}-task"
    description = "test task"
    evaluators = ("{p}-eval",)
    max_new_tokens = 8
    def load(self, split): return []
    def data_hash(self, split): return "0" * 64

class B:
    name = "{p}-base"
    description = "test base"
    def available(self): return (True, "here")
    def local_dir(self): return "/nowhere"

class C:
    name = "{p}-cmd"
    help = "test command"
    def configure(self, parser): pass
    def run(self, args): return 0

def store_factory(url): return url

@hookimpl
def adapterhub_register_methods(register): register(M())

@hookimpl
def adapterhub_register_evaluators(register): register(E())

@hookimpl
def adapterhub_register_tasks(register): register(T())

@hookimpl
def adapterhub_register_base_models(register): register(B())

@hookimpl
def adapterhub_register_stores(register): register("{p}s", store_factory)

@hookimpl
def adapterhub_register_commands(register): register(C())

@hookimpl
def adapterhub_resolve_base_model(spec):
    return B() if spec.startswith("{p}/") else None
"""


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], EntryPoint]]:
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def make(name: str, source: str) -> EntryPoint:
        (tmp_path / f"ahcat_{name}.py").write_text(textwrap.dedent(source))
        written.append(f"ahcat_{name}")
        return EntryPoint(name=name, value=f"ahcat_{name}", group=ENTRY_POINT_GROUP)

    yield make
    for mod in written:
        sys.modules.pop(mod, None)


def build(eps: list[EntryPoint], **env: str) -> Catalog:
    return Catalog(build_plugin_manager(builtins=[], entry_points=eps, environ=env))


def test_every_kind_is_registered_with_its_owner(make_plugin: Callable[[str, str], EntryPoint]) -> None:
    cat = build([make_plugin("alpha", FULL.format(p="alpha")), make_plugin("beta", FULL.format(p="beta"))])
    assert set(cat.methods) == {"alpha-method", "beta-method"}
    assert cat.method("beta-method").kind == "additive"
    assert cat.evaluator("alpha-eval").name == "alpha-eval"
    assert cat.task("alpha-task").max_new_tokens == 8
    assert cat.base_model("beta-base").available() == (True, "here")
    assert cat.store_factory("alphas")("alphas://x") == "alphas://x"
    assert cat.store_factory("BETAS://bucket/path") is cat.stores["betas"]
    assert set(cat.commands) == {"alpha-cmd", "beta-cmd"}
    for kind, name in [("methods", "beta-method"), ("evaluators", "beta-eval"), ("tasks", "beta-task"),
                       ("base_models", "beta-base"), ("stores", "betas"), ("commands", "beta-cmd")]:
        assert cat.owner(kind, name) == "beta"
    rec = cat.pm.record("alpha")
    assert rec.registered == {"methods": ["alpha-method"], "evaluators": ["alpha-eval"], "tasks": ["alpha-task"],
                              "base_models": ["alpha-base"], "stores": ["alphas"], "commands": ["alpha-cmd"]}
    assert rec.to_json()["registered"]["stores"] == ["alphas"]


def test_unknown_names_list_known_ones(make_plugin: Callable[[str, str], EntryPoint]) -> None:
    cat = build([make_plugin("alpha", FULL.format(p="alpha")), make_plugin("boom", "raise OSError('x')\n")])
    with pytest.raises(UnknownNameError) as info:
        cat.method("lora2")
    msg = str(info.value)
    assert msg == "unknown method 'lora2'; known: alpha-method (1 plugin(s) failed to load: see `adapterhub plugins`)"
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownNameError, match="unknown store scheme 'gs'"):
        cat.store_factory("gs://bucket")
    with pytest.raises(UnknownNameError, match="unknown catalog kind"):
        cat.owner("widgets", "x")
    with pytest.raises(UnknownNameError, match="unknown task 'nope'"):
        cat.owner("tasks", "nope")


def test_duplicate_name_fails_second_plugin_and_names_both(make_plugin: Callable[[str, str], EntryPoint]) -> None:
    first = make_plugin("first", FULL.format(p="shared"))
    # Same registrations under another plugin name: every name collides.
    second = make_plugin("second", FULL.format(p="shared"))
    cat = build([first, second])
    assert cat.pm.record("first").status == "loaded"
    rec = cat.pm.record("second")
    assert rec.status == "failed"
    assert rec.error == (
        "method 'shared-method' is registered by both 'first' and 'second' "
        "(names are never renamed; uninstall or disable one of them)"
    )
    assert cat.owner("methods", "shared-method") == "first"
    # The failed plugin contributed nothing and its hooks are gone (resolver included).
    assert rec.registered == {} and not cat.pm.is_registered(sys.modules["ahcat_second"])
    assert len(cat.pm.hook.adapterhub_resolve_base_model.get_hookimpls()) == 1


def test_duplicate_name_in_strict_mode_raises_naming_both(make_plugin: Callable[[str, str], EntryPoint]) -> None:
    eps = [make_plugin("first", FULL.format(p="shared")), make_plugin("second", FULL.format(p="shared"))]
    with pytest.raises(DuplicateNameError, match="registered by both 'first' and 'second'"):
        build(eps, ADAPTERHUB_STRICT_PLUGINS="1")


def test_raise_inside_a_hook_fails_only_that_plugin_and_discards_its_partial_work(make_plugin: Callable[[str, str], EntryPoint]) -> None:
    # Evaluators are collected after methods: the method staged first must be discarded.
    partial = FULL.format(p="partial").replace(
        "def adapterhub_register_evaluators(register): register(E())",
        "def adapterhub_register_evaluators(register): raise RuntimeError('evaluator data missing')",
    )
    cat = build([make_plugin("good", FULL.format(p="good")), make_plugin("partial", partial)])
    rec = cat.pm.record("partial")
    assert rec.status == "failed"
    assert rec.error is not None and rec.error.startswith("adapterhub_register_evaluators raised: RuntimeError: evaluator data missing (at ")
    assert "partial-method" not in cat.methods and "partial-cmd" not in cat.commands
    assert set(cat.methods) == {"good-method"}
    with pytest.raises(PluginLoadError, match="plugin 'partial' failed .*evaluator data missing"):
        build([make_plugin("partial", partial)], ADAPTERHUB_STRICT_PLUGINS="1")


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (('kind = "additive"', 'kind = "magic"'), "has kind 'magic'; expected one of reparameterization"),
        (("def runtime(self, model)", "def _runtime(self, model)"), "method 'bad-method' from plugin 'bad' lacks runtime()"),
        (('name = "bad-cmd"', "name = None"), "registered a command without a string name"),
        (('register("bads", store_factory)', 'register("Bad Scheme", store_factory)'), "is not a URL scheme"),
        (("register(M())", "register(M()); register(M())"), "method 'bad-method' is registered twice by plugin 'bad'"),
    ],
)
def test_malformed_registrations_fail_the_plugin(make_plugin: Callable[[str, str], EntryPoint], patch: tuple[str, str], expected: str) -> None:
    src = FULL.format(p="bad")
    assert patch[0] in src
    cat = build([make_plugin("bad", src.replace(patch[0], patch[1]))])
    rec = cat.pm.record("bad")
    assert rec.status == "failed" and expected in (rec.error or ""), rec.error
    assert cat.methods == {} and cat.commands == {}


def test_hookimpl_may_take_fewer_arguments(make_plugin: Callable[[str, str], EntryPoint]) -> None:
    src = """
    from adapterhub.hookspecs import hookimpl

    @hookimpl
    def adapterhub_register_tasks():
        pass
    """
    cat = build([make_plugin("noargs", src)])
    assert cat.pm.record("noargs").status == "loaded" and cat.tasks == {}


def test_resolve_base_model_firstresult_and_errors(make_plugin: Callable[[str, str], EntryPoint]) -> None:
    raising = """
    from adapterhub.hookspecs import hookimpl

    @hookimpl
    def adapterhub_resolve_base_model(spec):
        if spec == "explode":
            raise ConnectionError("hub unreachable")
        return None
    """
    cat = build([make_plugin("alpha", FULL.format(p="alpha")), make_plugin("raiser", raising)])
    found = cat.resolve_base_model("alpha/some-model")
    assert found is not None and found.name == "alpha-base"
    assert cat.resolve_base_model("unknown/model") is None
    with pytest.raises(BaseModelError, match="plugin 'raiser' failed to resolve base model 'explode': ConnectionError: hub unreachable"):
        cat.resolve_base_model("explode")


def test_get_catalog_is_cached_and_resettable() -> None:
    reset_catalog()
    try:
        cat = get_catalog()
        assert get_catalog() is cat
        names = [r.name for r in cat.plugins]
        assert names[: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)  # built-ins first, in order
        assert all(r.builtin for r in cat.plugins[: len(DEFAULT_PLUGINS)])
        # Every built-in that loaded owns what it registered.
        for rec in cat.plugins:
            for kind, items in rec.registered.items():
                assert all(cat.owner(kind, n) == rec.name for n in items)
        assert cat.owner("commands", "plugins") == "adapterhub.cli.core_commands"
        reset_catalog()
        assert catalog_mod._catalog is None
        assert get_catalog() is not cat
    finally:
        reset_catalog()


def test_strict_failure_is_not_cached(monkeypatch: pytest.MonkeyPatch, make_plugin: Callable[[str, str], EntryPoint]) -> None:
    boom = make_plugin("boom", "raise RuntimeError('nope')\n")
    monkeypatch.setattr(catalog_mod, "build_plugin_manager", lambda: build_plugin_manager(builtins=[], entry_points=[boom], environ={"ADAPTERHUB_STRICT_PLUGINS": "1"}))
    reset_catalog()
    with pytest.raises(PluginLoadError):
        get_catalog()
    assert catalog_mod._catalog is None
    reset_catalog()


def test_plugins_registered_by_hand_are_collected_with_a_record() -> None:
    from adapterhub.hookspecs import hookimpl

    class Inline:
        @hookimpl
        def adapterhub_register_evaluators(self, register: Callable[[object], None]) -> None:
            class Ev:
                name = "inline-eval"
                description = "registered by hand"
                needs_model = False

                def score(self, *a: object, **k: object) -> None:
                    raise NotImplementedError

            register(Ev())

    pm = build_plugin_manager(builtins=[], entry_points=[], environ={})
    pm.register(Inline(), name="inline")
    cat = Catalog(pm)
    assert cat.owner("evaluators", "inline-eval") == "inline"
    rec = cat.pm.record("inline")
    assert (rec.status, rec.builtin, rec.version) == ("loaded", False, "unknown")
