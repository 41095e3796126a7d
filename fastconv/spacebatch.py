"""Space-to-batch, batch-to-space and atrous convolution (docs/spec.md §3).

Caffe2's SpaceToBatchOp / BatchToSpaceOp, whose mapping is TensorFlow's
``space_to_batch_nd`` / ``batch_to_space_nd`` with ``block_shape = (bh, bw)``. With the
image zero-padded by ``((top, bottom), (left, right))`` to Hp × Wp (both divisible by the
block), each image is cut into its bh·bw block offsets and the offsets are stacked
outermost on the batch axis:

========  ====================  ===================================================
layout    image (padded)        blocks
========  ====================  ===================================================
NCHW      (N, C, Hp, Wp)        (bh·bw·N, C, Hp/bh, Wp/bw)
NHWC      (N, Hp, Wp, C)        (bh·bw·N, Hp/bh, Wp/bw, C)
========  ====================  ===================================================

``blocks[(off_h·bw + off_w)·N + n, c, oh, ow] = x_padded[n, c, oh·bh + off_h, ow·bw + off_w]``.

Gradients. Every image element appears exactly once among the blocks and every other
block element is a padding zero, so ``space_to_batch`` is a selection matrix S and its
transpose Sᵀ sends each block element back to its pixel and drops the padding: that is
``batch_to_space`` with ``crops`` equal to the padding. Hence
``batch_to_space(·, b, crops=p)`` is the exact adjoint of ``space_to_batch(·, b,
padding=p)``, ⟨space_to_batch(x), y⟩ = ⟨x, batch_to_space(y)⟩, each is the other's
gradient (:func:`space_to_batch_backward`, :func:`batch_to_space_backward`), and
``batch_to_space(space_to_batch(x, b, p), b, p)`` gives back `x` exactly.
"""
from __future__ import annotations

import numpy as np

from fastconv import _memory, _tuning, _validate
from fastconv import geometry as geo
from fastconv._kernels import _spacebatch
from fastconv.conv import conv2d

__all__ = ["space_to_batch", "batch_to_space", "space_to_batch_backward",
           "batch_to_space_backward", "atrous_conv2d"]


# ------------------------------------------------------------------ geometry

def _image_shape(batch, channels, height, width, layout):
    if layout == "NCHW":
        return (batch, channels, height, width)
    return (batch, height, width, channels)


