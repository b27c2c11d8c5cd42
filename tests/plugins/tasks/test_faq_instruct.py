from __future__ import annotations

from adapterhub.plugins.tasks.faq_instruct import FaqInstruct, alpaca_prompt

TEST_SHA = "f73f81c66b2fff00190bf1e75252f72e7463c1f04fde961b182bbc9742d12c21"


def test_sizes_and_disjoint_splits() -> None:
    pack = FaqInstruct()
    splits = {s: pack.load(s) for s in ("train", "validation", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 427, "validation": 25, "test": 50}
    prompts = [e.prompt for v in splits.values() for e in v]
    assert len(set(prompts)) == 497  # six questions repeat; each stays in one split
    assert sum(len(e.refs()) for s in ("validation", "test") for e in splits[s]) + len(splits["train"]) == 503
    assert all(e.completion for v in splits.values() for e in v)


def test_alpaca_prompt_rule() -> None:
    assert alpaca_prompt("Do X.", "") == "Do X."
    assert alpaca_prompt(" Do X. ", " the input ") == "Do X.\n\nthe input"


def test_hash_pinned_and_deterministic() -> None:
    assert FaqInstruct().data_hash("test") == FaqInstruct().data_hash("test") == TEST_SHA
