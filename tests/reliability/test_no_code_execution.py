"""No path in adapterhub can execute code hidden in a file it reads.

Two halves:

* **Static**: an AST walk over every ``.py`` file under ``adapterhub/``, ``plugins/``,
  ``registry/`` and ``examples/`` proves no code calls a deserialiser that can run code
  (``torch.load``, ``pickle.load(s)``/``Unpickler``, ``marshal.load(s)``, ``eval``,
  ``exec``, ``yaml.load`` without a safe loader, ``numpy.load(allow_pickle=True)``, ...)
  and that every ``*Model*.from_pretrained`` asks for safetensors (or a GGUF file), since
  transformers/PEFT fall back to ``torch.load`` of a ``.bin`` file otherwise. A loader
  that cannot take ``use_safetensors`` (``PeftModel.from_pretrained``) is accepted only
  with a ``# no-pickle: <why>`` comment on the call, e.g. when it is handed a private
  directory holding nothing but already-verified safetensors bytes.
  Import aliases (``import pickle as p``, ``from torch import load``) are resolved. The
  checker itself is tested on a snippet holding every forbidden form, so it cannot pass
  vacuously.
* **Dynamic**: real pickles (``torch.save`` zip and legacy output, and ``pickle.dumps`` of
  an object whose ``__reduce__`` creates a marker file, protocols 0-5) disguised as
  ``adapter.safetensors`` in an otherwise valid adapter directory (the manifest records
  their true size and sha256, so only the format can give them away) are refused with
  ``UnsafeFileError`` by ``read_adapter``, ``Registry.push``, the ``adapterhub push`` CLI
  and ``AdapterHost.load`` (from a directory, and from a registry ref whose blob was
  planted behind push's back). Every deserialiser that could run the payload is patched
  to fail the test if called, and the marker file must never appear. A control run proves
  each payload is live: plain ``pickle.loads``/``torch.load`` does create its marker.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from adapterhub.artifact import read_adapter, sha256_file
from adapterhub.errors import UnsafeFileError
from adapterhub.manifest import MANIFEST_NAME, WEIGHTS_NAME
from adapterhub.testing.stores import write_test_adapter

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("adapterhub", "plugins", "registry", "examples")

# Fully qualified callables that deserialise by running code (or can).
FORBIDDEN_CALLS: dict[str, str] = {
    "torch.load": "torch.load unpickles",
    "torch.serialization.load": "torch.load unpickles",
    "torch.jit.load": "TorchScript archives carry pickled state",
    "pickle.load": "unpickling runs code",
    "pickle.loads": "unpickling runs code",
    "pickle.Unpickler": "unpickling runs code",
    "_pickle.load": "unpickling runs code",
    "_pickle.loads": "unpickling runs code",
    "_pickle.Unpickler": "unpickling runs code",
    "cPickle.load": "unpickling runs code",
    "cPickle.loads": "unpickling runs code",
    "dill.load": "unpickling runs code",
    "dill.loads": "unpickling runs code",
    "cloudpickle.load": "unpickling runs code",
    "cloudpickle.loads": "unpickling runs code",
    "joblib.load": "joblib files are pickles",
    "pandas.read_pickle": "unpickling runs code",
    "shelve.open": "shelve values are pickles",
    "marshal.load": "marshal loads code objects",
    "marshal.loads": "marshal loads code objects",
    "builtins.eval": "eval runs code",
    "builtins.exec": "exec runs code",
    "yaml.unsafe_load": "unsafe YAML constructs objects",
    "yaml.unsafe_load_all": "unsafe YAML constructs objects",
    "yaml.full_load": "full YAML loader constructs objects",
    "yaml.full_load_all": "full YAML loader constructs objects",
}
YAML_SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
GGUF_OR_SAFETENSORS = ("use_safetensors", "gguf_file")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


class _Checker(ast.NodeVisitor):
    """Resolve each call's target through the module's imports, then judge it."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.aliases: dict[str, str] = {}  # local name -> fully qualified name
        self.findings: list[Finding] = []

    # -- imports ------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                top = a.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    # -- calls ----------------------------------------------------------------------------
    def _qualname(self, expr: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        root = self.aliases.get(expr.id)
        if root is None:
            # Unimported bare names: builtins (eval, exec, __import__) or locals.
            root = f"builtins.{expr.id}" if not parts else expr.id
        return ".".join([root, *reversed(parts)])

    def _flag(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), what))

    def visit_Call(self, node: ast.Call) -> None:
        q = self._qualname(node.func)
        if q is not None:
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if q in FORBIDDEN_CALLS:
                self._flag(node, f"calls {q} ({FORBIDDEN_CALLS[q]})")
            elif q in ("yaml.load", "yaml.load_all"):
                loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
                name = loader.attr if isinstance(loader, ast.Attribute) else loader.id if isinstance(loader, ast.Name) else None
                if name not in YAML_SAFE_LOADERS:
                    self._flag(node, f"calls {q} without Loader=SafeLoader")
            elif q == "numpy.load":
                ap = kw.get("allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    self._flag(node, "calls numpy.load with allow_pickle other than False")
            elif q.endswith(".from_pretrained") and "Model" in q.rsplit(".", 2)[-2]:
                # transformers falls back to pickle .bin weights unless told otherwise.
                st_kw = kw.get("use_safetensors")
                safe = isinstance(st_kw, ast.Constant) and st_kw.value is True
                span = self.lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
                justified = any("# no-pickle:" in ln for ln in span)
                if not safe and "gguf_file" not in kw and not justified:
                    self._flag(node, f"calls {q} without use_safetensors=True (or gguf_file=, or a '# no-pickle: <why>' comment)")
        self.generic_visit(node)


def scan_source(source: str, path: str) -> list[Finding]:
    checker = _Checker(path, source.splitlines())
    checker.visit(ast.parse(source, filename=path))
    return checker.findings


def _python_files() -> Iterator[Path]:
    for top in SCANNED:
        for p in sorted((REPO / top).rglob("*.py")):
            if not any(part in (".venv", "build", "__pycache__") or part.endswith(".egg-info") for part in p.parts):
                yield p


def test_no_code_executing_deserialiser_anywhere() -> None:
    files = list(_python_files())
    assert len(files) > 50, f"scanned only {len(files)} files: is the repo layout right?"
    findings = [f for p in files for f in scan_source(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not findings, "code-executing deserialisation found:\n" + "\n".join(map(str, findings))


BAD_SNIPPET = '''
import pickle, marshal, yaml
import torch as T
import numpy as np
from pickle import loads as pl
from torch import load
from transformers import AutoModelForCausalLM, AutoTokenizer
T.load("x")
load("x")
pickle.load(f)
pl(b"")
pickle.Unpickler(f).load()
marshal.loads(b"")
eval("1")
exec("x = 1")
yaml.load(s)
yaml.load(s, Loader=yaml.Loader)
np.load("x", allow_pickle=True)
AutoModelForCausalLM.from_pretrained("dir")
PeftModel.from_pretrained(m, d)
'''
GOOD_SNIPPET = '''
import pickle, yaml
import numpy as np
from transformers import AutoModelForCausalLM, AutoTokenizer
pickle.dumps(1)
model.eval()
yaml.safe_load(s)
yaml.load(s, Loader=yaml.SafeLoader)
np.load("x")
np.load("x", allow_pickle=False)
AutoModelForCausalLM.from_pretrained("dir", use_safetensors=True)
AutoModelForCausalLM.from_pretrained("dir", gguf_file="m.gguf")
AutoTokenizer.from_pretrained("dir")
PeftModel.from_pretrained(m, private_copy)  # no-pickle: private dir of verified safetensors
'''


def test_checker_finds_every_forbidden_form() -> None:
    bad = scan_source(BAD_SNIPPET, "bad.py")
    lines = sorted(f.line for f in bad)
    assert lines == list(range(8, 21)), "\n".join(map(str, bad))
    assert all(str(f).startswith("bad.py:") for f in bad)
    assert scan_source(GOOD_SNIPPET, "good.py") == []


# --- dynamic: real pickles disguised as adapter.safetensors ----------------------------------


class _Payload:
    """Unpickling this creates ``marker`` (via os.system, a classic pickle exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _disguise(adapter: Path, data: bytes) -> Path:
    """Put ``data`` in place of the weights and make the manifest vouch for it."""
    weights = adapter / WEIGHTS_NAME
    weights.write_bytes(data)
    raw = json.loads((adapter / MANIFEST_NAME).read_text())
    for entry in raw["files"]:
        if entry["path"] == WEIGHTS_NAME:
            entry["size"] = len(data)
            entry["sha256"] = sha256_file(weights)
    (adapter / MANIFEST_NAME).write_text(json.dumps(raw))
    return adapter


def _torch_zip(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"model.layers.0.self_attn.q_proj.lora_A": torch.zeros(4, 64), "evil": _Payload(marker)}, buf)
    return buf.getvalue()


def _torch_legacy(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2), "evil": _Payload(marker)}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


KINDS = ["torch-zip", "torch-legacy", *(f"pickle-p{p}" for p in range(6))]


def _payload(kind: str, marker: Path) -> bytes:
    if kind == "torch-zip":
        return _torch_zip(marker)
    if kind == "torch-legacy":
        return _torch_legacy(marker)
    return pickle.dumps(_Payload(marker), protocol=int(kind[-1]))


class _Deserialised(AssertionError):
    pass


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every code-running deserialiser fails the test if anything calls it."""
    import _pickle

    import numpy
    import torch.serialization

    calls: list[str] = []

    def trap(label: str) -> object:
        def refuse(*args: object, **kwargs: object) -> None:
            calls.append(label)
            raise _Deserialised(f"{label} was called while reading an adapter")

        return refuse

    for mod, attr in [
        (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (_pickle, "load"), (_pickle, "loads"),
        (_pickle, "Unpickler"), (torch, "load"), (torch.serialization, "load"), (numpy, "load"),
    ]:
        monkeypatch.setattr(mod, attr, trap(f"{mod.__name__}.{attr}"))
    return calls


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "the pickle payload ran: its marker file exists"


def test_payloads_are_live(tmp_path: Path) -> None:
    """Control: each payload, deserialised the unsafe way, really runs (creates its marker)."""
    for kind in KINDS:
        control = tmp_path / f"control-{kind}"
        data = _payload(kind, control)
        if kind.startswith("torch"):
            torch.load(io.BytesIO(data), weights_only=False)  # noqa: S614 - the control, on purpose
        else:
            pickle.loads(data)  # noqa: S301 - the control, on purpose
        assert control.exists(), f"{kind}: control unpickling did not run the payload"


@pytest.mark.parametrize("kind", KINDS)
def test_read_adapter_refuses_disguised_pickle(kind: str, tmp_path: Path, marker: Path, no_unpickling: list[str]) -> None:
    adapter = _disguise(write_test_adapter(tmp_path / "a"), _payload(kind, marker))
    with pytest.raises(UnsafeFileError) as info:
        read_adapter(adapter)
    msg = str(info.value)
    assert WEIGHTS_NAME in msg and "\n" not in msg
    assert no_unpickling == []


@pytest.mark.parametrize("kind", ["torch-zip", "pickle-p0", "pickle-p4"])
def test_registry_push_refuses_disguised_pickle(
    kind: str, tmp_path: Path, marker: Path, no_unpickling: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapterhub.registry.client import Registry

    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    adapter = _disguise(write_test_adapter(tmp_path / "a"), _payload(kind, marker))
    reg = Registry(progress=False)
    with pytest.raises(UnsafeFileError):
        reg.push(adapter, "team/evil", version="1.0.0")
    assert list(reg.local.iter_blobs()) == [] and list(reg.local.list_names()) == []  # nothing stored
    assert no_unpickling == []


def test_cli_push_refuses_disguised_pickle(
    tmp_path: Path, marker: Path, no_unpickling: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapterhub.cli.main import main

    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    adapter = _disguise(write_test_adapter(tmp_path / "a"), _payload("torch-zip", marker))
    assert main(["push", str(adapter), "team/evil@1.0.0"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unsafe weights file" in err and "pickle" in err, err
    assert no_unpickling == []


@pytest.fixture(scope="module")
def host() -> object:
    from adapterhub.host import AdapterHost
    from adapterhub.protocols.basemodel import LoadedBase
    from adapterhub.testing.models import tiny_llama

    model, tok = tiny_llama(seed=0)
    return AdapterHost(LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok), device="cpu")


@pytest.mark.parametrize("kind", ["torch-zip", "torch-legacy", "pickle-p2", "pickle-p5"])
def test_host_load_refuses_disguised_pickle(kind: str, host: object, tmp_path: Path, marker: Path, no_unpickling: list[str]) -> None:
    adapter = _disguise(write_test_adapter(tmp_path / "a"), _payload(kind, marker))
    with pytest.raises(UnsafeFileError):
        host.load(adapter, name="evil")  # type: ignore[attr-defined]
    assert "evil" not in [a["name"] for a in host.adapters()]  # type: ignore[attr-defined]
    assert no_unpickling == []


def test_host_load_refuses_pickle_planted_in_store(
    host: object, tmp_path: Path, marker: Path, no_unpickling: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile store (push validation bypassed) serves a pickle: pull hands over bytes
    only, and loading it into the host refuses it."""
    from adapterhub.registry.client import Registry

    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    adapter = _disguise(write_test_adapter(tmp_path / "a"), _payload("torch-zip", marker))
    reg = Registry(progress=False)
    raw = json.loads((adapter / MANIFEST_NAME).read_text())
    for entry in raw["files"]:
        reg.local.put_blob(entry["sha256"], adapter / entry["path"])
    raw.update(name="team/planted", version="1.0.0")
    reg.local.put_version("team/planted", "1.0.0", json.dumps(raw).encode())
    pulled = reg.pull("team/planted@1.0.0")  # sha256-verified bytes; nothing parsed
    assert (pulled / WEIGHTS_NAME).read_bytes() == (adapter / WEIGHTS_NAME).read_bytes()
    with pytest.raises(UnsafeFileError):
        host.load("team/planted@1.0.0", name="planted")  # type: ignore[attr-defined]
    assert no_unpickling == []
