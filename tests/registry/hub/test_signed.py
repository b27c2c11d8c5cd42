"""Signatures on the hub: verdicts against ``hub --trust`` on pages and in the JSON API,
``signed:yes`` search, pushes that carry signatures, ``--require-signed`` downloads."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.keys import load_private_key
from adapterhub.registry.signing import signature_id

from adapterhub.cli.main import main
from adapterhub.testing.hubserver import running_hub, token_for, write_tokens
from adapterhub.testing.signing import make_key, write_trust
from adapterhub.testing.stores import write_test_adapter

API = "/api/v1/adapters/team"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ADAPTERHUB_KEYS", str(tmp_path / "keys"))
    return tmp_path / "home"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_hub_shows_verdicts_filters_signed_and_takes_signed_pushes(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, mallory = make_key(tmp_path / "keys", "alice"), make_key(tmp_path / "keys", "mallory")
    trust = write_trust(tmp_path / "trust.yaml", {"alice": (alice, ["team/*"]), "mallory": (mallory, ["other/*"])})
    tokens = write_tokens(tmp_path / "tokens.yaml", {"ci": ("write", ["*"]), "reader": ("read", ["*"])})
    src = write_test_adapter(tmp_path / "a", seed=1)
    with running_hub(tmp_path / "hubstore", tokens=tokens, trust=trust) as hub:
        monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("ci"))
        # A push through the hub carries its signature; the hub signs nothing itself.
        code, out, err = _run(capsys, "push", str(src), "team/good@1.0.0", "--to", hub.url, "--sign", "alice")
        assert code == 0 and "signed team/good@1.0.0: signature" in out, err
        assert _run(capsys, "push", str(src), "team/wrong@1.0.0", "--to", hub.url, "--sign", "mallory")[0] == 0
        assert _run(capsys, "push", str(src), "team/none@1.0.0", "--to", hub.url)[0] == 0
        auth = {"Authorization": f"Bearer {token_for('reader')}"}

        show = httpx.get(f"{hub.url}{API}/good/versions/1.0.0", headers=auth).json()
        assert show["signed"] is True and [(s["key"], s["verdict"]) for s in show["signatures"]] == [("alice", "trusted")]
        wrong = httpx.get(f"{hub.url}{API}/wrong/versions/1.0.0/signatures", headers=auth).json()
        assert wrong["signed"] is False and wrong["signatures"][0]["verdict"] == "key not trusted for this name"
        assert signature_id(wrong["signatures"][0]["bundle"].encode()) == wrong["signatures"][0]["id"]
        none = httpx.get(f"{hub.url}{API}/none/versions/1.0.0", headers=auth).json()
        assert none["signed"] is False and none["signatures"] == []

        found = httpx.get(f"{hub.url}/api/v1/search", params={"q": "signed:yes"}, headers=auth).json()
        assert [r["ref"] for r in found["results"]] == ["team/good@1.0.0"] and found["results"][0]["signed"]
        found = httpx.get(f"{hub.url}/api/v1/search", params={"q": "signed:no"}, headers=auth).json()
        assert sorted(r["ref"] for r in found["results"]) == ["team/none@1.0.0", "team/wrong@1.0.0"]

        page = httpx.get(f"{hub.url}/a/team/good@1.0.0", headers=auth, follow_redirects=True)
        assert page.status_code == 200 and "<td>alice</td><td>trusted</td>" in page.text
        page = httpx.get(f"{hub.url}/a/team/none@1.0.0", headers=auth, follow_redirects=True)
        assert page.status_code == 200 and 'id="signed-state">unsigned' in page.text

        # Removing alice from the hub's trust file untrusts her signature at the next read.
        write_trust(trust, {"mallory": (mallory, ["other/*"])})
        st = trust.stat()
        os.utime(trust, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        show = httpx.get(f"{hub.url}{API}/good/versions/1.0.0", headers=auth).json()
        assert show["signed"] is False and show["signatures"][0]["verdict"] == "unknown key"

        # A body that is not the signature its name says, and a reader's write: refused.
        url = f"{hub.url}{API}/good/versions/1.0.0/signatures/{'0' * 64}"
        r = httpx.put(url, content=b"{}", headers={"Authorization": f"Bearer {token_for('ci')}"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "signature"
        assert httpx.put(url, content=b"{}", headers=auth).status_code == 403


def test_hub_require_signed_refuses_downloads_of_unsigned_versions(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    alice = make_key(tmp_path / "keys", "alice")
    trust = write_trust(tmp_path / "trust.yaml", {"alice": (alice, ["team/*"])})
    store_dir = tmp_path / "hubstore"
    reg = Registry(store_dir.as_uri(), progress=False)
    src = write_test_adapter(tmp_path / "a", seed=2)
    reg.push(src, "team/signed", version="1.0.0")
    reg.sign("team/signed@1.0.0", load_private_key(str(alice.private)))
    reg.push(src, "team/plain", version="1.0.0")
    with running_hub(store_dir, trust=trust, require_signed=True) as hub:
        code, out, err = _run(capsys, "pull", "team/signed@1.0.0", "--from", hub.url)
        assert code == 0 and out.strip().endswith("0"), err
        code, _, err = _run(capsys, "pull", "team/plain@1.0.0", "--from", hub.url)
        assert code == 1 and "team/plain@1.0.0 is unsigned" in err and err.count("\n") == 1
