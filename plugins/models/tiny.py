"""``tiny-random-llama``: the seeded tiny Llama from :mod:`adapterhub.testing.models`.

:mod:`adapterhub.testing.models` and :mod:`adapterhub.basemodels` import torch, so they
are imported when the model is built, not when the plugin loads.
"""

from __future__ import annotations

from pathlib import Path

from adapterhub import paths

# Bump when the model or tokenizer construction changes, so cached copies are rebuilt.
TINY_VERSION = 1


class TinyRandomLlamaSource:
    """A 90k-parameter random Llama (GQA) with a byte-level tokenizer; no network, ever."""

    name = "tiny-random-llama"
    description = "tiny seeded random Llama (hidden 64, 2 layers, GQA 4/2 heads) with a byte-level ChatML tokenizer; for tests and --quick runs"
    seed = 0

    def available(self) -> tuple[bool, str]:
        return True, "built in memory (seeded), no download"

    def _key(self) -> dict[str, object]:
        from adapterhub.testing.models import TINY_CONFIG

        return {"source": self.name, "version": TINY_VERSION, "seed": self.seed, "config": dict(TINY_CONFIG)}

    def local_dir(self) -> str:
        from adapterhub.basemodels import materialize_dir
        from adapterhub.testing.models import save_model_dir, tiny_llama

        def build(tmp: Path) -> None:
            model, tokenizer = tiny_llama(seed=self.seed)
            save_model_dir(model, tokenizer, tmp)

        final = paths.model_cache_dir() / self.name
        return str(materialize_dir(final, build, self._key()))
