"""Helpers for testing adapterhub and its plugins.

* :mod:`adapterhub.testing.models` — ``tiny_llama(seed=0)``, a tiny seeded Llama with an
  offline byte-level tokenizer, and ``tiny_llama_dir(path)``.
* :mod:`adapterhub.testing.fixtures` — pytest fixtures (``tiny_base``, ``tiny_model``,
  ``adapterhub_home``); enable with ``pytest_plugins = ["adapterhub.testing.fixtures"]``.
* conformance suites for method, evaluator and store plugins live in sibling modules.

Importing this package is cheap; transformers is imported only when a model is built.
"""

from __future__ import annotations

from adapterhub.testing.models import tiny_llama, tiny_llama_dir

__all__ = ["tiny_llama", "tiny_llama_dir"]
