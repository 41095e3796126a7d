"""The sections of ``python -m fastconv bench`` and the run over them.

A run is a list of *sections* (``im2col``, ``col2im``, ``conv2d``, ``conv2d_backward``,
``layer``, ``conv1d``, ``conv1d_backward``, ``conv3d``, ``conv3d_backward``,
``space_to_batch``, ``rmac``). A section says
which cases it measures and how to time one case; every case becomes one
:class:`~fastconv.bench.measure.Row` of a single table, so adding a section is writing two
functions and one entry in :data:`SECTIONS`.

For each case fastconv (with a preallocated ``out=`` where it has one) is timed against
its NumPy baseline and, when torch is installed, against torch
(:mod:`fastconv.bench.baselines`); the ``conv2d`` section also times the GEMM ceiling
(:mod:`fastconv.bench.ceiling`). fastconv is called as users call it, ``algorithm="auto"``;
on Winograd-eligible layers the ``conv2d``, ``conv2d_backward`` and ``layer`` sections also
time it with ``algorithm="gemm"`` and ``algorithm="winograd"`` forced
(:mod:`fastconv.bench.algorithms`), in the same round-robin as fastconv and torch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

import fastconv
from fastconv import reference
from fastconv.bench.algorithms import eligible_algorithms, forward_algorithm, input_grad_algorithm
from fastconv.bench.baselines import (
    as_nchw,
    numpy_col2im,
    numpy_conv2d,
    numpy_conv2d_backward,
    numpy_conv3d,
    numpy_conv3d_backward,
    numpy_im2col,
    numpy_rmac,
    numpy_space_to_batch,
    torch_conv1d_backward,
    torch_conv2d_backward,
    torch_conv3d_backward,
    torch_rmac,
    torch_space_to_batch,
)
from fastconv.bench.ceiling import gemm_ceiling
from fastconv.bench.measure import close_result, measure_row
from fastconv.bench.progress import Progress
from fastconv.bench.suite import RMAC_BATCHES, RMAC_MAPS, Case, MapCase, layout_1d, layout_3d
from fastconv.bench.timing import best_time, thread_limits

__all__ = ["conv_inputs", "suite_cases", "space_to_batch_cases", "rmac_cases",
           "bench_im2col", "bench_col2im", "bench_conv2d", "bench_conv2d_backward",
           "bench_layer", "bench_conv1d", "bench_conv1d_backward", "signal_cases",
           "volume_cases", "bench_conv3d", "bench_conv3d_backward",
           "bench_space_to_batch", "bench_rmac", "SPACE_TO_BATCH_BLOCK",
           "Section", "SECTIONS", "run"]


def suite_cases(config):
    """The selected layers at the selected batches, in suite order."""
    return config.layer_cases()


def bench_im2col(case, config):
    """fastconv.im2col (out=) vs :func:`numpy_im2col` vs torch.nn.functional.unfold."""
    layout, args = config.layout, case.window_args()
    x = config.random(case.image_shape(layout))
    cols = np.empty(case.column_shape(layout), dtype=config.dtype)
    torch_fn = None
    if config.torch is not None:
        # torch has one layout: its unfold always reads NCHW and writes NCHW columns.
        x_torch = config.torch.from_numpy(config.random(case.image_shape("NCHW")))
        unfold = config.torch.nn.functional.unfold
        torch_fn = lambda: unfold(x_torch, **args)  # noqa: E731
    return measure_row(
        "im2col", case, config, cols.nbytes,
        lambda: fastconv.im2col(x, layout=layout, out=cols, **args),
        lambda: numpy_im2col(x, layout=layout, **args),
        torch_fn, exact=True)


def bench_col2im(case, config):
    """fastconv.col2im (out=) vs :func:`numpy_col2im` vs torch.nn.functional.fold."""
    layout, args = config.layout, case.window_args()
    size = case.layer.image_size
    cols = config.random(case.column_shape(layout))
    image = np.empty(case.image_shape(layout), dtype=config.dtype)
    torch_fn = None
    if config.torch is not None:
        cols_torch = config.torch.from_numpy(config.random(case.column_shape("NCHW")))
        fold = config.torch.nn.functional.fold
        torch_fn = lambda: fold(cols_torch, size, **args)  # noqa: E731
    return measure_row(
        "col2im", case, config, cols.nbytes,
        lambda: fastconv.col2im(cols, size, layout=layout, out=image, **args),
        lambda: numpy_col2im(cols, size, layout=layout, **args),
        torch_fn, exact=False)


def conv_inputs(config, geom):
    """Input, weight and bias of one conv case in the configured layout, plus the same
    values in torch's NCHW / OIHW as torch tensors (None without torch)."""
    x = config.random(geom.input_shape)
    weight = config.random(geom.weight_shape)
    bias = config.random((geom.out_channels,))
    if config.torch is None:
        return x, weight, bias, None
    if config.layout == "NCHW":
        x_nchw, weight_oihw = x, weight
    else:
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        weight_oihw = np.ascontiguousarray(weight.transpose(3, 2, 0, 1))
    as_tensor = config.torch.from_numpy
    return x, weight, bias, (as_tensor(x_nchw), as_tensor(weight_oihw), as_tensor(bias))


