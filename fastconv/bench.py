"""Benchmark runner behind ``python -m fastconv bench``.

The run is a list of *sections* (``im2col``, ``col2im``, ``conv2d``, ``conv2d_backward``,
``layer``, ``space_to_batch``; later rmac). A section says which cases it measures and how to
time one case; every case becomes one :class:`Row` of a single table, so adding a section
is writing two functions and one entry in :data:`SECTIONS`.

Shapes come from the layer suite ``fastconv/data/layers.json`` (ResNet-50, VGG-16,
MobileNet layers). For each case fastconv (with a preallocated ``out=`` where it has one)
is timed against a plain NumPy baseline written here and, when torch is installed, against
torch. Times are the best of a few repeats with ``time.perf_counter`` after a warm-up call
(the call that checks fastconv's result against NumPy's doubles as the warm-up), sampled
round-robin so a burst of load hits every implementation alike. In the convolution
sections NumPy's matmuls and the GEMM ceiling run multithreaded BLAS, whose idle workers
spin for ~0.1 s after each call and would steal cores from the next timing: there fastconv
and torch are sampled round-robin first, then NumPy, then the ceiling, each phase once the
previous one's threads are idle.

Rates: the data-movement sections (im2col, col2im) report GB/s of the column matrix; the
convolution sections report GFLOP/s (``ConvGeometry.flops``, twice that for the backward
pass, which computes the input and the weight gradients). The ``conv2d`` section also
times a *GEMM ceiling*: the bare BLAS ``sgemm``/``dgemm`` calls of the convolution (the
``ConvGeometry.gemm_shape`` M, K, N, once per image and group) with no im2col;
``GEMM eff`` = ceiling time / fastconv time.

The NumPy convolution baselines are the lecture's method (``as_strided`` im2col plus one
matmul per group), written natively for each layout. They can take seconds on the big
layers, so a call slower than ``Timing.once_s`` (1 s by default) is timed once (its first
call: the checking call, or torch's and the ceiling's warm-up) instead of sampled.

Used from Python::

    from fastconv import bench
    config = bench.make_config(layers=["resnet50.res4.3x3"], batches=[1])
    rows = bench.run(config)
    print(bench.format_table(rows, config))
"""
from __future__ import annotations

import argparse
import fnmatch
import gc
import importlib.resources
import importlib.util
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import fastconv
from fastconv.geometry import ConvGeometry
from fastconv import reference
from fastconv.reference import padding_pairs, pair, window_count
from fastconv.threads import blas_limit

__all__ = [
    "Layer", "Case", "Timing", "Config", "Row", "Section", "SECTIONS",
    "load_layers", "select_layers", "make_config", "run", "format_table",
    "numpy_im2col", "numpy_col2im", "numpy_conv2d", "numpy_conv2d_backward", "gemm_ceiling",
    "FeatureMap", "MapCase", "RMAC_MAPS", "rmac_cases", "numpy_rmac", "torch_rmac",
    "best_time", "best_times", "add_arguments", "main", "parse_conv", "plot_rows",
    "plot_series",
]

LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float64")
DEFAULT_BATCHES = (1, 8)


class BenchError(ValueError):
    """A bad benchmark request (unknown layer, bad batch...), reported as one line."""


# --------------------------------------------------------------------------- layer suite

@dataclass(frozen=True)
class Layer:
    """One convolution layer of the suite (square kernels, symmetric padding).

    Images are `size` × `size`, or `size` (height) × `width` when `width` is given: the
    suite's layers are square, a user's ``--conv`` layer need not be.
    """

    name: str
    in_channels: int
    size: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    batches: tuple = DEFAULT_BATCHES
    width: Optional[int] = None  # None: square, `size` wide

    @classmethod
    def from_dict(cls, entry):
        """A Layer from one entry of layers.json (an optional "width" makes it non-square)."""
        return cls(
            name=entry["name"], in_channels=int(entry["in_channels"]), size=int(entry["size"]),
            out_channels=int(entry["out_channels"]), kernel=int(entry["kernel"]),
            stride=int(entry.get("stride", 1)), padding=int(entry.get("padding", 0)),
            groups=int(entry.get("groups", 1)),
            batches=tuple(int(b) for b in entry.get("batches", DEFAULT_BATCHES)),
            width=int(entry["width"]) if entry.get("width") is not None else None)

    @property
    def image_size(self):
        """(height, width) of the input image."""
        return (self.size, self.size if self.width is None else self.width)

    @property
    def out_image_size(self):
        """(height, width) of the output: the sliding window's positions on each axis."""
        return tuple((extent + 2 * self.padding - self.kernel) // self.stride + 1
                     for extent in self.image_size)

    @property
    def out_size(self):
        """Output height (= width for a square layer) of the sliding window."""
        return self.out_image_size[0]


def load_layers():
    """All layers of ``fastconv/data/layers.json``, in file order."""
    text = importlib.resources.files("fastconv").joinpath("data", "layers.json").read_text(
        encoding="utf-8")
    return [Layer.from_dict(entry) for entry in json.loads(text)["layers"]]


def select_layers(layers, patterns):
    """Layers whose name equals, or matches as a shell glob, one of `patterns` (all if None).

    An unknown pattern raises :class:`BenchError` listing the valid names.
    """
    if not patterns:
        return list(layers)
    names = [layer.name for layer in layers]
    unknown = [p for p in patterns if not fnmatch.filter(names, p)]
    if unknown:
        raise BenchError(f"unknown layer {', '.join(map(repr, unknown))}; "
                         f"valid names: {', '.join(names)}")
    return [layer for layer in layers if any(fnmatch.fnmatchcase(layer.name, p)
                                             for p in patterns)]


# The fields of ``--conv N,C,H,W,O,k,s,p``: (letter, meaning, smallest value).
CONV_FIELDS = (("N", "batch", 1), ("C", "in_channels", 1), ("H", "height", 1),
               ("W", "width", 1), ("O", "out_channels", 1), ("k", "kernel", 1),
               ("s", "stride", 1), ("p", "padding", 0))


def parse_conv(text):
    """A user's layer from a ``--conv N,C,H,W,O,k,s,p`` value.

    Parameters
    ----------
    text : str
        Eight comma-separated integers: batch N, input channels C, image height H and
        width W, output channels O, square kernel k, stride s, symmetric padding p
        (p ≥ 0, the others ≥ 1).

    Returns
    -------
    Layer
        Named ``user.N4.C3.H32.W32.O16.k3.s1.p1`` (for ``4,3,32,32,16,3,1,1``), run at
        batch N unless ``--batch`` says otherwise.

    Raises
    ------
    BenchError
        Not eight fields, a field that is not an integer or is too small (the message names
        it), or a kernel larger than the padded image.
    """
    parts = [part.strip() for part in str(text).split(",")]
    letters = ",".join(letter for letter, _, _ in CONV_FIELDS)
    if len(parts) != len(CONV_FIELDS):
        raise BenchError(f"expected {len(CONV_FIELDS)} comma-separated integers {letters}, "
                         f"got {len(parts)} in {text!r}")
    values = {}
    for part, (letter, meaning, least) in zip(parts, CONV_FIELDS):
        try:
            value = int(part)
        except ValueError:
            value = None
        if value is None or value < least:
            raise BenchError(f"field {letter} ({meaning}) must be an integer >= {least}, "
                             f"got {part!r} in {text!r}")
        values[letter] = value
    kernel, padding = values["k"], values["p"]
    for letter in ("H", "W"):
        if values[letter] + 2 * padding < kernel:
            raise BenchError(f"kernel k={kernel} is larger than the padded image "
                             f"({letter}={values[letter]} + 2*p={2 * padding}) in {text!r}")
    name = "user." + ".".join(f"{letter}{values[letter]}" for letter, _, _ in CONV_FIELDS)
    return Layer(name=name, in_channels=values["C"], size=values["H"],
                 out_channels=values["O"], kernel=kernel, stride=values["s"],
                 padding=padding, batches=(values["N"],), width=values["W"])


