"""A real hub on a free loopback port, for tests of anything that talks to one.

    from adapterhub.testing.hubserver import running_hub, write_tokens

    tokens = write_tokens(tmp_path / "tokens.yaml", {"ci": ("write", ["team/*"])})
    with running_hub(tmp_path / "store", tokens=tokens) as hub:
        HttpStore(hub.url, token="ci-token-...")

The hub is ``adapterhub hub``'s own app (pages and JSON API) over the given store,
served by uvicorn in a thread and always stopped on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapterhub.protocols.store import Store
    from adapterhub.registry.hub.state import HubState


@dataclass
class RunningHub:
    url: str
    state: HubState


def token_for(name: str) -> str:
    """The clear token :func:`write_tokens` gives the entry ``name`` (deterministic, for tests)."""
    return f"hub-test-token-{name}-0123456789"


def write_tokens(path: str | Path, entries: Mapping[str, tuple[str, Sequence[str]]], public_read: bool = False) -> Path:
    """A tokens file: ``{name: (scope, adapter globs)}``; each token is :func:`token_for` ``(name)``."""
    import yaml

    doc = {
        "public_read": public_read,
        "tokens": [{"name": n, "token": token_for(n), "scope": scope, "adapters": list(globs)} for n, (scope, globs) in entries.items()],
    }
    p = Path(path)
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return p


@contextmanager
def running_hub(
    store: Store | str | Path,
    *,
    tokens: str | Path | None = None,
    validate: bool = True,
    max_blob_bytes: int | None = None,
    trust: str | Path | None = None,
    require_signed: bool = False,
) -> Iterator[RunningHub]:
    """Serve ``store`` (a Store, or a directory for a local store) as a hub; yields its URL and state.

    The hub writes through a :class:`~adapterhub.registry.client.Registry` over the store;
    a local store is that registry's own, so its search index follows the hub's writes.
    """
    from adapterhub.registry.hub.app import build_app
    from adapterhub.registry.hub.state import HubState
    from adapterhub.registry.hub.tokens import TokenRing
    from adapterhub.registry.local import LocalStore
    from adapterhub.serving.http.inprocess import serve_in_process

    the_store = LocalStore(store) if isinstance(store, (str, Path)) else store
    ring = TokenRing.from_file(tokens) if tokens is not None else None
    state = HubState.open(the_store, tokens=ring, validate=validate)
    if max_blob_bytes is not None:
        state.max_blob_bytes = max_blob_bytes
    if trust is not None:  # hub --trust FILE [--require-signed]
        from adapterhub.registry.trust import TrustPolicy

        state.trust, state.require_signed = TrustPolicy(trust), require_signed
    with serve_in_process(build_app(state)) as url:
        yield RunningHub(url, state)
