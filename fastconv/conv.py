"""Convolution on BLAS GEMM (SPEC §2): conv2d, conv2d_backward, conv_transpose2d.

Each image's columns are built by the im2col kernels straight into a preallocated
workspace and multiplied with scipy's ``sgemm``/``dgemm`` from Cython without the GIL.
The work is cut into (image, tile of output rows) items run by an OpenMP loop; each
thread builds its tile's columns in its own cache-sized slice of the workspace and calls a
single-threaded GEMM, so OpenMP and BLAS threads never fight over the cores.

Layouts: NCHW input with OIHW weight (PyTorch), or NHWC input with HWIO weight
(TensorFlow). A 1×1, stride-1, unpadded convolution is a plain GEMM on the input.
"""
from __future__ import annotations

import contextlib
import os
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from fastconv import _memory
from fastconv import geometry as geo
from fastconv import cpu
from fastconv.threads import blas_limit, get_num_threads

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "Gradients"]

# The direct loops are arithmetic-bound: the widest build this CPU runs.
_conv = cpu.load_kernel("_conv")
_depthwise = cpu.load_kernel("_depthwise")

Gradients = namedtuple("Gradients", ["grad_input", "grad_weight", "grad_bias"])
Gradients.__doc__ = "conv2d_backward's result; a field is None when it was not asked for."


# ------------------------------------------------------------------ validation
def _check_arrays(fn, x, weight, bias, x_name="input"):
    """ndarrays of float32/float64 sharing one dtype; weight 4-D; bias 1-D or None."""
    x = geo.as_array(x, x_name, fn)
    weight = geo.as_array(weight, "weight", fn)
    geo.check_float_dtype(x, x_name, fn)
    geo.check_float_dtype(weight, "weight", fn)
    if bias is not None:
        bias = geo.as_array(bias, "bias", fn)
        geo.check_float_dtype(bias, "bias", fn)
    geo.check_same_dtype(fn, **{x_name: x, "weight": weight, "bias": bias})
    if weight.ndim != 4:
        raise ValueError(f"{fn}: expected a 4-D weight, got shape {weight.shape}")
    return x, weight, bias


def _check_bias(fn, bias, channels):
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"{fn}: expected bias of shape ({channels},), got {bias.shape}")


def _conv_geometry(fn, x4, weight, stride, padding, dilation, groups, layout, x_shape):
    """ConvGeometry for a conv2d call, with the channel checks in SPEC §0's words."""
    groups = geo._as_int(groups, "groups", fn, 1)
    if layout == "NCHW":
        out_channels, cin_g, kh, kw = weight.shape
        channels = x4.shape[1]
    else:
        kh, kw, cin_g, out_channels = weight.shape
        channels = x4.shape[3]
    if out_channels % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the weight's {out_channels} output "
                         f"channels (weight {weight.shape})")
    if channels != cin_g * groups:
        raise ValueError(f"{fn}: expected input with {cin_g * groups} channels (weight "
                         f"{weight.shape}, groups={groups}), got {channels} channels in input "
                         f"of shape {x_shape}")
    if kh < 1 or kw < 1 or cin_g < 1 or out_channels < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    return geo.ConvGeometry(x4.shape, out_channels, (kh, kw), stride, padding, dilation,
                            groups, layout=layout, fn=fn)


def _check_blas_range(fn, geom):
    """Every GEMM dimension and leading dimension must fit BLAS's C int."""
    m, k, n = geom.gemm_shape
    dims = {"C_out": geom.out_channels, "C_in": geom.in_channels, "K": k, "M": m,
            "OH*OW": n, "H*W": geom.height * geom.width}
    for name, value in dims.items():
        if value > geo.BLAS_INT_MAX:
            raise ValueError(f"{fn}: {name} = {value} exceeds the BLAS int range "
                             f"({geo.BLAS_INT_MAX}); split the input")


