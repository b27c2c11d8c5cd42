"""``adapterhub generate`` and ``adapterhub chat`` end to end, through the real CLI entry point."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapterhub.basemodels import load_base
from adapterhub.cli.main import main
from adapterhub.serving.handle import RequestHandle
from adapterhub.serving.request import Request
from adapterhub.testing.adapters import make_adapter


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run the real CLI entry point in-process (saves a torch import per call)."""

    def _run(args: list[str], stdin: str | None = None) -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        code = main(args)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return _run


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-adapters")
    base = load_base("tiny-random-llama")
    out = {}
    for name, method, cfg in (("senti", "lora", {"r": 2, "alpha": 4}), ("summ", "prefix-tuning", {"num_virtual_tokens": 3})):
        make_adapter(method, base.model, root / name, config=cfg, name=name, version="1.0.0", seed=len(name), scale=2.0)
        out[name] = root / name
    return out


def test_generate_json_lines(run, adapter_dirs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    res = run(["generate", "--base", "tiny-random-llama", "--adapter", str(adapter_dirs["senti"]),
                "--max-new-tokens", "4", "--json", "good film", "bad film"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["good film", "bad film"]
    for r in rows:
        assert r["adapter"] == "senti@1.0.0"
        assert isinstance(r["completion"], str) and 0 < len(r["token_ids"]) <= 4


def test_generate_mixed_batch_file(run, adapter_dirs: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a review", "adapter": str(adapter_dirs["senti"])},
        {"prompt": "an abstract", "adapter": str(adapter_dirs["summ"])},
        {"prompt": "plain"},
    ]) + "\n")
    res = run(["generate", "--base", "tiny-random-llama", "--batch", str(batch), "--max-new-tokens", "3", "--json"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["adapter"] for r in rows] == ["senti@1.0.0", "summ@1.0.0", None]


def test_generate_bad_batch_is_one_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = tmp_path / "bad.jsonl"
    batch.write_text('{"prompt": "ok"}\n{not json}\n')
    res = run(["generate", "--base", "tiny-random-llama", "--batch", str(batch)])
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("adapterhub: error: ") and "bad.jsonl:2" in res.stderr


def test_chat_switches_adapters_live(run, adapter_dirs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    script = "\n".join([
        "hello", ":adapters", ":use summ", "hello", ":use nope", ":use base", "hello", ":quit",
    ]) + "\n"
    res = run(["chat", "--base", "tiny-random-llama", "--adapter", str(adapter_dirs["senti"]),
                "--adapter", str(adapter_dirs["summ"]), "--max-new-tokens", "3"], stdin=script)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("[senti@1.0.0] ")
    assert any(line.startswith("* senti@1.0.0") for line in lines)
    assert "using summ (new conversation)" in lines
    assert any(line.startswith("[summ@1.0.0] ") for line in lines)
    assert any(line.startswith("error: ") and "nope" in line for line in lines)
    after = lines[lines.index("using base (new conversation)"):]
    assert any(line.startswith("[base] ") for line in after)


# --- generate on the engine: sampling, stop, stream, flag errors -----------------------------

def _json_rows(res: Result) -> list[dict]:  # type: ignore[type-arg]
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


SAMPLED = ["generate", "--base", "tiny-random-llama", "--raw", "--temperature", "1.0", "--top-p", "0.95", "--top-k", "200"]


def test_generate_greedy_matches_host(run) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.host import AdapterHost

    res = run(["generate", "--base", "tiny-random-llama", "--raw", "--max-new-tokens", "5", "--json", "good film", "hello there"])
    rows = _json_rows(res)
    want = AdapterHost("tiny-random-llama").generate(["good film", "hello there"], max_new_tokens=5, raw=True)
    assert [r["token_ids"] for r in rows] == [g.token_ids for g in want]
    assert [r["completion"] for r in rows] == [g.completion for g in want]
    assert {r["finish_reason"] for r in rows} == {"length"}


def test_generate_sampling_with_seed_is_reproducible(run) -> None:  # type: ignore[no-untyped-def]
    def sample(seed: str) -> list[int]:
        rows = _json_rows(run([*SAMPLED, "--seed", seed, "--max-tokens", "8", "--json", "good film"]))
        assert rows[0]["finish_reason"] == "length" and len(rows[0]["token_ids"]) == 8
        return rows[0]["token_ids"]  # type: ignore[no-any-return]

    first = sample("7")
    assert sample("7") == first
    assert sample("8") != first  # the seed, not greedy decoding, picked the tokens


def test_generate_stop_cuts_the_completion(run) -> None:  # type: ignore[no-untyped-def]
    full = _json_rows(run([*SAMPLED, "--seed", "7", "--max-tokens", "12", "--json", "good film"]))[0]["completion"]
    at = next((i for i, c in enumerate(full) if i > 0 and c.isascii() and c.isprintable()), None)
    assert at is not None, f"no printable character to stop at in {full!r}"
    row = _json_rows(run([*SAMPLED, "--seed", "7", "--max-tokens", "12", "--stop", full[at], "--stop", "never", "--json", "good film"]))[0]
    assert row["completion"] == full[: full.index(full[at])]
    assert row["finish_reason"] == "stop"


def test_generate_stream_prints_what_the_batch_prints(run, adapter_dirs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    argv = [*SAMPLED, "--adapter", str(adapter_dirs["senti"]), "--seed", "3", "--max-new-tokens", "6", "good film"]
    plain = run(argv)
    streamed = run([*argv, "--stream"])
    assert plain.returncode == streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == plain.stdout
    assert streamed.stdout.startswith("[senti@1.0.0] good film\n  → ")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--top-p", "2"], "invalid --top-p: "),
        (["--temperature", "-1"], "invalid --temperature: "),
        (["--seed", "-3"], "invalid --seed: "),
        (["--max-tokens", "0"], "invalid --max-new-tokens: "),
        (["--stop", ""], "stop strings must not be empty"),
        (["--stream", "second prompt"], "--stream takes exactly one PROMPT"),
        (["--stream", "--json"], "--stream takes exactly one PROMPT"),
    ],
)
def test_generate_bad_flag_is_one_line(run, flags: list[str], needle: str) -> None:  # type: ignore[no-untyped-def]
    res = run(["generate", "--base", "tiny-random-llama", *flags, "good film"])
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adapterhub: error: ") and needle in lines[0], res.stderr


# --- chat on the engine: conversation, commands, registry loads ---------------------------------

@pytest.fixture()
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[Request]:
    """Every request the CLI hands to the engine, in order."""
    from adapterhub.serving.engine import Engine

    seen: list[Request] = []
    real = Engine.submit

    def spy(self: Engine, request: Request) -> RequestHandle:
        seen.append(request)
        return real(self, request)

    monkeypatch.setattr(Engine, "submit", spy)
    return seen


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of this test's own (the base-model cache stays shared)."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("ADAPTERHUB_HOME", str(h))
    return h


def _chat(run, lines: list[str], *flags: str) -> list[str]:  # type: ignore[no-untyped-def]
    res = run(["chat", "--base", "tiny-random-llama", "--max-new-tokens", "3", *flags], stdin="\n".join(lines) + "\n")
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()  # type: ignore[no-any-return]


def test_chat_keeps_the_conversation_until_reset(run, submitted: list[Request]) -> None:  # type: ignore[no-untyped-def]
    out = _chat(run, ["hello", "and then?", ":reset", "again", ":quit", "never sent"])
    assert "new conversation" in out
    assert [[m.role for m in r.messages or ()] for r in submitted] == [["user"], ["user", "assistant", "user"], ["user"]]
    first, second, after_reset = (r.chat() for r in submitted)
    assert second[0] == first[0] and second[2]["content"] == "and then?"
    assert second[1]["content"] and second[1]["content"] in "\n".join(out)  # the streamed reply, as the model said it
    assert after_reset == [{"role": "user", "content": "again"}]


def test_chat_raw_sends_single_prompts(run, submitted: list[Request]) -> None:  # type: ignore[no-untyped-def]
    _chat(run, ["hello", "and then?"], "--raw", "--temperature", "0.8", "--seed", "1", "--top-p", "0.9")
    assert [(r.prompt, r.raw, r.messages) for r in submitted] == [("hello", True, None), ("and then?", True, None)]
    assert {(r.sampling.temperature, r.sampling.seed, r.sampling.top_p, r.sampling.max_tokens) for r in submitted} == {(0.8, 1, 0.9, 3)}


def test_chat_help_lists_every_command(run) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.serving.cli import CHAT_COMMANDS

    out = _chat(run, [":help", ":frobnicate", "hello"])
    listed = [line.split()[0] for line in out if line.startswith(":")]
    assert listed == [":use", ":adapters", ":load", ":reset", ":help", ":quit"] == [c.split()[0] for c, _ in CHAT_COMMANDS]
    assert "unknown command :frobnicate (:help lists the commands)" in out
    assert out.index("unknown command :frobnicate (:help lists the commands)") < max(
        i for i, line in enumerate(out) if line.startswith("[base] ")
    )  # the session went on


def test_chat_use_loads_a_registry_adapter(run, home: Path, adapter_dirs: dict[str, Path], submitted: list[Request]) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.registry.client import Registry

    assert Registry(progress=False).push(adapter_dirs["senti"], "team/senti", "1.0.0") == "team/senti@1.0.0"
    out = _chat(run, ["hello", "more", ":use team/senti", "hello", ":adapters", ":use base", "hello"])
    assert any(line.startswith("loaded team/senti@1.0.0 (lora) in ") for line in out)
    assert "using team/senti (new conversation)" in out and "using base (new conversation)" in out
    replies = [line for line in out if line.startswith("[")]
    assert [r.split("]")[0] for r in replies] == ["[base", "[base", "[team/senti@1.0.0", "[base"]
    assert "* team/senti@1.0.0  lora" in " ".join(out)
    assert [len(r.messages or ()) for r in submitted] == [1, 3, 1, 1]  # switching started new conversations


def test_chat_use_of_an_unknown_adapter_is_one_error(run, home: Path, adapter_dirs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    out = _chat(run, [":use team/nope", "hello"], "--adapter", str(adapter_dirs["senti"]))
    errors = [line for line in out if line.startswith("error: ")]
    assert len(errors) == 1 and "team/nope" in errors[0]
    after = out[out.index(errors[0]) + 1 :]
    assert any(line.startswith("[senti@1.0.0] ") for line in after)  # still on the adapter it had
