"""Few-shot evaluation: K solved train examples before each test prompt.

Shots come only from the task's **train** split, never from the test split, and are
drawn per test example from a seed and the example's own prompt (sha256), so the same
review gets the same shots whatever the ``--limit``, the order or the subset; a train
example whose prompt equals the test prompt (a duplicate across splits) is never its
shot. They are rendered as prior turns of the generator's template by
:func:`adapterhub.prompting.format_few_shot`.

A prompt that with its shots and the generation budget (``max_new_tokens``) would not
fit the context window loses shots, the earliest first, until it fits: the test input is
never truncated to make room. The plan says how many shots were dropped and the fewest
any prompt kept, and that goes into the evaluation record.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapterhub.errors import ConfigError, EvaluationError

if TYPE_CHECKING:
    from adapterhub.protocols.task import Example, TaskPack

Shot = tuple[str, str]
"""(prompt, completion) of one solved example."""


def draw_shots(pool: Sequence[Example], tests: Sequence[Example], k: int, seed: int) -> list[list[Shot]]:
    """K shots per test example from ``pool`` (the train split), reproducible by ``seed``."""
    if k < 0:
        raise ConfigError(f"--shots must be 0 or more, got {k}")
    if k == 0:
        return [[] for _ in tests]
    out: list[list[Shot]] = []
    for ex in tests:
        digest = hashlib.sha256(f"adapterhub-shots\0{seed}\0{ex.prompt}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        # A few spares, in case some are the test prompt itself.
        picks = rng.sample(range(len(pool)), min(len(pool), k + 4))
        shots = [(pool[i].prompt, pool[i].completion) for i in picks if pool[i].prompt != ex.prompt][:k]
        if len(shots) < k:
            raise ConfigError(f"--shots {k}: the train split has only {len(shots)} usable examples")
        out.append(shots)
    return out


def train_pool(task: TaskPack, k: int) -> list[Example]:
    """The task's train split, the only source of shots (a clear error if it has none)."""
    try:
        pool = task.load("train")
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"task {task.name!r} has no train split to draw --shots from ({exc})") from None
    if len(pool) < k:
        raise ConfigError(f"--shots {k}: task {task.name!r} has only {len(pool)} train examples")
    return pool


def context_window(generator: Any) -> int | None:
    """The model's context length (``max_position_embeddings``), when the generator shows it."""
    model = getattr(generator, "model", None)
    if model is None:
        host = getattr(generator, "host", None)
        model = getattr(host, "model", None)
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass
class ShotPlan:
    """What every test prompt gets: its shots (after any drop) and its length in tokens."""

    requested: int
    seed: int
    shots: list[list[Shot]]
    prompt_tokens: list[int] | None
    window: int | None
    over_window: int = 0
    """Prompts longer than the window even with no shots (left as they are)."""

    @property
    def dropped(self) -> int:
        return sum(self.requested - len(s) for s in self.shots)

    @property
    def min_shots(self) -> int:
        return min((len(s) for s in self.shots), default=self.requested)

    @property
    def prompt_tokens_mean(self) -> float | None:
        if not self.prompt_tokens:
            return None
        return sum(self.prompt_tokens) / len(self.prompt_tokens)

    def record(self) -> dict[str, Any]:
        """The fields a stored result carries, so it says how it was obtained."""
        mean = self.prompt_tokens_mean
        return {
            "shots": self.requested,
            "seed": self.seed,
            "shots_dropped": self.dropped,
            "min_shots": self.min_shots,
            "prompt_tokens_mean": round(mean, 2) if mean is not None else None,
            "context_window": self.window,
            "prompts_over_window": self.over_window,
        }


def plan_shots(
    generator: Any,
    tests: Sequence[Example],
    shots: Sequence[Sequence[Shot]],
    *,
    requested: int,
    seed: int,
    max_new_tokens: int,
    window: int | None = None,
) -> ShotPlan:
    """Fit each prompt's shots into the context window (module docs).

    The generator renders (``render(prompt, shots)``) and counts tokens
    (``count_tokens(text)``); one that can do neither (a plain callable) gets no token
    counts and no fitting, and cannot take shots at all.
    """
    render = getattr(generator, "render", None)
    count = getattr(generator, "count_tokens", None)
    if not callable(render) or not callable(count):
        if requested:
            raise EvaluationError(f"--shots {requested}: this generator cannot render few-shot prompts")
        return ShotPlan(requested, seed, [[] for _ in tests], None, window)
    if window is not None and window < 1:
        raise ConfigError(f"--context-window must be at least 1, got {window}")
    window = window or context_window(generator)
    kept: list[list[Shot]] = []
    lengths: list[int] = []
    over = 0
    for ex, mine in zip(tests, shots, strict=True):
        current = list(mine)
        n = int(count(render(ex.prompt, current)))
        while window is not None and current and n + max_new_tokens > window:
            current = current[1:]  # the earliest shot is the furthest from the test input
            n = int(count(render(ex.prompt, current)))
        if window is not None and n + max_new_tokens > window:
            over += 1
        kept.append(current)
        lengths.append(n)
    return ShotPlan(requested, seed, kept, lengths, window, over)
