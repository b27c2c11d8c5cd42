"""``chitchat``: English (turn → next turn) pairs from chatterbot-corpus conversations.

Source: ``chatterbot_corpus/data/english/*.yml``; each ``conversations`` entry is a list
of turns, and every consecutive pair becomes one example. The corpus often gives several
replies to the same prompt ("Are you sentient?" has three), so splits are made over
*distinct prompts* (seed 1234; 150 test, 75 validation, the rest train): no test prompt
is seen in training, and each test/validation example carries *all* known replies as
references (its ``completion`` is the first). Scored with ROUGE.
"""

from __future__ import annotations

from adapterhub.plugins.tasks._common import BaseTaskPack, clean_text, package_dir, split_by_prompt

from adapterhub.errors import DataError
from adapterhub.protocols.task import Example, Split

TEST_PROMPTS = 150
VALIDATION_PROMPTS = 75


class Chitchat(BaseTaskPack):
    name = "chitchat"
    description = "Small-talk prompt → reply pairs (chatterbot-corpus, English)"
    evaluators = ("rouge",)
    max_new_tokens = 32
    split_seed = 1234
    package = "chatterbot_corpus"
    pip_spec = "chatterbot-corpus==1.3.3"

    def pairs(self) -> list[tuple[str, str, str]]:
        """(prompt, reply, source file stem) in sorted-file, file order."""
        root = package_dir(self.package, self.pip_spec, self.name) / "data" / "english"
        files = sorted(root.glob("*.yml"))
        if not files:
            raise DataError(f"task {self.name!r}: no *.yml conversation files under {root}")
        import yaml  # only when the data is read: every command loads this plugin

        out: list[tuple[str, str, str]] = []
        for path in files:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh) or {}
            for conv in doc.get("conversations") or []:
                turns = [clean_text(t) for t in conv if isinstance(t, str)] if isinstance(conv, list) else []
                for a, b in zip(turns, turns[1:], strict=False):
                    if a and b:
                        out.append((a, b, path.stem))
        return out

    def build(self) -> dict[Split, list[Example]]:
        pairs = [(p, r, {"topic": stem}) for p, r, stem in self.pairs()]
        return split_by_prompt(pairs, self.split_seed, TEST_PROMPTS, VALIDATION_PROMPTS)
