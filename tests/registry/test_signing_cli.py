"""The signing commands end to end through ``main``: keys, push --sign, sign (a reviewer's
counter-signature), signatures --out, verify's verdicts, pull --require-signed."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from adapterhub.cli.main import main
from adapterhub.testing.signing import write_trust

MakeAdapter = Callable[..., Path]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_push_sign_countersign_verify_and_pull(
    home: Path, make_adapter: MakeAdapter, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADAPTERHUB_KEYS", str(tmp_path / "keys"))
    monkeypatch.delenv("ADAPTERHUB_TRUST", raising=False)
    code, out, err = run(capsys, "keys", "generate", "author")
    assert code == 0 and "(0600)" in out, err
    assert stat.S_IMODE((tmp_path / "keys" / "author.key").stat().st_mode) == 0o600
    assert run(capsys, "keys", "generate", "reviewer", "--out", str(tmp_path / "rev"))[0] == 0
    code, out, _ = run(capsys, "keys", "list")
    assert code == 0 and "author" in out and "reviewer" not in out

    a = make_adapter(seed=21)
    code, out, err = run(capsys, "push", str(a), "team/cli", "--sign", "author")
    assert code == 0 and out.splitlines()[1].startswith("signed team/cli@0.1.0: signature "), err
    # The reviewer counter-signs the published version.
    code, out, err = run(capsys, "sign", "team/cli", "--key", str(tmp_path / "rev" / "reviewer.key"))
    assert code == 0 and "stored" in out, err

    trust = write_trust(tmp_path / "trust.yaml", {
        "author": (tmp_path / "keys" / "author.pub", ["team/*"]),
        "reviewer": (tmp_path / "rev" / "reviewer.pub", ["other/*"]),
    })
    code, out, _ = run(capsys, "verify", "team/cli", "--trust", str(trust))
    lines = sorted(out.splitlines()[:2])
    assert code == 0 and "author: trusted" in lines[0] + lines[1]
    assert "reviewer: key not trusted for this name (it may sign other/*)" in out
    assert out.splitlines()[-1] == "ok: 1 version(s), 1 blob(s) checked"

    code, out, err = run(capsys, "pull", "team/cli", "--require-signed", "--trust", str(trust))
    assert code == 0 and Path(out.strip()).is_dir(), err
    code, out, _ = run(capsys, "signatures", "team/cli", "--out", str(tmp_path / "sigs"), "--json")
    assert code == 0 and len(list((tmp_path / "sigs").glob("*.sig"))) == 2

    # Only the reviewer's key trusted for team/*: still passes (one trusted signature is enough);
    # with nobody trusted for team/*, refused with the reason, as pull and verify --require-signed.
    write_trust(trust, {"reviewer": (tmp_path / "rev" / "reviewer.pub", ["other/*"])})
    code, _, err = run(capsys, "pull", "team/cli", "--require-signed", "--trust", str(trust))
    assert code == 1 and err.count("\n") == 1
    assert "team/cli@0.1.0 is not signed by a trusted key: reviewer: key not trusted for this name" in err
    code, out, _ = run(capsys, "verify", "team/cli", "--trust", str(trust), "--require-signed")
    assert code == 1 and "problem: team/cli@0.1.0 is not signed by a trusted key" in out


def test_push_sign_with_a_bad_key_pushes_nothing(
    home: Path, make_adapter: MakeAdapter, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad.key").write_text("not a key")
    code, _, err = run(capsys, "push", str(make_adapter()), "team/nokey", "--sign", str(tmp_path / "bad.key"))
    assert code == 1 and "not a PEM private key" in err and err.count("\n") == 1
    code, _, err = run(capsys, "ls")
    assert "team/nokey" not in err and code == 0
    code, out, _ = run(capsys, "pull", "team/nokey")
    assert code == 1


def test_push_with_a_malformed_signature_file_pushes_nothing(
    home: Path, make_adapter: MakeAdapter, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad.sig").write_text("{oops")
    code, _, err = run(capsys, "push", str(make_adapter()), "team/badsig", "--signature", str(tmp_path / "bad.sig"))
    assert code == 1 and f"--signature {tmp_path / 'bad.sig'}: not a model-signing bundle: not JSON" in err
    assert err.count("\n") == 1
    code, _, _ = run(capsys, "pull", "team/badsig")
    assert code == 1
