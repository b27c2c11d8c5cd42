"""Two hubs over one S3 bucket (real SeaweedFS): a push through one is served by the other.

The hubs share nothing but the bucket; each rebuilds its own cache from it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from adapterhub.registry.client import Registry
from adapterhub.registry.s3 import S3Store

from adapterhub.testing.hub import SAMPLES, write_sample
from adapterhub.testing.hubserver import running_hub, token_for, write_tokens
from adapterhub.testing.seaweed import Seaweed

pytestmark = pytest.mark.s3


def test_two_hubs_serve_one_bucket(seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    url = f"s3://{seaweed.bucket}/hubs-{uuid.uuid4().hex[:8]}"
    tokens = write_tokens(tmp_path / "tokens.yaml", {"ci": ("write", ["team/*"])}, public_read=True)
    with running_hub(S3Store(url), tokens=tokens) as a, running_hub(S3Store(url), tokens=tokens) as b:
        b.state.cache.ttl_s = 0.2  # B learns of new versions from its background refresh
        assert "0 adapters" in httpx.get(b.url + "/", timeout=30).text
        monkeypatch.setenv("ADAPTERHUB_TOKEN", token_for("ci"))
        reg = Registry(root=tmp_path / "home", progress=False)
        for i, sample in enumerate(SAMPLES[:2]):
            reg.publish(write_sample(tmp_path / f"s{i}", sample, seed=i), sample.name, version=sample.version, to=a.url)
        # Hub A wrote them: its cache already has them.
        assert "team/sentiment" in httpx.get(a.url + "/", timeout=30).text
        # Hub B never saw the writes: its refresh (and a page miss) finds them in the bucket.
        deadline = time.monotonic() + 30
        while "1 adapter" not in httpx.get(b.url + "/", timeout=30).text:
            assert time.monotonic() < deadline, "hub B never saw the push through hub A"
            time.sleep(0.1)
        page = httpx.get(b.url + "/a/team/sentiment@1.0.0", timeout=30)
        assert page.status_code == 200 and "forgetting-chart" in page.text
        # And a pull through B returns the bytes pushed through A, verified.
        ref, path = reg.fetch("team/sentiment@1.1.0", b.url)
        assert ref == "team/sentiment@1.1.0" and (path / "manifest.json").is_file()
