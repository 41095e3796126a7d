"""What a run prints and saves: the table of rows with its header and summary lines, and
the ``--json`` document.

Rates: the data-movement sections (im2col, col2im) report GB/s of the column matrix; the
convolution sections report GFLOP/s (``ConvGeometry.flops``, twice that for the backward
pass, which computes the input and the weight gradients). ``GEMM eff`` = ceiling time /
fastconv time (:mod:`fastconv.bench.ceiling`).

fastconv's column is ``algorithm="auto"``. Below the table, the Winograd-eligible rows of
the convolution sections get a second, indented table: ``auto`` (what it ran),
``algorithm="gemm"``, ``algorithm="winograd"`` and torch side by side, with their ratios
(:mod:`fastconv.bench.algorithms`).
"""
from __future__ import annotations

import math

import numpy as np

import fastconv
from fastconv.bench.algorithms import ALGORITHMS
from fastconv.bench.sections import SECTIONS
from fastconv.bench.timing import load_average

__all__ = ["geometric_mean", "summary", "format_ms", "format_ratio", "plural",
           "table_lines", "COLUMNS", "ALGORITHM_COLUMNS", "algorithm_lines", "PADDING_COLUMNS",
           "padding_mode_lines", "format_table",
           "to_json"]


def geometric_mean(values):
    """Geometric mean of positive numbers, None for an empty list."""
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(rows):
    """Geometric means per operator:
    {op: {"vs_numpy": x, "vs_torch": x, "gemm_efficiency": x, "winograd_vs_gemm": x,
    "algorithm_gemm_vs_torch": x, "algorithm_winograd_vs_torch": x}} (None where not
    measured; the last three over the Winograd-eligible rows)."""
    result = {}
    for op in dict.fromkeys(row.op for row in rows):
        mine = [row for row in rows if row.op == op]
        result[op] = {"vs_numpy": geometric_mean([r.speedup_numpy for r in mine]),
                      "vs_torch": geometric_mean([r.speedup_torch for r in mine]),
                      "gemm_efficiency": geometric_mean([r.gemm_efficiency for r in mine]),
                      "winograd_vs_gemm": geometric_mean([r.winograd_vs_gemm for r in mine])}
        for name in ALGORITHMS:
            result[op][f"algorithm_{name}_vs_torch"] = geometric_mean(
                [r.algorithm_speedup_torch(name) for r in mine])
    return result


