"""3-D convolution (docs/spec.md §6): conv3d, conv3d_backward, conv_transpose3d, Conv3D.

Volumes are "NCDHW" (N, C, D, H, W) with OIDHW weights (C_out, C_in/groups, kd, kh, kw),
as PyTorch, or "NDHWC" (N, D, H, W, C) with DHWIO weights (kd, kh, kw, C_in/groups, C_out),
as TensorFlow. The kernels (fastconv/_kernels/_vol2col.pyx) build each work item's columns
(vol2col) into a cache-sized tile of the thread's workspace and multiply them with BLAS,
reading every padded value through per-axis source-index tables (fastconv._padding_mode):
no padded copy of a volume is made, whatever the `padding_mode`.

- forward: per (volume, tile of output positions), vol2col + one GEMM per group; a
  1×1×1, stride-1, unpadded kernel multiplies the volume in place.
- weight gradient: the same columns times the output gradient, summed per fixed chunk of
  work items, then over the chunks in order (bit-identical for any thread count).
- input gradient: at stride 1 the forward convolution of the output gradient with the
  flipped weight (padded by dilation·(k − 1) − padding per side; for "reflect" /
  "replicate" / "circular" the whole padded volume's gradient, then folded back onto the
  pixels the padding read); otherwise weightᵀ · output gradient and col2vol, per volume.
"""
from __future__ import annotations

import itertools
import math
import threading

import numpy as np

from fastconv import _engine, _memory, _padding_mode, _three_d, _tuning, _validate, cpu
from fastconv import geometry as geo
from fastconv.conv import Gradients, conv2d
from fastconv.threads import blas_limit

__all__ = ["conv3d", "conv3d_backward", "conv_transpose3d", "Conv3D"]

# The GEMMs are arithmetic-bound: the widest build this CPU runs.
_vol2col = cpu.load_kernel("_vol2col")


# ------------------------------------------------------------------ running the kernels
def _vol_struct(channels, sizes, out_sizes, kernel, stride, dilation, pad_w):
    """The dict Cython converts to _vol2col's `Vol` struct (`pad_w`: the width table's
    offset, t_w[q] = q − pad_w inside the volume)."""
    d, h, w = sizes
    od, oh, ow = out_sizes
    return {"channels": channels, "depth": d, "height": h, "width": w, "out_d": od,
            "out_h": oh, "out_w": ow, "kernel_d": kernel[0], "kernel_h": kernel[1],
            "kernel_w": kernel[2], "stride_d": stride[0], "stride_h": stride[1],
            "stride_w": stride[2], "dilation_d": dilation[0], "dilation_h": dilation[1],
            "dilation_w": dilation[2], "pad_w": pad_w}


