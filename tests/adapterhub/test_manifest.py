"""manifest.json parsing: unknown fields and versions refused, huge or mistyped input one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapterhub.errors import ManifestError
from adapterhub.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest, read_manifest

SHA = "ab" * 32


def valid() -> dict[str, Any]:
    return {
        "format_version": 1,
        "name": "demo",
        "method": "lora",
        "method_kind": "reparameterization",
        "method_config": {"r": 4},
        "base": {
            "name": "tiny-random-llama",
            "architecture": "LlamaForCausalLM",
            "model_type": "llama",
            "weights_sha256": SHA,
            "num_parameters": 10,
            "dtype": "float32",
        },
        "files": [{"path": "adapter.safetensors", "size": 10, "sha256": SHA}],
    }


def bad(obj: Any) -> str:
    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(obj), "m.json")
    msg = str(info.value)
    assert msg.startswith("m.json:") and "\n" not in msg
    return msg


def test_valid_round_trip() -> None:
    m = parse_manifest(json.dumps(valid()))
    assert isinstance(m, Manifest) and m.base.scope == "full"
    assert parse_manifest(m.to_json()) == m


def test_unknown_top_level_field() -> None:
    assert "surprise" in bad({**valid(), "surprise": 1})


def test_unknown_nested_field() -> None:
    obj = valid()
    obj["base"]["extra"] = "x"
    assert "base.extra" in bad(obj)
    obj = valid()
    obj["files"][0]["mode"] = 644
    assert "files.0.mode" in bad(obj)


@pytest.mark.parametrize("version", [0, 2, 999, "1", None, 1.5, 1.0, True])
def test_unknown_versions(version: Any) -> None:
    assert "format_version" in bad({**valid(), "format_version": version})


def test_missing_version() -> None:
    obj = valid()
    del obj["format_version"]
    assert "format_version" in bad(obj)


@pytest.mark.parametrize(
    "path, value",
    [
        (("name",), 5),
        (("name",), ""),
        (("method_kind",), "magic"),
        (("files",), []),
        (("files",), "adapter.safetensors"),
        (("base", "weights_sha256"), "nothex"),
        (("base", "num_parameters"), -1),
        (("files", 0, "size"), -5),
        (("files", 0, "sha256"), "AB" * 32),
        (("files", 0, "path"), "../escape"),
        (("files", 0, "path"), "dir/file"),
        (("metrics",), {"t": {"rouge": "high"}}),
        (("created",), "yesterday"),
    ],
)
def test_bad_types_and_values(path: tuple[Any, ...], value: Any) -> None:
    obj = valid()
    target: Any = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    bad(obj)


def test_duplicate_file_paths() -> None:
    obj = valid()
    obj["files"].append(dict(obj["files"][0]))
    assert "twice" in bad(obj)


def test_huge_strings() -> None:
    assert "name" in bad({**valid(), "name": "x" * 201})
    assert "description" in bad({**valid(), "description": "y" * 10_001})
    # Over the byte cap: refused before JSON parsing.
    huge = json.dumps({**valid(), "method_config": {"blob": "z" * (MAX_MANIFEST_BYTES + 1)}})
    with pytest.raises(ManifestError, match="over the .* byte cap"):
        parse_manifest(huge, "m.json")


def test_not_json_not_object() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"\xff\xfe{", "m.json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest("[" * 100_000, "m.json")
    with pytest.raises(ManifestError, match="JSON object"):
        parse_manifest("[1, 2]", "m.json")


def test_frozen() -> None:
    m = parse_manifest(json.dumps(valid()))
    with pytest.raises(ValueError):
        m.name = "other"  # type: ignore[misc]


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").mkdir()
    with pytest.raises(ManifestError, match="is a directory"):
        read_manifest(tmp_path)


# --- intervals: optional fields added without a format_version bump ----------------------

OLD_REPORT = {  # a forgetting report as written before intervals existed
    "threshold": 2.0,
    "rows": [{"task": "chitchat", "metric": "rougeL", "base": 30.0, "adapted": 24.0, "delta": -6.0, "flagged": True}],
    "perplexity_base": 10.0, "perplexity_adapted": 11.0, "generation": {"own_task": "sentiment-rt", "limit": 8},
    "created": "2026-01-01T00:00:00Z",
}


def test_old_manifest_without_intervals_reads_and_writes_byte_for_byte() -> None:
    old = {**valid(), "metrics": {"sentiment-rt": {"accuracy": 90.0}}, "forgetting": OLD_REPORT,
           "created": "2026-01-01T00:00:00Z"}
    m = parse_manifest(json.dumps(old))
    assert m.intervals == {} and m.forgetting is not None and m.forgetting.rows[0].verdict is None
    # Unset additions stay out of the JSON: the same bytes as before (sha256 and signatures
    # hold), and adapterhub releases that refuse unknown fields still read it.
    out = json.loads(m.to_json())
    assert "intervals" not in out and "interval" not in out["forgetting"]
    assert set(out["forgetting"]["rows"][0]) == set(OLD_REPORT["rows"][0])  # type: ignore[index]
    assert parse_manifest(m.to_json()) == m


def test_intervals_round_trip_and_stay_strict() -> None:
    rows = [{**OLD_REPORT["rows"][0], "n": 8, "ci_low": -9.0, "ci_high": -3.0, "verdict": "forgotten", "resolution": 3.0}]  # type: ignore[index]
    new = {**valid(), "metrics": {"sentiment-rt": {"accuracy": 90.0}},
           "intervals": {"sentiment-rt": {"accuracy": {"n": 40, "low": 76.9, "high": 96.0, "method": "wilson"}}},
           "forgetting": {**OLD_REPORT, "rows": rows, "interval": {"method": "paired-bootstrap", "resamples": 2000, "seed": 0}}}
    m = parse_manifest(json.dumps(new))
    assert m.intervals["sentiment-rt"]["accuracy"].n == 40 and m.intervals["sentiment-rt"]["accuracy"].level == 0.95
    assert m.forgetting is not None and m.forgetting.rows[0].verdict == "forgotten"
    assert parse_manifest(m.to_json()) == m
    assert "verdict" in bad({**new, "forgetting": {**OLD_REPORT, "rows": [{**rows[0], "verdict": "gone"}]}})
    assert "intervals" in bad({**new, "intervals": {"t": {"m": {"n": 1, "method": "wilson", "extra": 1}}}})
    assert "n" in bad({**new, "intervals": {"t": {"m": {"n": -1, "method": "wilson"}}}})
