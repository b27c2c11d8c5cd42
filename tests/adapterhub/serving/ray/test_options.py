"""``serve --ray``'s flags are checked before anything starts (no Ray, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.cli.main import main


@pytest.mark.parametrize(("argv", "needle"), [
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--ray", "--replicas", "2", "--min-replicas", "1", "--max-replicas", "3"], "either --replicas or"),
    (["--ray", "--min-replicas", "2"], "give both --min-replicas and --max-replicas"),
    (["--ray", "--min-replicas", "3", "--max-replicas", "2"], "1 <= --min-replicas <= --max-replicas"),
    (["--ray", "--replicas", "0"], "invalid --replicas"),
    (["--ray", "--target-ongoing-requests", "0"], "invalid --target-ongoing-requests"),
])
def test_bad_ray_flags_fail_in_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--base", "tiny-random-llama", *argv]) != 0
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_a_directory_adapter_is_refused_with_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--base", "tiny-random-llama", "--ray", "--adapter", str(tmp_path)]) != 0
    assert "registry reference, not a directory" in capsys.readouterr().err
