"""Multi-turn chat against ``adapterhub.serving.Engine`` (issue 25): the workload a prefix
cache is for. Used by ``benchmarks/serve_engine.py`` (workload ``chat``); see its module
docs for what each key means.

Each of ``clients`` closed-loop clients holds one conversation on one adapter (client
``c`` on ``a<c % 8>``): its first user message is a window of real text (the same corpus as
the request mix) and an instruction; every later turn appends the engine's answer as the
assistant message and a short follow-up (another window and a question), and sends the
whole conversation again as chat ``messages``, greedy, ``max_tokens`` drawn per turn. The
conversations are drawn once with the seed; the answers are whatever the engine says, so
a later turn's prompt is the earlier turns' prompt, answer and the new message, rendered
with the adapter's chat template.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import serve_engine as se

from adapterhub.host import AdapterHost
from adapterhub.serving import Engine, EngineConfig, make_request

CHAT_ADAPTERS = 8
FIRST = ("Summarize this.", "Summarize this in two sentences.", "What is the main claim of this text?")
FOLLOW = ("How does this relate to your answer?", "Does this change your summary?", "What does this add?")


@dataclass(frozen=True)
class Conversation:
    adapter: str
    users: tuple[str, ...]  # the user message of every turn
    max_tokens: tuple[int, ...]
    seed: int


def draw_chats(tokenizer: Any, docs: Sequence[str], clients: int, turns: int, first: tuple[int, int],
               follow: tuple[int, int], max_range: tuple[int, int], seed: int) -> list[Conversation]:
    """One conversation per client (see module docs); windows of ``first`` / ``follow``
    tokens of the corpus."""
    stream = se.token_stream(tokenizer, docs)

    def window(rng: random.Random, span: tuple[int, int]) -> str:
        start, length = rng.randrange(len(stream)), rng.randint(*span)
        return tokenizer.decode([stream[(start + k) % len(stream)] for k in range(length)], skip_special_tokens=True).strip()

    out = []
    for c in range(clients):
        rng = random.Random(f"{seed}-chat-{c}")
        users = [f"{window(rng, first)}\n\n{rng.choice(FIRST)}"]
        users += [f"{window(rng, follow)}\n\n{rng.choice(FOLLOW)}" for _ in range(turns - 1)]
        out.append(Conversation(adapter=f"a{c % CHAT_ADAPTERS}", users=tuple(users),
                                max_tokens=tuple(rng.randint(*max_range) for _ in range(turns)), seed=seed * 100_003 + 7919 * c))
    return out


def longest(tokenizer: Any, convs: Sequence[Conversation]) -> int:
    """Upper estimate of a conversation's last prompt + answer in tokens: every user message,
    empty answers in the base's chat template, plus every answer at its ``max_tokens``."""
    worst = 0
    for conv in convs:
        messages = [m for user in conv.users for m in ({"role": "user", "content": user}, {"role": "assistant", "content": ""})]
        text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        worst = max(worst, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + sum(conv.max_tokens))
    return worst


def _ask(engine: Engine, messages: list[dict[str, str]], conv: Conversation, turn: int) -> tuple[se.Record, str, int]:
    req = make_request(messages, conv.adapter, max_tokens=conv.max_tokens[turn], temperature=0.0, seed=conv.seed + turn)
    rec = se.Record(submitted=time.perf_counter())
    handle = engine.submit(req)
    for delta in handle:
        if delta.token_ids:
            rec.token_times.append(time.perf_counter())
            rec.tokens += len(delta.token_ids)
    rec.done = time.perf_counter()
    completion = handle.result()
    if completion.completion_tokens != rec.tokens:
        raise AssertionError(f"{completion.request_id}: stream gave {rec.tokens} tokens, completion {completion.completion_tokens}")
    rec.finish = completion.finish_reason
    return rec, completion.text, completion.prompt_tokens


def warm_up(host: AdapterHost, config: EngineConfig, convs: Sequence[Conversation]) -> None:
    """Chat templates and the prefix cache's first use, outside the timed loops."""
    reqs = [make_request([{"role": "user", "content": c.users[0][:200]}], c.adapter, max_tokens=2, temperature=0.0)
            for c in convs[:CHAT_ADAPTERS]]
    with Engine(host, config.model_copy(update={"prefix_cache": True})) as engine:
        engine.generate(reqs)


