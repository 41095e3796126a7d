"""Slow, obviously-correct NumPy versions of fastconv's operators: test oracles and teaching.

Convolutions follow the CMU Deep Learning Systems lecture: input ``Z`` is NHWC, weight
``W`` is HWIO, and the progression is naive loops → one matmul per kernel offset → one
``as_strided`` im2col and a single matmul. Here they are generalised to stride, padding
(int, pair, or ((top, bottom), (left, right))), dilation and groups. Nothing here is fast
and nothing here calls fastconv's kernels, so the tests compare two independent codes.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "same_padding", "pad_nhwc", "pad_source", "unpad", "conv2d_naive", "conv2d_matmul",
    "conv2d_strided",
    "conv2d_backward",
    "im2col", "col2im",
    "conv1d_naive", "conv1d_backward", "conv_transpose1d", "im2col1d", "col2im1d",
    "conv3d_naive", "conv3d_backward", "conv_transpose3d", "im2col3d", "col2im3d",
    "space_to_batch", "batch_to_space",
    "rmac_step", "rmac_regions", "rmac_cirtorch_regions", "roi_max_pool", "rmac",
]


def pair(v):
    """A scalar as (v, v), any other pair as a tuple."""
    return (v, v) if np.isscalar(v) else tuple(v)


def padding_pairs(p):
    """int | (ph, pw) | ((top, bottom), (left, right)) → ((top, bottom), (left, right))."""
    if np.isscalar(p):
        return ((p, p), (p, p))
    return tuple((a, a) if np.isscalar(a) else tuple(a) for a in p)


def same_padding(size, kernel, stride=1, dilation=1):
    """(before, after) padding of ``padding="same"`` along one axis: TensorFlow's SAME.

    The output has ``ceil(size / stride)`` positions; the last window, starting at
    ``(out - 1)·stride``, must end inside the padded axis, which takes
    ``(out - 1)·stride + dilation·(kernel - 1) + 1`` pixels. The padding is what is missing
    (never negative), half before, the odd pixel after. At stride 1 it is
    ``dilation·(kernel - 1)``, PyTorch's "same".

    Parameters
    ----------
    size, kernel, stride, dilation : int

    Returns
    -------
    (before, after) : tuple of int

    Raises
    ------
    ZeroDivisionError
        For ``stride == 0``.

    Examples
    --------
    >>> fastconv.reference.same_padding(7, 3, stride=2)     # 4 outputs need 9 pixels
    (1, 1)
    >>> fastconv.reference.same_padding(8, 3, stride=2)     # 4 outputs need 9: one more
    (0, 1)
    """
    out = -(-size // stride)
    needed = (out - 1) * stride + dilation * (kernel - 1) + 1
    total = max(needed - size, 0)
    return (total // 2, total - total // 2)


def conv_padding(padding, sizes, kernel_size, stride, dilation):
    """A convolution's padding per spatial axis as (before, after) pairs: "valid" is none,
    "same" is :func:`same_padding` of each axis' size, numbers as :func:`padding_pairs`
    (for 2-D)."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return tuple((0, 0) for _ in sizes)
        assert padding.lower() == "same", padding
        return tuple(same_padding(n, k, s, d)
                     for n, k, s, d in zip(sizes, kernel_size, stride, dilation))
    return padding_pairs(padding)


# PyTorch's padding modes (docs/spec.md §6) as np.pad modes.
NUMPY_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                   "circular": "wrap"}


def pad_source(size, before, after, padding_mode="zeros"):
    """For each coordinate of an axis of `size` padded by (before, after): the index of the
    entry it copies, or -1 for a zero (np.pad of the indices themselves).

    Parameters
    ----------
    size : int
        The axis's length.
    before, after : int
        The padding on each side.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (docs/spec.md §6).

    Returns
    -------
    ndarray of int, (before + size + after,)

    Examples
    --------
    >>> fastconv.reference.pad_source(4, 2, 2, "reflect").tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    """
    if padding_mode == "zeros" or size == 0:
        return np.pad(np.arange(size), (before, after), constant_values=-1)
    return np.pad(np.arange(size), (before, after), mode=NUMPY_PAD_MODES[padding_mode])


def unpad(grad_padded, pads, padding_mode="zeros"):
    """The adjoint of np.pad in a padding mode: every entry of the padded array added onto
    the entry it copies (zeros dropped).

    Parameters
    ----------
    grad_padded : ndarray
        An array of the padded shape (e.g. a gradient with respect to a padded image).
    pads : sequence of (int, int)
        One (before, after) per axis, from the first.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        The mode the padding was made in.

    Returns
    -------
    ndarray
        The unpadded shape: each axis shortened by its padding.

    Examples
    --------
    >>> fastconv.reference.unpad(np.arange(6.0), [(1, 1)], "replicate")
    array([1., 2., 3., 9.])
    """
    result = np.asarray(grad_padded)
    for axis, (before, after) in enumerate(pads):
        if before == 0 and after == 0:
            continue
        size = result.shape[axis] - before - after
        moved = np.moveaxis(result, axis, 0)
        folded = np.zeros((size,) + moved.shape[1:], dtype=result.dtype)
        for position, source in enumerate(pad_source(size, before, after, padding_mode)):
            if source >= 0:
                folded[source] += moved[position]
        result = np.moveaxis(folded, 0, axis)
    return result


def pad_nhwc(Z, padding, padding_mode="zeros"):
    """Pad the H and W axes of an NHWC batch: zeros, or a padding mode as np.pad has it
    ("reflect", "replicate" → np.pad's "edge", "circular" → "wrap").

    Parameters
    ----------
    Z : ndarray, (N, H, W, C)
    padding : int, (pad_h, pad_w) or ((top, bottom), (left, right))
    padding_mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    ndarray, (N, top + H + bottom, left + W + right, C)
        A new array, the padding around a copy of `Z`.

    Raises
    ------
    ValueError
        From ``np.pad``, for a negative padding or a `Z` that is not 4-D.

    Examples
    --------
    >>> fastconv.reference.pad_nhwc(np.ones((1, 2, 2, 3)), ((1, 0), (0, 2))).shape
    (1, 3, 4, 3)
    """
    (top, bottom), (left, right) = padding_pairs(padding)
    return np.pad(Z, ((0, 0), (top, bottom), (left, right), (0, 0)),
                  mode=NUMPY_PAD_MODES[padding_mode])


def window_count(size, k, s, d):
    """Window positions along an axis of `size` (padded) for kernel k, stride s, dilation d."""
    return (size - d * (k - 1) - 1) // s + 1


