"""Peak memory of a training run, for the training summary.

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the
  start of the run (tensors only; the caching allocator's reserve and the CUDA context
  are not counted).
* CPU: the process's peak resident set size. On Linux the high-water mark is reset at the
  start of the run (``/proc/self/clear_refs``, ``5``) and read from ``VmHWM``, so the
  number is the run's peak — base weights, optimizer state and activations — even when
  one process trains several times (benchmarks). Where that reset is not possible the
  process-lifetime peak (``getrusage``) is reported and ``kind`` says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm() -> int | None:
    try:
        for line in _STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rusage_peak() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """``start()`` at the beginning of a run, ``read()`` at the end → (bytes, kind)."""

    def __init__(self, device: Any) -> None:
        self.device = str(device)
        self.cuda = self.device.startswith("cuda")
        self.kind = "unavailable"

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_memory_allocated"
            return
        try:
            _CLEAR_REFS.write_text("5", encoding="ascii")
            self.kind = "rss_peak_run" if _vm_hwm() is not None else "rss_peak_process"
        except OSError:
            self.kind = "rss_peak_process"

    def read(self) -> tuple[int | None, str]:
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated(self.device)), self.kind
        if self.kind == "rss_peak_run":
            return _vm_hwm(), self.kind
        peak = _rusage_peak()
        return peak, ("rss_peak_process" if peak is not None else "unavailable")
