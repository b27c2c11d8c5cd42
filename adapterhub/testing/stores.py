"""Conformance suite for store plugins (``adapterhub_register_stores``).

Any store — the built-in local, ``file://``, ``s3://`` ones or a third party's — must
behave the same way for the registry to be correct on it. Use it from pytest::

    import pytest
    from adapterhub.testing.stores import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(f"my://{tmp_path}")   # a fresh, empty store per test

or call :func:`check_store` with a fresh store outside pytest (it runs every check and
raises ``AssertionError`` naming the first failure).

What is checked: blob put/get/has/iter/delete with size+sha256 verification (a source
that does not match its digest is refused; a wrong expected size leaves nothing
behind); conditional version creation (a second create raises ``VersionExistsError``
and leaves the first bytes); eight concurrent creators of one version: exactly one wins
and the stored bytes are the winner's; tags (set, move, list, delete); version listing
and deletion; records; missing objects raise ``AdapterNotFoundError``; hostile names
raise ``InvalidNameError`` before touching storage.

:func:`write_test_adapter` writes a small valid LoRA adapter directory (no model needed)
for tests that push through the registry.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from adapterhub.errors import (
    AdapterNotFoundError,
    IntegrityError,
    InvalidNameError,
    VersionExistsError,
)
from adapterhub.protocols.store import Store

TEST_BASE = {
    "name": "tiny-random-llama",
    "architecture": "LlamaForCausalLM",
    "model_type": "llama",
    "weights_sha256": "ab" * 32,
    "num_parameters": 1000,
    "dtype": "float32",
}


def write_test_adapter(
    directory: str | os.PathLike[str],
    seed: int = 0,
    rank: int = 4,
    width: int = 64,
    modules: int = 2,
    task: str | None = "sentiment-rt",
    metrics: dict[str, dict[str, float]] | None = None,
    base: dict[str, Any] | None = None,
) -> Path:
    """A valid LoRA adapter directory with seeded random weights (about ``modules*2*rank*width*4`` bytes)."""
    import torch

    from adapterhub.artifact import write_adapter

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(modules):
        path = f"model.layers.{i}.self_attn.q_proj"
        tensors[f"{path}.lora_A"] = torch.randn(rank, width, generator=gen)
        tensors[f"{path}.lora_B"] = torch.randn(width, rank, generator=gen)
    fields = {
        "name": "test-adapter",
        "method": "lora",
        "method_kind": "reparameterization",
        "method_config": {"r": rank, "alpha": 2.0 * rank, "target_modules": ["q_proj"]},
        "base": base or TEST_BASE,
        "task": task,
        "trainable_parameters": sum(t.numel() for t in tensors.values()),
        "metrics": metrics if metrics is not None else {task or "task": {"accuracy": 0.5 + seed % 50 / 100}},
    }
    write_adapter(directory, fields, tensors, overwrite=True)
    return Path(directory)


def _blob(tmp: Path, name: str, data: bytes) -> tuple[Path, str]:
    path = tmp / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def check_blobs(store: Store, tmp: Path) -> None:
    data = os.urandom(300_000)
    src, digest = _blob(tmp, "blob.bin", data)
    assert not store.has_blob(digest), "has_blob is true before put_blob"
    store.put_blob(digest, src)
    assert store.has_blob(digest), "has_blob is false after put_blob"
    store.put_blob(digest, src)  # idempotent
    dest = tmp / "out.bin"
    store.get_blob(digest, dest, len(data))
    assert dest.read_bytes() == data, "get_blob returned different bytes"
    assert digest in set(store.iter_blobs()), "iter_blobs does not list a stored blob"

    wrong = tmp / "wrong.bin"
    with pytest.raises(IntegrityError):
        store.get_blob(digest, wrong, len(data) + 1)
    assert not wrong.exists(), "get_blob left unverified bytes at dest"

    lying, _ = _blob(tmp, "lying.bin", b"not the promised bytes")
    other = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityError):
        store.put_blob(other, lying)
    assert not store.has_blob(other), "a blob whose bytes do not match its digest was stored"

    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(AdapterNotFoundError):
        store.get_blob(missing, tmp / "missing.bin", 12)
    assert not (tmp / "missing.bin").exists()

    store.delete_blob(digest)
    assert not store.has_blob(digest), "delete_blob did not delete"
    with pytest.raises(IntegrityError):
        store.has_blob("../../etc/passwd")


def check_versions(store: Store) -> None:
    for name in ("conf/plain", "solo"):
        store.put_version(name, "1.0.0", b'{"first": true}')
        with pytest.raises(VersionExistsError):
            store.put_version(name, "1.0.0", b'{"second": true}')
        assert store.get_version(name, "1.0.0") == b'{"first": true}', "a second create changed the version"
        store.put_version(name, "1.1.0", b'{"v": 2}')
        assert sorted(store.list_versions(name)) == ["1.0.0", "1.1.0"]
    assert {"conf/plain", "solo"} <= set(store.list_names())
    with pytest.raises(AdapterNotFoundError):
        store.get_version("conf/plain", "9.9.9")
    assert store.list_versions("conf/nothing") == []

    store.delete_version("solo", "1.0.0")
    assert store.list_versions("solo") == ["1.1.0"]
    with pytest.raises(AdapterNotFoundError):
        store.get_version("solo", "1.0.0")
    with pytest.raises(AdapterNotFoundError):
        store.delete_version("solo", "1.0.0")
    store.put_version("solo", "1.0.0", b'{"again": true}')  # deleted versions can be re-created
    assert store.get_version("solo", "1.0.0") == b'{"again": true}'


def check_tags(store: Store) -> None:
    store.put_version("conf/tagged", "1.0.0", b"{}")
    store.put_version("conf/tagged", "2.0.0", b"{}")
    store.set_tag("conf/tagged", "latest", "1.0.0")
    assert store.get_tag("conf/tagged", "latest") == "1.0.0"
    store.set_tag("conf/tagged", "latest", "2.0.0")
    store.set_tag("conf/tagged", "prod", "1.0.0")
    assert store.get_tag("conf/tagged", "latest") == "2.0.0", "set_tag did not move the tag"
    assert store.list_tags("conf/tagged") == {"latest": "2.0.0", "prod": "1.0.0"}
    store.delete_tag("conf/tagged", "prod")
    assert store.list_tags("conf/tagged") == {"latest": "2.0.0"}
    with pytest.raises(AdapterNotFoundError):
        store.get_tag("conf/tagged", "prod")


def check_records(store: Store) -> None:
    store.put_version("conf/rec", "1.0.0", b"{}")
    store.add_record("conf/rec", "1.0.0", b'{"n": 1}')
    store.add_record("conf/rec", "1.0.0", b'{"n": 2}')
    assert sorted(store.list_records("conf/rec", "1.0.0")) == [b'{"n": 1}', b'{"n": 2}']
    assert store.get_version("conf/rec", "1.0.0") == b"{}", "adding a record changed the manifest"
    with pytest.raises(AdapterNotFoundError):
        store.add_record("conf/rec", "7.0.0", b"{}")


def check_signatures(store: Store, tmp: Path) -> None:
    """Signatures: immutable objects named by their sha256, several per version, a second
    put of the same bytes a no-op, gone with delete (only for a SignatureStore)."""
    from adapterhub.protocols.store import SignatureStore

    if not isinstance(store, SignatureStore):
        pytest.skip("this store holds no signatures (optional SignatureStore protocol)")
    from cryptography.hazmat.primitives.asymmetric import ec

    from adapterhub.manifest import parse_manifest
    from adapterhub.registry.signing import sign_manifest, signature_id

    src = write_test_adapter(tmp / "signed-adapter")
    manifest = parse_manifest((src / "manifest.json").read_bytes(), "test adapter")
    manifest = manifest.model_copy(update={"name": "conf/signed", "version": "1.0.0"})
    raw = manifest.to_json().encode()
    store.put_version("conf/signed", "1.0.0", raw)
    one, two = (sign_manifest(raw, manifest, ec.generate_private_key(ec.SECP256R1())) for _ in range(2))
    assert store.put_signature("conf/signed", "1.0.0", signature_id(one), one) is True
    assert store.put_signature("conf/signed", "1.0.0", signature_id(one), one) is False, "a second put of the same signature must be a no-op"
    assert store.put_signature("conf/signed", "1.0.0", signature_id(two), two) is True
    assert sorted(store.list_signatures("conf/signed", "1.0.0")) == sorted([one, two])
    assert store.get_version("conf/signed", "1.0.0") == raw, "adding a signature changed the manifest"
    store.delete_signature("conf/signed", "1.0.0", signature_id(one))
    assert store.list_signatures("conf/signed", "1.0.0") == [two]
    with pytest.raises(AdapterNotFoundError):
        store.delete_signature("conf/signed", "1.0.0", signature_id(one))
    with pytest.raises(AdapterNotFoundError):
        store.put_signature("conf/signed", "7.0.0", signature_id(one), one)


def check_bad_names(store: Store) -> None:
    for bad in ("../../etc", "/abs/name", "a/../../b", "nul\x00byte", "x" * 300, "аdapter", "a/b/c"):
        with pytest.raises(InvalidNameError):
            store.put_version(bad, "1.0.0", b"{}")
        with pytest.raises(InvalidNameError):
            store.list_versions(bad)
    with pytest.raises(InvalidNameError):
        store.put_version("ok", "../1.0.0", b"{}")
    with pytest.raises(InvalidNameError):
        store.set_tag("ok", "../x", "1.0.0")


def check_concurrent_create(store: Store, writers: int = 8) -> None:
    """``writers`` threads create one version at once: exactly one wins."""
    barrier = threading.Barrier(writers)
    results: list[str | None] = [None] * writers

    def run(i: int) -> None:
        barrier.wait()
        try:
            store.put_version("conf/race", "1.0.0", f'{{"writer": {i}}}'.encode())
            results[i] = "won"
        except VersionExistsError:
            results[i] = "lost"
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = f"error: {exc!r}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [i for i, r in enumerate(results) if r == "won"]
    assert len(winners) == 1, f"expected exactly one winner, got {results}"
    assert all(r in ("won", "lost") for r in results), results
    assert store.get_version("conf/race", "1.0.0") == f'{{"writer": {winners[0]}}}'.encode(), "stored bytes are not the winner's"


def check_store(store: Store, tmp: Path) -> None:
    """Run every check on a fresh, empty store (``tmp``: a scratch directory)."""
    check_blobs(store, tmp)
    check_versions(store)
    check_tags(store)
    check_records(store)
    check_signatures(store, tmp)
    check_bad_names(store)
    check_concurrent_create(store)


class StoreConformance:
    """Subclass with a ``store`` fixture returning a fresh, empty store."""

    def test_blobs(self, store: Store, tmp_path: Path) -> None:
        check_blobs(store, tmp_path)

    def test_versions_are_created_once(self, store: Store) -> None:
        check_versions(store)

    def test_tags(self, store: Store) -> None:
        check_tags(store)

    def test_records(self, store: Store) -> None:
        check_records(store)

    def test_signatures(self, store: Store, tmp_path: Path) -> None:
        check_signatures(store, tmp_path)

    def test_bad_names_refused(self, store: Store) -> None:
        check_bad_names(store)

    def test_concurrent_creators_one_winner(self, store: Store) -> None:
        check_concurrent_create(store)

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.url, str) and "://" in store.url


def push_worker(home: str, adapter: str, name: str, version: str | None, to: str | None,
                env: dict[str, str], barrier: Any, out: Any) -> None:
    """Process target for fault tests: push one adapter and report ``(outcome, detail)``.

    Lives in an importable module so ``multiprocessing`` (forkserver/spawn) can find it.
    ``barrier`` (optional) lines pushers up so they race; ``env`` is applied first (e.g.
    ``ADAPTERHUB_TEST_CRASH_AT`` or AWS settings).
    """
    os.environ["ADAPTERHUB_HOME"] = home
    os.environ.update(env)
    from adapterhub.registry.client import Registry

    reg = Registry(progress=False)
    if barrier is not None:
        barrier.wait(60)
    try:
        out.put(("won", reg.push(adapter, name, version=version, to=to)))
    except VersionExistsError as exc:
        out.put(("lost", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def disk_full_worker(root: str, small: str, big: str, limit: int, out: Any) -> None:
    """Process target: push ``small``, then push ``big`` under ``RLIMIT_FSIZE=limit``."""
    import resource
    import signal

    from adapterhub.errors import StoreError
    from adapterhub.registry.client import Registry

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    reg = Registry(root=root, progress=False)
    reg.push(small, "team/x", version="1.0.0")
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        reg.push(big, "team/x", version="2.0.0")
        out.put(("pushed", ""))
    except StoreError as exc:
        out.put(("StoreError", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported
        out.put((type(exc).__name__, str(exc)))
