"""Figures of active-learning results: accuracy curves, query cost, what was selected.

Each function takes what ``fkal.reporting`` computes and returns a matplotlib ``Figure`` drawn on an Agg canvas
(no pyplot, no global state, no display needed); ``save_figure`` writes it as PNG and PDF. Sizes are in inches at
``DPI`` dots per inch, so a PNG is ``size * DPI`` pixels; layouts are "constrained" (nothing is cropped at save).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_path
from .curves import CurvePoint
from .names import legend_name
from .records import GroupKey
from .tables import CostRow

DPI = 100
ACCURACY_SIZE = (11.0, 5.5)         # inches
SUMMARY_SIZE = (13.0, 4.5)          # entropy and rare share, side by side
COST_WIDTH = 11.0                   # height grows with the number of bars: see cost_figure_size
PANEL_SIZE = (4.0, 3.0)             # one selection histogram
SELECTION_LEGEND_WIDTH = 1.0        # room for the class legend right of the histograms
MAX_STACKED_CLASSES = 20            # more classes: a heatmap instead of stacked bars
RANDOM_INIT_STYLE = "--"            # line style of random-init (unsupervised=0) curves; pretrained are solid


def new_figure(size: tuple[float, float]) -> Figure:
    """An empty figure on an Agg canvas with a constrained layout."""
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, stem: str | Path, dpi: int = DPI) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically (folders created); return both paths."""
    paths = [Path(f"{stem}.png"), Path(f"{stem}.pdf")]   # not with_suffix: a stem may hold a dot (IR=1.5)
    for path in paths:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=path.suffix[1:], dpi=dpi)
    return paths


