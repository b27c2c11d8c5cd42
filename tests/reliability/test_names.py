"""Hostile names and paths against every registry operation (API and CLI).

Contract: a name or reference that breaks the rule, or a path that would resolve
outside the store (``..``, absolute paths, NUL, overlong, unicode look-alikes, symlinks
planted inside the store pointing out), is refused with a one-line ``InvalidNameError``
before anything is written, and neither the store nor anything outside it changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.names import parse_ref, validate_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.cli.main import main
from adapterhub.errors import AdapterNotFoundError, InvalidNameError
from adapterhub.testing.stores import write_test_adapter

HOSTILE_NAMES = [
    "../../etc", "../etc/passwd", "/etc/passwd", "/abs", "a/../../b", "a/./b", "./a", "a/..", "..", ".",
    "a//b", "a/b/c", "a\\..\\b", "C:\\Windows", "nul\x00byte", "a/\x00", "ctrl\x1bname", "line\nbreak",
    "x" * 300, "n" * 97, "ns/" + "m" * 97, "ａdapter", "аdapter", "adapter\u200b", "é", "team/ｘ",
    "-rf", ".git", "name.", "a--b", "~root", "%2e%2e/x", "", " ", "a b",
]
HOSTILE_REFS = HOSTILE_NAMES + ["x@../1.0.0", "x@1.0.0/../../", "x:../tag", "x:a/b", "x@1.0.0:t", "x@１.0.0", "x:" + "t" * 65]


def _snapshot(*roots: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            for f in files + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
                p = Path(dirpath, f)
                rel = str(p.relative_to(root.parent))
                if "views" in p.parts or "pending" in p.parts or p.name.startswith(("index.sqlite", "index.lock")):
                    continue
                out[rel] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
    return out


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Registry, Path, Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("root:x:0:0\n")
    reg = Registry(progress=False)
    adapter = write_test_adapter(tmp_path / "adapter", seed=1)
    reg.push(adapter, "good/one", version="1.0.0", tag="prod")
    return reg, adapter, outside


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_every_operation(world: tuple[Registry, Path, Path], name: str) -> None:
    reg, adapter, outside = world
    before = _snapshot(reg.local.root, outside)
    ops: list[Callable[[], object]] = [
        lambda: reg.push(adapter, name),
        lambda: reg.push(adapter, name, version="1.0.0"),
        lambda: reg.pull(name),
        lambda: reg.show(name),
        lambda: reg.tag(name, "t"),
        lambda: reg.rm(name, all_versions=True),
        lambda: reg.attach_evaluation(name, {"x": 1}),
        lambda: reg.verify(name),
    ]
    for op in ops:
        with pytest.raises(InvalidNameError) as info:
            op()
        msg = str(info.value)
        assert "\n" not in msg and "\x00" not in msg and len(msg) < 400
    assert _snapshot(reg.local.root, outside) == before


@pytest.mark.parametrize("ref", HOSTILE_REFS[-7:])
def test_hostile_refs(world: tuple[Registry, Path, Path], ref: str) -> None:
    reg, _, outside = world
    before = _snapshot(reg.local.root, outside)
    for op in (reg.pull, reg.show, lambda r: reg.rm(r)):
        with pytest.raises(InvalidNameError):
            op(ref)
    assert _snapshot(reg.local.root, outside) == before


@pytest.mark.parametrize("tag", ["../x", "a/b", "", "t\x00", "1.0.0", "ｔag", "x" * 65])
def test_hostile_tags(world: tuple[Registry, Path, Path], tag: str) -> None:
    reg, adapter, outside = world
    before = _snapshot(reg.local.root, outside)
    with pytest.raises(InvalidNameError):
        reg.tag("good/one@1.0.0", tag)
    with pytest.raises(InvalidNameError):
        reg.push(adapter, "good/two", tag=tag)
    assert _snapshot(reg.local.root, outside) == before


def _plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


@pytest.mark.parametrize("where", ["namespace", "name", "versions-file", "tag-file", "blob-shard", "view"])
def test_symlinks_pointing_out_of_the_store(world: tuple[Registry, Path, Path], where: str) -> None:
    reg, adapter, outside = world
    root = reg.local.root
    digest = next(reg.local.iter_blobs())
    if where == "namespace":
        _plant(root / "adapters" / "evil", outside)
        ops = [lambda: reg.push(adapter, "evil/x"), lambda: reg.pull("evil/x")]
    elif where == "name":
        _plant(root / "adapters" / "good" / "link", outside)
        ops = [lambda: reg.push(adapter, "good/link", version="1.0.0"), lambda: reg.pull("good/link@1.0.0")]
    elif where == "versions-file":
        _plant(root / "adapters" / "good" / "one" / "versions" / "6.6.6.json", outside / "etc" / "passwd")
        ops = [lambda: reg.pull("good/one@6.6.6")]
    elif where == "tag-file":
        _plant(root / "adapters" / "good" / "one" / "tags" / "evil", outside / "etc" / "passwd")
        ops = [lambda: reg.pull("good/one:evil"), lambda: reg.tag("good/one@1.0.0", "evil")]
    elif where == "blob-shard":
        reg.local.quarantine_blob(digest)
        shard = root / "blobs" / "sha256" / digest[:2]
        os.rmdir(shard)
        _plant(shard, outside)
        ops = [lambda: reg.pull("good/one@1.0.0"), lambda: reg.push(adapter, "good/three")]
    else:
        _plant(root / "views" / "good" / "one" / "1.0.0", outside)
        ops = [lambda: reg.pull("good/one@1.0.0")]
    before = _snapshot(outside)
    for op in ops:
        with pytest.raises(InvalidNameError, match="outside the store") as info:
            op()
        assert "\n" not in str(info.value)
    assert _snapshot(outside) == before
    assert (outside / "etc" / "passwd").read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("argv", [
    ["pull", "../../etc"], ["show", "/etc/passwd"], ["rm", "a/../../b", "--all"], ["tag", "x@1.0.0", "../t"],
    ["pull", "x" * 300], ["pull", "аdapter"], ["push", ".", "../../etc"],
])
def test_cli_one_line(world: tuple[Registry, Path, Path], argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "invalid" in err


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=40) | st.sampled_from(HOSTILE_REFS))
def test_fuzzed_refs_never_escape(world: tuple[Registry, Path, Path], text: str) -> None:
    reg, _, _ = world
    try:
        ref = parse_ref(text)
    except InvalidNameError:
        return
    validate_name(ref.name)
    assert ref.name.isascii() and ".." not in ref.name and not ref.name.startswith("/")
    try:
        path = reg.pull(text)
    except AdapterNotFoundError:
        return
    assert path.resolve().is_relative_to(reg.local.root.resolve())
