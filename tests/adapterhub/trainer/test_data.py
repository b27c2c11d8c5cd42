from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapterhub.errors import DataError
from adapterhub.protocols.task import Example
from adapterhub.trainer.data import (
    IGNORE_INDEX,
    BatchSchedule,
    collate,
    load_data,
    padding_fraction,
    read_jsonl,
    tokenize_examples,
)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_both_formats_are_read(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.jsonl", [
        json.dumps({"prompt": "Say hi", "completion": "hi"}),
        json.dumps({"instruction": "Translate", "input": "hej", "output": "hello"}),
        json.dumps({"instruction": "Just do it", "output": "done"}),
        "",
    ])
    ex = read_jsonl(f)
    assert [(e.prompt, e.completion) for e in ex] == [
        ("Say hi", "hi"), ("Translate\n\nhej", "hello"), ("Just do it", "done"),
    ]
    assert ex[1].meta["source"] == f"{f}:2"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"prompt": "x", "completion": "y"', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"prompt": "x"}', "missing field 'completion'"),
        ('{"text": "x"}', "missing fields"),
        ('{"prompt": "x", "completion": "   "}', "empty completion"),
        ('{"instruction": "x", "output": ""}', "empty completion"),
        ('{"prompt": 3, "completion": "y"}', "field 'prompt' must be a string"),
    ],
)
def test_each_bad_row_is_reported_with_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    f = _write(tmp_path / "d.jsonl", ['{"prompt": "a", "completion": "b"}', line])
    with pytest.raises(DataError) as err:
        read_jsonl(f)
    msg = str(err.value)
    assert f"{f}:2: " in msg and reason in msg and "1 bad row(s)" in msg and "\n" not in msg


def test_many_bad_rows_are_listed_then_counted_and_skippable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ['{"prompt": "a", "completion": "b"}'] + ["not json"] * 8
    f = _write(tmp_path / "d.jsonl", lines)
    with pytest.raises(DataError) as err:
        read_jsonl(f)
    msg = str(err.value)
    assert "8 bad row(s)" in msg and f"{f}:6:" in msg and f"{f}:7:" not in msg and "and 3 more" in msg
    assert "--skip-bad-rows" in msg
    kept = read_jsonl(f, skip_bad_rows=True)
    assert len(kept) == 1
    assert "skipped 8 bad row(s)" in capsys.readouterr().err


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.jsonl", ["nope"])
    with pytest.raises(DataError, match="no usable rows"):
        read_jsonl(f, skip_bad_rows=True)


def test_missing_file_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        load_data(tmp_path / "nope.jsonl")
    with pytest.raises(KeyError):  # UnknownNameError from the catalog
        load_data("no-such-task-name")


def test_task_data_and_hash(tmp_path: Path) -> None:
    data = load_data("faq-instruct")
    assert data.task == "faq-instruct" and data.split_seed == 1234 and len(data.examples) == 427
    assert data.examples[0].meta["source"] == "faq-instruct:train:1"
    from adapterhub.catalog import get_catalog

    assert data.sha256 == get_catalog().task("faq-instruct").data_hash("train")
    limited = load_data("faq-instruct", limit=5)
    assert len(limited.examples) == 5 and limited.sha256 != data.sha256


def test_file_hash_is_the_file_bytes(tmp_path: Path) -> None:
    import hashlib

    f = _write(tmp_path / "d.jsonl", ['{"prompt": "a", "completion": "b"}'])
    assert load_data(f).sha256 == hashlib.sha256(f.read_bytes()).hexdigest()


def test_completion_only_labels_and_chat_template(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    [t] = tokenize_examples([Example("Hi", "ok")], tok, max_length=64)
    text = tok.decode(list(t.input_ids))
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>"
    labels = t.labels
    assert labels[: t.prompt_len] == [IGNORE_INDEX] * t.prompt_len
    assert tok.decode(labels[t.prompt_len :]) == "ok<|im_end|>"


def test_truncation_keeps_the_completion_and_the_template(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    prompt = "BEGINNING " + "filler " * 40 + "the end"
    [t] = tokenize_examples([Example(prompt, "answer")], tok, max_length=60)
    assert len(t) == 60 and t.truncated
    text = tok.decode(list(t.input_ids))
    assert text.startswith("<|im_start|>user\n") and "BEGINNING" not in text
    assert text.endswith("the end<|im_end|>\n<|im_start|>assistant\nanswer<|im_end|>")


def test_over_length_completion_is_a_bad_row(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    rows = [Example("p", "x" * 80, meta={"source": "f.jsonl:7"}), Example("p", "fine")]
    with pytest.raises(DataError, match=r"f\.jsonl:7: over-length: completion is 81 tokens"):
        tokenize_examples(rows, tok, max_length=64)
    kept = tokenize_examples(rows, tok, max_length=64, skip_bad_rows=True)
    assert [k.source for k in kept] == ["example 2"]


def test_collate_pads_right_and_masks_labels(tiny_model: tuple[Any, Any]) -> None:
    _, tok = tiny_model
    toks = tokenize_examples([Example("a", "b"), Example("longer prompt", "c")], tok, max_length=64)
    batch = collate(toks, pad_id=258)
    assert batch["input_ids"].shape == (2, max(len(t) for t in toks))
    short = min(range(2), key=lambda i: len(toks[i]))
    n = len(toks[short])
    assert batch["attention_mask"][short, n:].sum() == 0 and batch["attention_mask"][short, :n].all()
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    assert (batch["labels"] != IGNORE_INDEX).sum() == sum(len(t) - t.prompt_len for t in toks)


def test_batch_schedule_is_deterministic_and_covers_each_epoch() -> None:
    lengths = [(i * 37) % 101 + 5 for i in range(200)]
    a, b = BatchSchedule(lengths, 8, seed=3), BatchSchedule(lengths, 8, seed=3)
    assert [a.batch(s) for s in range(60)] == [b.batch(s) for s in range(60)]
    assert sorted(i for s in range(a.steps_per_epoch) for i in a.batch(s)) == list(range(200))
    assert a.batch(0) != a.batch(a.steps_per_epoch)  # the next epoch is reshuffled
    assert BatchSchedule(lengths, 8, seed=4).batch(0) != a.batch(0)


def test_length_bucketing_cuts_padding() -> None:
    lengths = [(i * 37) % 101 + 5 for i in range(512)]
    bucketed = BatchSchedule(lengths, 8, seed=0)
    plain = BatchSchedule(lengths, 8, seed=0, bucket=False)
    n = bucketed.steps_per_epoch
    pb = padding_fraction([bucketed.batch(s) for s in range(n)], lengths)
    pp = padding_fraction([plain.batch(s) for s in range(n)], lengths)
    assert pb < 0.05 < 0.3 < pp


def test_micro_batches_split_a_step() -> None:
    s = BatchSchedule(list(range(10, 30)), 4, seed=0)
    micro = s.micro_batches(0, 2)
    assert len(micro) == 2 and sorted(micro[0] + micro[1]) == sorted(s.batch(0))
