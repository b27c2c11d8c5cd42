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


# Verdicts differ by fill pattern and by the word printed beside the bar, never by colour
# alone: forgotten solid orange-red, unresolved hatched grey, kept the series colour.
MARKS = {"forgotten": "▼ forgotten", "unresolved": "? unresolved", "kept": "✓ kept"}
_HATCH = ('<defs><pattern id="hatch-unresolved" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">'
          '<rect width="6" height="6" fill="#e4e4e4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#777" stroke-width="2"/></pattern></defs>')


@dataclass(frozen=True)
class Delta:
    """One bar of a forgetting chart: ``adapted - base`` on one task's metric, with its
    95 % interval and verdict when the report has them (reports from before intervals
    carry only ``flagged``: a point drop over the threshold)."""

    task: str
    metric: str
    delta: float
    flagged: bool
    low: float | None = None
    high: float | None = None
    verdict: str | None = None
    n: int | None = None
    own: bool = False
    """The adapter's own task: its gain is clipped to the held-out rows' scale."""

    @property
    def label(self) -> str:
        return f"{self.task} · {self.metric}"

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return None
        return (self.low, self.high)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _fmt(v: float) -> str:
    return f"{v:+.2f}" if abs(v) < 100 else f"{v:+.0f}"


def _scale(deltas: Sequence[Delta], threshold: float | None) -> float:
    """Half the axis, from the held-out rows (values and interval ends) and the
    threshold. The own task's gain is left out: a +100 there would otherwise shrink every
    −2 elsewhere to a sliver; it is clipped and its value printed instead."""
    held = [d for d in deltas if not d.own] or list(deltas)
    ends = [v for d in held for v in (d.delta, *(d.interval or ()))]
    biggest = max([abs(v) for v in ends if math.isfinite(v)] + [abs(threshold or 0.0), 1e-9])
    return biggest * 1.1


def forgetting_svg(deltas: Sequence[Delta], threshold: float | None, title: str = "Forgetting") -> Markup:
    """Horizontal bars of the change per task with 95 % interval whiskers, the verdict
    (forgotten / unresolved / kept) by word and fill, and −``threshold`` dashed."""
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
    span = _scale([d for _, ds in series for d in ds], -abs(threshold) if threshold else None)
    n = max(1, len(series))
    bar_h, gap, left, width, right = 14, 10, 230, 480, 230
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
        f'<text x="4" y="16" class="chart-title">{_e(title)} (adapted − base, 95 % intervals)</text>',
        _HATCH,
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
            shown = max(-span, min(span, d.delta))
            clipped = shown != d.delta
            x0, x1 = sorted((zero, x(shown)))
            drop = d.verdict == "forgotten" or (d.verdict is None and d.flagged)
            fill = DROP if drop else "url(#hatch-unresolved)" if d.verdict == "unresolved" else PALETTE[si % 4]
            cls = " ".join(["bar", *(["drop"] if drop else []), *([d.verdict] if d.verdict else []), *(["clipped"] if clipped else [])])
            iv = d.interval
            pale = ' fill-opacity="0.3"' if clipped else ""
            tip = (f"{name + ': ' if name else ''}{d.label} {_fmt(d.delta)}"
                   + (f", 95 % interval [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else "") + (f", n={d.n}" if d.n else "")
                   + (f": {d.verdict}" if d.verdict else " (over threshold)" if d.flagged else ""))
            out.append(f'<rect class="{cls}" x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar_h - 2}" fill="{fill}"{pale} '
                       f'stroke="#333" stroke-dasharray="{DASHES[si % 4]}"><title>{_e(tip)}</title></rect>')
            end = x1
            lo, hi = (x(max(-span, min(span, v))) for v in iv) if iv is not None else (0.0, 0.0)  # clipped like the bar
            if iv is not None and hi - lo >= 1:  # the whisker: a line across the interval with end caps
                mid = y + (bar_h - 2) / 2
                out.append(f'<g class="whisker" stroke="#111" stroke-width="1.2"><title>{_e(tip)}</title>'
                           f'<line x1="{lo:.1f}" y1="{mid:.1f}" x2="{hi:.1f}" y2="{mid:.1f}"/>'
                           f'<line x1="{lo:.1f}" y1="{mid - 4:.1f}" x2="{lo:.1f}" y2="{mid + 4:.1f}"/>'
                           f'<line x1="{hi:.1f}" y1="{mid - 4:.1f}" x2="{hi:.1f}" y2="{mid + 4:.1f}"/></g>')
                end = max(end, hi)
            # Values right of the bar's (or whisker's) end, or of the zero line for drops,
            # so a long drop's number never runs into the task labels on the left.
            # A clipped gain runs to the edge: its (long) note starts at the zero line, over
            # the bar, which is drawn pale for it (and to show it is not to scale).
            tx = max(zero, end) + 4 if d.delta < 0 else zero + 4 if clipped else end + 4
            mark = f" {MARKS[d.verdict]}" if d.verdict in MARKS else " ▼" if d.flagged else ""
            note = " (own task)" if d.own else ""
            if clipped:  # off the axis: the interval is printed instead of drawn
                note = " (own task, clipped" + (f"; 95 % [{_fmt(iv[0])}, {_fmt(iv[1])}])" if iv else ")")
            out.append(f'<text x="{tx:.1f}" y="{y + bar_h - 3}" text-anchor="start" class="value">{_fmt(d.delta)}{mark}{_e(note)}</text>')
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
