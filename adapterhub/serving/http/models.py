"""``GET /v1/models``: the base, the resident adapters and (paged) the registry's
adapters for this base, each with its method, task and metrics; a key sees only the
adapters its patterns allow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapterhub.errors import AdapterhubError
from adapterhub.serving.http.errors import ApiError

if TYPE_CHECKING:
    from adapterhub.serving.http.backend import HostView
    from adapterhub.serving.http.keys import Principal
    from adapterhub.serving.http.state import ServerState

MAX_PAGE = 1000


def list_models(state: ServerState, principal: Principal, query: Any) -> dict[str, Any]:
    host = state.engine.host
    created = state.created
    rows: dict[str, dict[str, Any]] = {}
    rows[state.base_alias] = {"id": state.base_alias, "object": "model", "created": created, "owned_by": "adapterhub",
                              "kind": "base", "method": None, "task": None, "metrics": {}, "loaded": True}
    for a in resident(host):
        rows[a["name"]] = {
            "id": a["name"], "object": "model", "created": created, "owned_by": "adapterhub", "kind": "adapter",
            "root": a["root"], "parent": state.base_alias, "method": a["method"], "task": a["task"],
            "metrics": a["metrics"], "loaded": True,
        }
    for r in _registry_rows(state):
        rows.setdefault(r["name"], {
            "id": r["name"], "object": "model", "created": created, "owned_by": "adapterhub", "kind": "adapter",
            "root": r.get("ref"), "parent": state.base_alias, "method": r.get("method"), "task": r.get("task"),
            "metrics": r.get("metrics") or {}, "loaded": False,
        })
    ids = sorted(i for i in rows if i == state.base_alias or principal.allows(i))
    ids.remove(state.base_alias)
    ids.insert(0, state.base_alias)
    try:
        limit = int(query.get("limit", 100))
    except ValueError:
        raise ApiError(400, "invalid limit: expected an integer", param="limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"invalid limit: must be 1..{MAX_PAGE}", param="limit")
    after = query.get("after")
    start = ids.index(after) + 1 if after in ids else 0
    page = ids[start:start + limit]
    return {
        "object": "list", "data": [rows[i] for i in page], "has_more": start + limit < len(ids),
        "first_id": page[0] if page else None, "last_id": page[-1] if page else None,
    }


def resident(host: HostView) -> list[dict[str, Any]]:
    """The loaded adapters: name, ``root`` (name@version), method, task, metrics, in_flight.
    (``serve --ray`` replicas post the same rows for the ingress to list.)"""
    out = []
    for a in host.adapters():
        try:
            entry = host.entry(a["name"])
        except AdapterhubError:
            continue
        man = entry.manifest
        out.append({"name": a["name"], "root": entry.label, "method": a["method"], "task": getattr(man, "task", None),
                    "metrics": _manifest_metrics(man), "in_flight": a.get("in_flight", 0)})
    return out


def _manifest_metrics(man: Any) -> dict[str, Any]:
    for attr in ("metrics", "evaluation"):
        v: Any = getattr(man, attr, None)
        if isinstance(v, dict):
            return v
        if v is not None and hasattr(v, "model_dump"):
            return dict(v.model_dump())
    return {}


def _registry_rows(state: ServerState) -> list[dict[str, Any]]:
    """The latest version of each registry adapter for this base (the local index when
    the registry is local; a remote store lists names and versions only)."""
    try:
        from adapterhub.registry.client import Registry

        reg = Registry(progress=False)
        base = state.engine.host.base.name
        if state.registry_url is None:
            latest: dict[str, dict[str, Any]] = {}
            for r in reg.search(base=base):
                latest[r["name"]] = r  # ordered by version: the last one wins
            return list(latest.values())
        return [{"name": r["name"], "ref": f"{r['name']}@{r['latest']}"} for r in reg.ls(from_=state.registry_url)]
    except Exception:  # noqa: BLE001 - listing must not fail because the registry is down
        return []
