"""The hub's HTML pages: browse/search, adapter card, compare, plugins, login.

Server-rendered with Jinja2 and ``autoescape`` on for every template: names,
descriptions, metric and task names are user content and always reach the page as text.
Charts come from :mod:`.charts` as SVG built with the same escaping. No page needs
JavaScript; the only script-free interactivity is plain GET forms and links.

Pages read through the query cache (:mod:`.query`), the store's public calls for
evaluation records, and nothing else: the hub never sees more than a client could.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from adapterhub.errors import AdapterhubError, AdapterNotFoundError, ConfigError

from . import charts
from .access import note_caller
from .query import Entry, SearchQuery, Snapshot, search
from .state import HubState
from .tokens import ANONYMOUS_READER, COOKIE, HubPrincipal, authenticate

TEMPLATES = Path(__file__).with_name("templates")
MAX_COMPARE = 4

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _count(n: int | None) -> str:
    if n is None:
        return "—"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _ci(low: Any, high: Any, signed: bool = False) -> str:
    """A stored interval as ``[a, b]`` (as written, never recomputed); ``—`` without one."""
    lo, hi = _opt_float(low), _opt_float(high)
    if lo is None or hi is None:
        return "—"
    f = "{:+.4g}" if signed else "{:.4g}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


_env.filters.update(size=_size, count=_count, num=_num, ci=_ci, q=lambda s: quote(str(s), safe="/@:"))


def adapter_url(ref: str) -> str:
    return "/a/" + quote(ref, safe="/@:")


_env.globals["adapter_url"] = adapter_url


def render(request: Request, state: HubState, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _env.get_template(template).render(title=state.title, path=request.url.path, **context)
    return HTMLResponse(body, status_code=status, headers={
        # The pages run no script: a policy that forbids every script makes an escaping
        # slip harmless, and nothing is loaded from anywhere but this hub.
        "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    })


def error_page(request: Request, state: HubState, status: int, message: str) -> HTMLResponse:
    heading = {404: "Not found", 401: "Sign in needed", 403: "Not allowed", 400: "Bad request"}.get(status, "Error")
    return render(request, state, "error.html", status=status, heading=heading, message=message)


# --- access -----------------------------------------------------------------------------------
class _Denied(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _principal(request: Request, state: HubState) -> HubPrincipal:
    """Who is looking: a bearer token, the login cookie, or anonymous where allowed."""
    try:
        who = authenticate(state.tokens, request.headers.get("authorization"), state.sessions.lookup(request.cookies.get(COOKIE)))
    except AdapterhubError as exc:
        raise _Denied(error_page(request, state, 401, str(exc))) from None
    if who is None:
        raise _Denied(RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303))
    note_caller(request, who.name)
    return who


def _guarded(handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        state: HubState = request.app.state.hub
        try:
            who = _principal(request, state)
            return await handler(request, state, who)
        except _Denied as denied:
            return denied.response
    return endpoint


# --- lookups ------------------------------------------------------------------------------------
def _resolve(snap: Snapshot, ref: str) -> tuple[str, Entry | None]:
    """``name[@version|:tag]`` → (name, entry in the snapshot or None)."""
    from adapterhub.registry.names import parse_ref

    r = parse_ref(ref)
    versions = snap.versions.get(r.name, ())
    if r.version is not None:
        return r.name, next((e for e in versions if e.version == r.version), None)
    if r.tag is not None:
        pinned = snap.tags.get(r.name, {}).get(r.tag)
        return r.name, next((e for e in versions if e.version == pinned), None)
    return r.name, snap.latest.get(r.name)


async def _entry(state: HubState, ref: str, who: HubPrincipal) -> Entry | None:
    """The entry for ``ref``, refreshing the cache once if the store has the name but the
    snapshot does not yet (pushed since the last refresh)."""
    try:
        name, entry = _resolve(await state.cache.current(), ref)
    except (AdapterhubError, ValueError):
        return None
    if not who.can_read(name):
        return None  # indistinguishable from a missing adapter
    if entry is None:
        try:
            exists = bool(await run_in_threadpool(state.store.list_versions, name))
        except AdapterhubError:
            exists = False
        if exists:
            snap = await run_in_threadpool(state.cache.refresh)
            entry = _resolve(snap, ref)[1]
    return entry


async def _current(state: HubState, entry: Entry) -> tuple[Entry | None, list[dict[str, Any]]]:
    """The version as the store holds it now, with its evaluation records (None: deleted).

    Versions are immutable, but ``rm`` followed by a push of other bytes under the same
    version (through another hub, or straight to the store) within one refresh interval
    would leave the cached card describing the old files. One manifest read per adapter
    page (the records are read per page anyway) keeps a card true to the store; the
    listing catches up on the next rebuild, which this triggers.
    """
    from adapterhub.registry.client import parse_manifest, read_records

    def read() -> tuple[Any, list[dict[str, Any]]]:
        try:
            raw = state.store.get_version(entry.name, entry.version)
        except AdapterNotFoundError:
            return None, []
        manifest = parse_manifest(raw, entry.ref)
        try:
            return manifest, read_records(state.store, entry.name, entry.version)
        except AdapterNotFoundError:  # a record removed while listed: not the version
            return manifest, []

    try:
        manifest, records = await run_in_threadpool(read)
    except AdapterhubError:
        return entry, []  # unreadable now: keep showing what the cache parsed
    if manifest is None:
        state.cache.forget(entry.name, entry.version)
        state.cache.invalidate()
        return None, []
    if manifest != entry.manifest:
        state.cache.forget(entry.name, entry.version)
        state.cache.invalidate()
        entry = Entry.of(entry.name, entry.version, manifest, entry.tags)
    return entry, records


async def _signatures(state: HubState, entry: Entry) -> dict[str, Any]:
    """The version's signatures as the store holds them now, judged against ``hub --trust``."""
    from . import signed

    try:
        return signed.summary(state, await run_in_threadpool(signed.verdicts, state, entry.name, entry.version))
    except AdapterhubError as exc:
        return signed.summary(state, []) | {"error": str(exc)}