def conv2d_naive(Z, W, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Convolution by the seven loops of the lecture.

    Parameters
    ----------
    Z : ndarray, (N, H, W, C_in)
        The input batch, NHWC.
    W : ndarray, (kh, kw, C_in/groups, C_out)
        The weight, HWIO.
    stride, dilation : int or (h, w)
    padding : int, (pad_h, pad_w), ((top, bottom), (left, right)), "valid" or "same"
        "same" pads each axis by :func:`same_padding` (TensorFlow's SAME).
    groups : int
        Divides C_in and C_out.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding holds (docs/spec.md §6), by :func:`pad_nhwc`. The other
        convolution oracles, im2col / col2im and the 1-D ones take it too.

    Returns
    -------
    ndarray, (N, OH, OW, C_out)
        In ``np.result_type(Z, W)``.

    Raises
    ------
    IndexError, ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> Z, W = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5))
    >>> fastconv.reference.conv2d_naive(Z, W, padding=1).shape
    (1, 4, 4, 5)
    >>> fastconv.reference.conv2d_naive(Z, W)[0, :, :, 0]   # 3·3·2 ones per window
    array([[18., 18.],
           [18., 18.]])
    """
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    padding = conv_padding(padding, Z.shape[1:3], W.shape[:2], pair(stride),
                           pair(dilation))
    Zp = pad_nhwc(Z, padding, padding_mode)
    N, H, Wd, C = Zp.shape
    kh, kw, cin_g, C_out = W.shape
    cout_g = C_out // groups
    OH, OW = window_count(H, kh, sh, dh), window_count(Wd, kw, sw, dw)
    out = np.zeros((N, OH, OW, C_out), dtype=np.result_type(Z, W))
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                for o in range(C_out):
                    g = o // cout_g
                    for i in range(kh):
                        for j in range(kw):
                            for c in range(cin_g):
                                out[n, oh, ow, o] += (Zp[n, oh * sh + i * dh, ow * sw + j * dw,
                                                         g * cin_g + c] * W[i, j, c, o])
    return out


def conv2d_matmul(Z, W, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Convolution by one matmul per kernel offset (i, j): out += Z[shifted window] @ W[i, j],
    per group.

    Parameters
    ----------
    Z, W, stride, padding, dilation, groups
        As for :func:`conv2d_naive` (NHWC input, HWIO weight).
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    ndarray, (N, OH, OW, C_out)

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> Z, W = np.ones((2, 5, 5, 4)), np.ones((3, 3, 2, 6))
    >>> fastconv.reference.conv2d_matmul(Z, W, stride=2, groups=2).shape
    (2, 2, 2, 6)
    """
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    padding = conv_padding(padding, Z.shape[1:3], W.shape[:2], pair(stride),
                           pair(dilation))
    Zp = pad_nhwc(Z, padding, padding_mode)
    N, H, Wd, C = Zp.shape
    kh, kw, cin_g, C_out = W.shape
    cout_g = C_out // groups
    OH, OW = window_count(H, kh, sh, dh), window_count(Wd, kw, sw, dw)
    out = np.zeros((N, OH, OW, C_out), dtype=np.result_type(Z, W))
    for g in range(groups):
        Zg = Zp[..., g * cin_g:(g + 1) * cin_g]
        Wg = W[..., g * cout_g:(g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                window = Zg[:, i * dh:i * dh + sh * (OH - 1) + 1:sh,
                            j * dw:j * dw + sw * (OW - 1) + 1:sw, :]
                out[..., g * cout_g:(g + 1) * cout_g] += window @ Wg[i, j]
    return out


def conv2d_strided(Z, W, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Convolution by an ``as_strided`` im2col (a view, no copy), then one matmul per group.

    Parameters
    ----------
    Z, W, stride, padding, dilation, groups
        As for :func:`conv2d_naive` (NHWC input, HWIO weight).
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    ndarray, (N, OH, OW, C_out)

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Z, W = rng.random((1, 6, 6, 3)), rng.random((3, 3, 3, 4))
    >>> out = fastconv.reference.conv2d_strided(Z, W, dilation=2)
    >>> out.shape, np.allclose(out, fastconv.reference.conv2d_naive(Z, W, dilation=2))
    ((1, 2, 2, 4), True)
    """
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    padding = conv_padding(padding, Z.shape[1:3], W.shape[:2], pair(stride),
                           pair(dilation))
    Zp = np.ascontiguousarray(pad_nhwc(Z, padding, padding_mode))
    N, H, Wd, C = Zp.shape
    kh, kw, cin_g, C_out = W.shape
    cout_g = C_out // groups
    OH, OW = window_count(H, kh, sh, dh), window_count(Wd, kw, sw, dw)
    Ns, Hs, Ws, Cs = Zp.strides
    patches = np.lib.stride_tricks.as_strided(
        Zp, shape=(N, OH, OW, kh, kw, C), strides=(Ns, sh * Hs, sw * Ws, dh * Hs, dw * Ws, Cs),
        writeable=False)
    out = np.empty((N, OH, OW, C_out), dtype=np.result_type(Z, W))
    for g in range(groups):
        cols = patches[..., g * cin_g:(g + 1) * cin_g].reshape(N * OH * OW, kh * kw * cin_g)
        Wg = W[..., g * cout_g:(g + 1) * cout_g].reshape(kh * kw * cin_g, cout_g)
        out[..., g * cout_g:(g + 1) * cout_g] = (cols @ Wg).reshape(N, OH, OW, cout_g)
    return out


def conv2d_backward(grad_out, Z, W, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    """Gradients of :func:`conv2d_matmul` by the same per-offset matmuls, run backwards.

    Parameters
    ----------
    grad_out : ndarray, (N, OH, OW, C_out)
        Gradient of the loss with respect to the convolution's output.
    Z : ndarray, (N, H, W, C_in)
    W : ndarray, (kh, kw, C_in/groups, C_out)
    stride, padding, dilation, groups
        The forward call's arguments.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    grad_Z : ndarray, shaped like `Z`
    grad_W : ndarray, shaped like `W`
    grad_bias : ndarray, (C_out,)

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> Z, W = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5))
    >>> gZ, gW, gb = fastconv.reference.conv2d_backward(np.ones((1, 2, 2, 5)), Z, W)
    >>> gZ.shape, gW.shape, gb.shape
    ((1, 4, 4, 2), (3, 3, 2, 5), (5,))
    """
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    padding = conv_padding(padding, Z.shape[1:3], W.shape[:2], pair(stride),
                           pair(dilation))
    (top, bottom), (left, right) = padding_pairs(padding)
    Zp = pad_nhwc(Z, padding, padding_mode)
    N, H, Wd, C = Zp.shape
    kh, kw, cin_g, C_out = W.shape
    cout_g = C_out // groups
    OH, OW = grad_out.shape[1:3]
    grad_Zp = np.zeros(Zp.shape, dtype=np.result_type(grad_out, W))
    grad_W = np.zeros(W.shape, dtype=grad_Zp.dtype)
    for g in range(groups):
        G = grad_out[..., g * cout_g:(g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (OH - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (OW - 1) + 1, sw)
                channels = slice(g * cin_g, (g + 1) * cin_g)
                window = Zp[:, rows, cols, channels]            # (N, OH, OW, cin_g)
                Wij = W[i, j, :, g * cout_g:(g + 1) * cout_g]   # (cin_g, cout_g)
                # out += window @ Wij, so d(window) = G @ Wijᵀ and d(Wij) = Σ windowᵀ @ G.
                grad_Zp[:, rows, cols, channels] += G @ Wij.T
                grad_W[i, j, :, g * cout_g:(g + 1) * cout_g] += np.einsum(
                    "nhwc,nhwo->co", window, G)
    # What each padded pixel received goes back to the pixel it copies (zeros: dropped).
    grad_Z = unpad(grad_Zp, [(0, 0), (top, bottom), (left, right), (0, 0)], padding_mode)
    return grad_Z, grad_W, grad_out.sum(axis=(0, 1, 2))


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW",
           padding_mode="zeros"):
    """:func:`fastconv.im2col` by loops over kernel offsets on a padded copy.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) for NCHW or (N, H, W, C) for NHWC
        A batched input (4-D only).
    kernel_size, stride, padding, dilation, layout
        As for :func:`fastconv.im2col`.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    ndarray
        NCHW: (N, C·kh·kw, OH·OW); NHWC: (N, OH·OW, kh·kw·C).

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> np.array_equal(fastconv.reference.im2col(x, 2), fastconv.im2col(x, 2))
    True
    """
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    nhwc = x if layout.upper() == "NHWC" else np.moveaxis(x, 1, 3)
    Zp = pad_nhwc(nhwc, padding, padding_mode)
    N, H, Wd, C = Zp.shape
    OH, OW = window_count(H, kh, sh, dh), window_count(Wd, kw, sw, dw)
    patches = np.empty((N, OH, OW, kh, kw, C), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patches[:, :, :, i, j, :] = Zp[:, i * dh:i * dh + sh * (OH - 1) + 1:sh,
                                           j * dw:j * dw + sw * (OW - 1) + 1:sw, :]
    if layout.upper() == "NHWC":
        return patches.reshape(N, OH * OW, kh * kw * C)
    # NCHW rows are (c, i, j), columns (oh, ow).
    return patches.transpose(0, 5, 3, 4, 1, 2).reshape(N, C * kh * kw, OH * OW)


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW",
           padding_mode="zeros"):
    """:func:`fastconv.col2im` by a scatter-add of every column entry back to its pixel;
    the padding is dropped.

    Parameters
    ----------
    cols : ndarray
        NCHW: (N, C·kh·kw, OH·OW); NHWC: (N, OH·OW, kh·kw·C).
    output_size : int or (H, W)
    kernel_size, stride, padding, dilation, layout
        As for :func:`fastconv.col2im`.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    ndarray, (N, C, H, W) for NCHW or (N, H, W, C) for NHWC

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> fastconv.reference.col2im(np.ones((1, 4, 4)), (3, 3), 2)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    H, Wd = pair(output_size)
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (top, bottom), (left, right) = padding_pairs(padding)
    Hp, Wp = H + top + bottom, Wd + left + right
    OH, OW = window_count(Hp, kh, sh, dh), window_count(Wp, kw, sw, dw)
    N = cols.shape[0]
    if layout.upper() == "NHWC":
        C = cols.shape[2] // (kh * kw)
        patches = cols.reshape(N, OH, OW, kh, kw, C)
    else:
        C = cols.shape[1] // (kh * kw)
        patches = cols.reshape(N, C, kh, kw, OH, OW).transpose(0, 4, 5, 2, 3, 1)
    padded = np.zeros((N, Hp, Wp, C), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, i * dh:i * dh + sh * (OH - 1) + 1:sh,
                   j * dw:j * dw + sw * (OW - 1) + 1:sw, :] += patches[:, :, :, i, j, :]
    image = unpad(padded, [(0, 0), (top, bottom), (left, right), (0, 0)], padding_mode)
    return image if layout.upper() == "NHWC" else image.transpose(0, 3, 1, 2)


