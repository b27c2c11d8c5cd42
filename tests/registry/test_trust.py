"""Trust files: which key may sign for which names; rotation and revocation take effect
at the next check, with no cache that outlives the file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.keys import KeyInfo, load_private_key
from adapterhub.registry.trust import TrustPolicy

from adapterhub.errors import ConfigError, SignatureError
from adapterhub.testing.signing import make_key, write_trust

MakeAdapter = Callable[..., Path]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, KeyInfo]:
    return {n: make_key(tmp_path / "keys", n) for n in ("old", "new", "other")}


def _sign(reg: Registry, ref: str, key: KeyInfo) -> None:
    reg.sign(ref, load_private_key(str(key.private)))


def _touch_later(path: Path) -> None:
    # Filesystems with coarse mtimes: make sure a rewrite is seen as a change.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_rotation_two_keys_for_one_glob_then_revocation(
    registry: Registry, make_adapter: MakeAdapter, keys: dict[str, KeyInfo], tmp_path: Path,
) -> None:
    trust_file = write_trust(tmp_path / "trust.yaml", {"old": (keys["old"], ["team/*"]), "new": (keys["new"], ["team/*"])})
    policy = TrustPolicy(trust_file)
    a = registry.push(make_adapter(seed=1), "team/a")
    b = registry.push(make_adapter(seed=2), "team/b")
    _sign(registry, a, keys["old"])
    _sign(registry, b, keys["new"])
    assert registry.fetch(a, trust=policy)[0] == a
    assert registry.fetch(b, trust=policy)[0] == b

    # Revoke `old`: the same policy object refuses at once (the file is re-read on change).
    write_trust(trust_file, {"new": (keys["new"], ["team/*"])})
    _touch_later(trust_file)
    with pytest.raises(SignatureError, match=r"^team/a@0\.1\.0 is not signed by a trusted key: key [0-9a-f]{16}: unknown key$"):
        registry.fetch(a, trust=policy)
    assert registry.fetch(b, trust=policy)[0] == b
    # Re-signed with the new key, it passes again.
    _sign(registry, a, keys["new"])
    assert registry.fetch(a, trust=policy)[0] == a
    assert [v.key for v in registry.signature_verdicts(a, trust=policy)[1] if v.trusted] == ["new"]


def test_a_key_outside_its_glob_is_refused_naming_the_reason(
    registry: Registry, make_adapter: MakeAdapter, keys: dict[str, KeyInfo], tmp_path: Path,
) -> None:
    policy = TrustPolicy(write_trust(tmp_path / "trust.yaml", {"other": (keys["other"], ["other/*"])}))
    ref = registry.push(make_adapter(), "team/x")
    _sign(registry, ref, keys["other"])
    with pytest.raises(SignatureError, match=r"other: key not trusted for this name \(it may sign other/\*\)"):
        registry.fetch(ref, trust=policy)


def test_unsigned_is_refused_and_a_deleted_trust_file_trusts_nothing(
    registry: Registry, make_adapter: MakeAdapter, keys: dict[str, KeyInfo], tmp_path: Path,
) -> None:
    trust_file = write_trust(tmp_path / "trust.yaml", {"new": (keys["new"], ["*"])})
    policy = TrustPolicy(trust_file)
    ref = registry.push(make_adapter(), "team/x")
    with pytest.raises(SignatureError, match=r"^team/x@0\.1\.0 is unsigned"):
        registry.fetch(ref, trust=policy)
    _sign(registry, ref, keys["new"])
    assert registry.fetch(ref, trust=policy)[0] == ref
    trust_file.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        registry.fetch(ref, trust=policy)


@pytest.mark.parametrize("text, message", [
    ("keys: [{name: a, public_key: nope.pub, adapters: ['*']}]", "keys.0.public_key: cannot read"),
    ("keys: [{name: a, public_key: '-----BEGIN PUBLIC KEY-----\\nxx\\n-----END PUBLIC KEY-----', adapters: ['*']}]", "not a PEM public key"),
    ("keys: [{name: a, public_key: k.pub, adapters: []}]", "keys.0.adapters"),
    ("keys: [{name: a, public_key: k.pub, adapters: ['']}]", "patterns must not be empty"),
    ("keys: [{name: a, public_key: k.pub, adapters: ['*'], extra: 1}]", "keys.0.extra"),
    ("keys: [{name: a, public_key: k.pub, adapters: ['*']}, {name: a, public_key: k.pub, adapters: ['*']}]", "listed twice"),
    ("keys: [", "not valid YAML"),
])
def test_bad_trust_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    make_key(tmp_path, "k")
    f = tmp_path / "trust.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        TrustPolicy(f)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"--trust {f}")


def test_inline_pem_and_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_key(tmp_path, "k")
    f = tmp_path / "trust.yaml"
    import yaml

    f.write_text(yaml.safe_dump({"keys": [{"name": "k", "public_key": key.public.read_text(), "adapters": ["*"]}]}))
    monkeypatch.setenv("ADAPTERHUB_TRUST", str(f))
    policy = TrustPolicy.from_option(None)
    assert policy is not None and [k.fingerprint for k in policy.keys()] == [key.fingerprint]
    monkeypatch.delenv("ADAPTERHUB_TRUST")
    assert TrustPolicy.from_option(None) is None
