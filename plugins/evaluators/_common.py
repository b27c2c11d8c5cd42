"""Shared input checks, option parsing and text normalisation for the built-in evaluators.

Kept free of heavy imports: the metric libraries are imported inside ``score`` so that
loading the plugin (which every ``adapterhub`` command does) stays cheap. Options are
frozen dataclasses validated by pydantic only when some are given, so scoring with the
defaults (``adapterhub score --metric bleu``) does not import pydantic either.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from adapterhub.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class EvaluatorOptions:
    """Base of every evaluator's options: frozen, unknown keys refused (like MethodConfig).

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` with a default for every
    field; :func:`parse_options` validates given values in pydantic's lax mode, as a
    ``BaseModel`` would (``"true"`` → ``True``, a list → a tuple).
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}


OptionsT = TypeVar("OptionsT", bound=EvaluatorOptions)


_VALIDATORS: dict[type[EvaluatorOptions], Any] = {}


def _validator(cls: type[EvaluatorOptions]) -> Any:
    """pydantic's validator for ``cls``, built once (pydantic is imported here, on demand)."""
    found = _VALIDATORS.get(cls)
    if found is None:
        from pydantic import TypeAdapter

        found = _VALIDATORS[cls] = TypeAdapter(cls)
    return found


def parse_options(evaluator: str, cls: type[OptionsT], options: Mapping[str, Any]) -> OptionsT:
    """Validate ``options`` into ``cls``; any problem is one ConfigError line naming the key."""
    if not options:
        return cls()
    names = [f.name for f in dataclasses.fields(cls)]
    known = ", ".join(sorted(names)) or "none"
    extra = [k for k in options if k not in names]
    if extra:  # pydantic's BaseModel wording, which these options used to be
        raise ConfigError(f"evaluator {evaluator!r}: bad option {str(extra[0])!r}: Extra inputs are not permitted (options: {known})")
    from pydantic import ValidationError

    try:
        return _validator(cls).validate_python(dict(options))  # type: ignore[no-any-return]
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<options>"
        raise ConfigError(f"evaluator {evaluator!r}: bad option {key!r}: {first['msg']} (options: {known})") from None


def check_inputs(
    evaluator: str, predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> list[Sequence[str]]:
    """Check shapes and types once, up front; return references as sequences of strings.

    A bare string reference is accepted as a single reference (a bare ``str`` is itself
    a ``Sequence[str]`` of characters, a classic silent bug otherwise).
    """
    n = len(predictions)
    if n == 0:
        raise DataError(f"evaluator {evaluator!r}: no predictions to score")
    if len(references) != n:
        raise DataError(f"evaluator {evaluator!r}: {n} predictions but {len(references)} reference entries")
    refs: list[Sequence[str]] = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(pred, str):
            raise DataError(f"evaluator {evaluator!r}: prediction {i} is {type(pred).__name__}, not str")
        if isinstance(ref, str):
            ref = (ref,)
        elif not ref:
            raise DataError(f"evaluator {evaluator!r}: example {i} has no reference")
        else:
            for r in ref:
                if not isinstance(r, str):
                    raise DataError(f"evaluator {evaluator!r}: a reference of example {i} is {type(r).__name__}, not str")
        refs.append(ref)
    return refs


def reference_streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Transpose per-example references into sacrebleu's reference streams.

    Stream ``j`` holds the ``j``-th reference of each example; examples with fewer
    references get ``None``, which sacrebleu documents as "no reference here".
    """
    width = max(len(r) for r in refs)
    if width == 1:
        return [[r[0] for r in refs]]
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


def mean(values: Sequence[float]) -> float:
    """Exactly rounded mean (fsum), so the corpus score does not depend on order."""
    return math.fsum(values) / len(values)


_WS = re.compile(r"\s+")


def _is_edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """The documented answer normalisation of ``exact_match`` and ``accuracy``.

    1. lowercase (``str.lower``, Unicode-aware);
    2. collapse runs of whitespace to one space;
    3. strip surrounding whitespace and punctuation (Unicode category ``P*``: ``.,!?;:'"``,
       quotes, brackets, dashes...), repeatedly, from both ends.
    Inner punctuation is kept: ``"don't"`` stays ``"don't"``.
    """
    text = _WS.sub(" ", text.lower())
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return text[start:end]


def first_word(text: str) -> str:
    """The label of a label-task answer: the first word of the normalised text.

    ``"Positive. The review praises..."`` → ``"positive"``; punctuation glued to the
    word (``"positive,"``) is stripped again after splitting.
    """
    norm = normalize(text)
    if not norm:
        return ""
    return normalize(norm.split(" ", 1)[0])