# --------------------------------------------------------------------------- 1-D (§6)
# Signals are NLC (N, L, C) and weights LIO (k, C_in/groups, C_out), the 1-D analogue of
# the lecture's NHWC / HWIO; written straight from the definitions, not via the 2-D code.

def single(v):
    """An int or a 1-sequence (v,) as an int."""
    return int(v) if np.isscalar(v) else int(v[0])


def pad_pair(padding, length, kernel, stride, dilation):
    """1-D padding as (before, after): an int p, a pair, "valid" or "same"."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0)
        return same_padding(length, kernel, stride, dilation)
    if np.isscalar(padding):
        return (int(padding), int(padding))
    return (int(padding[0]), int(padding[-1]))


def conv1d_naive(Z, W, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """1-D convolution by loops: ``out[n, t, o] = Σ_i Σ_c Zp[n, t·s + i·d, c] · W[i, c, o]``
    over the input channels c of o's group.

    Parameters
    ----------
    Z : ndarray, (N, L, C_in)
        The input batch, NLC.
    W : ndarray, (k, C_in/groups, C_out)
        The weight, LIO.
    stride, dilation : int or (s,)
    padding : int, (before, after), "valid" or "same"
        "same" pads by :func:`same_padding`.
    groups : int
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    ndarray, (N, L_out, C_out)
        In ``np.result_type(Z, W)``.

    Raises
    ------
    IndexError, ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> Z, W = np.ones((1, 5, 2)), np.ones((3, 2, 4))
    >>> fastconv.reference.conv1d_naive(Z, W, padding=1)[0, :, 0]   # 2, 3, 3, 3, 2 taps × 2
    array([4., 6., 6., 6., 4.])
    """
    s, d = single(stride), single(dilation)
    k, cin_g, C_out = W.shape
    before, after = pad_pair(padding, Z.shape[1], k, s, d)
    Zp = np.pad(Z, ((0, 0), (before, after), (0, 0)), mode=NUMPY_PAD_MODES[padding_mode])
    N, L, C = Zp.shape
    cout_g = C_out // groups
    L_out = window_count(L, k, s, d)
    out = np.zeros((N, L_out, C_out), dtype=np.result_type(Z, W))
    for n in range(N):
        for t in range(L_out):
            for o in range(C_out):
                g = o // cout_g
                for i in range(k):
                    for c in range(cin_g):
                        out[n, t, o] += Zp[n, t * s + i * d, g * cin_g + c] * W[i, c, o]
    return out


def conv1d_backward(grad_out, Z, W, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    """Gradients of :func:`conv1d_naive`, by its loops run backwards: each product
    ``Zp[n, t·s + i·d, c] · W[i, c, o]`` sends ``grad_out[n, t, o]`` times the other
    factor to each.

    Parameters
    ----------
    grad_out : ndarray, (N, L_out, C_out)
    Z : ndarray, (N, L, C_in)
    W : ndarray, (k, C_in/groups, C_out)
    stride, padding, dilation, groups
        The forward call's arguments.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    grad_Z : ndarray, shaped like `Z`
    grad_W : ndarray, shaped like `W`
    grad_bias : ndarray, (C_out,)

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> Z, W = np.ones((1, 5, 2)), np.ones((3, 2, 4))
    >>> gZ, gW, gb = fastconv.reference.conv1d_backward(np.ones((1, 3, 4)), Z, W)
    >>> gZ[0, :, 0], gW.shape, gb
    (array([ 4.,  8., 12.,  8.,  4.]), (3, 2, 4), array([3., 3., 3., 3.]))
    """
    s, d = single(stride), single(dilation)
    k, cin_g, C_out = W.shape
    before, _ = pad = pad_pair(padding, Z.shape[1], k, s, d)
    Zp = np.pad(Z, ((0, 0), pad, (0, 0)), mode=NUMPY_PAD_MODES[padding_mode])
    cout_g = C_out // groups
    N, L_out = grad_out.shape[:2]
    grad_Zp = np.zeros(Zp.shape, dtype=np.result_type(grad_out, W))
    grad_W = np.zeros(W.shape, dtype=grad_Zp.dtype)
    for n in range(N):
        for t in range(L_out):
            for o in range(C_out):
                g = o // cout_g
                for i in range(k):
                    for c in range(cin_g):
                        position, channel = t * s + i * d, g * cin_g + c
                        grad_Zp[n, position, channel] += grad_out[n, t, o] * W[i, c, o]
                        grad_W[i, c, o] += grad_out[n, t, o] * Zp[n, position, channel]
    grad_Z = unpad(grad_Zp, [(0, 0), pad, (0, 0)], padding_mode)
    return grad_Z, grad_W, grad_out.sum(axis=(0, 1))


def conv_transpose1d(Z, W, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 1-D convolution by its definition: every input sample scatters
    ``Z[n, t, c] · W[i, o, c]`` to output position ``t·s + i·d``, then `padding` is cut
    from both ends (``output_padding`` extra samples at the end are zeros unless written).

    Parameters
    ----------
    Z : ndarray, (N, L, C_in)
    W : ndarray, (k, C_out/groups, C_in)
        TensorFlow's conv1d_transpose filter order (fastconv's NLC weight).
    stride, dilation : int or (s,)
    padding : int or (before, after)
    output_padding : int or (p,)
    groups : int

    Returns
    -------
    ndarray, (N, L_out, C_out)
        ``L_out = (L - 1)·s - before - after + d·(k - 1) + output_padding + 1``.

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> fastconv.reference.conv_transpose1d(np.ones((1, 3, 1)), np.ones((2, 1, 1)),
    ...                                     stride=2)[0, :, 0]
    array([1., 1., 1., 1., 1., 1.])
    """
    s, d = single(stride), single(dilation)
    before, after = pad_pair(padding, 0, 1, 1, 1)
    k, cout_g, C_in = W.shape
    cin_g = C_in // groups
    N, L = Z.shape[:2]
    full = (L - 1) * s + d * (k - 1) + single(output_padding) + 1
    out = np.zeros((N, full, cout_g * groups), dtype=np.result_type(Z, W))
    for n in range(N):
        for t in range(L):
            for c in range(C_in):
                g = c // cin_g
                for i in range(k):
                    for o in range(cout_g):
                        out[n, t * s + i * d, g * cout_g + o] += Z[n, t, c] * W[i, o, c]
    return out[:, before:full - after, :]


