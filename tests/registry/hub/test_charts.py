"""Server-side SVG charts: escaped labels, marked drops, well-formed XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

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