def _conv_argument(text):
    """argparse type of ``--conv``: :func:`parse_conv`, its errors as argparse's."""
    try:
        return parse_conv(text)
    except BenchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclass(frozen=True)
class Case:
    """One layer at one batch size, the unit every section times."""

    layer: Layer
    batch: int

    def image_shape(self, layout):
        n, c = self.batch, self.layer.in_channels
        h, w = self.layer.image_size
        return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)

    def column_shape(self, layout):
        k, (oh, ow) = self.layer.kernel, self.layer.out_image_size
        rows = self.layer.in_channels * k * k
        return (self.batch, rows, oh * ow) if layout == "NCHW" else (self.batch, oh * ow, rows)

    def window_args(self):
        """Keyword arguments shared by every im2col/col2im implementation."""
        layer = self.layer
        return {"kernel_size": layer.kernel, "stride": layer.stride, "padding": layer.padding}

    def conv_args(self):
        """Keyword arguments shared by every conv2d / conv2d_backward implementation."""
        layer = self.layer
        return {"stride": layer.stride, "padding": layer.padding, "groups": layer.groups}

    def geometry(self, layout):
        """The layer's :class:`~fastconv.geometry.ConvGeometry` at this batch size."""
        layer = self.layer
        return ConvGeometry(self.image_shape(layout), layer.out_channels, layer.kernel,
                            layer.stride, layer.padding, groups=layer.groups, layout=layout)


# --------------------------------------------------------------------------- NumPy baselines

def _padded_view_geometry(x, kernel, stride, padding, dilation, nchw):
    """What an ``as_strided`` window view of a batch needs: the batch zero-padded on its
    spatial axes (x itself when there is no padding), its sizes (n, c, h, w) and byte
    strides (n, c, h, w) whatever the layout, and the window counts (oh, ow)."""
    kh, kw = pair(kernel)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    spatial = padding_pairs(padding)
    if any(p for side in spatial for p in side):
        width = ((0, 0), (0, 0)) + spatial if nchw else ((0, 0),) + spatial + ((0, 0),)
        x = np.pad(x, width)
    if nchw:
        n, c, h, w = x.shape
        stride_n, stride_c, stride_h, stride_w = x.strides
    else:
        n, h, w, c = x.shape
        stride_n, stride_h, stride_w, stride_c = x.strides
    return (x, (n, c, h, w), (stride_n, stride_c, stride_h, stride_w),
            (window_count(h, kh, sh, dh), window_count(w, kw, sw, dw)))


def numpy_im2col(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW"):
    """The NumPy baseline for im2col (batched 4-D input): an ``as_strided`` view of the
    zero-padded input, copied (as ``np.ascontiguousarray`` does) into fastconv's column
    layout.

    NCHW: (N, C, H, W) → (N, C·kh·kw, OH·OW); NHWC: (N, H, W, C) → (N, OH·OW, kh·kw·C).
    """
    nchw = layout.upper() == "NCHW"
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    x, (n, c, _, _), (stride_n, stride_c, stride_h, stride_w), (oh, ow) = (
        _padded_view_geometry(x, (kh, kw), stride, padding, dilation, nchw))
    if nchw:
        shape = (n, c, kh, kw, oh, ow)
        strides = (stride_n, stride_c, dh * stride_h, dw * stride_w, sh * stride_h, sw * stride_w)
        columns = (n, c * kh * kw, oh * ow)
    else:
        shape = (n, oh, ow, kh, kw, c)
        strides = (stride_n, sh * stride_h, sw * stride_w, dh * stride_h, dw * stride_w, stride_c)
        columns = (n, oh * ow, kh * kw * c)
    windows = np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)
    # Always a copy: np.ascontiguousarray would hand back the view itself (no work at all)
    # for an unpadded 1x1 stride-1 kernel, whose windows are already C-contiguous.
    return windows.copy(order="C").reshape(columns)


def numpy_col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1,
                 layout="NCHW"):
    """The NumPy baseline for col2im (batched 3-D columns): for each kernel offset (i, j),
    add the strided slice of columns into a zero-padded image, then crop the padding.

    (``np.add.at`` would be the literal scatter-add, but it is far too slow to compare.)
    """
    nchw = layout.upper() == "NCHW"
    h, w = pair(output_size)
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (top, bottom), (left, right) = padding_pairs(padding)
    hp, wp = h + top + bottom, w + left + right
    oh, ow = window_count(hp, kh, sh, dh), window_count(wp, kw, sw, dw)
    n = cols.shape[0]
    if nchw:
        c = cols.shape[1] // (kh * kw)
        patches = cols.reshape(n, c, kh, kw, oh, ow)
        padded = np.zeros((n, c, hp, wp), dtype=cols.dtype)
    else:
        c = cols.shape[2] // (kh * kw)
        patches = cols.reshape(n, oh, ow, kh, kw, c)
        padded = np.zeros((n, hp, wp, c), dtype=cols.dtype)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        for j in range(kw):
            columns = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            if nchw:
                padded[:, :, rows, columns] += patches[:, :, i, j]
            else:
                padded[:, rows, columns, :] += patches[:, :, :, i, j, :]
    if not (top or bottom or left or right):
        return padded
    if nchw:
        return np.ascontiguousarray(padded[:, :, top:top + h, left:left + w])
    return np.ascontiguousarray(padded[:, top:top + h, left:left + w, :])


def _conv_windows(x, kernel, stride, padding, dilation, groups, nchw):
    """The lecture's ``as_strided`` im2col view of a zero-padded batch, plus its sizes.

    NCHW: (N, groups, C/groups, kh, kw, OH, OW), so ``view[:, g]`` reshaped to
    (N, K, OH·OW) is group g's columns in NCHW order (rows (c, i, j)).
    NHWC: (N, OH, OW, kh, kw, C), as ``fastconv.reference.conv2d_strided``; group g's
    columns are ``view[..., g·C/groups:(g+1)·C/groups]`` reshaped to (N·OH·OW, K).
    """
    kh, kw = kernel
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    x, (n, c, _, _), (stride_n, stride_c, stride_h, stride_w), (oh, ow) = (
        _padded_view_geometry(x, kernel, stride, padding, dilation, nchw))
    cin_g = c // groups
    if nchw:
        shape = (n, groups, cin_g, kh, kw, oh, ow)
        strides = (stride_n, cin_g * stride_c, stride_c, dh * stride_h, dw * stride_w,
                   sh * stride_h, sw * stride_w)
    else:
        shape = (n, oh, ow, kh, kw, c)
        strides = (stride_n, sh * stride_h, sw * stride_w, dh * stride_h, dw * stride_w,
                   stride_c)
    view = np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)
    return view, (n, c, oh, ow, cin_g)


