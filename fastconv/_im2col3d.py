"""im2col / col2im of volumes (docs/spec.md §6): what fastconv.im2col and friends run for a
3-tuple kernel_size.

Channels-first volumes (N, C, D, H, W) give columns (N, C·kd·kh·kw, OD·OH·OW), row
((c·kd + i)·kh + j)·kw + k (Caffe2's Im2ColNd order); channels-last volumes (N, D, H, W, C)
give (N, OD·OH·OW, kd·kh·kw·C), column ((i·kh + j)·kw + k)·C + c. Padded values are read
through the per-axis source-index tables of the padding mode; col2im is the exact adjoint.
Names here are this package's internals, not public.
"""
from __future__ import annotations

import numpy as np

from fastconv import _memory, _padding_mode, _three_d, _tuning, _validate
from fastconv._kernels import _vol2col


def layout_3d(layout, fn):
    """'NCDHW' (or the 2-D default 'NCHW') → 'NCDHW'; 'NDHWC' (or 'NHWC') → 'NDHWC'."""
    return _validate.columns_layout(layout, fn, "NCDHW", "NDHWC", "volumes (a 3-tuple")


def window(fn, channels, sizes, kernel_size, stride, padding, dilation, padding_mode,
           input_desc="input"):
    """The checked geometry of a vol2col call (out_channels unused)."""
    kernel = _three_d.normalize_triple(kernel_size, "kernel_size", fn)
    stride = _three_d.normalize_triple(stride, "stride", fn)
    dilation = _three_d.normalize_triple(dilation, "dilation", fn)
    pads = _three_d.normalize_padding(padding, fn)
    out_sizes = _three_d.output_sizes(fn, sizes, kernel, stride, pads, dilation, input_desc)
    _padding_mode.check_fits(padding_mode, pads, sizes, fn, _three_d.AXES)
    return _three_d.Geometry(0, channels, tuple(sizes), 0, 1, kernel, stride, pads, dilation,
                             out_sizes, "NCDHW", padding_mode)


def _columns_shape(n, geom, layout):
    rows = geom.in_channels * geom.kernel[0] * geom.kernel[1] * geom.kernel[2]
    return (n, rows, geom.positions) if layout == "NCDHW" else (n, geom.positions, rows)


def _vol(geom):
    d, h, w = geom.sizes
    od, oh, ow = geom.out_sizes
    (kd, kh, kw), (sd, sh, sw), (dd, dh, dw) = geom.kernel, geom.stride, geom.dilation
    return {"channels": geom.in_channels, "depth": d, "height": h, "width": w, "out_d": od,
            "out_h": oh, "out_w": ow, "kernel_d": kd, "kernel_h": kh, "kernel_w": kw,
            "stride_d": sd, "stride_h": sh, "stride_w": sw, "dilation_d": dd,
            "dilation_h": dh, "dilation_w": dw, "pad_w": geom.padding[2][0]}


