"""Keep the serving benchmark runnable: a tiny-model smoke run of every workload and peer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RATES = (
    "tokens_per_s_base", "tokens_per_s_1", "tokens_per_s_8", "tokens_per_s_64", "tokens_per_s_64_cold",
    "peft_naive_tokens_per_s", "static_tokens_per_s",
)
RATIOS = ("one_over_base", "a64_over_1", "a64cold_over_64", "over_peft_naive", "over_static", "itl_p99_over_p50")


def test_serve_engine_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import serve_engine
    finally:
        sys.path.pop(0)
    out = tmp_path / "serve.json"
    code = serve_engine.main([
        "--model", "tiny", "--clients", "4", "--requests-per-client", "2", "--prompt-tokens", "16,40",
        "--max-tokens", "4,12", "--peft-requests", "4", "--out", str(out), "--json",
    ])
    assert code == 0
    head = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc = json.loads(out.read_text())
    assert doc["headline"] == head
    assert out.with_suffix(".md").exists()

    for key in RATES:
        assert head[key] is not None and head[key] > 0, key
    assert head["adapter_loads_64_cold"] >= 1
    assert 0 < head["ttft_p50_ms"] <= head["ttft_p99_ms"]
    assert 0 < head["itl_p50_ms"] <= head["itl_p99_ms"]
    assert (head["clients"], head["threads"], head["adapter"], head["model"]) == (4, 1, "qv-r8", "tiny")
    for key in RATIOS:
        assert head["ratios"][key] is not None and head["ratios"][key] > 0, key

    per = head["workloads"]
    assert set(per) == {"base", "1", "8", "64", "64_cold", "peft_naive", "static"}
    for name in ("base", "1", "8", "64", "64_cold", "static"):
        w = per[name]
        assert w["requests"] == 8, name
        # Every request of the mix produced at least one token and at most its max_tokens.
        assert 8 <= w["completion_tokens"] <= 8 * 12, name
    assert per["peft_naive"]["requests"] == 4
    for name in ("base", "1", "8", "64", "64_cold"):
        w = per[name]
        assert w["ttft_p50_ms"] <= w["ttft_p99_ms"] and w["itl_p50_ms"] <= w["itl_p99_ms"], name
    # Every workload served the same mix: a request that ran to its max_tokens produced
    # exactly that many tokens (a lost or duplicated streamed token shows up here).
    budget = doc["mix"]["max_tokens_total"]
    for name in ("base", "1", "8", "64", "64_cold", "static"):
        w = per[name]
        assert w["completion_tokens"] <= budget, name
        if w["finish"] == {"length": 8}:
            assert w["completion_tokens"] == budget, name
    assert per["64"]["adapter_loads"] == 0 and per["64_cold"]["adapter_loads"] == head["adapter_loads_64_cold"]
