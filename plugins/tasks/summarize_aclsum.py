"""``summarize-aclsum``: paper abstract → one-sentence summary of its *challenge*.

Source: ``aclsum/dataset/{train,val,test}.jsonl`` (ACLSum; fields ``id``,
``summary{challenge,approach,outcome}``, ``sentences{abstract:[...], ...}``). The package's
own splits are used (100 / 50 / 100 papers). Of the three aspect summaries the pack
targets ``challenge`` (what problem the paper addresses): it is the aspect the
first-sentence baseline (ROUGE-L 0.216 on the first 20 test papers) is measured against,
so adapter and baseline are compared on the same references. Abstract sentences come
PTB-tokenised ("results , we"); they are detokenised for the prompt.
"""

from __future__ import annotations

from adapterhub.plugins.tasks._common import BaseTaskPack, data_file, detokenize, read_jsonl

from adapterhub.errors import DataError
from adapterhub.protocols.task import Example, Split

PROMPT = "Summarize in one sentence the problem this paper addresses.\nAbstract: {abstract}"
ASPECT = "challenge"
FILES: dict[Split, str] = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}


def first_sentence_baseline(example: Example) -> str:
    """The abstract's first sentence: the extractive baseline an adapter must beat."""
    return str(example.meta["abstract_sentences"][0])


class SummarizeACLSum(BaseTaskPack):
    name = "summarize-aclsum"
    description = "ACLSum abstract → one-sentence challenge summary (package splits 100/50/100)"
    evaluators = ("rouge",)
    max_new_tokens = 64
    split_seed = 0  # the package's own splits: nothing is shuffled
    package = "aclsum"
    pip_spec = "aclsum==0.1.2"

    def build(self) -> dict[Split, list[Example]]:
        out: dict[Split, list[Example]] = {}
        for split, fname in FILES.items():
            path = data_file(self.package, self.pip_spec, self.name, f"dataset/{fname}")
            examples: list[Example] = []
            for row in read_jsonl(path, self.name):
                try:
                    sentences = [detokenize(s) for s in row["sentences"]["abstract"]]
                    summary = detokenize(row["summary"][ASPECT])
                except (KeyError, TypeError):
                    raise DataError(f"task {self.name!r}: {path}: paper {row.get('id')!r} lacks abstract or {ASPECT} summary") from None
                if not sentences or not summary:
                    continue
                examples.append(
                    Example(
                        PROMPT.format(abstract=" ".join(sentences)),
                        summary,
                        meta={"id": row.get("id"), "aspect": ASPECT, "abstract_sentences": sentences},
                    )
                )
            out[split] = examples
        return out