def _vol2col_into(x5, geom, layout, cols):
    if cols.size == 0:
        return
    if x5.size == 0:  # an empty volume with padding: every entry reads a zero
        cols.fill(0)
        return
    tile = max(1, -(-geom.positions // max(1, -(-_tuning.active().work_items // len(x5)))))
    _vol2col.vol2col(_memory.kernel_view(np.ascontiguousarray(x5)), _memory.kernel_view(cols),
                     _vol(geom), *_three_d.tables(geom), x5.shape[0], layout == "NDHWC", tile,
                     _tuning.threads_for_elements(cols.size))


def _col2vol_into(cols3, geom, layout, image):
    if image.size == 0:
        return
    if cols3.size == 0:
        image.fill(0)
        return
    _vol2col.col2vol(_memory.kernel_view(np.ascontiguousarray(cols3)),
                     _memory.kernel_view(image), _vol(geom), *_three_d.tables(geom),
                     image.shape[0], layout == "NDHWC", _tuning.threads_for_elements(
                         cols3.size))


def im2col(x, kernel_size, stride, padding, dilation, layout, out, fn, name, padding_mode):
    """im2col of volumes, errors reported as function `fn` with argument `name`."""
    layout = layout_3d(layout, fn)
    mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    x = _validate.as_array(x, name, fn)
    _validate.check_movable_dtype(x, name, fn)
    if x.ndim not in (4, 5):
        raise ValueError(f"{fn}: kernel_size={kernel_size!r} (three values) means volumes: "
                         f"expected {name} of shape (N, C, D, H, W) or (C, D, H, W) for layout "
                         f"'NCDHW', (N, D, H, W, C) or (D, H, W, C) for 'NDHWC', got shape "
                         f"{x.shape} ({x.ndim}-D)")
    x5, batched = _three_d.split_batch(x, name, fn, layout)
    n, c, sizes = _three_d.dims(x5.shape, layout)
    geom = window(fn, c, sizes, kernel_size, stride, padding, dilation, mode)
    shape = _columns_shape(n, geom, layout)
    out = _validate.check_out(out, shape if batched else shape[1:], x.dtype, [x], fn)
    cols = _memory.result(out, shape, x.dtype)
    _vol2col_into(x5, geom, layout, cols)
    if out is not None:
        return out
    return cols if batched else cols[0]


def col2im(cols, output_size, kernel_size, stride, padding, dilation, layout, out, fn, name,
           padding_mode, channels=None):
    """col2im into volumes, errors reported as function `fn` with argument `name`;
    `channels` is inferred from the column count unless given."""
    layout = layout_3d(layout, fn)
    mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    cols = _validate.as_array(cols, name, fn)
    _validate.check_movable_dtype(cols, name, fn, allow_bool=False)
    expected = ("(N, C·kd·kh·kw, OD·OH·OW) or (C·kd·kh·kw, OD·OH·OW)" if layout == "NCDHW"
                else "(N, OD·OH·OW, kd·kh·kw·C) or (OD·OH·OW, kd·kh·kw·C)")
    cols3, batched = _validate.split_columns(cols, name, fn, expected)
    sizes = _three_d.normalize_triple(output_size, "output_size", fn, minimum=0)
    kernel = _three_d.normalize_triple(kernel_size, "kernel_size", fn)
    taps = kernel[0] * kernel[1] * kernel[2]
    rows = cols3.shape[1] if layout == "NCDHW" else cols3.shape[2]
    if channels is None:
        if rows % taps or rows == 0:
            axis = "rows (axis -2)" if layout == "NCDHW" else "columns (axis -1)"
            raise ValueError(f"{fn}: {name} has {rows} {axis}, which is not a positive "
                             f"multiple of kd·kh·kw = {taps} for kernel_size={kernel}; shape "
                             f"{cols.shape}")
        channels = rows // taps
    geom = window(fn, channels, sizes, kernel, stride, padding, dilation, mode, "output")
    blocks = cols3.shape[2] if layout == "NCDHW" else cols3.shape[1]
    if blocks != geom.positions:
        od, oh, ow = geom.out_sizes
        raise ValueError(f"{fn}: {name} has {blocks} sliding-window positions, but "
                         f"output_size={sizes} with this geometry gives {od}×{oh}×{ow} = "
                         f"{geom.positions}; shape {cols.shape}")
    shape = _three_d.image_shape(cols3.shape[0], channels, sizes, layout)
    out = _validate.check_out(out, shape if batched else shape[1:], cols.dtype, [cols], fn)
    image = _memory.result(out, shape, cols.dtype)
    _col2vol_into(cols3, geom, layout, image)
    if out is not None:
        return out
    return image if batched else image[0]


def im2col_backward(grad_cols, input_shape, kernel_size, stride, padding, dilation, layout,
                    out, fn, padding_mode):
    """col2im of `grad_cols`, checked against the shape im2col gives for `input_shape`."""
    layout = layout_3d(layout, fn)
    mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    shape = _validate.normalize_shape(input_shape, "input_shape", fn, ndims=(4, 5))
    shape5 = shape if len(shape) == 5 else (1,) + shape
    n, c, sizes = _three_d.dims(shape5, layout)
    grad_cols = _validate.as_array(grad_cols, "grad_cols", fn)
    geom = window(fn, c, sizes, kernel_size, stride, padding, dilation, mode)
    expected = _columns_shape(n, geom, layout)
    expected = expected if len(shape) == 5 else expected[1:]
    if grad_cols.shape != expected:
        raise ValueError(f"{fn}: grad_cols must have shape {expected} for input_shape "
                         f"{shape}, got {grad_cols.shape}")
    return col2im(grad_cols, sizes, kernel_size, stride, padding, dilation, layout, out, fn,
                  "grad_cols", mode, channels=c)
