"""Hot-swap runtime: one frozen base model, a pool of adapters, per-row adapters."""

from adapterhub.host.host import BASE, AdapterHost, Generation

__all__ = ["BASE", "AdapterHost", "Generation"]
