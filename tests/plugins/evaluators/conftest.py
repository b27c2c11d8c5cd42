"""Local test setup: shared corpora importable; torch on one thread.

On a 2-core machine shared by many processes, torch's intra-op pool with 2 threads spends
most of its time spinning (a 40-step tiny-model fit took 27 s with 2 threads and 1 s
with 1), so these small-tensor tests run single-threaded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hf_modules_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One evaluate modules cache for the session, outside the user's ~/.cache.

    evaluate imports copied metric scripts as the package ``evaluate_modules`` from
    this directory; switching directories within one process breaks that import.
    """
    import evaluate.config

    path = tmp_path_factory.mktemp("hf-modules")
    before = evaluate.config.HF_MODULES_CACHE
    evaluate.config.HF_MODULES_CACHE = path
    yield path
    evaluate.config.HF_MODULES_CACHE = before
