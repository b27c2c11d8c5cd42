"""Keep the GPU check script runnable: its correctness half must pass on CPU (fp32)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    out = tmp_path / "gpu.json"
    code = gpu_check.main(["--device", "cpu", "--dtype", "float32", "--layers", "1", "--repeats", "1", "--small", "--big-seq", "16", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert code == 0, doc["correct"]
    assert doc["correct"]["mixed_equals_alone"] and doc["correct"]["failed_swap_inert"]
    assert doc["adapterhub"]["switch_ms"] > 0 and doc["peft"]["set_adapter_ms"] > 0
