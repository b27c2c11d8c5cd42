from __future__ import annotations

from adapterhub.plugins import tasks

from adapterhub.protocols.task import TaskPack


def test_hook_registers_all_five_packs() -> None:
    got: list[TaskPack] = []
    tasks.adapterhub_register_tasks(got.append)
    names = [p.name for p in got]
    assert names == ["sentiment-rt", "summarize-aclsum", "faq-instruct", "translate-sv-en", "chitchat"]
    for pack in got:
        assert isinstance(pack, TaskPack)
        assert pack.evaluators and pack.max_new_tokens > 0
        ok, where = pack.available()  # type: ignore[attr-defined]
        assert ok, where
