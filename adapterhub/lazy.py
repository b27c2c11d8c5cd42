"""Lazy plugin objects: what a plugin offers is known at once, its code loads on first use.

Every ``adapterhub`` command builds the catalog, which imports every plugin. A method's
implementation imports torch (and often transformers), which costs seconds; commands
such as ``score``, ``plugins`` or ``methods`` never run it. So a method plugin can
register a :class:`LazyMethod`: its name, kind, description and capabilities are plain
values, its ``config_cls`` is imported from a light config module when first asked for
(``adapterhub methods --json`` shows the config schema without torch), and its
implementation (``attach``, ``validate``, ``load``, ``runtime`` and any other attribute)
is imported on the first call. The built-in methods are declared this way; third-party
plugins may do the same, or register an ordinary method object.

The catalog checks what it can at registration (name, kind, capabilities) and leaves
the rest to the first real use, where a broken implementation raises
:class:`~adapterhub.errors.PluginLoadError` naming the method and its plugin, with the
same wording as the catalog's own checks (the CLI prints it as one line).

:func:`lazy_exports` gives a plugin package lazy module attributes (PEP 562), so
``from adapterhub.plugins.lora import LoraMethod`` still works without the package
importing torch up front.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from adapterhub.errors import PluginLoadError

if TYPE_CHECKING:
    import torch

    from adapterhub.protocols.method import (
        Capabilities,
        Method,
        MethodConfig,
        MethodKind,
        MethodRuntime,
        TrainableAdapter,
    )

_REQUIRED = ("attach", "validate", "load", "runtime")
# One lock for every lazy method: loading is rare and short, and a re-entrant lock lets
# an implementation's import use another lazy method.
_LOAD_LOCK = threading.RLock()


def import_object(spec: str) -> Any:
    """``"pkg.module:attr"`` (or ``"pkg.module:Outer.attr"``) → that object."""
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``name`` from ``exports[name]`` on first access.

    Use as ``__getattr__ = lazy_exports(__name__, {"LoraMethod": "pkg.lora.method"})``;
    the value is then cached on the package, so later lookups are plain attributes.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


class LazyMethod:
    """A method whose config and implementation are imported on first use.

    ``implementation`` is ``"module:attr"``: a class (instantiated once, without
    arguments) or a ready method object. ``config`` is ``"module:attr"`` of the pydantic
    config class, in a module that does not import torch; left out, ``config_cls``
    comes from the implementation. When the implementation loads, its name, kind,
    capabilities and ``config_cls`` must agree with this declaration.
    """

    def __init__(
        self,
        *,
        name: str,
        kind: MethodKind,
        description: str,
        capabilities: Capabilities,
        implementation: str,
        config: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.description = description
        self.capabilities = capabilities
        self.implementation = implementation
        self.config_spec = config
        self.plugin: str | None = None
        """The plugin that registered this method (set by the catalog; used in errors)."""
        self._impl: Method | None = None
        self._config_cls: type[MethodConfig] | None = None

    # -- loading -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """Whether the implementation has been imported."""
        return self._impl is not None

    def _label(self) -> str:
        return f"method {self.name!r}" + (f" from plugin {self.plugin!r}" if self.plugin else "")

    def _import(self, spec: str, what: str) -> Any:
        try:
            return import_object(spec)
        except Exception as exc:
            from adapterhub.pluginmanager import describe_error

            raise PluginLoadError(f"{self._label()} failed to load its {what} {spec!r}: {describe_error(exc)}") from exc

    def _check_config(self, cls: Any) -> type[MethodConfig]:
        if not callable(getattr(cls, "model_validate", None)):
            raise PluginLoadError(f"{self._label()} has no pydantic config_cls")
        return cls  # type: ignore[no-any-return]

    def _build(self) -> Method:
        obj = self._import(self.implementation, "implementation")
        if isinstance(obj, type):
            try:
                obj = obj()
            except Exception as exc:
                from adapterhub.pluginmanager import describe_error

                raise PluginLoadError(f"{self._label()}: {self.implementation} could not be created: {describe_error(exc)}") from exc
        missing = [m for m in _REQUIRED if not callable(getattr(obj, m, None))]
        if missing:
            raise PluginLoadError(f"{self._label()} lacks {', '.join(missing)}()")
        declared = {"name": self.name, "kind": self.kind, "capabilities": self.capabilities}
        for attr, value in declared.items():
            actual = getattr(obj, attr, None)
            if actual != value:
                raise PluginLoadError(
                    f"{self._label()} is registered with {attr} {value!r} but its implementation "
                    f"{self.implementation} has {actual!r}"
                )
        cls = self._check_config(getattr(obj, "config_cls", None))
        if self.config_spec is not None and cls is not self.config_cls:
            raise PluginLoadError(
                f"{self._label()}: config_cls of {self.implementation} is not {self.config_spec} as registered"
            )
        return obj  # type: ignore[no-any-return]

    def load_method(self) -> Method:
        """The implementation object, imported (and checked) on the first call."""
        impl = self._impl
        if impl is None:
            with _LOAD_LOCK:
                if self._impl is None:
                    self._impl = self._build()
                impl = self._impl
        return impl

    @property
    def config_cls(self) -> type[MethodConfig]:
        cls = self._config_cls
        if cls is None:
            if self.config_spec is None:
                cls = self.load_method().config_cls
            else:
                cls = self._check_config(self._import(self.config_spec, "config class"))
            self._config_cls = cls
        return cls

    @config_cls.setter
    def config_cls(self, cls: type[MethodConfig]) -> None:
        # Settable like the plain class attribute the Method protocol declares.
        self._config_cls = cls

    # -- the Method protocol, delegated ------------------------------------------------------------
    def attach(self, model: torch.nn.Module, config: MethodConfig) -> TrainableAdapter:
        return self.load_method().attach(model, config)

    def validate(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> None:
        self.load_method().validate(model, config, tensors)

    def load(self, model: torch.nn.Module, config: MethodConfig, tensors: Mapping[str, torch.Tensor]) -> TrainableAdapter:
        return self.load_method().load(model, config, tensors)

    def runtime(self, model: torch.nn.Module) -> MethodRuntime:
        return self.load_method().runtime(model)

    def __getattr__(self, attr: str) -> Any:
        # Only reached for names not set above: extras of the implementation
        # (``check``, ``merge``...). Private and dunder names are never forwarded, so
        # copy/pickle probes do not import the implementation.
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.load_method(), attr)

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"<LazyMethod {self.name!r} ({self.kind}) -> {self.implementation}, {state}>"


__all__ = ["LazyMethod", "import_object", "lazy_exports"]