def config_colors(configs: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per configuration name (same colour in every figure), from tab10 or tab20."""
    from matplotlib import colormaps
    names = list(dict.fromkeys(configs))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _line_style(key: GroupKey) -> str:
    return "-" if key.unsupervised else RANDOM_INIT_STYLE


X_AXES = ("labeled", "percent")     # x axis of the curves: labeled images, or their share of |D| (%)


def _errorbar(ax, key: GroupKey, curve: Sequence[CurvePoint], color, x_scale: float = 1.0) -> None:
    """Mean with std error bars (none for single runs) against labeled count times ``x_scale``."""
    x = [p.labeled * x_scale for p in curve]
    y = [p.mean for p in curve]
    err = [0.0 if math.isnan(p.std) else p.std for p in curve]
    ax.errorbar(x, y, yerr=err, color=color, linestyle=_line_style(key), marker="o", markersize=3, capsize=3,
                linewidth=1.2, label=legend_name(key.config, key.unsupervised, key.variant))


def _x_scale(x: str, dataset_size: int | None) -> float:
    """Factor from labeled count to the x axis: 1, or 100 / |D| for percent of |D|."""
    if x not in X_AXES:
        raise ValueError(f"x axis is one of {X_AXES}, not {x!r}")
    if x == "percent" and not dataset_size:
        raise ValueError("x='percent' needs the size of |D|")
    return 100.0 / dataset_size if x == "percent" else 1.0


def _label_x_axes(ax, x: str, pool_size: int, dataset_size: int | None) -> None:
    """x="labeled": labeled images below, their share of the (biased) pool on top. x="percent": their share of
    |D| below (the pool before the imbalance, the paper's axis), labeled images on top."""
    if x == "percent":
        ax.set_xlabel(f"labeled images, % of |D| = {dataset_size:,} (the pool before the imbalance)")
        top = ax.secondary_xaxis("top", functions=(lambda p: np.asarray(p) * dataset_size / 100.0,
                                                   lambda n: 100.0 * np.asarray(n) / dataset_size))
        top.set_xlabel("labeled images")
    else:
        ax.set_xlabel("labeled images")
        _add_pool_percent_axis(ax, pool_size)


def _add_pool_percent_axis(ax, pool_size: int) -> None:
    """A top x axis giving the labeled count as a share of the pool (%)."""
    top = ax.secondary_xaxis("top", functions=(lambda n: 100.0 * np.asarray(n) / pool_size,
                                               lambda p: np.asarray(p) * pool_size / 100.0))
    top.set_xlabel(f"labeled share of the pool of {pool_size:,} images (%)")


def accuracy_figure(curves: dict[GroupKey, Sequence[CurvePoint]], full_train: dict[GroupKey, Sequence[CurvePoint]],
                    pool_size: int, title: str, colors: dict[str, tuple] | None = None,
                    ylabel: str = "test accuracy (%)", x: str = "labeled",
                    beside: dict[GroupKey, Sequence[CurvePoint]] | None = None, beside_label: str = "",
                    dataset_size: int | None = None) -> Figure:
    """Accuracy against labeled count (``x="labeled"``, the labeled share of the pool of ``pool_size`` images on
    a top axis) or against its share of |D| = ``dataset_size`` in percent (``x="percent"``, the paper's figures:
    |D| is the pool before the imbalance; labeled count on top). One curve per group (mean ± std over runs), the
    full-train accuracy as a dotted "all train" line; random-init curves are dashed. ``beside``: a second
    quantity per group (e.g. the final epoch's accuracy beside the kept epoch's), drawn as a thin dotted line
    of the group's colour, named once in the legend by ``beside_label``."""
    colors = colors or config_colors([key.name for key in curves])
    scale = _x_scale(x, dataset_size)
    figure = new_figure(ACCURACY_SIZE)
    ax = figure.add_subplot()
    for key, curve in curves.items():
        _errorbar(ax, key, curve, colors[key.name], scale)
    for key, curve in (beside or {}).items():
        ax.plot([p.labeled * scale for p in curve], [p.mean for p in curve], color=colors[key.name],
                linestyle=":", linewidth=1.0, marker=".", markersize=3)
    if beside:
        ax.plot([], [], color="black", linestyle=":", linewidth=1.0, marker=".", markersize=3,
                label=beside_label or "beside")
    for key, curve in full_train.items():
        mean = curve[-1].mean
        label = "all train" + ("" if key.unsupervised else " (θ_rnd)") + f": {mean:.1f}%"
        ax.axhline(mean, color="black" if key.unsupervised else "grey", linestyle=":", linewidth=1.2, label=label)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _label_x_axes(ax, x, pool_size, dataset_size)
    ax.set_title(title)
    figure.legend(loc="outside right upper", fontsize="small")
    return figure


def band_figure(curves: dict[GroupKey, Sequence[CurvePoint]], title: str, ylabel: str,
                colors: dict[str, tuple] | None = None, zero_line: str | None = None) -> Figure:
    """Mean against labeled count with the std over runs shaded (TA-VAAL's Figures 3-4 and 11-12), one curve per
    group; ``zero_line`` labels a dotted line at 0 (the baseline of an improvement figure)."""
    colors = colors or config_colors([key.name for key in curves])
    figure = new_figure(ACCURACY_SIZE)
    ax = figure.add_subplot()
    for key, curve in curves.items():
        if not curve:
            continue
        x = np.array([p.labeled for p in curve])
        mean = np.array([p.mean for p in curve])
        std = np.array([0.0 if math.isnan(p.std) else p.std for p in curve])
        ax.plot(x, mean, color=colors[key.name], linestyle=_line_style(key), marker="o", markersize=3,
                linewidth=1.2, label=legend_name(key.config, key.unsupervised, key.variant))
        ax.fill_between(x, mean - std, mean + std, color=colors[key.name], alpha=0.2, linewidth=0)
    if zero_line:
        ax.axhline(0.0, color="black", linestyle=":", linewidth=1.2, label=zero_line)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    figure.legend(loc="outside right upper", fontsize="small")
    return figure


def cost_figure_size(bars: int) -> tuple[float, float]:
    """Width fixed, height 1.5 in plus 0.4 in per bar, at least 3 in."""
    return (COST_WIDTH, max(3.0, 1.5 + 0.4 * bars))


def cost_figure(rows: Sequence[CostRow], title: str) -> Figure:
    """Seconds per iteration on log scales: query (left) beside training (right), one bar per group."""
    figure = new_figure(cost_figure_size(len(rows)))
    query_ax, train_ax = figure.subplots(1, 2, sharey=True)
    labels = [legend_name(row.config, row.unsupervised, row.variant) for row in rows]
    y = np.arange(len(rows))
    for ax, values, name in ((query_ax, [r.query_mean for r in rows], "query"),
                             (train_ax, [r.train_mean for r in rows], "training")):
        shown = np.maximum(values, 1e-4)  # a log axis cannot show 0 s; the text beside the bar gives the value
        ax.barh(y, shown, color="tab:blue" if name == "query" else "tab:grey")
        ax.set_xscale("log")
        ax.set_xlim(min(shown.min() / 3, 1e-2), shown.max() * 20)
        for yi, value, bar in zip(y, values, shown):
            ax.text(bar * 1.15, yi, f"{value:.3g} s", va="center", fontsize="small")
        ax.set_xlabel(f"{name} seconds per iteration (mean, log scale)")
        ax.grid(axis="x", alpha=0.3)
    query_ax.set_yticks(y, labels, fontsize="small")
    query_ax.invert_yaxis()  # first group on top
    figure.suptitle(title)
    return figure


def selection_grid(panels: int) -> tuple[int, int]:
    """(rows, columns) of the histogram panels: at most 3 columns."""
    columns = max(1, min(3, panels))
    return math.ceil(max(panels, 1) / columns), columns


def selection_figure_size(panels: int) -> tuple[float, float]:
    rows, columns = selection_grid(panels)
    return (PANEL_SIZE[0] * columns + SELECTION_LEGEND_WIDTH, PANEL_SIZE[1] * rows)


def selection_figure(histograms: dict[GroupKey, tuple[Sequence[int], np.ndarray]], title: str) -> Figure:
    """Per group, the classes of the images selected at each iteration (mean over runs).

    ``histograms[key] = (labeled counts [B], mean selected counts [B, C])``. Stacked bars, one colour per class,
    for up to ``MAX_STACKED_CLASSES`` classes; a heatmap (class share per iteration) beyond.
    """
    figure = new_figure(selection_figure_size(len(histograms)))
    rows, columns = selection_grid(len(histograms))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    num_classes = max((counts.shape[1] for _, counts in histograms.values()), default=0)
    for ax, (key, (labeled, counts)) in zip(axes, histograms.items()):
        if num_classes <= MAX_STACKED_CLASSES:
            _stacked_bars(ax, labeled, counts)
        else:
            _class_heatmap(ax, figure, labeled, counts)
        ax.set_title(legend_name(key.config, key.unsupervised, key.variant), fontsize="small")
        ax.set_xlabel("labeled images after the iteration", fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in axes[len(histograms):]:
        ax.set_axis_off()
    if 0 < num_classes <= MAX_STACKED_CLASSES:
        handles, names = axes[0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside right upper", fontsize="small", title="class")
    figure.suptitle(title)
    return figure


def _class_colors(num_classes: int) -> list[tuple]:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [cmap(c % cmap.N) for c in range(num_classes)]


def _stacked_bars(ax, labeled: Sequence[int], counts: np.ndarray) -> None:
    """One bar per iteration, stacked by class (counts [B, C])."""
    x = np.arange(len(labeled))
    bottom = np.zeros(len(labeled))
    for c, color in enumerate(_class_colors(counts.shape[1])):
        ax.bar(x, counts[:, c], bottom=bottom, color=color, label=str(c), width=0.8)
        bottom += counts[:, c]
    ax.set_xticks(x, [str(n) for n in labeled], rotation=45)
    ax.set_ylabel("selected images (mean over runs)", fontsize="small")


def _class_heatmap(ax, figure: Figure, labeled: Sequence[int], counts: np.ndarray) -> None:
    """Share (%) of each class among the images selected at each iteration: classes down, iterations across."""
    totals = counts.sum(axis=1, keepdims=True)
    share = 100.0 * np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    image = ax.imshow(share.T, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xticks(np.arange(len(labeled)), [str(n) for n in labeled], rotation=45)
    ax.set_ylabel("class", fontsize="small")
    figure.colorbar(image, ax=ax, label="share of the selection (%)")


def selection_summary_figure(entropy: dict[GroupKey, Sequence[CurvePoint]],
                             rare_share: dict[GroupKey, Sequence[CurvePoint]] | None, num_classes: int,
                             rare_classes: Sequence[int] | None, title: str,
                             colors: dict[str, tuple] | None = None, x: str = "labeled",
                             dataset_size: int | None = None) -> Figure:
    """Left: entropy (nats) of the classes selected at each iteration (TA-VAAL's Figure 7a; ln C is a uniform
    selection). Right: cumulative share (%) of rare classes among all images selected so far, with the share a
    class-balanced selection would have. Mean ± std over runs; random-init curves dashed. ``x="percent"`` (with
    ``dataset_size``) draws against the labeled share of |D|, the pool before the imbalance."""
    colors = colors or config_colors([key.name for key in entropy])
    scale = _x_scale(x, dataset_size)
    xlabel = f"labeled images, % of |D| = {dataset_size:,}" if x == "percent" else "labeled images"
    figure = new_figure(SUMMARY_SIZE)
    entropy_ax, rare_ax = figure.subplots(1, 2)
    for key, curve in entropy.items():
        _errorbar(entropy_ax, key, curve, colors[key.name], scale)
    if num_classes:
        entropy_ax.axhline(math.log(num_classes), color="black", linestyle=":", linewidth=1,
                           label=f"uniform over {num_classes} classes")
    entropy_ax.set_xlabel(xlabel)
    entropy_ax.set_ylabel("entropy of the selected classes (nats)")
    entropy_ax.grid(alpha=0.3)
    if rare_share is not None and rare_classes:
        for key, curve in rare_share.items():
            _errorbar(rare_ax, key, curve, colors[key.name], scale)
        if num_classes:
            balanced = 100.0 * len(rare_classes) / num_classes
            rare_ax.axhline(balanced, color="black", linestyle=":", linewidth=1)
            rare_ax.annotate("class-balanced", (0.01, balanced), xycoords=("axes fraction", "data"),
                             va="bottom", fontsize="small")
        rare_ax.set_xlabel(xlabel)
        rare_ax.set_ylabel(f"rare classes {_class_list(rare_classes)} among labeled (%)")
        rare_ax.grid(alpha=0.3)
    else:
        rare_ax.set_axis_off()
        rare_ax.text(0.5, 0.5, "no rare classes given (--rare-classes)", ha="center", va="center",
                     transform=rare_ax.transAxes)
    handles, names = entropy_ax.get_legend_handles_labels()
    figure.legend(handles, names, loc="outside right upper", fontsize="small")
    figure.suptitle(title)
    return figure


def _class_list(classes: Sequence[int]) -> str:
    classes = sorted(classes)
    if classes == list(range(classes[0], classes[-1] + 1)) and len(classes) > 2:
        return f"{classes[0]}-{classes[-1]}"
    return ",".join(str(c) for c in classes)

