"""Keep the serving benchmark runnable: a tiny-model smoke run of every workload and peer
(issue 13's, and issue 25's transformers continuous batching, multi-turn chat and bound)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RATES = (
    "tokens_per_s_base", "tokens_per_s_1", "tokens_per_s_8", "tokens_per_s_64", "tokens_per_s_64_cold",
    "peft_naive_tokens_per_s", "static_tokens_per_s", "tokens_per_s_8_unpacked", "tokens_per_s_hf_cb_base", "chat_tokens_per_s_cache",
    "chat_tokens_per_s_nocache", "bound_tokens_per_s", "prefill_ms_per_token", "decode_step_ms_c", "share_of_bound",
    "chat_ttft_p50_ms_turn5_cache", "chat_ttft_p50_ms_turn5_nocache",
)
RATIOS = (
    "one_over_base", "a64_over_1", "a64cold_over_64", "over_peft_naive", "over_static", "over_unpacked", "itl_p99_over_p50",
    "engine_base_over_hf_cb", "itl_p99_hf_cb_over_engine", "chat_cache_over_nocache", "chat_ttft5_cache_over_nocache",
)
STREAMED = ("base", "1", "8", "64", "64_cold", "8_unpacked", "hf_cb")
SERVED_MIX = ("base", "1", "8", "64", "64_cold", "8_unpacked", "static", "hf_cb")


def test_serve_engine_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import serve_engine
    finally:
        sys.path.pop(0)
    out = tmp_path / "serve.json"
    code = serve_engine.main([
        "--model", "tiny", "--clients", "4", "--requests-per-client", "2", "--prompt-tokens", "16,40",
        "--max-tokens", "4,12", "--peft-requests", "4", "--chat-turns", "3", "--chat-first-tokens", "20,40",
        "--chat-followup-tokens", "8,16", "--chat-max-tokens", "4,8", "--out", str(out), "--json",
    ])
    assert code == 0
    head = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc = json.loads(out.read_text())
    assert doc["headline"] == head
    md = out.with_suffix(".md").read_text()
    for line in ("transformers continuous batching (bare base)", "Multi-turn chat: 4 clients × 3 turns", "| 3 |", "Bound: prefill"):
        assert line in md, line

    for key in RATES:
        assert head[key] is not None and head[key] > 0, key
    assert head["adapter_loads_64_cold"] >= 1
    assert 0 < head["ttft_p50_ms"] <= head["ttft_p99_ms"]
    assert 0 < head["itl_p50_ms"] <= head["itl_p99_ms"]
    assert (head["clients"], head["threads"], head["adapter"], head["model"]) == (4, 1, "qv-r8", "tiny")
    for key in RATIOS:
        assert head["ratios"][key] is not None and head["ratios"][key] > 0, key

    per = head["workloads"]
    assert set(per) == {"base", "1", "8", "64", "64_cold", "8_unpacked", "peft_naive", "static", "hf_cb", "chat", "bound"}
    for name in SERVED_MIX:
        w = per[name]
        assert w["requests"] == 8, name
        # Every request of the mix produced at least one token and at most its max_tokens.
        assert 8 <= w["completion_tokens"] <= 8 * 12, name
    assert per["peft_naive"]["requests"] == 4
    for name in STREAMED:
        w = per[name]
        assert w["ttft_p50_ms"] <= w["ttft_p99_ms"] and w["itl_p50_ms"] <= w["itl_p99_ms"], name
    # Every workload served the same mix: a request that ran to its max_tokens produced
    # exactly that many tokens (a lost or duplicated streamed token shows up here).
    budget = doc["mix"]["max_tokens_total"]
    for name in SERVED_MIX:
        w = per[name]
        assert w["completion_tokens"] <= budget, name
        if w["finish"] == {"length": 8}:
            assert w["completion_tokens"] == budget, name
    assert per["64"]["adapter_loads"] == 0 and per["64_cold"]["adapter_loads"] == head["adapter_loads_64_cold"]

    # transformers' continuous batching: the engine's prompt ids, streamed through the manager.
    assert per["hf_cb"]["hf_cb"]["api"].startswith("init_continuous_batching")
    assert per["hf_cb"]["hf_cb"]["attention"] in ("sdpa", "paged|eager")

    # Multi-turn chat, cache on and off: every client ran every turn on the same conversation.
    chat = per["chat"]
    assert (chat["clients"], chat["turns"], head["chat_turns"]) == (4, 3, 3)
    for key in ("cache", "nocache"):
        c = chat[key]
        assert c["requests"] == 12 and 12 <= c["completion_tokens"] <= 12 * 8, key
        assert [t["turn"] for t in c["turns"]] == [1, 2, 3] and all(t["requests"] == 4 for t in c["turns"]), key
        assert sum(t["completion_tokens"] for t in c["turns"]) == c["completion_tokens"], key
        # Each turn re-sends the conversation so far: prompts grow turn by turn.
        means = [t["prompt_tokens_mean"] for t in c["turns"]]
        assert means == sorted(means) and means[0] < means[-1], key
        for t in c["turns"]:
            assert t["tokens_per_s"] > 0 and 0 < t["ttft_p50_ms"] <= t["ttft_p99_ms"], key
    assert chat["cache"]["turns"][0]["prompt_tokens_mean"] == chat["nocache"]["turns"][0]["prompt_tokens_mean"]
    assert chat["nocache"]["prefix_cache_stats"] is None
    stats = chat["cache"]["prefix_cache_stats"]
    rate = head["prefix_cache_hit_rate"]
    assert rate is None or 0.0 <= rate <= 1.0
    if stats is not None:
        assert 0 <= stats["hits"] <= stats["lookups"]
        assert rate == (stats["hit_rate"] if stats["lookups"] else None)

    # The bound: one large prefill forward and a full decode step of the clients' rows.
    bound = per["bound"]
    assert bound["prefill_rows"] * bound["prefill_width"] == 2048 and bound["decode_rows"] == 4
    assert bound["prompt_tokens"] == doc["mix"]["prompt_tokens_total"]
    assert bound["completion_tokens"] == per["8"]["completion_tokens"]
    assert abs(head["share_of_bound"] - head["tokens_per_s_8"] / head["bound_tokens_per_s"]) < 1e-2 * head["share_of_bound"]