def bench_conv2d(case, config):
    """fastconv.conv2d (out=, with bias) vs :func:`numpy_conv2d` vs
    torch.nn.functional.conv2d, plus the :func:`gemm_ceiling` of the same GEMMs; on
    Winograd-eligible layers also conv2d with algorithm="gemm" and "winograd" forced."""
    layout, args = config.layout, case.conv_args()
    geom = case.geometry(layout)
    x, weight, bias, tensors = conv_inputs(config, geom)
    out = np.empty(geom.output_shape, dtype=config.dtype)
    torch_fn = None
    if tensors is not None:
        conv2d = config.torch.nn.functional.conv2d
        x_t, weight_t, bias_t = tensors
        torch_fn = lambda: conv2d(x_t, weight_t, bias_t, **args)  # noqa: E731
    # Each forced algorithm writes its own buffer: its first result is checked after the
    # others ran.
    forced = {name: partial(fastconv.conv2d, x, weight, bias, layout=layout,
                            out=np.empty_like(out), algorithm=name, **args)
              for name in eligible_algorithms(geom)}
    row = measure_row(
        "conv2d", case, config, geom.column_bytes(config.dtype),
        lambda: fastconv.conv2d(x, weight, bias, layout=layout, out=out, **args),
        lambda: numpy_conv2d(x, weight, bias, layout=layout, **args),
        torch_fn, same=close_result, flops=geom.flops, blas=True,
        gemm_fn=gemm_ceiling(geom, config.dtype, config.threads, config.seed),
        algorithm_fns=forced)
    row.auto_algorithm = forward_algorithm(geom, config.dtype)
    return row


def bench_conv2d_backward(case, config):
    """fastconv.conv2d_backward (all three gradients) vs :func:`numpy_conv2d_backward` vs
    torch's convolution_backward. FLOPs: twice the forward's (input and weight gradients;
    the bias gradient's sum is not counted). On Winograd-eligible layers also with
    algorithm="gemm" and "winograd" forced (it chooses how the input gradient runs; the
    weight gradient is GEMM either way)."""
    layout, args = config.layout, case.conv_args()
    geom = case.geometry(layout)
    x, weight, bias, tensors = conv_inputs(config, geom)
    grad = config.random(geom.output_shape)
    torch_fn = None
    if tensors is not None:
        grad_t = config.torch.from_numpy(as_nchw(grad, layout))
        torch_fn = torch_conv2d_backward(config.torch, grad_t, *tensors, args)
    forced = {name: partial(fastconv.conv2d_backward, grad, x, weight, layout=layout,
                            algorithm=name, **args)
              for name in eligible_algorithms(geom)}
    row = measure_row(
        "conv2d_backward", case, config, geom.column_bytes(config.dtype),
        lambda: fastconv.conv2d_backward(grad, x, weight, layout=layout, **args),
        lambda: numpy_conv2d_backward(grad, x, weight, layout=layout, **args),
        torch_fn, same=close_result, flops=2 * geom.flops, blas=True, algorithm_fns=forced)
    row.auto_algorithm = input_grad_algorithm(geom, config.dtype)
    return row


