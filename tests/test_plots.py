"""molar_lightning.plots: the figures' objects (labels, lines, marks, bars, error bars) and the PNG files."""

from pathlib import Path

import pytest
from matplotlib.container import BarContainer
from PIL import Image

from molar_lightning.plots import (BEST_EPOCH_LABEL, OKABE_ITO, PAPER_LABEL, BarRow, epoch_ticks, first_argmax,
                                   plot_table_bars, plot_validation_curves, table_bars_figure,
                                   validation_curves_figure)

CURVES = {"SASRec": [0.10, 0.25, 0.30, 0.28, 0.31, 0.29], "Molar": [0.20, 0.35, 0.35, 0.33]}  # Molar ties at 1, 2
ROWS = [BarRow("SASRec", {"ndcg@10": 0.30, "recall@10": 0.50}, {"ndcg@10": 0.01, "recall@10": 0.02},
               {"ndcg@10": 0.32, "recall@10": 0.48}),
        BarRow("Molar", {"ndcg@10": 0.35, "recall@10": 0.55}, {"ndcg@10": 0.03, "recall@10": 0.0}, {"ndcg@10": 0.40}),
        BarRow("DuoRec", {"ndcg@10": 0.33, "recall@10": 0.52}, {"ndcg@10": 0.02, "recall@10": 0.01}, {})]


def curve_lines(figure, names=CURVES):
    return {line.get_label(): line for line in figure.axes[0].lines if line.get_label() in names}


def best_marks(figure):
    return {line.get_gid().removeprefix("best epoch: "): (list(line.get_xdata()), list(line.get_ydata()))
            for line in figure.axes[0].lines if (line.get_gid() or "").startswith("best epoch: ")}


def test_each_run_is_one_line_with_its_own_colour_style_and_marker() -> None:
    figure = validation_curves_figure(CURVES)
    lines = curve_lines(figure)
    assert list(lines) == ["SASRec", "Molar"]
    assert list(lines["SASRec"].get_xdata()) == [0, 1, 2, 3, 4, 5]  # entry i is epoch i, from 0
    assert list(lines["Molar"].get_ydata()) == CURVES["Molar"]
    assert len({line.get_linestyle() for line in lines.values()}) == 2
    assert len({line.get_marker() for line in lines.values()}) == 2
    assert [line.get_color() for line in lines.values()] == list(OKABE_ITO[:2])


def test_axes_say_epoch_and_metric_in_readable_fonts() -> None:
    figure = validation_curves_figure(CURVES, metric="recall@20")
    axes = figure.axes[0]
    assert axes.get_ylabel() == "validation Recall@20" and axes.get_xlabel().startswith("epoch")
    assert axes.get_title() == "validation Recall@20 per epoch"
    texts = [*axes.get_xticklabels(), *axes.get_yticklabels(), *figure.legends[0].get_texts(),
             axes.xaxis.label, axes.yaxis.label, axes.title]
    assert min(text.get_fontsize() for text in texts) >= 10
    assert figure.get_dpi() == 150


def test_the_best_epoch_is_the_first_maximum_unless_given() -> None:
    marks = best_marks(validation_curves_figure(CURVES))
    assert marks == {"SASRec": ([4], [0.31]), "Molar": ([1], [0.35])}  # Molar's first of its two maxima
    marks = best_marks(validation_curves_figure(CURVES, best_epochs={"SASRec": 2}))
    assert marks == {"SASRec": ([2], [0.30]), "Molar": ([1], [0.35])}


def test_the_last_epoch_is_a_tick() -> None:
    figure = validation_curves_figure({"long": [0.1] * 30, "short": [0.2] * 7})
    ticks = list(figure.axes[0].get_xticks())
    assert ticks[0] == 0 and ticks[-1] == 29 and all(tick == int(tick) for tick in ticks)
    assert epoch_ticks(6) == [0, 1, 2, 3, 4, 5, 6]
    assert epoch_ticks(31) == [0, 4, 8, 12, 16, 20, 24, 28, 31]
    assert epoch_ticks(29) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 29]


@pytest.mark.parametrize(("values", "expected"), [([0.1, 0.3, 0.3, 0.2], 1), ([0.5], 0), ([0.1, 0.2, 0.4], 2)],
                         ids=["tie-keeps-the-first", "one-epoch", "last"])
def test_first_argmax(values, expected) -> None:
    assert first_argmax(values) == expected


def test_the_legend_lies_outside_the_axes_and_names_every_run() -> None:
    figure = validation_curves_figure(CURVES)
    figure.draw_without_rendering()  # the constrained layout places the legend
    legend = figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == ["SASRec", "Molar", BEST_EPOCH_LABEL]
    legend_box, axes_box = legend.get_window_extent(), figure.axes[0].get_tightbbox()  # with ticks and labels
    assert legend_box.y1 <= axes_box.y0  # below the axes, their tick labels and the x label
    assert 0 <= legend_box.x0 and legend_box.x1 <= figure.bbox.x1  # and not cut off at the sides