def im2col1d(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCL",
             padding_mode="zeros"):
    """:func:`fastconv.im2col` of 1-D signals (a 1-tuple kernel_size), element by element.

    Parameters
    ----------
    x : ndarray, (N, C, L) for NCL or (N, L, C) for NLC
    kernel_size, stride, dilation : int or (v,)
    padding : int or (before, after)
    layout : {"NCL", "NLC"}
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    ndarray
        NCL: (N, C·k, L_out), ``[n, c·k + i, t] = x[n, c, t·s − before + i·d]``;
        NLC: (N, L_out, k·C), ``[n, t, i·C + c]``; zero in the padding.

    Raises
    ------
    IndexError, ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> fastconv.reference.im2col1d(np.arange(4.0).reshape(1, 1, 4), (2,))[0]
    array([[0., 1., 2.],
           [1., 2., 3.]])
    """
    k, s, d = single(kernel_size), single(stride), single(dilation)
    ncl = x if layout.upper() in ("NCL", "NCHW") else np.swapaxes(x, 1, 2)
    N, C, L = ncl.shape
    before, after = pad_pair(padding, L, k, s, d)
    L_out = window_count(L + before + after, k, s, d)
    source = pad_source(L, before, after, padding_mode)
    cols = np.zeros((N, C, k, L_out), dtype=x.dtype)
    for i in range(k):
        for t in range(L_out):
            position = source[t * s + i * d]  # the sample that padded position copies
            if position >= 0:
                cols[:, :, i, t] = ncl[:, :, position]
    if layout.upper() in ("NCL", "NCHW"):
        return cols.reshape(N, C * k, L_out)
    return cols.transpose(0, 3, 2, 1).reshape(N, L_out, k * C)


