"""The hub's query layer over a real store filled by real pushes."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from adapterhub.registry.hub.query import QueryCache, SearchQuery, search
from adapterhub.registry.local import LocalStore

from adapterhub.errors import ConfigError
from adapterhub.testing.hub import SAMPLES, publish_samples


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    tmp = tmp_path_factory.mktemp("hubq")
    url = f"file://{tmp / 'store'}"
    publish_samples(url, tmp, home=tmp / "home")
    return LocalStore(tmp / "store")


def names(results) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.ref for e in results.entries]


def test_latest_per_name_and_facets(store: LocalStore) -> None:
    snap = QueryCache(store).snapshot()
    assert sorted(snap.latest) == sorted({s.name for s in SAMPLES})
    assert snap.latest["team/sentiment"].version == "1.1.0"  # the newest (no 'latest' tag moved it)
    assert [e.version for e in snap.versions["team/sentiment"]] == ["1.0.0", "1.1.0"]
    facets = snap.facets()
    assert facets["method"] == ["full", "layer-selective", "lora"]
    assert "stable" in facets["tag"] and "accuracy" in facets["metric"]


def test_filters_text_thresholds_and_sort(store: LocalStore) -> None:
    snap = QueryCache(store).snapshot()
    assert names(search(snap, SearchQuery(q="MIXTURE forgetting"))) == ["team/sentiment@1.1.0"]
    assert names(search(snap, SearchQuery(task="aclsum"))) == ["team/summaries@0.3.0"]
    assert names(search(snap, SearchQuery(method="full"))) == ["ops/full-baseline@1.0.0"]
    assert names(search(snap, SearchQuery(tag="stable"))) == ["team/sentiment@1.1.0"]
    assert names(search(snap, SearchQuery.parse({}, ["rougeL>0.3"]))) == ["ops/faq@2.0.0", "team/summaries@0.3.0"]
    assert names(search(snap, SearchQuery.parse({}, ["sentiment-rt.accuracy>=0.8"]))) == ["ops/full-baseline@1.0.0"]
    by_acc = search(snap, SearchQuery.parse({"sort": "accuracy"}))
    # High first; the adapter without accuracy comes last whichever way the sort runs.
    assert names(by_acc) == ["ops/full-baseline@1.0.0", "team/sentiment@1.1.0", "ops/faq@2.0.0", "team/summaries@0.3.0"]
    asc = search(snap, SearchQuery.parse({"sort": "accuracy", "order": "asc"}))
    assert names(asc)[:3] == ["ops/faq@2.0.0", "team/sentiment@1.1.0", "ops/full-baseline@1.0.0"]
    assert names(asc)[-1] == "team/summaries@0.3.0"
    every = search(snap, SearchQuery(all_versions=True))
    assert every.total == len(SAMPLES)
    page = search(snap, SearchQuery(per_page=2, page=2))
    assert page.total == 4 and page.pages == 2 and len(page.entries) == 2
    hidden = search(snap, SearchQuery(), visible=lambda n: n.startswith("ops/"))
    assert hidden.total == 2


@pytest.mark.parametrize("params", [{"page": "x"}, {"order": "sideways"}, {"per_page": "1e9"}])
def test_bad_query_is_one_line(params: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        SearchQuery.parse(params)
    assert "\n" not in str(err.value)


def test_bad_where_is_one_line() -> None:
    with pytest.raises(ConfigError, match="invalid --where"):
        SearchQuery.parse({}, ["rougeL>>x"])


def test_refresh_sees_pushes_and_deletes_and_reads_each_manifest_once(store: LocalStore, tmp_path: Path) -> None:
    reads: list[str] = []

    class Counting:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(store, name)

        def get_version(self, name: str, version: str) -> bytes:
            reads.append(f"{name}@{version}")
            return store.get_version(name, version)

    cache = QueryCache(Counting(), ttl_s=0.0)  # type: ignore[arg-type]
    first = cache.snapshot()
    n = len(reads)
    assert n == len(SAMPLES)
    publish_samples(f"file://{store.root}", tmp_path, [SAMPLES[0].__class__(**{**SAMPLES[0].__dict__, "name": "new/one"})], home=tmp_path / "h")
    # Past the TTL the old snapshot is still served while a background refresh runs.
    assert cache.snapshot() is first
    deadline = time.monotonic() + 10
    while "new/one" not in cache.snapshot().latest and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "new/one" in cache.snapshot().latest
    assert len(reads) == n + 1  # only the new manifest was read
    store.delete_version("new/one", "1.0.0")
    assert "new/one" not in cache.refresh().latest


class _RecordingStore:
    """A real local store that records, for every listing, whether it ran on an event loop."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.listings: list[tuple[str, bool]] = []

    def list_names(self):  # type: ignore[no-untyped-def]
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        self.listings.append((threading.current_thread().name, on_loop))
        return self.inner.list_names()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_pages_never_list_the_store_on_the_event_loop(store: LocalStore) -> None:
    import httpx
    from adapterhub.registry.hub.app import build_app
    from adapterhub.registry.hub.state import HubState

    from adapterhub.serving.http.inprocess import serve_in_process

    recording = _RecordingStore(store)
    state = HubState.open(recording, ttl_s=0)  # type: ignore[arg-type]  # every request also starts a background refresh
    with serve_in_process(build_app(state)) as url:
        for path in ("/", "/a/team/sentiment", "/compare", "/compare?a=team/sentiment@1.0.0&b=team/sentiment@1.1.0",
                     "/a/team/nope", "/?q=sentiment"):
            state.cache.invalidate()  # as after a write: the next page needs a rebuild first
            assert httpx.get(url + path, timeout=30).status_code in (200, 404), path
        time.sleep(0.2)  # let the last background refresh finish
    assert recording.listings, "the pages never listed the store: the test proves nothing"
    assert not [t for t, on_loop in recording.listings if on_loop], recording.listings


def test_filter_no_task_forgotten(store: LocalStore) -> None:
    snap = QueryCache(store).snapshot()
    # full-baseline forgets three tasks (intervals wholly below −2): out. The others'
    # drops are unresolved or kept: in.
    got = names(search(snap, SearchQuery.parse({"no_forgotten": "1"})))
    assert got == ["ops/faq@2.0.0", "team/sentiment@1.1.0", "team/summaries@0.3.0"]
    # sentiment 1.0.0's report predates intervals: its flagged point drop (−6.1) counts.
    every = names(search(snap, SearchQuery(no_forgotten=True, all_versions=True)))
    assert "team/sentiment@1.0.0" not in every and "ops/full-baseline@1.0.0" not in every
    assert len(names(search(snap, SearchQuery.parse({"no_forgotten": ""})))) == 4  # off: everything