def bench_layer(case, config):
    """fastconv.Conv2D steady-state forward (out=; the checking call is the warm-up that
    plans and allocates the workspace) vs :func:`numpy_conv2d` with the layer's weights vs
    torch.nn.Conv2d under torch.no_grad(). On Winograd-eligible layers also Conv2D layers
    made with algorithm="gemm" and "winograd" (same weights; a Winograd layer keeps its
    transformed weight between calls)."""
    layout, layer = config.layout, case.layer
    geom = case.geometry(layout)

    def make_layer(algorithm):
        return fastconv.Conv2D(layer.in_channels, layer.out_channels, layer.kernel,
                               stride=layer.stride, padding=layer.padding,
                               groups=layer.groups, layout=layout, dtype=config.dtype,
                               seed=config.seed, algorithm=algorithm)

    conv = make_layer("auto")
    forced = {}
    for name in eligible_algorithms(geom):
        forced_conv = make_layer(name)
        np.copyto(forced_conv.weight, conv.weight)
        np.copyto(forced_conv.bias, conv.bias)
        forced[name] = partial(forced_conv.forward, out=np.empty(geom.output_shape,
                                                                 dtype=config.dtype))
    x = config.random(geom.input_shape)
    out = np.empty(geom.output_shape, dtype=config.dtype)
    torch_fn = None
    torch = config.torch
    if torch is not None:
        module = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel,
                                 stride=layer.stride, padding=layer.padding,
                                 groups=layer.groups, dtype=getattr(torch, config.dtype.name))
        weight = conv.weight if layout == "NCHW" else conv.weight.transpose(3, 2, 0, 1)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            module.bias.copy_(torch.from_numpy(conv.bias))
        x_t = torch.from_numpy(as_nchw(x, layout))

        def torch_fn():
            with torch.no_grad():
                return module(x_t)
    args = case.conv_args()
    row = measure_row(
        "layer", case, config, geom.column_bytes(config.dtype),
        lambda: conv.forward(x, out=out),
        lambda: numpy_conv2d(x, conv.weight, conv.bias, layout=layout, **args),
        torch_fn, same=close_result, flops=geom.flops, blas=True,
        algorithm_fns={name: partial(forward, x) for name, forward in forced.items()})
    row.auto_algorithm = conv.algorithm  # what its last forward ran
    return row


