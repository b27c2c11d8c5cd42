"""Signatures on the hub: verdicts for pages and the JSON API, and the signature routes.

The hub never signs for anyone: it stores bundles its writers push (checked to cover the
version, as ``adapterhub sign`` checks them, through the same client call) and judges
every bundle against its own trust file (``hub --trust``) when it is read. Without a
trust file it shows signatures as "not checked": it has no keys to check them with.

Routes, under ``/api/v1/adapters/{ns}/{base}/versions/{version}``:

* ``GET signatures`` — ``{"signatures": [{"id", "bundle", "key", "verdict", ...}], "signed", "trust"}``
* ``PUT signatures/{id}`` — store a bundle whose sha256 is ``id``: 201, or 200 when it was
  already there (a retried push is a no-op); 422 ``signature`` if it does not cover the version
* ``DELETE signatures/{id}`` — a write token for the name
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from adapterhub.registry.signing import MAX_SIGNATURE_BYTES
from adapterhub.registry.trust import Verdict, judge, refusal
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapterhub.errors import SignatureError

if TYPE_CHECKING:
    from .query import Entry
    from .state import HubState


def verdicts(state: HubState, name: str, version: str) -> list[Verdict]:
    """Blocking: the version's stored signatures judged against the hub's trust file."""
    return state.client.signature_verdicts(f"{name}@{version}", None, state.trust)[1]


def entry_verdicts(state: HubState, entry: Entry) -> list[Verdict]:
    """The verdicts of a cached entry's signatures (as listed at the last refresh)."""
    if state.trust is None:
        return [judge(None, entry.name, entry.raw, entry.manifest, s) for s in entry.signatures]
    return [state.trust.judge(entry.name, entry.raw, entry.manifest, s) for s in entry.signatures]


def is_signed(state: HubState) -> Callable[[Entry], bool]:
    """``signed:yes``: a signature by a key trusted for the name; without a trust file, any signature."""
    if state.trust is None:
        return lambda e: bool(e.signatures)
    return lambda e: any(v.trusted for v in entry_verdicts(state, e))


def summary(state: HubState, found: list[Verdict]) -> dict[str, Any]:
    """What pages and the JSON API show: each signature and whether the version counts as signed."""
    return {
        "signed": any(v.trusted for v in found) if state.trust is not None else bool(found),
        "trust": state.trust is not None,
        "signatures": [v.as_dict() | {"line": v.line()} for v in found],
    }


def require(state: HubState, name: str, version: str) -> None:
    """``hub --require-signed``: SignatureError (422) unless a trusted key signed it."""
    if state.require_signed and state.trust is not None:
        reason = refusal(f"{name}@{version}", verdicts(state, name, version))
        if reason is not None:
            raise SignatureError(reason)


def routes(state: HubState, reader: Callable[[Request, str], None], writer: Callable[[Request, str], None],
           blocking: Callable[..., Awaitable[Any]], body: Callable[[Request, int, str], Awaitable[bytes]],
           ) -> dict[str, Callable[[Request], Awaitable[Response]]]:
    """The endpoints (api.py mounts them with its error handling and path checks)."""
    from .api import _name, _version

    async def listing(request: Request) -> Response:
        name, v = _name(request), _version(request)
        reader(request, name)
        found = await blocking(verdicts, state, name, v)
        _, bundles = await blocking(state.client.signatures, f"{name}@{v}")
        by_id = {hashlib.sha256(b).hexdigest(): b.decode("utf-8", "replace") for b in bundles}
        out = summary(state, found)
        for row in out["signatures"]:
            row["bundle"] = by_id.get(row["id"], "")
        return JSONResponse({"name": name, "version": v, **out})

    async def one(request: Request) -> Response:
        name, v = _name(request), _version(request)
        sid = str(request.path_params["sig_id"])
        writer(request, name)
        if request.method == "DELETE":
            await state.write(state.client.delete_signature, name, v, sid)
            state.cache.invalidate()
            return Response(status_code=204)
        data = await body(request, MAX_SIGNATURE_BYTES, "signature")
        if hashlib.sha256(data).hexdigest() != sid:
            raise SignatureError(f"signature body does not hash to {sid[:16]}... (its name is its sha256)")
        got, created = await state.write(state.client.put_signature, name, v, data)
        state.cache.invalidate()
        return JSONResponse({"id": got, "created": created}, status_code=201 if created else 200)

    return {"listing": listing, "one": one}
