"""The registry commands through the real ``adapterhub`` CLI entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from adapterhub.cli.main import main

MakeAdapter = Callable[..., Path]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_tour(home: Path, make_adapter: MakeAdapter, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_adapter(seed=1, metrics={"summarize-aclsum": {"rougeL": 0.34}}, task="summarize-aclsum")
    code, out, _ = run(capsys, "push", str(a), "team/summ@1.0.0", "--tag", "prod")
    assert code == 0 and out.startswith("pushed team/summ@1.0.0 to file://")
    code, out, _ = run(capsys, "push", str(make_adapter(seed=2)), "team/sent", "--json")
    assert code == 0 and json.loads(out)["ref"] == "team/sent@0.1.0"

    code, out, _ = run(capsys, "pull", "team/summ:prod", "--json")
    pulled = json.loads(out)
    assert code == 0 and pulled["ref"] == "team/summ@1.0.0" and Path(pulled["path"], "adapter.safetensors").is_file()
    code, out, _ = run(capsys, "pull", "team/summ")
    assert out.strip() == pulled["path"]

    code, out, _ = run(capsys, "ls")
    assert "team/summ" in out and "prod->1.0.0" in out
    code, out, _ = run(capsys, "search", "--where", "rougeL>0.3", "--json")
    assert [r["ref"] for r in json.loads(out)] == ["team/summ@1.0.0"]
    code, out, _ = run(capsys, "search", "--task", "summarize-aclsum")
    assert "team/summ@1.0.0" in out and "rougeL=0.34" in out

    code, out, _ = run(capsys, "show", "team/summ")
    assert code == 0 and "team/summ@1.0.0" in out and "lora" in out and "rougeL=0.34" in out
    code, out, _ = run(capsys, "show", "team/summ", "--json")
    assert json.loads(out)["manifest"]["task"] == "summarize-aclsum"

    code, out, _ = run(capsys, "tag", "team/summ@1.0.0", "stable")
    assert out.strip() == "team/summ:stable -> team/summ@1.0.0"
    code, out, _ = run(capsys, "verify")
    assert code == 0 and out.startswith("ok: 2 version(s)")
    code, out, _ = run(capsys, "index", "rebuild")
    assert out.strip() == "index rebuilt: 2 version(s)"
    code, out, err = run(capsys, "rm", "team/sent@0.1.0")
    assert out.strip() == "removed team/sent@0.1.0" and "gc" in err
    code, out, _ = run(capsys, "gc", "--dry-run", "--grace", "0")
    assert out.startswith("would remove: 1 blob(s)")
    code, out, _ = run(capsys, "gc", "--grace", "0", "--json")
    assert len(json.loads(out)["blobs"]) == 1


def test_cli_remotes(home: Path, make_adapter: MakeAdapter, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    share = tmp_path / "share"
    code, out, _ = run(capsys, "remote", "add", "team", str(share))
    assert code == 0 and out.strip() == f"team -> {share.as_uri()}"
    code, out, _ = run(capsys, "remote", "ls", "--json")
    assert json.loads(out) == {"team": share.as_uri()}
    code, out, _ = run(capsys, "push", str(make_adapter()), "x@1.0.0", "--to", "team")
    assert code == 0 and share.as_uri() in out
    code, out, _ = run(capsys, "pull", "x@1.0.0", "--from", "team", "--json")
    assert code == 0 and json.loads(out)["ref"] == "x@1.0.0"
    code, out, _ = run(capsys, "ls", "--from", "team", "--json")
    assert [r["name"] for r in json.loads(out)] == ["x"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (("pull", "../../etc"), "invalid adapter name"),
        (("pull", "nope"), "no adapter named 'nope'"),
        (("pull", "x@1.2"), "invalid version"),
        (("push", "/nonexistent-dir", "x"), "not an adapter directory"),
        (("search", "--where", "rougeL>>1"), "invalid --where"),
        (("pull", "x", "--from", "nosuchremote"), "no remote named 'nosuchremote'"),
        (("pull", "x", "--endpoint-url", "http://127.0.0.1:1"), "--endpoint-url needs --to/--from"),
        (("rm", "x"), "--all"),
    ],
)
def test_cli_errors_are_one_line(home: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adapterhub: error:") and needle in lines[0], err


def test_cli_push_name_with_nul(home: Path, make_adapter: MakeAdapter, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "push", str(make_adapter()), "bad\x00name")
    assert code == 1 and "\\x00" in err and len(err.strip().splitlines()) == 1


def test_show_prints_stored_intervals_and_verdicts(home: Path, make_adapter: MakeAdapter, capsys: pytest.CaptureFixture[str]) -> None:
    from adapterhub.artifact import update_manifest
    from adapterhub.manifest import ForgettingReport
    from adapterhub.testing.hub import forgetting_report

    a = make_adapter(seed=3, metrics={"sentiment-rt": {"accuracy": 90.0}}, task="sentiment-rt")
    update_manifest(a, intervals={"sentiment-rt": {"accuracy": {"n": 40, "low": 76.9, "high": 96.0, "method": "wilson"}}},
                    forgetting=ForgettingReport.model_validate(forgetting_report((-9.5, -0.6, 1.5, 0.0), n=400)))
    b = make_adapter(seed=4, metrics={"sentiment-rt": {"accuracy": 80.0}}, task="sentiment-rt")
    update_manifest(b, forgetting=ForgettingReport.model_validate(forgetting_report((-9.5, -0.6, 1.5, 0.0))))  # before intervals
    run(capsys, "push", str(a), "team/new@1.0.0")
    run(capsys, "push", str(b), "team/old@1.0.0")
    code, out, _ = run(capsys, "show", "team/new")
    assert code == 0 and "sentiment-rt.accuracy=90 [76.9, 96] n=40" in out
    assert "forgetting:  4 row(s): 1 forgotten, 1 unresolved, 2 kept (n=400)" in out
    code, out, _ = run(capsys, "show", "team/old")
    assert "sentiment-rt.accuracy=80" in out and "n=" not in out.split("metrics:")[1].splitlines()[0]
    assert "forgetting:  4 row(s), 1 flagged" in out