def bench_padding_mode(case, config):
    """fastconv.Conv2D forward (steady state) with padding_mode=config.padding_mode
    ("reflect" unless --padding-mode) vs NumPy (np.pad in that mode, then the unpadded
    :func:`numpy_conv2d`) vs torch.nn.Conv2d(padding_mode=...) under no_grad; the same
    layer with zero padding (same weights) runs round-robin with them: fastconv against
    itself, whose ratio issue 17 wants at most 1.10 (the row's extra: "zeros_s",
    "padding_mode", "mode_vs_zeros"). Layers without padding read no padding: every mode
    runs as "zeros" there."""
    layout, layer, mode = config.layout, case.layer, config.padding_mode
    geom = case.geometry(layout)

    def make_layer(padding_mode):
        return fastconv.Conv2D(layer.in_channels, layer.out_channels, layer.kernel,
                               stride=layer.stride, padding=layer.padding,
                               groups=layer.groups, layout=layout, dtype=config.dtype,
                               seed=config.seed, padding_mode=padding_mode)

    conv, zeros = make_layer(mode), make_layer("zeros")
    x = config.random(geom.input_shape)
    out = np.empty(geom.output_shape, dtype=config.dtype)
    out_zeros = np.empty_like(out)
    (top, bottom), (left, right) = geom.padding
    spatial = ((top, bottom), (left, right))
    widths = ((0, 0), (0, 0)) + spatial if layout == "NCHW" else ((0, 0),) + spatial + ((0, 0),)
    numpy_mode = reference.NUMPY_PAD_MODES[mode]

    def numpy_fn():
        return numpy_conv2d(np.pad(x, widths, mode=numpy_mode), conv.weight, conv.bias,
                            stride=layer.stride, groups=layer.groups, layout=layout)
    torch_fn = None
    torch = config.torch
    if torch is not None:
        module = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel,
                                 stride=layer.stride, padding=layer.padding,
                                 groups=layer.groups, dtype=getattr(torch, config.dtype.name),
                                 padding_mode=mode)
        weight = conv.weight if layout == "NCHW" else conv.weight.transpose(3, 2, 0, 1)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            module.bias.copy_(torch.from_numpy(conv.bias))
        x_t = torch.from_numpy(as_nchw(x, layout))

        def torch_fn():
            with torch.no_grad():
                return module(x_t)
    np.copyto(zeros.weight, conv.weight)
    np.copyto(zeros.bias, conv.bias)
    row = measure_row(
        "padding_mode", case, config, geom.column_bytes(config.dtype),
        lambda: conv.forward(x, out=out), numpy_fn, torch_fn, same=close_result,
        flops=geom.flops, blas=True,
        peer_fns={"zeros": lambda: zeros.forward(x, out=out_zeros)})
    zeros_s = row.extra.pop("zeros_s")
    row.extra.update(padding_mode=mode, zeros_ms=zeros_s * 1e3,
                     mode_vs_zeros=row.fastconv_s / zeros_s)
    row.auto_algorithm = conv.algorithm
    return row


def signal_cases(config):
    """The selected 1-D layers at the selected batches."""
    return config.signal_cases()


def _conv1d_inputs(case, config):
    """x, weight, bias in the configured layout (NCL for NCHW, NLC for NHWC), their
    height-1 NumPy views for the 2-D NumPy baselines, and torch tensors (NCL / OIL) or
    None."""
    layout = layout_1d(config.layout)
    x = config.random(case.image_shape(layout))
    weight = config.random(case.weight_shape(layout))
    bias = config.random((case.layer.out_channels,))
    if layout == "NCL":
        views = (x[:, :, None, :], weight[:, :, None, :])
    else:
        views = (x[:, None], weight[None])
    tensors = None
    if config.torch is not None:
        x_ncl = x if layout == "NCL" else np.ascontiguousarray(x.transpose(0, 2, 1))
        w_oil = weight if layout == "NCL" else np.ascontiguousarray(weight.transpose(2, 1, 0))
        tensors = tuple(config.torch.from_numpy(a) for a in (x_ncl, w_oil, bias))
    return layout, x, weight, bias, views, tensors


def _args_2d(case):
    """stride and padding of the height-1 2-D convolution of a 1-D case."""
    layer = case.layer
    return {"stride": (1, layer.stride), "padding": ((0, 0), (layer.padding, layer.padding))}


def bench_conv1d(case, config):
    """fastconv.conv1d (out=, with bias) vs :func:`numpy_conv2d` on the height-1 views vs
    torch.nn.functional.conv1d."""
    layout, x, weight, bias, (x4, w4), tensors = _conv1d_inputs(case, config)
    args = case.conv_args()
    out = np.empty(case.output_shape(layout), dtype=config.dtype)
    torch_fn = None
    if tensors is not None:
        conv1d = config.torch.nn.functional.conv1d
        x_t, w_t, b_t = tensors
        torch_fn = lambda: conv1d(x_t, w_t, b_t, **args)  # noqa: E731
    layout2 = "NCHW" if layout == "NCL" else "NHWC"
    return measure_row(
        "conv1d", case, config, case.column_elements() * config.dtype.itemsize,
        lambda: fastconv.conv1d(x, weight, bias, layout=layout, out=out, **args),
        lambda: numpy_conv2d(x4, w4, bias, layout=layout2, **_args_2d(case)).reshape(
            out.shape),
        torch_fn, same=close_result, flops=case.flops, blas=True)