# ------------------------------------------------------------------ planning
# Target bytes of one thread's column tile. Measured on the layer suite (2 cores, 2 MiB L2
# each, 32 MiB L3): 4 MiB beats 1 MiB by 5-25% on large layers (fewer, wider GEMMs, each
# packing the weights once) and 256 KiB by up to 40%; 16 MiB gains little more.
TILE_BYTES = 4 << 20
# Work items to aim for when the batch alone has too few images. It must not depend on the
# thread count in use: tiles change the GEMM shapes, and so the last bits of the result.
WORK_ITEMS = max(8, 2 * (os.cpu_count() or 1))
# Fewest output positions in a tile cut for parallelism (narrower GEMMs run slowly).
MIN_TILE_POSITIONS = 256
# Output positions one NHWC forward GEMM aims at when images are small (resnet50's 7×7
# and 14×14 layers): OpenBLAS packs the whole weight for every GEMM call, so 49 positions
# at a time spend much of their time packing (batch 8: 1.2x for 7×7 3×3, 1.4x for 7×7 1×1).
# (14×14 images, two at a time, measured 0.75-1.0x: only smaller ones are grouped.)
BATCH_POSITIONS = 512
SMALL_IMAGE_POSITIONS = 128
# Below this many floating-point operations a convolution runs on one thread: waking the
# OpenMP team costs more than it saves (microseconds, milliseconds when another process
# holds a core), e.g. the 8×8 images of examples/train_digits.py. Measured on 2 cores: an
# 8→16 3×3 conv of one 32×32 image (2.1 MFLOP) takes 26 µs on one thread, 21 on two; one
# of 1.5 MFLOP 27 and 29.
PARALLEL_MIN_FLOPS = 1 << 21
# Fewest output channels per GEMM when an image's channels are split between threads
# (measured on 2 cores: blocks of 128 beat 64 by 10-30% and 16 by up to 45%).
MIN_CHANNEL_BLOCK = 128


@dataclass
class Launch:
    """How one call runs: the kernels' plan, the thread count and the workspace it needs."""

    plan: dict
    depthwise: bool  # groups == C_in: direct loops instead of GEMMs with M = 1
    num_threads: int
    col_size: int    # column elements per thread
    workspace: int   # elements in all (num_threads tiles; the direct path: + packed weight)
    partials: int    # per-thread weight-gradient accumulators in all (backward only)


# The direct small-GEMM forward path multiplies the packed weight by the image's rows in
# blocks of 12 output channels × 32 positions, re-reading the whole weight for every block
# of positions: it wins while the weight stays in the L2 cache. Measured on AVX-512,
# float32, 2 threads, against im2col + sgemm: 64 × 576 (resnet50.res2.3x3, vgg16.conv1_2)
# 1.03-1.33x, 16 × 144 2.1-2.4x, 64 × 147 and 32 × 27 (stems) 1.2-1.6x; 128 × 1152 at
# stride 2 1.0x, and weights of 2.4 MB and more 0.3-0.8x (re-read from L3 for every block
# of the 14- and 7-wide rows of those layers). NHWC: stems 1.4-2.5x, 16 × 144 1.4-1.5x,
# 64 × 576 1.0-1.2x.
DIRECT_MAX_WEIGHT_BYTES = 256 << 10
DIRECT_MAX_CHANNELS = 256


def uses_direct_path(geom, itemsize):
    """The forward pass multiplies register-blocked small-GEMM blocks instead of calling
    BLAS, with no im2col (NCHW: the packed weight by the image read through row pointers;
    NHWC: the image's windows read in place by the HWIO weight rows, C_out a multiple of
    16): float32, one group, a kernel larger than 1×1, C_out at most DIRECT_MAX_CHANNELS, a
    weight of at most DIRECT_MAX_WEIGHT_BYTES, in a build that has the block (AVX-512). (A
    strided 1×1 convolution is a GEMM on a subsampled image, which BLAS does as fast:
    0.88-1.02x.)"""
    kh, kw = geom.kernel_size
    depth = geom.in_channels * kh * kw
    return bool(_conv.SMALL_GEMM and itemsize == 4
                and (geom.layout == "NCHW" or geom.out_channels % 16 == 0)
                and geom.groups == 1 and kh * kw > 1
                and geom.out_channels <= DIRECT_MAX_CHANNELS
                and depth <= _conv.DIRECT_DEPTH_LIMIT
                and geom.out_channels * depth * itemsize <= DIRECT_MAX_WEIGHT_BYTES)


