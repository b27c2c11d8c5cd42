from __future__ import annotations

from adapterhub.plugins.tasks.summarize_aclsum import SummarizeACLSum, first_sentence_baseline

TEST_SHA = "848dc0b3a7ee658ec4beefe93a24eae84ec149aff8e1bcf1189a06d8c4e47456"


def test_package_splits_and_fields() -> None:
    pack = SummarizeACLSum()
    sizes = {s: len(pack.load(s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 100, "validation": 50, "test": 100}
    ex = pack.load("test")[0]
    assert ex.prompt.startswith("Summarize in one sentence the problem this paper addresses.\nAbstract: ")
    assert ex.meta["aspect"] == "challenge" and ex.completion
    # detokenised: no PTB " ," spacing left in the prompt
    assert " ," not in ex.prompt and " ." not in ex.prompt
    assert first_sentence_baseline(ex) in ex.prompt


def test_first_sentence_baseline_matches_the_issue_number() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    test = SummarizeACLSum().load("test")[:20]
    f = [scorer.score(e.completion, first_sentence_baseline(e))["rougeL"].fmeasure for e in test]
    # The issue measured 0.216 on 20 test items; detokenising shifts it by a hair.
    assert abs(sum(f) / len(f) - 0.216) < 0.01


def test_hash_pinned() -> None:
    assert SummarizeACLSum().data_hash("test") == TEST_SHA