def bench_conv1d_backward(case, config):
    """fastconv.conv1d_backward (all three gradients) vs :func:`numpy_conv2d_backward` on
    the height-1 views vs torch's convolution_backward. FLOPs: twice the forward's."""
    layout, x, weight, _, (x4, w4), tensors = _conv1d_inputs(case, config)
    args = case.conv_args()
    grad = config.random(case.output_shape(layout))
    grad4 = grad[:, :, None, :] if layout == "NCL" else grad[:, None]
    torch_fn = None
    if tensors is not None:
        torch_fn = torch_conv1d_backward(
            config.torch, config.torch.from_numpy(
                grad if layout == "NCL" else np.ascontiguousarray(grad.transpose(0, 2, 1))),
            *tensors, args)
    layout2 = "NCHW" if layout == "NCL" else "NHWC"

    def numpy_fn():
        gx, gw, gb = numpy_conv2d_backward(grad4, x4, w4, layout=layout2, **_args_2d(case))
        return gx.reshape(x.shape), gw.reshape(weight.shape), gb

    return measure_row(
        "conv1d_backward", case, config, case.column_elements() * config.dtype.itemsize,
        lambda: tuple(fastconv.conv1d_backward(grad, x, weight, layout=layout, **args)),
        numpy_fn, torch_fn, same=close_result, flops=2 * case.flops, blas=True)


def volume_cases(config):
    """The selected 3-D layers at the selected batches."""
    return config.volume_cases()


def _conv3d_inputs(case, config):
    """x, weight, bias in the configured layout (NCDHW for NCHW, NDHWC for NHWC) and torch
    tensors (NCDHW / OIDHW, in channels_last_3d memory for NDHWC) or None."""
    layout = layout_3d(config.layout)
    x = config.random(case.image_shape(layout))
    weight = config.random(case.weight_shape(layout))
    bias = config.random((case.layer.out_channels,))
    tensors = None
    if config.torch is not None:
        torch = config.torch
        if layout == "NCDHW":
            tensors = tuple(torch.from_numpy(a) for a in (x, weight, bias))
        else:  # the same memory, seen by torch as NCDHW / OIDHW channels_last_3d tensors
            tensors = (torch.from_numpy(x).permute(0, 4, 1, 2, 3),
                       torch.from_numpy(np.ascontiguousarray(weight.transpose(4, 0, 1, 2, 3)))
                       .permute(0, 4, 1, 2, 3), torch.from_numpy(bias))
    return layout, x, weight, bias, tensors


def bench_conv3d(case, config):
    """fastconv.conv3d (out=, with bias) vs :func:`numpy_conv3d` vs
    torch.nn.functional.conv3d (channels_last_3d for NDHWC)."""
    layout, x, weight, bias, tensors = _conv3d_inputs(case, config)
    args = case.conv_args()
    out = np.empty(case.output_shape(layout), dtype=config.dtype)
    torch_fn = None
    if tensors is not None:
        conv3d = config.torch.nn.functional.conv3d
        x_t, w_t, b_t = tensors
        torch_fn = lambda: conv3d(x_t, w_t, b_t, **args)  # noqa: E731
    return measure_row(
        "conv3d", case, config, case.column_elements() * config.dtype.itemsize,
        lambda: fastconv.conv3d(x, weight, bias, layout=layout, out=out, **args),
        lambda: numpy_conv3d(x, weight, bias, layout=layout, **args),
        torch_fn, same=close_result, flops=case.flops, blas=True)


