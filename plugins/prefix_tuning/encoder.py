"""The trainable prefix: direct key/value parameters, or embedding + reparameterization MLP."""

from __future__ import annotations

import torch
from adapterhub.plugins.prefix_tuning.config import PrefixTuningConfig
from adapterhub.plugins.prefix_tuning.layout import PrefixGeometry, output_cache
from torch import nn


class PrefixEncoder(nn.Module):
    """Produces the prefix ``(key, value)``, each ``(L, Hkv, T, D)``.

    * direct: one parameter ``prefix`` of shape ``(L, 2, Hkv, T, D)`` (index 0 = keys).
    * projection: ``embedding`` ``(T, hidden)`` -> ``Linear -> tanh -> Linear`` to
      ``(T, L*2*Hkv*D)``, read in peft's flat layout ``(T, L, 2, Hkv, D)`` so a
      projection-trained prefix folds to exactly what peft would store.
    """

    def __init__(self, geometry: PrefixGeometry, num_virtual_tokens: int, projection_hidden: int | None = None,
                 projection: bool = False, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.geometry = geometry
        self.num_virtual_tokens = num_virtual_tokens
        self.projection = projection
        g = geometry
        kw = {"device": device, "dtype": dtype}
        if projection:
            hidden = projection_hidden or g.hidden_size
            self.embedding = nn.Parameter(torch.empty(num_virtual_tokens, g.hidden_size, **kw))  # type: ignore[arg-type]
            self.mlp = nn.Sequential(
                nn.Linear(g.hidden_size, hidden, **kw),  # type: ignore[arg-type]
                nn.Tanh(),
                nn.Linear(hidden, g.flat_dim, **kw),  # type: ignore[arg-type]
            )
        else:
            shape = (g.num_layers, 2, g.num_kv_heads, num_virtual_tokens, g.head_dim)
            self.prefix = nn.Parameter(torch.empty(shape, **kw))  # type: ignore[arg-type]

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if self.projection:
            g = self.geometry
            flat = self.mlp(self.embedding)  # (T, L*2*Hkv*D)
            kv = flat.view(self.num_virtual_tokens, g.num_layers, 2, g.num_kv_heads, g.head_dim)
            kv = kv.permute(1, 2, 3, 0, 4)  # (L, 2, Hkv, T, D)
        else:
            kv = self.prefix
        return kv[:, 0], kv[:, 1]

    @torch.no_grad()
    def set_prefix(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Load folded tensors into a direct (non-projection) encoder."""
        if self.projection:
            raise ValueError("cannot load folded prefix tensors into a projection encoder")
        self.prefix.copy_(torch.stack([key, value], dim=1).to(self.prefix))


@torch.no_grad()
def initialise(encoder: PrefixEncoder, model: nn.Module, config: PrefixTuningConfig) -> None:
    """Initialise ``encoder`` from the global torch RNG (deterministic under a seed)."""
    if config.init == "vocab":
        vocab = model.get_input_embeddings().weight.shape[0]  # type: ignore[operator]
        ids = torch.randint(0, vocab, (config.num_virtual_tokens,))
        if encoder.projection:
            emb = model.get_input_embeddings()(ids.to(encoder.embedding.device))  # type: ignore[operator]
            encoder.embedding.copy_(emb)
        else:
            key, value = base_activations(model, ids)
            encoder.set_prefix(key, value)
        return
    if encoder.projection:
        if config.init == "normal":
            encoder.embedding.normal_(0.0, config.init_std)
        else:  # zero: peft's init_weights="zero" zeroes the output layer, prefix starts at 0
            encoder.embedding.normal_(0.0, 1.0)
            last = encoder.mlp[2]
            assert isinstance(last, nn.Linear)
            last.weight.zero_()
            last.bias.zero_()
    elif config.init == "normal":
        encoder.prefix.normal_(0.0, config.init_std)
    else:
        encoder.prefix.zero_()


@torch.no_grad()
def base_activations(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen base's own keys/values for token ``ids`` at positions 0..T-1: (L, Hkv, T, D)."""
    device = model.get_input_embeddings().weight.device  # type: ignore[operator]
    was_training = model.training
    model.eval()  # no dropout: the init depends only on the RNG draw of ids
    try:
        out = model(input_ids=ids.view(1, -1).to(device), use_cache=True)
    finally:
        model.train(was_training)
    cache = output_cache(out)
    keys = torch.stack([layer.keys[0] for layer in cache.layers])
    values = torch.stack([layer.values[0] for layer in cache.layers])
    return keys, values
