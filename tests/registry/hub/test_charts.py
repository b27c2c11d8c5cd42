"""Server-side SVG charts: escaped labels, marked drops, well-formed XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from adapterhub.registry.hub.charts import Delta, forgetting_svg, loss_svg, overlay_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_forgetting_marks_drops_over_threshold_and_escapes_labels() -> None:
    deltas = [Delta("chitchat", "rougeL", 1.5, False), Delta("<script>alert(1)</script>", "m&m", -6.0, True)]
    svg = str(forgetting_svg(deltas, 2.0))
    root = ET.fromstring(svg)  # well-formed: every label was escaped
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    bars = root.findall(f".//{SVG}rect[@class]")
    assert [b.get("class") for b in bars] == ["bar", "bar drop"]
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "−2 threshold" in texts and "-6.00 ▼" in texts and "+1.50" in texts
    assert root.find(f".//{SVG}line[@class='threshold']") is not None


def test_overlay_one_bar_per_adapter_and_legend() -> None:
    a = [Delta("t1", "m", -1.0, False), Delta("t2", "m", -3.0, True)]
    b = [Delta("t1", "m", 0.5, False)]
    root = ET.fromstring(str(overlay_svg([("x@1", a), ("y@<2>", b)], 2.0)))
    assert len(root.findall(f".//{SVG}rect[@class]")) == 3
    legends = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "legend"]
    assert legends == ["x@1", "y@<2>"]  # parsed back: the markup held &lt;2&gt;


def test_loss_curve_downsamples_and_skips_non_finite() -> None:
    root = ET.fromstring(str(loss_svg([3.0 - i / 1000 for i in range(2000)] + [float("nan")])))
    points = root.find(f".//{SVG}polyline").get("points").split()  # type: ignore[union-attr]
    assert len(points) == 400
    assert "No loss curve" in str(loss_svg([1.0]))


def test_whiskers_and_verdict_words_not_colour_alone() -> None:
    deltas = [
        Delta("chitchat", "rougeL", -9.0, True, low=-12.0, high=-6.0, verdict="forgotten", n=400),
        Delta("faq", "rougeL", -3.0, False, low=-9.0, high=3.0, verdict="unresolved", n=20),
        Delta("sv-en", "chrf", 1.0, False, low=-1.0, high=3.0, verdict="kept", n=400),
    ]
    root = ET.fromstring(str(forgetting_svg(deltas, 2.0)))
    whiskers = root.findall(f".//{SVG}g[@class='whisker']")
    assert len(whiskers) == 3 and all(len(w.findall(f"{SVG}line")) == 3 for w in whiskers)  # line + two caps
    texts = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "value"]
    assert texts == ["-9.00 ▼ forgotten", "-3.00 ? unresolved", "+1.00 ✓ kept"]
    fills = [b.get("fill") for b in root.findall(f".//{SVG}rect[@class]")]
    assert fills[1] == "url(#hatch-unresolved)" and len(set(fills)) == 3  # pattern as well as colour
    # the whisker spans the interval: −12 → −6 on an axis scaled to ±13.2
    xs = sorted(float(x) for line in whiskers[0].findall(f"{SVG}line") for x in (line.get("x1"), line.get("x2")))
    zero = 230 + 480 / 2
    assert xs[0] == pytest.approx(zero - 12 / 13.2 * 240, abs=0.2) and xs[-1] == pytest.approx(zero - 6 / 13.2 * 240, abs=0.2)
    tips = [t.text for t in root.iter(f"{SVG}title")]
    assert any("95 % interval [-12.00, -6.00], n=400: forgotten" in (t or "") for t in tips)


def test_own_task_gain_is_clipped_so_held_out_drops_stay_readable() -> None:
    # The case: +100 on the own task beside −2 drops on the same axis.
    own = Delta("sentiment-rt", "accuracy", 100.0, False, low=88.0, high=100.0, verdict="kept", n=8, own=True)
    held = [Delta(t, "rougeL", -2.0, False, low=-4.0, high=0.0, verdict="unresolved", n=8) for t in ("a", "b")]
    root = ET.fromstring(str(overlay_svg([("x@1", [own, *held]), ("y@1", held)], 2.0)))
    bars = root.findall(f".//{SVG}rect[@class]")
    widths = {b.get("class"): float(b.get("width") or 0) for b in bars}
    assert "bar kept clipped" in widths
    # −2 on an axis of ±4.4 (the held-out rows' widest end, 4, × 1.1): over 100 px of 240,
    # where the shared axis of ±110 would have drawn it 4 px wide.
    assert widths["bar unresolved"] > 100
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "+100 ✓ kept (own task, clipped; 95 % [+88.00, +100])" in texts
    assert len(root.findall(f".//{SVG}g[@class='whisker']")) == 4  # the held-out ones (2 × 2); the own one is off the axis