def bench_conv3d_backward(case, config):
    """fastconv.conv3d_backward (all three gradients) vs :func:`numpy_conv3d_backward` vs
    torch's convolution_backward. FLOPs: twice the forward's."""
    layout, x, weight, _, tensors = _conv3d_inputs(case, config)
    args = case.conv_args()
    grad = config.random(case.output_shape(layout))
    torch_fn = None
    if tensors is not None:
        grad_t = config.torch.from_numpy(grad)
        if layout == "NDHWC":
            grad_t = grad_t.permute(0, 4, 1, 2, 3)
        torch_fn = torch_conv3d_backward(config.torch, grad_t, *tensors, args)
    return measure_row(
        "conv3d_backward", case, config, case.column_elements() * config.dtype.itemsize,
        lambda: tuple(fastconv.conv3d_backward(grad, x, weight, layout=layout, **args)),
        lambda: numpy_conv3d_backward(grad, x, weight, layout=layout, **args),
        torch_fn, same=close_result, flops=2 * case.flops, blas=True)


def rmac_cases(config):
    """:data:`~fastconv.bench.suite.RMAC_MAPS` at the configured batches (default
    :data:`~fastconv.bench.suite.RMAC_BATCHES`)."""
    return [MapCase(fmap, batch) for fmap in RMAC_MAPS
            for batch in (config.batches or RMAC_BATCHES)]


def bench_rmac(case, config):
    """fastconv.rmac vs :func:`numpy_rmac` vs cirtorch's algorithm in torch; the rate is
    GB/s of the feature map, and the row's ``descriptors_per_s`` (images per second) goes
    below the table."""
    layout = config.layout
    x = config.random(case.image_shape(layout))
    torch_fn = None
    if config.torch is not None:
        torch_fn = torch_rmac(config.torch, config.torch.from_numpy(as_nchw(x, layout)))
    row = measure_row("rmac", case, config, x.nbytes, lambda: fastconv.rmac(x, layout=layout),
                      lambda: numpy_rmac(x, layout=layout), torch_fn)
    for name, seconds in (("fastconv", row.fastconv_s), ("numpy", row.numpy_s),
                          ("torch", row.torch_s)):
        row.extra[f"{name}_descriptors_per_s"] = (None if seconds is None
                                                  else case.batch / seconds)
    return row


# Block of the space_to_batch section (TensorFlow's atrous convolutions use their rate).
SPACE_TO_BATCH_BLOCK = 2


def space_to_batch_cases(config):
    """The selected layers at their largest batch (every requested batch with --batch): a
    bandwidth benchmark wants big inputs, and one row per layer keeps the section short."""
    if config.batches:
        return config.layer_cases()
    return [Case(layer, max(layer.batches)) for layer in config.layers]


