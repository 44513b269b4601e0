"""Line charts of training metrics as plain SVG geometry (no JavaScript, no chart library).

The server computes each series' polyline in a fixed viewBox; the template draws it. htmx swaps in a fresh chart
while a run is going, so the charts update live without client code.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 320, 160
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 8, 10, 22
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"]


@dataclass(frozen=True)
class Line:
    label: str
    color: str
    dashed: bool  # eval lines are dashed, train lines solid
    points: str  # "x,y x,y ..." in the chart's viewBox
    last: float
    markers: list[tuple[float, float]]  # eval points get a dot each: a single evaluation is a point, not a line


@dataclass(frozen=True)
class Chart:
    title: str
    lines: list[Line]
    y_min: float
    y_max: float
    x_max: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def plot_bottom(self) -> int:
        return HEIGHT - PAD_BOTTOM

    @property
    def plot_left(self) -> int:
        return PAD_LEFT


def build_chart(title: str, series: dict[tuple[str, str], list[tuple[int, float]]], colors: dict[str, str]) -> Chart | None:
    """One chart from {(series label, split): [(step, value), ...]}; None when there is nothing to draw."""
    points = [point for values in series.values() for point in values]
    if not points:
        return None
    x_max = max(1, max(step for step, _ in points))
    y_min, y_max = min(value for _, value in points), max(value for _, value in points)
    if y_min == y_max:
        y_min, y_max = y_min - 0.5, y_max + 0.5
    lines = []
    for (label, split), values in sorted(series.items()):
        xy = [(round(_x(step, x_max), 1), round(_y(value, y_min, y_max), 1)) for step, value in values]
        dashed = split == "eval"
        lines.append(
            Line(
                label=f"{label} {split}".strip(), color=colors[label], dashed=dashed, points=" ".join(f"{x:.1f},{y:.1f}" for x, y in xy),
                last=values[-1][1], markers=xy if dashed else [],
            )
        )
    return Chart(title=title, lines=lines, y_min=y_min, y_max=y_max, x_max=x_max)


def _x(step: int, x_max: int) -> float:
    return PAD_LEFT + (WIDTH - PAD_LEFT - PAD_RIGHT) * step / x_max


def _y(value: float, y_min: float, y_max: float) -> float:
    return PAD_TOP + (HEIGHT - PAD_TOP - PAD_BOTTOM) * (1 - (value - y_min) / (y_max - y_min))


def run_charts(names: list[str], series_by_metric: dict, run_labels: dict[int, str]) -> list[Chart]:
    """Charts of ``names`` for one or more runs; ``series_by_metric`` as selectors.run_series returns it."""
    colors = {label: PALETTE[index % len(PALETTE)] for index, label in enumerate(run_labels.values())}
    charts = []
    for name in names:
        by_run = series_by_metric.get(name, {})
        series = {(run_labels[run_id], split): values for (run_id, split), values in by_run.items() if run_id in run_labels}
        chart = build_chart(name, series, colors)
        if chart is not None:
            charts.append(chart)
    return charts


# --- histograms ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float  # top of the bar, in the viewBox
    height: float
    low: float  # the bin's edges and count, for its tooltip
    high: float
    count: int
    selected_y: float  # the selected responses' bar, drawn over it
    selected_height: float
    selected: int


@dataclass(frozen=True)
class Histogram:
    title: str
    bars: list[Bar]
    x_min: float
    x_max: float
    y_max: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def plot_bottom(self) -> int:
        return HEIGHT - PAD_BOTTOM

    @property
    def plot_left(self) -> int:
        return PAD_LEFT


def build_histogram(title: str, histogram: dict) -> Histogram | None:
    """Bars from training.selection.histogram's ``{edges, counts, selected}``; None when there is nothing to draw."""
    counts, selected, edges = histogram.get("counts") or [], histogram.get("selected") or [], histogram.get("edges") or []
    if not counts or len(edges) != len(counts) + 1:
        return None
    y_max = max(1, max(counts))
    plot_width, plot_height = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_width / len(counts)
    bars = []
    for index, count in enumerate(counts):
        chosen = selected[index] if index < len(selected) else 0
        height, selected_height = plot_height * count / y_max, plot_height * chosen / y_max
        bars.append(Bar(
            x=round(PAD_LEFT + index * slot + 0.5, 1), width=round(max(slot - 1, 0.5), 1),
            y=round(PAD_TOP + plot_height - height, 1), height=round(height, 1),
            low=edges[index], high=edges[index + 1], count=count,
            selected_y=round(PAD_TOP + plot_height - selected_height, 1), selected_height=round(selected_height, 1), selected=chosen,
        ))
    return Histogram(title=title, bars=bars, x_min=edges[0], x_max=edges[-1], y_max=y_max)
