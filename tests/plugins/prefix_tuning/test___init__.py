"""The plugin registers ``prefix-tuning`` through the ordinary hook path."""

from __future__ import annotations

from typing import Any

from adapterhub.plugins import prefix_tuning
from adapterhub.plugins.prefix_tuning import PrefixTuningConfig, PrefixTuningMethod

from adapterhub.catalog import Catalog
from adapterhub.lazy import LazyMethod
from adapterhub.pluginmanager import build_plugin_manager


def test_hook_registers_the_method() -> None:
    got: list[Any] = []
    prefix_tuning.adapterhub_register_methods(got.append)
    # Registered lazily (adapterhub.lazy.LazyMethod); the implementation loads on first use.
    assert len(got) == 1 and isinstance(got[0], LazyMethod)
    assert got[0].config_cls is PrefixTuningConfig
    assert isinstance(got[0].load_method(), PrefixTuningMethod)


def test_catalog_finds_it_through_the_builtin_path() -> None:
    pm = build_plugin_manager(builtins=["adapterhub.plugins.prefix_tuning"], entry_points=[])
    catalog = Catalog(pm)
    method = catalog.method("prefix-tuning")
    assert method.kind == "additive"
    assert catalog.owner("methods", "prefix-tuning") == "adapterhub.plugins.prefix_tuning"