def bench_space_to_batch(case, config):
    """fastconv.space_to_batch (out=) of the layer's input batch, block 2 (odd sizes padded
    by one pixel bottom/right) vs :func:`numpy_space_to_batch` vs torch's pad + permute;
    then ``numpy.copyto`` of the same number of bytes, the memory-copy peer:
    ``extra["copy_ratio"]`` = copy time / fastconv time (1.0: copy speed)."""
    layout, block = config.layout, SPACE_TO_BATCH_BLOCK
    height, width = case.layer.image_size
    padding = ((0, -height % block), (0, -width % block))
    x = config.random(case.image_shape(layout))
    batch, channels = block * block * case.batch, case.layer.in_channels
    rows, cols = -(-height // block), -(-width // block)
    shape = ((batch, channels, rows, cols) if layout == "NCHW"
             else (batch, rows, cols, channels))
    blocks = np.empty(shape, dtype=config.dtype)
    torch_fn = None
    if config.torch is not None:
        x_torch = config.torch.from_numpy(config.random(case.image_shape("NCHW")))
        torch_fn = lambda: torch_space_to_batch(config.torch, x_torch, block, padding)  # noqa: E731
    row = measure_row(
        "space_to_batch", case, config, blocks.nbytes,
        lambda: fastconv.space_to_batch(x, block, padding, layout=layout, out=blocks),
        lambda: numpy_space_to_batch(x, block, padding, layout), torch_fn, exact=True)
    source, target = np.ones_like(blocks), np.empty_like(blocks)
    copy_s = best_time(lambda: np.copyto(target, source), config.timing)
    row.extra.update({"copy_ms": copy_s * 1e3, "copy_gbps": blocks.nbytes / copy_s / 1e9,
                      "copy_ratio": copy_s / row.fastconv_s})
    return row


@dataclass(frozen=True)
class Section:
    """A group of rows: `cases(config)` lists what to time, `run(case, config)` gives a Row."""

    name: str
    cases: Callable
    run: Callable
    description: str = ""
    torch_name: str = ""  # what torch runs, for the table's header


SECTIONS = {section.name: section for section in (
    Section("im2col", suite_cases, bench_im2col,
            "fastconv.im2col vs NumPy as_strided vs torch unfold", "unfold"),
    Section("col2im", suite_cases, bench_col2im,
            "fastconv.col2im vs NumPy strided adds vs torch fold", "fold"),
    Section("conv2d", suite_cases, bench_conv2d,
            "fastconv.conv2d vs NumPy as_strided im2col + matmul vs torch conv2d, "
            "and the bare-GEMM ceiling; algorithm='gemm' and 'winograd' on 3x3 stride-1 "
            "layers", "conv2d"),
    Section("conv2d_backward", suite_cases, bench_conv2d_backward,
            "fastconv.conv2d_backward vs NumPy matmuls + col2im vs torch "
            "convolution_backward; algorithm='gemm' and 'winograd' on 3x3 stride-1 layers",
            "convolution_backward"),
    Section("layer", suite_cases, bench_layer,
            "fastconv.Conv2D forward (steady state) vs torch.nn.Conv2d (no_grad); "
            "algorithm='gemm' and 'winograd' on 3x3 stride-1 layers", "nn.Conv2d"),
    Section("padding_mode", suite_cases, bench_padding_mode,
            "fastconv.Conv2D forward with padding_mode='reflect' (--padding-mode) vs the "
            "same layer with zero padding, vs NumPy np.pad + matmul and torch.nn.Conv2d "
            "with that padding_mode", "nn.Conv2d"),
    Section("conv1d", signal_cases, bench_conv1d,
            "fastconv.conv1d vs NumPy as_strided im2col + matmul vs torch conv1d, on the 1-D "
            "layers (issue 17's targets, or --conv1d)", "conv1d"),
    Section("conv1d_backward", signal_cases, bench_conv1d_backward,
            "fastconv.conv1d_backward vs NumPy matmuls + col2im vs torch "
            "convolution_backward, on the 1-D layers", "convolution_backward"),
    Section("conv3d", volume_cases, bench_conv3d,
            "fastconv.conv3d vs NumPy per-tap matmuls vs torch conv3d (channels_last_3d for "
            "NHWC), on the 3-D layers (issue 17's target, or --conv3d)", "conv3d"),
    Section("conv3d_backward", volume_cases, bench_conv3d_backward,
            "fastconv.conv3d_backward vs NumPy per-tap matmuls vs torch "
            "convolution_backward, on the 3-D layers", "convolution_backward"),
    Section("space_to_batch", space_to_batch_cases, bench_space_to_batch,
            "fastconv.space_to_batch (block 2) of each layer's input vs NumPy pad + transpose "
            "vs torch pad + permute, and numpy.copyto of the same bytes", "pad+permute"),
    Section("rmac", rmac_cases, bench_rmac,
            "fastconv.rmac vs per-region NumPy slicing vs cirtorch's per-region torch "
            "max_pool2d, on ResNet-50 / VGG-16 final feature maps", "max_pool2d"),
)}


def run(config, progress=True):
    """Run the configured sections; returns the rows in table order.

    fastconv, torch and BLAS (the NumPy baselines' matmuls, the GEMM ceiling) all use
    ``config.threads`` threads while it runs; the previous settings are restored afterwards.
    """
    work = [(SECTIONS[op], case) for op in config.ops for case in SECTIONS[op].cases(config)]
    reporter = Progress(len(work)) if progress else None
    rows = []
    try:
        with thread_limits(config.threads, config.torch):
            for section, case in work:
                if reporter:
                    reporter.show(f"{section.name} {case}")
                rows.append(section.run(case, config))
    finally:
        if reporter:
            reporter.close()
    return rows
