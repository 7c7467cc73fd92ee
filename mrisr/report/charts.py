"""Chart geometry for the report's inline SVG: scatter, histograms and line charts.

Functions here only compute coordinates (pixels in a ``viewBox``) and tick labels; the templates draw
them, so every label goes through jinja2's escaping. No plotting library is needed, the charts stay
sharp at any zoom, and each scatter point links to its study page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 560.0, 340.0
#: Most ticks on an axis (a nice step gives about five).
MAX_TICKS = 20
LEFT, RIGHT, TOP, BOTTOM = 62.0, 16.0, 14.0, 48.0


@dataclass(frozen=True)
class Tick:
    """An axis tick: pixel position and label."""

    pos: float
    label: str


@dataclass(frozen=True)
class Point:
    """A scatter point: pixel position, hover text, link (or ``""``) and CSS class."""

    x: float
    y: float
    title: str
    href: str = ""
    cls: str = ""


@dataclass(frozen=True)
class Bar:
    """A histogram bar: pixel box, hover text and CSS class."""

    x: float
    y: float
    w: float
    h: float
    title: str
    cls: str = ""


@dataclass(frozen=True)
class Line:
    """A polyline (``points`` in SVG syntax), its legend name and CSS class."""

    points: str
    name: str
    cls: str


@dataclass
class Chart:
    """One chart: axes, ticks and marks, in a ``WIDTH × HEIGHT`` viewBox."""

    xlabel: str
    ylabel: str
    xticks: list[Tick] = field(default_factory=list)
    yticks: list[Tick] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    diagonal: tuple[float, float, float, float] | None = None
    width: float = WIDTH
    height: float = HEIGHT
    left: float = LEFT
    top: float = TOP
    right_edge: float = WIDTH - RIGHT
    bottom_edge: float = HEIGHT - BOTTOM


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / max(1, n)
    exp = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next((m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= raw), 10 * exp)


#: Narrowest span of an axis relative to the magnitude of its values: a narrower one (values a few
#: float steps apart) could not be divided into ticks.
MIN_RELATIVE_SPAN = 1e-9


def _range(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    """The axis range of ``values`` (finite, of magnitude far below the float limit), padded by
    ``pad`` of its span; values (nearly) equal get a span of 1, or of ``1e-3`` of their magnitude."""
    lo, hi = min(values), max(values)
    size = max(abs(lo), abs(hi))
    if hi - lo <= MIN_RELATIVE_SPAN * size or hi <= lo:
        half = max(0.5, 5e-4 * size)
        lo, hi = lo - half, hi + half
    d = (hi - lo) * pad
    return lo - d, hi + d


class _Scale:
    def __init__(self, lo: float, hi: float, p0: float, p1: float) -> None:
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: float) -> float:
        return round(self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0), 2)

    def ticks(self, digits: int | None = None) -> list[Tick]:
        step = _nice_step(self.hi - self.lo)
        d = digits if digits is not None else max(0, -math.floor(math.log10(step)) + (1 if step * 4 % 10 else 0))
        # Ticks by index (k·step), not by adding steps: a sum that no longer grows would never end.
        first, last = math.ceil(self.lo / step), math.floor(self.hi / step + 1e-9)
        return [Tick(self(k * step), f"{k * step:.{d}f}") for k in range(first, min(last, first + MAX_TICKS) + 1)]


def _frame(xlabel: str, ylabel: str) -> Chart:
    return Chart(xlabel=xlabel, ylabel=ylabel)


def scatter(
    xs: Sequence[float], ys: Sequence[float], titles: Sequence[str], hrefs: Sequence[str], classes: Sequence[str],
    *, xlabel: str, ylabel: str, diagonal: bool = True,
) -> Chart:  # fmt: skip
    """A scatter plot (same range on both axes when ``diagonal``, with the line ``y = x``)."""
    c = _frame(xlabel, ylabel)
    if diagonal:
        lo, hi = _range([*xs, *ys])
        xr = yr = (lo, hi)
    else:
        xr, yr = _range(xs), _range(ys)
    sx, sy = _Scale(*xr, c.left, c.right_edge), _Scale(*yr, c.bottom_edge, c.top)
    c.xticks, c.yticks = sx.ticks(), sy.ticks()
    c.points = [Point(sx(x), sy(y), t, h, k) for x, y, t, h, k in zip(xs, ys, titles, hrefs, classes, strict=True)]
    if diagonal:
        c.diagonal = (sx(xr[0]), sy(xr[0]), sx(xr[1]), sy(xr[1]))
    return c


def histograms(
    series: Sequence[tuple[str, Sequence[float]]], *, xlabel: str, ylabel: str = "studies", bins: int | None = None
) -> Chart:
    """Overlaid histograms of one or more named series on shared bins (CSS classes ``s0``, ``s1``…)."""
    c = _frame(xlabel, ylabel)
    allv = [v for _, vals in series for v in vals]
    n = bins or min(40, max(5, int(math.sqrt(len(allv)))))
    lo, hi = _range(allv, pad=0.0)
    width = (hi - lo) / n
    counts = []
    for _, vals in series:
        cnt = [0] * n
        for v in vals:
            cnt[min(n - 1, int((v - lo) / width))] += 1
        counts.append(cnt)
    top = max(max(cnt) for cnt in counts) or 1
    sx, sy = _Scale(lo, hi, c.left, c.right_edge), _Scale(0.0, top * 1.08, c.bottom_edge, c.top)
    c.xticks = sx.ticks()
    c.yticks = [t for t in sy.ticks(0) if float(t.label) == int(float(t.label))]
    for s, ((name, _), cnt) in enumerate(zip(series, counts, strict=True)):
        for b, k in enumerate(cnt):
            if k:
                x0, x1 = sx(lo + b * width), sx(lo + (b + 1) * width)
                a, z = lo + b * width, lo + (b + 1) * width
                c.bars.append(Bar(x0, sy(k), max(0.5, x1 - x0 - 0.5), sy(0) - sy(k),
                                  f"{name}: {k} in [{a:.4g}, {z:.4g})", f"s{s}"))  # fmt: skip
    return c


def lines(
    xs: Sequence[float], series: Sequence[tuple[str, Sequence[float | None]]], *, xlabel: str, ylabel: str
) -> Chart:
    """Line chart of named series over shared ``xs`` (missing values break nothing: they are skipped)."""
    c = _frame(xlabel, ylabel)
    ally = [v for _, ys in series for v in ys if v is not None and math.isfinite(v)]
    sx = _Scale(*_range(xs, pad=0.02), c.left, c.right_edge)
    sy = _Scale(*_range(ally or [0.0, 1.0]), c.bottom_edge, c.top)
    c.xticks, c.yticks = sx.ticks(), sy.ticks()
    for s, (name, ys) in enumerate(series):
        pts = [f"{sx(x)},{sy(y)}" for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
        if pts:
            c.lines.append(Line(" ".join(pts), name, f"s{s}"))
    return c
