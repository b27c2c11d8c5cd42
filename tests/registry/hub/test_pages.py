"""The hub's HTML pages over HTTP: content, 404s, escaping of hostile content, sign-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from adapterhub.registry.hub.app import build_app
from adapterhub.registry.hub.state import HubState
from adapterhub.registry.hub.tokens import TokenRing
from adapterhub.registry.local import LocalStore

from adapterhub.serving.http.inprocess import serve_in_process
from adapterhub.testing.hub import SAMPLE_BASE, SAMPLES, Sample, publish_samples


class Page(HTMLParser):
    """Tags, attributes and visible text of a page, as a browser would parse it."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def visible(self) -> str:
        return "".join(self.text)

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}  # type: ignore[misc]


def get(url: str, **kw: object) -> httpx.Response:
    return httpx.get(url, timeout=30, **kw)  # type: ignore[arg-type]


def test_browse_lists_every_adapter_with_its_row(hub_url: str) -> None:
    r = get(hub_url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src" not in r.headers["content-security-policy"] and "default-src 'none'" in r.headers["content-security-policy"]
    page = Page(r.text)
    assert "4 adapters" in page.visible
    for name in {s.name for s in SAMPLES}:
        assert name in page.visible
    # A row: latest version, method, task, base, size, trainable count, headline metric.
    assert "1.1.0" in page.visible and "smollm2-135m-instruct" in page.visible and "accuracy 0.79" in page.visible
    assert not [t for t, _ in page.tags if t == "script"]


@pytest.mark.parametrize(("query", "expect", "absent"), [
    ("q=mixture", ["team/sentiment"], ["ops/faq"]),
    ("method=full", ["ops/full-baseline"], ["team/sentiment"]),
    ("task=aclsum", ["team/summaries"], ["ops/faq"]),
    ("tag=stable", ["team/sentiment"], ["ops/faq"]),
    ("where=rougeL%3E0.3", ["ops/faq", "team/summaries"], ["team/sentiment"]),
    ("sort=accuracy&order=desc", ["ops/full-baseline"], []),
])
def test_search_filters(hub_url: str, query: str, expect: list[str], absent: list[str]) -> None:
    text = Page(get(f"{hub_url}/?{query}").text).visible
    for name in expect:
        assert name in text
    for name in absent:
        assert name not in text


def test_sorted_by_metric_shows_it_in_order(hub_url: str) -> None:
    page = Page(get(f"{hub_url}/?sort=accuracy").text)
    order = [a["href"] for t, a in page.tags if t == "a" and "adapter-link" in (a.get("class") or "")]
    assert order == ["/a/ops/full-baseline", "/a/team/sentiment", "/a/ops/faq", "/a/team/summaries"]


def test_bad_threshold_is_a_400_page_with_the_reason(hub_url: str) -> None:
    r = get(f"{hub_url}/?where=rougeL%3E%3Ex")
    assert r.status_code == 400 and "invalid --where" in Page(r.text).visible


def test_adapter_page_has_card_metrics_charts_records_versions_snippets(hub_url: str, sample_store: LocalStore) -> None:
    r = get(f"{hub_url}/a/team/sentiment@1.0.0")
    assert r.status_code == 200
    page = Page(r.text)
    assert {"card", "metrics-table", "forgetting-chart", "loss-chart", "files", "snippet-pull", "snippet-openai"} <= page.ids()
    text = page.visible
    assert "LoRA r8 on movie-review sentiment" in text and SAMPLE_BASE["weights_sha256"] in text  # description, base fingerprint
    weights = LocalStore(Path(sample_store.root)).get_version("team/sentiment", "1.0.0")
    files = json.loads(weights)["files"]
    assert all(f["path"] in text and f["sha256"] in text for f in files)  # files with sha256
    assert "▼ over threshold" in text  # translate-sv-en dropped 6.1 > 2
    assert f"adapterhub pull team/sentiment@1.0.0 --from {hub_url}" in text
    assert 'model="team/sentiment@1.0.0"' in text
    svgs = [a for t, a in page.tags if t == "svg"]
    assert len(svgs) == 2
    assert [a.get("class") for t, a in page.tags if t == "rect" and "drop" in (a.get("class") or "")] == ["bar drop"]
    versions = [a["href"] for t, a in page.tags if t == "a" and (a.get("href") or "").startswith("/a/team/sentiment@")]
    assert "/a/team/sentiment@1.1.0" in versions and "/a/team/sentiment@1.0.0" in versions
    latest = Page(get(f"{hub_url}/a/team/sentiment").text).visible
    assert "@1.1.0" in latest and "stable" in latest
    assert "@1.1.0" in Page(get(f"{hub_url}/a/team/sentiment:stable").text).visible


def test_adapter_page_shows_n_intervals_and_verdicts(hub_url: str) -> None:
    page = Page(get(f"{hub_url}/a/ops/full-baseline@1.0.0").text)
    text = page.visible
    assert "▼ forgotten" in text and "? unresolved" in text and "✓ kept" in text
    assert "over threshold" not in text  # that wording is only for reports without intervals
    assert "[-11.5, -7.5]" in text  # chitchat: −9.5 ± 2, as stored (never recomputed)
    assert "is forgotten when the whole 95 % interval" in text
    whiskers = [a for t, a in page.tags if t == "g" and a.get("class") == "whisker"]
    assert len(whiskers) == 4  # the own task's +100 is clipped: its interval printed, not drawn
    rows = [a.get("class") or "" for t, a in page.tags if t == "tr"]
    assert sum("forgotten" in c for c in rows) == 3 and sum("unresolved" in c for c in rows) == 1
    # metrics table: the value's n and interval
    assert "400" in text and "[0.81, 0.85]" in text


def test_old_report_without_intervals_still_renders(hub_url: str) -> None:
    page = Page(get(f"{hub_url}/a/team/sentiment@1.0.0").text)
    assert "▼ over threshold" in page.visible and "predates intervals" in page.visible
    assert not [a for t, a in page.tags if t == "g" and a.get("class") == "whisker"]


def test_browse_filter_no_task_forgotten(hub_url: str) -> None:
    page = Page(get(f"{hub_url}/?no_forgotten=1").text)
    links = [a["href"] for t, a in page.tags if t == "a" and "adapter-link" in (a.get("class") or "")]
    assert "/a/ops/full-baseline" not in links and len(links) == 3
    assert any(t == "input" and a.get("id") == "no-forgotten" and "checked" in a for t, a in page.tags)


@pytest.mark.parametrize("path", ["/a/nobody/here", "/a/team/sentiment@9.9.9", "/a/team/sentiment:nope", "/nowhere", "/a/"])
def test_missing_is_a_404_page(hub_url: str, path: str) -> None:
    r = get(hub_url + path)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Not found" in Page(r.text).visible


def test_compare_page(hub_url: str) -> None:
    r = get(f"{hub_url}/compare?a=team/sentiment@1.0.0&b=team/sentiment@1.1.0&c=ops/full-baseline")
    assert r.status_code == 200
    page = Page(r.text)
    assert {"compare-table", "overlay-chart"} <= page.ids()
    text = page.visible
    assert "sentiment-rt" in text and "0.83" in text and "0.79" in text
    # Three adapters, four held-out tasks each, two with an own-task row: fourteen bars.
    # Drops: the old report's one point drop over 2, and full-baseline's three forgotten.
    rects = [a for t, a in page.tags if t == "rect" and (a.get("class") or "").startswith("bar")]
    assert len(rects) == 14 and sum("drop" in (a.get("class") or "") for a in rects) == 4
    assert sum("forgotten" in (a.get("class") or "") for a in rects) == 3
    assert "0.83" in text and "n=400" in text  # the table's n and interval under each value
    # Own tasks went +48 (1.1.0) and 0 → 100 (full-baseline): both clipped with their
    # values printed, so full-baseline's −1.0 on aclsum is still a bar: the axis is ±12.65
    # (the held-out rows' widest interval end, −11.5, × 1.1), not ±110.
    assert [a["class"] for a in rects if "clipped" in a["class"]] == ["bar kept clipped"] * 2
    assert "+100 ✓ kept (own task, clipped; 95 % [+98.00, +100])" in text and "+48.00 ✓ kept (own task, clipped" in text
    widths = [float(a["width"]) for a in rects if a["class"] == "bar unresolved"]
    assert any(abs(w - 240 / 12.65) < 0.2 for w in widths)  # −1.0: 19 px (2 px on the +100 row's scale)
    assert get(f"{hub_url}/compare?a=team/sentiment").status_code == 400
    assert get(f"{hub_url}/compare?a=x&b=y&c=z&d=w&ref=v").status_code == 400
    assert get(f"{hub_url}/compare?a=team/sentiment&b=missing/one").status_code == 404
    assert get(f"{hub_url}/compare").status_code == 200  # the empty form


def test_plugins_page_lists_the_catalog(hub_url: str) -> None:
    text = Page(get(f"{hub_url}/plugins").text).visible
    for item in ("lora", "prefix-tuning", "rougeL" if "rougeL" in text else "rouge", "sentiment-rt", "s3://", "file://"):
        assert item in text


# --- hostile content ----------------------------------------------------------------------------
HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</textarea><script>alert(1)</script>",
    "javascript:alert(1)",
    "<a href=\"javascript:alert(1)\">x</a>",
    "{{ 7*7 }}",
    "{% raw %}{{ config }}{% endraw %}",
    "&lt;script&gt;already escaped&lt;/script&gt;",
    "<style>body{display:none}</style>",
    "<iframe src=//evil.example></iframe>",
    "<meta http-equiv=refresh content=0;url=//evil.example>",
    "<base href=//evil.example/>",
    "<form action=//evil.example><button>x</button></form>",
    "\u202eoverride\u202c and zero\u200bwidth",
    "<!-- comment --> <![CDATA[x]]>",
    "<svg><foreignObject><script>alert(1)</script></foreignObject></svg>",
    "<math><mtext><img src=x onerror=alert(1)></mtext></math>",
    "\"onmouseover=\"alert(1)",
    "<object data=x></object><embed src=x>",
    "<link rel=stylesheet href=//evil.example/x.css>",
    "${alert(1)}`",
]
FORBIDDEN_TAGS = {"script", "img", "iframe", "object", "embed", "meta", "base", "math", "foreignobject", "textarea"}


