"""Training data: JSONL files, Alpaca files or task packs → tokenized, length-bucketed batches.

Row formats (one JSON object per line, detected per row):

* ``{"prompt": ..., "completion": ...}``
* Alpaca: ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` optional; the
  prompt is the instruction, a blank line and the input when there is one).

Bad rows — invalid JSON, not an object, missing or non-string fields, an empty
completion, or a completion that cannot fit ``max_length`` even after truncating the
prompt — are collected with ``file:line`` and raised together as one
:class:`~adapterhub.errors.DataError` (the first few listed, plus the count). They are
never dropped silently; ``skip_bad_rows=True`` (``--skip-bad-rows``) skips them and prints
how many, with the first few reasons, on stderr.

Truncation policy: a sequence longer than ``max_length`` loses prompt *content* from the
left (the task text's end — usually the question or the input — is what matters, and
the template's header and generation prompt are kept); the completion is never cut.

Batching (:class:`BatchSchedule`): examples are shuffled per epoch with the seed, then
sorted by length within groups of ``64 × step size`` and cut into step batches, whose
order is shuffled again. Batches then hold sequences of similar length, so padding is
a few percent instead of a third, while every epoch still sees the data in a seeded
random order. The schedule is a pure function of (seed, epoch), which is what makes
``--resume`` reproduce an uninterrupted run exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from adapterhub.errors import DataError
from adapterhub.protocols.task import Example, Split
from adapterhub.trainer.templates import format_example, prompt_frame, resolve_template

MAX_LISTED = 5
"""How many bad rows a DataError quotes before summarising the rest as a count."""
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainingData:
    """Examples plus what the manifest records about where they came from."""

    examples: list[Example]
    sha256: str
    source: str
    """``file:<path>``, ``task:<name>`` or ``examples``."""
    task: str | None = None
    split_seed: int | None = None
    skipped: int = 0


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: tuple[int, ...]
    prompt_len: int
    """Tokens before the completion; their labels are -100 (loss on the completion only)."""
    source: str
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def labels(self) -> list[int]:
        return [IGNORE_INDEX] * self.prompt_len + list(self.input_ids[self.prompt_len :])


class BadRows:
    """Collects ``file:line: reason`` entries and turns them into one error or one notice."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.rows: list[tuple[str, str]] = []

    def add(self, source: str, reason: str) -> None:
        self.rows.append((source, reason))

    def __len__(self) -> int:
        return len(self.rows)

    def summary(self) -> str:
        listed = "; ".join(f"{src}: {why}" for src, why in self.rows[:MAX_LISTED])
        more = f"; ... and {len(self.rows) - MAX_LISTED} more" if len(self.rows) > MAX_LISTED else ""
        return f"{len(self.rows)} bad row(s) in {self.what}: {listed}{more}"

    def settle(self, skip: bool, kept: int, stream: TextIO | None = None) -> None:
        """Raise DataError, or (``skip``) print the count; never both silent and lossy."""
        if not self.rows:
            return
        if not skip:
            raise DataError(f"{self.summary()} (fix them, or pass --skip-bad-rows to skip them)")
        if kept == 0:
            raise DataError(f"{self.summary()}; no usable rows left")
        print(f"adapterhub train: skipped {self.summary()}", file=stream or sys.stderr)


def _field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}" if key in obj else f"missing field {key!r}")
    return value