def col2im1d(cols, length, kernel_size, stride=1, padding=0, dilation=1, layout="NCL",
             padding_mode="zeros"):
    """:func:`fastconv.col2im` into 1-D signals: every column entry added back to its sample
    (the adjoint of :func:`im2col1d`); entries in the padding are dropped.

    Parameters
    ----------
    cols : ndarray, NCL (N, C·k, L_out) or NLC (N, L_out, k·C)
    length : int or (L,)
    kernel_size, stride, padding, dilation, layout
        As for :func:`im2col1d`.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads (np.pad in the mode; docs/spec.md §6).

    Returns
    -------
    ndarray, (N, C, L) for NCL or (N, L, C) for NLC

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> fastconv.reference.col2im1d(np.ones((1, 2, 3)), 4, (2,))[0]
    array([[1., 2., 2., 1.]])
    """
    L, k, s, d = single(length), single(kernel_size), single(stride), single(dilation)
    before, after = pad_pair(padding, L, k, s, d)
    L_out = window_count(L + before + after, k, s, d)
    N = cols.shape[0]
    if layout.upper() in ("NCL", "NCHW"):
        C = cols.shape[1] // k
        per_tap = cols.reshape(N, C, k, L_out)
    else:
        C = cols.shape[2] // k
        per_tap = cols.reshape(N, L_out, k, C).transpose(0, 3, 2, 1)
    source = pad_source(L, before, after, padding_mode)
    image = np.zeros((N, C, L), dtype=cols.dtype)
    for i in range(k):
        for t in range(L_out):
            position = source[t * s + i * d]
            if position >= 0:
                image[:, :, position] += per_tap[:, :, i, t]
    return image if layout.upper() in ("NCL", "NCHW") else image.transpose(0, 2, 1)


# --------------------------------------------------------------------------- 3-D (§6)
# Volumes NDHWC (N, D, H, W, C), weights DHWIO (kd, kh, kw, C_in/groups, C_out). Padded
# copies are made with np.pad: "zeros" → constant, "reflect" → reflect, "replicate" →
# edge, "circular" → wrap (the kernels never copy; these oracles may).
NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                "circular": "wrap"}


def triple(v):
    """int or (d, h, w) → (d, h, w)."""
    return (int(v),) * 3 if np.ndim(v) == 0 else tuple(int(a) for a in v)


def pad_triples(padding, sizes, kernel, stride, dilation):
    """Three (before, after) pairs from an int, three ints or pairs, "valid" or "same"."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return ((0, 0),) * 3
        return tuple(same_padding(n, k, s, d) for n, k, s, d in
                     zip(sizes, triple(kernel), triple(stride), triple(dilation)))
    if isinstance(padding, (int, np.integer)):
        return ((int(padding),) * 2,) * 3
    return tuple((int(p),) * 2 if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1]))
                 for p in padding)


def pad_ndhwc(Z, pads, padding_mode="zeros"):
    """Z (N, D, H, W, C) padded on its three spatial axes by `pads` in `padding_mode`."""
    return np.pad(Z, ((0, 0), *pads, (0, 0)), mode=NP_PAD_MODES[padding_mode])


def _source_indices(size, pad, padding_mode):
    """For each padded coordinate the volume index np.pad copies it from (-1: a zero)."""
    if padding_mode == "zeros":
        return np.pad(np.arange(size), pad, mode="constant", constant_values=-1)
    return np.pad(np.arange(size), pad, mode=NP_PAD_MODES[padding_mode])


def conv3d_naive(Z, W, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """3-D convolution, one kernel tap at a time: ``out[n, od, oh, ow, o] = Σ_{i,j,k,c}
    Zp[n, od·sd + i·dd, oh·sh + j·dh, ow·sw + k·dw, c] · W[i, j, k, c, o]`` over the input
    channels c of o's group, Zp the padded volume.

    Parameters
    ----------
    Z : ndarray, (N, D, H, W, C_in)
    W : ndarray, (kd, kh, kw, C_in/groups, C_out)
    stride, dilation : int or (d, h, w)
    padding : int, three ints or (before, after) pairs, "valid" or "same"
    groups : int
    padding_mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    ndarray, (N, OD, OH, OW, C_out)

    Raises
    ------
    IndexError, ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> Z, W = np.ones((1, 3, 3, 3, 2)), np.ones((3, 3, 3, 2, 1))
    >>> fastconv.reference.conv3d_naive(Z, W, padding=1)[0, :, 1, 1, 0]   # 2·18, 2·27, 2·18
    array([36., 54., 36.])
    """
    s, d = triple(stride), triple(dilation)
    kernel = W.shape[:3]
    pads = pad_triples(padding, Z.shape[1:4], kernel, s, d)
    Zp = pad_ndhwc(Z, pads, padding_mode)
    cin_g, C_out = W.shape[3:]
    cout_g = C_out // groups
    outs = [window_count(n, k, st, di) for n, k, st, di in zip(Zp.shape[1:4], kernel, s, d)]
    out = np.zeros((Z.shape[0], *outs, C_out), dtype=np.result_type(Z, W))
    for i, j, k in np.ndindex(*kernel):
        patch = Zp[:, i * d[0]:i * d[0] + (outs[0] - 1) * s[0] + 1:s[0],
                   j * d[1]:j * d[1] + (outs[1] - 1) * s[1] + 1:s[1],
                   k * d[2]:k * d[2] + (outs[2] - 1) * s[2] + 1:s[2]]
        for g in range(groups):
            out[..., g * cout_g:(g + 1) * cout_g] += (
                patch[..., g * cin_g:(g + 1) * cin_g] @ W[i, j, k, :, g * cout_g:(g + 1) * cout_g])
    return out


def conv3d_backward(grad_out, Z, W, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    """Gradients of :func:`conv3d_naive`, tap by tap: the gradient of the padded volume,
    then every padded coordinate's share added onto the voxel np.pad copied it from.

    Parameters
    ----------
    grad_out : ndarray, (N, OD, OH, OW, C_out)
    Z : ndarray, (N, D, H, W, C_in)
    W : ndarray, (kd, kh, kw, C_in/groups, C_out)
    stride, padding, dilation, groups, padding_mode
        The forward call's arguments.

    Returns
    -------
    grad_Z, grad_W, grad_bias : ndarray
        Shaped like `Z`, like `W`, and (C_out,).

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> Z, W = np.ones((1, 3, 3, 3, 1)), np.ones((2, 2, 2, 1, 1))
    >>> gZ, gW, gb = fastconv.reference.conv3d_backward(np.ones((1, 2, 2, 2, 1)), Z, W)
    >>> float(gZ[0, 1, 1, 1, 0]), float(gW[0, 0, 0, 0, 0]), gb
    (8.0, 8.0, array([8.]))
    """
    s, d = triple(stride), triple(dilation)
    kernel = W.shape[:3]
    pads = pad_triples(padding, Z.shape[1:4], kernel, s, d)
    Zp = pad_ndhwc(Z, pads, padding_mode)
    cin_g, C_out = W.shape[3:]
    cout_g = C_out // groups
    outs = grad_out.shape[1:4]
    dtype = np.result_type(grad_out, Z, W)
    grad_Zp = np.zeros(Zp.shape, dtype=dtype)
    grad_W = np.zeros(W.shape, dtype=dtype)
    for i, j, k in np.ndindex(*kernel):
        window = (slice(None), slice(i * d[0], i * d[0] + (outs[0] - 1) * s[0] + 1, s[0]),
                  slice(j * d[1], j * d[1] + (outs[1] - 1) * s[1] + 1, s[1]),
                  slice(k * d[2], k * d[2] + (outs[2] - 1) * s[2] + 1, s[2]))
        for g in range(groups):
            go = grad_out[..., g * cout_g:(g + 1) * cout_g]
            cin = slice(g * cin_g, (g + 1) * cin_g)
            grad_Zp[window + (cin,)] += go @ W[i, j, k, :, g * cout_g:(g + 1) * cout_g].T
            grad_W[i, j, k, :, g * cout_g:(g + 1) * cout_g] += np.einsum(
                "ndhwc,ndhwo->co", Zp[window + (cin,)], go)
    grad_Z = np.zeros(Z.shape, dtype=dtype)
    index = [_source_indices(n, p, padding_mode) for n, p in zip(Z.shape[1:4], pads)]
    for pd, ph, pw in np.ndindex(*Zp.shape[1:4]):
        source = index[0][pd], index[1][ph], index[2][pw]
        if min(source) >= 0:
            grad_Z[:, source[0], source[1], source[2]] += grad_Zp[:, pd, ph, pw]
    return grad_Z, grad_W, grad_out.sum(axis=(0, 1, 2, 3))


def conv_transpose3d(Z, W, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 3-D convolution, tap by tap: each input voxel times the weight is added
    at ``position·stride + tap·dilation`` of the full output, which is then cropped by
    `padding`.

    Parameters
    ----------
    Z : ndarray, (N, D, H, W, C_in)
    W : ndarray, (kd, kh, kw, C_out/groups, C_in)
    stride, dilation, output_padding : int or (d, h, w)
    padding : int or three ints or (before, after) pairs
    groups : int

    Returns
    -------
    ndarray, (N, OD, OH, OW, C_out)

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> fastconv.reference.conv_transpose3d(np.ones((1, 2, 2, 2, 1)),
    ...                                     np.ones((2, 2, 2, 1, 1)), stride=2).shape
    (1, 4, 4, 4, 1)
    """
    s, d, op = triple(stride), triple(dilation), triple(output_padding)
    kernel = W.shape[:3]
    pads = pad_triples(padding, None, kernel, s, d)
    cout_g, C_in = W.shape[3:]
    cin_g = C_in // groups
    sizes = Z.shape[1:4]
    full = [(n - 1) * st + di * (k - 1) + o + 1
            for n, st, di, k, o in zip(sizes, s, d, kernel, op)]
    out = np.zeros((Z.shape[0], *full, cout_g * groups), dtype=np.result_type(Z, W))
    for i, j, k in np.ndindex(*kernel):
        window = (slice(None), slice(i * d[0], i * d[0] + (sizes[0] - 1) * s[0] + 1, s[0]),
                  slice(j * d[1], j * d[1] + (sizes[1] - 1) * s[1] + 1, s[1]),
                  slice(k * d[2], k * d[2] + (sizes[2] - 1) * s[2] + 1, s[2]))
        for g in range(groups):
            out[window + (slice(g * cout_g, (g + 1) * cout_g),)] += (
                Z[..., g * cin_g:(g + 1) * cin_g] @ W[i, j, k, :, g * cin_g:(g + 1) * cin_g].T)
    (b0, a0), (b1, a1), (b2, a2) = pads
    return out[:, b0:full[0] - a0, b1:full[1] - a1, b2:full[2] - a2]