def _kernel_of(weight, nchw):
    return weight.shape[2:] if nchw else weight.shape[:2]


def numpy_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                 layout="NCHW"):
    """The NumPy baseline for conv2d (batched 4-D input): the lecture's ``as_strided``
    im2col and one matmul per group, written natively for each layout.

    NCHW (weight OIHW): group g's columns (N, K, OH·OW) are copied out of the strided view
    and ``W_g (M, K) @ columns`` (a matmul broadcast over the batch) writes straight into
    the (N, C_out, OH·OW) result. NHWC (weight HWIO): exactly
    ``fastconv.reference.conv2d_strided``, ``columns (N·OH·OW, K) @ W_g (K, M)``.
    M = C_out/groups, K = C_in/groups·kh·kw, as ``ConvGeometry.gemm_shape``.
    """
    nchw = layout.upper() == "NCHW"
    kh, kw = _kernel_of(weight, nchw)
    view, (n, c, oh, ow, cin_g) = _conv_windows(x, (kh, kw), stride, padding, dilation,
                                                groups, nchw)
    c_out = weight.shape[0] if nchw else weight.shape[3]
    m, k, pixels = c_out // groups, cin_g * kh * kw, oh * ow
    dtype = np.result_type(x, weight)
    if nchw:
        out = np.empty((n, c_out, oh, ow), dtype=dtype)
        out3 = out.reshape(n, c_out, pixels)
        for g in range(groups):
            columns = view[:, g].reshape(n, k, pixels)           # the im2col copy
            np.matmul(weight[g * m:(g + 1) * m].reshape(m, k), columns,
                      out=out3[:, g * m:(g + 1) * m])
        if bias is not None:
            out += bias.reshape(c_out, 1, 1)
        return out
    out = np.empty((n, oh, ow, c_out), dtype=dtype)
    out2 = out.reshape(n * pixels, c_out)
    for g in range(groups):
        columns = view[..., g * cin_g:(g + 1) * cin_g].reshape(n * pixels, k)
        w_g = weight[..., g * m:(g + 1) * m].reshape(k, m)
        if groups == 1:
            np.matmul(columns, w_g, out=out2)
        else:
            out2[:, g * m:(g + 1) * m] = columns @ w_g
    if bias is not None:
        out += bias
    return out


def numpy_conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                          layout="NCHW"):
    """The NumPy baseline for conv2d_backward: (grad_input, grad_weight, grad_bias).

    Per group, the columns come from the same ``as_strided`` view as :func:`numpy_conv2d`;
    grad_weight = grad_out · columnsᵀ (one matmul over all the batch's pixels), the column
    gradient is W_gᵀ · grad_out (the transposed matmul) and grad_input is its col2im by
    :func:`numpy_col2im` (strided adds per kernel offset).
    """
    nchw = layout.upper() == "NCHW"
    kh, kw = _kernel_of(weight, nchw)
    view, (n, c, oh, ow, cin_g) = _conv_windows(x, (kh, kw), stride, padding, dilation,
                                                groups, nchw)
    c_out = weight.shape[0] if nchw else weight.shape[3]
    m, k, pixels = c_out // groups, cin_g * kh * kw, oh * ow
    dtype = np.result_type(grad_output, x, weight)
    size = x.shape[2:] if nchw else x.shape[1:3]
    grad_weight = np.empty(weight.shape, dtype=dtype)
    window = {"kernel_size": (kh, kw), "stride": stride, "padding": padding,
              "dilation": dilation, "layout": layout}
    if nchw:
        grad3 = grad_output.reshape(n, c_out, pixels)
        grad_columns = np.empty((n, c * kh * kw, pixels), dtype=dtype)
        for g in range(groups):
            # (K, N·OH·OW) columns, so the batch sum is inside one matmul.
            columns = view[:, g].transpose(1, 2, 3, 0, 4, 5).reshape(k, n * pixels)
            grad_g = grad3[:, g * m:(g + 1) * m]                         # (N, M, OH·OW)
            w_g = weight[g * m:(g + 1) * m].reshape(m, k)
            grad_weight[g * m:(g + 1) * m] = (
                grad_g.transpose(1, 0, 2).reshape(m, n * pixels) @ columns.T
            ).reshape(m, cin_g, kh, kw)
            np.matmul(w_g.T, grad_g, out=grad_columns[:, g * k:(g + 1) * k])
        grad_bias = grad_output.sum(axis=(0, 2, 3))
    else:
        grad2 = grad_output.reshape(n * pixels, c_out)
        grad_columns = np.empty((n * pixels, kh, kw, c), dtype=dtype)
        for g in range(groups):
            columns = view[..., g * cin_g:(g + 1) * cin_g].reshape(n * pixels, k)
            grad_g = grad2[:, g * m:(g + 1) * m]                         # (N·OH·OW, M)
            w_g = weight[..., g * m:(g + 1) * m].reshape(k, m)
            grad_weight[..., g * m:(g + 1) * m] = (columns.T @ grad_g).reshape(kh, kw, cin_g, m)
            if groups == 1:
                np.matmul(grad_g, w_g.T, out=grad_columns.reshape(n * pixels, k))
            else:
                grad_columns[..., g * cin_g:(g + 1) * cin_g] = (
                    grad_g @ w_g.T).reshape(n * pixels, kh, kw, cin_g)
        grad_columns = grad_columns.reshape(n, pixels, kh * kw * c)
        grad_bias = grad_output.sum(axis=(0, 1, 2))
    grad_input = numpy_col2im(grad_columns, size, **window)
    return grad_input, grad_weight, grad_bias


def gemm_ceiling(geometry, dtype, threads, seed=0):
    """A function timing the bare BLAS of a convolution: ``sgemm``/``dgemm`` of
    ``geometry.gemm_shape`` (M, K, N), once per image and group, with BLAS at `threads`.

    The operands are preallocated Fortran-ordered arrays (no copies in scipy's wrapper) and
    reused by every call, so they stay cache-warm: a ceiling, not a model of the real
    convolution's memory traffic.
    """
    from scipy.linalg import blas

    dtype = np.dtype(dtype)
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    m, k, n = geometry.gemm_shape
    rng = np.random.default_rng(seed)
    a = np.asfortranarray(rng.standard_normal((m, k), dtype=dtype))
    b = np.asfortranarray(rng.standard_normal((k, n), dtype=dtype))
    c = np.zeros((m, n), dtype=dtype, order="F")
    count = geometry.batch * geometry.groups

    def ceiling():
        with blas_limit(threads):
            for _ in range(count):
                gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1)
        return c

    return ceiling


