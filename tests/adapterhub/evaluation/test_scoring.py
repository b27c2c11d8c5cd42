"""Reading prediction/reference files and resolving evaluator specs."""

from __future__ import annotations

import pytest

from adapterhub.errors import ConfigError, DataError, EvaluationError, UnknownNameError
from adapterhub.evaluation.scoring import (
    parse_option_values,
    read_predictions,
    read_references,
    resolve_evaluator,
    score_files,
    score_texts,
)


def test_text_lines_keep_empty_examples_and_crlf(tmp_path):
    p = tmp_path / "p.txt"
    p.write_bytes("first\r\n\r\nthird – ünïcode\u2028same line\n".encode())
    assert read_predictions(p) == ["first", "", "third – ünïcode\u2028same line"]
    p.write_text("no final newline")
    assert read_predictions(p) == ["no final newline"]
    p.write_text("")
    assert read_predictions(p) == []


def test_jsonl_references_strings_lists_and_objects(tmp_path):
    r = tmp_path / "r.jsonl"
    r.write_text('"one"\n["a", "b"]\n{"references": ["x", "y", "z"]}\n{"reference": "solo"}\n')
    assert read_references(r) == [("one",), ("a", "b"), ("x", "y", "z"), ("solo",)]
    p = tmp_path / "p.jsonl"
    p.write_text('"multi\\nline prediction"\n{"prediction": "obj"}\n')
    assert read_predictions(p) == ["multi\nline prediction", "obj"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('"ok"\nnot json\n', r"r.jsonl:2: invalid JSON"),
        ('"ok"\n[]\n', r"r.jsonl:2: expected a string or a non-empty list"),
        ('"ok"\n[1, 2]\n', r"r.jsonl:2: expected"),
        ('"ok"\n\n"x"\n', r"r.jsonl:2: empty line"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    r = tmp_path / "r.jsonl"
    r.write_text(content)
    with pytest.raises(DataError, match=message) as exc:
        read_references(r)
    assert "\n" not in str(exc.value)


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_predictions(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a directory"):
        read_predictions(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbroken \xff byte\n")
    with pytest.raises(DataError, match=r"bad.txt:2: not valid UTF-8"):
        read_predictions(bad)


def test_score_files_checks_alignment(tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\n")
    (tmp_path / "r.txt").write_text("a\n")
    with pytest.raises(DataError, match="has 2 examples but .* has 1"):
        score_files("rouge", tmp_path / "p.txt", tmp_path / "r.txt")
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DataError, match="no examples"):
        score_files("rouge", tmp_path / "e.txt", tmp_path / "e.txt")


def test_resolve_evaluator_specs():
    ev, opts = resolve_evaluator("bleu")
    assert ev.name == "bleu" and opts == {}
    ev, opts = resolve_evaluator("evaluate:meteor")
    assert ev.name == "evaluate" and opts == {"metric": "meteor"}
    with pytest.raises(UnknownNameError, match="unknown evaluator 'nope'; known: .*rouge"):
        resolve_evaluator("nope")
    with pytest.raises(ConfigError):
        resolve_evaluator("evaluate:")


def test_model_aware_evaluator_refused_without_model():
    with pytest.raises(EvaluationError, match="needs a model"):
        score_texts("perplexity", ["a"], [["a"]])


def test_parse_option_values():
    assert parse_option_values(["tokenize=intl", "use_stemmer=true", "n=3", "rouge_types=rouge1,rougeL"]) == {
        "tokenize": "intl",
        "use_stemmer": True,
        "n": 3,
        "rouge_types": ["rouge1", "rougeL"],
    }
    with pytest.raises(ConfigError, match="not key=value"):
        parse_option_values(["oops"])
