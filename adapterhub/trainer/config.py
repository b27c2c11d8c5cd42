"""Training options (:class:`TrainConfig`) and method-config coercion (``--set k=v``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from adapterhub.errors import ConfigError
from adapterhub.trainer.templates import TEMPLATES

if TYPE_CHECKING:  # `adapterhub train`'s defaults come from here; every command builds its parser
    from adapterhub.protocols.method import Method, MethodConfig

Schedule = Literal["cosine", "linear", "constant"]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run (the CLI flags map 1:1 onto these fields)."""

    steps: int = 100
    batch_size: int = 8
    """Examples per micro-batch; one optimizer step sees ``batch_size * grad_accum``."""
    grad_accum: int = 1
    lr: float = 2e-4
    """The trainer's fallback; ``train`` uses the method's ``training_defaults.lr`` instead
    when the caller gives no ``lr`` (see :func:`resolve_lr`)."""
    weight_decay: float = 0.0
    warmup: float = 0.05
    """Warmup length: a fraction of ``steps`` when below 1, else a number of steps."""
    schedule: Schedule = "cosine"
    max_grad_norm: float | None = 1.0
    max_length: int = 512
    seed: int = 0
    template: str = "auto"
    eval_every: int = 0
    """Evaluate the held-out loss every N steps (0: never)."""
    eval_size: int = 200
    """Held-out examples when no eval split exists (taken from the training data)."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without improvement; keep the best weights."""
    checkpoint_every: int = 0
    resume: bool = False
    skip_bad_rows: bool = False
    limit: int | None = None
    """Use only the first N training examples (quick runs)."""
    gradient_checkpointing: bool = False
    bucket_by_length: bool = True
    max_seconds: float | None = None
    """Hard wall-clock stop (the adapter is saved at the step reached)."""
    progress: bool = True
    overwrite: bool = False
    keep_checkpoints: bool = False
    name: str | None = None
    description: str = ""
    mix: tuple[tuple[str, float], ...] = ()
    """Task mixture: ``((task, fraction), ...)`` of every batch from other task packs
    (:mod:`adapterhub.trainer.mixture`; ``"a=0.1,b=0.1"`` or a dict are accepted too)."""
    mix_data: tuple[tuple[str, float], ...] = ()
    """Mixture rows from JSONL files: ``((path, fraction), ...)`` (or ``"f.jsonl=0.1"``)."""

    @property
    def step_size(self) -> int:
        return self.batch_size * self.grad_accum

    def warmup_steps(self) -> int:
        if self.warmup < 1:
            return int(round(self.warmup * self.steps))
        return int(self.warmup)

    def validate(self) -> TrainConfig:
        checks: list[tuple[bool, str]] = [
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}"),
            (self.schedule in ("cosine", "linear", "constant"), f"schedule must be cosine, linear or constant, got {self.schedule!r}"),
            (self.max_grad_norm is None or self.max_grad_norm > 0, f"max_grad_norm must be positive, got {self.max_grad_norm}"),
            (self.max_length >= 2, f"max_length must be at least 2, got {self.max_length}"),
            (self.template in TEMPLATES, f"template must be one of {', '.join(TEMPLATES)}, got {self.template!r}"),
            (self.eval_every >= 0 and self.checkpoint_every >= 0, "eval_every and checkpoint_every must be >= 0"),
            (self.eval_size >= 1, f"eval_size must be at least 1, got {self.eval_size}"),
            (self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0"),
            (self.early_stopping_patience == 0 or self.eval_every > 0, "early stopping needs --eval-every N"),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1, got {self.limit}"),
            (self.max_seconds is None or self.max_seconds > 0, f"max_seconds must be positive, got {self.max_seconds}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown training option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = dict(options)
        if "mix" in values or "mix_data" in values:
            from adapterhub.trainer.mixture import check_total, parse_mix, parse_mix_data

            values["mix"] = parse_mix(values.get("mix"))
            values["mix_data"] = parse_mix_data(values.get("mix_data"))
            check_total(values["mix"], values["mix_data"])
        return cls(**values).validate()

    def hyperparameters(self) -> dict[str, Any]:
        """What the manifest records (run-shape options; not UI flags like progress)."""
        skip = {"progress", "overwrite", "keep_checkpoints", "resume", "name", "description"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        # Lists, not tuples: a resumed run compares these with their JSON round trip.
        out["mix"] = [[n, f] for n, f in self.mix]
        out["mix_data"] = [[n, f] for n, f in self.mix_data]
        return out


def resolve_lr(method: Method, options: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``options`` with ``lr`` filled in, and where it came from.

    An ``lr`` the caller gave (not None) always wins (``"given"``); else the method's
    declared ``training_defaults.lr`` (``"method default"``); else, for a method that
    declares none, :class:`TrainConfig`'s own default (``"trainer default"``).
    """
    from adapterhub.protocols.method import training_defaults_of

    out = dict(options)
    if out.get("lr") is not None:
        return out, "given"
    defaults = training_defaults_of(method)
    if defaults is not None:
        out["lr"] = float(defaults.lr)
        return out, "method default"
    out["lr"] = TrainConfig.lr
    return out, "trainer default"


def parse_set_value(raw: str) -> Any:
    """``--set`` values: JSON when they parse (``16``, ``0.1``, ``true``, ``["q_proj"]``), else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_set_value(value)
    return out


def coerce_method_config(method: Method, config: MethodConfig | Mapping[str, Any] | None) -> MethodConfig:
    """The method's pydantic config from a dict (``--set``); one-line ConfigError on bad keys."""
    from pydantic import ValidationError

    from adapterhub.protocols.method import MethodConfig

    cls = method.config_cls
    if isinstance(config, cls):
        return config
    if isinstance(config, MethodConfig):
        raise ConfigError(f"method {method.name!r} expects a {cls.__name__}, got {type(config).__name__}")
    values = dict(config or {})
    allowed = sorted(cls.model_fields)
    for key in values:
        if key not in cls.model_fields:
            raise ConfigError(
                f"method {method.name!r} has no option {key!r} (allowed: {', '.join(allowed) or 'none'})"
            )
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<config>"
        raise ConfigError(
            f"method {method.name!r} option {loc!r}: {first['msg']} (allowed: {', '.join(allowed)})"
        ) from None
