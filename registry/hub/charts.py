"""Charts as inline SVG, drawn on the server: no JavaScript, no fonts or scripts fetched.

Every label (task and metric names) is user content, so each goes through
:func:`html.escape` before it is placed in the markup; numbers are formatted here. The
functions return :class:`markupsafe.Markup` so templates insert them unescaped — which is
safe only because of that escaping.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

# Colour-blind-safe palette (Okabe–Ito); overlays also differ by stroke pattern.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")
DROP = "#D55E00"
DASHES = ("", "4 2", "1 2", "6 2 1 2")


@dataclass(frozen=True)
class Delta:
    """One bar of a forgetting chart: ``adapted - base`` on one task's metric."""

    task: str
    metric: str
    delta: float
    flagged: bool

    @property
    def label(self) -> str:
        return f"{self.task} · {self.metric}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _fmt(v: float) -> str:
    return f"{v:+.2f}" if abs(v) < 100 else f"{v:+.0f}"


def _scale(values: Sequence[float], threshold: float | None) -> float:
    biggest = max([abs(v) for v in values if math.isfinite(v)] + [abs(threshold or 0.0), 1e-9])
    return biggest * 1.1


def forgetting_svg(deltas: Sequence[Delta], threshold: float | None, title: str = "Forgetting") -> Markup:
    """Horizontal bars of the change per held-out task; drops past ``threshold`` in
    orange-red with a ▼ mark, and the threshold drawn as a dashed line."""
    return overlay_svg([("", deltas)], threshold, title=title)


def overlay_svg(series: Sequence[tuple[str, Sequence[Delta]]], threshold: float | None, title: str = "Forgetting") -> Markup:
    """Grouped bars: one group per task·metric, one bar per adapter (2–4 overlaid)."""
    labels: list[str] = []
    for _, deltas in series:
        for d in deltas:
            if d.label not in labels:
                labels.append(d.label)
    if not labels:
        return Markup('<p class="empty">No forgetting report.</p>')
    values = [d.delta for _, ds in series for d in ds]
    span = _scale(values, -abs(threshold) if threshold else None)
    n = max(1, len(series))
    bar_h, gap, left, width, right = 12, 10, 230, 480, 40
    group_h = n * bar_h + gap
    legend_h = 16 * n + 4 if n > 1 else 0
    top = 28 + legend_h
    height = top + len(labels) * group_h + 24
    zero = left + width / 2

    def x(v: float) -> float:
        return zero + (v / span) * (width / 2)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart forgetting" role="img" viewBox="0 0 {left + width + right} {height}" '
        f'width="{left + width + right}" height="{height}"><title>{_e(title)}</title>',
        f'<text x="4" y="16" class="chart-title">{_e(title)} (adapted − base)</text>',
    ]
    if n > 1:
        for i, (name, _) in enumerate(series):
            ly = 24 + 16 * i  # one line each: refs are long
            out.append(f'<rect x="{left}" y="{ly}" width="12" height="10" fill="{PALETTE[i % 4]}" stroke="#333" stroke-dasharray="{DASHES[i % 4]}"/>'
                       f'<text x="{left + 16}" y="{ly + 9}" class="legend">{_e(name[:80])}</text>')
    if threshold:
        tx = x(-abs(threshold))
        out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - 20}" class="threshold" stroke="{DROP}" stroke-dasharray="3 3"/>'
                   f'<text x="{tx:.1f}" y="{height - 6}" text-anchor="middle" class="axis">−{abs(threshold):g} threshold</text>')
    out.append(f'<line x1="{zero}" y1="{top - 4}" x2="{zero}" y2="{height - 20}" stroke="#444"/>')
    for gi, label in enumerate(labels):
        gy = top + gi * group_h
        out.append(f'<text x="{left - 6}" y="{gy + n * bar_h / 2 + 4:.1f}" text-anchor="end" class="label">{_e(label[:40])}</text>')
        for si, (name, deltas) in enumerate(series):
            found = next((one for one in deltas if one.label == label), None)
            if found is None or not math.isfinite(found.delta):
                continue
            d = found
            y = gy + si * bar_h
            x0, x1 = sorted((zero, x(d.delta)))
            fill = DROP if d.flagged else PALETTE[si % 4]
            cls = "bar drop" if d.flagged else "bar"
            tip = f"{name + ': ' if name else ''}{d.label} {_fmt(d.delta)}{' (over threshold)' if d.flagged else ''}"
            out.append(f'<rect class="{cls}" x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar_h - 2}" fill="{fill}" '
                       f'stroke="#333" stroke-dasharray="{DASHES[si % 4]}"><title>{_e(tip)}</title></rect>')
            # Values right of the bar's end, or of the zero line for drops, so a long drop's
            # number never runs into the task labels on the left.
            tx, anchor = (x1 + 4, "start") if d.delta >= 0 else (zero + 4, "start")
            mark = " ▼" if d.flagged else ""
            out.append(f'<text x="{tx:.1f}" y="{y + bar_h - 3}" text-anchor="{anchor}" class="value">{_fmt(d.delta)}{mark}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def loss_svg(curve: Sequence[float], title: str = "Training loss") -> Markup:
    """The loss curve as a polyline (at most 400 points: long runs are averaged down)."""
    points = [float(v) for v in curve if math.isfinite(v)]
    if len(points) < 2:
        return Markup('<p class="empty">No loss curve recorded.</p>')
    if len(points) > 400:
        step = len(points) / 400
        points = [sum(points[int(i * step):int((i + 1) * step)]) / max(1, int((i + 1) * step) - int(i * step)) for i in range(400)]
    lo, hi = min(points), max(points)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    left, top, w, h = 48, 24, 480, 160
    steps = len(curve)

    def xy(i: int, v: float) -> str:
        return f"{left + i * w / (len(points) - 1):.1f},{top + (hi - v) / (hi - lo) * h:.1f}"

    poly = " ".join(xy(i, v) for i, v in enumerate(points))
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart loss" role="img" viewBox="0 0 {left + w + 20} {top + h + 34}" '
        f'width="{left + w + 20}" height="{top + h + 34}"><title>{_e(title)}</title>'
        f'<text x="4" y="16" class="chart-title">{_e(title)}</text>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#444"/>'
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#444"/>'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="axis">{hi:.3g}</text>'
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end" class="axis">{lo:.3g}</text>'
        f'<text x="{left}" y="{top + h + 16}" class="axis">step 1</text>'
        f'<text x="{left + w}" y="{top + h + 16}" text-anchor="end" class="axis">step {steps}</text>'
        f'<polyline class="curve" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" points="{poly}"/></svg>'
    )
