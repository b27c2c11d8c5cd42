"""``adapterhub score`` end to end: formats, --json shapes, per-example output, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from adapterhub.cli.main import main

PREDS = ["The cat sat on the mat.", "Results improve by 20 %.", "", "Smörgåsbord är gott"]
REFS = [["A cat sat on the mat.", "The cat is on the mat."], ["Results improve by up to 20 %."], ["nothing"], ["Smörgåsbord"]]


@pytest.fixture
def files(tmp_path):
    p = tmp_path / "pred.txt"
    p.write_text("\n".join(PREDS) + "\n", encoding="utf-8")
    r_txt = tmp_path / "ref.txt"
    r_txt.write_text("\n".join(r[0] for r in REFS) + "\n", encoding="utf-8")
    r_jsonl = tmp_path / "ref.jsonl"
    r_jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in REFS), encoding="utf-8")
    return p, r_txt, r_jsonl


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_rouge_json_text_files(capsys, files):
    p, r_txt, _ = files
    rc, out, err = run(capsys, "score", "--metric", "rouge", "--predictions", str(p), "--references", str(r_txt), "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert list(got) == ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(list(got))
    rows = [scorer.score(r[0], pr) for pr, r in zip(PREDS, REFS, strict=True)]
    for t, fields in got.items():
        assert set(fields) == {"precision", "recall", "fmeasure"}
        for f, v in fields.items():
            assert v == pytest.approx(math.fsum(getattr(row[t], f) for row in rows) / len(rows), abs=1e-9)


def test_rouge_jsonl_multi_references(capsys, files):
    p, _, r_jsonl = files
    rc, out, _ = run(capsys, "score", "-m", "rouge", "-p", str(p), "-r", str(r_jsonl), "--json")
    assert rc == 0
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = math.fsum(scorer.score_multi(r, pr)["rougeL"].fmeasure for pr, r in zip(PREDS, REFS, strict=True)) / len(PREDS)
    assert json.loads(out)["rougeL"]["fmeasure"] == pytest.approx(expected, abs=1e-9)


def test_bleu_json_keeps_sacrebleu_names_and_scale(capsys, files):
    p, _, r_jsonl = files
    rc, out, _ = run(capsys, "score", "-m", "bleu", "-p", str(p), "-r", str(r_jsonl), "--json", "-o", "tokenize=intl")
    assert rc == 0
    got = json.loads(out)
    streams = [[r[j] if j < len(r) else None for r in REFS] for j in range(2)]
    expected = sacrebleu.corpus_bleu(PREDS, streams, tokenize="intl")
    assert got["score"] == pytest.approx(expected.score, abs=1e-9)
    assert got["signature"].startswith("nrefs:var|case:mixed|eff:no|tok:intl|smooth:exp|version:")
    assert {"counts", "totals", "precisions", "bp", "sys_len", "ref_len"} <= set(got)


def test_human_output_and_per_example_file(capsys, files, tmp_path):
    p, r_txt, _ = files
    per = tmp_path / "per.jsonl"
    rc, out, _ = run(capsys, "score", "-m", "bleu", "-p", str(p), "-r", str(r_txt), "--per-example", str(per))
    assert rc == 0
    assert out.startswith("BLEU = ") and "signature: nrefs:1|" in out
    rows = [json.loads(line) for line in per.read_text().splitlines()]
    assert len(rows) == len(PREDS)
    assert rows[0]["sentence_bleu"] == pytest.approx(sacrebleu.sentence_bleu(PREDS[0], [REFS[0][0]]).score, abs=1e-9)
    rc, out, _ = run(capsys, "score", "-m", "rouge", "-p", str(p), "-r", str(r_txt), "--per-example", str(per))
    assert out.splitlines()[0].split() == ["METRIC", "PRECISION", "RECALL", "FMEASURE"]
    first = json.loads(per.read_text().splitlines()[0])
    assert set(first["rouge1"]) == {"precision", "recall", "fmeasure"}


def test_accuracy_and_chrf(capsys, tmp_path):
    (tmp_path / "p.txt").write_text("Positive!\nnegative, surely\npositive\n")
    (tmp_path / "r.txt").write_text("positive\nnegative\nnegative\n")
    rc, out, _ = run(capsys, "score", "-m", "accuracy", "-p", str(tmp_path / "p.txt"), "-r", str(tmp_path / "r.txt"), "--json")
    assert rc == 0 and json.loads(out)["correct"] == 2
    rc, out, _ = run(capsys, "score", "-m", "chrf", "-p", str(tmp_path / "p.txt"), "-r", str(tmp_path / "r.txt"), "--json")
    assert json.loads(out)["score"] == pytest.approx(
        sacrebleu.corpus_chrf(["Positive!", "negative, surely", "positive"], [["positive", "negative", "negative"]]).score, abs=1e-9
    )


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("missing", "no such file"),
        ("mismatch", "has 3 examples but"),
        ("badjson", "ref.jsonl:2: invalid JSON"),
        ("unknown", "unknown evaluator 'rogue'"),
        ("badopt", "bad option 'stemming'"),
        ("perplexity", "needs a model"),
    ],
)
def test_errors_are_one_line(capsys, tmp_path, setup, needle):
    p = tmp_path / "p.txt"
    p.write_text("a\nb\nc\n")
    r = tmp_path / "r.txt"
    r.write_text("a\nb\nc\n")
    metric = "rouge"
    if setup == "missing":
        r = tmp_path / "nope.txt"
    elif setup == "mismatch":
        r.write_text("a\n")
    elif setup == "badjson":
        r = tmp_path / "ref.jsonl"
        r.write_text('["a"]\n{oops\n["c"]\n')
    elif setup == "unknown":
        metric = "rogue"
    elif setup == "perplexity":
        metric = "perplexity"
    extra = ["-o", "stemming=true"] if setup == "badopt" else []
    rc, out, err = run(capsys, "score", "-m", metric, "-p", str(p), "-r", str(r), "--json", *extra)
    assert rc == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adapterhub: error: ") and needle in lines[0], err


def test_console_script_subprocess(files):
    """The real process: JSON on stdout and nothing else (no progress noise), exit 0."""
    p, r_txt, _ = files
    cmd = [sys.executable, "-m", "adapterhub.cli.main", "score", "-m", "rouge", "-p", str(p), "-r", str(r_txt), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}


# --- adapterhub eval ----------------------------------------------------------------------------
@pytest.fixture
def tiny_adapter(tmp_path, home):
    """A LoRA adapter for the `tiny-random-llama` alias (same seeded weights)."""
    from adapterhub.testing.adapters import make_adapter
    from adapterhub.testing.models import tiny_llama

    model, _ = tiny_llama(seed=0)
    make_adapter("lora", model, tmp_path / "ad", config={"r": 4}, scale=0.3, task="sentiment-rt", name="sent")
    return tmp_path / "ad"


def test_eval_base_json(capsys, home):
    rc, out, err = run(capsys, "eval", "--base", "tiny-random-llama", "--tasks", "sentiment-rt", "--limit", "2", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["base"] == "tiny-random-llama" and doc["adapter"] is None
    [task] = doc["tasks"]
    assert task["task"] == "sentiment-rt" and task["examples"] == 2 and set(task["metrics"]) == {"accuracy"}
    iv = task["intervals"]["accuracy"]
    assert iv["n"] == 2 and iv["method"] == "wilson" and iv["low"] <= task["metrics"]["accuracy"] <= iv["high"]


def test_eval_adapter_stores_metrics_and_writes_report(capsys, tiny_adapter, tmp_path):
    from adapterhub.manifest import read_manifest

    rc, out, err = run(
        capsys, "eval", "--adapter", str(tiny_adapter), "--tasks", "sentiment-rt", "--limit", "2", "--report", str(tmp_path / "r")
    )
    assert rc == 0, err
    assert out.splitlines()[0].split() == ["TASK", "N", "SHOTS", "PROMPT_TOK", "METRIC", "VALUE", "CI95", "CACHED", "SECONDS"]
    assert out.splitlines()[1].split()[6:8] in (["[0.0,", "65.8]"], ["[34.2,", "100.0]"], ["[9.5,", "90.5]"])  # Wilson, n=2
    assert "ci95: 95% interval, Wilson for proportions" in out
    manifest = read_manifest(tiny_adapter)
    assert set(manifest.metrics) == {"sentiment-rt"}
    stored = manifest.intervals["sentiment-rt"]["accuracy"]  # kept with the number, for the hub and show
    assert stored.n == 2 and stored.method == "wilson" and stored.low is not None
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"results.json", "results.md", "results.png"}


def test_eval_forgetting_cli(capsys, tiny_adapter, tmp_path):
    from adapterhub.manifest import read_manifest

    argv = ["eval", "--adapter", str(tiny_adapter), "--forgetting", "--tasks", "sentiment-rt,translate-sv-en",
            "--limit", "2", "--max-new-tokens", "4", "--json", "--report", str(tmp_path / "f")]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["threshold"] == 2.0 and doc["base"] == "tiny-random-llama"
    assert {(r["task"], r["metric"]) for r in doc["rows"]} == {
        ("sentiment-rt", "accuracy"), ("translate-sv-en", "bleu"), ("translate-sv-en", "chrf")
    }
    assert doc["perplexity_base"] > 1 and doc["perplexity_adapted"] > 1
    assert {k: doc["interval"][k] for k in ("method", "level", "resamples", "seed")} == {
        "method": "paired-bootstrap", "level": 0.95, "resamples": 2000, "seed": 0}
    for row in doc["rows"]:
        assert row["n"] == 2 and row["ci_low"] <= row["delta"] <= row["ci_high"]
        assert row["verdict"] in ("forgotten", "unresolved", "kept") and row["flagged"] == (row["verdict"] == "forgotten")
    assert doc["stored_in"].startswith("manifest of")
    assert read_manifest(tiny_adapter).forgetting is not None
    assert {p.name for p in (tmp_path / "f").iterdir()} == {"forgetting.json", "forgetting.md", "forgetting.png"}
    # human output, base outputs now cached
    rc, out, err = run(capsys, *[a for a in argv if a != "--json"], "--no-save")
    assert rc == 0 and "general-text perplexity: base" in out and out.splitlines()[0].startswith("TASK")
    assert out.splitlines()[0].split() == ["TASK", "METRIC", "N", "BASE", "ADAPTED", "DELTA", "CI95", "±", "VERDICT"]
    assert "forgotten only once it exceeds about" in out


def test_eval_forgetting_resolve_sizes_tasks_and_says_what_it_cannot(capsys, tiny_adapter):
    # A pilot of 2 examples; ±1 point would need far more than the budget allows.
    argv = ["eval", "--adapter", str(tiny_adapter), "--forgetting", "--tasks", "sentiment-rt", "--limit", "2",
            "--max-new-tokens", "2", "--resolve", "1", "--budget", "1", "--no-save", "--json"]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    plan = json.loads(out)["generation"]["resolve"]
    assert plan["target"] == 1 and plan["budget_s"] == 1
    task = plan["tasks"]["sentiment-rt"]
    assert task["pilot_n"] == 2 and task["n"] >= 2
    assert task["short_of_target"] in ("budget", "no-variation")
    assert "--resolve: sentiment-rt:" in err

@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "--forgetting", "--tasks", "sentiment-rt"], "--forgetting needs --adapter"),
        (["eval", "--base", "tiny-random-llama"], "give --tasks"),
        (["eval", "--base", "tiny-random-llama", "--tasks", "nope"], "unknown task 'nope'"),
        (["eval", "--base", "tiny-random-llama", "--tasks", "chitchat", "--limit", "0"], "--limit must be at least 1"),
        (["eval", "--adapter", "no/such-adapter", "--tasks", "chitchat"], "no/such-adapter"),
        (["eval", "--base", "tiny-random-llama", "--tasks", "chitchat", "--resolve", "2"], "add --forgetting"),
        (["eval", "--adapter", "x", "--forgetting", "--budget", "60"], "give --resolve POINTS too"),
        (["eval", "--adapter", "x", "--forgetting", "--resolve", "0"], "--resolve must be above 0"),
    ],
)
def test_eval_errors_are_one_line(capsys, home, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


# --- adapterhub eval --lm-eval (the real harness over an in-process server) -----------------------
def _lm_eval_acc(out: str) -> float:
    doc = json.loads(out)
    return float(doc["metrics"]["lm-eval:adapterhub_sentiment_rt"]["acc"])


def test_eval_lm_eval_stores_beside_our_metrics_and_matches_them(capsys, tiny_adapter):
    pytest.importorskip("lm_eval")
    from adapterhub.manifest import read_manifest

    rc, out, err = run(capsys, "eval", "--adapter", str(tiny_adapter), "--tasks", "sentiment-rt", "--limit", "6", "--json")
    assert rc == 0, err
    ours = json.loads(out)["tasks"][0]["metrics"]["accuracy"]
    rc, out, err = run(capsys, "eval", "--adapter", str(tiny_adapter), "--lm-eval", "sentiment-rt", "--limit", "6", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert _lm_eval_acc(out) == pytest.approx(ours)  # same examples, same rule, same template
    assert doc["tasks"] == {"adapterhub_sentiment_rt": {"examples": 6}}
    [ran] = doc["harness"]["runs"]
    assert ran["model"] == "local-chat-completions" and ran["apply_chat_template"] is True
    assert "127.0.0.1:PORT" in ran["model_args"]
    manifest = read_manifest(tiny_adapter)
    assert set(manifest.metrics) == {"sentiment-rt", "lm-eval:adapterhub_sentiment_rt"}  # ours kept
    assert manifest.intervals["lm-eval:adapterhub_sentiment_rt"]["acc"].n == 6


def test_eval_lm_eval_results_reach_the_hub_card(capsys, tiny_adapter):
    """Unpublished: a manifest metric (pushed with the adapter); published: an evaluation
    record. The hub's card shows both beside the adapter's own metrics."""
    pytest.importorskip("lm_eval")
    import httpx
    from adapterhub.registry.client import Registry
    from adapterhub.registry.hub.app import build_app
    from adapterhub.registry.hub.state import HubState

    from adapterhub.serving.http.inprocess import serve_in_process

    argv = ["eval", "--lm-eval", "sentiment-rt", "--limit", "3"]
    assert run(capsys, *argv, "--adapter", str(tiny_adapter))[0] == 0
    reg = Registry(progress=False)
    reg.push(tiny_adapter, "team/sent", version="1.0.0")
    rc, out, err = run(capsys, *argv, "--adapter", "team/sent@1.0.0")
    assert rc == 0, err
    assert out.splitlines()[0].split() == ["TASK", "N", "METRIC", "VALUE", "CI95"]
    assert "evaluation record of team/sent@1.0.0" in err
    [rec] = [r for r in reg.evaluations("team/sent@1.0.0") if r.get("kind") == "lm-eval"]
    assert rec["harness"]["lm_eval"] == "0.4.13" and rec["tasks"]["adapterhub_sentiment_rt"]["examples"] == 3
    assert "acc" in rec["metrics"]["lm-eval:adapterhub_sentiment_rt"]
    with serve_in_process(build_app(HubState.open(reg.local))) as hub:
        page = httpx.get(f"{hub}/a/team/sent@1.0.0", timeout=30).text
    table = page[page.index('id="metrics-table"'):page.index("</table>", page.index('id="metrics-table"'))]
    assert "lm-eval:adapterhub_sentiment_rt" in table  # the manifest's metric, in the card's table
    assert '"kind": "lm-eval"' in page.replace("&#34;", '"')  # the record, under Evaluation records


@pytest.mark.parametrize(("argv", "message"), [
    (["--lm-eval", "summarize-aclsum"], "corpus metric"),
    (["--lm-eval", "chitchat:mc"], "corpus metric"),
    (["--lm-eval", "sentiment-rt", "--lm-eval-args=--no-such-flag"], "lm-eval refused the arguments"),
    (["--lm-eval", "sentiment-rt", "--shots", "2"], "drop --forgetting, --shots"),
    (["--lm-eval", "sentiment-rt", "--max-new-tokens", "9"], "--max-new-tokens"),
    (["--tasks", "sentiment-rt", "--lm-eval-args=--log_samples"], "--lm-eval-args goes with --lm-eval"),
])
def test_eval_lm_eval_errors_are_one_line_and_stop_the_server(capsys, home, argv, message):
    pytest.importorskip("lm_eval")
    import threading
    import time

    before = {t.ident for t in threading.enumerate()}
    rc, _, err = run(capsys, "eval", "--base", "tiny-random-llama", "--limit", "2", *argv)
    errors = [line for line in err.splitlines() if line.startswith("adapterhub: error:")]
    assert rc == 1 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    def ours() -> set[str]:  # the engine's thread and uvicorn's (Thread-N (run)); not tqdm's monitor
        return {t.name for t in threading.enumerate()
                if t.ident not in before and (t.name == "adapterhub-engine" or t.name.endswith("(run)"))}

    deadline = time.monotonic() + 10  # the server and engine threads end with the run
    while ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ours()


def test_eval_lm_eval_multiple_choice_runs_through_completions(capsys, tiny_adapter):
    pytest.importorskip("lm_eval")
    rc, out, err = run(capsys, "eval", "--adapter", str(tiny_adapter), "--lm-eval", "sentiment-rt:mc", "--limit", "4",
                       "--no-save", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    [ran] = doc["harness"]["runs"]
    assert ran["model"] == "local-completions" and "tokenized_requests=True" in ran["model_args"]
    assert "<base tokenizer>" in ran["model_args"]  # a temporary directory, not recorded
    acc = doc["metrics"]["lm-eval:adapterhub_sentiment_rt_mc"]["acc"]
    assert acc in (0.0, 25.0, 50.0, 75.0, 100.0) and doc["tasks"]["adapterhub_sentiment_rt_mc"]["examples"] == 4
