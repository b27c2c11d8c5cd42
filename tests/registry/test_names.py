"""The one naming rule: names, versions, tags, references and safe paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from adapterhub.registry.names import (
    MAX_SEGMENT,
    Ref,
    latest_version,
    next_version,
    parse_name_version,
    parse_ref,
    safe_join,
    split_name,
    validate_name,
    validate_tag,
    validate_version,
    version_key,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from adapterhub.errors import InvalidNameError

GOOD = ["sentiment", "team/sentiment", "Org_1/my.adapter-v2", "a", "a" * MAX_SEGMENT, f"{'n' * 96}/{'m' * 96}", "x1/y_2"]
BAD = [
    "", "/abs", "/etc/passwd", "../../etc", "a/../../b", "..", ".", "a/..", "a//b", "a/b/c", "a\\b",
    "nul\x00byte", "tab\tname", "new\nline", "a" * (MAX_SEGMENT + 1), "x" * 300, "ａdapter", "аdapter",
    "café", "-lead", ".hidden", "trail.", "trail-", "a--b", "a..b", "sp ace", "semi;colon", "a/", "/a",
    "~user", "$HOME", "a*b", "name@", "C:\\x",
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_one_line_error(name: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_name(name)
    msg = str(info.value)
    assert "\n" not in msg and "\x00" not in msg and len(msg) < 300


def test_unicode_lookalike_is_named_in_ascii() -> None:
    with pytest.raises(InvalidNameError, match=r"\\u0430dapter"):
        validate_name("аdapter")  # Cyrillic а


@pytest.mark.parametrize("v", ["0.1.0", "1.2.3", "10.20.30", "1.0.0-rc.1", "2.0.0-alpha"])
def test_good_versions(v: str) -> None:
    assert validate_version(v) == v


@pytest.mark.parametrize("v", ["1", "1.2", "01.2.3", "1.2.3.4", "v1.2.3", "1.2.3-", "1.2.3+build", "../1.0.0", "1.0.0\x00", "１.0.0"])
def test_bad_versions(v: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_version(v)


def test_tags() -> None:
    assert validate_tag("latest") == "latest"
    for bad in ("", "../x", "a/b", "1.2.3", "x" * 65, "tag\x00"):
        with pytest.raises(InvalidNameError):
            validate_tag(bad)


def test_refs() -> None:
    assert parse_ref("a/b") == Ref("a/b")
    assert parse_ref("a/b@1.2.0") == Ref("a/b", version="1.2.0")
    assert parse_ref("a/b:prod") == Ref("a/b", tag="prod")
    assert str(parse_ref("a/b:prod")) == "a/b:prod" and parse_ref("a@1.0.0").pinned
    for bad in ("a@1.0.0:prod", "a@", "a:", "@1.0.0", ":tag", "../a@1.0.0"):
        with pytest.raises(InvalidNameError):
            parse_ref(bad)
    assert parse_name_version("a/b@1.0.0") == ("a/b", "1.0.0")
    with pytest.raises(InvalidNameError, match="--tag"):
        parse_name_version("a/b:prod")


def test_version_order_and_next() -> None:
    vs = ["1.0.0", "1.10.0", "1.2.0", "1.10.0-rc.1", "1.10.0-rc.2", "0.9.9"]
    assert sorted(vs, key=version_key) == ["0.9.9", "1.0.0", "1.2.0", "1.10.0-rc.1", "1.10.0-rc.2", "1.10.0"]
    assert latest_version(vs) == "1.10.0"
    assert next_version([]) == "0.1.0"
    assert next_version(vs) == "1.10.1"
    assert next_version(["2.0.0-rc.1"]) == "0.1.0"


def test_split_name_uses_reserved_namespace() -> None:
    assert split_name("solo") == ("_", "solo")
    assert split_name("ns/solo") == ("ns", "solo")


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    assert safe_join(root, "a", "b") == (root / "a" / "b").resolve()
    for parts in (("..", "x"), ("/etc",), ("a/../../x",), ("a\x00",)):
        with pytest.raises(InvalidNameError):
            safe_join(root, *parts)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidNameError, match="outside the store"):
        safe_join(root, "link", "file")
    os.symlink(root / "a", root / "inner")  # a symlink that stays inside is fine
    assert safe_join(root, "inner").is_relative_to(root.resolve())


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=120))
def test_any_accepted_name_stays_inside(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    root = tmp_path_factory.getbasetemp() / "prop-root"
    root.mkdir(exist_ok=True)
    try:
        ns, base = split_name(text)
    except InvalidNameError:
        return
    assert text.isascii() and "\x00" not in text and ".." not in text
    assert safe_join(root, "adapters", ns, base).is_relative_to(root.resolve())
