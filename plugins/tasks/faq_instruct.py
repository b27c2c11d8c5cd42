"""``faq-instruct``: the English Alpaca-format construction FAQ (zaragoza-construction-faq).

Source: ``zaragoza_construction_faq/data/faq-en-alpaca.jsonl`` (``instruction``,
``input``, ``output``). The Alpaca prompt is ``instruction`` plus, when present, a blank
line and ``input`` — the same rule the trainer applies to user Alpaca files. Six questions
appear twice with different answers, so the seeded split (seed 1234) is over the 497
distinct questions: 50 test, 25 validation, the rest train (427 rows); a repeated
question's answers all land in one split and serve together as references.
"""

from __future__ import annotations

from typing import Any

from adapterhub.plugins.tasks._common import BaseTaskPack, data_file, read_jsonl, split_by_prompt

from adapterhub.errors import DataError
from adapterhub.protocols.task import Example, Split

TEST_SIZE = 50
VALIDATION_SIZE = 25


def alpaca_prompt(instruction: str, input_text: str) -> str:
    instruction, input_text = instruction.strip(), input_text.strip()
    return f"{instruction}\n\n{input_text}" if input_text else instruction


class FaqInstruct(BaseTaskPack):
    name = "faq-instruct"
    description = "Construction FAQ question → answer (English, Alpaca format)"
    evaluators = ("rouge",)
    max_new_tokens = 96
    split_seed = 1234
    package = "zaragoza_construction_faq"
    pip_spec = "zaragoza-construction-faq==1.2.1"

    def build(self) -> dict[Split, list[Example]]:
        path = data_file(self.package, self.pip_spec, self.name, "data/faq-en-alpaca.jsonl")
        pairs: list[tuple[str, str, dict[str, Any]]] = []
        for i, row in enumerate(read_jsonl(path, self.name), 1):
            instruction, output = row.get("instruction"), row.get("output")
            if not isinstance(instruction, str) or not isinstance(output, str) or not output.strip():
                raise DataError(f"task {self.name!r}: {path}: row {i} lacks instruction/output")
            pairs.append((alpaca_prompt(instruction, str(row.get("input") or "")), output.strip(), {}))
        return split_by_prompt(pairs, self.split_seed, TEST_SIZE, VALIDATION_SIZE)
