"""Test hook for crash-consistency tests: die at a named stage of a push.

``ADAPTERHUB_TEST_CRASH_AT=<stage>`` makes the push SIGKILL its own process when it
reaches that stage, exactly as ``kill -9`` would: no ``finally`` blocks, no atexit, no
buffered writes. Stages: ``mid-blob`` (after the first chunk of a blob is written),
``after-blobs`` (all blobs stored, manifest not yet written), ``after-manifest``
(version created, tags not yet moved). Unset in normal use; reading one environment
variable is the only cost.
"""

from __future__ import annotations

import os
import signal

ENV = "ADAPTERHUB_TEST_CRASH_AT"
STAGES = ("mid-blob", "after-blobs", "after-manifest")


def crash_point(stage: str) -> None:
    if os.environ.get(ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)  # unreachable where SIGKILL exists
