"""Per-token cost of constrained decoding on this CPU: xgrammar against outlines-core.

    .venv/bin/python benchmarks/structured_overhead.py --json

For the SmolLM2 tokenizer (49,152 tokens) and three JSON Schemas, each library compiles the
schema once, then walks a valid JSON answer token by token: at every token it computes the
set of allowed next tokens, applies it to a logits row, and advances. Reported: compile
time, and the median cost per token of (mask + apply + advance), beside the cost of one
SmolLM2 decode step at 1 thread (``--step`` measures it), so the overhead reads as a share
of a step. Single thread; medians of ``--repeats`` walks. Writes
``benchmarks/results/structured_overhead.json``; the last line of ``--json`` is one JSON
object. ``xgrammar`` is optional (it is not a dependency: see docs/serving-http.md); a
library that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).with_name("results")
SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "negative"]},
                                              "score": {"type": "number"}}, "required": ["label", "score"]},
    "nested": {"type": "object", "properties": {
        "title": {"type": "string"}, "year": {"type": "integer"},
        "authors": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}},
                                               "required": ["name"]}}},
        "required": ["title", "year", "authors"]},
    "enum_list": {"type": "array", "items": {"type": "string", "enum": ["a", "bb", "ccc"]}, "maxItems": 8},
}
# Compact JSON: outlines-core's schema regex fixes the whitespace, xgrammar's grammar allows any.
ANSWERS = {
    "flat": '{"label":"positive","score":0.93}',
    "nested": '{"title":"Adapters at scale","year":2026,"authors":[{"name":"Ada"},{"name":"Grace Hopper"}]}',
    "enum_list": '["a","ccc","bb","a"]',
}


def _tokenizer() -> Any:
    from adapterhub.basemodels import load_base

    return load_base("smollm2-135m-instruct").tokenizer


def bench_xgrammar(tok: Any, schema: dict[str, Any], answer: list[int], repeats: int) -> dict[str, Any]:
    import xgrammar as xgr

    vocab = len(tok)
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab)
    t0 = time.perf_counter()
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_json_schema(json.dumps(schema))
    compile_s = time.perf_counter() - t0
    mask = xgr.allocate_token_bitmask(1, vocab)
    logits = torch.zeros(1, vocab)
    per_token = []
    for _ in range(repeats):
        m = xgr.GrammarMatcher(compiled)
        t = time.perf_counter()
        for token in answer:
            m.fill_next_token_bitmask(mask)
            xgr.apply_token_bitmask_inplace(logits, mask)
            if not m.accept_token(token):
                raise SystemExit(f"xgrammar refused a valid answer's token {token}")
        per_token.append((time.perf_counter() - t) / len(answer))
    return {"compile_s": round(compile_s, 3), "per_token_ms": round(statistics.median(per_token) * 1000, 3)}


def bench_outlines(tok: Any, schema: dict[str, Any], answer: list[int], repeats: int) -> dict[str, Any]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    vocab = len(tok)
    eos = tok.eos_token_id
    table: dict[str, list[int]] = {}
    for token_text, i in tok.get_vocab().items():
        if i != eos:
            table.setdefault(token_text, []).append(i)
    t0 = time.perf_counter()
    index = Index(build_regex_from_schema(json.dumps(schema)), Vocabulary(eos, table))
    compile_s = time.perf_counter() - t0
    logits = torch.zeros(1, vocab)
    per_token = []
    for _ in range(repeats):
        g = Guide(index)
        t = time.perf_counter()
        for token in answer:
            allowed = torch.tensor(g.get_tokens(), dtype=torch.long)
            row = torch.full((vocab,), float("-inf"))
            row[allowed] = logits[0, allowed]
            g.advance(token)
        per_token.append((time.perf_counter() - t) / len(answer))
    return {"compile_s": round(compile_s, 3), "per_token_ms": round(statistics.median(per_token) * 1000, 3)}


def decode_step_ms(repeats: int) -> float:
    from adapterhub.host import AdapterHost
    from adapterhub.serving import Engine, EngineConfig, make_request

    with Engine(AdapterHost("smollm2-135m-instruct"), EngineConfig()) as eng:
        c = eng.submit(make_request("Write a story.", None, raw=True, max_tokens=repeats + 1, temperature=0)).result()
        return round((c.latency_s - (c.ttft_s or 0)) / max(1, c.completion_tokens - 1) * 1000, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--step", action="store_true", help="also time one SmolLM2 decode step (1 thread)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tok = _tokenizer()
    out: dict[str, Any] = {"vocab": len(tok), "threads": 1, "schemas": {}}
    for name, schema in SCHEMAS.items():
        answer = tok(ANSWERS[name], add_special_tokens=False)["input_ids"]
        row: dict[str, Any] = {"answer_tokens": len(answer)}
        for lib, fn in (("xgrammar", bench_xgrammar), ("outlines_core", bench_outlines)):
            try:
                row[lib] = fn(tok, schema, answer, args.repeats)
            except ImportError:
                row[lib] = "not installed"
            except (ValueError, SystemExit) as exc:
                row[lib] = f"refused a valid answer: {exc}"
        out["schemas"][name] = row
        print(name, json.dumps(row))
    if args.step:
        out["decode_step_ms"] = decode_step_ms(32)
        print("SmolLM2 decode step (1 thread):", out["decode_step_ms"], "ms")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "structured_overhead.json").write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