@pytest.fixture(scope="module")
def hostile_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("hostile")
    base = SAMPLES[0]
    samples = [
        Sample(f"evil/n{i}", "1.0.0", payload[:200], "lora", f"Description: {payload}",
               {payload[:200]: {payload[:100]: 0.5}, base.task: {"accuracy": 0.5}}, base.drops)
        for i, payload in enumerate(HOSTILE)
    ]
    publish_samples(f"file://{tmp / 'store'}", tmp, samples, home=tmp / "home")
    with serve_in_process(build_app(HubState.open(LocalStore(tmp / "store")))) as url:
        yield url


def _safe(html: str) -> Page:
    page = Page(html)
    for tag, attrs in page.tags:
        if tag == "meta" and (set(attrs) == {"charset"} or attrs.get("name") == "viewport"):
            continue  # the template's own two
        assert tag not in FORBIDDEN_TAGS, f"<{tag}> reached the page"
        assert not any(k.startswith("on") for k in attrs), f"event handler attribute on <{tag}>"
        for k in ("href", "src", "action"):
            assert not (attrs.get(k) or "").strip().lower().startswith("javascript:"), (tag, attrs)
    return page


def test_hostile_descriptions_task_and_metric_names_render_as_text(hostile_hub: str) -> None:
    assert len(HOSTILE) >= 20
    listing = _safe(get(f"{hostile_hub}/?per_page=200").text)
    assert f"{len(HOSTILE)} adapters" in listing.visible
    for i, payload in enumerate(HOSTILE):
        r = get(f"{hostile_hub}/a/evil/n{i}")
        assert r.status_code == 200, payload
        page = _safe(r.text)
        assert f"Description: {payload}" in page.visible  # shown as the text it is
        assert payload[:100] in page.visible  # the metric name, in the table and the chart
    cmp = _safe(get(f"{hostile_hub}/compare?a=evil/n0&b=evil/n1").text)
    assert "sentiment-rt" in cmp.visible
    # Search terms echo back into the form, escaped.
    for payload in HOSTILE[:6]:
        _safe(get(f"{hostile_hub}/", params={"q": payload, "task": payload, "where": "x>1"}).text)


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/x", "team/../../x", "team\\..\\x", "x%00y",
    "<script>alert(1)</script>", "a" * 5000, "team//x", "/etc/passwd", "CON", "team/x@../../1", "x:../../t",
])
def test_hostile_refs_are_404_pages(hub_url: str, name: str) -> None:
    r = get(f"{hub_url}/a/{name}")
    assert r.status_code == 404, (name, r.status_code)
    _safe(r.text)
    r = get(f"{hub_url}/compare", params={"a": name, "b": "team/sentiment"})
    assert r.status_code == 404 and "<script>alert" not in r.text


