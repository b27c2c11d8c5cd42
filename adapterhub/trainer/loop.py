"""The training loop: one base, one method, examples in → adapter artifact out.

``train(base, "lora", {"r": 16}, "sentiment-rt", steps=200, out_dir="out/sent")``

* AdamW over exactly ``adapter.trainable_parameters()``; linear warmup then cosine (or
  linear/constant) decay; gradient accumulation; gradient clipping; seeds for Python,
  NumPy and torch; bf16 autocast on CUDA, fp32 on CPU.
* The loss is the token-mean cross-entropy over *completion* tokens of the whole
  optimizer step (micro-batches are weighted by their token counts, across ranks too),
  so ``batch_size=4`` equals ``batch_size=2, grad_accum=2`` up to float rounding.
* Logits are computed only where the loss needs them (transformers' boolean
  ``logits_to_keep``): on SmolLM2 the 49 152-way output layer is a fifth of the model's
  FLOPs, and a sentiment completion is 2 tokens of ~50. Models without that argument
  get full logits, same loss.
* Optional held-out loss every N steps and early stopping (best weights are kept);
  checkpoints every N steps and ``resume``; Ctrl-C finishes the current step, saves a
  resumable checkpoint and raises :class:`TrainingInterrupted`; a non-finite loss or
  gradient raises :class:`~adapterhub.errors.TrainingError`.
* Rank 0 writes the artifact with a full manifest (base fingerprint, method config,
  trainable parameter count, data hash, split seed, hyperparameters, library versions,
  loss curve).
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapterhub.errors import ConfigError, TrainingError
from adapterhub.manifest import MANIFEST_NAME, Manifest
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.method import Method, MethodConfig, TrainableAdapter
from adapterhub.protocols.task import Example
from adapterhub.trainer import checkpoint as ckpt
from adapterhub.trainer.config import TrainConfig, coerce_method_config, resolve_lr
from adapterhub.trainer.data import (
    BatchSchedule,
    TokenizedExample,
    TrainingData,
    collate,
    load_data,
    tokenize_examples,
)
from adapterhub.trainer.distributed import DistContext, from_environment, shard
from adapterhub.trainer.memory import PeakMemory
from adapterhub.trainer.mixture import MixSchedule, load_sources
from adapterhub.trainer.mixture import provenance as mix_provenance
from adapterhub.trainer.provenance import adapter_name, build_manifest_fields, curve_ends
from adapterhub.trainer.steps import CompletionLoss, completion_tokens, eval_loss, lr_factor


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a resumable checkpoint was saved at ``step``."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class StepInfo:
    step: int
    """Optimizer steps completed (1-based after the first step)."""
    loss: float
    lr: float
    seconds: float
    tokens: int


@dataclass
class TrainResult:
    adapter_dir: Path
    method: str
    trainable_params: int
    steps: int
    initial_loss: float
    final_loss: float
    seconds: float
    loss_curve: list[float]
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False
    tokens_per_second: float = 0.0
    manifest: Manifest | None = None
    adapter: TrainableAdapter | None = None
    """Still attached to the base when ``keep_attached=True``, else None."""
    base_params: int = 0
    """Parameters of the base model before the adapter was attached."""
    lr: float = 0.0
    lr_source: str = "given"
    """``given``, ``method default`` or ``trainer default`` (:func:`~adapterhub.trainer.config.resolve_lr`)."""
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = "unavailable"
    """``cuda_max_memory_allocated``, ``rss_peak_run``, ``rss_peak_process`` (:mod:`~adapterhub.trainer.memory`)."""
    mix: list[dict[str, Any]] = field(default_factory=list)
    """The mixture as recorded in the manifest (empty without one)."""

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a share of the base's (1.0 for full fine-tuning)."""
        return self.trainable_params / self.base_params if self.base_params else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "adapter_dir": str(self.adapter_dir.resolve()),
            "method": self.method,
            "trainable_params": self.trainable_params,
            "steps": self.steps,
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "tokens_per_s": round(self.tokens_per_second, 1),
            "base_params": self.base_params,
            "trainable_share": self.trainable_share,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_kind": self.peak_memory_kind,
            "lr": self.lr,
            "lr_source": self.lr_source,
            "mix": self.mix,
            "eval_losses": [[s, v] for s, v in self.eval_losses],
            "stopped_early": self.stopped_early,
        }