def _forgetting(entry: Entry, records: Sequence[dict[str, Any]]) -> tuple[list[charts.Delta], float | None, list[dict[str, Any]]]:
    """The adapter's forgetting report: the manifest's, else the newest attached record."""
    report: dict[str, Any] | None = None
    if entry.manifest.forgetting is not None:
        report = entry.manifest.forgetting.model_dump(mode="json")
    else:
        for rec in reversed(records):
            if rec.get("kind") == "forgetting" and isinstance(rec.get("report"), dict):
                report = rec["report"]
                break
    if report is None:
        return [], None, []
    rows = [r for r in report.get("rows", []) if isinstance(r, dict)]
    generation = report.get("generation")
    own = generation.get("own_task") if isinstance(generation, dict) else None
    deltas = []
    for r in rows:
        # Reports from before intervals have no n, ci_low, ci_high or verdict: drawn as
        # before (a point delta, flagged past the threshold), never recomputed here.
        try:
            deltas.append(charts.Delta(
                str(r["task"]), str(r["metric"]), float(r["delta"]), bool(r.get("flagged")),
                low=_opt_float(r.get("ci_low")), high=_opt_float(r.get("ci_high")),
                verdict=r["verdict"] if r.get("verdict") in charts.MARKS else None,
                n=r["n"] if isinstance(r.get("n"), int) else None, own=r["task"] == own,
            ))
        except (KeyError, TypeError, ValueError):
            continue
    threshold = report.get("threshold")
    return deltas, float(threshold) if isinstance(threshold, (int, float)) else None, rows


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _hub_url(request: Request, state: HubState) -> str:
    return state.public_url or str(request.base_url).rstrip("/")


def _snippets(request: Request, state: HubState, entry: Entry) -> dict[str, str]:
    hub = _hub_url(request, state)
    ref = shlex.quote(entry.ref)
    base = shlex.quote(entry.manifest.base.name)
    example = "Write your input here."
    return {
        "pull": f"adapterhub pull {ref} --from {shlex.quote(hub)}",
        "generate": f"adapterhub generate --base {base} --registry {shlex.quote(hub)} --adapter {ref} {shlex.quote(example)}",
        "openai": (
            f"adapterhub serve --base {base} --registry {shlex.quote(hub)} --adapter {ref} --port 8000 &\n"
            "python - <<'EOF'\n"
            "from openai import OpenAI\n"
            'client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")\n'
            f"reply = client.chat.completions.create(model={json.dumps(entry.ref)},\n"
            f'    messages=[{{"role": "user", "content": {json.dumps(example)}}}], max_tokens=64)\n'
            "print(reply.choices[0].message.content)\n"
            "EOF"
        ),
    }