def is_depthwise(geom):
    """One input channel per group (groups == C_in > 1): the direct depthwise kernels."""
    return geom.groups > 1 and geom.in_channels == geom.groups


def plan_launch(geom, itemsize, *, weight_grad=False, max_workspace_bytes=None, fn="conv2d",
                shared_columns=False, backward=False):
    """Cut a convolution into (image, row tile) work items and size the workspace.

    A tile's columns aim at TILE_BYTES (cache-sized); with few images, tiles shrink towards
    WORK_ITEMS items (keeping at least MIN_TILE_POSITIONS output positions each). The tiles
    depend on the geometry and batch only, never on the thread count, so results are
    bit-identical for any number of threads. `max_workspace_bytes` caps the column tiles
    plus the weight-gradient accumulators of all threads: tiles shrink, then fewer threads
    run, and a cap below one output row's needs is a ValueError.

    With `shared_columns`, images whose tiles are too few for WORK_ITEMS instead build
    their whole column matrix once and split the GEMMs between threads by blocks of output
    channels (forward, weight gradient) or of column rows (input gradient, when `backward`):
    only when that makes more than one block."""
    threads = get_num_threads() if geom.flops >= PARALLEL_MIN_FLOPS else 1
    kh, kw = geom.kernel_size
    pointwise = geom.window.is_pointwise
    depthwise = is_depthwise(geom)
    row_elems = 0 if pointwise or depthwise else geom.out_w * geom.in_channels * kh * kw
    weight_elems = (geom.out_channels * geom.in_channels // geom.groups * kh * kw
                    if weight_grad else 0)
    out_h = max(geom.out_h, 1)
    tile_rows = out_h
    if row_elems:
        tile_rows = max(1, min(out_h, TILE_BYTES // (row_elems * itemsize)))
    wanted_tiles = min(-(-WORK_ITEMS // max(geom.batch, 1)), out_h,
                       max(1, out_h * geom.out_w // MIN_TILE_POSITIONS))
    # A power of two: even shares for 2, 4, 8 threads (3 tiles on 2 threads ran as 2 + 1;
    # resnet50.res3 at batch 1 and 3: 1.15-1.4x; rounding up to 4 tiles was 5% slower)
    wanted_tiles = 1 << (wanted_tiles.bit_length() - 1)
    tile_rows = min(tile_rows, -(-out_h // wanted_tiles))
    if max_workspace_bytes is not None:
        budget = max_workspace_bytes // itemsize
        if threads * (tile_rows * row_elems + weight_elems) > budget and row_elems:
            tile_rows = max(1, min(tile_rows, (budget // threads - weight_elems) // row_elems))
        per_thread = tile_rows * row_elems + weight_elems
        if per_thread and threads * per_thread > budget:
            threads = budget // per_thread
            if threads < 1:
                raise ValueError(
                    f"{fn}: max_workspace_bytes={max_workspace_bytes} is smaller than the "
                    f"workspace of one thread and one output row ({per_thread * itemsize} "
                    f"bytes)")
    m_group = geom.out_channels // geom.groups
    k_group = geom.in_channels // geom.groups * kh * kw
    plan = {"batch": geom.batch, "out_channels": geom.out_channels, "groups": geom.groups,
            "nhwc": geom.layout == "NHWC", "pointwise": pointwise, "tile_rows": tile_rows,
            "shared": False, "m_block": m_group, "k_block": k_group, "images": 1,
            "direct": False}
    col_size = tile_rows * row_elems
    if not backward and not weight_grad and uses_direct_path(geom, itemsize):
        block, panel = _conv.SMALL_GEMM_COLS, _conv.PANEL_ROWS
        if geom.layout == "NHWC":  # per thread: one packed panel of positions
            direct_size, packed = panel * k_group, 0
        else:  # per thread: gathered or built columns, a zero row as long as an output row
            # plus a block; shared: the packed weight
            direct_size = k_group * max(block, geom.out_w) + block + geom.out_w + block
            packed = _round_up(geom.out_channels, panel) * k_group
        total = packed + threads * direct_size
        if max_workspace_bytes is None or total * itemsize <= max_workspace_bytes:
            plan["direct"] = True
            return Launch(plan, depthwise, threads, direct_size, total, 0)
    items = geom.batch * -(-out_h // tile_rows)
    wanted = -(-WORK_ITEMS // geom.groups)
    m_blocks = max(1, min(wanted, m_group // MIN_CHANNEL_BLOCK))
    m_block = _round_up(-(-m_group // m_blocks), 16)
    images = _images_per_gemm(geom, row_elems, itemsize)
    if (shared_columns and not backward and not weight_grad and not depthwise
            and images > 1 and m_blocks > 1):
        # Small NHWC images: the columns of several, one GEMM per block of channels across
        # them, straight into the output.
        size = images * out_h * row_elems
        if max_workspace_bytes is None or size * itemsize <= max_workspace_bytes:
            plan.update(shared=True, tile_rows=out_h, m_block=m_block, images=images)
            return Launch(plan, depthwise, threads, size, size, 0)
    if shared_columns and not depthwise and items < WORK_ITEMS:
        k_blocks = max(1, min(wanted, k_group // MIN_CHANNEL_BLOCK))
        image_columns = out_h * row_elems
        fits = (max_workspace_bytes is None
                or image_columns * itemsize <= max_workspace_bytes)
        if (m_blocks > 1 or backward and k_blocks > 1) and fits:
            plan.update(shared=True, tile_rows=out_h, m_block=m_block,
                        k_block=_round_up(-(-k_group // k_blocks), 16))
            return Launch(plan, depthwise, threads, image_columns, image_columns, 0)
    return Launch(plan, depthwise, threads, col_size, threads * col_size,
                  threads * weight_elems)


def _images_per_gemm(geom, row_elems, itemsize):
    """Images whose positions one NHWC forward GEMM should span: enough for BATCH_POSITIONS
    output positions when an image has fewer than SMALL_IMAGE_POSITIONS, within the batch
    and TILE_BYTES of columns (1: image by image, always in NCHW).

    NCHW images' outputs are not one matrix; through a results buffer the batched GEMM
    measured 0.75-0.9x image by image, and 0.71-0.77x with BLAS's transposes giving it the
    operand roles of the NHWC product."""
    positions = geom.out_h * geom.out_w
    if (geom.layout != "NHWC" or geom.batch < 2 or positions == 0
            or positions >= SMALL_IMAGE_POSITIONS):
        return 1
    images = min(geom.batch, -(-BATCH_POSITIONS // positions))
    if row_elems:
        images = min(images, TILE_BYTES // max(1, geom.out_h * row_elems * itemsize))
    return max(1, images)


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def _empty(dtype):
    return np.empty(0, dtype=dtype)


# ------------------------------------------------------------------ kernels
def run_forward(x4, weight, bias, out4, geom, launch, workspace):
    """Call the forward kernel: x4, weight, out4 C-contiguous; workspace ≥ launch.workspace."""
    if out4.size == 0:
        return
    if x4.size == 0:  # H or W is 0: all padding, the result is the bias
        out4[...] = 0 if bias is None else (
            bias[:, None, None] if geom.layout == "NCHW" else bias)
        return
    if launch.depthwise:
        _depthwise.depthwise_forward(x4.reshape(-1), weight.reshape(-1),
                                     _empty(x4.dtype) if bias is None else bias,
                                     out4.reshape(-1), geom.window.kernel_struct(), geom.batch,
                                     geom.out_channels, geom.layout == "NHWC",
                                     launch.num_threads)
        return
    # BLAS runs inside fastconv's own OpenMP loop: held at one thread (the direct
    # small-GEMM path calls no BLAS, and skips the ~15 µs of setting the limit).
    with contextlib.nullcontext() if launch.plan["direct"] else blas_limit(1):
        _conv.conv2d_forward(x4.reshape(-1), weight.reshape(-1),
                             _empty(x4.dtype) if bias is None else bias,
                             out4.reshape(-1), workspace[:launch.workspace],
                             geom.window.kernel_struct(), launch.plan, launch.col_size,
                             launch.num_threads)


def input_grad_as_conv(grad_out4, weight, grad_x4, geom, workspace, capped=False):
    """Stride 1, one group: the input gradient is the convolution of the output gradient
    with the weight flipped in both spatial axes and its two channel axes swapped, padded
    by dilation·(k − 1) − padding on each side. When that convolution takes the direct
    small-GEMM path (a weight that fits L2; measured 2.2-2.5x the GEMM + col2im on
    small.16ch, 1.9x on resnet50.res2.3x3), run it into grad_x4 and return True; else
    False (nothing done). Its scratch is `workspace` (the backward pass's own) when large
    enough, else a new array, unless `capped` (a workspace cap holds: then False)."""
    if geom.stride != (1, 1) or geom.groups != 1 or geom.window.is_pointwise:
        return False
    (kh, kw), (dh, dw) = geom.kernel_size, geom.dilation
    (top, bottom), (left, right) = geom.padding
    pads = ((dh * (kh - 1) - top, dh * (kh - 1) - bottom),
            (dw * (kw - 1) - left, dw * (kw - 1) - right))
    if min(pads[0] + pads[1]) < 0:
        return False
    transposed = geo.ConvGeometry(grad_out4.shape, geom.in_channels, (kh, kw), 1, pads,
                                  (dh, dw), layout=geom.layout)
    itemsize = grad_out4.dtype.itemsize
    if transposed.output_shape != grad_x4.shape or not uses_direct_path(transposed, itemsize):
        return False
    launch = plan_launch(transposed, itemsize)  # direct: uses_direct_path holds, no cap
    if launch.workspace > workspace.size:
        if capped:
            return False
        workspace = _memory.empty(launch.workspace, grad_out4.dtype)
    flipped = (weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if geom.layout == "NCHW"
               else weight[::-1, ::-1].transpose(0, 1, 3, 2))
    run_forward(grad_out4, np.ascontiguousarray(flipped), None, grad_x4, transposed, launch,
                workspace)
    return True


def run_backward(grad_out4, x4, weight, grad_x4, grad_weight, geom, launch, workspace,
                 partials, capped=False):
    """Call the backward kernels. grad_x4 / grad_weight may be None (not needed); the weight
    gradient is added into grad_weight; partials (≥ launch.partials) is zeroed here.
    `capped`: the workspace is all the scratch memory allowed (nothing else allocated)."""
    if grad_x4 is not None and grad_x4.size and grad_out4.size == 0:
        grad_x4[...] = 0
        grad_x4 = None
    if grad_out4.size == 0 or x4 is not None and x4.size == 0:
        grad_weight = None  # no output or no pixels: nothing to add
    if grad_x4 is not None and grad_x4.size == 0:
        grad_x4 = None
    if (grad_x4 is not None and not launch.depthwise
            and input_grad_as_conv(grad_out4, weight, grad_x4, geom, workspace, capped)):
        grad_x4 = None  # done
    struct = geom.window.kernel_struct()
    if grad_weight is not None:
        acc = partials[:launch.partials]
        acc.fill(0)
    if launch.depthwise:
        nhwc = geom.layout == "NHWC"
        if grad_weight is not None:
            _depthwise.depthwise_weight_grad(grad_out4.reshape(-1), x4.reshape(-1),
                                             grad_weight.reshape(-1), acc, struct, geom.batch,
                                             geom.out_channels, nhwc, launch.num_threads)
        if grad_x4 is not None:
            _depthwise.depthwise_input_grad(grad_out4.reshape(-1), weight.reshape(-1),
                                            grad_x4.reshape(-1), struct, geom.batch,
                                            geom.out_channels, nhwc, launch.num_threads)
        return
    with blas_limit(1):  # BLAS runs inside fastconv's own OpenMP loops
        if grad_weight is not None:
            _conv.conv2d_weight_grad(grad_out4.reshape(-1), x4.reshape(-1),
                                     grad_weight.reshape(-1), workspace[:launch.workspace], acc,
                                     struct, launch.plan, launch.col_size, launch.num_threads)
        if grad_x4 is not None:
            _conv.conv2d_input_grad(grad_out4.reshape(-1), weight.reshape(-1),
                                    grad_x4.reshape(-1), workspace[:launch.workspace], struct,
                                    launch.plan, launch.col_size, launch.num_threads)


# ------------------------------------------------------------------ public API
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCHW",
           out=None):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray
        NCHW: (N, C_in, H, W) or (C_in, H, W). NHWC: (N, H, W, C_in) or (H, W, C_in).
        float32 or float64.
    weight : ndarray
        NCHW: OIHW (C_out, C_in/groups, kh, kw). NHWC: HWIO (kh, kw, C_in/groups, C_out).
        Same dtype as `x`.
    bias : ndarray (C_out,), optional
    stride, dilation : int or (h, w)
    padding : int, (pad_h, pad_w), ((top, bottom), (left, right)), "valid" or "same"
        "same" needs stride 1; an odd extra pixel goes bottom/right (as PyTorch).
    groups : int
        Divides C_in and C_out; groups == C_in is a depthwise convolution.
    layout : {"NCHW", "NHWC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.

    Returns
    -------
    ndarray
        NCHW: (N, C_out, OH, OW); NHWC: (N, OH, OW, C_out); no N for a 3-D `x`, where
        ``OH = (H + top + bottom - dilation*(kh-1) - 1)//stride + 1`` (likewise OW).

    Examples
    --------
    >>> x = np.ones((1, 3, 5, 5), np.float32); w = np.ones((8, 3, 3, 3), np.float32)
    >>> conv2d(x, w, padding=1).shape
    (1, 8, 5, 5)
    """
    fn = "conv2d"
    layout = geo.normalize_layout(layout, fn)
    x, weight, bias = _check_arrays(fn, x, weight, bias)
    x4, batched = geo.split_batch(x, "input", fn, layout)
    geom = _conv_geometry(fn, x4, weight, stride, padding, dilation, groups, layout, x.shape)
    _check_bias(fn, bias, geom.out_channels)
    _check_blas_range(fn, geom)
    out = geo.check_out(out, geom.output_shape if batched else geom.output_shape[1:],
                        x.dtype, [x, weight, bias], fn)
    shape4 = geom.output_shape  # geom was made from the 4-D (batched) view of x
    out4 = _memory.result(out, shape4, x.dtype)
    launch = plan_launch(geom, x.dtype.itemsize, shared_columns=True)
    workspace = _memory.empty(launch.workspace, x.dtype)
    run_forward(np.ascontiguousarray(x4), np.ascontiguousarray(weight),
                None if bias is None else np.ascontiguousarray(bias), out4, geom, launch,
                workspace)
    if out is not None:
        return out
    return out4 if batched else out4[0]


# Row blocks of an NHWC bias gradient (the kernel's BIAS_ROW_BLOCKS).
_BIAS_ROW_BLOCKS = 64


def _bias_grad(grad_out4, layout, out=None):
    """Σ of a C-contiguous 4-D output gradient over batch and positions, per channel, in a
    fixed order (so independent of the thread count); added into `out` when given."""
    nhwc = layout == "NHWC"
    n = grad_out4.shape[0]
    channels = grad_out4.shape[3] if nhwc else grad_out4.shape[1]
    result = _memory.empty(channels, grad_out4.dtype)
    if grad_out4.size == 0:
        result.fill(0)
    else:
        partials = _memory.empty(_BIAS_ROW_BLOCKS * channels if nhwc else 0, grad_out4.dtype)
        _conv.bias_grad(grad_out4.reshape(-1), result, partials, n, channels,
                        grad_out4.size // (n * channels), nhwc, get_num_threads())
    if out is None:
        return result
    out += result
    return out


def conv2d_backward(grad_output, x, weight, *, stride=1, padding=0, dilation=1, groups=1,
                    layout="NCHW", needs_input_grad=True, needs_weight_grad=True,
                    needs_bias_grad=True):
    """Gradients of :func:`conv2d` (as PyTorch autograd computes them).

    Parameters
    ----------
    grad_output : ndarray
        Gradient of the loss w.r.t. conv2d's output, shape ``conv2d(x, weight, ...).shape``.
    x, weight, stride, padding, dilation, groups, layout
        The forward call's arguments.
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Which gradients to compute; the others are returned as None.

    Returns
    -------
    Gradients(grad_input, grad_weight, grad_bias)
        grad_input = col2im(Wᵀ · grad_output), shaped like `x`;
        grad_weight = Σ_n grad_output · columnsᵀ, shaped like `weight`;
        grad_bias = grad_output summed over batch and space, shape (C_out,).
    """
    fn = "conv2d_backward"
    layout = geo.normalize_layout(layout, fn)
    x, weight, _ = _check_arrays(fn, x, weight, None)
    grad_output = geo.as_array(grad_output, "grad_output", fn)
    geo.check_float_dtype(grad_output, "grad_output", fn)
    geo.check_same_dtype(fn, input=x, grad_output=grad_output)
    x4, batched = geo.split_batch(x, "input", fn, layout)
    geom = _conv_geometry(fn, x4, weight, stride, padding, dilation, groups, layout, x.shape)
    _check_blas_range(fn, geom)
    expected = geom.output_shape if batched else geom.output_shape[1:]
    if grad_output.shape != expected:
        raise ValueError(f"{fn}: expected grad_output of shape {expected} (the conv2d output "
                         f"for input {x.shape} and weight {weight.shape}), got "
                         f"{grad_output.shape}")
    grad_out4 = np.ascontiguousarray(grad_output if batched else grad_output[np.newaxis])
    grad_x4 = _memory.empty(x4.shape, x.dtype) if needs_input_grad else None
    grad_w = np.zeros(weight.shape, dtype=x.dtype) if needs_weight_grad else None
    launch = plan_launch(geom, x.dtype.itemsize, weight_grad=needs_weight_grad,
                         shared_columns=True, backward=True)
    workspace = _memory.empty(launch.workspace, x.dtype)
    partials = _memory.empty(launch.partials, x.dtype)
    run_backward(grad_out4, np.ascontiguousarray(x4), np.ascontiguousarray(weight), grad_x4,
                 grad_w, geom, launch, workspace, partials)
    grad_b = _bias_grad(grad_out4, layout) if needs_bias_grad else None
    if grad_x4 is not None and not batched:
        grad_x4 = grad_x4[0]
    return Gradients(grad_x4, grad_w, grad_b)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCHW", out=None):
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d``: the gradient of
    conv2d with respect to its input, computed by the same GEMM + col2im kernel.

    Parameters
    ----------
    x : ndarray, NCHW (N, C_in, H, W) or NHWC (N, H, W, C_in); 3-D for one image
    weight : ndarray
        NCHW: (C_in, C_out/groups, kh, kw); NHWC: (kh, kw, C_out/groups, C_in)
        (TensorFlow's conv2d_transpose filter).
    bias : ndarray (C_out,), optional
    stride, dilation : int or (h, w)
    padding : int, (pad_h, pad_w) or ((top, bottom), (left, right))
        Removed from the full output, as PyTorch's ``padding``.
    output_padding : int or (h, w)
        Extra rows/columns at the bottom/right; each < max(stride, dilation).
    groups : int

    Returns
    -------
    ndarray, NCHW (N, C_out, OH, OW) or NHWC (N, OH, OW, C_out), where
    ``OH = (H - 1)*stride - top - bottom + dilation*(kh - 1) + output_padding + 1``.
    """
    fn = "conv_transpose2d"
    layout = geo.normalize_layout(layout, fn)
    x, weight, bias = _check_arrays(fn, x, weight, bias)
    x4, batched = geo.split_batch(x, "input", fn, layout)
    groups = geo._as_int(groups, "groups", fn, 1)
    if layout == "NCHW":
        cin, cout_g, kh, kw = weight.shape
        channels = x4.shape[1]
        n, _, h, w = x4.shape
    else:
        kh, kw, cout_g, cin = weight.shape
        n, h, w, channels = x4.shape
    if channels != cin:
        raise ValueError(f"{fn}: expected input with {cin} channels (weight {weight.shape}), "
                         f"got {channels} channels in input of shape {x.shape}")
    if cin % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the {cin} input channels")
    if min(kh, kw, cout_g, cin) < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    cout = cout_g * groups
    _check_bias(fn, bias, cout)
    stride_p = geo.normalize_pair(stride, "stride", fn)
    dilation_p = geo.normalize_pair(dilation, "dilation", fn)
    pads = geo.normalize_padding(padding, fn)
    out_pad = geo.normalize_pair(output_padding, "output_padding", fn, minimum=0)
    sizes = []
    for axis, size, k, s, d, (before, after), op in zip(
            ("height", "width"), (h, w), (kh, kw), stride_p, dilation_p, pads, out_pad):
        if op >= max(s, d):
            raise ValueError(f"{fn}: output_padding={out_pad} must be smaller than stride "
                             f"{stride_p} or dilation {dilation_p} in {axis}")
        full = (size - 1) * s + d * (k - 1) + op + 1
        if full - before - after < 1:
            raise ValueError(f"{fn}: padding={pads} removes the whole output {axis} "
                             f"({full} before padding)")
        sizes.append(full - before - after)
    out_h, out_w = sizes
    # The conv2d whose input gradient this is: image (C_out, OH, OW) → (C_in, H, W).
    image_shape = (n, cout, out_h, out_w) if layout == "NCHW" else (n, out_h, out_w, cout)
    geom = geo.ConvGeometry(image_shape, cin, (kh, kw), stride_p, pads, dilation_p, groups,
                            layout=layout, fn=fn)
    geom.window = geo.Window(cout, out_h, out_w, (kh, kw), stride_p, pads, dilation_p, h, w)
    geom.out_h, geom.out_w = h, w
    _check_blas_range(fn, geom)
    shape4 = image_shape
    out = geo.check_out(out, shape4 if batched else shape4[1:], x.dtype, [x, weight, bias], fn)
    out4 = _memory.result(out, shape4, x.dtype)
    if out4.size:
        launch = plan_launch(geom, x.dtype.itemsize, fn=fn, shared_columns=True,
                             backward=True)
        workspace = _memory.empty(launch.workspace, x.dtype)
        run_backward(np.ascontiguousarray(x4), None, np.ascontiguousarray(weight), out4, None,
                     geom, launch, workspace, _empty(x.dtype))
        if bias is not None:
            out4 += bias[:, None, None] if layout == "NCHW" else bias
    if out is not None:
        return out
    return out4 if batched else out4[0]
