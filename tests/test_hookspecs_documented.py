"""Meta-test: every hookspec is documented (docstring + docs/plugins.md) and exercised by a test."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy
import pytest

from adapterhub.hookspecs import PROJECT, AdapterhubSpec

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "plugins.md"


def hookspec_names() -> list[str]:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(AdapterhubSpec)
    names = sorted(n for n in vars(pm.hook) if not n.startswith("_"))
    # Every spec is reachable through the manager, and nothing else is prefixed.
    assert names == sorted(n for n in vars(AdapterhubSpec) if n.startswith("adapterhub_"))
    return names


HOOKS = hookspec_names()
TEST_SOURCES = {
    p: p.read_text(encoding="utf-8")
    for root in (REPO / "tests", *(REPO / "examples").glob("*/tests"))
    for p in root.rglob("*.py")
    if p.resolve() != Path(__file__).resolve()
}


def test_there_are_hooks_for_every_kind() -> None:
    assert len(HOOKS) >= 7
    for kind in ("methods", "evaluators", "stores", "tasks", "base_models", "commands"):
        assert f"adapterhub_register_{kind}" in HOOKS
    assert "adapterhub_resolve_base_model" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook: str) -> None:
    doc = getattr(AdapterhubSpec, hook).__doc__ or ""
    assert len(doc.strip()) > 20, f"{hook} has no real docstring in adapterhub/hookspecs.py"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_docs(hook: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    # A heading or table row naming the hook in code style, not a passing mention.
    assert re.search(rf"`{hook}\(", text), f"{hook} is not documented in {DOC.relative_to(REPO)}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    users = [p for p, src in TEST_SOURCES.items() if re.search(rf"def {hook}\(", src)]
    assert users, f"no test (under tests/ or examples/) implements {hook}"
