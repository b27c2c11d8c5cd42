"""Task mixtures: the schedule draws the requested fractions, deterministically, and the
manifest records them; bad mixture options are one-line errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapterhub.artifact import read_adapter
from adapterhub.cli.main import main
from adapterhub.errors import ConfigError
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.task import Example
from adapterhub.testing.models import tiny_llama
from adapterhub.trainer.config import TrainConfig
from adapterhub.trainer.loop import train
from adapterhub.trainer.mixture import MixSchedule, parse_mix, parse_mix_data

WORDS = ["zero", "one", "two", "three"]
DATA = [Example(f"Say the word for {i % 4}", WORDS[i % 4]) for i in range(48)]


def fresh_base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase("tiny-random-llama", model, tok)


def schedule(fractions: list[float], step_size: int = 8, seed: int = 0, sizes: tuple[int, ...] = (100, 30, 7)) -> MixSchedule:
    primary, *sources = sizes
    return MixSchedule([5 + i % 9 for i in range(primary)], [[3 + i % 4 for i in range(n)] for n in sources[: len(fractions)]],
                       fractions, step_size, seed)


def origins(s: MixSchedule, steps: int) -> Counter[int]:
    return Counter(s.source_of_index(i) for step in range(steps) for i in s.batch(step))


@pytest.mark.parametrize(("fractions", "step_size"), [([0.1, 0.1], 8), ([0.25], 8), ([0.1, 0.05], 16), ([0.3, 0.2], 3), ([0.5], 1)])
def test_schedule_draws_the_requested_fractions(fractions: list[float], step_size: int) -> None:
    s = schedule(fractions, step_size)
    steps = 500
    got = origins(s, steps)
    total = steps * step_size
    for j, f in enumerate(fractions):
        # Exact over the run: within one row of the share, for every source.
        assert abs(got[j] - f * total) <= 1.5, (j, got[j], f * total)
    assert got[-1] == total - sum(got[j] for j in range(len(fractions)))
    assert s.drawn(steps) == [got[j] for j in range(len(fractions))]
    # ... and per batch: every step holds floor or ceil of F·S mixed rows.
    per_step = {sum(1 for i in s.batch(k) if s.source_of_index(i) >= 0) for k in range(steps)}
    lo = int(sum(fractions) * step_size)
    assert per_step <= {lo, lo + 1}


@settings(max_examples=40, deadline=None)
@given(
    fractions=st.lists(st.floats(0.01, 0.3), min_size=1, max_size=3),
    step_size=st.integers(1, 12),
    steps=st.integers(1, 80),
    seed=st.integers(0, 5),
)
def test_schedule_counts_property(fractions: list[float], step_size: int, steps: int, seed: int) -> None:
    s = schedule(fractions, step_size, seed, sizes=(20, 5, 9, 3))
    got = origins(s, steps)
    total = steps * step_size
    mixed = sum(got[j] for j in range(len(fractions)))
    assert abs(mixed - sum(fractions) * total) < 1.0 + 1e-6
    for j, f in enumerate(fractions):
        assert abs(got[j] - f * total) <= 2.0
    assert all(len(s.batch(k)) == step_size for k in range(steps))


def test_schedule_is_deterministic_and_walks_every_source_row() -> None:
    a, b = schedule([0.25, 0.25]), schedule([0.25, 0.25])
    seq = [a.batch(k) for k in range(40)]
    assert seq == [b.batch(k) for k in range(40)]
    # out of order (a resumed run asks for step 30 first): same rows
    c = schedule([0.25, 0.25])
    assert c.batch(30) == seq[30] and c.batch(3) == seq[3]
    assert schedule([0.25, 0.25], seed=1).batch(5) != seq[5] or schedule([0.25, 0.25], seed=1).batch(6) != seq[6]
    # source 2 (7 rows) is walked without repeats before it cycles
    src2 = [i for row in seq for i in row if a.source_of_index(i) == 1]
    assert len(set(src2[:7])) == 7
    # the primary rows of the run are distinct until the primary data is used up
    prim = [i for row in seq[:10] for i in row if a.source_of_index(i) == -1]
    assert len(prim) == len(set(prim))


def test_parse_mix_forms_and_errors() -> None:
    assert parse_mix("chitchat=0.1, faq-instruct=0.2") == (("chitchat", 0.1), ("faq-instruct", 0.2))
    assert parse_mix({"chitchat": 0.1}) == (("chitchat", 0.1),)
    assert parse_mix([("a", "0.5")]) == (("a", 0.5),)
    assert parse_mix_data(["x.jsonl=0.2", "y.jsonl", "we=ird.jsonl"]) == (("x.jsonl", 0.2), ("y.jsonl", 0.1), ("we=ird.jsonl", 0.1))
    for bad, message in [
        ("chitchat", "expects TASK=FRACTION"),
        ("chitchat=0", "between 0 and 1"),
        ("chitchat=1", "between 0 and 1"),
        ("chitchat=-0.1", "between 0 and 1"),
        ("chitchat=nan", "between 0 and 1"),
        ("chitchat=abc", "must be a number"),
        ("a=0.1,a=0.2", "listed twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_mix(bad)
    with pytest.raises(ConfigError, match="add up to 1.*below 1"):
        TrainConfig.from_options({"mix": "a=0.6,b=0.4"})
    with pytest.raises(ConfigError, match="add up to"):
        TrainConfig.from_options({"mix": "a=0.6", "mix_data": "f.jsonl=0.5"})


def test_training_with_a_mixture_records_it(tmp_path: Path) -> None:
    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(json.dumps({"prompt": f"Echo {w}", "completion": w}) + "\n" for w in ["red", "green", "blue"] * 4), encoding="utf-8")
    res = train(fresh_base(), "lora", {"r": 2}, DATA, out_dir=tmp_path / "a", steps=10, batch_size=8, lr=1e-2, progress=False,
                mix={"chitchat": 0.125}, mix_data=[f"{extra}=0.25"], max_length=96, template="plain")
    manifest = read_adapter(tmp_path / "a")[0]
    mix = manifest.provenance.hyperparameters["mix"]
    assert [m["source"] for m in mix] == ["task:chitchat", f"file:{extra}"]
    assert [m["fraction"] for m in mix] == [0.125, 0.25]
    assert [m["rows_drawn"] for m in mix] == [10, 20]  # 1 and 2 of every 8 rows, exactly
    assert [m["row_share"] for m in mix] == [0.125, 0.25]
    assert all(len(m["data_sha256"]) == 64 for m in mix) and mix[1]["num_examples"] == 12
    assert 0 < mix[0]["completion_token_share"] < 1
    assert res.mix == mix and res.as_dict()["mix"] == mix
    # the same run again: identical weights (the mixture is seeded)
    again = train(fresh_base(), "lora", {"r": 2}, DATA, out_dir=tmp_path / "b", steps=10, batch_size=8, lr=1e-2, progress=False,
                  mix={"chitchat": 0.125}, mix_data=[f"{extra}=0.25"], max_length=96, template="plain")
    assert again.loss_curve == res.loss_curve


def test_resume_continues_a_mixed_run_exactly(tmp_path: Path) -> None:
    opts = {"steps": 6, "batch_size": 4, "lr": 1e-2, "progress": False, "mix": "chitchat=0.25", "max_length": 96, "template": "plain"}
    whole = train(fresh_base(), "lora", {"r": 2}, DATA, out_dir=tmp_path / "whole", **opts)
    # stop after step 3 of 6 (a callback asking to stop), with a checkpoint there
    train(fresh_base(), "lora", {"r": 2}, DATA, out_dir=tmp_path / "part", callbacks=[lambda info: info.step >= 3],
          **{**opts, "checkpoint_every": 3, "keep_checkpoints": True})
    resumed = train(fresh_base(), "lora", {"r": 2}, DATA, out_dir=tmp_path / "part", **{**opts, "resume": True})
    assert resumed.loss_curve == pytest.approx(whole.loss_curve, rel=1e-5)
    with pytest.raises(ConfigError, match="mix"):
        train(fresh_base(), "lora", {"r": 2}, DATA, out_dir=tmp_path / "part", **{**opts, "resume": True, "mix": "chitchat=0.5"})


def test_mixture_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'nope' \(known tasks: .*chitchat"):
        train(fresh_base(), "lora", None, DATA, out_dir=tmp_path / "a", steps=1, mix="nope=0.1", progress=False)
    with pytest.raises(ConfigError, match="training task itself"):
        train(fresh_base(), "lora", None, "chitchat", out_dir=tmp_path / "a", steps=1, mix="chitchat=0.1", limit=8, progress=False)
    with pytest.raises(ConfigError, match="no such file"):
        train(fresh_base(), "lora", None, DATA, out_dir=tmp_path / "a", steps=1, mix_data=str(tmp_path / "missing.jsonl"), progress=False)


def test_cli_mix_one_line_errors_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["--mix", "nope=0.1"], "unknown task 'nope' (known tasks:"),
        (["--mix", "chitchat=1.5"], "between 0 and 1"),
        (["--mix", "chitchat=0.5,faq-instruct=0.5"], "add up to 1"),
        (["--mix-data", str(tmp_path / "none.jsonl")], "no such file"),
    ]:
        rc = main(["train", "--base", "tiny-random-llama", "--no-progress", "--task", "sentiment-rt", "--limit", "8",
                   "--steps", "1", "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert rc != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_cli_mix_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--base", "tiny-random-llama", "--no-progress", "--task", "sentiment-rt", "--limit", "16",
               "--mix", "chitchat=0.25", "--steps", "4", "--batch-size", "4", "--max-length", "96", "--template", "plain",
               "--out", str(tmp_path / "o"), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mix"][0]["source"] == "task:chitchat" and result["mix"][0]["rows_drawn"] == 4
    assert read_adapter(tmp_path / "o")[0].provenance.hyperparameters["mix"] == result["mix"]