def resolve_method(method: str | Method) -> Method:
    if not isinstance(method, str):
        return method
    from adapterhub.catalog import get_catalog

    return get_catalog().method(method)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _SigintGuard:
    """First Ctrl-C: finish the step, checkpoint, stop. Second: stop right away."""

    def __init__(self, announce: bool) -> None:
        self.hit = False
        self.announce = announce
        self._prev: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        if self.announce:
            print("\nadapterhub train: Ctrl-C — finishing this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self) -> _SigintGuard:
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _split_eval(
    tokenized: list[TokenizedExample], cfg: TrainConfig
) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """Hold out up to ``eval_size`` (at most a fifth) of the training rows, seeded."""
    order = list(range(len(tokenized)))
    random.Random(f"holdout:{cfg.seed}").shuffle(order)
    n = min(cfg.eval_size, len(tokenized) // 5)
    if n < 1:
        raise ConfigError(f"--eval-every needs a held-out set: {len(tokenized)} training rows are too few to hold any out")
    held = set(order[:n])
    return [t for i, t in enumerate(tokenized) if i not in held], [tokenized[i] for i in order[:n]]


@contextlib.contextmanager
def _gradient_checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    if not hasattr(model, "gradient_checkpointing_enable"):
        raise ConfigError("--gradient-checkpointing: this model does not support it")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        model.gradient_checkpointing_disable()


def train(
    base: LoadedBase,
    method: str | Method,
    config: MethodConfig | Mapping[str, Any] | None,
    data: Sequence[Example] | str | Path | TrainingData,
    *,
    out_dir: str | Path,
    eval_data: Sequence[Example] | str | Path | None = None,
    callbacks: Sequence[Callable[[StepInfo], bool | None]] = (),
    keep_attached: bool = False,
    dist: DistContext | None = None,
    **options: Any,
) -> TrainResult:
    """Train ``method`` on ``base`` and write the adapter to ``out_dir`` (module docs).

    ``data``: examples, a JSONL path, or a task name (its ``train`` split; its
    ``validation`` split is the eval set when evaluation is on). ``options`` are
    :class:`TrainConfig` fields (``steps``, ``batch_size``, ``lr``, ...).
    """
    m = resolve_method(method)
    resolved, lr_source = resolve_lr(m, options)
    cfg = TrainConfig.from_options(resolved)
    ctx = dist or from_environment(device=str(next(base.model.parameters()).device))
    out = Path(out_dir)
    if (out / MANIFEST_NAME).exists() and not (cfg.overwrite or cfg.resume):
        raise ConfigError(f"{out} already holds an adapter; choose another --out or pass --overwrite")
    method_config = coerce_method_config(m, config)
    model, tokenizer = base.model, base.tokenizer
    quiet = not ctx.is_main

    # ---- data -------------------------------------------------------------------------
    train_data = data if isinstance(data, TrainingData) else load_data(
        data, limit=cfg.limit, skip_bad_rows=cfg.skip_bad_rows, stream=io.StringIO() if quiet else None
    )
    tokenized = tokenize_examples(
        train_data.examples, tokenizer, max_length=cfg.max_length, template=cfg.template,
        skip_bad_rows=cfg.skip_bad_rows, stream=io.StringIO() if quiet else None,
    )
    eval_set: list[TokenizedExample] = []
    if cfg.eval_every:
        if eval_data is None and train_data.task is not None:
            eval_data = train_data.task
            eval_examples = load_data(eval_data, split="validation", limit=cfg.eval_size).examples
        elif eval_data is not None:
            eval_examples = load_data(eval_data, split="validation", limit=cfg.eval_size).examples
        else:
            eval_examples = []
            tokenized, eval_set = _split_eval(tokenized, cfg)
        if eval_examples:
            eval_set = tokenize_examples(eval_examples, tokenizer, max_length=cfg.max_length, template=cfg.template,
                                         skip_bad_rows=True, stream=io.StringIO() if quiet else None, what="eval data")
    mix_sources = load_sources(cfg.mix, cfg.mix_data, primary=train_data) if (cfg.mix or cfg.mix_data) else []
    mix_tokenized = [
        # Over-long rows of a mixture source are skipped with a notice, not fatal: the
        # source is a pool to draw from, and its rows were not chosen for this max_length.
        tokenize_examples(src.data.examples, tokenizer, max_length=cfg.max_length, template=cfg.template,
                          skip_bad_rows=True, stream=io.StringIO() if quiet else None, what=f"mixture source {src.label}")
        for src in mix_sources
    ]
    pad_id = _pad_id(tokenizer)

    # ---- model, adapter, optimizer ----------------------------------------------------
    seed_everything(cfg.seed)
    from adapterhub.fingerprint import fingerprint

    base_fp = fingerprint(model, base.name)  # before attach: the frozen base's identity
    base_params = sum(p.numel() for p in model.parameters())
    adapter = m.attach(model, method_config)
    try:
        params = _unique(adapter.trainable_parameters())
        if not params:
            raise TrainingError(f"method {m.name!r} produced no trainable parameters with this config")
        n_trainable = sum(p.numel() for p in params)
        ctx.broadcast_parameters(params)
        model.train()
        with _gradient_checkpointing(model, cfg.gradient_checkpointing):
            run = _Run(cfg, ctx, model, params, out, tokenized, eval_set, pad_id, callbacks, quiet,
                       mix=[(t, s.fraction) for t, s in zip(mix_tokenized, mix_sources, strict=True)])
            run_key = {
                "method": m.name, "method_config": method_config.model_dump(mode="json"),
                "data_sha256": train_data.sha256, "base": base_fp.weights_sha256, "world_size": ctx.world_size,
                **({"mix_sha256": [s.data.sha256 for s in mix_sources]} if mix_sources else {}),
                **{k: v for k, v in cfg.hyperparameters().items() if k not in ("steps", "max_seconds", "eval_every", "checkpoint_every", "early_stopping_patience")},
            }
            memory = PeakMemory(ctx.device)
            memory.start()
            run.execute(run_key)
            peak_bytes, peak_kind = memory.read()
        seconds = run.elapsed
        mix_record: list[dict[str, Any]] = []
        if mix_sources and isinstance(run.schedule, MixSchedule):
            completion = [len(e) - e.prompt_len for e in run.examples]
            # Every rank runs the same schedule over its shard: counts scale with the world
            # size; the token share is rank 0's (its shard stands for the rest).
            mix_record = mix_provenance(mix_sources, [n * ctx.world_size for n in run.schedule.drawn(run.step)], run.step,
                                        cfg.step_size * ctx.world_size, run.schedule.token_shares(completion, run.step),
                                        [len(t) for t in mix_tokenized])
        curve = run.loss_curve
        initial, final = curve_ends(curve)
        manifest: Manifest | None = None
        if ctx.is_main:
            from adapterhub.artifact import write_adapter

            fields_ = build_manifest_fields(
                name=cfg.name or adapter_name(out, train_data.task, m.name), method=m, method_config=method_config,
                base_fp=base_fp, n_trainable=n_trainable, data=train_data, num_examples=len(tokenized) ,
                cfg=cfg, steps=run.step, seconds=seconds, curve=curve, eval_losses=run.eval_losses,
                stopped_early=run.stopped_early, world_size=ctx.world_size, lr_source=lr_source, mix=mix_record,
                summary={"trainable_share": n_trainable / base_params if base_params else 0.0,
                         "tokens_per_s": run.tokens / seconds if seconds > 0 else 0.0,
                         **({"peak_memory_bytes": float(peak_bytes)} if peak_bytes is not None else {})},
            )
            manifest = write_adapter(out, fields_, adapter.adapter_state(), overwrite=cfg.overwrite or cfg.resume)
            if not cfg.keep_checkpoints:
                ckpt.remove_all(out)
        ctx.barrier()
        return TrainResult(
            adapter_dir=out, method=m.name, trainable_params=n_trainable, steps=run.step,
            initial_loss=initial, final_loss=final, seconds=seconds, loss_curve=curve,
            eval_losses=run.eval_losses, stopped_early=run.stopped_early,
            tokens_per_second=run.tokens / seconds if seconds > 0 else 0.0, manifest=manifest,
            adapter=adapter if keep_attached else None, base_params=base_params, lr=cfg.lr, lr_source=lr_source,
            peak_memory_bytes=peak_bytes, peak_memory_kind=peak_kind, mix=mix_record,
        )
    finally:
        if not keep_attached:
            with contextlib.suppress(Exception):  # never mask the real error with a detach error
                adapter.detach()


def _unique(params: Sequence[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class _Run:
    """The mutable state of one training run (split out so ``train`` stays readable)."""

    def __init__(
        self, cfg: TrainConfig, ctx: DistContext, model: Any, params: list[torch.nn.Parameter], out: Path,
        tokenized: list[TokenizedExample], eval_set: list[TokenizedExample], pad_id: int,
        callbacks: Sequence[Callable[[StepInfo], bool | None]], quiet: bool,
        mix: Sequence[tuple[list[TokenizedExample], float]] = (),
    ) -> None:
        self.cfg, self.ctx, self.model, self.params, self.out = cfg, ctx, model, params, out
        self.eval_set, self.pad_id, self.callbacks, self.quiet = eval_set, pad_id, callbacks, quiet
        order = list(range(len(tokenized)))
        random.Random(f"shard:{cfg.seed}").shuffle(order)
        mine = shard(order, ctx)
        self.examples = [tokenized[i] for i in mine]
        self.schedule: BatchSchedule | MixSchedule
        if mix:
            pools = []
            for j, (rows, _) in enumerate(mix):
                src_order = list(range(len(rows)))
                random.Random(f"shard:{cfg.seed}:mix{j}").shuffle(src_order)
                pools.append([rows[i] for i in shard(src_order, ctx)])
            self.schedule = MixSchedule([len(e) for e in self.examples], [[len(e) for e in p] for p in pools],
                                        [f for _, f in mix], cfg.step_size, cfg.seed, bucket=cfg.bucket_by_length)
            self.examples += [e for p in pools for e in p]
        else:
            self.schedule = BatchSchedule([len(e) for e in self.examples], cfg.step_size, cfg.seed, bucket=cfg.bucket_by_length)
        self.loss_fn = CompletionLoss(model, ctx.device)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = cfg.warmup_steps()
        self.lr_at = lambda s: lr_factor(s, cfg.steps, warmup, cfg.schedule)
        self.step = 0
        self.loss_curve: list[float] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.best: tuple[float, list[torch.Tensor]] | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.elapsed = 0.0
        self.tokens = 0

    # -- checkpoints ------------------------------------------------------------------
    def _state(self, run_key: dict[str, Any]) -> dict[str, Any]:
        return {
            "run_key": run_key, "loss_curve": self.loss_curve, "eval_losses": self.eval_losses,
            "elapsed": self.elapsed, "tokens": self.tokens, "bad_evals": self.bad_evals,
            "best_eval": self.best[0] if self.best else None,
        }

    def save(self, run_key: dict[str, Any]) -> Path | None:
        path = None
        if self.ctx.is_main:
            path = ckpt.save(self.out, self.step, self.params, self.optimizer, self._state(run_key))
        self.ctx.barrier()
        return path

    def resume(self, run_key: dict[str, Any]) -> None:
        found = ckpt.latest(self.out)
        if found is None:
            raise ConfigError(f"--resume: no checkpoint under {ckpt.checkpoint_root(self.out)}")
        ckpt.check_run_key(found, run_key)
        ckpt.restore(found, self.params, self.optimizer)
        st = found.state
        self.step = found.step
        self.loss_curve = [float(x) for x in st["loss_curve"]]
        self.eval_losses = [(int(s), float(v)) for s, v in st["eval_losses"]]
        self.elapsed, self.tokens, self.bad_evals = float(st["elapsed"]), int(st["tokens"]), int(st["bad_evals"])
        if st.get("best_eval") is not None:
            # The best weights themselves are not checkpointed; the current ones stand in.
            self.best = (float(st["best_eval"]), [p.detach().clone() for p in self.params])

    # -- the loop -----------------------------------------------------------------------
    def execute(self, run_key: dict[str, Any]) -> None:
        cfg = self.cfg
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_at)
        if cfg.resume:
            self.resume(run_key)
        for group, base_lr in zip(self.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base_lr * self.lr_at(self.step)
        scheduler.last_epoch = self.step
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, file=sys.stderr, unit="step", dynamic_ncols=True,
                   disable=self.quiet or not cfg.progress, desc="train")
        guard = _SigintGuard(announce=not self.quiet)
        in_update = False
        start = time.perf_counter() - self.elapsed
        try:
            with guard:
                while self.step < cfg.steps:
                    loss, tokens = self._one_step()
                    in_update = True
                    self.optimizer.step()
                    scheduler.step()
                    in_update = False
                    self.step += 1
                    self.loss_curve.append(loss)
                    self.tokens += tokens
                    self.elapsed = time.perf_counter() - start
                    lr = self.optimizer.param_groups[0]["lr"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{self.tokens / max(self.elapsed, 1e-9):.0f}", refresh=False)
                    info = StepInfo(self.step, loss, lr, self.elapsed, self.tokens)
                    # A callback returning True asks to stop after this step (budgets).
                    asked = [bool(cb(info)) for cb in self.callbacks]
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and self.eval_set:
                        self._evaluate(bar)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                        self.save(run_key)
                    stop_time = any(asked) or (cfg.max_seconds is not None and self.elapsed >= cfg.max_seconds)
                    flags = self.ctx.all_reduce_sum([float(guard.hit), float(self.stopped_early), float(stop_time)])
                    if flags[0]:
                        raise KeyboardInterrupt
                    if flags[1] or flags[2]:
                        break
        except KeyboardInterrupt:
            bar.close()
            if in_update:  # a second Ctrl-C inside optimizer.step: state is not consistent
                raise
            path = self.save(run_key)
            raise TrainingInterrupted(self.step, path) from None
        finally:
            bar.close()
        if self.best is not None and cfg.early_stopping_patience:
            with torch.no_grad():
                for p, t in zip(self.params, self.best[1], strict=True):
                    p.copy_(t)

    def _one_step(self) -> tuple[float, int]:
        micro = [[self.examples[i] for i in mb] for mb in self.schedule.micro_batches(self.step, self.cfg.grad_accum)]
        local_n = sum(completion_tokens(mb) for mb in micro)
        global_n = self.ctx.all_reduce_sum([local_n])[0]
        if global_n <= 0:
            raise TrainingError(f"step {self.step + 1}: the batch has no completion tokens to learn from")
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        tokens = 0
        for mb in micro:
            part = self.loss_fn(collate(mb, self.pad_id))
            # Scale so the rank-average of gradients is the global token mean.
            (part * (self.ctx.world_size / global_n)).backward()
            loss_sum += float(part.detach())
            tokens += sum(len(e) for e in mb)
        total_loss, tokens_all = self.ctx.all_reduce_sum([loss_sum, tokens])
        loss = total_loss / global_n
        if not math.isfinite(loss):
            sources = ", ".join(e.source for e in micro[0][:3])
            raise TrainingError(
                f"loss is {loss} at step {self.step + 1} (lr {self.optimizer.param_groups[0]['lr']:.3g}; "
                f"batch starts with {sources}); lower --lr or check the data"
            )
        self.ctx.average_gradients(self.params)
        if self.cfg.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
            if not torch.isfinite(norm):
                raise TrainingError(f"gradient norm is {float(norm)} at step {self.step + 1}; lower --lr")
        return loss, int(tokens_all)

    def _evaluate(self, bar: Any) -> None:
        value = eval_loss(self.loss_fn, self.eval_set, self.cfg.batch_size, self.pad_id)
        value = self.ctx.all_reduce_sum([value])[0] / self.ctx.world_size
        self.eval_losses.append((self.step, value))
        bar.write(f"step {self.step}: eval loss {value:.4f}") if not self.quiet and self.cfg.progress else None
        if self.best is None or value < self.best[0]:
            keep = [p.detach().clone() for p in self.params] if self.cfg.early_stopping_patience else []
            self.best, self.bad_evals = (value, keep), 0
        else:
            self.bad_evals += 1
            if self.cfg.early_stopping_patience and self.bad_evals >= self.cfg.early_stopping_patience:
                self.stopped_early = True
