"""``LazyMethod``: declared metadata now, config and implementation on first use, clear errors."""

from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from adapterhub.catalog import Catalog
from adapterhub.defaults import DEFAULT_PLUGINS, ENTRY_POINT_GROUP
from adapterhub.errors import PluginLoadError
from adapterhub.lazy import LazyMethod, import_object, lazy_exports
from adapterhub.pluginmanager import build_plugin_manager
from adapterhub.protocols import Method
from adapterhub.protocols.capabilities import Capabilities

CAPS = Capabilities(hot_swap=False, mixed_batch=False)

# A method implementation module; `{extra}` varies what is wrong with it.
IMPL = """
from pydantic import Field
from adapterhub.protocols.method import Capabilities, MethodConfig

class Cfg(MethodConfig):
    size: int = Field(2, ge=1)

class NotPydantic:
    pass

class Impl:
    name = "toy"
    kind = "selective"
    description = "toy"
    config_cls = Cfg
    capabilities = Capabilities(hot_swap=False, mixed_batch=False)
    def attach(self, model, config): return ("attached", model, config)
    def validate(self, model, config, tensors): return None
    def load(self, model, config, tensors): return ("loaded", model)
    def runtime(self, model): raise NotImplementedError("not hot-swappable")
    def extra(self): return "extra"
{extra}
"""

PLUGIN = """
from adapterhub.hookspecs import hookimpl
from adapterhub.lazy import LazyMethod
from adapterhub.protocols.capabilities import Capabilities

@hookimpl
def adapterhub_register_methods(register):
    register(LazyMethod(name="toy", kind="selective", description="toy",
                        capabilities=Capabilities(hot_swap=False, mixed_batch=False),
                        implementation={impl!r}, config={config!r}))
"""


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for mod in written:
        sys.modules.pop(mod, None)


def lazy(implementation: str, config: str | None = None, **overrides: object) -> LazyMethod:
    args: dict[str, object] = {"name": "toy", "kind": "selective", "description": "toy", "capabilities": CAPS}
    args.update(overrides)
    return LazyMethod(implementation=implementation, config=config, **args)  # type: ignore[arg-type]


def test_metadata_needs_no_import_and_code_loads_on_first_use(modules: Callable[[str, str], str]) -> None:
    mod = modules("ahlazy_ok", IMPL.format(extra=""))
    m = lazy(f"{mod}:Impl", f"{mod}:Cfg")
    assert (m.name, m.kind, m.capabilities.hot_swap) == ("toy", "selective", False)
    assert mod not in sys.modules and not m.loaded
    assert m.config_cls.__name__ == "Cfg" and not m.loaded  # the config alone
    assert isinstance(m, Method)
    assert m.attach("model", "cfg") == ("attached", "model", "cfg")
    assert m.loaded and m.load_method() is m.load_method()
    assert m.load("model", "cfg", {}) == ("loaded", "model")
    assert m.extra() == "extra"  # other attributes of the implementation are forwarded
    with pytest.raises(NotImplementedError):
        m.runtime("model")
    with pytest.raises(AttributeError):
        m._private  # noqa: B018 -- never forwarded (copy/pickle probes stay cheap)
    assert "loaded" in repr(m)


def test_implementation_may_be_an_object_and_config_may_come_from_it(modules: Callable[[str, str], str]) -> None:
    mod = modules("ahlazy_obj", IMPL.format(extra="INSTANCE = Impl()"))
    m = lazy(f"{mod}:INSTANCE")
    assert m.config_cls.__name__ == "Cfg"
    assert m.load_method() is sys.modules[mod].INSTANCE