def im2col3d(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCDHW",
             padding_mode="zeros"):
    """:func:`fastconv.im2col` of volumes (a 3-tuple kernel_size), tap by tap.

    Parameters
    ----------
    x : ndarray, (N, C, D, H, W) for NCDHW or (N, D, H, W, C) for NDHWC
    kernel_size, stride, dilation : int or (d, h, w)
    padding : int or three ints or (before, after) pairs
    layout : {"NCDHW", "NDHWC"}
    padding_mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    ndarray
        NCDHW: (N, C·kd·kh·kw, OD·OH·OW), row ((c·kd + i)·kh + j)·kw + k;
        NDHWC: (N, OD·OH·OW, kd·kh·kw·C), column ((i·kh + j)·kw + k)·C + c.

    Raises
    ------
    IndexError, ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> fastconv.reference.im2col3d(np.arange(8.0).reshape(1, 1, 2, 2, 2), (2, 2, 2)).ravel()
    array([0., 1., 2., 3., 4., 5., 6., 7.])
    """
    kernel, s, d = triple(kernel_size), triple(stride), triple(dilation)
    channels_first = layout.upper() == "NCDHW"
    Z = np.moveaxis(x, 1, -1) if channels_first else x
    pads = pad_triples(padding, Z.shape[1:4], kernel, s, d)
    Zp = pad_ndhwc(Z, pads, padding_mode)
    N, C = Z.shape[0], Z.shape[4]
    outs = [window_count(n, k, st, di) for n, k, st, di in zip(Zp.shape[1:4], kernel, s, d)]
    cols = np.zeros((N, *outs, *kernel, C), dtype=x.dtype)
    for i, j, k in np.ndindex(*kernel):
        cols[:, :, :, :, i, j, k] = Zp[:, i * d[0]:i * d[0] + (outs[0] - 1) * s[0] + 1:s[0],
                                       j * d[1]:j * d[1] + (outs[1] - 1) * s[1] + 1:s[1],
                                       k * d[2]:k * d[2] + (outs[2] - 1) * s[2] + 1:s[2]]
    positions, taps = int(np.prod(outs)), int(np.prod(kernel))
    if channels_first:
        return cols.transpose(0, 7, 4, 5, 6, 1, 2, 3).reshape(N, C * taps, positions)
    return cols.reshape(N, positions, taps * C)


