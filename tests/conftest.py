"""Session-wide test environment: a throw-away ADAPTERHUB_HOME, offline hubs, few threads.

The converted base-model cache is shared across test runs (``<repo>/.cache/models``) so
the one-time GGUF conversion of the packaged SmolLM2 model is paid once per machine.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ADAPTERHUB_MODEL_CACHE", str(REPO / ".cache" / "models"))
if "ADAPTERHUB_HOME" not in os.environ:
    os.environ["ADAPTERHUB_HOME"] = tempfile.mkdtemp(prefix="adapterhub-test-home-")

import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and OpenMP spin-waiting makes them
# 20x slower when the machine is busy; realmodel tests raise this themselves.
torch.set_num_threads(1)
