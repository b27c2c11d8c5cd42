"""Make real adapter artifacts quickly, for tests of hosts, stores and plugins.

``make_adapter`` attaches a method to a base, fills its trainable parameters with
seeded random values (a freshly initialised LoRA has B = 0 and would be a no-op, which
would make swap tests pass vacuously), writes the artifact with a correct manifest and
detaches again, leaving the base bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from adapterhub.artifact import write_adapter
from adapterhub.fingerprint import fingerprint
from adapterhub.manifest import Manifest


def make_adapter(
    method_name: str,
    model: torch.nn.Module,
    out_dir: str | Path,
    *,
    base_name: str = "tiny-random-llama",
    config: Mapping[str, Any] | None = None,
    name: str = "test-adapter",
    seed: int = 0,
    scale: float = 0.05,
    task: str | None = None,
    version: str | None = None,
) -> Manifest:
    """Write an adapter of ``method_name`` for ``model`` into ``out_dir`` and return its manifest."""
    from adapterhub.catalog import get_catalog

    method = get_catalog().method(method_name)
    cfg = method.config_cls.model_validate(dict(config or {}))
    adapter = method.attach(model, cfg)
    try:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in adapter.trainable_parameters():
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
                if method.kind in ("selective", "full"):
                    p.add_(noise * scale)  # perturb the base values, keep them plausible
                else:
                    p.copy_(noise * scale)
        tensors = adapter.adapter_state()
    finally:
        adapter.detach()
    fields = {
        "name": name,
        "version": version,
        "task": task,
        "method": method.name,
        "method_kind": method.kind,
        "method_config": cfg.model_dump(mode="json"),
        "base": fingerprint(model, base_name),
        "trainable_parameters": sum(int(t.numel()) for t in tensors.values()),
    }
    return write_adapter(out_dir, fields, tensors)
