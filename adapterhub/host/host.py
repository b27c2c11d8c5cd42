"""``AdapterHost``: one frozen base model, a pool of adapters, per-row adapters per batch.

The host owns the base once, on one device, and never modifies its weights except
through a selective adapter's planned, reversible swap inside a request. Loading an
adapter is *plan, then apply*: reading, verifying (sizes, sha256, base fingerprint,
method capability, config) and the method runtime's ``plan`` (keys, shapes, dtypes) all
happen before anything changes; ``apply`` only copies into runtime storage. A failed
load therefore leaves the previous state and outputs exactly as they were.

Requests pin the adapter versions they resolve at their start (see ``pool.py``), so a
request in flight is served by exactly one version even while another thread replaces
or unloads that adapter. Forward passes are serialised by one lock because routing
mutates per-module selection state; loading/validation runs outside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapterhub.artifact import open_adapter, read_adapter
from adapterhub.catalog import get_catalog
from adapterhub.errors import ConfigError, IncompatibleAdapterError, InvalidNameError
from adapterhub.fingerprint import fingerprint as compute_fingerprint
from adapterhub.host.decode import Route, greedy_generate, prefill_logits
from adapterhub.host.packed import packable, token_routes
from adapterhub.host.pool import AdapterPool, PoolEntry
from adapterhub.manifest import BaseFingerprint
from adapterhub.prompting import format_messages, format_prompt
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.protocols.method import (
    Method,
    MethodRuntime,
    PackedRuntime,
    StagingRuntime,
    SwapPlan,
    TokenSpan,
)
from adapterhub.refs import is_base

# A load hashes weights of at least this size on a helper thread while it parses, plans
# and stages (artifact.open_adapter): it has ~2 ms of that work even for a 2 MB q/v
# adapter, which more than pays for waking the thread (the registry, with nothing to
# overlap, keeps the 8 MiB default).
_LOAD_ASYNC_HASH_BYTES = 256 << 10


@dataclass
class PreparedLoad:
    """An adapter read, verified and planned by :meth:`AdapterHost.prepare`, not yet visible."""

    entry: PoolEntry
    runtime: MethodRuntime
    started: float


@dataclass
class Generation:
    prompt: str
    adapter: str | None
    """``name@version`` of the adapter that produced this completion (None: bare base)."""
    completion: str
    token_ids: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "adapter": self.adapter, "completion": self.completion, "token_ids": self.token_ids}


def _default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def format_for(tokenizer: Any, prompt: str, entry: PoolEntry | None, raw: bool) -> str:
    """Render a prompt exactly as the row's adapter was trained (chat template user turn).

    An adapter trained with the trainer's ``chat-short`` template (empty system turn,
    recorded in its manifest) is served with the same empty system turn.
    """
    if raw:
        return prompt
    system = None
    if entry is not None and entry.manifest.provenance.hyperparameters.get("template") == "chat-short":
        system = ""
    return format_prompt(tokenizer, prompt, system=system)


def format_messages_for(tokenizer: Any, messages: Sequence[Mapping[str, str]], entry: PoolEntry | None) -> str:
    """Render chat messages with the base's chat template and the adapter's training
    template; one user message renders exactly as :func:`format_for` renders a prompt."""
    system = None
    if entry is not None and entry.manifest.provenance.hyperparameters.get("template") == "chat-short":
        system = ""
    return format_messages(tokenizer, messages, system=system)


class AdapterHost:
    """Serve many adapters from one frozen base (see module docs).

    >>> host = AdapterHost("tiny-random-llama")            # doctest: +SKIP
    >>> host.load("path/to/adapter-dir", name="sentiment")  # doctest: +SKIP
    >>> host.generate(["Great film!"], adapters=["sentiment"])  # doctest: +SKIP
    """

    def __init__(
        self,
        base: str | LoadedBase = "smollm2-135m-instruct",
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        default_adapter: str | None = None,
        device_budget_bytes: int | None = None,
        registry_url: str | None = None,
    ) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or _default_dtype(self.device)
        self._fingerprint: BaseFingerprint | None = None
        if isinstance(base, str):
            from adapterhub.basemodels import load_base

            if self.dtype != torch.float32:
                # Adapters are fingerprinted against the float32 base they were trained
                # on; hash that, then cast once for bf16/fp16 serving.
                base = load_base(base, dtype=torch.float32, device="cpu")
                self._fingerprint = compute_fingerprint(base.model, base.name)
                base.model.to(device=self.device, dtype=self.dtype)
            else:
                base = load_base(base, dtype=self.dtype, device=self.device)
        self.base = base
        self.model = base.model
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = base.tokenizer
        self.tokenizer.padding_side = "left"
        self.default_adapter = default_adapter
        self.registry_url = registry_url
        self._pool = AdapterPool(device_budget_bytes)
        self._runtimes: dict[str, MethodRuntime] = {}
        self._forward_lock = threading.RLock()

    # --- identity -----------------------------------------------------------------------
    @property
    def fingerprint(self) -> BaseFingerprint:
        if self._fingerprint is None:
            self._fingerprint = compute_fingerprint(self.model, self.base.name)
        return self._fingerprint

    # --- loading ------------------------------------------------------------------------------
    def _resolve_dir(self, source: str | Path) -> tuple[Path, str | None]:
        text = str(source)
        if not text.strip() or "\x00" in text:
            raise InvalidNameError(f"invalid adapter reference {text!r}: empty or contains NUL")
        path = Path(source)
        try:
            is_dir = path.is_dir()
        except OSError:  # e.g. ENAMETOOLONG: not a directory; let the ref parser judge it
            is_dir = False
        if is_dir:
            return path, None
        from adapterhub.registry.client import Registry

        reg = Registry(self.registry_url)
        return Path(reg.pull(str(source))), str(source)

    def _runtime(self, method: Method) -> MethodRuntime:
        with self._forward_lock:
            rt = self._runtimes.get(method.name)
            if rt is None:
                rt = method.runtime(self.model)
                self._runtimes[method.name] = rt
            return rt

    def load(self, source: str | Path, *, name: str | None = None, check_base: bool = True) -> PoolEntry:
        """Load an adapter directory or registry ref into the pool and make it resident.

        Loading a name that is already loaded replaces it: new requests get the new
        version; requests in flight finish on the old one.
        """
        return self.commit(self.prepare(source, name=name, check_base=check_base))

    def prepare(self, source: str | Path, *, name: str | None = None, check_base: bool = True) -> PreparedLoad:
        """Every step of :meth:`load` that needs no forward lock: read, verify, plan, stage.

        Serving engines call this on a loader thread so that reading and hashing an
        adapter never stops other rows from decoding; :meth:`commit` then publishes it
        between two forward steps. A prepared load that is never committed must be
        given back with :meth:`discard`.
        """
        t0 = time.perf_counter()
        directory, ref = self._resolve_dir(source)
        # Read, parse and plan while the weights are hashed on a helper thread; nothing
        # changes until every digest has matched (``verified``).
        opened = open_adapter(directory, async_hash_bytes=_LOAD_ASYNC_HASH_BYTES)
        runtime: MethodRuntime | None = None
        plan: SwapPlan | None = None
        try:
            manifest, tensors = opened.manifest, opened.tensors
            method = get_catalog().method(manifest.method)
            if not method.capabilities.hot_swap:
                raise IncompatibleAdapterError(
                    f"{directory}: method {method.name!r} ({method.kind}) adapters cannot be hot-swapped; "
                    "load them as a model instead"
                )
            if check_base and manifest.base.weights_sha256 != self.fingerprint.weights_sha256:
                raise IncompatibleAdapterError(
                    f"{directory}: adapter was trained on base {manifest.base.name!r} "
                    f"(weights {manifest.base.weights_sha256[:12]}), this host serves {self.base.name!r} "
                    f"(weights {self.fingerprint.weights_sha256[:12]})"
                )
            try:
                config = method.config_cls.model_validate(manifest.method_config)
            except Exception as exc:  # pydantic ValidationError → one line
                raise ConfigError(f"{directory}: invalid {method.name} config in manifest: {exc}".splitlines()[0]) from None
            label_name = name or manifest.name
            version = manifest.version
            if version is None and ref and "@" in ref:
                version = ref.rsplit("@", 1)[1]
            runtime = self._runtime(method)
            uid = AdapterPool.new_uid(label_name, version)
            host_tensors = None
            if self.device != "cpu":
                host_tensors = {k: v.pin_memory() for k, v in tensors.items()}
                tensors = host_tensors
            moved = self._to_device(tensors)
            plan = runtime.plan(uid, config, moved)  # every check; nothing changes yet
            if isinstance(runtime, StagingRuntime):
                runtime.stage(plan)  # the copy into a slot no request can see, during the hash
            opened.verified()  # every digest matched: only now may anything change
            entry = PoolEntry(
                name=label_name, version=version, manifest=manifest, method=method, plan=plan,
                host_tensors=host_tensors, source=str(source), directory=str(directory),
                nbytes=plan.nbytes, uid=uid,
            )
        except BaseException:
            if plan is not None and isinstance(runtime, StagingRuntime):
                runtime.unstage(plan)  # no-op once applied
            opened.verified()  # a corrupted file is reported as corrupted, not as the check it failed
            raise
        return PreparedLoad(entry=entry, runtime=runtime, started=t0)

    def commit(self, prepared: PreparedLoad) -> PoolEntry:
        """Publish a prepared load (takes the forward lock for the copy into the runtime)."""
        entry = prepared.entry
        try:
            with self._forward_lock:
                self._make_resident(entry, keep=set())
                dropped = self._pool.add(entry)
                self._drop(dropped)
        except BaseException:
            self.discard(prepared)
            raise
        entry.swap_ms = (time.perf_counter() - prepared.started) * 1000.0
        return entry

    def discard(self, prepared: PreparedLoad) -> None:
        """Give back what :meth:`prepare` staged for a load that will not be committed."""
        plan = prepared.entry.plan
        if plan is not None and isinstance(prepared.runtime, StagingRuntime):
            prepared.runtime.unstage(plan)  # no-op once applied

    def _to_device(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # On CPU the tensors are where they belong: no per-tensor .to() call (~1 us each).
        if torch.device(self.device).type == "cpu":
            return tensors
        return {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}

    def _make_resident(self, entry: PoolEntry, keep: set[str]) -> None:
        if entry.resident:
            self._pool.touch(entry)
            return
        for victim in self._pool.eviction_candidates(entry.nbytes, keep | {entry.uid}):
            self._runtimes[victim.method.name].remove(victim.uid)
            self._pool.mark_resident(victim, False)
        plan = entry.plan
        if plan is None:  # evicted earlier: re-plan from the host tier (or disk on CPU)
            tensors = entry.host_tensors
            if tensors is None:
                _, tensors = read_adapter(entry.directory)
            config = entry.method.config_cls.model_validate(entry.manifest.method_config)
            moved = self._to_device(tensors)
            plan = self._runtimes[entry.method.name].plan(entry.uid, config, moved)
        self._runtimes[entry.method.name].apply(plan)
        self._pool.mark_resident(entry, True)
        entry.plan = None  # the runtime holds the applied copy; never hold it twice

    def _drop(self, entries: Sequence[PoolEntry]) -> None:
        for e in entries:
            if e.resident:
                self._runtimes[e.method.name].remove(e.uid)
                self._pool.mark_resident(e, False)

    def unload(self, name: str) -> None:
        """Unload ``name``; requests already running on it finish first."""
        with self._forward_lock:
            self._drop(self._pool.remove(name))

    def entry(self, name: str) -> PoolEntry:
        """The current pool entry of ``name`` (AdapterUnloadedError if not loaded)."""
        return self._pool.get(name)

    def adapters(self) -> list[dict[str, Any]]:
        """The pool: name, version, method, kind, resident, bytes, requests in flight."""
        return [
            {
                "name": e.name, "version": e.version, "method": e.method.name, "kind": e.method.kind,
                "resident": e.resident, "bytes": e.nbytes, "in_flight": e.refs, "load_ms": round(e.swap_ms, 3),
            }
            for e in self._pool.entries()
        ]

    # --- serving-engine support ---------------------------------------------------------------
    # The engine (adapterhub.serving) drives forwards itself, step by step; these are the
    # host services it needs. Layers look down only: the host never imports the engine.
    @property
    def forward_lock(self) -> threading.RLock:
        """Held around every forward: routing mutates per-module selection state."""
        return self._forward_lock

    def loaded(self) -> list[str]:
        """Names of the adapters currently loaded (resident or evicted to the host tier)."""
        return self._pool.names()

    def acquire(self, names: Sequence[str | None]) -> list[PoolEntry | None]:
        """Pin the current version of each named adapter (None/``BASE``: bare base)."""
        return self._pool.acquire(self._names(len(names), list(names)))

    def release(self, entries: Sequence[PoolEntry | None]) -> None:
        """Unpin entries from :meth:`acquire`; retired versions leave once unused."""
        dropped = self._pool.release(list(entries))
        if dropped:
            with self._forward_lock:
                self._drop(dropped)

    def ensure_resident(self, entries: Sequence[PoolEntry | None]) -> None:
        """Make pinned entries resident (re-planned from the host tier if evicted)."""
        with self._forward_lock:
            needed = {e.uid for e in entries if e is not None}
            for e in entries:
                if e is not None:
                    self._make_resident(e, keep=needed)

    def routes(self, entries: Sequence[PoolEntry | None]) -> list[Route]:
        """One ``(runtime, per-row adapter ids)`` route per method with rows in ``entries``."""
        return self._routes(entries)

    def packable(self, entry: PoolEntry | None) -> bool:
        """True when rows on ``entry`` can share a packed forward (its method's runtime
        implements ``PackedRuntime``; the bare base always can)."""
        return entry is None or packable(self._runtimes.get(entry.method.name))

    def token_routes(self, spans: Sequence[tuple[PoolEntry | None, int, int]]) -> list[tuple[PackedRuntime, list[TokenSpan]]]:
        """Per-runtime token spans of one packed forward: ``spans`` gives each run of
        tokens ``[start, stop)`` and the entry serving it (None: the bare base)."""
        return token_routes(self._runtimes, [(None if e is None else (e.method.name, e.uid), a, b) for e, a, b in spans])

    def initial_kv(self, entry: PoolEntry | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What a request on ``entry`` has in its cache before its first token (prefix
        tuning's virtual tokens), ``(layers, kv_heads, tokens, head_dim)``; or None."""
        if entry is None:
            return None
        rt = self._runtimes.get(entry.method.name)
        return rt.initial_kv(entry.uid) if isinstance(rt, PackedRuntime) else None

    def render(self, prompt: str | Sequence[Mapping[str, str]], entry: PoolEntry | None, raw: bool = False) -> str:
        """The text a row is served: a prompt or chat messages, as its adapter was trained."""
        if isinstance(prompt, str):
            return format_for(self.tokenizer, prompt, entry, raw)
        return format_messages_for(self.tokenizer, prompt, entry)

    @property
    def context_window(self) -> int:
        """Positions the base can attend over (``max_position_embeddings``)."""
        cfg = getattr(self.model, "config", None)
        n = getattr(cfg, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else 2048

    def eos_ids(self) -> list[int]:
        """Every token id that ends a completion (tokenizer, generation config, ``<|im_end|>``)."""
        return self._eos_ids()

    # --- requests ------------------------------------------------------------------------------
    def _names(self, n: int, adapters: str | Sequence[str | None] | None) -> list[str | None]:
        if adapters is None or isinstance(adapters, str):
            names: list[str | None] = [adapters] * n
        else:
            names = list(adapters)
            if len(names) != n:
                raise ConfigError(f"got {n} prompts but {len(names)} adapters")
        out: list[str | None] = []
        for a in names:
            a = self.default_adapter if a is None else a
            out.append(None if is_base(a) else a)
        return out

    def _groups(self, entries: Sequence[PoolEntry | None]) -> list[list[int]]:
        """Rows that can share a forward: all mixed-batch rows together; others per adapter."""
        shared: list[int] = []
        alone: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            if e is None or e.method.capabilities.mixed_batch:
                shared.append(i)
            else:
                alone.setdefault(e.uid, []).append(i)
        return ([shared] if shared else []) + list(alone.values())

    def _routes(self, entries: Sequence[PoolEntry | None]) -> list[Route]:
        routes: list[Route] = []
        for mname, rt in self._runtimes.items():
            rows = [e.uid if e is not None and e.method.name == mname else None for e in entries]
            if any(r is not None for r in rows):
                routes.append((rt, rows))
        return routes

    def _encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _serve(self, n: int, adapters: Any, fn: Any, batch_size: int | None) -> list[Any]:
        names = self._names(n, adapters)
        entries = self._pool.acquire(names)
        results: list[Any] = [None] * n
        try:
            with self._forward_lock:
                needed = {e.uid for e in entries if e is not None}
                for e in entries:
                    if e is not None:
                        self._make_resident(e, keep=needed)
                for group in self._groups(entries):
                    step = batch_size or len(group)
                    for start in range(0, len(group), step):
                        rows = group[start : start + step]
                        sub = [entries[i] for i in rows]
                        for i, r in zip(rows, fn(rows, sub, self._routes(sub)), strict=True):
                            results[i] = r
        finally:
            dropped = self._pool.release(entries)
            if dropped:
                with self._forward_lock:
                    self._drop(dropped)
        return results

    def generate(
        self,
        prompts: Sequence[str],
        adapters: str | Sequence[str | None] | None = None,
        *,
        max_new_tokens: int = 64,
        batch_size: int | None = None,
        raw: bool = False,
    ) -> list[Generation]:
        """Greedy completions; ``adapters[i]`` names row i's adapter (None: default)."""
        eos = self._eos_ids()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]

        def run(rows: list[int], sub: list[PoolEntry | None], routes: list[Route]) -> list[Generation]:
            ids, mask = self._encode([format_for(self.tokenizer, prompts[i], e, raw) for i, e in zip(rows, sub, strict=True)])
            dec = greedy_generate(
                self.model, ids, mask, routes, max_new_tokens=max_new_tokens, eos_token_ids=eos, pad_token_id=pad
            )
            return [
                Generation(
                    prompt=prompts[i], adapter=None if e is None else e.label,
                    completion=self.tokenizer.decode(toks, skip_special_tokens=True), token_ids=toks,
                )
                for i, e, toks in zip(rows, sub, dec.token_ids, strict=True)
            ]

        return self._serve(len(prompts), adapters, run, batch_size)

    def logits(
        self,
        prompts: Sequence[str],
        adapters: str | Sequence[str | None] | None = None,
        *,
        raw: bool = False,
        batch_size: int | None = None,
    ) -> list[torch.Tensor]:
        """Prefill logits per prompt, shape (tokens, vocab), for the prompt's real tokens."""
        def run(rows: list[int], sub: list[PoolEntry | None], routes: list[Route]) -> list[torch.Tensor]:
            ids, mask = self._encode([format_for(self.tokenizer, prompts[i], e, raw) for i, e in zip(rows, sub, strict=True)])
            full = prefill_logits(self.model, ids, mask, routes)
            lengths = mask.sum(-1).tolist()
            return [full[j, full.shape[1] - int(lengths[j]) :].cpu() for j in range(len(rows))]

        return self._serve(len(prompts), adapters, run, batch_size)

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        tok_eos = self.tokenizer.eos_token_id
        if tok_eos is not None:
            ids.add(int(tok_eos))
        gen_cfg = getattr(self.model, "generation_config", None)
        cfg_eos = getattr(gen_cfg, "eos_token_id", None)
        if isinstance(cfg_eos, int):
            ids.add(cfg_eos)
        elif isinstance(cfg_eos, list):
            ids.update(int(x) for x in cfg_eos)
        for special in ("<|im_end|>",):
            tid = self.tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid >= 0:
                ids.add(tid)
        return sorted(ids)