def col2im3d(cols, output_size, kernel_size, stride=1, padding=0, dilation=1,
             layout="NCDHW", padding_mode="zeros"):
    """:func:`fastconv.col2im` into volumes: the adjoint of :func:`im2col3d`, every column
    entry added onto the voxel it was read from (through the padding mode).

    Parameters
    ----------
    cols : ndarray, NCDHW (N, C·kd·kh·kw, OD·OH·OW) or NDHWC (N, OD·OH·OW, kd·kh·kw·C)
    output_size : int or (D, H, W)
    kernel_size, stride, padding, dilation, layout, padding_mode
        As for :func:`im2col3d`.

    Returns
    -------
    ndarray, (N, C, D, H, W) for NCDHW or (N, D, H, W, C) for NDHWC

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> fastconv.reference.col2im3d(np.ones((1, 8, 8)), 3, 2)[0, 0, 1]
    array([[2., 4., 2.],
           [4., 8., 4.],
           [2., 4., 2.]])
    """
    sizes, kernel = triple(output_size), triple(kernel_size)
    s, d = triple(stride), triple(dilation)
    channels_first = layout.upper() == "NCDHW"
    pads = pad_triples(padding, sizes, kernel, s, d)
    padded = [n + b + a for n, (b, a) in zip(sizes, pads)]
    outs = [window_count(n, k, st, di) for n, k, st, di in zip(padded, kernel, s, d)]
    N, taps = cols.shape[0], int(np.prod(kernel))
    if channels_first:
        C = cols.shape[1] // taps
        per_tap = cols.reshape(N, C, *kernel, *outs).transpose(0, 5, 6, 7, 2, 3, 4, 1)
    else:
        C = cols.shape[2] // taps
        per_tap = cols.reshape(N, *outs, *kernel, C)
    grad_p = np.zeros((N, *padded, C), dtype=cols.dtype)
    for i, j, k in np.ndindex(*kernel):
        grad_p[:, i * d[0]:i * d[0] + (outs[0] - 1) * s[0] + 1:s[0],
               j * d[1]:j * d[1] + (outs[1] - 1) * s[1] + 1:s[1],
               k * d[2]:k * d[2] + (outs[2] - 1) * s[2] + 1:s[2]] += per_tap[:, :, :, :, i, j, k]
    image = np.zeros((N, *sizes, C), dtype=cols.dtype)
    index = [_source_indices(n, p, padding_mode) for n, p in zip(sizes, pads)]
    for pd, ph, pw in np.ndindex(*padded):
        source = index[0][pd], index[1][ph], index[2][pw]
        if min(source) >= 0:
            image[:, source[0], source[1], source[2]] += grad_p[:, pd, ph, pw]
    return np.moveaxis(image, -1, 1) if channels_first else image


# --------------------------------------------------------------------------- R-MAC

def rmac_step(H, W, overlap=0.4):
    """Caffe2 RMACRegionsOp's extra regions along the long side, one float32 scalar at a
    time: the step in 1..6 minimising ``|(m² − m·b)/m² − overlap|``, b = (max − m)/step
    (double, stored as float), first minimum kept; 0 for a square map.

    Parameters
    ----------
    H, W : int
        The feature map's height and width, ≥ 1.
    overlap : float
        The wanted overlap of neighbouring regions.

    Returns
    -------
    int
        0 for a square map, else the step in 1..6.

    Raises
    ------
    ZeroDivisionError
        For an empty map (H or W is 0).

    Examples
    --------
    >>> fastconv.reference.rmac_step(30, 30), fastconv.reference.rmac_step(30, 40)
    (0, 1)
    """
    if H == W:
        return 0
    m = min(H, W)
    step, best = 0, np.float32(np.finfo(np.float32).max)
    for idx in range(1, 7):
        b = np.float32((max(H, W) - m) / idx)
        val = np.abs((np.float32(m * m) - np.float32(m) * b) / np.float32(m * m)
                     - np.float32(overlap))
        if val < best:
            step, best = idx, val
    return step


def rmac_regions(H, W, scales=3, overlap=0.4):
    """Caffe2 RMACRegionsOp for one H×W image.

    Parameters
    ----------
    H, W : int
        The feature map's height and width.
    scales : int
        Levels l = 1..scales, square regions of side ⌊2·min(H, W)/(l + 1)⌋.
    overlap : float

    Returns
    -------
    list of (x1, y1, x2, y2)
        Inclusive pixel boxes, x outer, y inner, level by level.

    Raises
    ------
    ZeroDivisionError
        For an empty map (H or W is 0).

    Examples
    --------
    >>> fastconv.reference.rmac_regions(30, 40, scales=1)
    [(0, 0, 29, 29), (10, 0, 39, 29)]
    """
    m = min(H, W)
    step = rmac_step(H, W, overlap)
    Wd = step if W > H else 0
    Hd = step if H > W else 0
    regions = []
    for level in range(1, scales + 1):
        rs = 2 * m // (level + 1)
        if rs == 0:
            break
        bw = (np.float32((W - rs) / (level + Wd - 1)) if level + Wd - 1 > 0
              else np.float32(0))
        bh = (np.float32((H - rs) / (level + Hd - 1)) if level + Hd - 1 > 0
              else np.float32(0))
        for i in range(level + Wd):
            for j in range(level + Hd):
                x1 = min(int(bw * np.float32(i)), W - rs)
                y1 = min(int(bh * np.float32(j)), H - rs)
                regions.append((x1, y1, x1 + rs - 1, y1 + rs - 1))
    return regions


def rmac_cirtorch_regions(H, W, levels=3, overlap=0.4):
    """cirtorch's rmac regions of one H×W image (the global one not included).

    Starts are floor(wl2 + k·b) − wl2 in float32, as cirtorch computes them with torch
    float32 tensors.

    Parameters
    ----------
    H, W : int
        The feature map's height and width.
    levels : int
    overlap : float

    Returns
    -------
    list of (x1, y1, x2, y2)
        Inclusive pixel boxes, rows outer.

    Raises
    ------
    ZeroDivisionError
        For an empty map (H or W is 0).

    Examples
    --------
    >>> len(fastconv.reference.rmac_cirtorch_regions(30, 40, levels=3))
    20
    """
    m = min(H, W)
    step = rmac_step(H, W, overlap)
    Wd = step if W > H else 0
    Hd = step if H > W else 0
    regions = []
    def starts(size, count, wl, wl2):
        b = np.float32(0 if count == 1 else (size - wl) / (count - 1))
        return [int(np.floor(np.float32(wl2) + np.float32(k) * b)) - wl2 for k in range(count)]

    for level in range(1, levels + 1):
        wl = int(np.floor(2 * m / (level + 1)))
        if wl == 0:
            continue
        wl2 = int(np.floor(wl / 2 - 1))
        for y1 in starts(H, level + Hd, wl, wl2):
            for x1 in starts(W, level + Wd, wl, wl2):
                regions.append((x1, y1, x1 + wl - 1, y1 + wl - 1))
    return regions


