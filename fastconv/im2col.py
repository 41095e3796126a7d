"""im2col / col2im (docs/spec.md §1): Caffe2's Im2Col/Col2Im, PyTorch's unfold/fold.

Layouts of the column matrix:

========  ====================  =======================  ==============================
layout    image                 columns                  element
========  ====================  =======================  ==============================
NCHW      (N, C, H, W)          (N, C·kh·kw, OH·OW)      [n, (c·kh + i)·kw + j, oh·OW + ow]
NHWC      (N, H, W, C)          (N, OH·OW, kh·kw·C)      [n, oh·OW + ow, (i·kw + j)·C + c]
NCL       (N, C, L)             (N, C·k, L_out)          [n, c·k + i, t]
NLC       (N, L, C)             (N, L_out, k·C)          [n, t, i·C + c]
========  ====================  =======================  ==============================

Each entry is ``x[n, c, oh·sh − top + i·dh, ow·sw − left + j·dw]``, zero in the padding.

:func:`col2im` is the exact adjoint of :func:`im2col` (``⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩``),
so each is the other's gradient: :func:`im2col_backward` is col2im and
:func:`col2im_backward` is im2col (Caffe2's GetIm2ColGradient / GetCol2ImGradient).
"""
from __future__ import annotations

import math

import numpy as np

from fastconv import (
    _engine,
    _im2col3d,
    _memory,
    _one_d,
    _padding_mode,
    _three_d,
    _tuning,
    _validate,
)
from fastconv import geometry as geo
from fastconv._kernels import _im2col

__all__ = ["im2col", "col2im", "im2col_backward", "col2im_backward"]

def _columns_shape(batch, window, layout):
    kh, kw = window.kernel_size
    out_size = window.out_h * window.out_w
    if layout == "NCHW":
        return (batch, window.channels * kh * kw, out_size)
    return (batch, out_size, kh * kw * window.channels)


def _image_shape(batch, window, layout):
    if layout == "NCHW":
        return (batch, window.channels, window.height, window.width)
    return (batch, window.height, window.width, window.channels)


def _im2col_into(x4, window, layout, cols):
    """Fill cols (C-contiguous, the full column shape) from the 4-D image x4 (a padding
    mode: the padding read through the window's source tables)."""
    if cols.size == 0:
        return
    if x4.size == 0:  # H or W is 0: every entry comes from the padding
        cols.fill(0)
        return
    if window.is_pointwise:  # the columns are the image itself: one straight copy
        np.copyto(cols, x4.reshape(cols.shape))
        return
    kernel = _im2col.im2col_nchw if layout == "NCHW" else _im2col.im2col_nhwc
    kernel(_memory.kernel_view(np.ascontiguousarray(x4)), _memory.kernel_view(cols),
           window.kernel_struct(), x4.shape[0], _tuning.threads_for_elements(cols.size))


