"""``FullConfig``: the only knob of full fine-tuning.

Its own module, free of torch, so the config (and its JSON schema in ``adapterhub
methods --json``) loads without the method's implementation.
"""

from __future__ import annotations

from pydantic import Field

from adapterhub.protocols.method import MethodConfig


class FullConfig(MethodConfig):
    """Full fine-tuning: no adapter hyper-parameters, only whether detach() can restore."""

    restorable: bool = Field(
        default=True,
        description="Keep a CPU copy of the base so detach() restores it bit for bit (costs one "
        "base's worth of host memory; one-shot training runs may turn it off).",
    )


__all__ = ["FullConfig"]
