"""One pusher/puller process of ``test_concurrency.py`` (not a test module).

Started in a fresh forkserver child with ``runpy.run_path(this_file, {"CFG": cfg},
RUN_NAME)``: ``runpy`` is importable everywhere, so this works whichever test started the
process-wide forkserver and whatever its ``sys.path`` is. Until ``cfg["deadline"]`` it
runs random registry operations on a few shared names and appends one JSON line per
event to its own log file (``start`` before an operation, ``done``/``expected``/
``error`` after it). The parent SIGKILLs it at random moments, so a log may end in the
middle of an operation (or even of a line); the parent only trusts complete lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

RUN_NAME = "__concurrency_worker__"
SHARED, FIXED, UNIQUE = "team/shared", "team/fixed", "team/unique"
NAMES = (SHARED, FIXED, UNIQUE)
FIXED_VERSIONS = tuple(f"1.0.{i}" for i in range(6))
WEIGHTS = "adapter.safetensors"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(cfg: dict[str, Any]) -> None:
    os.environ["ADAPTERHUB_HOME"] = cfg["home"]
    os.environ.update(cfg["env"])
    import torch

    torch.set_num_threads(1)
    from adapterhub.registry.client import Registry

    from adapterhub.errors import AdapterNotFoundError, VersionExistsError
    from adapterhub.testing.stores import write_test_adapter

    rng = random.Random(cfg["seed"])
    url: str | None = cfg["url"]
    reg = Registry(progress=False)
    shared: list[tuple[str, str]] = cfg["shared"]  # (adapter dir, weights sha256)
    scratch = Path(cfg["scratch"])
    log = open(cfg["log"], "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives until killed
    op_id = 0

    def emit(**rec: Any) -> None:
        log.write(json.dumps({"w": cfg["seed"], "t": round(time.time(), 3), **rec}) + "\n")

    first = cfg.get("first_op")
    while time.time() < cfg["deadline"]:
        op_id += 1
        op = first or rng.choices(["push-shared", "push-fixed", "push-unique", "pull"], weights=[3, 3, 2, 6])[0]
        first = None
        try:
            if op == "pull":
                name = rng.choice(NAMES)
                versions = reg.store(url).list_versions(name)
                kind = rng.random()
                if kind < 0.4 and versions:
                    ref = f"{name}@{rng.choice(versions)}"
                elif kind < 0.7:
                    ref = f"{name}:latest"
                else:
                    ref = name
                emit(ev="start", op=op, id=op_id, ref=ref)
                resolved, path = reg.fetch(ref, url)
                emit(ev="done", op=op, id=op_id, ref=resolved, sha=_sha(path / WEIGHTS))
                continue
            if op == "push-unique":
                src = write_test_adapter(scratch / f"u{op_id}", seed=rng.randrange(1 << 30), width=256, modules=4)
                sha, name, version = _sha(src / WEIGHTS), UNIQUE, None
            else:
                path_s, sha = rng.choice(shared)
                src = Path(path_s)
                name = SHARED if op == "push-shared" else FIXED
                version = rng.choice(FIXED_VERSIONS) if op == "push-fixed" else None
            emit(ev="start", op=op, id=op_id, name=name, version=version, sha=sha)
            # publish(): a push of the same bytes to a taken version is an idempotent no-op
            # (created False); only a push that created the version counts as "pushed once".
            pub = reg.publish(src, name, version=version, to=url)
            emit(ev="done", op=op, id=op_id, ref=pub.ref, sha=sha, created=pub.created)
        except VersionExistsError as exc:
            # Only a fixed version can be taken by another pusher; automatic versions retry.
            emit(ev="expected" if op == "push-fixed" else "error", op=op, id=op_id, error="VersionExistsError", msg=str(exc))
        except AdapterNotFoundError as exc:
            # Only a pull of a name nobody has pushed yet may find nothing.
            emit(ev="expected" if op == "pull" else "error", op=op, id=op_id, error="AdapterNotFoundError", msg=str(exc))
        except Exception as exc:  # noqa: BLE001 - every other failure is reported to the parent
            emit(ev="error", op=op, id=op_id, error=type(exc).__name__, msg=str(exc))
    emit(ev="exit")


if __name__ == RUN_NAME:
    run(globals()["CFG"])