def _col2im_into(cols, window, layout, image):
    """Fill image (C-contiguous, 4-D) with the sums of cols. A padding mode: col2im onto
    the padded image (window.padded_window(), in a scratch), folded back through the
    source tables."""
    if image.size == 0:
        return
    if cols.size == 0:
        image.fill(0)
        return
    if window.padding_mode != "zeros":
        padded_window = window.padded_window()
        shape = _image_shape(image.shape[0], padded_window, layout)
        padded = _memory.scratch("padded_image", math.prod(shape), image.dtype).reshape(shape)
        _col2im_into(cols, padded_window, layout, padded)
        _engine.fold_padding(padded, image, window, layout)
        return
    if window.is_pointwise:  # every pixel has exactly one entry: one straight copy
        np.copyto(image, cols.reshape(image.shape))
        return
    kernel = _im2col.col2im_nchw if layout == "NCHW" else _im2col.col2im_nhwc
    kernel(_memory.kernel_view(np.ascontiguousarray(cols)), _memory.kernel_view(image),
           window.kernel_struct(), image.shape[0], _tuning.threads_for_elements(cols.size))


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, layout="NCHW", out=None,
           padding_mode="zeros"):
    """Unfold sliding windows of an image batch into columns (``torch.nn.functional.unfold``).

    Parameters
    ----------
    x : ndarray, (N, C, H, W) / (C, H, W) for NCHW, (N, H, W, C) / (H, W, C) for NHWC
        float32, float64, any integer or bool dtype (it is pure data movement). With a
        1-tuple `kernel_size`, a 1-D signal: (N, C, L) / (C, L) for NCL, (N, L, C) /
        (L, C) for NLC.
    kernel_size, stride, dilation : int or (h, w), >= 1
        A 1-tuple `kernel_size` (k,) means 1-D signals; stride and dilation are then an
        int or a 1-tuple.
    padding : int, (pad_h, pad_w) or ((top, bottom), (left, right)), >= 0
        For 1-D signals an int or (before, after).
    layout : {"NCHW", "NHWC"}, or {"NCL", "NLC"} for 1-D signals
        ("NCHW" / "NHWC" are read as "NCL" / "NLC" there).
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping `x`; the call
        then allocates nothing of that size.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (docs/spec.md §6): zeros, the image mirrored without
        repeating its edge, the edge repeated, or the image wrapped around. "reflect"
        needs padding < the image's size along each padded axis, "circular" padding <=
        it.
        A 3-tuple `kernel_size` (kd, kh, kw) means volumes (N, C, D, H, W) / (N, D, H, W, C),
        layout "NCDHW" / "NDHWC", columns (N, C·kd·kh·kw, OD·OH·OW) with row
        ``((c·kd + i)·kh + j)·kw + k`` or (N, OD·OH·OW, kd·kh·kw·C).

    Returns
    -------
    cols : ndarray, same dtype as `x`
        NCHW: (N, C·kh·kw, OH·OW), row ``(c·kh + i)·kw + j``, column ``oh·OW + ow``.
        NHWC: (N, OH·OW, kh·kw·C), element ``[n, oh·OW + ow, (i·kw + j)·C + c]``.
        1-D: NCL (N, C·k, L_out), row ``c·k + i``; NLC (N, L_out, k·C), column ``i·C + c``.
        The batch axis is dropped for a 3-D `x` (2-D for a signal).

    Raises
    ------
    TypeError
        For a dtype other than float, integer or bool.
    ValueError
        Before any work, naming the argument: a bad shape, layout, kernel size, stride,
        padding or dilation, a window larger than the padded image, an unusable `out`, an
        unknown `padding_mode` or padding too large for it.

    See Also
    --------
    col2im : the adjoint (``torch.nn.functional.fold``).
    fastconv.reference.im2col : the NumPy oracle.

    Examples
    --------
    Caffe2's worked example (equal to ``torch.nn.functional.unfold``):

    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fastconv.im2col(x, 2)[0]
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])

    Shapes for both layouts, with an asymmetric padding:

    >>> x = np.zeros((2, 3, 8, 8), np.float32)                 # NCHW
    >>> fastconv.im2col(x, 3, stride=2, padding=((1, 0), (0, 1))).shape
    (2, 27, 16)
    >>> fastconv.im2col(x.transpose(0, 2, 3, 1), 3, layout="NHWC").shape
    (2, 36, 27)

    1-D signals, with a 1-tuple kernel size:

    >>> fastconv.im2col(np.arange(5.0).reshape(1, 1, 5), (2,), stride=2)[0]
    array([[0., 2.],
           [1., 3.]])

    Reflected padding reads mirrored pixels instead of zeros:

    >>> fastconv.im2col(np.arange(4.0).reshape(1, 1, 4), (3,), padding=1,
    ...                 padding_mode="reflect")[0]
    array([[1., 0., 1., 2.],
           [0., 1., 2., 3.],
           [1., 2., 3., 2.]])

    Volumes, with a 3-tuple kernel size and a padding mode:

    >>> v = np.arange(8.0).reshape(1, 1, 2, 2, 2)
    >>> fastconv.im2col(v, (1, 1, 2), padding=(0, 0, 1), padding_mode="reflect").shape
    (1, 2, 12)
    """
    if _three_d.is_three_d_kernel(kernel_size):
        return _im2col3d.im2col(x, kernel_size, stride, padding, dilation, layout, out,
                                "im2col", "x", padding_mode)
    if _one_d.is_one_d_kernel(kernel_size):
        return _checked_im2col_1d(x, kernel_size, stride, padding, dilation, layout, out,
                                  "im2col", "x", padding_mode)
    return _checked_im2col(x, kernel_size, stride, padding, dilation, layout, out, "im2col", "x",
                           padding_mode)