@pytest.mark.parametrize(
    ("extra", "spec", "config", "overrides", "message"),
    [
        ("", "ahlazy_bad:Missing", None, {}, "method 'toy' failed to load its implementation 'ahlazy_bad:Missing': AttributeError"),
        ("raise ImportError('needs a newer torch')", "ahlazy_bad:Impl", None, {}, "failed to load its implementation 'ahlazy_bad:Impl': ImportError: needs a newer torch"),
        ("del Impl.attach", "ahlazy_bad:Impl", None, {}, "method 'toy' lacks attach()"),
        ("Impl.config_cls = NotPydantic", "ahlazy_bad:Impl", None, {}, "method 'toy' has no pydantic config_cls"),
        ("", "ahlazy_bad:Impl", None, {"kind": "additive"}, "registered with kind 'additive' but its implementation ahlazy_bad:Impl has 'selective'"),
        ("", "ahlazy_bad:Impl", "ahlazy_bad:NotPydantic", {}, "method 'toy' has no pydantic config_cls"),
        ("class Other(Cfg): pass", "ahlazy_bad:Impl", "ahlazy_bad:Other", {}, "config_cls of ahlazy_bad:Impl is not ahlazy_bad:Other"),
    ],
)
def test_broken_implementation_is_one_clear_plugin_load_error(
    modules: Callable[[str, str], str], extra: str, spec: str, config: str | None, overrides: dict[str, object], message: str
) -> None:
    modules("ahlazy_bad", IMPL.format(extra=extra))
    m = lazy(spec, config, **overrides)
    with pytest.raises(PluginLoadError) as info:
        m.attach("model", "cfg")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not m.loaded


def test_catalog_defers_checks_and_errors_name_the_plugin(modules: Callable[[str, str], str]) -> None:
    # The implementation module does not even exist: listing still works, use fails clearly.
    modules("ahlazy_plugin", PLUGIN.format(impl="ahlazy_missing_mod:Impl", config="ahlazy_missing_mod:Cfg"))
    ep = EntryPoint(name="toyplug", value="ahlazy_plugin", group=ENTRY_POINT_GROUP)
    cat = Catalog(build_plugin_manager(builtins=[], entry_points=[ep], environ={}))
    assert cat.failed == [] and cat.owner("methods", "toy") == "toyplug"
    method = cat.method("toy")
    assert method.kind == "selective"
    with pytest.raises(PluginLoadError, match=r"^method 'toy' from plugin 'toyplug' failed to load its config class 'ahlazy_missing_mod:Cfg': ModuleNotFoundError"):
        _ = method.config_cls
    with pytest.raises(PluginLoadError, match="from plugin 'toyplug' failed to load its implementation"):
        method.runtime(None)  # type: ignore[arg-type]


def test_catalog_still_checks_declared_kind_and_capabilities(modules: Callable[[str, str], str]) -> None:
    source = PLUGIN.format(impl="x:Y", config=None).replace('kind="selective"', 'kind="sideways"')
    modules("ahlazy_badkind", source)
    ep = EntryPoint(name="badkind", value="ahlazy_badkind", group=ENTRY_POINT_GROUP)
    cat = Catalog(build_plugin_manager(builtins=[], entry_points=[ep], environ={}))
    assert "toy" not in cat.methods
    (rec,) = cat.failed
    assert rec.name == "badkind" and "has kind 'sideways'" in (rec.error or "")


def test_builtin_declarations_match_their_implementations() -> None:
    cat = Catalog(build_plugin_manager(builtins=DEFAULT_PLUGINS, entry_points=[], environ={}))
    builtins = {name: m for name, m in cat.methods.items() if cat.owner("methods", name).startswith("adapterhub.")}
    assert set(builtins) == {"lora", "prefix-tuning", "layer-selective", "full"}
    for m in builtins.values():
        assert isinstance(m, LazyMethod)
        impl = m.load_method()  # checks name, kind, capabilities and config_cls agree
        assert impl.config_cls is m.config_cls and impl.description == m.description


def test_lazy_exports_and_import_object(monkeypatch: pytest.MonkeyPatch) -> None:
    import adapterhub.plugins.lora as lora_pkg

    assert import_object("adapterhub.plugins.lora.config:LoraConfig") is lora_pkg.LoraConfig
    assert import_object("adapterhub.protocols.capabilities:Capabilities.__name__") == "Capabilities"
    pkg = types.ModuleType("ahlazy_pkg")
    monkeypatch.setitem(sys.modules, "ahlazy_pkg", pkg)
    pkg.__getattr__ = lazy_exports("ahlazy_pkg", {"LazyMethod": "adapterhub.lazy"})  # type: ignore[method-assign]
    assert pkg.LazyMethod is LazyMethod
    assert "LazyMethod" in vars(pkg)  # cached: later lookups are plain attributes
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        pkg.nope  # noqa: B018
