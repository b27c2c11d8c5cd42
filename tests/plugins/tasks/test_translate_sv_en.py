from __future__ import annotations

from adapterhub.plugins.tasks.translate_sv_en import TranslateSvEn

TEST_SHA = "f445fcdb2984729aa08aade9712a1284c54def40fcc43b5e121d3d4f1cc2944a"


def test_aligned_pairs() -> None:
    pack = TranslateSvEn()
    test = pack.load("test")
    assert len(test) == 50 and len(pack.load("train")) == 426
    ex = test[0]
    assert ex.prompt.startswith("Translate this Swedish question to English.\nSwedish: ")
    assert ex.meta["id"] and ex.completion and ex.completion != ex.prompt
    assert pack.evaluators == ("bleu", "chrf")


def test_split_differs_from_faq_instruct_and_hash_pinned() -> None:
    pack = TranslateSvEn()
    assert pack.data_hash("test") == TEST_SHA
    ids = {e.meta["id"] for e in pack.load("test")}
    assert not ids & {e.meta["id"] for e in pack.load("train")}