def run_chat(host: AdapterHost, config: EngineConfig, convs: Sequence[Conversation], *, prefix_cache: bool) -> dict[str, Any]:
    """Every conversation, one client each, on a fresh engine with or without the prefix cache."""
    turns = len(convs[0].users)
    per_turn: list[list[tuple[se.Record, int]]] = [[] for _ in range(turns)]
    lock = threading.Lock()

    with Engine(host, config.model_copy(update={"prefix_cache": prefix_cache})) as engine:
        def converse(c: int) -> se.Record:
            conv = convs[c]
            messages: list[dict[str, str]] = []
            whole = se.Record(submitted=time.perf_counter())
            for t, user in enumerate(conv.users):
                messages.append({"role": "user", "content": user})
                rec, answer, prompt_tokens = _ask(engine, messages, conv, t)
                messages.append({"role": "assistant", "content": answer})
                with lock:
                    per_turn[t].append((rec, prompt_tokens))
                whole.tokens += rec.tokens
            whole.done = time.perf_counter()
            return whole

        _, wall = se.closed_loop(len(convs), [[c] for c in range(len(convs))], converse)
        stats = engine.stats()

    records = [r for turn in per_turn for r, _ in turn]
    out = se.summarize(records, wall, streamed=True)
    out["prefix_cache"] = prefix_cache
    out["prefix_cache_stats"] = stats.get("prefix_cache")
    out["prompt_tokens"] = sum(p for turn in per_turn for _, p in turn)
    out["turns"] = []
    for t, turn in enumerate(per_turn, start=1):
        recs = [r for r, _ in turn]
        # The turn's span: its first submit to its last finish (clients drift apart, so
        # turns overlap and per-turn rates do not add up to the overall one).
        span = max(r.done for r in recs) - min(r.submitted for r in recs)
        row = se.summarize(recs, span, streamed=True)
        row["turn"] = t
        row["prompt_tokens_mean"] = round(sum(p for _, p in turn) / len(turn), 1)
        out["turns"].append(row)
    return out


def run_both(host: AdapterHost, config: EngineConfig, convs: Sequence[Conversation]) -> dict[str, Any]:
    """The ``chat`` workload record: the conversations with the prefix cache on, then off."""
    warm_up(host, config, convs)
    out: dict[str, Any] = {"clients": len(convs), "turns": len(convs[0].users), "adapters": CHAT_ADAPTERS}
    for key, on in (("cache", True), ("nocache", False)):
        out[key] = run_chat(host, config, convs, prefix_cache=on)
        print(f"[serve_engine] chat ({key}): {out[key]['tokens_per_s']:.1f} tok/s", file=sys.stderr)
    return out


def headline(chat: dict[str, Any] | None) -> dict[str, Any]:
    """The chat keys of the benchmark's headline (None where the workload did not run)."""
    on, off = (chat or {}).get("cache", {}), (chat or {}).get("nocache", {})
    stats = on.get("prefix_cache_stats") or {}

    def rate(r: dict[str, Any]) -> float | None:
        return None if r.get("tokens_per_s") is None else round(r["tokens_per_s"], 3)

    def last_ttft(r: dict[str, Any]) -> float | None:
        return r["turns"][-1]["ttft_p50_ms"] if r.get("turns") else None

    return {
        "chat_turns": None if chat is None else chat["turns"],
        "chat_tokens_per_s_cache": rate(on), "chat_tokens_per_s_nocache": rate(off),
        "chat_ttft_p50_ms_turn5_cache": last_ttft(on), "chat_ttft_p50_ms_turn5_nocache": last_ttft(off),
        # None with no stats (an engine without a prefix cache) or nothing looked up (rows
        # whose method has no packed runtime bypass the cache): a rate of nothing is no rate.
        "prefix_cache_hit_rate": stats.get("hit_rate") if stats.get("lookups") else None,
    }


def markdown(chat: dict[str, Any] | None) -> list[str]:
    """The chat lines of the .md result: a summary and a per-turn table, cache on and off."""
    if chat is None:
        return []
    f = se.fmt
    on, off = chat["cache"], chat["nocache"]
    pc = on.get("prefix_cache_stats") or {}
    return [
        f"Multi-turn chat: {chat['clients']} clients × {chat['turns']} turns, {chat['adapters']} adapters (client i on a<i % "
        f"{chat['adapters']}>); prefix cache on {f(on['tokens_per_s'])} tok/s, off {f(off['tokens_per_s'])} tok/s; cache hits "
        f"{pc.get('hits', '—')} of {pc.get('lookups', '—')} prompt tokens looked up (hit rate "
        f"{f(pc.get('hit_rate') if pc.get('lookups') else None, '.3f')}), "
        f"evictions {pc.get('evictions', '—')}",
        "",
        "| turn | prompt tokens (mean) | cache on: tokens/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | "
        "cache off: tokens/s | TTFT p50 / p99 ms | ITL p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {a['turn']} | {f(a['prompt_tokens_mean'])} | {f(a['tokens_per_s'])} | {f(a['ttft_p50_ms'])} / {f(a['ttft_p99_ms'])} | "
          f"{f(a['itl_p50_ms'])} / {f(a['itl_p99_ms'])} | {f(b['tokens_per_s'])} | {f(b['ttft_p50_ms'])} / {f(b['ttft_p99_ms'])} | "
          f"{f(b['itl_p50_ms'])} / {f(b['itl_p99_ms'])} |" for a, b in zip(on["turns"], off["turns"], strict=True)],
        "",
    ]
