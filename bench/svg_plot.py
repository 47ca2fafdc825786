"""A line chart as a standalone SVG file, for the figures of docs/ (no plotting library).

``line_chart`` draws one series of (x, y) points on axes with round-numbered ticks, a
title and axis labels; an optional band (``band``) shades a y range, such as a target's
tolerance around a reference value. The file is plain SVG 1.1 that any browser and
GitHub's viewer show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 360
# Margins: room for the tick labels left and below, the title above.
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About ``count`` round values (steps of 1, 2 or 5 times a power of ten) covering
    ``low`` to ``high``."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


def line_chart(
    path: Path,
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    band: tuple[float, float] | None = None,
    band_label: str = "",
) -> None:
    """Write ``points`` (x ascending) as a line chart to ``path``.

    Args:
        path: the SVG file to write.
        points: the series.
        title, x_label, y_label: the texts around the chart.
        band: a y range to shade behind the line (low, high).
        band_label: what the band means, written in its corner.
    """
    if not points:
        raise ValueError("nothing to plot")
    xs = [x for x, _y in points]
    ys = [y for _x, y in points]
    y_low, y_high = min(ys), max(ys)
    if band is not None:
        y_low, y_high = min(y_low, band[0]), max(y_high, band[1])
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(y_low, y_high)
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    if band is not None:
        top, bottom = sy(band[1]), sy(band[0])
        parts.append(
            f'<rect x="{LEFT}" y="{top:.1f}" width="{plot_w}" height="{bottom - top:.1f}" '
            'fill="#dfeedd"/>'
        )
        if band_label:
            parts.append(
                f'<text x="{LEFT + plot_w - 6}" y="{top + 14:.1f}" text-anchor="end" '
                f'fill="#3c6e37">{escape(band_label)}</text>'
            )
    for y in y_ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
            'stroke="#e4e4e4"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>'
        )
    for x in x_ticks:
        parts.append(
            f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{_label(x)}</text>'
        )
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>'
    )
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    parts.append(
        f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2})">{escape(y_label)}</text>'
    )
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
