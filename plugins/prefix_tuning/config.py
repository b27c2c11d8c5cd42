"""Configuration of the ``prefix-tuning`` method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adapterhub.protocols.method import MethodConfig

PrefixInit = Literal["vocab", "normal", "zero"]


class PrefixTuningConfig(MethodConfig):
    """Prefix tuning (Li & Liang, 2021): trainable key/value "virtual tokens" per layer.

    The stored adapter is always the folded prefix (``prefix.key`` / ``prefix.value``);
    ``projection`` and the ``init`` options only shape *training*.
    """

    num_virtual_tokens: int = Field(20, ge=1, le=4096)
    """Number of virtual tokens prepended to every layer's keys and values."""

    projection: bool = False
    """Train through a reparameterization MLP (embedding -> tanh MLP -> key/values), like
    peft's ``prefix_projection``. It stabilises optimisation; it is folded away on save."""

    projection_hidden: int | None = Field(None, ge=1)
    """Hidden width of the reparameterization MLP; ``None`` uses the model's hidden size."""

    init: PrefixInit = "vocab"
    """How the prefix starts.

    * ``vocab``: the frozen base's own keys/values for ``num_virtual_tokens`` random
      vocabulary tokens (with ``projection``: the MLP's input embeddings are those tokens'
      word embeddings). Real activations have the right scale, which trains far more
      stably than random vectors (the paper's "initialise with real words" finding).
    * ``normal``: i.i.d. N(0, ``init_std``) prefix (with ``projection``: embedding).
    * ``zero``: all-zero prefix (with ``projection``: zero output layer, peft's
      ``init_weights="zero"``). Note a zero prefix still takes attention mass, so it is
      *not* the identity.
    """

    init_std: float = Field(0.02, gt=0.0, le=10.0)
    """Standard deviation for ``init="normal"``."""
