"""Geometry of the admin's bar charts, drawn as inline SVG by a template: no JavaScript library
and no build step, and the numbers are in a table beside the picture for screen readers."""

import math
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class Bar:
    day: date
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Tick:
    position: float  # y for the value axis, x (centre of a day) for the day axis
    label: str


@dataclass(frozen=True)
class DailyBarChart:
    width: int
    height: int
    left: int  # plot area: x from left to width - right, y from top to height - bottom
    top: int
    plot_width: float
    plot_height: float
    bars: list[Bar]  # one per day with at least one download
    value_ticks: list[Tick]
    day_ticks: list[Tick]
    total: int

    @property
    def baseline(self) -> float:
        return self.top + self.plot_height

    @property
    def right_edge(self) -> float:
        return self.left + self.plot_width

    @property
    def value_label_x(self) -> float:
        return self.left - 6

    @property
    def day_label_y(self) -> float:
        return self.baseline + 16


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1), so the
    value axis reads 0, 5, 10 rather than 0, 3.5, 7."""
    if value <= 1:
        return 1
    magnitude = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def daily_bar_chart(
    *,
    counts: dict[date, int],
    start: date,
    end: date,
    width: int = 720,
    height: int = 240,
) -> DailyBarChart:
    """Bars for the days from `start` to `end` inclusive; days without downloads get no bar but
    keep their slot, so gaps in time show as gaps."""
    left, right, top, bottom = 48, 12, 12, 36
    plot_width, plot_height = width - left - right, height - top - bottom
    days = max(1, (end - start).days + 1)
    slot = plot_width / days
    gap = min(2.0, slot * 0.2)
    shown = {day: n for day, n in counts.items() if start <= day <= end and n > 0}
    ceiling = nice_ceiling(max(shown.values(), default=0))
    bars = []
    for day, count in sorted(shown.items()):
        bar_height = plot_height * count / ceiling
        bars.append(
            Bar(
                day=day,
                count=count,
                x=round(left + (day - start).days * slot + gap / 2, 2),
                y=round(top + plot_height - bar_height, 2),
                width=round(max(slot - gap, 0.5), 2),
                height=round(bar_height, 2),
            )
        )
    value_ticks = [
        Tick(round(top + plot_height * (1 - fraction), 2), f"{round(ceiling * fraction):,}")
        for fraction in (0, 0.5, 1)
        if fraction == 0 or ceiling * fraction == int(ceiling * fraction)
    ]
    every = max(1, math.ceil(days / 8))
    day_ticks = [
        Tick(round(left + (index + 0.5) * slot, 2), (start + timedelta(days=index)).isoformat())
        for index in range(0, days, every)
    ]
    return DailyBarChart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_width,
        plot_height=plot_height,
        bars=bars,
        value_ticks=value_ticks,
        day_ticks=day_ticks,
        total=sum(shown.values()),
    )