def _blocks_geometry(image_dims, block, padding, fn):
    """The kernels' BlockGeometry for an image batch (N, C, H, W) padded by `padding`;
    the padded size must be divisible by the block."""
    n, c, h, w = image_dims
    (top, bottom), (left, right) = padding
    for axis, size, before, after, step, name in (("height", h, top, bottom, block[0], "bh"),
                                                  ("width", w, left, right, block[1], "bw")):
        padded = size + before + after
        if padded % step:
            raise ValueError(
                f"{fn}: padded {axis} {size} + {before} + {after} = {padded} is not divisible "
                f"by the block {name} = {step} (block_size={block}, padding={padding}); "
                f"pad the {axis} to a multiple of {step}")
    return {"batch": n, "channels": c, "height": h, "width": w,
            "block_h": block[0], "block_w": block[1], "pad_top": top, "pad_left": left,
            "out_h": (h + top + bottom) // block[0], "out_w": (w + left + right) // block[1]}


def _image_geometry(blocks_shape4, block, crops, layout, fn, name):
    """The kernels' BlockGeometry for blocks of shape `blocks_shape4` cropped by `crops`:
    the batch must be divisible by bh·bw and the crops must fit the expanded image."""
    total, c, out_h, out_w = _validate.image_dims(blocks_shape4, layout)
    bh, bw = block
    if total % (bh * bw):
        raise ValueError(
            f"{fn}: {name} batch {total} (shape {blocks_shape4}) is not divisible by "
            f"bh·bw = {bh * bw} for block_size={block}")
    (top, bottom), (left, right) = crops
    for axis, before, after, size, step in (("height", top, bottom, out_h, bh),
                                            ("width", left, right, out_w, bw)):
        if before + after > size * step:
            raise ValueError(
                f"{fn}: crops {before} + {after} = {before + after} in {axis} exceed the "
                f"{axis} {size}·{step} = {size * step} of the expanded image "
                f"({name} shape {blocks_shape4}, block_size={block}, crops={crops})")
    return {"batch": total // (bh * bw), "channels": c,
            "height": out_h * bh - top - bottom, "width": out_w * bw - left - right,
            "block_h": bh, "block_w": bw, "pad_top": top, "pad_left": left,
            "out_h": out_h, "out_w": out_w}


def _blocks_shape(g, layout):
    return _image_shape(g["block_h"] * g["block_w"] * g["batch"], g["channels"], g["out_h"],
                        g["out_w"], layout)


def _image_shape_of(g, layout):
    return _image_shape(g["batch"], g["channels"], g["height"], g["width"], layout)


def _require_4d(x, name, fn, layout, what):
    """4-D only: batch_to_space has no unbatched form (its input is a batch of blocks)."""
    if x.ndim != 4:
        axes = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
        raise ValueError(f"{fn}: expected {name} of shape {axes} for layout {layout!r} "
                         f"({what}), got shape {x.shape} ({x.ndim}-D)")


# ------------------------------------------------------------------ runs

def _space_to_batch_into(x4, g, layout, blocks):
    """Fill `blocks` (C-contiguous, 4-D) from the 4-D image batch `x4`."""
    if blocks.size == 0:
        return
    if x4.size == 0:  # H or W is 0: every block element is padding
        blocks.fill(0)
        return
    kernel = (_spacebatch.space_to_batch_nchw if layout == "NCHW"
              else _spacebatch.space_to_batch_nhwc)
    kernel(_memory.kernel_view(np.ascontiguousarray(x4)), _memory.kernel_view(blocks), g,
           _tuning.threads_for_elements(blocks.size))


def _batch_to_space_into(y4, g, layout, image):
    """Fill `image` (C-contiguous, 4-D) from the 4-D blocks `y4`."""
    if image.size == 0:  # nothing survives the crops (or nothing was there)
        return
    kernel = (_spacebatch.batch_to_space_nchw if layout == "NCHW"
              else _spacebatch.batch_to_space_nhwc)
    kernel(_memory.kernel_view(np.ascontiguousarray(y4)), _memory.kernel_view(image), g,
           _tuning.threads_for_elements(image.size))


def _checked_space_to_batch(x, block_size, padding, layout, out, fn, name):
    """space_to_batch, validating and reporting errors as function `fn`, argument `name`.
    A 3-D `x` (one image) gives a 4-D result all the same: its bh·bw blocks."""
    layout = _validate.normalize_layout(layout, fn)
    x = _validate.as_array(x, name, fn)
    _validate.check_movable_dtype(x, name, fn)
    x4, _ = _validate.split_batch(x, name, fn, layout)
    block = _validate.normalize_pair(block_size, "block_size", fn)
    padding = _validate.normalize_padding(padding, fn)
    g = _blocks_geometry(_validate.image_dims(x4.shape, layout), block, padding, fn)
    shape = _blocks_shape(g, layout)
    out = _validate.check_out(out, shape, x.dtype, [x], fn)
    blocks = _memory.result(out, shape, x.dtype)
    _space_to_batch_into(x4, g, layout, blocks)
    return blocks


def _checked_batch_to_space(y, block_size, crops, layout, out, fn, name, single=False):
    """batch_to_space, validating and reporting errors as function `fn`, argument `name`.
    `single`: the result is one image (3-D), which needs exactly bh·bw blocks."""
    layout = _validate.normalize_layout(layout, fn)
    y = _validate.as_array(y, name, fn)
    _validate.check_movable_dtype(y, name, fn)
    _require_4d(y, name, fn, layout, "a batch of N·bh·bw blocks")
    block = _validate.normalize_pair(block_size, "block_size", fn)
    crops = _validate.normalize_padding(crops, fn, name="crops")
    g = _image_geometry(y.shape, block, crops, layout, fn, name)
    shape = _image_shape_of(g, layout)
    out = _validate.check_out(out, shape[1:] if single else shape, y.dtype, [y], fn)
    image = _memory.result(out, shape, y.dtype)
    _batch_to_space_into(y, g, layout, image)
    if out is not None:
        return out
    return image[0] if single else image


# ------------------------------------------------------------------ public API

def space_to_batch(x, block_size, padding=0, *, layout="NCHW", out=None):
    """Zero-pad, then move each bh×bw block offset of every image to its own batch entry
    (Caffe2 SpaceToBatch, ``tf.space_to_batch_nd``).

    ``y[(off_h·bw + off_w)·N + n, c, oh, ow] = x_padded[n, c, oh·bh + off_h, ow·bw + off_w]``
    (NCHW indices; NHWC has C last).

    Parameters
    ----------
    x : ndarray, (N, C, H, W) / (C, H, W) for NCHW, (N, H, W, C) / (H, W, C) for NHWC
        float32, float64, any integer or bool dtype (it is pure data movement).
    block_size : int or (bh, bw), >= 1
    padding : int, (pad_h, pad_w) or ((top, bottom), (left, right)), >= 0
        Zeros added before the cut; H + top + bottom must be divisible by bh and
        W + left + right by bw, else ``ValueError``. Caffe2's ``pad`` is an int here,
        its ``pad_t, pad_l, pad_b, pad_r`` are ``((pad_t, pad_b), (pad_l, pad_r))``.
    layout : {"NCHW", "NHWC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping `x`.

    Returns
    -------
    y : ndarray, same dtype as `x`
        NCHW: (bh·bw·N, C, Hp/bh, Wp/bw); NHWC: (bh·bw·N, Hp/bh, Wp/bw, C), where
        Hp = H + top + bottom, Wp = W + left + right. A 3-D `x` (one image) gives the
        4-D result with N = 1: its batch axis holds the bh·bw blocks.

    Raises
    ------
    TypeError
        For a dtype other than float, integer or bool.
    ValueError
        Before any work, naming the argument: a padded size not divisible by the block,
        a bad block size, padding, layout, shape or `out`.

    See Also
    --------
    batch_to_space : the inverse, and with ``crops=padding`` the adjoint (gradient).
    fastconv.reference.space_to_batch : the NumPy oracle (np.pad + reshape).

    Examples
    --------
    Block offsets outermost (y has shape (4, 1, 2, 2)):

    >>> x = np.arange(16).reshape(1, 1, 4, 4)
    >>> fastconv.space_to_batch(x, 2)[:, 0]
    array([[[ 0,  2],
            [ 8, 10]],
    <BLANKLINE>
           [[ 1,  3],
            [ 9, 11]],
    <BLANKLINE>
           [[ 4,  6],
            [12, 14]],
    <BLANKLINE>
           [[ 5,  7],
            [13, 15]]])
    """
    return _checked_space_to_batch(x, block_size, padding, layout, out, "space_to_batch", "x")


def batch_to_space(x, block_size, crops=0, *, layout="NCHW", out=None):
    """Interleave bh·bw block batches back into images, then crop
    (Caffe2 BatchToSpace, ``tf.batch_to_space_nd``).

    The exact inverse of :func:`space_to_batch` followed by cropping:
    ``out[n, c, h, w] = x[(off_h·bw + off_w)·N + n, c, (h + top)//bh, (w + left)//bw]``
    with ``off_h = (h + top) % bh``, ``off_w = (w + left) % bw`` (NCHW indices).
    ``batch_to_space(·, b, crops=p)`` is the exact adjoint (gradient) of
    ``space_to_batch(·, b, padding=p)``.

    Parameters
    ----------
    x : ndarray, (M, C, OH, OW) for NCHW, (M, OH, OW, C) for NHWC
        The blocks; M must be divisible by bh·bw (N = M / (bh·bw) images). Must be 4-D:
        a 3-D array is a ``ValueError`` (there is no unbatched form of a batch of blocks).
        float32, float64, any integer or bool dtype.
    block_size : int or (bh, bw), >= 1
    crops : int, (crop_h, crop_w) or ((top, bottom), (left, right)), >= 0
        Removed from the expanded image (OH·bh × OW·bw); top + bottom must not exceed
        OH·bh, nor left + right OW·bw (equal gives an empty image).
    layout : {"NCHW", "NHWC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping `x`.

    Returns
    -------
    image : ndarray, same dtype as `x`
        NCHW: (N, C, OH·bh − top − bottom, OW·bw − left − right); NHWC: (N, H, W, C).

    Raises
    ------
    TypeError
        For a dtype other than float, integer or bool.
    ValueError
        Before any work, naming the argument: a batch not divisible by bh·bw, a 3-D `x`,
        crops larger than the expanded image, a bad block size, layout or `out`.

    See Also
    --------
    space_to_batch : the inverse.

    Examples
    --------
    >>> y = fastconv.space_to_batch(np.arange(16).reshape(1, 1, 4, 4), 2)
    >>> y.shape, fastconv.batch_to_space(y, 2).shape
    ((4, 1, 2, 2), (1, 1, 4, 4))
    >>> fastconv.batch_to_space(y, 2, crops=1)
    array([[[[ 5,  6],
             [ 9, 10]]]])
    """
    return _checked_batch_to_space(x, block_size, crops, layout, out, "batch_to_space", "x")


def space_to_batch_backward(grad_output, input_shape, block_size, padding=0, *,
                            layout="NCHW", out=None):
    """Gradient of :func:`space_to_batch` with respect to its input:
    ``batch_to_space(grad_output, block_size, crops=padding)``, shaped as the input.

    Parameters
    ----------
    grad_output : ndarray
        Gradient of space_to_batch's result: exactly its shape, (bh·bw·N, C, OH, OW) for
        NCHW or (bh·bw·N, OH, OW, C) for NHWC.
    input_shape : tuple of int
        Shape of space_to_batch's input, 4-D or 3-D (one image); the gradient has it.
    block_size, padding, layout
        As given to :func:`space_to_batch`.
    out : ndarray, optional
        C-contiguous buffer of shape `input_shape`.

    Returns
    -------
    grad_input : ndarray of shape `input_shape`, dtype of `grad_output`

    Raises
    ------
    TypeError
        For a dtype other than float, integer or bool.
    ValueError
        For a `grad_output` not of space_to_batch's result shape, or a bad argument.

    Examples
    --------
    >>> g = fastconv.space_to_batch_backward(np.ones((4, 3, 3, 3)), (1, 3, 5, 5), 2,
    ...                                      padding=((1, 0), (0, 1)))
    >>> g.shape
    (1, 3, 5, 5)
    """
    fn = "space_to_batch_backward"
    layout = _validate.normalize_layout(layout, fn)
    shape = _validate.normalize_shape(input_shape, "input_shape", fn)
    shape4 = shape if len(shape) == 4 else (1,) + shape
    block = _validate.normalize_pair(block_size, "block_size", fn)
    padding = _validate.normalize_padding(padding, fn)
    expected = _blocks_shape(_blocks_geometry(_validate.image_dims(shape4, layout), block, padding,
                                              fn), layout)
    grad_output = _validate.as_array(grad_output, "grad_output", fn)
    if grad_output.shape != expected:
        raise ValueError(f"{fn}: grad_output must have shape {expected} (space_to_batch's "
                         f"output for input_shape {shape}), got {grad_output.shape}")
    return _checked_batch_to_space(grad_output, block, padding, layout, out, fn, "grad_output",
                                   single=len(shape) == 3)


def batch_to_space_backward(grad_output, block_size, crops=0, *, layout="NCHW", out=None):
    """Gradient of :func:`batch_to_space` with respect to its input:
    ``space_to_batch(grad_output, block_size, padding=crops)``.

    Parameters
    ----------
    grad_output : ndarray, (N, C, H, W) for NCHW, (N, H, W, C) for NHWC
        Gradient of batch_to_space's result (4-D, as batch_to_space always returns).
    block_size, crops, layout
        As given to :func:`batch_to_space`.
    out : ndarray, optional
        C-contiguous buffer of batch_to_space's input shape.

    Returns
    -------
    grad_input : ndarray, (bh·bw·N, C, OH, OW) for NCHW, (bh·bw·N, OH, OW, C) for NHWC

    Raises
    ------
    TypeError
        For a dtype other than float, integer or bool.
    ValueError
        For a bad shape, block size, crops, layout or `out`, naming it.

    Examples
    --------
    >>> fastconv.batch_to_space_backward(np.ones((2, 6, 6, 3)), 2, layout="NHWC").shape
    (8, 3, 3, 3)
    """
    fn = "batch_to_space_backward"
    layout = _validate.normalize_layout(layout, fn)
    grad_output = _validate.as_array(grad_output, "grad_output", fn)
    _require_4d(grad_output, "grad_output", fn, layout, "batch_to_space's output is 4-D")
    crops = _validate.normalize_padding(crops, fn, name="crops")
    return _checked_space_to_batch(grad_output, block_size, crops, layout, out, fn,
                                   "grad_output")


def atrous_conv2d(x, weight, rate, bias=None, padding="valid", *, layout="NCHW", out=None):
    """Dilated convolution computed as space_to_batch → dense conv2d → batch_to_space
    (TensorFlow's ``tf.nn.atrous_conv2d``); equal to ``conv2d(x, weight, bias,
    padding=padding, dilation=rate)`` up to float rounding.

    A convolution dilated by r reads, for output pixels of one phase (oh % r, ow % r),
    only input pixels of that phase: space_to_batch with block r splits the image into its
    r² phases, each phase is convolved densely (no holes), and batch_to_space interleaves
    the results. The image is first padded as the convolution's `padding` says, plus up to
    r − 1 pixels at the bottom/right so the block divides it; those are cropped again.

    Parameters
    ----------
    x : ndarray
        NCHW: (N, C_in, H, W) or (C_in, H, W). NHWC: (N, H, W, C_in) or (H, W, C_in).
        float32 or float64.
    weight : ndarray
        NCHW: OIHW (C_out, C_in, kh, kw). NHWC: HWIO (kh, kw, C_in, C_out). Same dtype.
    rate : int or (rate_h, rate_w), >= 1
        The dilation. Rate 1 is a plain :func:`~fastconv.conv2d`.
    bias : ndarray (C_out,), optional
    padding : "valid", "same", int, (pad_h, pad_w) or ((top, bottom), (left, right))
        As for conv2d with ``dilation=rate``: "same" pads rate·(k − 1) in all, the odd
        pixel bottom/right (as TensorFlow's "SAME").
    layout : {"NCHW", "NHWC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.

    Returns
    -------
    ndarray
        NCHW: (N, C_out, OH, OW); NHWC: (N, OH, OW, C_out); no N for a 3-D `x`, with
        ``OH = H + top + bottom − rate_h·(kh − 1)`` (likewise OW).

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or mixed dtypes.
    ValueError
        For any argument conv2d with ``dilation=rate`` would refuse, naming it.

    Notes
    -----
    ``conv2d(dilation=rate)`` does the same multiply-adds and measured faster in every case
    (docs/performance.md#atrous_conv2d): this route adds two copies of the activations and
    runs its GEMMs on the r² small phase images. A rate so large that rounding the padded
    image up to a multiple of it would more than double it (e.g. a rate beyond the image)
    is computed as ``conv2d(dilation=rate)`` directly: the phase images would be mostly
    padding. Use this function for parity with TensorFlow's ``atrous_conv2d``; for speed,
    call ``conv2d(x, weight, bias, padding=padding, dilation=rate)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((1, 4, 9, 9), np.float32); w = rng.random((5, 4, 3, 3), np.float32)
    >>> y = fastconv.atrous_conv2d(x, w, rate=2, padding="same")
    >>> y.shape, np.allclose(y, fastconv.conv2d(x, w, padding="same", dilation=2), atol=1e-5)
    ((1, 5, 9, 9), True)
    """
    fn = "atrous_conv2d"
    layout = _validate.normalize_layout(layout, fn)
    x, weight, bias = _validate.check_conv_arrays(fn, x, weight, bias)
    rate = _validate.normalize_pair(rate, "rate", fn)
    if max(rate) > _validate.MAX_WINDOW_VALUE:
        raise ValueError(f"{fn}: rate={rate} exceeds the largest supported value "
                         f"2**62 = {_validate.MAX_WINDOW_VALUE}")
    x4, batched = _validate.split_batch(x, "input", fn, layout)
    geom = geo.conv2d_geometry(fn, x4, weight, 1, padding, rate, 1, layout, x.shape)
    _validate.check_bias(fn, bias, geom.out_channels)
    _validate.check_blas_range(fn, geom)
    shape4 = geom.output_shape
    out = _validate.check_out(out, shape4 if batched else shape4[1:], x.dtype, [x, weight, bias],
                              fn)
    (top, bottom), (left, right) = geom.padding
    # Extra rows/columns at the bottom/right so the block divides the padded image.
    extra_h = -(geom.height + top + bottom) % rate[0]
    extra_w = -(geom.width + left + right) % rate[1]
    padded = (geom.height + top + bottom) * (geom.width + left + right)
    rounded = (geom.height + top + bottom + extra_h) * (geom.width + left + right + extra_w)
    if rate == (1, 1) or rounded > 2 * padded:
        # Rate 1 is a plain convolution; a rate about as large as the image would build
        # phase images mostly of rounding padding (rate² of them): the dilated conv2d
        # gives the same result without them.
        return conv2d(x, weight, bias, padding=geom.padding, dilation=rate, layout=layout,
                      out=out)
    phases = space_to_batch(x4, rate, ((top, bottom + extra_h), (left, right + extra_w)),
                            layout=layout)
    dense = conv2d(phases, weight, bias, layout=layout)
    out4 = None if out is None else out.reshape(shape4)
    result = batch_to_space(dense, rate, ((0, extra_h), (0, extra_w)), layout=layout, out=out4)
    if out is not None:
        return out
    return result if batched else result[0]
