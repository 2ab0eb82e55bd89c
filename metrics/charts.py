"""Server-rendered SVG charts of counter history: no JavaScript, no CDN (the service must work offline)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

# Beyond this many snapshots the chart keeps evenly spaced ones (and always the latest).
MAX_POINTS = 2000


def sparkline_svg(values: Sequence[int], width: int = 120, height: int = 24) -> SafeString:
    """A tiny trend line of recent values, oldest first."""
    if len(values) < 2:
        return mark_safe("")
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = (width - 2) / (len(values) - 1)
    points = " ".join(
        f"{1 + i * step:.1f},{height - 1 - (value - low) / span * (height - 2):.1f}" for i, value in enumerate(values)
    )
    return format_html(
        '<svg class="counter-sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<polyline fill="none" stroke="#417690" stroke-width="1.5" points="{}"/></svg>',
        width,
        height,
        width,
        height,
        f"trend from {low} to {values[-1]}",
        points,
    )


def downsample(points: Sequence, limit: int = MAX_POINTS) -> list:
    if len(points) <= limit:
        return list(points)
    step = len(points) / limit
    sampled = [points[int(i * step)] for i in range(limit - 1)]
    return [*sampled, points[-1]]


def increases(points: Sequence[tuple[datetime, int, str]]) -> list[tuple[datetime, int, str]]:
    """Each snapshot's increase over the one before it (the first point has none), oldest first."""
    return [
        (moment, value - previous[1], note)
        for previous, (moment, value, note) in zip(points[:-1], points[1:], strict=True)
    ]


def history_chart_svg(points: Sequence[tuple[datetime, int, str]], width: int = 860, height: int = 260) -> SafeString:
    """A time chart of (taken_at, value, gap note) points, oldest first; gaps are marked in red."""
    if not points:
        return mark_safe('<p class="counter-chart-empty">No snapshots yet.</p>')
    points = downsample(points)
    left, right, top, bottom = 70, 16, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    t_span, v_span = (t1 - t0) or 1.0, (high - low) or 1

    def xy(moment: datetime, value: int) -> tuple[float, float]:
        x = left + (moment.timestamp() - t0) / t_span * plot_w if t1 > t0 else left + plot_w / 2
        y = top + plot_h - (value - low) / v_span * plot_h if high > low else top + plot_h / 2
        return x, y

    coords = [xy(moment, value) for moment, value, _ in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    parts = [
        f'<svg class="counter-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="history of {len(points)} snapshots" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ddd"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = low + (high - low) * fraction
        y = top + plot_h - fraction * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#666">{value:,.0f}</text>'
        )
    for moment, anchor, x in ((points[0][0], "start", left), (points[-1][0], "end", left + plot_w)):
        label = escape(moment.strftime("%Y-%m-%d %H:%M:%S UTC"))
        parts.append(
            f'<text x="{x}" y="{height - 10}" text-anchor="{anchor}" font-size="11" fill="#666">{label}</text>'
        )
    parts.append(f'<polyline class="series" fill="none" stroke="#417690" stroke-width="1.5" points="{line}"/>')
    for (moment, _value, note), (x, y) in zip(points, coords, strict=True):
        if note:
            parts.append(
                f'<circle class="gap" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#ba2121">'
                f"<title>{escape(moment.isoformat())}: {escape(note)}</title></circle>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))
