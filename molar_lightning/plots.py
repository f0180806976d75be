"""The figures of a run comparison, drawn with matplotlib into PNG files: validation curves and table bars.

Each figure is a :class:`matplotlib.figure.Figure` built without ``pyplot``, so no global figure state is left
behind and no display is needed (saving a PNG renders with Agg). ``validation_curves_figure`` and
``table_bars_figure`` return the figure itself, which is what the tests inspect; ``plot_validation_curves`` and
``plot_table_bars`` save it. Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies), and every run also gets its own line style and marker, or bar hatch, so that nothing rests on
colour alone.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# Okabe & Ito, "Color Universal Design" (2008), without black (the paper's marks) and yellow (faint on white).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
# Markers and hatches cycle with 7 entries against the 6 colours, so that no two of the first 42 runs look alike
# (a Table 2 has 10 rows); line styles cycle with 5, so a curve differs from its colour twins in two ways.
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "v", "P", "X", "h")
HATCHES = ("", "//", "\\\\", "xx", "..", "++", "||")
BEST_EPOCH_LABEL = "best epoch (its checkpoint is tested)"
PAPER_LABEL = "paper"
DPI = 150
FONT_SIZE = 10  # ticks and legend; axis labels and titles are one and two points larger


@dataclass
class BarRow:
    """One row of a reproduction table: a model's test metrics over seeds and the paper's figures.

    Args:
        name: the row's label, e.g. ``"SASRec"``.
        means: metric name -> mean over seeds, e.g. ``{"ndcg@10": 0.1}``.
        stds: metric name -> sample standard deviation over seeds (0.0 with one seed).
        paper: metric name -> the paper's figure; a metric missing here gets no paper mark.
    """

    name: str
    means: dict[str, float]
    stds: dict[str, float]
    paper: dict[str, float]


def metric_label(metric: str) -> str:
    """``"ndcg@10"`` -> ``"NDCG@10"``, ``"recall@20"`` -> ``"Recall@20"``, as the paper writes them."""
    return metric.replace("ndcg", "NDCG").replace("recall", "Recall")


def first_argmax(values: Sequence[float]) -> int:
    """The position of the first largest value: the epoch ModelCheckpoint(mode="max") keeps, since a later
    epoch replaces the best checkpoint only when strictly better."""
    return max(range(len(values)), key=values.__getitem__)


def epoch_ticks(last: int) -> list[int]:
    """Integer epoch ticks from 0 that always include ``last``, about ten of them at most."""
    step = max(1, -(-last // 10))
    ticks = list(range(0, last + 1, step))
    if ticks[-1] != last:
        if last - ticks[-1] < step / 2 and len(ticks) > 1:
            ticks[-1] = last  # a tick so close to the last would overlap its label
        else:
            ticks.append(last)
    return ticks


def validation_curves_figure(curves: Mapping[str, Sequence[float]], metric: str = "ndcg@10",
                             best_epochs: Mapping[str, int] | None = None, title: str | None = None) -> Figure:
    """The figure :func:`plot_validation_curves` saves; see there."""
    best_epochs = best_epochs or {}
    figure = Figure(figsize=(7, 4.8), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    handles = []
    for index, (name, values) in enumerate(curves.items()):
        colour = OKABE_ITO[index % len(OKABE_ITO)]
        handles += axes.plot(range(len(values)), values, label=name, color=colour, linewidth=1.8,
                  linestyle=LINE_STYLES[index % len(LINE_STYLES)], marker=MARKERS[index % len(MARKERS)],
                  markersize=5)
        if values:
            best = best_epochs.get(name, first_argmax(values))
            axes.plot([best], [values[best]], linestyle="none", marker="*", markersize=16, color=colour,
                      markeredgecolor="black", markeredgewidth=0.8, zorder=3, gid=f"best epoch: {name}")
    last = max((len(values) - 1 for values in curves.values()), default=0)
    axes.set_xticks(epoch_ticks(max(last, 0)))
    axes.set_xlabel("epoch (0-based, as validation_history.json)", fontsize=FONT_SIZE + 1)
    axes.set_ylabel(f"validation {metric_label(metric)}", fontsize=FONT_SIZE + 1)
    axes.tick_params(labelsize=FONT_SIZE)
    axes.grid(color="0.9")
    axes.set_title(title or f"validation {metric_label(metric)} per epoch", fontsize=FONT_SIZE + 2)
    handles.append(Line2D([], [], linestyle="none", marker="*", markersize=12, color="white",
                          markeredgecolor="black", label=BEST_EPOCH_LABEL))
    _legend_below(figure, handles)
    return figure


def plot_validation_curves(curves: Mapping[str, Sequence[float]], path: str | Path, metric: str = "ndcg@10",
                           best_epochs: Mapping[str, int] | None = None, title: str | None = None) -> Path:
    """Validation ``metric`` per epoch, one line per run, a star at each run's best epoch, saved as a PNG.

    Args:
        curves: run name -> its validation values, entry ``i`` measured after epoch ``i``. Epochs are 0-based,
            as the ``"epoch"`` field of ``validation_history.json`` (Lightning's ``current_epoch``).
        path: the PNG to write.
        metric: the metric the values are of, for the y axis label (``"ndcg@10"`` -> "validation NDCG@10").
        best_epochs: run name -> the epoch whose checkpoint its test used; a run missing here is marked at its
            first maximum, the epoch ``ModelCheckpoint(mode="max")`` keeps.
        title: the figure's title (default: "validation <metric> per epoch").
    """
    return _save(validation_curves_figure(curves, metric, best_epochs, title), path)


def table_bars_figure(rows: Sequence[BarRow], metrics: Sequence[str], title: str) -> Figure:
    """The figure :func:`plot_table_bars` saves; see there."""
    figure = Figure(figsize=(max(6.0, 1.2 + 0.5 * len(rows) * len(metrics)), 4.8), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(rows)
    paper_x, paper_y, handles = [], [], []
    for index, row in enumerate(rows):
        positions = [group + (index - (len(rows) - 1) / 2) * width for group in range(len(metrics))]
        bars = axes.bar(positions, [row.means[metric] for metric in metrics], width,
                        yerr=[row.stds[metric] for metric in metrics], capsize=3, label=row.name,
                        color=OKABE_ITO[index % len(OKABE_ITO)], hatch=HATCHES[index % len(HATCHES)],
                        edgecolor="black", linewidth=0.6, error_kw={"elinewidth": 1.0, "ecolor": "black"})
        handles.append(bars)
        for position, metric in zip(positions, metrics):
            if metric in row.paper:
                paper_x.append(position)
                paper_y.append(row.paper[metric])
    if paper_x:
        handles += axes.plot(paper_x, paper_y, linestyle="none", marker="D", markersize=6, color="black",
                             markeredgecolor="white", markeredgewidth=0.8, zorder=3, label=PAPER_LABEL)
    axes.set_xticks(range(len(metrics)), [metric_label(metric) for metric in metrics])
    axes.set_xlabel("test metric", fontsize=FONT_SIZE + 1)
    axes.set_ylabel("mean over seeds (error bar: sample std)", fontsize=FONT_SIZE + 1)
    axes.tick_params(labelsize=FONT_SIZE)
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", color="0.9")
    axes.set_axisbelow(True)
    axes.set_title(title, fontsize=FONT_SIZE + 2)
    _legend_below(figure, handles)
    return figure


def plot_table_bars(rows: Sequence[BarRow], metrics: Sequence[str], path: str | Path, title: str) -> Path:
    """A reproduction table as grouped bars, saved as a PNG: one group per metric, one bar per row (its mean
    over seeds, the error bar its sample std), and a black diamond at the paper's figure where it has one.

    Args:
        rows: the table's rows, in legend order.
        metrics: the metrics to draw, one group each, in this order.
        path: the PNG to write.
        title: the figure's title, e.g. "Table 2, MovieLens-1M (3 seeds)".
    """
    return _save(table_bars_figure(rows, metrics, title), path)


def _legend_below(figure: Figure, handles: Sequence[Artist]) -> None:
    """The legend under the axes, outside them, so that it covers no line or bar."""
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=FONT_SIZE, frameon=False)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return path
