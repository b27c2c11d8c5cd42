"""One process of ``test_index.py``'s creation race (not a test module).

Started with ``runpy.run_path(this_file, {"ARGS": (roots, barrier, out)}, RUN_NAME)`` in a
spawned child: ``runpy`` is importable everywhere, whereas the test module itself (loaded
by pytest with ``--import-mode=importlib``) need not be importable in a child.
"""

from __future__ import annotations

from typing import Any

RUN_NAME = "__index_race_worker__"


def run(roots: list[str], barrier: Any, out: Any) -> None:
    """Open a brand-new index at the same moment as the other workers, once per root."""
    from adapterhub.registry.index import Index
    from adapterhub.registry.local import LocalStore

    errors: list[str] = []
    for root in roots:
        barrier.wait(timeout=120)  # a dead peer breaks the barrier instead of hanging us
        index = Index(LocalStore(root))
        try:
            index.set_tags("team/x", {})
            index.search(tag="latest")
        except Exception as exc:  # noqa: BLE001 - every failure is what the test counts
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            index.close()
    out.put(errors)


if __name__ == RUN_NAME:
    run(*ARGS)  # type: ignore[name-defined]  # noqa: F821 - given by runpy