def format_ms(seconds):
    """Seconds as milliseconds for a table cell ("-": not measured)."""
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _times(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x"


def _rate(value):
    return "-" if value is None else f"{value:.1f}"


def format_ratio(value):
    """A ratio for a table cell ("-": not measured)."""
    return "-" if value is None else f"{value:.2f}"


def plural(count, noun):
    """"1 thread", "2 threads"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def table_lines(columns, rows, left_aligned=()):
    """A plain-text table: the column names, a rule of dashes, one line per row of cells.

    Each column is as wide as its widest cell; the columns named in `left_aligned` are
    padded on the right, the others (numbers) on the left; columns are two spaces apart.
    """
    widths = [max(len(cells[i]) for cells in [columns, *rows]) for i in range(len(columns))]

    def render(cells):
        return "  ".join(cell.ljust(width) if name in left_aligned else cell.rjust(width)
                         for name, cell, width in zip(columns, cells, widths)).rstrip()

    return [render(columns), render(["-" * w for w in widths])] + [render(c) for c in rows]


# "vs torch" stays the last column: scripts read it as the line's last field.
COLUMNS = ("operator", "layer", "batch", "shape", "fastconv ms", "GB/s", "GFLOP/s",
           "NumPy ms", "torch ms", "GEMM ms", "GEMM eff", "vs NumPy", "vs torch")
_LEFT_ALIGNED = {"operator", "layer", "shape"}


def _cells(row):
    flag = "" if row.matches_numpy in (True, None) else " !"
    return (row.op + flag, row.layer, str(row.batch), "x".join(map(str, row.shape)),
            format_ms(row.fastconv_s), _rate(row.gbps), _rate(row.gflops),
            format_ms(row.numpy_s), format_ms(row.torch_s), format_ms(row.gemm_s),
            format_ratio(row.gemm_efficiency), _times(row.speedup_numpy),
            _times(row.speedup_torch))


_CONV_SECTIONS = ("conv2d", "conv2d_backward", "layer", "padding_mode")

PADDING_COLUMNS = ("layer", "batch", "mode", "algorithm", "mode ms", "zeros ms",
                   "mode vs zeros")


def padding_mode_lines(rows):
    """The padding_mode section's comparison with zero padding (no lines without it):
    per layer the layer with the mode and with zeros, and their ratio (issue 17: at most
    1.10), then the geometric mean and the largest ratio."""
    padded = [row for row in rows if "mode_vs_zeros" in row.extra]
    if not padded:
        return []
    mode = padded[0].extra["padding_mode"]
    lines = [f"padding_mode={mode!r} vs zeros (the same Conv2D with zero padding, timed "
             f"round-robin with the rows above; mode vs zeros = mode ms / zeros ms):"]
    cells = [(row.layer, str(row.batch), row.extra["padding_mode"], row.auto_algorithm or "-",
              format_ms(row.fastconv_s), f"{row.extra['zeros_ms']:.3f}",
              format_ratio(row.extra["mode_vs_zeros"])) for row in padded]
    lines += [_INDENT + line for line in table_lines(PADDING_COLUMNS, cells,
                                                     {"layer", "mode", "algorithm"})]
    ratios = [row.extra["mode_vs_zeros"] for row in padded]
    lines.append(f"geometric mean {mode} vs zeros: {format_ratio(geometric_mean(ratios))}, "
                 f"largest {format_ratio(max(ratios))}")
    return lines

# The algorithm= table below the main one, one line per Winograd-eligible row.
ALGORITHM_COLUMNS = ("operator", "layer", "batch", "auto", "auto ms", "gemm ms",
                     "winograd ms", "torch ms", "gemm vs torch", "winograd vs torch",
                     "winograd vs gemm")
# Indented, so the lines of the table above stay the only ones that start with an operator.
_INDENT = "  "


def _algorithm_cells(row):
    return (row.op, row.layer, str(row.batch), row.auto_algorithm or "-",
            format_ms(row.fastconv_s), format_ms(row.algorithm_s.get("gemm")),
            format_ms(row.algorithm_s.get("winograd")), format_ms(row.torch_s),
            _times(row.algorithm_speedup_torch("gemm")),
            _times(row.algorithm_speedup_torch("winograd")), _times(row.winograd_vs_gemm))


def algorithm_lines(rows):
    """The ``algorithm=`` table of the Winograd-eligible rows and its geometric means (no
    lines when no row has forced-algorithm times)."""
    eligible = [row for row in rows if row.algorithm_s]
    if not eligible:
        return []
    lines = [
        "algorithm= on the Winograd-eligible layers (3x3, stride 1, dilation 1, not "
        "depthwise), timed round-robin with fastconv and torch above:",
        "auto = what algorithm='auto' (the fastconv column above) ran, for conv2d_backward "
        "its input gradient; gemm / winograd = that algorithm forced (layer: a Conv2D made "
        "with it); vs torch = torch ms / its ms; winograd vs gemm = gemm ms / winograd ms.",
    ]
    lines += [_INDENT + line for line in table_lines(
        ALGORITHM_COLUMNS, [_algorithm_cells(row) for row in eligible],
        {"operator", "layer", "auto"})]
    lines.append("")
    for op, means in summary(eligible).items():
        lines.append(f"geometric mean winograd vs gemm {op}: {_times(means['winograd_vs_gemm'])}"
                     f"; vs torch: gemm {_times(means['algorithm_gemm_vs_torch'])}, winograd "
                     f"{_times(means['algorithm_winograd_vs_torch'])}")
    return lines


def _header(config):
    """The lines above the table: versions, threads, and what the columns measure."""
    torch = config.torch
    threads = plural(config.threads, "thread")
    names = "/".join(SECTIONS[op].torch_name for op in config.ops if SECTIONS[op].torch_name)
    torch_text = (f"torch {torch.__version__} ({names}, NCHW, {threads})"
                  if torch is not None else "torch: not used")
    lines = [f"fastconv {fastconv.__version__}: {config.dtype} {config.layout}, {threads}; "
             f"NumPy {np.__version__} baselines (their matmuls' BLAS at {threads}); "
             f"{torch_text}"]
    if any(op in _CONV_SECTIONS for op in config.ops):
        once = config.timing.once_s
        blas = "sgemm" if config.dtype == np.float32 else "dgemm"
        lines += [
            "Rates: GB/s of the column matrix for im2col/col2im; GFLOP/s = ConvGeometry.flops"
            " / fastconv time for conv2d and layer, 2x flops for conv2d_backward.",
            "NumPy conv: as_strided im2col + one matmul per group in the configured layout "
            "(backward: + col2im by strided adds).",
            "GEMM ms: bare scipy " + blas + ", ConvGeometry.gemm_shape (M, K, N) per image and "
            f"group, BLAS at {threads}, cache-warm operands; GEMM eff = GEMM ms / fastconv ms.",
            "Conv timing: fastconv (algorithm='auto'; on 3x3 stride-1 layers also 'gemm' and "
            "'winograd', table below) and torch round-robin, then NumPy, then the GEMM "
            "ceiling, each once the previous BLAS threads idle"
            + (f"; a call over {once:g} s is timed once." if once is not None else "."),
        ]
    if any(op in ("conv1d", "conv1d_backward") for op in config.ops):
        layout = "NCL" if config.layout == "NCHW" else "NLC"
        lines.append(f"conv1d: {layout} (weight {'OIL' if layout == 'NCL' else 'LIO'}); "
                     "GFLOP/s = 2 x multiply-adds / fastconv time (backward: 2x that); "
                     "NumPy = the conv2d baseline on height-1 views; torch = F.conv1d and "
                     "convolution_backward on NCL.")
    if any(op in ("conv3d", "conv3d_backward") for op in config.ops):
        layout = "NCDHW" if config.layout == "NCHW" else "NDHWC"
        lines.append(f"conv3d: {layout} (weight {'OIDHW' if layout == 'NCDHW' else 'DHWIO'}); "
                     "GFLOP/s = 2 x multiply-adds / fastconv time (backward: 2x that); "
                     "NumPy = one matmul per kernel tap; torch = F.conv3d and "
                     "convolution_backward (channels_last_3d for NDHWC).")
    if "rmac" in config.ops:
        lines.append("rmac: GB/s of the feature map; NumPy = one slice-and-max per region; "
                     "torch = cirtorch's rmac (F.max_pool2d per region); descriptors/s below.")
    return "\n".join(lines)


def format_table(rows, config):
    """The printed table: header line, one line per row, geometric-mean speed-ups."""
    lines = [_header(config), ""]
    lines += table_lines(COLUMNS, [_cells(row) for row in rows], _LEFT_ALIGNED)
    lines.append("")
    for op, means in summary(rows).items():
        line = (f"geometric mean speed-up {op}: vs torch {_times(means['vs_torch'])}, "
                f"vs NumPy {_times(means['vs_numpy'])}")
        if means["gemm_efficiency"] is not None:
            line += f"; GEMM efficiency {format_ratio(means['gemm_efficiency'])}"
        lines.append(line)
    for row in rows:
        if "fastconv_descriptors_per_s" in row.extra:
            rates = ", ".join(f"{name} {row.extra[f'{name}_descriptors_per_s']:.0f}"
                              for name in ("fastconv", "numpy", "torch")
                              if row.extra.get(f"{name}_descriptors_per_s") is not None)
            lines.append(f"{row.op} descriptors/s, {row.layer} batch {row.batch}: {rates}")
    copy_ratios = [row.extra["copy_ratio"] for row in rows if "copy_ratio" in row.extra]
    if copy_ratios:
        lines.append(f"space_to_batch bandwidth / numpy.copyto bandwidth of the same bytes "
                     f"(geometric mean): {format_ratio(geometric_mean(copy_ratios))}, from "
                     f"{format_ratio(min(copy_ratios))} to {format_ratio(max(copy_ratios))}")
    algorithms = algorithm_lines(rows)
    if algorithms:
        lines += [""] + algorithms
    padding = padding_mode_lines(rows)
    if padding:
        lines += [""] + padding
    if any(row.matches_numpy is False for row in rows):
        lines.append("! fastconv's result (algorithm='auto' or, on 3x3 stride-1 layers, one "
                     "forced) differs from the NumPy baseline on these rows")
    return "\n".join(lines)


def to_json(rows, config):
    """The ``--json`` document: configuration, environment, rows and summary."""
    from fastconv.info import build_info
    return {
        "config": {
            "layout": config.layout, "dtype": str(config.dtype), "threads": config.threads,
            "batches": list(config.batches) if config.batches else None,
            "layers": [layer.name for layer in config.layers], "ops": list(config.ops),
            "padding_mode": config.padding_mode,
            "timing": vars(config.timing).copy(),
            "torch": None if config.torch is None else config.torch.__version__,
            "load_average": load_average(),
        },
        "environment": build_info(),
        "rows": [row.as_dict() for row in rows],
        "summary": summary(rows),
    }
