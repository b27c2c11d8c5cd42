"""``translate-sv-en``: Swedish FAQ question → its English version (aligned by ``id``).

Source: ``zaragoza_construction_faq/data/faq.jsonl`` (Swedish) and ``faq-en.jsonl``
(English); entries are paired by their ``id``. Only the *question* is translated: the
answers run to ~250 characters, which would make every item (and BLEU generation on two
CPU cores) several times longer without testing anything different. Splits are a seeded
shuffle (seed 4321) over distinct Swedish questions (three repeat): 50 test, 25
validation, the rest train. Scored with BLEU and chrF.
"""

from __future__ import annotations

from typing import Any

from adapterhub.plugins.tasks._common import (
    BaseTaskPack,
    clean_text,
    data_file,
    read_jsonl,
    split_by_prompt,
)
from adapterhub.plugins.tasks.faq_instruct import TEST_SIZE, VALIDATION_SIZE

from adapterhub.protocols.task import Example, Split

PROMPT = "Translate this Swedish question to English.\nSwedish: {text}"


class TranslateSvEn(BaseTaskPack):
    name = "translate-sv-en"
    description = "Construction FAQ questions, Swedish → English (aligned by id)"
    evaluators = ("bleu", "chrf")
    max_new_tokens = 48
    split_seed = 4321
    package = "zaragoza_construction_faq"
    pip_spec = "zaragoza-construction-faq==1.2.1"

    def build(self) -> dict[Split, list[Example]]:
        sv_path = data_file(self.package, self.pip_spec, self.name, "data/faq.jsonl")
        en_path = data_file(self.package, self.pip_spec, self.name, "data/faq-en.jsonl")
        english = {
            row["id"]: clean_text(str(row["q"]))
            for row in read_jsonl(en_path, self.name)
            if isinstance(row.get("id"), str) and isinstance(row.get("q"), str)
        }
        pairs: list[tuple[str, str, dict[str, Any]]] = []
        for row in read_jsonl(sv_path, self.name):
            rid, q = row.get("id"), row.get("q")
            if not isinstance(rid, str) or not isinstance(q, str) or rid not in english:
                continue  # unaligned entries have no reference translation
            sv, en = clean_text(q), english[rid]
            if sv and en:
                pairs.append((PROMPT.format(text=sv), en, {"id": rid}))
        return split_by_prompt(pairs, self.split_seed, TEST_SIZE, VALIDATION_SIZE)
