from __future__ import annotations

from adapterhub.plugins.tasks.chitchat import Chitchat

TEST_SHA = "ffed0dc0eaba0bc171f5bd987a5f550a5afb0ac6c242959050fdf08c49f29077"


def test_pairs_split_by_prompt_with_all_replies_as_references() -> None:
    pack = Chitchat()
    train, val, test = pack.load("train"), pack.load("validation"), pack.load("test")
    assert len(test) == 150 and len(val) == 75 and len(train) > 500
    assert not {e.prompt for e in test} & {e.prompt for e in train}
    assert not {e.prompt for e in val} & {e.prompt for e in train}
    # a prompt with several replies: all of them are references, completion is the first
    assert any(len(e.refs()) > 1 for e in test)
    assert len({e.prompt for e in train}) < len(train)  # train keeps one row per reply
    assert all(e.completion == e.refs()[0] for e in test)


def test_hash_pinned() -> None:
    assert Chitchat().data_hash("test") == TEST_SHA
