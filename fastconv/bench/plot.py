"""``--plot``: the rows' rates as a bar chart, one panel per operator (needs matplotlib,
imported only here and only when a chart is drawn)."""
from __future__ import annotations

import importlib.util
import os

import numpy as np

import fastconv
from fastconv.bench.report import plural
from fastconv.bench.sections import SECTIONS

__all__ = ["plot_series", "plot_rows", "check_plot_target"]

# Bar colours per implementation, the same in every panel.
_PLOT_SERIES = (("fastconv", "fastconv_s", "#1f77b4"), ("NumPy", "numpy_s", "#ff7f0e"),
                ("torch", "torch_s", "#d62728"), ("GEMM ceiling", "gemm_s", "#7f7f7f"))


def plot_series(rows):
    """The bar heights of a plot panel: {implementation: [rate per row or None]}, in the
    rows' unit (GFLOP/s or GB/s) for the same work; implementations that were never
    measured on these rows are left out."""
    series = {}
    for label, attribute, _ in _PLOT_SERIES:
        rates = []
        for row in rows:
            seconds = getattr(row, attribute)
            work = row.flops if row.flops is not None else row.nbytes
            rates.append(None if not seconds else work / seconds / 1e9)
        if any(rate is not None for rate in rates):
            series[label] = rates
    return series


def plot_rows(rows, config, path):
    """Write the ``--plot`` bar chart of `rows` to `path` (any format matplotlib saves).

    One panel per operator, GFLOP/s panels (convolutions) first, then GB/s ones (data
    movement); in each, one group of bars per (layer, batch) with fastconv, NumPy, torch
    and the GEMM ceiling side by side where measured. matplotlib is imported here, not
    with fastconv, and only its object API is used (no pyplot, no global backend change).

    Parameters
    ----------
    rows : list of Row
        As returned by :func:`fastconv.bench.sections.run`.
    config : Config
        The run's configuration (for the title).
    path : str or os.PathLike
        The image file; its suffix picks the format (``.png``, ``.svg``, ``.pdf``...).
    """
    from matplotlib.figure import Figure

    ops = list(dict.fromkeys(row.op for row in rows))
    ops.sort(key=lambda op: next(row.unit for row in rows if row.op == op) != "GFLOP/s")
    # At least this many groups' room per panel, so one or two groups get slim bars.
    slots = max([sum(row.op == op for row in rows) for op in ops] + [6])
    figure = Figure(figsize=(min(30.0, 3.5 + 0.6 * slots), 1.2 + 3.4 * max(1, len(ops))),
                    layout="constrained")
    threads = plural(config.threads, "thread")
    figure.suptitle(f"fastconv {fastconv.__version__} bench: {config.dtype} {config.layout}, "
                    f"{threads}; higher is better")
    axes = figure.subplots(max(1, len(ops)), 1, squeeze=False)[:, 0]
    colours = {label: colour for label, _, colour in _PLOT_SERIES}
    handles = {}
    for ax, op in zip(axes, ops):
        mine = [row for row in rows if row.op == op]
        series = plot_series(mine)
        positions = np.arange(len(mine))
        bar_width = 0.8 / len(series)
        for k, (label, rates) in enumerate(series.items()):
            heights = [np.nan if rate is None else rate for rate in rates]
            handles[label] = ax.bar(positions + (k - (len(series) - 1) / 2) * bar_width,
                                    heights, bar_width, label=label, color=colours[label])
        torch_name = SECTIONS[op].torch_name if op in SECTIONS else ""
        ax.set_title(f"{op}: {mine[0].unit}"
                     + (f" (torch: {torch_name})" if torch_name and config.torch else ""),
                     loc="left")
        ax.set_ylabel(mine[0].unit)
        ax.set_xticks(positions, [f"{row.layer} b{row.batch}" for row in mine],
                      rotation=30, ha="right", rotation_mode="anchor", fontsize="small")
        margin = (slots - len(mine)) / 2
        ax.set_xlim(-0.6 - margin, len(mine) - 0.4 + margin)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    if handles:
        ordered = [label for label, _, _ in _PLOT_SERIES if label in handles]
        axes[0].legend([handles[label] for label in ordered], ordered, loc="upper left",
                       bbox_to_anchor=(1.005, 1.0))
    else:
        axes[0].text(0.5, 0.5, "no rows", ha="center", va="center")
    figure.savefig(path, dpi=100)


def check_plot_target(path, parser):
    """``--plot``: matplotlib importable, the directory there and a format it can save."""
    if importlib.util.find_spec("matplotlib") is None:
        parser.error('--plot needs matplotlib, which is not installed: '
                     'pip install "fastconv[plot]" (or pip install matplotlib)')
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        parser.error(f"--plot: directory {directory!r} does not exist")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix not in formats:
        parser.error(f"--plot: cannot tell the image format of {path!r}; end it in one of "
                     f"{', '.join('.' + name for name in sorted(formats))}")