# --- sign-in ------------------------------------------------------------------------------------
def test_tokens_gate_pages_and_limit_what_a_token_sees(sample_store: LocalStore, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(json.dumps({"tokens": [
        {"name": "reader", "token": "read-token-123456", "scope": "read", "adapters": ["ops/*"]},
        {"name": "writer", "token": "write-token-123456", "scope": "write", "adapters": ["*"]},
    ]}))
    state = HubState.open(sample_store, tokens=TokenRing.from_file(tokens))
    with serve_in_process(build_app(state)) as url:
        r = get(url + "/")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert get(url + "/", headers={"Authorization": "Bearer wrong-token-000000"}).status_code == 401
        with httpx.Client(base_url=url, timeout=30) as browser:
            bad = browser.post("/login?next=/", content="token=nope", headers={"content-type": "application/x-www-form-urlencoded"})
            assert bad.status_code == 401 and "adapterhub_session" not in bad.headers.get("set-cookie", "")
            ok = browser.post("/login?next=" + quote("//evil.example"), content="token=read-token-123456",
                              headers={"content-type": "application/x-www-form-urlencoded"})
            assert ok.status_code == 303 and ok.headers["location"] == "/"  # never an open redirect
            cookie = ok.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            text = Page(browser.get("/").text).visible
            assert "ops/faq" in text and "team/sentiment" not in text and "2 adapters" in text
            assert browser.get("/a/team/sentiment").status_code == 404  # outside its globs: as if missing
            assert browser.get("/a/ops/faq").status_code == 200
        full = get(url + "/", headers={"Authorization": "Bearer write-token-123456"})
        assert full.status_code == 200 and "4 adapters" in Page(full.text).visible


def test_a_version_removed_and_pushed_again_behind_the_hub_shows_its_new_card(tmp_path: Path) -> None:
    """rm then a push of other bytes under the same version, straight to the store, within
    one refresh interval: the adapter page reads the store's manifest, never a stale one."""
    from adapterhub.registry.client import Registry

    store_url = f"file://{tmp_path / 'store'}"
    first = Sample("team/x", "1.0.0", "sentiment-rt", "lora", "The first upload.", {"sentiment-rt": {"accuracy": 0.5}}, (0, 0, 0, 0))
    second = Sample("team/x", "1.0.0", "sentiment-rt", "lora", "The second upload.", {"sentiment-rt": {"accuracy": 0.9}}, (0, 0, 0, 0))
    publish_samples(store_url, tmp_path / "a", [first], home=tmp_path / "home")
    store = LocalStore(tmp_path / "store")
    state = HubState.open(store, ttl_s=3600)  # no background refresh during the test
    with serve_in_process(build_app(state)) as url:
        assert "The first upload." in Page(get(url + "/a/team/x@1.0.0").text).visible
        reg = Registry(root=tmp_path / "home", progress=False)
        reg.rm("team/x@1.0.0", store_url)
        publish_samples(store_url, tmp_path / "b", [second], home=tmp_path / "home")
        sha = json.loads(store.get_version("team/x", "1.0.0"))["files"][0]["sha256"]
        page = Page(get(url + "/a/team/x@1.0.0").text).visible
        assert "The second upload." in page and "The first upload." not in page and sha in page
        assert "The second upload." in Page(get(url + "/").text).visible  # the listing caught up
        reg.rm("team/x@1.0.0", store_url)
        assert get(url + "/a/team/x@1.0.0").status_code == 404
        assert get(url + "/compare?a=team/x@1.0.0&b=team/x@1.0.0").status_code == 404