def parse_row(obj: Any) -> Example:
    """One decoded JSON row → Example; ValueError says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "prompt" in obj or "completion" in obj:
        prompt, completion = _field(obj, "prompt"), _field(obj, "completion")
    elif "instruction" in obj or "output" in obj:
        instruction, completion = _field(obj, "instruction"), _field(obj, "output")
        extra = obj.get("input", "")
        if not isinstance(extra, str):
            raise ValueError(f"field 'input' must be a string, got {type(extra).__name__}")
        instruction, extra = instruction.strip(), extra.strip()
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
    else:
        raise ValueError("missing fields: need prompt/completion or instruction/output (Alpaca)")
    if not prompt.strip():
        raise ValueError("empty prompt")
    if not completion.strip():
        raise ValueError("empty completion")
    return Example(prompt, completion)


def read_jsonl(path: str | os.PathLike[str], *, skip_bad_rows: bool = False, stream: TextIO | None = None) -> list[Example]:
    """Examples of a JSONL file; bad rows reported with ``file:line`` (see module docs)."""
    p = Path(path)
    bad = BadRows(str(p))
    out: list[Example] = []
    try:
        fh = open(p, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{p}: no such data file") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, expected a JSONL file") from None
    with fh:
        lineno = 0
        while True:
            try:
                line = fh.readline()
            except UnicodeDecodeError as exc:
                raise DataError(f"{p}:{lineno + 1}: not UTF-8 text ({exc.reason})") from None
            if not line:
                break
            lineno += 1
            if not line.strip():
                continue  # blank lines (a trailing newline) are not rows
            source = f"{p}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.add(source, f"invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                ex = parse_row(obj)
            except ValueError as exc:
                bad.add(source, str(exc))
                continue
            out.append(Example(ex.prompt, ex.completion, meta={"source": source}))
    if not out and not bad:
        raise DataError(f"{p}: no rows")
    bad.settle(skip_bad_rows, len(out), stream)
    return out


def examples_sha256(examples: Sequence[Example]) -> str:
    """sha256 over (prompt, completion, references) lines (the task packs' data hash rule)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.prompt, ex.completion, list(ex.refs())], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def load_data(
    data: Sequence[Example] | str | os.PathLike[str],
    *,
    split: Split = "train",
    limit: int | None = None,
    skip_bad_rows: bool = False,
    stream: TextIO | None = None,
) -> TrainingData:
    """Resolve ``data`` (examples, a JSONL path, or a registered task name)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if isinstance(data, os.PathLike) or path.exists() or path.suffix in (".jsonl", ".json"):
            examples = read_jsonl(path, skip_bad_rows=skip_bad_rows, stream=stream)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            examples = examples[:limit] if limit else examples
            return TrainingData(examples, digest, f"file:{path}")
        from adapterhub.catalog import get_catalog

        pack = get_catalog().task(str(data))
        task_examples = pack.load(split)
        task_examples = [
            Example(e.prompt, e.completion, e.references, {**e.meta, "source": f"{pack.name}:{split}:{i + 1}"})
            for i, e in enumerate(task_examples[:limit] if limit else task_examples)
        ]
        digest = pack.data_hash(split) if not limit else examples_sha256(task_examples)
        return TrainingData(task_examples, digest, f"task:{pack.name}", task=pack.name, split_seed=getattr(pack, "split_seed", None))
    examples = list(data)[:limit] if limit else list(data)
    if not examples:
        raise DataError("no training examples given")
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise DataError(f"examples[{i}]: expected adapterhub Example, got {type(ex).__name__}")
    return TrainingData(examples, examples_sha256(examples), "examples")


def _source(ex: Example, i: int) -> str:
    return str(ex.meta.get("source") or f"example {i + 1}")


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_length: int,
    template: str | None = None,
    skip_bad_rows: bool = False,
    stream: TextIO | None = None,
    what: str = "training data",
) -> list[TokenizedExample]:
    """Render with the template, tokenize, apply the truncation policy (module docs)."""
    if max_length < 2:
        raise DataError(f"max_length must be at least 2, got {max_length}")
    name = resolve_template(tokenizer, template)
    bad = BadRows(what)
    rendered = [format_example(tokenizer, ex.prompt, ex.completion, name) for ex in examples]
    prompt_ids = tokenizer([p for p, _ in rendered], add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer([c for _, c in rendered], add_special_tokens=False)["input_ids"]
    frame: tuple[list[int], list[int]] | None = None
    frame_text = prompt_frame(tokenizer, name)
    if frame_text is not None:
        head, tail = tokenizer(list(frame_text), add_special_tokens=False)["input_ids"]
        frame = (list(head), list(tail))
    out: list[TokenizedExample] = []
    for i, (ex, p_ids, c_ids) in enumerate(zip(examples, prompt_ids, completion_ids, strict=True)):
        p_ids, c_ids = list(p_ids), list(c_ids)
        if not c_ids:
            bad.add(_source(ex, i), "completion tokenizes to nothing")
            continue
        truncated = False
        if len(p_ids) + len(c_ids) > max_length:
            truncated = True
            fixed = len(frame[0]) + len(frame[1]) if frame else 0
            budget = max_length - len(c_ids) - fixed
            if budget < 1:
                bad.add(
                    _source(ex, i),
                    f"over-length: completion is {len(c_ids)} tokens (+{fixed} template tokens); "
                    f"max_length {max_length} leaves no room for the prompt",
                )
                continue
            if frame is not None:
                content = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
                p_ids = frame[0] + list(content)[-budget:] + frame[1]
            else:
                p_ids = p_ids[-budget:]
        out.append(TokenizedExample(tuple(p_ids + c_ids), len(p_ids), _source(ex, i), truncated))
    bad.settle(skip_bad_rows, len(out), stream)
    return out


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and completion-only ``labels``."""
    width = max(len(ex) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex)
        ids[row, :n] = torch.tensor(ex.input_ids, dtype=torch.long)
        mask[row, :n] = 1
        labels[row, ex.prompt_len : n] = ids[row, ex.prompt_len : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class BatchSchedule:
    """Deterministic length-bucketed step batches over one rank's examples (module docs).

    ``step_size`` examples make one optimizer step; :meth:`micro_batches` splits a step
    into ``grad_accum`` length-sorted micro-batches.
    """

    GROUP = 64

    def __init__(self, lengths: Sequence[int], step_size: int, seed: int, *, bucket: bool = True) -> None:
        if not lengths:
            raise DataError("no examples to batch")
        if step_size < 1:
            raise DataError(f"batch size must be at least 1, got {step_size}")
        self.lengths = list(lengths)
        self.step_size = step_size
        self.seed = seed
        self.bucket = bucket
        self._epoch: int | None = None
        self._batches: list[list[int]] = []

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.lengths) // self.step_size)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._epoch == epoch:
            return self._batches
        order = list(range(len(self.lengths)))
        rng = random.Random(f"{self.seed}:{epoch}")
        rng.shuffle(order)
        batches: list[list[int]] = []
        if self.bucket:
            group = self.step_size * self.GROUP
            for start in range(0, len(order), group):
                chunk = sorted(order[start : start + group], key=lambda i: self.lengths[i])
                batches += [chunk[j : j + self.step_size] for j in range(0, len(chunk), self.step_size)]
            rng.shuffle(batches)
        else:
            batches = [order[j : j + self.step_size] for j in range(0, len(order), self.step_size)]
        self._epoch, self._batches = epoch, batches
        return batches

    def batch(self, step: int) -> list[int]:
        """Example indices of global step ``step`` (0-based), cycling through epochs."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.epoch_batches(epoch)[pos]

    def micro_batches(self, step: int, grad_accum: int) -> list[list[int]]:
        idx = sorted(self.batch(step), key=lambda i: self.lengths[i])
        size = -(-len(idx) // grad_accum)
        return [idx[j : j + size] for j in range(0, len(idx), size)]


def padding_fraction(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of padded positions in the given batches (reported in the training log)."""
    real = padded = 0
    for b in batches:
        width = max(lengths[i] for i in b)
        real += sum(lengths[i] for i in b)
        padded += width * len(b)
    return 1.0 - real / padded if padded else 0.0
