"""The peers fastconv is timed against: NumPy baselines and torch's equivalents.

The NumPy baselines follow the lecture's method (an ``as_strided`` window view, copies and
matmuls). Where one is the same computation as a :mod:`fastconv.reference` oracle it calls
the oracle; the others are deliberately faster NumPy than the oracle (each says how), so
that fastconv is measured against good NumPy code. The torch peers take NCHW tensors:
torch has one layout.
"""
from __future__ import annotations

import numpy as np

from fastconv import reference
from fastconv.reference import padding_pairs, pair, window_count

__all__ = ["numpy_im2col", "numpy_col2im", "numpy_conv2d", "numpy_conv2d_backward",
           "numpy_space_to_batch", "numpy_rmac", "as_nchw", "torch_conv2d_backward",
           "torch_conv1d_backward", "numpy_conv3d", "numpy_conv3d_backward",
           "torch_conv3d_backward",
           "torch_space_to_batch", "torch_rmac"]


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
    A faster formulation than :func:`fastconv.reference.im2col` (on every suite layer),
    which copies once per kernel offset and transposes in NCHW.
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
    add the strided slice of columns into a zero-padded image, then crop the padding; the
    result is C-contiguous, like fastconv's.

    NHWC is :func:`fastconv.reference.col2im`. NCHW is written natively: faster than the
    oracle's adds on an NHWC transpose on most suite layers (1.2-30x; 0.4-0.9x on the deep
    3x3 ones with small images).
    (``np.add.at`` would be the literal scatter-add, but it is far too slow to compare.)
    """
    if layout.upper() == "NHWC":
        return np.ascontiguousarray(reference.col2im(cols, output_size, kernel_size, stride,
                                                     padding, dilation, layout="NHWC"))
    h, w = pair(output_size)
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (top, bottom), (left, right) = padding_pairs(padding)
    hp, wp = h + top + bottom, w + left + right
    oh, ow = window_count(hp, kh, sh, dh), window_count(wp, kw, sw, dw)
    n, c = cols.shape[0], cols.shape[1] // (kh * kw)
    patches = cols.reshape(n, c, kh, kw, oh, ow)
    padded = np.zeros((n, c, hp, wp), dtype=cols.dtype)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        for j in range(kw):
            columns = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            padded[:, :, rows, columns] += patches[:, :, i, j]
    return np.ascontiguousarray(padded[:, :, top:top + h, left:left + w])


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
    the (N, C_out, OH·OW) result. NHWC (weight HWIO): the method of
    :func:`fastconv.reference.conv2d_strided`, ``columns (N·OH·OW, K) @ W_g (K, M)``, but
    faster: no padded copy of an unpadded input and, without groups, the matmul writes into
    the result (the oracle took 1.2-2.1x as long on the suite's 1x1 layers).
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
    :func:`numpy_col2im` (strided adds per kernel offset). Faster on most layers than
    :func:`fastconv.reference.conv2d_backward`, which runs a matmul and an einsum per
    kernel offset (depthwise layers excepted).
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


def numpy_space_to_batch(x, block_size, padding=0, layout="NCHW"):
    """The NumPy baseline for space_to_batch (batched 4-D input): ``np.pad`` (skipped when
    there is no padding), then one reshape/transpose copy into the block layout. Faster on
    most layers than :func:`fastconv.reference.space_to_batch`, which always pads and, in
    NCHW, goes through NHWC and copies twice."""
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


def numpy_rmac(x, levels=3, layout="NCHW"):
    """The straightforward NumPy R-MAC: per region one slice of the batch and one
    ``max`` over H and W, L2-normalised and summed, then L2-normalised
    (:func:`fastconv.reference.rmac`)."""
    return reference.rmac(x, levels, layout=layout)


def as_nchw(array, layout):
    """A `layout` batch as an NCHW one (a contiguous copy unless it is NCHW already)."""
    return array if layout == "NCHW" else np.ascontiguousarray(array.transpose(0, 3, 1, 2))


def torch_conv2d_backward(torch, grad_t, x_t, weight_t, bias_t, args):
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


def torch_conv1d_backward(torch, grad_t, x_t, weight_t, bias_t, args):
    """A function computing torch's three conv1d gradients (NCL), as
    :func:`torch_conv2d_backward` does for conv2d."""
    stride, padding = args["stride"], args["padding"]
    try:
        backward = torch.ops.aten.convolution_backward
    except (AttributeError, RuntimeError):
        backward = None
    if backward is not None:
        return lambda: backward(grad_t, x_t, weight_t, [weight_t.shape[0]], [stride],
                                [padding], [1], False, [0], 1, [True, True, True])
    leaves = [t.detach().requires_grad_() for t in (x_t, weight_t, bias_t)]
    y = torch.nn.functional.conv1d(*leaves, **args)
    return lambda: torch.autograd.grad(y, leaves, grad_t, retain_graph=True)


def _taps_3d(shape, kernel, stride):
    """Each tap (i, j, k) with the strided slice of the padded volume it reads (NDHWC)."""
    outs = [(n - k) // stride + 1 for n, k in zip(shape, kernel)]
    for i, j, k in np.ndindex(*kernel):
        yield (i, j, k), (slice(None), slice(i, i + (outs[0] - 1) * stride + 1, stride),
                          slice(j, j + (outs[1] - 1) * stride + 1, stride),
                          slice(k, k + (outs[2] - 1) * stride + 1, stride))


def numpy_conv3d(x, weight, bias, stride=1, padding=0, layout="NCDHW"):
    """3-D convolution in NumPy: the zero-padded volume (NDHWC), one matmul per kernel tap
    summed (the plain-NumPy way; no 3-D as_strided im2col, which would need the whole
    column matrix)."""
    z = x if layout == "NDHWC" else np.moveaxis(x, 1, -1)
    w = weight if layout == "NDHWC" else weight.transpose(2, 3, 4, 1, 0)
    zp = np.pad(z, ((0, 0),) + ((padding, padding),) * 3 + ((0, 0),))
    out = None
    for (i, j, k), window in _taps_3d(zp.shape[1:4], w.shape[:3], stride):
        term = zp[window] @ w[i, j, k]
        out = term if out is None else out + term
    if bias is not None:
        out += bias
    return out if layout == "NDHWC" else np.ascontiguousarray(np.moveaxis(out, -1, 1))


def numpy_conv3d_backward(grad, x, weight, stride=1, padding=0, layout="NCDHW"):
    """The three gradients of :func:`numpy_conv3d`, tap by tap."""
    g = grad if layout == "NDHWC" else np.moveaxis(grad, 1, -1)
    z = x if layout == "NDHWC" else np.moveaxis(x, 1, -1)
    w = weight if layout == "NDHWC" else weight.transpose(2, 3, 4, 1, 0)
    zp = np.pad(z, ((0, 0),) + ((padding, padding),) * 3 + ((0, 0),))
    grad_zp = np.zeros_like(zp)
    grad_w = np.empty_like(w)
    g2 = g.reshape(-1, g.shape[-1])
    for (i, j, k), window in _taps_3d(zp.shape[1:4], w.shape[:3], stride):
        grad_zp[window] += g @ w[i, j, k].T
        grad_w[i, j, k] = zp[window].reshape(-1, zp.shape[-1]).T @ g2
    d, h, wd = z.shape[1:4]
    grad_z = grad_zp[:, padding:padding + d, padding:padding + h, padding:padding + wd]
    if layout == "NCDHW":
        grad_z = np.ascontiguousarray(np.moveaxis(grad_z, -1, 1))
        grad_w = np.ascontiguousarray(grad_w.transpose(4, 3, 0, 1, 2))
    return grad_z, grad_w, g2.sum(axis=0)


def torch_conv3d_backward(torch, grad_t, x_t, weight_t, bias_t, args):
    """A function computing torch's three conv3d gradients, as
    :func:`torch_conv2d_backward` does for conv2d."""
    stride, padding = args["stride"], args["padding"]
    try:
        backward = torch.ops.aten.convolution_backward
    except (AttributeError, RuntimeError):
        backward = None
    if backward is not None:
        return lambda: backward(grad_t, x_t, weight_t, [weight_t.shape[0]], [stride] * 3,
                                [padding] * 3, [1] * 3, False, [0] * 3, 1,
                                [True, True, True])
    leaves = [t.detach().requires_grad_() for t in (x_t, weight_t, bias_t)]
    y = torch.nn.functional.conv3d(*leaves, **args)
    return lambda: torch.autograd.grad(y, leaves, grad_t, retain_graph=True)


def torch_space_to_batch(torch, x_t, block, padding):
    """torch has no space_to_batch: F.pad + reshape + permute + contiguous, NCHW."""
    (top, bottom), (left, right) = padding
    if top or bottom or left or right:
        x_t = torch.nn.functional.pad(x_t, (left, right, top, bottom))
    n, c, hp, wp = x_t.shape
    blocks = x_t.reshape(n, c, hp // block, block, wp // block, block).permute(3, 5, 0, 1, 2, 4)
    return blocks.reshape(block * block * n, c, hp // block, wp // block).contiguous()


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