# --------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class Timing:
    """How long to measure each implementation of each case.

    One warm-up call, then up to `repeats` samples, stopping early once `budget_s` seconds
    per implementation were spent (after at least `min_repeats` samples). Calls faster than
    `min_sample_s` are looped inside one sample so the clock resolution does not matter.
    The result is the best sample. An implementation whose first call took longer than
    `once_s` seconds (in practice the NumPy conv baselines on the big layers) is not
    sampled: that one call is its time (None: always sample).
    """

    repeats: int = 5
    min_repeats: int = 2
    budget_s: float = 0.25
    min_sample_s: float = 1e-3
    once_s: Optional[float] = 1.0


FAST = Timing()
FULL = Timing(repeats=25, min_repeats=5, budget_s=1.0, min_sample_s=5e-3, once_s=10.0)


def _timed_call(fn):
    """(result, seconds) of one call of `fn`."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _calls_per_sample(fn, timing, first=None):
    """Warm `fn` up with one call (unless `first`, the seconds of a call already made, is
    given) and return how many calls make one sample."""
    if first is None:
        first = _timed_call(fn)[1]
    first = max(first, 1e-9)
    return min(1000, max(1, math.ceil(timing.min_sample_s / first)))


def _sample(fn, number):
    """Seconds taken by `number` back-to-back calls of `fn`."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - start


def best_times(fns, timing=FAST, first=None):
    """Seconds per call of each function in `fns`: the best sample after a warm-up call.

    The samples are taken round-robin (one of each function per repeat), so a burst of load
    from another process slows every implementation alike instead of one of them. With
    several functions, each sample follows one untimed call of its function: the previous
    function's OpenMP threads (torch and fastconv each have their own) spin for a while
    after its call, and would otherwise share the cores with the timed call (measured: the
    NHWC mobilenet stem at batch 8, 0.64 ms alone, 0.84 ms right after torch). The garbage
    collector is off while sampling. See :class:`Timing` for the repeat rules.
    `first`, when given, holds per function the seconds of a call already made (that call
    was its warm-up) or None (warm it up here).
    """
    first = list(first) if first is not None else [None] * len(fns)
    numbers = [_calls_per_sample(fn, timing, seconds) for fn, seconds in zip(fns, first)]
    best = [math.inf] * len(fns)
    spent = 0.0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for repeat in range(timing.repeats):
            for k, (fn, number) in enumerate(zip(fns, numbers)):
                if len(fns) > 1:
                    spent += _timed_call(fn)[1]  # settles the cores (see above)
                elapsed = _sample(fn, number)
                best[k] = min(best[k], elapsed / number)
                spent += elapsed
            if repeat + 1 >= timing.min_repeats and spent >= timing.budget_s * len(fns):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


def best_time(fn, timing=FAST):
    """Seconds per call of `fn()`: the best sample after a warm-up call."""
    return best_times([fn], timing)[0]


# --------------------------------------------------------------------------- configuration

@dataclass
class Config:
    """What to run. `batches` None means each layer's own batches from layers.json."""

    layers: list
    batches: Optional[tuple] = None
    layout: str = "NCHW"
    dtype: np.dtype = np.dtype(np.float32)
    threads: int = 1
    timing: Timing = FAST
    ops: tuple = ()
    torch: object = None  # the torch module, or None to skip the torch baseline
    seed: int = 0

    def layer_cases(self):
        """(layer, batch) cases in suite order."""
        return [Case(layer, batch) for layer in self.layers
                for batch in (self.batches or layer.batches)]

    def random(self, shape):
        """Reproducible standard-normal data of the configured dtype."""
        return np.random.default_rng(self.seed).standard_normal(shape, dtype=self.dtype)


def load_torch(enabled=True):
    """The torch module when wanted and installed, else None (never raises)."""
    if not enabled or importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:  # a broken torch install must not stop the benchmark
        return None
    return torch


def make_config(layers=None, batches=None, layout="NCHW", dtype="float32", threads=None,
                full=False, ops=None, use_torch=True, repeats=None, user_layers=None):
    """A validated :class:`Config`; bad values raise :class:`BenchError` (one-line message).

    `user_layers` (:class:`Layer` objects, e.g. from :func:`parse_conv`) run after the
    suite's `layers`; with user layers and no `layers`, only the user layers run.
    """
    layout = str(layout).upper()
    if layout not in LAYOUTS:
        raise BenchError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if str(dtype) not in DTYPES:
        raise BenchError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batches is not None and any(int(b) < 1 for b in batches):
        raise BenchError(f"batch sizes must be >= 1, got {list(batches)}")
    if threads is not None and int(threads) < 1:
        raise BenchError(f"threads must be >= 1, got {threads}")
    ops = tuple(ops or SECTIONS)
    unknown = [op for op in ops if op not in SECTIONS]
    if unknown:
        raise BenchError(f"unknown section {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(SECTIONS)}")
    timing = FULL if full else FAST
    if repeats is not None:
        if int(repeats) < 1:
            raise BenchError(f"repeats must be >= 1, got {repeats}")
        timing = Timing(repeats=int(repeats), min_repeats=int(repeats), budget_s=0.0,
                        min_sample_s=timing.min_sample_s, once_s=timing.once_s)
    chosen = select_layers(load_layers(), layers) if layers or not user_layers else []
    chosen += list({layer.name: layer for layer in user_layers or ()}.values())
    return Config(
        layers=chosen,
        batches=tuple(int(b) for b in batches) if batches else None,
        layout=layout, dtype=np.dtype(dtype),
        threads=int(threads) if threads is not None else fastconv.get_num_threads(),
        timing=timing, ops=ops, torch=load_torch(use_torch))


# --------------------------------------------------------------------------- rows