def _checked_im2col(x, kernel_size, stride, padding, dilation, layout, out, fn, name,
                    padding_mode="zeros"):
    """im2col, validating and reporting errors as function `fn` with argument `name`."""
    layout = _validate.normalize_layout(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    x = _validate.as_array(x, name, fn)
    _validate.check_movable_dtype(x, name, fn)
    x4, batched = _validate.split_batch(x, name, fn, layout)
    n, c, h, w = _validate.image_dims(x4.shape, layout)
    window = geo.make_window(c, h, w, kernel_size, stride, padding, dilation, fn,
                             padding_mode=padding_mode)
    shape = _columns_shape(n, window, layout)
    result_shape = shape if batched else shape[1:]
    out = _validate.check_out(out, result_shape, x.dtype, [x], fn)
    cols = _memory.result(out, shape, x.dtype)
    _im2col_into(x4, window, layout, cols)
    if out is not None:
        return out
    return cols if batched else cols[0]


def _parse_columns(cols, output_size, kernel_size, stride, padding, dilation, layout, fn, name,
                   channels=None, padding_mode="zeros"):
    """Validate a column array against the geometry; returns (cols3, batched, window).
    `channels` is inferred from the column count unless given."""
    expected = ("(N, C·kh·kw, L) or (C·kh·kw, L)" if layout == "NCHW"
                else "(N, L, kh·kw·C) or (L, kh·kw·C)")
    cols3, batched = _validate.split_columns(cols, name, fn, expected)
    height, width = _validate.normalize_pair(output_size, "output_size", fn, minimum=0)
    kh, kw = _validate.normalize_pair(kernel_size, "kernel_size", fn)
    rows = cols3.shape[1] if layout == "NCHW" else cols3.shape[2]
    if channels is None:
        if rows % (kh * kw) or rows == 0:
            axis = "rows (axis -2)" if layout == "NCHW" else "columns (axis -1)"
            raise ValueError(f"{fn}: {name} has {rows} {axis}, which is not a positive "
                             f"multiple of kh·kw = {kh * kw} for kernel_size={(kh, kw)}; "
                             f"shape {cols.shape}")
        channels = rows // (kh * kw)
    window = geo.make_window(channels, height, width, (kh, kw), stride, padding, dilation, fn,
                             input_desc="output", padding_mode=padding_mode)
    blocks = cols3.shape[2] if layout == "NCHW" else cols3.shape[1]
    if blocks != window.out_h * window.out_w:
        raise ValueError(
            f"{fn}: {name} has {blocks} sliding-window positions, but output_size="
            f"{(height, width)} with this geometry gives {window.out_h}×{window.out_w} = "
            f"{window.out_h * window.out_w}; shape {cols.shape}")
    return cols3, batched, window


def col2im(cols, output_size, kernel_size, *, stride=1, padding=0, dilation=1, layout="NCHW",
           out=None, padding_mode="zeros"):
    """Fold columns back into an image, summing overlaps (``torch.nn.functional.fold``).

    The exact adjoint of :func:`im2col` with the same arguments:
    ``⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩``. Entries that fall in the padding are dropped, or
    with a `padding_mode` added onto the pixel that padded coordinate copies.

    Parameters
    ----------
    cols : ndarray
        NCHW: (N, C·kh·kw, OH·OW) or (C·kh·kw, OH·OW); NHWC: (N, OH·OW, kh·kw·C) or
        (OH·OW, kh·kw·C). float32, float64 or integer (integer sums wrap as in NumPy).
    output_size : int or (H, W)
        The image size (for 1-D signals the length L); C is inferred from `cols`.
    kernel_size, stride, padding, dilation, layout, out, padding_mode
        As for :func:`im2col` (a 1-tuple `kernel_size` means 1-D signals, `cols`
        (N, C·k, L_out) for NCL or (N, L_out, k·C) for NLC; a 3-tuple volumes, `output_size`
        then (D, H, W); padded entries are added onto the voxel the padding mode read).

    Returns
    -------
    image : ndarray, (N, C, H, W) for NCHW or (N, H, W, C) for NHWC (no N for 2-D `cols`)
        Same dtype as `cols`.

    Raises
    ------
    TypeError
        For a dtype other than float or integer.
    ValueError
        Before any work, naming the argument: `cols` whose shape does not match the
        geometry (rows not a multiple of kh·kw, or the wrong number of window positions),
        a bad geometry argument, or an unusable `out`.

    See Also
    --------
    im2col : the adjoint (``torch.nn.functional.unfold``).

    Examples
    --------
    Overlaps are summed (``torch.nn.functional.fold``):

    >>> fastconv.col2im(np.ones((1, 4, 4)), (3, 3), 2)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> fastconv.col2im(np.ones((36, 27), np.float32), (8, 8), 3, layout="NHWC").shape
    (8, 8, 3)
    """
    if _three_d.is_three_d_kernel(kernel_size):
        return _im2col3d.col2im(cols, output_size, kernel_size, stride, padding, dilation,
                                layout, out, "col2im", "cols", padding_mode)
    if _one_d.is_one_d_kernel(kernel_size):
        return _checked_col2im_1d(cols, output_size, kernel_size, stride, padding, dilation,
                                  layout, out, "col2im", "cols", padding_mode=padding_mode)
    return _checked_col2im(cols, output_size, kernel_size, stride, padding, dilation, layout, out,
                           "col2im", "cols", padding_mode=padding_mode)


def _checked_col2im(cols, output_size, kernel_size, stride, padding, dilation, layout, out, fn,
                    name, channels=None, padding_mode="zeros"):
    """col2im, validating and reporting errors as function `fn` with argument `name`."""
    layout = _validate.normalize_layout(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    cols = _validate.as_array(cols, name, fn)
    _validate.check_movable_dtype(cols, name, fn, allow_bool=False)
    cols3, batched, window = _parse_columns(cols, output_size, kernel_size, stride, padding,
                                            dilation, layout, fn, name, channels,
                                            padding_mode)
    shape = _image_shape(cols3.shape[0], window, layout)
    result_shape = shape if batched else shape[1:]
    out = _validate.check_out(out, result_shape, cols.dtype, [cols], fn)
    image = _memory.result(out, shape, cols.dtype)
    _col2im_into(cols3, window, layout, image)
    if out is not None:
        return out
    return image if batched else image[0]


def im2col_backward(grad_cols, input_shape, kernel_size, *, stride=1, padding=0, dilation=1,
                    layout="NCHW", out=None, padding_mode="zeros"):
    """Gradient of :func:`im2col` with respect to its input: ``col2im`` of `grad_cols`
    (Caffe2's GetIm2ColGradient).

    Parameters
    ----------
    grad_cols : ndarray
        Gradient with respect to im2col's result, of exactly that shape.
    input_shape : tuple of int
        The shape of im2col's input (3-D or 4-D; for 1-D signals 2-D or 3-D; for volumes
        4-D or 5-D).
    kernel_size, stride, padding, dilation, layout, out, padding_mode
        As for :func:`im2col`.

    Returns
    -------
    ndarray, shaped `input_shape`
        The sum, over every column entry, of the gradient flowing back to its pixel.

    Raises
    ------
    TypeError
        For a dtype other than float or integer.
    ValueError
        For `grad_cols` not of im2col's result shape for `input_shape`, or a bad geometry
        argument or `out`.

    Examples
    --------
    >>> g = fastconv.im2col_backward(np.ones((1, 4, 4)), (1, 1, 3, 3), 2)
    >>> g.shape, float(g[0, 0, 1, 1])
    ((1, 1, 3, 3), 4.0)
    """
    fn = "im2col_backward"
    if _three_d.is_three_d_kernel(kernel_size):
        return _im2col3d.im2col_backward(grad_cols, input_shape, kernel_size, stride, padding,
                                         dilation, layout, out, fn, padding_mode)
    if _one_d.is_one_d_kernel(kernel_size):
        return _im2col_backward_1d(grad_cols, input_shape, kernel_size, stride, padding,
                                   dilation, layout, out, fn, padding_mode)
    layout = _validate.normalize_layout(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    shape = _validate.normalize_shape(input_shape, "input_shape", fn)
    shape4 = shape if len(shape) == 4 else (1,) + shape
    n, c, h, w = _validate.image_dims(shape4, layout)
    grad_cols = _validate.as_array(grad_cols, "grad_cols", fn)
    kh, kw = _validate.normalize_pair(kernel_size, "kernel_size", fn)
    expected = _columns_shape(n, geo.make_window(c, h, w, (kh, kw), stride, padding, dilation,
                                                 fn, padding_mode=padding_mode), layout)
    expected = expected if len(shape) == 4 else expected[1:]
    if grad_cols.shape != expected:
        raise ValueError(f"{fn}: grad_cols must have shape {expected} for input_shape {shape}, "
                         f"got {grad_cols.shape}")
    return _checked_col2im(grad_cols, (h, w), (kh, kw), stride, padding, dilation, layout, out, fn,
                           "grad_cols", channels=c, padding_mode=padding_mode)


def col2im_backward(grad_image, kernel_size, *, stride=1, padding=0, dilation=1, layout="NCHW",
                    out=None, padding_mode="zeros"):
    """Gradient of :func:`col2im` with respect to its columns: ``im2col`` of `grad_image`
    (Caffe2's GetCol2ImGradient).

    Parameters
    ----------
    grad_image : ndarray
        Gradient with respect to col2im's result: (N, C, H, W) / (C, H, W) for NCHW,
        (N, H, W, C) / (H, W, C) for NHWC; 1-D signals and volumes as for :func:`im2col`.
    kernel_size, stride, padding, dilation, layout, out, padding_mode
        As for :func:`col2im`.

    Returns
    -------
    ndarray
        The columns' gradient, shaped like col2im's `cols`.

    Raises
    ------
    TypeError
        For a dtype other than float, integer or bool.
    ValueError
        For a bad shape, geometry argument or `out`, naming it.

    Examples
    --------
    >>> fastconv.col2im_backward(np.ones((1, 1, 3, 3)), 2).shape
    (1, 4, 4)
    """
    if _three_d.is_three_d_kernel(kernel_size):
        return _im2col3d.im2col(grad_image, kernel_size, stride, padding, dilation, layout,
                                out, "col2im_backward", "grad_image", padding_mode)
    if _one_d.is_one_d_kernel(kernel_size):
        return _checked_im2col_1d(grad_image, kernel_size, stride, padding, dilation, layout,
                                  out, "col2im_backward", "grad_image", padding_mode)
    return _checked_im2col(grad_image, kernel_size, stride, padding, dilation, layout, out,
                           "col2im_backward", "grad_image", padding_mode)


# ------------------------------------------------------------------ 1-D images (§6)
# A kernel_size given as a 1-tuple (k,) means 1-D images: (N, C, L) channels-first or
# (N, L, C) channels-last, run as the height-1 2-D images (N, C, 1, L) / (N, 1, L, C). Their
# 2-D columns, (N, C·1·k, 1·L_out) and (N, 1·L_out, 1·k·C), are the 1-D ones: same shape,
# same memory order.
def _layout_1d(layout, fn):
    """'NCL' (or the 2-D default 'NCHW') → 'NCL'; 'NLC' (or 'NHWC') → 'NLC'."""
    return _validate.columns_layout(layout, fn, "NCL", "NLC", "1-D images (a 1-tuple")


def _window_1d(fn, channels, length, kernel_size, stride, padding, dilation,
               input_desc="input", padding_mode="zeros"):
    """The checked 1-D geometry as the height-1 2-D Window (which then cannot fail)."""
    kernel = _one_d.normalize_single(kernel_size, "kernel_size", fn)
    stride = _one_d.normalize_single(stride, "stride", fn)
    dilation = _one_d.normalize_single(dilation, "dilation", fn)
    pads = _one_d.normalize_padding(padding, fn)
    _one_d.output_length(fn, length, kernel, stride, pads, dilation, input_desc)
    geo.check_mode(padding_mode, (pads,), (length,), fn, ("length",), input_desc)
    return geo.make_window(channels, 1, length, (1, kernel), (1, stride), ((0, 0), pads),
                           (1, dilation), fn, input_desc, padding_mode)


def _checked_im2col_1d(x, kernel_size, stride, padding, dilation, layout, out, fn, name,
                       padding_mode="zeros"):
    """im2col of 1-D images, errors reported as function `fn` with argument `name`."""
    layout = _layout_1d(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    x = _validate.as_array(x, name, fn)
    _validate.check_movable_dtype(x, name, fn)
    if x.ndim not in (2, 3):
        raise ValueError(f"{fn}: kernel_size={kernel_size!r} (one value) means 1-D images: "
                         f"expected {name} of shape (N, C, L) or (C, L) for layout 'NCL', "
                         f"(N, L, C) or (L, C) for 'NLC', got shape {x.shape} ({x.ndim}-D)")
    x3, batched = _one_d.split_batch(x, name, fn, layout)
    n, c, length = _one_d.dims(x3.shape, layout)
    window = _window_1d(fn, c, length, kernel_size, stride, padding, dilation,
                        padding_mode=padding_mode)
    layout2 = _one_d.LAYOUT_2D[layout]
    shape = _columns_shape(n, window, layout2)
    out = _validate.check_out(out, shape if batched else shape[1:], x.dtype, [x], fn)
    cols = _memory.result(out, shape, x.dtype)
    _im2col_into(_one_d.as_2d(x3, layout), window, layout2, cols)
    if out is not None:
        return out
    return cols if batched else cols[0]


def _checked_col2im_1d(cols, output_size, kernel_size, stride, padding, dilation, layout, out,
                       fn, name, channels=None, padding_mode="zeros"):
    """col2im into 1-D images, errors reported as function `fn` with argument `name`;
    `channels` is inferred from the column count unless given."""
    layout = _layout_1d(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    cols = _validate.as_array(cols, name, fn)
    _validate.check_movable_dtype(cols, name, fn, allow_bool=False)
    expected = ("(N, C·k, L_out) or (C·k, L_out)" if layout == "NCL"
                else "(N, L_out, k·C) or (L_out, k·C)")
    cols3, batched = _validate.split_columns(cols, name, fn, expected)
    length = _one_d.normalize_single(output_size, "output_size", fn, minimum=0)
    kernel = _one_d.normalize_single(kernel_size, "kernel_size", fn)
    rows = cols3.shape[1] if layout == "NCL" else cols3.shape[2]
    if channels is None:
        if rows % kernel or rows == 0:
            axis = "rows (axis -2)" if layout == "NCL" else "columns (axis -1)"
            raise ValueError(f"{fn}: {name} has {rows} {axis}, which is not a positive "
                             f"multiple of k = {kernel} for kernel_size={(kernel,)}; shape "
                             f"{cols.shape}")
        channels = rows // kernel
    window = _window_1d(fn, channels, length, kernel, stride, padding, dilation, "output",
                        padding_mode)
    blocks = cols3.shape[2] if layout == "NCL" else cols3.shape[1]
    if blocks != window.out_w:
        raise ValueError(f"{fn}: {name} has {blocks} sliding-window positions, but "
                         f"output_size={length} with this geometry gives {window.out_w}; "
                         f"shape {cols.shape}")
    shape = _one_d.image_shape(cols3.shape[0], channels, length, layout)
    out = _validate.check_out(out, shape if batched else shape[1:], cols.dtype, [cols], fn)
    image = _memory.result(out, shape, cols.dtype)
    _col2im_into(cols3, window, _one_d.LAYOUT_2D[layout], _one_d.as_2d(image, layout))
    if out is not None:
        return out
    return image if batched else image[0]


def _im2col_backward_1d(grad_cols, input_shape, kernel_size, stride, padding, dilation,
                        layout, out, fn, padding_mode="zeros"):
    """im2col_backward for 1-D images: col2im of `grad_cols`, checked against the shape
    im2col gives for `input_shape`."""
    layout = _layout_1d(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    shape = _one_d.normalize_shape(input_shape, "input_shape", fn)
    shape3 = shape if len(shape) == 3 else (1,) + shape
    n, c, length = _one_d.dims(shape3, layout)
    grad_cols = _validate.as_array(grad_cols, "grad_cols", fn)
    window = _window_1d(fn, c, length, kernel_size, stride, padding, dilation,
                        padding_mode=padding_mode)
    expected = _columns_shape(n, window, _one_d.LAYOUT_2D[layout])
    expected = expected if len(shape) == 3 else expected[1:]
    if grad_cols.shape != expected:
        raise ValueError(f"{fn}: grad_cols must have shape {expected} for input_shape "
                         f"{shape}, got {grad_cols.shape}")
    return _checked_col2im_1d(grad_cols, length, kernel_size, stride, padding, dilation,
                              layout, out, fn, "grad_cols", channels=c,
                              padding_mode=padding_mode)
