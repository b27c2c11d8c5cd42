"""The one rule for "the bare base" and for the adapter name a reference refers to."""

from __future__ import annotations

import pytest

from adapterhub.refs import BASE, adapter_name, is_base, is_base_word


@pytest.mark.parametrize("ref", [None, "", BASE, "tiny-random-llama"])
def test_the_bare_base_is_named_four_ways(ref: str | None) -> None:
    assert is_base(ref, alias="tiny-random-llama")


@pytest.mark.parametrize("ref", ["base", "team/x", "team/x@1.0.0", "tiny-random-llama@1.0.0", " <base>"])
def test_anything_else_is_an_adapter(ref: str) -> None:
    assert not is_base(ref, alias="tiny-random-llama")


def test_only_typed_commands_take_the_word_base() -> None:
    assert is_base_word("base") and not is_base("base")


@pytest.mark.parametrize(("ref", "name"), [
    ("team/x", "team/x"), ("team/x@1.2.0", "team/x"), ("team/x:stable", "team/x"), ("sentiment", "sentiment"),
    ("not a ref@@", "not a ref@@"),
])
def test_adapter_name_drops_version_and_tag(ref: str, name: str) -> None:
    assert adapter_name(ref) == name