@dataclass
class Row:
    """One line of the table: one operator on one case, times in seconds (None: not run).

    A row's rate is GFLOP/s when it has `flops` (the convolution sections), else GB/s of
    `nbytes` (the data-movement sections); the other rate is None.
    """

    op: str
    layer: str
    batch: int
    shape: tuple          # the image shape, in the configured layout
    nbytes: int           # bytes of the column matrix (what GB/s is measured against)
    fastconv_s: float
    numpy_s: Optional[float] = None
    torch_s: Optional[float] = None
    matches_numpy: Optional[bool] = None
    flops: Optional[int] = None       # floating-point operations of one call (GFLOP/s)
    gemm_s: Optional[float] = None    # the bare-GEMM ceiling of the same work
    extra: dict = field(default_factory=dict)  # section-specific JSON fields

    @property
    def unit(self):
        """"GFLOP/s" or "GB/s": what this row's rate is measured in."""
        return "GB/s" if self.flops is None else "GFLOP/s"

    @property
    def gbps(self):
        return self.nbytes / self.fastconv_s / 1e9 if self.flops is None else None

    @property
    def gflops(self):
        return None if self.flops is None else self.flops / self.fastconv_s / 1e9

    @property
    def gemm_efficiency(self):
        """Ceiling time / fastconv time: 1.0 means fastconv runs at bare-GEMM speed."""
        return None if self.gemm_s is None else self.gemm_s / self.fastconv_s

    @property
    def speedup_numpy(self):
        return None if self.numpy_s is None else self.numpy_s / self.fastconv_s

    @property
    def speedup_torch(self):
        return None if self.torch_s is None else self.torch_s / self.fastconv_s

    def as_dict(self):
        """JSON-ready: times in milliseconds, None where an implementation did not run."""
        def ms(seconds):
            return None if seconds is None else seconds * 1e3
        return {
            "op": self.op, "layer": self.layer, "batch": self.batch, "shape": list(self.shape),
            "column_bytes": self.nbytes, "fastconv_ms": ms(self.fastconv_s), "gbps": self.gbps,
            "flops": self.flops, "gflops": self.gflops,
            "numpy_ms": ms(self.numpy_s), "torch_ms": ms(self.torch_s),
            "gemm_ms": ms(self.gemm_s), "gemm_efficiency": self.gemm_efficiency,
            "speedup_numpy": self.speedup_numpy, "speedup_torch": self.speedup_torch,
            "matches_numpy": self.matches_numpy, **self.extra,
        }


def _same(result, expected, exact):
    if exact:
        return bool(np.array_equal(result, expected))
    tolerance = 1e-5 if result.dtype == np.float32 else 1e-12
    return bool(np.allclose(result, expected, rtol=tolerance, atol=tolerance))


def _close(result, expected):
    """Equal up to float rounding, relative to the magnitude: the test for convolutions,
    whose long sums round differently in every implementation. Tuples (gradients) are
    compared item by item."""
    if isinstance(expected, tuple):
        return len(result) == len(expected) and all(
            _close(r, e) for r, e in zip(result, expected))
    if result.shape != expected.shape:
        return False
    tolerance = 1e-3 if result.dtype == np.float32 else 1e-9
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    return bool(np.allclose(result, expected, rtol=tolerance, atol=tolerance * scale))


# OpenBLAS worker threads spin for 2**28 cycles (~0.1 s) after each multithreaded call
# before they sleep; on a machine with few cores they steal a core from whatever is timed
# next (measured here: fastconv 2-3x and torch up to 30x slower on small layers).
_BLAS_SPIN_S = 0.11
_SETTLE_TIMEOUT_S = 0.5


