"""Convolution on BLAS GEMM (docs/spec.md §2): conv2d, conv2d_backward, conv_transpose2d.

Each image's columns are built by the im2col kernels straight into a preallocated
workspace and multiplied with scipy's ``sgemm``/``dgemm`` from Cython without the GIL;
:mod:`fastconv._engine` plans how the work is cut (row tiles, channel blocks, the direct
small-GEMM and depthwise loops) and calls the kernels. This module validates the
arguments and allocates the results.

Layouts: NCHW input with OIHW weight (PyTorch), or NHWC input with HWIO weight
(TensorFlow). A 1×1, stride-1, unpadded convolution is a plain GEMM on the input.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from fastconv import _engine, _memory, _padding_mode, _plan_cache, _validate
from fastconv import geometry as geo

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "Gradients"]

Gradients = namedtuple("Gradients", ["grad_input", "grad_weight", "grad_bias"])
Gradients.__doc__ = """conv2d_backward's result; a field is None when it was not asked for.

Parameters
----------
grad_input : ndarray or None
    Gradient w.r.t. conv2d's input, shaped like it.
grad_weight : ndarray or None
    Gradient w.r.t. the weight, shaped like it.
grad_bias : ndarray or None
    Gradient w.r.t. the bias, (C_out,).

Examples
--------
>>> g = fastconv.Gradients(None, np.zeros((4, 3, 3, 3)), None)
>>> g.grad_weight.shape, g.grad_input is None
((4, 3, 3, 3), True)
"""


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCHW",
           out=None, algorithm="auto", padding_mode="zeros"):
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
        "same": TensorFlow's SAME, ``ceil(H/stride)`` outputs (likewise W) from a total
        padding of ``max((OH-1)*stride + dilation*(kh-1) + 1 - H, 0)``, the odd pixel at
        the bottom/right; at stride 1 that is PyTorch's "same".
    groups : int
        Divides C_in and C_out; groups == C_in is a depthwise convolution.
    layout : {"NCHW", "NHWC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.
    algorithm : {"auto", "gemm", "winograd"}
        "winograd": Winograd's F(2×2, 3×3) or F(4×4, 3×3), the tile chosen per geometry
        (3×3 kernels, stride 1, dilation 1, not depthwise); "gemm": im2col or direct
        loops and GEMMs; "auto" (default): Winograd where a rule over shapes, dtype and
        CPU says it is faster (:meth:`ConvGeometry.algorithm` tells before any work).
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads, as ``torch.nn.Conv2d``'s: zeros, the image mirrored
        without repeating its edge, the edge repeated, or the image wrapped around
        (docs/spec.md §6). "reflect" needs padding < the input's size along each padded
        axis, "circular" padding <= it. Read in place through per-axis tables, never
        a padded copy.

    Returns
    -------
    ndarray
        NCHW: (N, C_out, OH, OW); NHWC: (N, OH, OW, C_out); no N for a 3-D `x`, where
        ``OH = (H + top + bottom - dilation*(kh-1) - 1)//stride + 1`` (likewise OW).

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or `x`, `weight` and `bias` of different
        dtypes (no casting).
    ValueError
        Before any work, naming the argument: mismatched channels or groups, a bad
        geometry, layout or `out`, a GEMM dimension beyond BLAS's int,
        ``algorithm="winograd"`` on a layer it cannot serve, an unknown `padding_mode`
        or padding too large for it.

    See Also
    --------
    conv2d_backward, conv_transpose2d, Conv2D
    fastconv.reference.conv2d_naive : the NumPy oracle (NHWC / HWIO).

    Notes
    -----
    PyTorch ``F.conv2d`` semantics (cross-correlation); TensorFlow ``tf.nn.conv2d``
    results for NHWC + HWIO. Repeated calls with the same argument signature reuse the
    geometry, the plan and the per-thread scratch memory of the first.

    Examples
    --------
    >>> x = np.ones((1, 3, 5, 5), np.float32); w = np.ones((8, 3, 3, 3), np.float32)
    >>> fastconv.conv2d(x, w, padding=1).shape
    (1, 8, 5, 5)
    >>> float(fastconv.conv2d(x, w, padding=1)[0, 0, 2, 2])   # 3·3·3 ones
    27.0

    "same" with a stride is TensorFlow's SAME: ceil(5/2) = 3 outputs per axis.

    >>> fastconv.conv2d(x, w, stride=2, padding="same").shape
    (1, 8, 3, 3)

    Depthwise (groups == channels), NHWC with an HWIO weight:

    >>> xh = np.ones((1, 16, 16, 8), np.float32)
    >>> wd = np.ones((3, 3, 1, 8), np.float32)
    >>> fastconv.conv2d(xh, wd, padding=1, groups=8, layout="NHWC").shape
    (1, 16, 16, 8)

    Reflected padding (``nn.Conv2d(padding_mode="reflect")``): no zeros at the border.

    >>> float(fastconv.conv2d(x, w, padding=1, padding_mode="reflect")[0, 0, 0, 0])
    27.0
    """
    fn = "conv2d"
    layout = _validate.normalize_layout(layout, fn)
    algorithm = _validate.normalize_algorithm(algorithm, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    x, weight, bias = _validate.check_conv_arrays(fn, x, weight, bias)
    x4, batched = _validate.split_batch(x, "input", fn, layout)
    key = _plan_cache.signature((fn, x.shape, weight.shape, x.dtype.char), stride, padding,
                                dilation, groups, layout, algorithm, padding_mode)
    cached = _plan_cache.get(key)
    if cached is None:
        geom = geo.conv2d_geometry(fn, x4, weight, stride, padding, dilation, groups, layout,
                                   x.shape, padding_mode)
    else:
        geom, plan = cached
    _validate.check_bias(fn, bias, geom.out_channels)
    if cached is None:
        _validate.check_blas_range(fn, geom)
    out = _validate.check_out(out, geom.output_shape if batched else geom.output_shape[1:],
                              x.dtype, [x, weight, bias], fn)
    if cached is None:
        chosen = _engine.choose_algorithm(geom, x.dtype.itemsize, algorithm, fn=fn)
        plan = _engine.choose_plan(geom, x.dtype.itemsize, _engine.FORWARD, algorithm=chosen)
        _plan_cache.put(key, (geom, plan))
    shape4 = geom.output_shape  # geom was made from the 4-D (batched) view of x
    out4 = _memory.result(out, shape4, x.dtype)
    workspace = _memory.scratch("workspace", plan.workspace, x.dtype)
    _engine.run_forward(np.ascontiguousarray(x4), np.ascontiguousarray(weight),
                        None if bias is None else np.ascontiguousarray(bias), out4, plan,
                        workspace)
    if out is not None:
        return out
    return out4 if batched else out4[0]


def conv2d_backward(grad_output, x, weight, *, stride=1, padding=0, dilation=1, groups=1,
                    layout="NCHW", needs_input_grad=True, needs_weight_grad=True,
                    needs_bias_grad=True, algorithm="auto", padding_mode="zeros"):
    """Gradients of :func:`conv2d` (as PyTorch autograd computes them).

    Parameters
    ----------
    grad_output : ndarray
        Gradient of the loss w.r.t. conv2d's output, shape ``conv2d(x, weight, ...).shape``.
    x, weight, stride, padding, dilation, groups, layout
        The forward call's arguments.
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Which gradients to compute; the others are returned as None.
    algorithm : {"auto", "gemm", "winograd"}
        For the input gradient, at stride 1 the convolution of grad_output with the flipped
        weight: as for :func:`conv2d`. The weight gradient always runs on GEMMs.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        The forward call's (docs/spec.md §6); the input gradient adds what every padded
        coordinate received onto the pixel it reads, as autograd through ``F.pad``.

    Returns
    -------
    Gradients(grad_input, grad_weight, grad_bias)
        grad_input = col2im(Wᵀ · grad_output), shaped like `x`;
        grad_weight = Σ over n of grad_output · columnsᵀ, shaped like `weight`;
        grad_bias = grad_output summed over batch and space, shape (C_out,).
        Equal to PyTorch autograd's.

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or mixed dtypes.
    ValueError
        For `grad_output` not of conv2d's result shape, or any argument conv2d would
        refuse.

    Examples
    --------
    >>> x = np.ones((2, 3, 6, 6), np.float32); w = np.ones((4, 3, 3, 3), np.float32)
    >>> y = fastconv.conv2d(x, w, padding="same")
    >>> g = fastconv.conv2d_backward(np.ones_like(y), x, w, padding="same")
    >>> g.grad_input.shape, g.grad_weight.shape, g.grad_bias.shape
    ((2, 3, 6, 6), (4, 3, 3, 3), (4,))
    >>> fastconv.conv2d_backward(y, x, w, padding=1, needs_weight_grad=False).grad_weight
    """
    fn = "conv2d_backward"
    layout = _validate.normalize_layout(layout, fn)
    algorithm = _validate.normalize_algorithm(algorithm, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    x, weight, _ = _validate.check_conv_arrays(fn, x, weight, None)
    grad_output = _validate.as_array(grad_output, "grad_output", fn)
    _validate.check_float_dtype(grad_output, "grad_output", fn)
    _validate.check_same_dtype(fn, input=x, grad_output=grad_output)
    x4, batched = _validate.split_batch(x, "input", fn, layout)
    key = _plan_cache.signature((fn, x.shape, weight.shape, x.dtype.char,
                                 bool(needs_input_grad), bool(needs_weight_grad)),
                                stride, padding, dilation, groups, layout, algorithm,
                                padding_mode)
    cached = _plan_cache.get(key)
    if cached is None:
        geom = geo.conv2d_geometry(fn, x4, weight, stride, padding, dilation, groups, layout,
                                   x.shape, padding_mode)
        _validate.check_blas_range(fn, geom)
        _engine.choose_algorithm(geom, x.dtype.itemsize, algorithm, fn=fn)  # checks 'winograd'
    else:
        geom, plan, flipped = cached
    expected = geom.output_shape if batched else geom.output_shape[1:]
    if grad_output.shape != expected:
        raise ValueError(f"{fn}: expected grad_output of shape {expected} (the conv2d output "
                         f"for input {x.shape} and weight {weight.shape}), got "
                         f"{grad_output.shape}")
    grad_out4 = np.ascontiguousarray(grad_output if batched else grad_output[np.newaxis])
    grad_x4 = _memory.empty(x4.shape, x.dtype) if needs_input_grad else None
    grad_w = np.zeros(weight.shape, dtype=x.dtype) if needs_weight_grad else None
    if cached is None:
        plan = _engine.choose_plan(geom, x.dtype.itemsize,
                                   _engine.BACKWARD if needs_weight_grad else _engine.INPUT_GRAD)
        flipped = (_engine.input_grad_plan(geom, x.dtype.itemsize, algorithm)
                   if needs_input_grad and _engine.input_grad_by_conv(plan)
                   and not geom.reads_padding else None)
        _plan_cache.put(key, (geom, plan, flipped))
    workspace = _memory.scratch("workspace", plan.workspace, x.dtype)
    partials = _memory.scratch("partials", plan.partials, x.dtype)
    _engine.run_backward(grad_out4, np.ascontiguousarray(x4), np.ascontiguousarray(weight),
                         grad_x4, grad_w, plan, workspace, partials, algorithm=algorithm,
                         flipped=flipped)
    grad_b = _engine.bias_grad(grad_out4, layout) if needs_bias_grad else None
    if grad_x4 is not None and not batched:
        grad_x4 = grad_x4[0]
    return Gradients(grad_x4, grad_w, grad_b)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCHW", out=None, algorithm="auto",
                     padding_mode="zeros"):
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
    algorithm : {"auto", "gemm", "winograd"}
        At stride 1 the result is a convolution of `x` with the flipped weight: Winograd
        serves it as in :func:`conv2d` (3×3, stride 1, dilation 1, not depthwise).

    layout : {"NCHW", "NHWC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.
    padding_mode : {"zeros"}
        Only "zeros", as PyTorch's ``ConvTranspose2d``; anything else is a ValueError.

    Returns
    -------
    ndarray
        NCHW (N, C_out, OH, OW) or NHWC (N, OH, OW, C_out), where
        ``OH = (H - 1)*stride - top - bottom + dilation*(kh - 1) + output_padding + 1``.

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or mixed dtypes.
    ValueError
        For mismatched channels or groups, ``output_padding >= max(stride, dilation)``,
        a padding that removes the whole output, a bad layout or `out`, naming it.

    Examples
    --------
    >>> y = np.ones((2, 8, 7, 7), np.float32)
    >>> w = np.ones((8, 4, 4, 4), np.float32)          # (C_in, C_out/groups, kh, kw)
    >>> fastconv.conv_transpose2d(y, w, stride=2, padding=1).shape
    (2, 4, 14, 14)
    """
    fn = "conv_transpose2d"
    layout = _validate.normalize_layout(layout, fn)
    _padding_mode.normalize_padding_mode(padding_mode, fn, transposed=True)
    algorithm = _validate.normalize_algorithm(algorithm, fn)
    x, weight, bias = _validate.check_conv_arrays(fn, x, weight, bias)
    x4, batched = _validate.split_batch(x, "input", fn, layout)
    key = _plan_cache.signature((fn, x.shape, weight.shape, x.dtype.char), stride, padding,
                                output_padding, groups, dilation, layout, algorithm)
    cached = _plan_cache.get(key)
    if cached is None:
        # The conv2d whose input gradient this is: image (C_out, OH, OW) → (C_in, H, W).
        geom = geo.transposed_conv_geometry(fn, x4, weight, stride, padding, output_padding,
                                            groups, dilation, layout, x.shape)
    else:
        geom, plan, flipped = cached
    shape4 = geom.input_shape
    _validate.check_bias(fn, bias, geom.in_channels)
    if cached is None:
        _validate.check_blas_range(fn, geom)
        _engine.choose_algorithm(geom, x.dtype.itemsize, algorithm, fn=fn)  # checks 'winograd'
    out = _validate.check_out(out, shape4 if batched else shape4[1:], x.dtype,
                              [x, weight, bias], fn)
    if cached is None and math.prod(shape4):  # an empty result needs no plan
        plan = _engine.choose_plan(geom, x.dtype.itemsize, _engine.INPUT_GRAD, fn=fn)
        flipped = (_engine.input_grad_plan(geom, x.dtype.itemsize, algorithm)
                   if _engine.input_grad_by_conv(plan) else None)
        _plan_cache.put(key, (geom, plan, flipped))
    out4 = _memory.result(out, shape4, x.dtype)
    if out4.size:
        workspace = _memory.scratch("workspace", plan.workspace, x.dtype)
        _engine.run_backward(np.ascontiguousarray(x4), None, np.ascontiguousarray(weight),
                             out4, None, plan, workspace, _memory.empty(0, x.dtype),
                             algorithm=algorithm, flipped=flipped)
        if bias is not None:
            out4 += bias[:, None, None] if layout == "NCHW" else bias
    if out is not None:
        return out
    return out4 if batched else out4[0]