def roi_max_pool(x, rois):
    """:func:`fastconv.roi_max_pool` for a batched NCHW `x`: one slice and max per box.

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    rois : array_like, (R, 5)
        Rows ``[batch_index, x1, y1, x2, y2]``, inclusive pixel boxes.

    Returns
    -------
    ndarray, (R, C)
        The per-channel maximum inside each box.

    Raises
    ------
    ValueError
        From NumPy for an empty box: nothing is validated here.

    Examples
    --------
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fastconv.reference.roi_max_pool(x, [[0, 0, 0, 1, 1], [0, 2, 2, 3, 3]])
    array([[ 5.],
           [15.]])
    """
    pooled = np.empty((len(rois), x.shape[1]), dtype=x.dtype)
    for r, (n, x1, y1, x2, y2) in enumerate(np.asarray(rois, dtype=np.int64)):
        pooled[r] = x[n, :, y1:y2 + 1, x1:x2 + 1].max(axis=(1, 2))
    return pooled


def rmac(x, levels=3, overlap=0.4, eps=1e-6, whiten=None, normalize=True, layout="NCHW"):
    """:func:`fastconv.rmac` for a batched `x` the straightforward way (cirtorch's
    algorithm): for the whole map and each region, slice the batch, max over H and W,
    L2-normalise, add up; then L2-normalise the sum.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) for NCHW or (N, H, W, C) for NHWC
    levels, overlap, eps, normalize, layout
        As for :func:`fastconv.rmac`.
    whiten : (mean, P), optional
        Whitens each region vector first: ``l2n((v - mean) @ P.T)``.

    Returns
    -------
    ndarray, (N, C), or (N, D) with a (D, C) whitening matrix `P`

    Raises
    ------
    ValueError
        From NumPy when the shapes do not fit: nothing is validated here.

    Examples
    --------
    >>> x = np.random.default_rng(0).random((2, 8, 6, 7))
    >>> v = fastconv.reference.rmac(x)
    >>> v.shape, np.allclose(v, fastconv.rmac(x))
    ((2, 8), True)
    """
    nhwc = layout.upper() == "NHWC"
    H, W = x.shape[1:3] if nhwc else x.shape[2:4]

    def l2n(v):
        return v / (np.sqrt((v * v).sum(axis=-1, keepdims=True)) + eps)

    boxes = [(0, 0, W - 1, H - 1)] + rmac_cirtorch_regions(H, W, levels, overlap)
    total = 0
    for x1, y1, x2, y2 in boxes:
        if nhwc:
            v = l2n(x[:, y1:y2 + 1, x1:x2 + 1, :].max(axis=(1, 2)))
        else:
            v = l2n(x[:, :, y1:y2 + 1, x1:x2 + 1].max(axis=(2, 3)))
        if whiten is not None:
            mean, P = whiten
            v = l2n((v - mean) @ P.T)
        total = total + v
    return l2n(total) if normalize else total
def space_to_batch(x, block_size, padding=0, layout="NCHW"):
    """:func:`fastconv.space_to_batch` for a 4-D batch: np.pad, then split H into (OH, bh)
    and W into (OW, bw) and move the block offsets (bh, bw) in front of the batch axis, so
    that y[(off_h·bw + off_w)·N + n, oh, ow, c] = x_padded[n, oh·bh + off_h, ow·bw + off_w, c].

    Parameters
    ----------
    x : ndarray, (N, C, H, W) for NCHW or (N, H, W, C) for NHWC
    block_size, padding, layout
        As for :func:`fastconv.space_to_batch`.

    Returns
    -------
    ndarray, (bh·bw·N, C, Hp/bh, Wp/bw) for NCHW (NHWC likewise)

    Raises
    ------
    ValueError
        From NumPy's reshape when the padded size is not divisible by the block.

    Examples
    --------
    >>> fastconv.reference.space_to_batch(np.zeros((2, 3, 4, 6)), 2).shape
    (8, 3, 2, 3)
    """
    bh, bw = pair(block_size)
    nhwc = layout.upper() == "NHWC"
    Z = x if nhwc else x.transpose(0, 2, 3, 1)
    Zp = pad_nhwc(Z, padding)
    N, Hp, Wp, C = Zp.shape
    blocks = Zp.reshape(N, Hp // bh, bh, Wp // bw, bw, C).transpose(2, 4, 0, 1, 3, 5)
    y = blocks.reshape(bh * bw * N, Hp // bh, Wp // bw, C)
    return np.ascontiguousarray(y if nhwc else y.transpose(0, 3, 1, 2))


def batch_to_space(y, block_size, crops=0, layout="NCHW"):
    """:func:`fastconv.batch_to_space`: undo :func:`space_to_batch`'s reshape/transpose,
    then slice the crops off the interleaved image.

    Parameters
    ----------
    y : ndarray, (bh·bw·N, C, OH, OW) for NCHW or (bh·bw·N, OH, OW, C) for NHWC
    block_size, crops, layout
        As for :func:`fastconv.batch_to_space`.

    Returns
    -------
    ndarray, (N, C, OH·bh − top − bottom, OW·bw − left − right) for NCHW (NHWC likewise)

    Raises
    ------
    ValueError
        From NumPy's reshape when the batch is not divisible by bh·bw.

    Examples
    --------
    >>> x = np.arange(16).reshape(1, 1, 4, 4)
    >>> y = fastconv.reference.space_to_batch(x, 2)
    >>> np.array_equal(fastconv.reference.batch_to_space(y, 2), x)
    True
    """
    bh, bw = pair(block_size)
    (top, bottom), (left, right) = padding_pairs(crops)
    nhwc = layout.upper() == "NHWC"
    Y = y if nhwc else y.transpose(0, 2, 3, 1)
    M, OH, OW, C = Y.shape
    N = M // (bh * bw)
    Zp = Y.reshape(bh, bw, N, OH, OW, C).transpose(2, 3, 0, 4, 1, 5).reshape(N, OH * bh,
                                                                             OW * bw, C)
    Z = Zp[:, top:OH * bh - bottom, left:OW * bw - right, :]
    return np.ascontiguousarray(Z if nhwc else Z.transpose(0, 3, 1, 2))