# --- pages ------------------------------------------------------------------------------------
def _where_values(request: Request) -> list[str]:
    out: list[str] = []
    for raw in request.query_params.getlist("where"):
        out.extend(part.strip() for part in raw.split(",") if part.strip())
    return out


async def browse(request: Request, state: HubState, who: HubPrincipal) -> Response:
    params = {k: v for k, v in request.query_params.items() if k != "where"}
    where = _where_values(request)
    snap = await state.cache.current()
    error = None
    try:
        query = SearchQuery.parse(params, where)
    except ConfigError as exc:
        error, query = str(exc), SearchQuery()
    from . import signed

    results = await run_in_threadpool(search, snap, query, None if who is ANONYMOUS_READER else who.can_read,
                                      signed.is_signed(state))
    rows = []
    for e in results.entries:
        head = e.headline()
        sort_value = None
        if query.sort not in ("name", "created", "size", "trainable"):
            task, _, metric = query.sort.rpartition(".")
            sort_value = e.metric(metric, task or None)
        rows.append({"entry": e, "headline": head, "sort_value": sort_value})

    def page_link(page: int) -> str:
        items = [(k, v) for k, v in params.items() if v and k != "page"] + [("where", w) for w in where]
        return "/?" + urlencode([*items, ("page", str(page))])

    return render(
        request, state, "browse.html", status=400 if error else 200, rows=rows, results=results, query=query,
        where=", ".join(where), facets=snap.facets(), error=error, page_link=page_link,
        sort_is_metric=query.sort not in ("name", "created", "size", "trainable"),
    )


async def adapter(request: Request, state: HubState, who: HubPrincipal) -> Response:
    ref = request.path_params["ref"]
    found = await _entry(state, ref, who)
    entry, records = await _current(state, found) if found is not None else (None, [])
    if entry is None:
        return error_page(request, state, 404, f"No adapter {ref!r} in this hub.")
    deltas, threshold, rows = _forgetting(entry, records)
    m = entry.manifest
    snap = await state.cache.current()
    versions = snap.versions.get(entry.name, (entry,))
    share = m.trainable_parameters / m.base.num_parameters if m.base.num_parameters else None
    return render(
        request, state, "adapter.html", e=entry, m=m, share=share,
        method_config=json.dumps(m.method_config, indent=2, sort_keys=True, default=str),
        hyperparameters=json.dumps(m.provenance.hyperparameters, indent=2, sort_keys=True, default=str),
        forgetting_chart=charts.forgetting_svg(deltas, threshold) if deltas else None,
        forgetting_rows=rows, threshold=threshold,
        loss_chart=charts.loss_svg(m.provenance.loss_curve) if len(m.provenance.loss_curve) >= 2 else None,
        records=[{"kind": r.get("kind", "record"), "json": json.dumps(r, indent=2, sort_keys=True, default=str)[:20_000], "raw": r} for r in records],
        versions=list(reversed(versions)), all_tags=snap.tags.get(entry.name, {}),
        snippets=_snippets(request, state, entry), signatures=await _signatures(state, entry),
    )


async def compare(request: Request, state: HubState, who: HubPrincipal) -> Response:
    refs = [v.strip() for k in ("a", "b", "c", "d") for v in request.query_params.getlist(k) if v.strip()]
    refs += [v.strip() for v in request.query_params.getlist("ref") if v.strip()]
    if not 2 <= len(refs) <= MAX_COMPARE:
        return render(request, state, "compare.html", status=200 if not refs else 400, entries=[], refs=refs,
                      error=None if not refs else f"Compare takes 2 to {MAX_COMPARE} adapters; got {len(refs)}.",
                      names=sorted((await state.cache.current()).latest)[:500])
    entries: list[Entry] = []
    records: list[list[dict[str, Any]]] = []
    for ref in refs:
        found = await _entry(state, ref, who)
        e, recs = await _current(state, found) if found is not None else (None, [])
        if e is None:
            return error_page(request, state, 404, f"No adapter {ref!r} in this hub.")
        entries.append(e)
        records.append(recs)
    task_sets = [set(e.manifest.metrics) for e in entries]
    shared = sorted(set.intersection(*task_sets))
    rows = []
    for task in shared:
        metrics = sorted({k for e in entries for k in e.manifest.metrics.get(task, {})})
        for metric in metrics:
            values = [e.manifest.metrics.get(task, {}).get(metric) for e in entries]
            present = [v for v in values if v is not None]
            lower = metric in ("perplexity", "loss", "ter")
            best = (min(present) if lower else max(present)) if len(present) > 1 else None
            stored = [e.manifest.intervals.get(task, {}).get(metric) for e in entries]
            rows.append({"task": task, "metric": metric, "values": values, "best": best, "intervals": stored})
    series = []
    threshold = None
    for e, recs in zip(entries, records, strict=True):
        deltas, t, _ = _forgetting(e, recs)
        threshold = threshold if threshold is not None else t
        series.append((e.ref, deltas))
    overlay = charts.overlay_svg(series, threshold, title="Forgetting, overlaid") if any(d for _, d in series) else None
    others = sorted(set.union(*task_sets) - set(shared))
    return render(request, state, "compare.html", entries=entries, refs=refs, rows=rows, overlay=overlay,
                  others=others, error=None, names=[])