def test_plots_are_png_files_and_leave_no_pyplot_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    curves = plot_validation_curves(CURVES, tmp_path / "curves.png")
    bars = plot_table_bars(ROWS, ["ndcg@10", "recall@10"], str(tmp_path / "bars.png"), title="Table 2")
    assert plt.get_fignums() == open_before
    for path in (curves, bars):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 800 and round(image.info["dpi"][0]) == 150


def bars_of(figure) -> dict[str, BarContainer]:
    return {container.get_label(): container for container in figure.axes[0].containers
            if isinstance(container, BarContainer)}


def test_bars_are_grouped_by_metric_with_the_means_as_heights() -> None:
    figure = table_bars_figure(ROWS, ["ndcg@10", "recall@10"], title="Table 2")
    axes = figure.axes[0]
    bars = bars_of(figure)
    assert list(bars) == ["SASRec", "Molar", "DuoRec"]
    for row in ROWS:
        assert [patch.get_height() for patch in bars[row.name]] == [row.means["ndcg@10"], row.means["recall@10"]]
    centres = {name: [patch.get_x() + patch.get_width() / 2 for patch in container]
               for name, container in bars.items()}
    assert centres["SASRec"][0] < centres["Molar"][0] < centres["DuoRec"][0] < centres["SASRec"][1]
    assert centres["Molar"] == pytest.approx([0, 1])  # the middle bar of each group sits on its tick
    assert [label.get_text() for label in axes.get_xticklabels()] == ["NDCG@10", "Recall@10"]
    assert axes.get_title() == "Table 2" and axes.get_ylabel() and axes.get_xlabel()
    assert len({patch.get_hatch() for patch in (container[0] for container in bars.values())}) == 3
    assert [container[0].get_facecolor()[:3] for container in bars.values()] == [
        tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)) for colour in OKABE_ITO[:3]]


def test_error_bars_are_the_standard_deviations() -> None:
    bars = bars_of(table_bars_figure(ROWS, ["ndcg@10", "recall@10"], title="Table 2"))
    for row in ROWS:
        segments = bars[row.name].errorbar.lines[2][0].get_segments()
        assert [(low[1], high[1]) for low, high in segments] == pytest.approx(
            [(row.means[m] - row.stds[m], row.means[m] + row.stds[m]) for m in ("ndcg@10", "recall@10")])
        assert [low[0] for low, _ in segments] == pytest.approx(
            [patch.get_x() + patch.get_width() / 2 for patch in bars[row.name]])


def test_the_paper_is_marked_on_the_bars_that_have_a_paper_figure() -> None:
    figure = table_bars_figure(ROWS, ["ndcg@10", "recall@10"], title="Table 2")
    bars = bars_of(figure)
    [paper] = [line for line in figure.axes[0].lines if line.get_label() == PAPER_LABEL]
    centre = {name: [patch.get_x() + patch.get_width() / 2 for patch in container]
              for name, container in bars.items()}
    marks = sorted(zip(paper.get_xdata(), paper.get_ydata()))
    expected = sorted([(centre["SASRec"][0], 0.32), (centre["SASRec"][1], 0.48), (centre["Molar"][0], 0.40)])
    assert len(marks) == 3  # none for Molar's Recall@10, none for DuoRec
    assert [value for mark in marks for value in mark] == pytest.approx([value for mark in expected for value in mark])
    assert PAPER_LABEL in [text.get_text() for text in figure.legends[0].get_texts()]


def test_a_table_without_paper_figures_has_no_paper_mark() -> None:
    figure = table_bars_figure(ROWS[2:], ["ndcg@10"], title="ours only")
    assert not [line for line in figure.axes[0].lines if line.get_label() == PAPER_LABEL]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["DuoRec"]


def test_a_ten_row_table_gives_every_run_its_own_look() -> None:
    names = [f"row {index}" for index in range(10)]
    lines = curve_lines(validation_curves_figure({name: [0.1, 0.2] for name in names}), names)
    looks = {(line.get_color(), line.get_marker()) for line in lines.values()}
    assert len(looks) == 10 and len({(line.get_color(), line.get_linestyle()) for line in lines.values()}) == 10
    rows = [BarRow(name, {"ndcg@10": 0.1}, {"ndcg@10": 0.0}, {}) for name in names]
    bars = bars_of(table_bars_figure(rows, ["ndcg@10"], title="Table 2"))
    assert len({(tuple(container[0].get_facecolor()), container[0].get_hatch()) for container in bars.values()}) == 10