def tile_positions(positions, batch, depth, itemsize, tuning=None):
    """Output positions per work item: a column tile of about tuning.tile_bytes (`depth`
    column rows each), cut further until the batch has tuning.work_items items, but not
    below tuning.min_tile_positions. Independent of the thread count (results are
    bit-identical for any)."""
    tuning = tuning or _tuning.active()
    tile = max(tuning.min_tile_positions, tuning.tile_bytes // max(1, depth * itemsize))
    wanted = -(-tuning.work_items // max(1, batch))
    tile = min(tile, max(tuning.min_tile_positions, -(-positions // wanted)))
    return max(1, min(tile, positions))


def _plan(batch, in_channels, sizes, out_channels, groups, kernel, stride, dilation,
          out_sizes, channels_last, pointwise, itemsize, pad_w, has_bias=False, cap=None,
          chunks_wanted=0):
    """(vol dict, run dict, threads, workspace elements, partial elements) of one pass."""
    kvol = kernel[0] * kernel[1] * kernel[2]
    positions = out_sizes[0] * out_sizes[1] * out_sizes[2]
    k_g = in_channels // groups * kvol
    tile = tile_positions(positions, batch, k_g, itemsize)
    flops = 2 * batch * out_channels * k_g * positions
    threads = _tuning.threads_for_flops(flops)
    col_size = k_g * tile
    items = batch * (-(-positions // tile))
    chunks = min(items, chunks_wanted) if chunks_wanted else 0
    wsize = out_channels * k_g
    if cap is not None:
        budget = cap // itemsize
        if chunks:
            chunks = max(1, min(chunks, (budget - col_size) // wsize if budget > col_size
                                else 1))
            budget -= chunks * wsize
        if budget < col_size:
            tile = budget // k_g
            if tile < 1:
                raise ValueError(
                    f"max_workspace_bytes={cap} is below one output position's columns "
                    f"and accumulators ({(k_g + chunks * wsize) * itemsize} bytes)")
            col_size = k_g * tile
            items = batch * (-(-positions // tile))
        threads = max(1, min(threads, budget // col_size))
    vol = _vol_struct(in_channels, sizes, out_sizes, kernel, stride, dilation, pad_w)
    run = {"batch": batch, "out_channels": out_channels, "groups": groups,
           "channels_last": channels_last, "pointwise": pointwise, "tile": tile,
           "col_size": col_size, "chunks": chunks, "has_bias": has_bias}
    return vol, run, threads, threads * col_size, chunks * wsize


def _scratch(slot, size, dtype):
    return _memory.scratch(slot, size, dtype)


# NCDHW volumes with this many input channels per group or more run on channels-last
# copies (transposed in and out): the channels-last columns are copied in runs of C_in/g
# values, the channels-first ones through a table lookup per value. Measured, float32, 2
# threads, N=2, 32→32, 32³, k3 p1: forward 145 → 52 ms, backward 252 → 110 ms (the
# transposes ~4 ms each).
CHANNELS_LAST_MIN_CHANNELS = 8


def _channels_last_pays(geom):
    return (geom.layout == "NCDHW" and not geom.pointwise
            and geom.in_channels // geom.groups >= CHANNELS_LAST_MIN_CHANNELS)


def _change_layout(src5, dst5, to_channels_last):
    """dst5 = src5 in the other layout: NCDHW → NDHWC (to_channels_last) or back, both
    C-contiguous."""
    if to_channels_last:
        n, c = src5.shape[:2]
    else:
        n, c = src5.shape[0], src5.shape[4]
    if src5.size == 0:
        return
    _vol2col.change_layout(src5.reshape(-1), dst5.reshape(-1), n, c, src5.size // (n * c),
                           to_channels_last, _tuning.threads_for_elements(src5.size))


def _to_channels_last(array5, slot, alloc):
    """An NCDHW array copied into the NDHWC scratch `slot`."""
    n, c, d, h, w = array5.shape
    result = alloc(slot, array5.size, array5.dtype).reshape(n, d, h, w, c)
    _change_layout(array5, result, True)
    return result


def _channels_last_weight(weight, alloc=_scratch):
    """OIDHW → DHWIO, copied into the scratch slot "conv3d_weight_l"."""
    o, i, kd, kh, kw = weight.shape
    result = alloc("conv3d_weight_l", weight.size, weight.dtype).reshape(kd, kh, kw, i, o)
    np.copyto(result, weight.transpose(2, 3, 4, 1, 0))
    return result


def _plane_geometry(geom, fn):
    """The 2-D convolution of one depth tap over the depth planes (N·D, H, W, C) of a
    channels-last volume."""
    n, c, (d, h, w) = geom.batch, geom.in_channels, geom.sizes
    kd, kh, kw = geom.kernel
    return geo.ConvGeometry((n * d, h, w, c), geom.out_channels, (kh, kw), geom.stride[1:],
                            geom.padding[1:], geom.dilation[1:], geom.groups, layout="NHWC",
                            fn=fn)


def planes_algorithm(geom, itemsize, algorithm="auto", fn="conv3d", capped=False):
    """'winograd' when the forward pass of `geom` (channels-last) runs as one 2-D Winograd
    convolution of the depth planes per depth tap (the 2-D engine's F(m×m, 3×3): 3×3 in
    height and width, stride and dilation 1 there, zero padding there, not depthwise),
    else 'gemm' (vol2col + GEMM). "auto" takes it for float32 where the 2-D engine's rule
    takes Winograd; "winograd" requires it (a ValueError where it cannot serve)."""
    hw_padded = any(before or after for before, after in geom.padding[1:])
    blocker = None
    if geom.mode != "zeros" and hw_padded:
        blocker = (f"needs padding_mode='zeros' along height and width (got "
                   f"{geom.padding_mode!r})")
    elif min(geom.padding[1] + geom.padding[2]) < 0:
        blocker = "cannot serve this input gradient"
    elif capped:
        blocker = "keeps transformed weights beside the workspace: not with max_workspace_bytes"
    if algorithm == "gemm" or (algorithm == "auto" and (blocker or itemsize != 4)):
        return "gemm"
    if blocker is None:
        geom2 = _plane_geometry(geom, fn)
        blocker = geo.winograd_blocker(geom2)
        if blocker is None and algorithm == "auto":
            return _engine.choose_algorithm(geom2, itemsize, "auto")
    if blocker is not None:
        if algorithm == "winograd":
            raise ValueError(f"{fn}: algorithm='winograd' {blocker}")
        return "gemm"
    return "winograd"


def _depth_runs(table, out_d, stride, dilation, tap):
    """(first output plane, count, first source plane) of each run of output planes whose
    source planes (depth table) advance by `stride` for depth tap `tap`; planes that read
    zeros are left out."""
    sources = table[np.arange(out_d) * stride + tap * dilation]
    runs = []
    od = 0
    while od < out_d:
        if sources[od] < 0:
            od += 1
            continue
        end = od + 1
        while end < out_d and sources[end] == sources[end - 1] + stride:
            end += 1
        runs.append((od, end - od, int(sources[od])))
        od = end
    return runs


def _forward_planes(x5, weight, bias, out5, geom, depth_table, alloc):
    """out5 = conv3d(x5, weight) + bias for channels-last x5 / DHWIO weight: for each depth
    tap, the 2-D Winograd convolution of every depth plane with that tap's HWIO weight,
    added onto the output planes that read it, in tap order."""
    n, d, h, w, c = x5.shape
    od, oh, ow = geom.out_sizes
    cout = geom.out_channels
    step = geom.stride[0]
    runs = [_depth_runs(depth_table, od, step, geom.dilation[0], tap)
            for tap in range(geom.kernel[0])]
    args = (geom.stride[1:], geom.padding[1:], geom.dilation[1:], geom.groups)
    # A tap whose output plane od reads input plane od for every od (the centre tap of a
    # "same" convolution) writes the output directly, with the bias.
    direct = next((tap for tap, tap_runs in enumerate(runs)
                   if d == od and tap_runs == [(0, od, 0)] and step == 1), None)
    if direct is not None:
        conv2d(x5.reshape(n * d, h, w, c), weight[direct], bias, *args, layout="NHWC",
               out=out5.reshape(n * od, oh, ow, cout), algorithm="winograd")
    elif bias is None:
        out5.fill(0)
    else:
        out5[...] = bias
    planes = None
    for tap, tap_runs in enumerate(runs):
        if tap == direct or not tap_runs:
            continue
        if planes is None:
            planes = alloc("conv3d_planes", n * d * oh * ow * cout, x5.dtype).reshape(
                n, d, oh, ow, cout)
        conv2d(x5.reshape(n * d, h, w, c), weight[tap], None, *args, layout="NHWC",
               out=planes.reshape(n * d, oh, ow, cout), algorithm="winograd")
        for first, count, source in tap_runs:
            out5[:, first:first + count] += planes[:, source:source + (count - 1) * step + 1:
                                                   step]


def _forward(x5, weight, bias, out5, geom, tables, alloc=_scratch, cap=None,
             algorithm="auto"):
    """out5 = conv3d(x5, weight) + bias: all C-contiguous, 5-D in geom.layout."""
    if out5.size == 0:
        return
    route = planes_algorithm(geom, x5.dtype.itemsize, algorithm, capped=cap is not None)
    if x5.size and (_channels_last_pays(geom) or (geom.layout == "NCDHW"
                                                  and route == "winograd")):
        n, c, od, oh, ow = out5.shape
        y = alloc("conv3d_y_cl", out5.size, out5.dtype).reshape(n, od, oh, ow, c)
        _forward(_to_channels_last(x5, "conv3d_x_cl", alloc), _channels_last_weight(weight, alloc),
                 bias, y, geom._replace(layout="NDHWC"), tables, alloc, cap, algorithm)
        _change_layout(y, out5, False)
        return
    if x5.size == 0:  # an empty volume with enough padding: every window reads zeros
        out5[...] = 0 if bias is None else (
            bias.reshape(-1, 1, 1, 1) if geom.layout == "NCDHW" else bias)
        return
    if geom.layout == "NDHWC" and route == "winograd":
        _forward_planes(x5, weight, bias, out5, geom, tables[0], alloc)
        return
    vol, run, threads, ws, _ = _plan(
        geom.batch, geom.in_channels, geom.sizes, geom.out_channels, geom.groups,
        geom.kernel, geom.stride, geom.dilation, geom.out_sizes, geom.layout == "NDHWC",
        geom.pointwise and geom.mode == "zeros", x5.dtype.itemsize, geom.padding[2][0],
        bias is not None, cap)
    workspace = alloc("conv3d_workspace", max(ws, 1), x5.dtype)
    bias = np.zeros(1, x5.dtype) if bias is None else bias
    with blas_limit(1):  # BLAS runs inside the kernel's OpenMP loop
        _vol2col.conv3d_forward(x5.reshape(-1), weight.reshape(-1), bias, out5.reshape(-1),
                                workspace, vol, *tables, run, threads)


def _weight_grad(grad5, x5, geom, tables, grad_w, alloc=_scratch, cap=None):
    """grad_w = Σ over the batch of the output gradient times the columns (C-contiguous,
    weight-shaped)."""
    if grad5.size == 0 or x5.size == 0:
        grad_w.fill(0)
        return
    if _channels_last_pays(geom):
        grad_wl = alloc("conv3d_weight_cl", grad_w.size, grad_w.dtype).reshape(
            grad_w.shape[2:] + grad_w.shape[1::-1])
        _weight_grad(_to_channels_last(grad5, "conv3d_grad_cl", alloc),
                     _to_channels_last(x5, "conv3d_x_cl", alloc), geom._replace(layout="NDHWC"),
                     tables, grad_wl, alloc, cap)
        np.copyto(grad_w, grad_wl.transpose(4, 3, 0, 1, 2))
        return
    tuning = _tuning.active()
    vol, run, threads, ws, partial_size = _plan(
        geom.batch, geom.in_channels, geom.sizes, geom.out_channels, geom.groups,
        geom.kernel, geom.stride, geom.dilation, geom.out_sizes, geom.layout == "NDHWC",
        geom.pointwise and geom.mode == "zeros", x5.dtype.itemsize, geom.padding[2][0], cap=cap,
        chunks_wanted=tuning.work_items)
    workspace = alloc("conv3d_workspace", max(ws, 1), x5.dtype)
    partials = alloc("conv3d_partials", partial_size, x5.dtype)
    with blas_limit(1):
        _vol2col.conv3d_weight_grad(x5.reshape(-1), grad5.reshape(-1), partials, workspace,
                                    vol, *tables, run, threads)
    np.sum(partials.reshape(run["chunks"], -1), axis=0, out=grad_w.reshape(-1))


def flipped_weight(weight, layout, groups, alloc=_scratch):
    """The weight of the flipped convolution whose forward pass is the input gradient: in
    and out channels swapped per group and the window reversed along every axis (copied
    into the scratch slot "conv3d_flipped")."""
    if layout == "NCDHW":
        cout, cin_g = weight.shape[:2]
        w = weight.reshape(groups, cout // groups, cin_g, *weight.shape[2:])
        w = w.transpose(0, 2, 1, 3, 4, 5).reshape(groups * cin_g, cout // groups,
                                                   *weight.shape[2:])[:, :, ::-1, ::-1, ::-1]
    else:
        cin_g, cout = weight.shape[3:]
        w = weight.reshape(*weight.shape[:3], cin_g, groups, cout // groups)
        w = w.transpose(0, 1, 2, 5, 4, 3).reshape(*weight.shape[:3], cout // groups,
                                                  groups * cin_g)[::-1, ::-1, ::-1]
    result = alloc("conv3d_flipped", w.size, w.dtype).reshape(w.shape)
    np.copyto(result, w)
    return result


def _fold(padded, geom):
    """Fold the gradient of the padded volume back onto the pixels its padding read
    (the adjoint of reading through the source-index tables), axis by axis in order."""
    axes = (2, 3, 4) if geom.layout == "NCDHW" else (1, 2, 3)
    for axis, size, (before, after) in zip(axes, geom.sizes, geom.padding):
        table = _padding_mode.source_index(size, before, after, geom.mode)
        moved = np.moveaxis(padded, axis, 0)
        result = moved[before:before + size].copy()
        for p in itertools.chain(range(before), range(before + size, before + size + after)):
            if table[p] >= 0:
                result[table[p]] += moved[p]
        padded = np.moveaxis(result, 0, axis)
    return padded


def _flipped(geom, grad_x5, alloc):
    """(target, geometry, tables) of the flipped convolution whose forward pass is the
    input gradient of a stride-1 convolution: padded by dilation·(k − 1) − before
    (negative: the table starts inside the output gradient) for "zeros", straight into
    grad_x5; for the other modes by dilation·(k − 1) on both sides, into a scratch volume
    of the padded size that _fold folds back."""
    kernel, dilation = geom.kernel, geom.dilation
    reach = [d * (k - 1) for d, k in zip(dilation, kernel)]
    if geom.mode == "zeros":
        target, sizes = grad_x5, geom.sizes
        pads = tuple((r - before, r - after) for r, (before, after) in zip(reach,
                                                                           geom.padding))
    else:
        sizes = tuple(s + b + a for s, (b, a) in zip(geom.sizes, geom.padding))
        target = alloc("conv3d_padded_grad", geom.batch * geom.in_channels * math.prod(sizes),
                       grad_x5.dtype).reshape(_three_d.image_shape(
                           geom.batch, geom.in_channels, sizes, geom.layout))
        pads = tuple((r, r) for r in reach)
    flipped = _three_d.Geometry(geom.batch, geom.out_channels, geom.out_sizes,
                                geom.in_channels, geom.groups, kernel, (1, 1, 1), pads,
                                dilation, sizes, geom.layout)
    tables = [_three_d.shifted_table(out, before, 0, "zeros", size + r)
              for out, (before, _), size, r in zip(geom.out_sizes, pads, sizes, reach)]
    return target, flipped, tables


def _flipped_algorithm(flipped, itemsize, algorithm, capped=False):
    """The algorithm of the flipped convolution of an input gradient: Winograd where it
    can serve and `algorithm` asks for it ("winograd") or its rule takes it ("auto")."""
    try:
        route = planes_algorithm(flipped, itemsize, algorithm, capped=capped)
    except ValueError:  # "winograd" asked, but this flipped convolution is not eligible
        route = "gemm"
    return route


def _input_grad(grad5, weight, geom, grad_x5, alloc=_scratch, cap=None, algorithm="auto"):
    """grad_x5 (C-contiguous, the input's shape) = the gradient of conv3d w.r.t. its
    input."""
    if grad_x5.size == 0:
        return
    if grad5.size == 0:
        grad_x5.fill(0)
        return
    if _channels_last_pays(geom):
        n, c, d, h, w = grad_x5.shape
        grad_xl = alloc("conv3d_x_cl", grad_x5.size, grad_x5.dtype).reshape(n, d, h, w, c)
        _input_grad(_to_channels_last(grad5, "conv3d_grad_cl", alloc),
                    _channels_last_weight(weight, alloc), geom._replace(layout="NDHWC"), grad_xl,
                    alloc, cap, algorithm)
        _change_layout(grad_xl, grad_x5, False)
        return
    channels_last = geom.layout == "NDHWC"
    itemsize = grad5.dtype.itemsize
    if geom.stride == (1, 1, 1):
        target, flipped, tables = _flipped(geom, grad_x5, alloc)
        _forward(grad5, flipped_weight(weight, geom.layout, geom.groups, alloc), None, target,
                 flipped, tables, alloc, cap,
                 _flipped_algorithm(flipped, itemsize, algorithm, cap is not None))
        if target is not grad_x5:
            np.copyto(grad_x5, _fold(target, geom))
        return
    vol, run, threads, ws, _ = _plan(
        geom.batch, geom.in_channels, geom.sizes, geom.out_channels, geom.groups,
        geom.kernel, geom.stride, geom.dilation, geom.out_sizes, channels_last, False,
        itemsize, geom.padding[2][0], cap=cap)
    threads = max(1, min(threads, geom.batch * geom.groups))
    workspace = alloc("conv3d_workspace", threads * run["col_size"], grad5.dtype)
    with blas_limit(1):
        _vol2col.conv3d_input_grad(grad5.reshape(-1), weight.reshape(-1),
                                   grad_x5.reshape(-1), workspace, vol,
                                   *_three_d.tables(geom), run, threads)


def _backward(grad5, x5, weight, geom, tables, grad_x5, grad_w, alloc=_scratch, cap=None,
              algorithm="auto"):
    """The input gradient into grad_x5 and the weight gradient into grad_w (either may be
    None); an NCDHW convolution that runs channels-last transposes the output gradient
    and the input once for both."""
    convert = grad5.size and x5.size and (
        _channels_last_pays(geom) or (geom.layout == "NCDHW" and planes_algorithm(
            geom, grad5.dtype.itemsize, algorithm, capped=cap is not None) == "winograd"))
    if not convert:
        if grad_x5 is not None:
            _input_grad(grad5, weight, geom, grad_x5, alloc, cap, algorithm)
        if grad_w is not None:
            _weight_grad(grad5, x5, geom, tables, grad_w, alloc, cap)
        return
    geom_l = geom._replace(layout="NDHWC")
    grad_l = _to_channels_last(grad5, "conv3d_grad_cl", alloc)
    weight_l = _channels_last_weight(weight, alloc)
    if grad_x5 is not None:
        n, c, d, h, w = grad_x5.shape
        grad_xl = alloc("conv3d_grad_x_cl", grad_x5.size, grad_x5.dtype).reshape(n, d, h, w,
                                                                                  c)
        _input_grad(grad_l, weight_l, geom_l, grad_xl, alloc, cap, algorithm)
        _change_layout(grad_xl, grad_x5, False)
    if grad_w is not None:
        grad_wl = alloc("conv3d_weight_cl", grad_w.size, grad_w.dtype).reshape(weight_l.shape)
        _weight_grad(grad_l, _to_channels_last(x5, "conv3d_x_cl", alloc), geom_l, tables,
                     grad_wl, alloc, cap)
        np.copyto(grad_w, grad_wl.transpose(4, 3, 0, 1, 2))


def bias_grad(grad5, layout):
    """Σ of the output gradient over the batch and every position, per channel."""
    axes = (0, 2, 3, 4) if layout == "NCDHW" else (0, 1, 2, 3)
    return grad5.sum(axis=axes, dtype=grad5.dtype)


# ------------------------------------------------------------------ public functions
def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NCDHW", padding_mode="zeros", out=None, algorithm="auto"):
    """3-D convolution (cross-correlation), as ``torch.nn.functional.conv3d``.

    Parameters
    ----------
    x : ndarray
        NCDHW: (N, C_in, D, H, W) or (C_in, D, H, W). NDHWC: (N, D, H, W, C_in) or
        (D, H, W, C_in). float32 or float64.
    weight : ndarray
        NCDHW: OIDHW (C_out, C_in/groups, kd, kh, kw). NDHWC: DHWIO
        (kd, kh, kw, C_in/groups, C_out). Same dtype as `x`.
    bias : ndarray (C_out,), optional
    stride, dilation : int or (d, h, w)
    padding : int, a 3-tuple of ints or (before, after) pairs, "valid" or "same"
        "same" is TensorFlow's SAME: ``ceil(D/stride)`` outputs per axis, the odd pixel of
        padding at the end (PyTorch's "same" at stride 1).
    groups : int
        Divides C_in and C_out; groups == C_in is a depthwise convolution.
    layout : {"NCDHW", "NDHWC"}
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads, as PyTorch's ``nn.Conv3d(padding_mode=...)``: zeros, the
        mirror image without the edge, the edge repeated, or the volume wrapped around.
        "reflect" needs padding < the axis size, "circular" padding <= it.
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.
    algorithm : {"auto", "gemm", "winograd"}
        "winograd": each depth tap as the 2-D engine's Winograd convolution of the depth
        planes (3×3 in height and width, stride and dilation 1 there, zero padding there,
        not depthwise; :func:`conv2d`'s rule); "gemm": vol2col + GEMM; "auto" (default):
        Winograd for float32 where conv2d's rule takes it for the planes.

    Returns
    -------
    ndarray
        NCDHW: (N, C_out, OD, OH, OW); NDHWC: (N, OD, OH, OW, C_out); no N for a 4-D `x`,
        where ``OD = (D + before + after - dilation*(kd-1) - 1)//stride + 1`` (likewise
        OH, OW).

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or `x`, `weight` and `bias` of different
        dtypes (no casting).
    ValueError
        Before any work, naming the argument: mismatched channels or groups, a bad
        geometry, layout, padding mode or `out`, a padding the mode cannot read from the
        volume, a GEMM dimension beyond BLAS's int, or ``algorithm="winograd"`` where it
        cannot serve.

    See Also
    --------
    conv3d_backward, conv_transpose3d, Conv3D, conv2d
    fastconv.reference.conv3d_naive : the NumPy oracle (NDHWC / DHWIO).

    Examples
    --------
    >>> x = np.ones((2, 3, 4, 6, 6), np.float32); w = np.ones((8, 3, 3, 3, 3), np.float32)
    >>> fastconv.conv3d(x, w, padding=1).shape
    (2, 8, 4, 6, 6)
    >>> float(fastconv.conv3d(x, w, padding=1)[0, 0, 1, 2, 2])   # 3 channels × 27 taps
    81.0
    >>> float(fastconv.conv3d(x, w, padding=1, padding_mode="replicate")[0, 0, 0, 0, 0])
    81.0
    >>> fastconv.conv3d(x, w, stride=2, padding="same").shape    # ceil(4/2), ceil(6/2)
    (2, 8, 2, 3, 3)
    >>> xl = np.ones((5, 5, 5, 2), np.float32)                   # NDHWC, one volume
    >>> fastconv.conv3d(xl, np.ones((1, 1, 1, 2, 4), np.float32), layout="NDHWC").shape
    (5, 5, 5, 4)
    """
    fn = "conv3d"
    layout = _three_d.normalize_layout(layout, fn)
    mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    algorithm = _validate.normalize_algorithm(algorithm, fn)
    x, weight, bias = _three_d.check_conv_arrays(fn, x, weight, bias)
    x5, batched = _three_d.split_batch(x, "input", fn, layout)
    geom = _three_d.conv_geometry(fn, x5, weight, stride, padding, dilation, groups, layout,
                                  x.shape, mode)
    _validate.check_bias(fn, bias, geom.out_channels)
    _three_d.check_blas_range(fn, geom)
    planes_algorithm(geom, x.dtype.itemsize, algorithm, fn)  # checks 'winograd'
    shape = geom.output_shape
    out = _validate.check_out(out, shape if batched else shape[1:], x.dtype,
                              [x, weight, bias], fn)
    out5 = _memory.result(out, shape, x.dtype)
    _forward(np.ascontiguousarray(x5), np.ascontiguousarray(weight),
             None if bias is None else np.ascontiguousarray(bias), out5, geom,
             _three_d.tables(geom), algorithm=algorithm)
    if out is not None:
        return out
    return out5 if batched else out5[0]


def conv3d_backward(grad_output, x, weight, *, stride=1, padding=0, dilation=1, groups=1,
                    layout="NCDHW", padding_mode="zeros", needs_input_grad=True,
                    needs_weight_grad=True, needs_bias_grad=True, algorithm="auto"):
    """Gradients of :func:`conv3d` (as PyTorch autograd computes them).

    Parameters
    ----------
    grad_output : ndarray
        Gradient of the loss w.r.t. conv3d's output, shape ``conv3d(x, weight, ...).shape``.
    x, weight, stride, padding, dilation, groups, layout, padding_mode
        The forward call's arguments.
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Which gradients to compute; the others are returned as None.
    algorithm : {"auto", "gemm", "winograd"}
        For the input gradient, at stride 1 the convolution of grad_output with the flipped
        weight: as for :func:`conv3d` ("winograd" requires the forward convolution to be
        eligible). The weight gradient always runs on GEMMs.

    Returns
    -------
    Gradients(grad_input, grad_weight, grad_bias)
        grad_input shaped like `x` (with a padding mode other than "zeros", what the
        padding read is added onto the pixels it was read from), grad_weight like
        `weight`, grad_bias (C_out,).

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or mixed dtypes.
    ValueError
        For `grad_output` not of conv3d's result shape, or any argument conv3d would
        refuse.

    See Also
    --------
    conv3d, conv2d_backward
    fastconv.reference.conv3d_backward : the NumPy oracle.

    Examples
    --------
    >>> x = np.ones((2, 3, 4, 5, 5), np.float32); w = np.ones((4, 3, 3, 3, 3), np.float32)
    >>> y = fastconv.conv3d(x, w, padding="same")
    >>> g = fastconv.conv3d_backward(np.ones_like(y), x, w, padding="same")
    >>> g.grad_input.shape, g.grad_weight.shape, g.grad_bias.shape
    ((2, 3, 4, 5, 5), (4, 3, 3, 3, 3), (4,))
    >>> float(g.grad_input[0, 0, 0, 0, 0])        # 4 output channels × 2·2·2 taps
    32.0
    """
    fn = "conv3d_backward"
    layout = _three_d.normalize_layout(layout, fn)
    mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    algorithm = _validate.normalize_algorithm(algorithm, fn)
    x, weight, _ = _three_d.check_conv_arrays(fn, x, weight, None)
    grad_output = _validate.as_array(grad_output, "grad_output", fn)
    _validate.check_float_dtype(grad_output, "grad_output", fn)
    _validate.check_same_dtype(fn, input=x, grad_output=grad_output)
    x5, batched = _three_d.split_batch(x, "input", fn, layout)
    geom = _three_d.conv_geometry(fn, x5, weight, stride, padding, dilation, groups, layout,
                                  x.shape, mode)
    _three_d.check_blas_range(fn, geom)
    planes_algorithm(geom, x.dtype.itemsize, algorithm, fn)  # checks 'winograd'
    expected = geom.output_shape if batched else geom.output_shape[1:]
    if grad_output.shape != expected:
        raise ValueError(f"{fn}: expected grad_output of shape {expected} (the conv3d output "
                         f"for input {x.shape} and weight {weight.shape}), got "
                         f"{grad_output.shape}")
    grad5 = np.ascontiguousarray(grad_output).reshape(geom.output_shape)
    weight = np.ascontiguousarray(weight)
    grad_x = _memory.empty(geom.input_shape, x.dtype) if needs_input_grad else None
    grad_w = _memory.empty(weight.shape, x.dtype) if needs_weight_grad else None
    _backward(grad5, np.ascontiguousarray(x5), weight, geom, _three_d.tables(geom), grad_x,
              grad_w, algorithm=algorithm)
    if grad_x is not None and not batched:
        grad_x = grad_x[0]
    grad_b = None
    if needs_bias_grad:
        grad_b = bias_grad(grad5, layout)
    return Gradients(grad_x, grad_w, grad_b)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCDHW", padding_mode="zeros", out=None,
                     algorithm="auto"):
    """Transposed 3-D convolution, as ``torch.nn.functional.conv_transpose3d``: the
    gradient of conv3d with respect to its input.

    Parameters
    ----------
    x : ndarray, NCDHW (N, C_in, D, H, W) or NDHWC (N, D, H, W, C_in); 4-D for one volume
    weight : ndarray
        NCDHW: (C_in, C_out/groups, kd, kh, kw); NDHWC: (kd, kh, kw, C_out/groups, C_in).
    bias : ndarray (C_out,), optional
    stride, dilation : int or (d, h, w)
    padding : int or a 3-tuple of ints or (before, after) pairs
        Removed from the full output, as PyTorch's ``padding``.
    output_padding : int or (d, h, w)
        Extra planes at the end of each axis; each < max(stride, dilation).
    groups : int
    layout : {"NCDHW", "NDHWC"}
    padding_mode : {"zeros"}
        Only "zeros", as PyTorch's ConvTranspose3d.
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.
    algorithm : {"auto", "gemm", "winograd"}
        At stride 1 the result is a convolution of `x` with the flipped weight: Winograd
        serves it as in :func:`conv3d` where that convolution is eligible ("winograd" on
        one that is not is a ValueError).

    Returns
    -------
    ndarray
        NCDHW (N, C_out, OD, OH, OW) or NDHWC (N, OD, OH, OW, C_out), where
        ``OD = (D - 1)*stride - before - after + dilation*(kd - 1) + output_padding + 1``.

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or mixed dtypes.
    ValueError
        For mismatched channels or groups, ``output_padding >= max(stride, dilation)``,
        a padding that removes the whole output, a padding mode other than "zeros", a bad
        layout or `out`, naming it.

    See Also
    --------
    conv3d, conv_transpose2d
    fastconv.reference.conv_transpose3d : the NumPy oracle.

    Examples
    --------
    >>> y = np.ones((2, 8, 3, 4, 4), np.float32)
    >>> w = np.ones((8, 4, 4, 4, 4), np.float32)          # (C_in, C_out/groups, kd, kh, kw)
    >>> fastconv.conv_transpose3d(y, w, stride=2, padding=1).shape
    (2, 4, 6, 8, 8)
    """
    fn = "conv_transpose3d"
    layout = _three_d.normalize_layout(layout, fn)
    _padding_mode.normalize_padding_mode(padding_mode, fn, transposed=True)
    algorithm = _validate.normalize_algorithm(algorithm, fn)
    x, weight, bias = _three_d.check_conv_arrays(fn, x, weight, bias)
    x5, batched = _three_d.split_batch(x, "input", fn, layout)
    groups = _validate.as_int(groups, "groups", fn, 1)
    n, channels, sizes = _three_d.dims(x5.shape, layout)
    cin, cout_g, kernel = _three_d.weight_dims(weight, layout)
    if channels != cin:
        raise ValueError(f"{fn}: expected input with {cin} channels (weight {weight.shape}), "
                         f"got {channels} channels in input of shape {x.shape}")
    if cin % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the {cin} input channels")
    if min(kernel) < 1 or cout_g < 1 or cin < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    cout = cout_g * groups
    stride = _three_d.normalize_triple(stride, "stride", fn)
    dilation = _three_d.normalize_triple(dilation, "dilation", fn)
    pads = _three_d.normalize_padding(padding, fn)
    out_pad = _three_d.normalize_triple(output_padding, "output_padding", fn, minimum=0)
    for axis, op, s, d in zip(_three_d.AXES, out_pad, stride, dilation):
        if op >= max(s, d):
            raise ValueError(f"{fn}: output_padding={out_pad} must be smaller than stride "
                             f"{stride} or dilation {dilation} (the {axis} axis)")
    out_sizes = []
    for axis, size, k, s, d, (before, after), op in zip(_three_d.AXES, sizes, kernel, stride,
                                                        dilation, pads, out_pad):
        full = (size - 1) * s + d * (k - 1) + op + 1
        if full - before - after < 1:
            raise ValueError(f"{fn}: padding={pads} removes the whole output {axis} ({full} "
                             f"before padding)")
        out_sizes.append(full - before - after)
    out_sizes = tuple(out_sizes)
    # The convolution whose input gradient this is must fit its window (an empty x can
    # make its input smaller than the kernel).
    _three_d.output_sizes(fn, out_sizes, kernel, stride, pads, dilation, "output")
    geom = _three_d.Geometry(n, cout, out_sizes, cin, groups, kernel, stride, pads, dilation,
                             tuple(sizes), layout)
    _validate.check_bias(fn, bias, cout)
    _three_d.check_blas_range(fn, geom)
    if algorithm == "winograd":
        if stride != (1, 1, 1):
            raise ValueError(f"{fn}: algorithm='winograd' needs stride 1, got {stride}")
        planes_algorithm(_flipped(geom, None, None)[1], x.dtype.itemsize, algorithm, fn)
    shape = geom.input_shape
    out = _validate.check_out(out, shape if batched else shape[1:], x.dtype,
                              [x, weight, bias], fn)
    out5 = _memory.result(out, shape, x.dtype)
    _input_grad(np.ascontiguousarray(x5), np.ascontiguousarray(weight), geom, out5,
                algorithm=algorithm)
    if bias is not None and out5.size:
        out5 += bias.reshape(-1, 1, 1, 1) if layout == "NCDHW" else bias
    if out is not None:
        return out
    return out5 if batched else out5[0]


# ------------------------------------------------------------------ the layer
class Conv3D:
    """3-D convolution layer on NumPy arrays, like ``torch.nn.Conv3d``.

    Keeps its workspace (column tiles, weight-gradient accumulators) between calls: a
    repeated call with the same input shape allocates only its result (nothing with
    ``out=``); ``forward``/``backward`` hold a lock, ``backward`` adds into the
    gradients, and a pickled layer keeps its parameters and gradients.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (d, h, w)
    padding : int, a 3-tuple of ints or (before, after) pairs, "valid" or "same"
        "same" as for :func:`fastconv.conv3d` (TensorFlow's SAME with a stride).
    groups : int
    bias : bool
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        As for :func:`fastconv.conv3d`.
    layout : {"NCDHW", "NDHWC"}
        NCDHW keeps ``weight`` as OIDHW (C_out, C_in/groups, kd, kh, kw); NDHWC as DHWIO
        (kd, kh, kw, C_in/groups, C_out).
    dtype : float32 or float64
    seed : int, optional
        Seed of the PyTorch-style initialisation: weight and bias uniform in
        ±1/√(C_in/groups·kd·kh·kw).
    max_workspace_bytes : int, optional
        Cap on the workspace (column tiles and weight-gradient accumulators); below what
        the threads would use, fewer threads run and then smaller tiles, with the same
        result up to float rounding. A cap below one output position's columns and one
        accumulator is a ValueError on the call. A capped layer runs no Winograd.
    algorithm : {"auto", "gemm", "winograd"}
        As for :func:`fastconv.conv3d` ("winograd" where it cannot serve is a ValueError
        on the call).

    Attributes
    ----------
    weight, bias : ndarray (bias None when ``bias=False``)
    weight_grad, bias_grad : ndarray
        Gradients accumulated by :meth:`backward`; :meth:`zero_grad` clears them.
    kernel_size, stride, dilation : (int, int, int)
    padding : three (before, after) pairs, or "same" with a stride > 1
    workspace_bytes : int
        Bytes of workspace held between calls.

    Raises
    ------
    TypeError
        For a `dtype` other than float32 or float64.
    ValueError
        For a bad argument, naming it.

    Examples
    --------
    >>> layer = fastconv.Conv3D(2, 4, 3, padding=1, seed=0)
    >>> y = layer(np.ones((1, 2, 5, 6, 6), np.float32))
    >>> y.shape
    (1, 4, 5, 6, 6)
    >>> grad_x = layer.backward(np.ones_like(y))
    >>> grad_x.shape, layer.weight_grad.shape, layer.bias_grad.shape
    ((1, 2, 5, 6, 6), (4, 2, 3, 3, 3), (4,))
    >>> layer.workspace_bytes > 0
    True
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, layout="NCDHW",
                 dtype=np.float32, seed=None, max_workspace_bytes=None, algorithm="auto"):
        fn = "Conv3D"
        self.layout = _three_d.normalize_layout(layout, fn)
        self.algorithm = _validate.normalize_algorithm(algorithm, fn)
        self.padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
        self.in_channels = _validate.as_int(in_channels, "in_channels", fn, 1)
        self.out_channels = _validate.as_int(out_channels, "out_channels", fn, 1)
        self.groups = _validate.as_int(groups, "groups", fn, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{fn}: groups={self.groups} must divide in_channels "
                             f"({self.in_channels}) and out_channels ({self.out_channels})")
        self.kernel_size = _three_d.normalize_triple(kernel_size, "kernel_size", fn)
        self.stride = _three_d.normalize_triple(stride, "stride", fn)
        self.dilation = _three_d.normalize_triple(dilation, "dilation", fn)
        for name in ("kernel_size", "stride", "dilation"):
            for value in getattr(self, name):
                if value > _validate.MAX_WINDOW_VALUE:
                    raise ValueError(f"{fn}: {name}={value} exceeds the largest supported "
                                     f"value 2**62 = {_validate.MAX_WINDOW_VALUE}")
        self.padding = _three_d.resolve_padding(padding, self.kernel_size, self.stride,
                                                self.dilation, fn)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _validate.FLOAT_DTYPES:
            raise TypeError(f"{fn}: dtype must be float32 or float64, got {self.dtype}")
        if max_workspace_bytes is not None:
            max_workspace_bytes = _validate.as_int(max_workspace_bytes, "max_workspace_bytes",
                                                   fn, 1)
        self.max_workspace_bytes = max_workspace_bytes
        cin_g = self.in_channels // self.groups
        kd, kh, kw = self.kernel_size
        shape = ((self.out_channels, cin_g, kd, kh, kw) if self.layout == "NCDHW"
                 else (kd, kh, kw, cin_g, self.out_channels))
        bound = 1.0 / math.sqrt(cin_g * kd * kh * kw)
        rng = np.random.default_rng(seed)
        self.weight = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self.bias = (rng.uniform(-bound, bound, size=self.out_channels).astype(self.dtype)
                     if bias else None)
        self.weight_grad = np.zeros_like(self.weight)
        self.bias_grad = None if self.bias is None else np.zeros_like(self.bias)
        self._reset_runtime_state()

    def _reset_runtime_state(self):
        self._lock = threading.Lock()
        self._buffers = {}
        self._geometries = {}
        self._saved = threading.local()

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_lock", "_buffers", "_geometries", "_saved"):
            del state[name]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_runtime_state()

    @property
    def workspace_bytes(self):
        """Bytes of workspace held between calls."""
        return sum(buffer.nbytes for buffer in self._buffers.values())

    def _alloc(self, slot, size, dtype):
        """The layer's own buffer for `slot`, grown when a call needs more."""
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[slot] = _memory.empty(size, dtype)
        return buffer[:size]

    def _geometry(self, x5, x_shape, fn):
        """(geometry, source-index tables) for an input shape, made once."""
        key = x5.shape
        cached = self._geometries.get(key)
        if cached is None:
            n, channels, sizes = _three_d.dims(x5.shape, self.layout)
            if channels != self.in_channels:
                raise ValueError(f"{fn}: expected input with {self.in_channels} channels "
                                 f"(weight {self.weight.shape}, groups={self.groups}), got "
                                 f"{channels} channels in input of shape {x_shape}")
            geom = _three_d.make_geometry(fn, n, channels, sizes, self.out_channels,
                                          self.groups, self.kernel_size, self.stride,
                                          self.padding, self.dilation, self.layout,
                                          self.padding_mode)
            _three_d.check_blas_range(fn, geom)
            planes_algorithm(geom, self.dtype.itemsize, self.algorithm, fn,
                             capped=self.max_workspace_bytes is not None)
            cached = self._geometries[key] = (geom, _three_d.tables(geom))
        return cached

    def _run(self, call, *args, **kwargs):
        """Run a pass; a workspace cap too small is reported under this layer's name."""
        try:
            return call(*args, alloc=self._alloc, cap=self.max_workspace_bytes, **kwargs)
        except ValueError as error:
            if str(error).startswith("max_workspace_bytes"):
                raise ValueError(f"Conv3D: {error}") from None
            raise

    def forward(self, x, out=None):
        """y = conv3d(x, weight, bias). Keeps `x` for :meth:`backward`; ``layer(x)`` is
        ``layer.forward(x)``.

        Parameters
        ----------
        x : ndarray
            (N, C, D, H, W) / (C, D, H, W) for NCDHW, (N, D, H, W, C) / (D, H, W, C) for
            NDHWC, in the layer's dtype.
        out : ndarray, optional
            C-contiguous buffer of the result's shape and dtype, not overlapping an input.

        Returns
        -------
        ndarray
            NCDHW: (N, C_out, OD, OH, OW); NDHWC: (N, OD, OH, OW, C_out); no N for a 4-D
            `x`.

        Raises
        ------
        TypeError
            For an input whose dtype is not the layer's.
        ValueError
            For a wrong shape or channel count, a volume smaller than the window, a
            padding the mode cannot read, or an unusable `out`.

        Examples
        --------
        >>> layer = fastconv.Conv3D(3, 8, 3, stride=2, seed=0, layout="NDHWC")
        >>> layer.forward(np.ones((9, 9, 9, 3), np.float32)).shape
        (4, 4, 4, 8)
        """
        fn = "Conv3D.forward"
        x = _validate.as_array(x, "input", fn)
        _validate.check_float_dtype(x, "input", fn)
        _validate.check_same_dtype(fn, input=x, weight=self.weight)
        x5, batched = _three_d.split_batch(x, "input", fn, self.layout)
        with self._lock:
            geom, tables = self._geometry(x5, x.shape, fn)
            shape = geom.output_shape
            out = _validate.check_out(out, shape if batched else shape[1:], self.dtype,
                                      [x, self.weight, self.bias], fn)
            out5 = _memory.result(out, shape, self.dtype)
            x5 = np.ascontiguousarray(x5)
            bias = None if self.bias is None else np.ascontiguousarray(self.bias)
            self._run(_forward, x5, np.ascontiguousarray(self.weight), bias, out5, geom,
                      tables, algorithm=self.algorithm)
            self._saved.input = (x5, batched)
        if out is not None:
            return out
        return out5 if batched else out5[0]

    __call__ = forward

    def backward(self, grad_output):
        """Gradient w.r.t. the input of the last forward made in this Python thread; adds
        into ``weight_grad`` / ``bias_grad``.

        Parameters
        ----------
        grad_output : ndarray
            Gradient of the loss w.r.t. the last forward's result, of its shape and dtype.

        Returns
        -------
        ndarray
            The gradient w.r.t. that forward's input, of the input's shape.

        Raises
        ------
        RuntimeError
            When no forward was made in this Python thread.
        TypeError
            For a `grad_output` whose dtype is not the layer's.
        ValueError
            For a `grad_output` not of the forward result's shape.

        Examples
        --------
        >>> layer = fastconv.Conv3D(2, 4, 3, padding=1, seed=0)
        >>> y = layer(np.ones((1, 2, 3, 3, 3), np.float32))
        >>> layer.backward(np.ones_like(y)).shape
        (1, 2, 3, 3, 3)
        >>> float(layer.bias_grad[0])                  # 1·3·3·3 summed
        27.0
        """
        fn = "Conv3D.backward"
        with self._lock:
            saved = getattr(self._saved, "input", None)
            if saved is None:
                raise RuntimeError(f"{fn}: call forward before backward")
            x5, batched = saved
            geom, tables = self._geometry(x5, x5.shape, fn)
            grad_output = _validate.as_array(grad_output, "grad_output", fn)
            _validate.check_float_dtype(grad_output, "grad_output", fn)
            _validate.check_same_dtype(fn, grad_output=grad_output, weight=self.weight)
            expected = geom.output_shape if batched else geom.output_shape[1:]
            if grad_output.shape != expected:
                raise ValueError(f"{fn}: expected grad_output of shape {expected}, got "
                                 f"{grad_output.shape}")
            grad5 = np.ascontiguousarray(grad_output).reshape(geom.output_shape)
            weight = np.ascontiguousarray(self.weight)
            grad_x5 = _memory.empty(x5.shape, self.dtype)
            grad_w = self._alloc("weight_grad", weight.size, self.dtype).reshape(weight.shape)
            self._run(_backward, grad5, x5, weight, geom, tables, grad_x5, grad_w,
                      algorithm=self.algorithm)
            self.weight_grad += grad_w
            if self.bias is not None:
                self.bias_grad += bias_grad(grad5, self.layout)
        return grad_x5 if batched else grad_x5[0]

    def zero_grad(self):
        """Set ``weight_grad`` and ``bias_grad`` to zero (as ``torch.nn.Module.zero_grad``).

        Returns
        -------
        None

        Raises
        ------
        None
            It never raises.

        Examples
        --------
        >>> layer = fastconv.Conv3D(1, 1, 1, seed=0)
        >>> _ = layer.backward(layer(np.ones((1, 1, 2, 2, 2), np.float32)))
        >>> layer.zero_grad()
        >>> float(abs(layer.weight_grad).sum())
        0.0
        """
        self.weight_grad.fill(0)
        if self.bias_grad is not None:
            self.bias_grad.fill(0)

    def __repr__(self):
        return (f"Conv3D({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, padding_mode={self.padding_mode!r}, "
                f"layout={self.layout!r}, dtype={self.dtype.name}, "
                f"algorithm={self.algorithm!r})")