def _other_threads_running(task_dir, me):
    """True when a thread of this process other than `me` is running (Linux /proc)."""
    for tid in os.listdir(task_dir):
        if int(tid) == me:
            continue
        try:
            with open(os.path.join(task_dir, tid, "stat"), "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread just ended
        if state == b"R":
            return True
    return False


def _settle(blas=True):
    """Wait until this process's other threads (BLAS workers still spinning after the last
    call, OpenMP teams) are idle, so they do not compete with the next timing. Polls
    ``/proc/self/task`` for at most half a second; where there is no /proc, sleeps past
    OpenBLAS's spin when `blas` threads may be spinning."""
    task_dir = "/proc/self/task"
    if not os.path.isdir(task_dir):
        if blas:
            time.sleep(_BLAS_SPIN_S)
        return
    me = threading.get_native_id()
    deadline = time.perf_counter() + _SETTLE_TIMEOUT_S
    while _other_threads_running(task_dir, me) and time.perf_counter() < deadline:
        time.sleep(0.002)


def _copy(result):
    """A private copy of a result (array or tuple of arrays) whose buffer is reused."""
    if isinstance(result, tuple):
        return tuple(_copy(item) for item in result)
    return None if result is None else np.array(result, copy=True)


def _measure(op, case, config, nbytes, fastconv_fn, numpy_fn, torch_fn, exact=False, *,
             same=None, flops=None, gemm_fn=None, blas=False):
    """Time the implementations of one case and check fastconv against NumPy once.

    The checking calls are the warm-up calls of fastconv and NumPy. `same(result, expected)`
    compares the results (default: :func:`_same` with `exact`). `gemm_fn`, when given, is
    the GEMM ceiling. An implementation whose first call took longer than
    ``config.timing.once_s`` is timed by that call alone.

    Without `blas`, fastconv, NumPy and torch are sampled round-robin. With `blas` (the
    NumPy baseline and the ceiling run multithreaded BLAS, whose idle workers keep spinning
    for ~0.1 s) they are timed in phases: fastconv and torch round-robin, then NumPy, then
    the ceiling, each phase once the threads of the previous one are idle (:func:`_settle`).
    """
    timing = config.timing
    fns = {"fastconv": fastconv_fn, "numpy": numpy_fn}
    for name, fn in (("torch", torch_fn), ("gemm", gemm_fn)):
        if fn is not None:
            fns[name] = fn
    first, seconds = {}, {}

    def warm_up(names):
        for name in names:
            if name not in first:
                first[name] = _timed_call(fns[name])[1]

    def sample(names):
        once_s = timing.once_s
        seconds.update({name: first[name] for name in names
                        if once_s is not None and first[name] > once_s})
        rest = [name for name in names if name not in seconds]
        if rest:
            seconds.update(zip(rest, best_times([fns[name] for name in rest], timing,
                                                [first[name] for name in rest])))

    own = [name for name in ("fastconv", "torch") if name in fns]
    result, first["fastconv"] = _timed_call(fastconv_fn)
    if blas:
        result = _copy(result)  # the samples reuse fastconv's out= buffer
        warm_up(own)
        _settle(blas)  # the previous case's BLAS threads, spinning through the warm-ups
        sample(own)
    expected, first["numpy"] = _timed_call(numpy_fn)
    matches = same(result, expected) if same is not None else _same(result, expected, exact)
    del result, expected
    if not blas:
        names = ["fastconv", "numpy"] + own[1:]
        warm_up(names)
        _settle(blas)
        sample(names)
    else:
        sample(["numpy"])  # straight after its checking call: its BLAS threads are its own
        if "gemm" in fns:
            _settle(blas)  # NumPy's BLAS threads, before another BLAS library runs
            warm_up(["gemm"])
            sample(["gemm"])
    return Row(
        op=op, layer=case.layer.name, batch=case.batch, shape=case.image_shape(config.layout),
        nbytes=nbytes, fastconv_s=seconds["fastconv"], numpy_s=seconds.get("numpy"),
        torch_s=seconds.get("torch"), matches_numpy=matches, flops=flops,
        gemm_s=seconds.get("gemm"))


# --------------------------------------------------------------------------- sections

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
    return _measure(
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
    return _measure(
        "col2im", case, config, cols.nbytes,
        lambda: fastconv.col2im(cols, size, layout=layout, out=image, **args),
        lambda: numpy_col2im(cols, size, layout=layout, **args),
        torch_fn, exact=False)


def _conv_inputs(config, geom):
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


def _nchw(array, layout):
    return array if layout == "NCHW" else np.ascontiguousarray(array.transpose(0, 3, 1, 2))


def bench_conv2d(case, config):
    """fastconv.conv2d (out=, with bias) vs :func:`numpy_conv2d` vs
    torch.nn.functional.conv2d, plus the :func:`gemm_ceiling` of the same GEMMs."""
    layout, args = config.layout, case.conv_args()
    geom = case.geometry(layout)
    x, weight, bias, tensors = _conv_inputs(config, geom)
    out = np.empty(geom.output_shape, dtype=config.dtype)
    torch_fn = None
    if tensors is not None:
        conv2d = config.torch.nn.functional.conv2d
        x_t, weight_t, bias_t = tensors
        torch_fn = lambda: conv2d(x_t, weight_t, bias_t, **args)  # noqa: E731
    return _measure(
        "conv2d", case, config, geom.column_bytes(config.dtype),
        lambda: fastconv.conv2d(x, weight, bias, layout=layout, out=out, **args),
        lambda: numpy_conv2d(x, weight, bias, layout=layout, **args),
        torch_fn, same=_close, flops=geom.flops, blas=True,
        gemm_fn=gemm_ceiling(geom, config.dtype, config.threads, config.seed))


def _torch_conv_backward(torch, grad_t, x_t, weight_t, bias_t, args):
    """A function computing torch's three conv2d gradients.

    ``torch.ops.aten.convolution_backward`` (torch >= 1.11) is the kernel autograd runs for
    conv2d, called directly: no graph, nothing accumulated into ``.grad``. Without it,
    ``torch.autograd.grad`` on a prebuilt graph (retain_graph=True)."""
    stride, padding, groups = args["stride"], args["padding"], args["groups"]
    try:
        backward = torch.ops.aten.convolution_backward
    except (AttributeError, RuntimeError):
        backward = None
    if backward is not None:
        bias_sizes = [weight_t.shape[0]]
        pair_list = lambda v: [v, v]  # noqa: E731
        return lambda: backward(grad_t, x_t, weight_t, bias_sizes, pair_list(stride),
                                pair_list(padding),
                                [1, 1], False, [0, 0], groups, [True, True, True])
    leaves = [t.detach().requires_grad_() for t in (x_t, weight_t, bias_t)]
    y = torch.nn.functional.conv2d(*leaves, **args)
    return lambda: torch.autograd.grad(y, leaves, grad_t, retain_graph=True)


def bench_conv2d_backward(case, config):
    """fastconv.conv2d_backward (all three gradients) vs :func:`numpy_conv2d_backward` vs
    torch's convolution_backward. FLOPs: twice the forward's (input and weight gradients;
    the bias gradient's sum is not counted)."""
    layout, args = config.layout, case.conv_args()
    geom = case.geometry(layout)
    x, weight, bias, tensors = _conv_inputs(config, geom)
    grad = config.random(geom.output_shape)
    torch_fn = None
    if tensors is not None:
        grad_t = config.torch.from_numpy(_nchw(grad, layout))
        torch_fn = _torch_conv_backward(config.torch, grad_t, *tensors, args)
    return _measure(
        "conv2d_backward", case, config, geom.column_bytes(config.dtype),
        lambda: fastconv.conv2d_backward(grad, x, weight, layout=layout, **args),
        lambda: numpy_conv2d_backward(grad, x, weight, layout=layout, **args),
        torch_fn, same=_close, flops=2 * geom.flops, blas=True)


def bench_layer(case, config):
    """fastconv.Conv2D steady-state forward (out=; the checking call is the warm-up that
    plans and allocates the workspace) vs :func:`numpy_conv2d` with the layer's weights vs
    torch.nn.Conv2d under torch.no_grad()."""
    layout, layer = config.layout, case.layer
    geom = case.geometry(layout)
    conv = fastconv.Conv2D(layer.in_channels, layer.out_channels, layer.kernel,
                           stride=layer.stride, padding=layer.padding, groups=layer.groups,
                           layout=layout, dtype=config.dtype, seed=config.seed)
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
        x_t = torch.from_numpy(_nchw(x, layout))

        def torch_fn():
            with torch.no_grad():
                return module(x_t)
    args = case.conv_args()
    return _measure(
        "layer", case, config, geom.column_bytes(config.dtype),
        lambda: conv.forward(x, out=out),
        lambda: numpy_conv2d(x, conv.weight, conv.bias, layout=layout, **args),
        torch_fn, same=_close, flops=geom.flops, blas=True)


# R-MAC describes the last feature map of a network: the maps below, not the conv layers.
@dataclass(frozen=True)
class FeatureMap:
    """A CNN feature map R-MAC is computed on."""

    name: str
    channels: int
    height: int
    width: int


# ResNet-50 res5 on a 224×320 image and VGG-16 conv5 on a 480×640 one.
RMAC_MAPS = (FeatureMap("resnet50.res5", 2048, 7, 10), FeatureMap("vgg16.conv5", 512, 30, 40))
RMAC_BATCHES = (8,)


@dataclass(frozen=True)
class MapCase:
    """One feature map at one batch size (``layer`` names it in the table, like a Case)."""

    layer: FeatureMap
    batch: int

    def image_shape(self, layout):
        n, c, h, w = self.batch, self.layer.channels, self.layer.height, self.layer.width
        return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)

    def __str__(self):
        return f"{self.layer.name} batch {self.batch}"


def rmac_cases(config):
    """:data:`RMAC_MAPS` at the configured batches (default :data:`RMAC_BATCHES`)."""
    return [MapCase(fmap, batch) for fmap in RMAC_MAPS
            for batch in (config.batches or RMAC_BATCHES)]


def numpy_rmac(x, levels=3, layout="NCHW"):
    """The straightforward NumPy R-MAC: per region one slice of the batch and one
    ``max`` over H and W, L2-normalised and summed, then L2-normalised
    (:func:`fastconv.reference.rmac`)."""
    return reference.rmac(x, levels, layout=layout)


def torch_rmac(torch, x, levels=3, eps=1e-6):
    """cirtorch's rmac + l2n as cirtorch runs it: one ``F.max_pool2d`` per region on an
    NCHW tensor. Returns a function of no arguments."""
    height, width = x.shape[2:]
    boxes = [(0, 0, width - 1, height - 1)] + reference.rmac_cirtorch_regions(height, width,
                                                                              levels)
    max_pool2d = torch.nn.functional.max_pool2d

    def l2n(v):
        return v / (torch.norm(v, p=2, dim=1, keepdim=True) + eps)

    def run():
        total = 0
        for x1, y1, x2, y2 in boxes:
            region = x[:, :, y1:y2 + 1, x1:x2 + 1]
            total = total + l2n(max_pool2d(region, (y2 - y1 + 1, x2 - x1 + 1)))
        return l2n(total).reshape(x.shape[0], -1)

    return run


def bench_rmac(case, config):
    """fastconv.rmac vs :func:`numpy_rmac` vs cirtorch's algorithm in torch; the rate is
    GB/s of the feature map, and the row's ``descriptors_per_s`` (images per second) goes
    below the table."""
    layout = config.layout
    x = config.random(case.image_shape(layout))
    torch_fn = None
    if config.torch is not None:
        torch_fn = torch_rmac(config.torch, config.torch.from_numpy(_nchw(x, layout)))
    row = _measure("rmac", case, config, x.nbytes, lambda: fastconv.rmac(x, layout=layout),
                   lambda: numpy_rmac(x, layout=layout), torch_fn)
    for name, seconds in (("fastconv", row.fastconv_s), ("numpy", row.numpy_s),
                          ("torch", row.torch_s)):
        row.extra[f"{name}_descriptors_per_s"] = (None if seconds is None
                                                  else case.batch / seconds)
    return row


# Block of the space_to_batch section (TensorFlow's atrous convolutions use their rate).
SPACE_TO_BATCH_BLOCK = 2


def numpy_space_to_batch(x, block_size, padding=0, layout="NCHW"):
    """The NumPy baseline for space_to_batch (batched 4-D input): ``np.pad`` (skipped when
    there is no padding), then one reshape/transpose copy into the block layout."""
    bh, bw = pair(block_size)
    spatial = padding_pairs(padding)
    nchw = layout.upper() == "NCHW"
    if any(p for side in spatial for p in side):
        x = np.pad(x, ((0, 0), (0, 0)) + spatial if nchw else ((0, 0),) + spatial + ((0, 0),))
    if nchw:
        n, c, hp, wp = x.shape
        blocks = x.reshape(n, c, hp // bh, bh, wp // bw, bw).transpose(3, 5, 0, 1, 2, 4)
        return blocks.reshape(bh * bw * n, c, hp // bh, wp // bw)
    n, hp, wp, c = x.shape
    blocks = x.reshape(n, hp // bh, bh, wp // bw, bw, c).transpose(2, 4, 0, 1, 3, 5)
    return blocks.reshape(bh * bw * n, hp // bh, wp // bw, c)


def _torch_space_to_batch(torch, x_t, block, padding):
    """torch has no space_to_batch: F.pad + reshape + permute + contiguous, NCHW."""
    (top, bottom), (left, right) = padding
    if top or bottom or left or right:
        x_t = torch.nn.functional.pad(x_t, (left, right, top, bottom))
    n, c, hp, wp = x_t.shape
    blocks = x_t.reshape(n, c, hp // block, block, wp // block, block).permute(3, 5, 0, 1, 2, 4)
    return blocks.reshape(block * block * n, c, hp // block, wp // block).contiguous()


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
        torch_fn = lambda: _torch_space_to_batch(config.torch, x_torch, block, padding)  # noqa: E731
    row = _measure(
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


# Later: rmac, in the same form.
SECTIONS = {section.name: section for section in (
    Section("im2col", Config.layer_cases, bench_im2col,
            "fastconv.im2col vs NumPy as_strided vs torch unfold", "unfold"),
    Section("col2im", Config.layer_cases, bench_col2im,
            "fastconv.col2im vs NumPy strided adds vs torch fold", "fold"),
    Section("conv2d", Config.layer_cases, bench_conv2d,
            "fastconv.conv2d vs NumPy as_strided im2col + matmul vs torch conv2d, "
            "and the bare-GEMM ceiling", "conv2d"),
    Section("conv2d_backward", Config.layer_cases, bench_conv2d_backward,
            "fastconv.conv2d_backward vs NumPy matmuls + col2im vs torch "
            "convolution_backward", "convolution_backward"),
    Section("layer", Config.layer_cases, bench_layer,
            "fastconv.Conv2D forward (steady state) vs torch.nn.Conv2d (no_grad)",
            "nn.Conv2d"),
    Section("space_to_batch", space_to_batch_cases, bench_space_to_batch,
            "fastconv.space_to_batch (block 2) of each layer's input vs NumPy pad + transpose "
            "vs torch pad + permute, and numpy.copyto of the same bytes", "pad+permute"),
    Section("rmac", rmac_cases, bench_rmac,
            "fastconv.rmac vs per-region NumPy slicing vs cirtorch's per-region torch "
            "max_pool2d, on ResNet-50 / VGG-16 final feature maps", "max_pool2d"),
)}


# --------------------------------------------------------------------------- running

class Progress:
    """One progress line on stderr, rewritten in place on a terminal."""

    def __init__(self, total, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.inplace = hasattr(self.stream, "isatty") and self.stream.isatty()

    def show(self, text):
        self.done += 1
        line = f"[{self.done}/{self.total}] {text}"
        if self.inplace:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.inplace:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _case_label(case):
    return f"{case.layer.name} batch {case.batch}" if isinstance(case, Case) else str(case)


def run(config, progress=True):
    """Run the configured sections; returns the rows in table order.

    fastconv, torch and BLAS (the NumPy baselines' matmuls, the GEMM ceiling) all use
    ``config.threads`` threads while it runs; the previous settings are restored afterwards.
    """
    work = [(SECTIONS[op], case) for op in config.ops for case in SECTIONS[op].cases(config)]
    reporter = Progress(len(work)) if progress else None
    torch = config.torch
    previous_torch_threads = torch.get_num_threads() if torch is not None else None
    rows = []
    try:
        if torch is not None:
            torch.set_num_threads(config.threads)
        with fastconv.threads(config.threads), blas_limit(config.threads):
            for section, case in work:
                if reporter:
                    reporter.show(f"{section.name} {_case_label(case)}")
                rows.append(section.run(case, config))
    finally:
        if reporter:
            reporter.close()
        if torch is not None:
            torch.set_num_threads(previous_torch_threads)
    return rows


# --------------------------------------------------------------------------- output

def geometric_mean(values):
    """Geometric mean of positive numbers, None for an empty list."""
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(rows):
    """Geometric means per operator:
    {op: {"vs_numpy": x, "vs_torch": x, "gemm_efficiency": x}} (None where not measured)."""
    result = {}
    for op in dict.fromkeys(row.op for row in rows):
        mine = [row for row in rows if row.op == op]
        result[op] = {"vs_numpy": geometric_mean([r.speedup_numpy for r in mine]),
                      "vs_torch": geometric_mean([r.speedup_torch for r in mine]),
                      "gemm_efficiency": geometric_mean([r.gemm_efficiency for r in mine])}
    return result


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _times(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x"


def _rate(value):
    return "-" if value is None else f"{value:.1f}"


def _ratio(value):
    return "-" if value is None else f"{value:.2f}"


# "vs torch" stays the last column: scripts read it as the line's last field.
COLUMNS = ("operator", "layer", "batch", "shape", "fastconv ms", "GB/s", "GFLOP/s",
           "NumPy ms", "torch ms", "GEMM ms", "GEMM eff", "vs NumPy", "vs torch")
_LEFT_ALIGNED = {"operator", "layer", "shape"}


def _cells(row):
    flag = "" if row.matches_numpy in (True, None) else " !"
    return (row.op + flag, row.layer, str(row.batch), "x".join(map(str, row.shape)),
            _ms(row.fastconv_s), _rate(row.gbps), _rate(row.gflops), _ms(row.numpy_s),
            _ms(row.torch_s), _ms(row.gemm_s), _ratio(row.gemm_efficiency),
            _times(row.speedup_numpy), _times(row.speedup_torch))


def _plural(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_CONV_SECTIONS = ("conv2d", "conv2d_backward", "layer")


def _header(config):
    """The lines above the table: versions, threads, and what the columns measure."""
    torch = config.torch
    threads = _plural(config.threads, "thread")
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
            "Conv timing: fastconv and torch round-robin, then NumPy, then the GEMM ceiling, "
            "each once the previous BLAS threads idle"
            + (f"; a call over {once:g} s is timed once." if once is not None else "."),
        ]
    if "rmac" in config.ops:
        lines.append("rmac: GB/s of the feature map; NumPy = one slice-and-max per region; "
                     "torch = cirtorch's rmac (F.max_pool2d per region); descriptors/s below.")
    return "\n".join(lines)


def format_table(rows, config):
    """The printed table: header line, one line per row, geometric-mean speed-ups."""
    table = [COLUMNS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]

    def render(cells):
        return "  ".join(cell.ljust(width) if name in _LEFT_ALIGNED else cell.rjust(width)
                         for name, cell, width in zip(COLUMNS, cells, widths)).rstrip()

    lines = [_header(config), "", render(COLUMNS), render(["-" * w for w in widths])]
    lines += [render(cells) for cells in table[1:]]
    lines.append("")
    for op, means in summary(rows).items():
        line = (f"geometric mean speed-up {op}: vs torch {_times(means['vs_torch'])}, "
                f"vs NumPy {_times(means['vs_numpy'])}")
        if means["gemm_efficiency"] is not None:
            line += f"; GEMM efficiency {_ratio(means['gemm_efficiency'])}"
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
                     f"(geometric mean): {_ratio(geometric_mean(copy_ratios))}, from "
                     f"{_ratio(min(copy_ratios))} to {_ratio(max(copy_ratios))}")
    if any(row.matches_numpy is False for row in rows):
        lines.append("! fastconv's result differs from the NumPy baseline on these rows")
    return "\n".join(lines)


def to_json(rows, config):
    """The ``--json`` document: configuration, environment, rows and summary."""
    from fastconv.info import build_info
    return {
        "config": {
            "layout": config.layout, "dtype": str(config.dtype), "threads": config.threads,
            "batches": list(config.batches) if config.batches else None,
            "layers": [layer.name for layer in config.layers], "ops": list(config.ops),
            "timing": vars(config.timing).copy(),
            "torch": None if config.torch is None else config.torch.__version__,
            "load_average": _load_average(),
        },
        "environment": build_info(),
        "rows": [row.as_dict() for row in rows],
        "summary": summary(rows),
    }


# --------------------------------------------------------------------------- plot

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
        As returned by :func:`run`.
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
    threads = _plural(config.threads, "thread")
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


def _check_plot_target(path, parser):
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


# --------------------------------------------------------------------------- command line

def _positive_int(text):
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_arguments(parser):
    """Add the ``bench`` options to an argparse parser."""
    parser.add_argument("--layers", nargs="+", metavar="NAME",
                        help="layers of fastconv/data/layers.json to run (names or globs "
                             "such as 'resnet50.*'; default: all)")
    parser.add_argument("--conv", action="append", type=_conv_argument,
                        metavar="N,C,H,W,O,k,s,p",
                        help="also time your own layer: batch, in channels, height, width, "
                             "out channels, kernel, stride, padding (repeatable; alone, "
                             "only these layers run)")
    parser.add_argument("--batch", nargs="+", type=_positive_int, metavar="N",
                        help="batch sizes (default: each layer's own, normally 1 and 8)")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="threads for fastconv and torch (default: "
                             "fastconv.get_num_threads())")
    parser.add_argument("--layout", type=str.upper, choices=LAYOUTS,
                        help="image layout (default NCHW, and both with --compare; torch "
                             "always runs NCHW)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="element type (default float32)")
    parser.add_argument("--ops", nargs="+", choices=list(SECTIONS), metavar="OP",
                        help=f"sections to run, from {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--full", action="store_true",
                        help="more repeats per measurement (slower, steadier)")
    parser.add_argument("--repeats", type=_positive_int, metavar="N",
                        help="exactly N timed samples per measurement (overrides --full; "
                             "a call slower than 1 s is still timed once)")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the torch baseline even when torch is installed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the rates as a bar chart per operator into FILE.png "
                             "(needs matplotlib: pip install \"fastconv[plot]\")")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    parser.add_argument("--compare", action="store_true",
                        help="the performance targets instead of the sections: conv2d "
                             "forward and backward vs torch (NumPy without torch), GEMM "
                             "efficiency and 1->N thread speed-up per layer, batches 1 and "
                             "8, both layouts, then each target checked")


def _check_json_target(path, parser):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        parser.error(f"--json: directory {directory!r} does not exist")


def _load_average():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def warn_if_busy(stream=None):
    """Warn on stderr when the load average says other processes compete for the CPUs."""
    load = _load_average()
    if load is None:
        return
    cpus = os.cpu_count() or 1
    if load > 0.75 * cpus:
        print(f"warning: load average {load:.2f} on {cpus} CPUs: other processes may "
              f"distort the timings", file=stream or sys.stderr)


def main(args, parser):
    """Run ``bench`` for parsed `args`; bad requests end via ``parser.error`` (exit 2)."""
    if args.json:
        _check_json_target(args.json, parser)
    if args.plot:
        _check_plot_target(args.plot, parser)
    if args.compare:
        return _main_compare(args, parser)
    try:
        config = make_config(layers=args.layers, batches=args.batch,
                             layout=args.layout or "NCHW",
                             dtype=args.dtype, threads=args.threads, full=args.full,
                             ops=args.ops, use_torch=not args.no_torch, repeats=args.repeats,
                             user_layers=args.conv)
    except BenchError as error:
        parser.error(str(error))
    warn_if_busy()
    rows = run(config, progress=not args.quiet)
    print(format_table(rows, config))
    if args.plot:
        plot_rows(rows, config, args.plot)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(to_json(rows, config), handle, indent=2)
            handle.write("\n")
    return 0


def _main_compare(args, parser):
    """``bench --compare``: the table of :mod:`fastconv.compare`."""
    from fastconv import compare

    for option, given in (("--ops", args.ops), ("--conv", args.conv), ("--plot", args.plot)):
        if given:
            parser.error(f"--compare runs conv2d forward and backward on the suite's layers; "
                         f"it takes no {option}")
    try:
        configs = compare.make_compare_config(
            layers=args.layers, batches=args.batch,
            layouts=(args.layout,) if args.layout else LAYOUTS, dtype=args.dtype,
            threads=args.threads, full=args.full, use_torch=not args.no_torch,
            repeats=args.repeats)
    except BenchError as error:
        parser.error(str(error))
    warn_if_busy()
    rows = compare.run(configs, progress=not args.quiet)
    print(compare.format_report(rows, configs))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(compare.to_json(rows, configs), handle, indent=2)
            handle.write("\n")
    return 0
