"""Bar and line charts as SVG text, drawn on the server: no script, nothing the page's CSP
(``default-src 'self'``) would block: colours are presentation attributes, not ``style``.

Sized for the back office at 1280 px (its content is 1100 px wide); the ``viewBox`` lets the
browser scale it down. Each chart has a ``<title>`` and the table next to it carries the same
figures, for screen readers and for copying.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 1100
# distinct to the colour-blind (Okabe-Ito), in the order series are given
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
           "#000000")
FONT = 'font-family="system-ui, sans-serif" font-size="13"'


def _nice_max(value: float) -> float:
    """A round top for the axis at or above ``value`` (1, 2, 2.5 or 5 times a power of 10)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover


def _svg(height: int, title: str, body: list[str]) -> Markup:
    # every text put in ``body`` went through escape() above: labels, values, names
    return Markup(  # noqa: S704
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title>{"".join(body)}</svg>')


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str,
              fmt: Callable[[float], str] = str, label_width: int = 300) -> Markup:
    """Horizontal bars, one per label, largest scale at the top value; the value at its end."""
    bar, gap, top = 22, 8, 8
    height = top + len(labels) * (bar + gap) + 8
    scale = (WIDTH - label_width - 110) / _nice_max(float(max(values, default=0)))
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * (bar + gap)
        length = max(0.0, float(value) * scale)
        text = str(label) if len(str(label)) <= 40 else str(label)[:39] + "…"
        body.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end" fill="#222" {FONT}>'
            f'{escape(text)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar}" '
            f'fill="{COLOURS[0]}"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 16}" fill="#222" {FONT}>'
            f'{escape(fmt(value))}</text>')
    return _svg(height, title, body)


def _ticks(top: float, integer: bool) -> list[float]:
    """Round values from 0 to at least ``top`` for the y axis: four or five steps."""
    step = _nice_max(top / 4) if top > 0 else 1
    if integer:
        step = max(1, math.ceil(step))
    count = max(1, math.ceil(top / step))
    return [step * i for i in range(count + 1)]


def line_chart(x_labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str,
               fmt: Callable[[float], str] = str, height: int = 320,
               integer: bool = False) -> Markup:
    """One line per series over the same x labels, a legend under the plot."""
    left, right, top, bottom = 80, 50, 12, 60
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    ticks = _ticks(max((float(v) for values in series.values() for v in values), default=0),
                   integer)
    peak = ticks[-1]
    count = max(len(x_labels), 1)
    step = plot_w / max(count - 1, 1)

    def x(i: int) -> float:
        return left + (i * step if count > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h - float(value) / peak * plot_h

    body = []
    for value in ticks:  # horizontal grid lines with their values
        body.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(value):.1f}" '
                    f'y2="{y(value):.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
                    f'fill="#555" {FONT}>{escape(fmt(value))}</text>')
    every = max(1, math.ceil(count / 12))  # at most about 12 labels under the axis
    for i, label in enumerate(x_labels):
        if i % every == 0:
            body.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
                        f'fill="#555" {FONT}>{escape(label)}</text>')
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                    f'stroke-width="2.5"/>')
        body.extend(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}"/>'
                    for i, v in enumerate(values))
        lx = left + n * 160
        body.append(f'<rect x="{lx}" y="{height - 22}" width="14" height="14" '
                    f'fill="{colour}"/><text x="{lx + 20}" y="{height - 10}" fill="#222" '
                    f'{FONT}>{escape(name)}</text>')
    return _svg(height, title, body)