async def plugins(request: Request, state: HubState, who: HubPrincipal) -> Response:
    from adapterhub.catalog import get_catalog

    cat = get_catalog()

    def describe(items: dict[str, Any], kind: str) -> list[dict[str, str]]:
        return [{"name": str(n), "description": str(getattr(o, "description", "") or getattr(o, "help", "") or ""),
                 "kind": str(getattr(o, "kind", "") or ""), "owner": cat.owner(kind, n)} for n, o in sorted(items.items())]

    sections = [
        ("Methods", describe(cat.methods, "methods")),
        ("Evaluators", describe(cat.evaluators, "evaluators")),
        ("Task packs", describe(cat.tasks, "tasks")),
        ("Stores", [{"name": f"{s}://", "description": "", "kind": "", "owner": cat.owner("stores", s)} for s in sorted(cat.stores)]),
        ("Base models", describe(cat.base_models, "base_models")),
    ]
    failed = [{"name": r.name, "error": r.error or ""} for r in cat.failed]
    return render(request, state, "plugins.html", sections=sections, failed=failed)


async def login(request: Request) -> Response:
    state: HubState = request.app.state.hub
    nxt = request.query_params.get("next") or "/"
    if not nxt.startswith("/") or nxt.startswith("//"):
        nxt = "/"  # only ever back into this hub (no open redirect)
    if request.method == "GET":
        return render(request, state, "login.html", next=nxt, error=None, open_read=state.tokens is None)
    body = (await request.body())[:4096].decode("utf-8", "replace")
    token = (parse_qs(body).get("token") or [""])[0].strip()
    try:
        who = authenticate(state.tokens, f"Bearer {token}", None) if token else None
    except AdapterhubError:
        who = None
    if who is None:
        return render(request, state, "login.html", status=401, next=nxt, error="That token is not valid here.", open_read=state.tokens is None)
    response = RedirectResponse(nxt, status_code=303)
    # The cookie holds a random session id, never the token (:mod:`.sessions`).
    # HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it),
    # Secure behind https (the scheme is the proxy's when it is trusted:
    # --forwarded-allow-ips); it only ever grants reading: the API's writes take the header.
    sid = state.sessions.create(who)
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        max_age=int(state.sessions.ttl_s))
    return response


def _same_origin(request: Request, state: HubState) -> bool:
    """Does the request come from this hub's own pages? (Origin, else Referer; neither:
    not a browser form, so nothing a cross-site page could have sent with the cookie.)"""
    from urllib.parse import urlsplit

    ours = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    if state.public_url:
        pub = urlsplit(state.public_url)
        ours.add(f"{pub.scheme}://{pub.netloc}".lower())
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.strip().lower() in ours
    referer = request.headers.get("referer")
    if referer is not None:
        ref = urlsplit(referer.strip())
        return f"{ref.scheme}://{ref.netloc}".lower() in ours
    return True


async def logout(request: Request) -> Response:
    state: HubState = request.app.state.hub
    if not _same_origin(request, state):
        return error_page(request, state, 403, "Signing out is only possible from this hub's own pages.")
    state.sessions.delete(request.cookies.get(COOKIE))  # the old cookie stops working at once
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


def routes(state: HubState) -> list[BaseRoute]:
    return [
        Route("/", _guarded(browse), methods=["GET"]),
        Route("/a/{ref:path}", _guarded(adapter), methods=["GET"]),
        Route("/compare", _guarded(compare), methods=["GET"]),
        Route("/plugins", _guarded(plugins), methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),  # never GET: a link or an <img> must not sign out
    ]
