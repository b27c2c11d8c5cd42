"""``serve --require-signed``: an adapter no trusted key signed is a 422 naming the reason,
and nothing of it is loaded; a signed one is served."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.keys import load_private_key
from adapterhub.registry.trust import TrustPolicy

from adapterhub.cli.main import main
from adapterhub.host import AdapterHost
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.serving import Engine
from adapterhub.serving.http.app import create_app
from adapterhub.serving.http.inprocess import serve_in_process
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_llama
from adapterhub.testing.signing import make_key, write_trust

BASE = "tiny-random-llama"


def _base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase(name=BASE, model=model, tokenizer=tok, path=None)


def _complete(url: str, model: str) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 2, "temperature": 0}, timeout=120)


def test_serve_require_signed_refuses_unsigned_and_untrusted_and_serves_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    base = _base()
    src = tmp_path / "a"
    make_adapter("lora", base.model, src, config={"r": 2, "alpha": 4}, name="t/a", version="1.0.0", seed=3)
    alice, mallory = make_key(tmp_path / "keys", "alice"), make_key(tmp_path / "keys", "mallory")
    policy = TrustPolicy(write_trust(tmp_path / "trust.yaml", {"alice": (alice, ["team/*"]), "mallory": (mallory, ["other/*"])}))
    reg = Registry(progress=False)
    for name in ("team/signed", "team/unsigned", "team/wrongkey"):
        reg.push(src, name, version="1.0.0")
    reg.sign("team/signed@1.0.0", load_private_key(str(alice.private)))
    reg.sign("team/wrongkey@1.0.0", load_private_key(str(mallory.private)))

    with Engine(AdapterHost(base), trust=policy) as eng, serve_in_process(create_app(eng, base_alias=BASE)) as url:
        r = _complete(url, "team/unsigned")
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "adapter_unsigned" and "team/unsigned@1.0.0 is unsigned" in err["message"]
        r = _complete(url, "team/wrongkey@1.0.0")
        assert r.status_code == 422 and "mallory: key not trusted for this name" in r.json()["error"]["message"]
        assert eng.host.loaded() == [], "a refused adapter must load nothing"
        r = _complete(url, "team/signed")
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "team/signed@1.0.0"
        assert eng.host.loaded() == ["team/signed@1.0.0"]


def test_serve_flags_are_checked_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAPTERHUB_TRUST", raising=False)
    assert main(["serve", "--require-signed"]) == 1
    assert "--require-signed needs a trust file" in capsys.readouterr().err
    key = make_key(tmp_path, "k")
    trust = write_trust(tmp_path / "trust.yaml", {"k": (key, ["*"])})
    (tmp_path / "dir").mkdir()
    assert main(["serve", "--require-signed", "--trust", str(trust), "--adapter", str(tmp_path / "dir")]) == 1
    assert "--adapter takes registry refs only" in capsys.readouterr().err
