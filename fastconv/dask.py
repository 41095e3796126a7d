"""fastconv on Dask arrays: the operators over images spread across chunks, threads and
machines (``pip install fastconv[dask]``, then ``import fastconv.dask``).

Each function takes a 4-D ``dask.array.Array`` and returns a lazy one whose blocks are the
NumPy operator applied to the input's blocks, with the result's ``chunks`` and ``meta``
given, so nothing runs before ``.compute()``:

==================  ========================  ==========================================
function            chunks allowed            how
==================  ========================  ==========================================
conv2d,             batch; H and W along      ``map_blocks``; ``map_overlap`` with the
layer_forward       axes of stride 1          halo the window needs when H or W is split
im2col              batch; C for NCHW         ``blockwise`` (H, W dropped without a copy)
space_to_batch      batch, C                  ``map_blocks``, then the per-chunk outputs
                                              regrouped by block offset
rmac                batch                     ``blockwise`` (H, W dropped without a copy)
rmac_regions        any (only the shape is    ``map_blocks`` over the batch chunks, not
                    used)                     reading the input
==================  ========================  ==========================================

Any other split is a ValueError that says which axis to rechunk. Weights (and rmac's
whitening) enter the graph once, as one ``dask.delayed`` key that every task references:
not a copy per chunk. On a ``distributed`` cluster the scheduler ships that key to each
worker once.

``import fastconv`` never imports this module or dask.
"""
# The module is fastconv.dask; ``import dask`` below is the dask package (imports are
# absolute), not this file.
from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np

import fastconv
from fastconv import _memory, _padding_mode, _validate
from fastconv import geometry as geo

__all__ = ["conv2d", "layer_forward", "im2col", "space_to_batch", "rmac", "rmac_regions"]


# --------------------------------------------------------------------------- helpers

def _axes(layout):
    """(channel axis, height axis, width axis) of a 4-D array in `layout`."""
    return (1, 2, 3) if layout == "NCHW" else (3, 1, 2)


def _check_dask_input(x, name, fn, numpy_fn):
    """x is a 4-D dask array with known chunk sizes."""
    if not isinstance(x, da.Array):
        raise TypeError(f"{fn}: {name} must be a dask.array.Array, got {type(x).__name__}; "
                        f"use fastconv.{numpy_fn} for in-memory arrays")
    if x.ndim != 4:
        raise ValueError(f"{fn}: expected a batched 4-D {name}, got shape {x.shape} "
                         f"({x.ndim}-D); add the batch axis with {name}[None]")
    if any(math.isnan(size) for size in x.shape) or any(
            math.isnan(size) for sizes in x.chunks for size in sizes):
        raise ValueError(f"{fn}: {name} has unknown chunk sizes {x.chunks}; call "
                         f"{name}.compute_chunk_sizes() first")


_AXIS_NAMES = {"NCHW": ("N", "C", "H", "W"), "NHWC": ("N", "H", "W", "C")}


def _require_one_chunk(x, axes, layout, name, fn, why):
    """ValueError naming the first of `axes` along which x has more than one chunk."""
    for axis in axes:
        if len(x.chunks[axis]) > 1:
            label = _AXIS_NAMES[layout][axis]
            raise ValueError(f"{fn}: {name} must be one chunk along {label} (axis {axis}) "
                             f"because {why}; got chunks {x.chunks[axis]}; rechunk with "
                             f"{name}.rechunk({{{axis}: -1}})")


def _broadcast(array):
    """One graph key holding `array` (None stays None): every task reads that key instead of
    carrying its own copy."""
    if array is None:
        return None
    return dask.delayed(array, pure=True)


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype=dtype)


def _only_block(blocks):
    """The one block inside blockwise's nested lists (one list level per axis the result
    drops, each of one chunk)."""
    while isinstance(blocks, list):
        (blocks,) = blocks
    return blocks


def _merge_small_chunks(chunks, minimum):
    """Chunks along one axis, merged with their neighbours until each has >= `minimum`
    elements (one chunk if the axis is shorter)."""
    if sum(chunks) < minimum:
        return (sum(chunks),)
    return da.overlap.ensure_minimum_chunksize(minimum, chunks)


# --------------------------------------------------------------------------- conv2d

def _halo(pad_before, extent):
    """Rows (before, after) a block borrows from its neighbours for a stride-1 window that
    spans `extent` + 1 rows, the axis being padded by `pad_before` at the start.

    Any split of `extent` gives the right rows (a block's output starts at its first row
    + pad_before − before); taking `before` up to pad_before keeps the first output chunk
    at least as long as its input chunk and leaves the last one as long as possible."""
    before = min(pad_before, extent)
    return before, extent - before


def _conv_output_chunks(chunks, pads, halo):
    """Output chunks along a split stride-1 axis: an interior block makes as many rows as it
    has; the first gains pad_before − halo_before, the last pad_after − halo_after."""
    (pad_before, pad_after), (before, after) = pads, halo
    sizes = list(chunks)
    sizes[0] += pad_before - before
    sizes[-1] += pad_after - after
    return tuple(sizes)


def _conv2d_block(block, weight, bias, *, stride, padding, dilation, groups, layout,
                  padding_mode="zeros", block_info=None):
    """conv2d of one block (with its halo), padded only on the sides where the block
    touches the edge of the whole image (a padding mode reads the block's own pixels
    there: _conv2d makes edge blocks long enough, and keeps a circular axis whole)."""
    _, h_axis, w_axis = _axes(layout)
    location = block_info[0]["chunk-location"]
    counts = block_info[0]["num-chunks"]
    block_padding = []
    for axis, (pad_before, pad_after) in zip((h_axis, w_axis), padding):
        first = location[axis] == 0
        last = location[axis] == counts[axis] - 1
        block_padding.append((pad_before if first else 0, pad_after if last else 0))
    return fastconv.conv2d(block, weight, bias, stride, tuple(block_padding), dilation, groups,
                           layout=layout, padding_mode=padding_mode)


def _conv2d(x, weight, bias, stride, padding, dilation, groups, layout, fn,
            padding_mode="zeros"):
    layout = _validate.normalize_layout(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    _check_dask_input(x, "input", fn, "conv2d")
    _validate.check_float_dtype(x, "input", fn)
    weight = _validate.as_array(weight, "weight", fn)
    _validate.check_float_dtype(weight, "weight", fn)
    if bias is not None:
        bias = _validate.as_array(bias, "bias", fn)
        _validate.check_float_dtype(bias, "bias", fn)
    _validate.check_same_dtype(fn, input=x, weight=weight, bias=bias)
    if weight.ndim != 4:
        raise ValueError(f"{fn}: expected a 4-D weight, got shape {weight.shape}")
    geom = geo.conv2d_geometry(fn, x, weight, stride, padding, dilation, groups, layout, x.shape,
                               padding_mode)
    mode = geom.window.padding_mode  # the effective one: "zeros" without padding
    _validate.check_bias(fn, bias, geom.out_channels)
    c_axis, h_axis, w_axis = _axes(layout)
    _require_one_chunk(x, [c_axis], layout, "input", fn,
                       "every output channel reads all input channels of its group")

    # A split spatial axis needs stride 1 there: each block then makes the output rows of
    # its own input rows, borrowing `extent` = dilation·(k − 1) rows of halo.
    depth = {}
    chunks = list(x.chunks)
    out_chunks = list(x.chunks)
    out_chunks[c_axis] = (geom.out_channels,)
    spatial = zip((h_axis, w_axis), ("H", "W"), geom.kernel_size, geom.stride, geom.dilation,
                  geom.padding, (geom.out_h, geom.out_w))
    for axis, label, kernel, step, rate, pads, out_size in spatial:
        if mode == "circular" and any(pads) and len(x.chunks[axis]) > 1:
            # The wrapped padding reads the far end of the axis: keep the axis whole.
            chunks[axis] = (sum(x.chunks[axis]),)
            out_chunks[axis] = (out_size,)
            continue
        if len(x.chunks[axis]) == 1:
            out_chunks[axis] = (out_size,)
            continue
        if step != 1:
            raise ValueError(
                f"{fn}: input is split along {label} (chunks {x.chunks[axis]}), which needs "
                f"stride 1 along {label}, got stride={geom.stride}; rechunk with "
                f"input.rechunk({{{axis}: -1}})")
        extent = rate * (kernel - 1)
        # Every block must hold its neighbours' halo and leave at least one output row.
        # (a padding mode reads up to max(pads) pixels of the edge block, beyond its own
        # edge pixel: "reflect" needs more than that many)
        chunks[axis] = _merge_small_chunks(
            x.chunks[axis], extent + 1 if mode == "zeros" else max(extent, *pads) + 1)
        if len(chunks[axis]) == 1:
            out_chunks[axis] = (out_size,)
            continue
        halo = _halo(pads[0], extent)
        depth[axis] = halo
        out_chunks[axis] = _conv_output_chunks(chunks[axis], pads, halo)
    x = x.rechunk(tuple(chunks))  # a no-op unless small chunks were merged
    kwargs = dict(weight=_broadcast(np.ascontiguousarray(weight)), bias=_broadcast(
        None if bias is None else np.ascontiguousarray(bias)), stride=geom.stride,
        padding=geom.padding, dilation=geom.dilation, groups=geom.groups, layout=layout,
        padding_mode=mode, chunks=tuple(out_chunks), dtype=x.dtype, meta=_meta(4, x.dtype))
    if not depth:
        return da.map_blocks(_conv2d_block, x, **kwargs)
    return da.map_overlap(_conv2d_block, x, depth=depth, boundary="none", trim=False,
                          allow_rechunk=False, **kwargs)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCHW",
           padding_mode="zeros"):
    """:func:`fastconv.conv2d` over a dask array, block by block.

    Parameters
    ----------
    x : dask.array.Array
        NCHW: (N, C_in, H, W); NHWC: (N, H, W, C_in); float32 or float64. Chunks along N
        freely; C_in must be one chunk. H and W may be split along an axis whose stride is
        1: each block then borrows a halo of ``dilation·(k − 1)`` rows (or columns) from
        its neighbours (``map_overlap``), and the zero padding is added only at the image
        edges. Chunks smaller than the halo + 1 are merged with a neighbour first.
    weight : ndarray
        NCHW: OIHW (C_out, C_in/groups, kh, kw); NHWC: HWIO (kh, kw, C_in/groups, C_out).
        Same dtype as `x`. Held once in the graph.
    bias : ndarray (C_out,), optional
    stride, padding, dilation, groups, layout
        As for :func:`fastconv.conv2d` ("valid" and "same" included).
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        As for :func:`fastconv.conv2d`. The edge blocks read the padding from their own
        pixels (chunks are merged until the edge ones hold more than the padding); a
        padded axis split into chunks is made one chunk for "circular", whose padding
        reads the far end of the axis.

    Returns
    -------
    dask.array.Array
        NCHW: (N, C_out, OH, OW); NHWC: (N, OH, OW, C_out); the dtype of `x`. Its batch
        chunks are those of `x`; a split H or W gives the output rows of each input block.
        Equal to ``fastconv.conv2d`` of the whole array up to float rounding (the GEMMs of
        a smaller block may be cut differently).

    Raises
    ------
    ValueError
        Any argument :func:`fastconv.conv2d` rejects; C_in split into several chunks; H or
        W split along an axis with stride > 1.
    TypeError
        `x` not a dask array, or dtypes as :func:`fastconv.conv2d`.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastconv.dask
    >>> x = da.zeros((1000, 3, 64, 64), dtype=np.float32, chunks=(100, 3, 64, 64))
    >>> w = np.ones((16, 3, 3, 3), np.float32)
    >>> y = fastconv.dask.conv2d(x, w, padding=1)       # lazy: nothing computed yet
    >>> y.shape, y.chunks[0]
    ((1000, 16, 64, 64), (100, 100, 100, 100, 100, 100, 100, 100, 100, 100))

    H and W split, with 1-pixel halos borrowed from the neighbouring blocks:

    >>> image = da.ones((1, 3, 64, 64), dtype=np.float32, chunks=(1, 3, 32, 32))
    >>> edges = fastconv.dask.conv2d(image, np.ones((8, 3, 3, 3), np.float32), padding=1)
    >>> np.allclose(edges.compute(), fastconv.conv2d(image.compute(), np.ones((8, 3, 3, 3),
    ...                                              np.float32), padding=1))
    True
    """
    return _conv2d(x, weight, bias, stride, padding, dilation, groups, layout,
                   "fastconv.dask.conv2d", padding_mode)


def layer_forward(layer, x):
    """``layer(x)`` of a :class:`fastconv.Conv2D` over a dask array, as :func:`conv2d`.

    The tasks carry a copy of the layer's weight and bias taken now (one graph key each) and
    its geometry, not the layer object (whose lock does not pickle); a later update of the
    layer's weights does not change this result. The layer's workspace cap does not apply
    to the blocks (a block needs its own workspace; chunking bounds it).

    Parameters
    ----------
    layer : fastconv.Conv2D
    x : dask.array.Array
        (N, C_in, H, W) for a NCHW layer, (N, H, W, C_in) for NHWC, the layer's dtype;
        chunked as for :func:`conv2d`.

    Returns
    -------
    dask.array.Array
        (N, C_out, OH, OW) or (N, OH, OW, C_out).

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d` (the layer's geometry against `x`).

    Examples
    --------
    >>> import dask.array as da
    >>> import fastconv.dask
    >>> layer = fastconv.Conv2D(8, 4, 3, padding=1, seed=0)
    >>> x = da.ones((10, 8, 12, 12), dtype=np.float32, chunks=(5, 8, 12, 12))
    >>> y = fastconv.dask.layer_forward(layer, x)
    >>> y.shape, np.allclose(y.compute(), layer(x.compute()), atol=1e-6)
    ((10, 4, 12, 12), True)
    """
    fn = "fastconv.dask.layer_forward"
    if not isinstance(layer, fastconv.Conv2D):
        raise TypeError(f"{fn}: layer must be a fastconv.Conv2D, got {type(layer).__name__}")
    bias = None if layer.bias is None else layer.bias.copy()
    return _conv2d(x, layer.weight.copy(), bias, layer.stride, layer.padding, layer.dilation,
                   layer.groups, layer.layout, fn, layer.padding_mode)


# --------------------------------------------------------------------------- im2col

def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, layout="NCHW"):
    """:func:`fastconv.im2col` over a dask array, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array
        (N, C, H, W) for NCHW, (N, H, W, C) for NHWC; float32, float64, integer or bool.
        Chunks along N; for NCHW also along C (a chunk of channels is a run of column
        rows). H and W must be one chunk each (a column mixes the whole window).
    kernel_size, stride, padding, dilation, layout
        As for :func:`fastconv.im2col`.

    Returns
    -------
    dask.array.Array
        NCHW: (N, C·kh·kw, OH·OW), row chunks ``C_chunk·kh·kw``; NHWC: (N, OH·OW, kh·kw·C).
        Equal to ``fastconv.im2col`` of the whole array.

    Raises
    ------
    TypeError, ValueError
        Any argument :func:`fastconv.im2col` rejects; H or W split into several chunks, or
        C split for NHWC (the message names the axis to rechunk).

    Examples
    --------
    >>> import dask.array as da
    >>> import fastconv.dask
    >>> x = da.ones((4, 6, 8, 8), dtype=np.float32, chunks=(2, 3, 8, 8))
    >>> cols = fastconv.dask.im2col(x, 3)
    >>> cols.shape, cols.chunks[1]
    ((4, 54, 36), (27, 27))
    """
    fn = "fastconv.dask.im2col"
    layout = _validate.normalize_layout(layout, fn)
    _check_dask_input(x, "x", fn, "im2col")
    _validate.check_movable_dtype(x, "x", fn)
    c_axis, h_axis, w_axis = _axes(layout)
    _, channels, height, width = _validate.image_dims(x.shape, layout)
    window = geo.make_window(channels, height, width, kernel_size, stride, padding, dilation,
                             fn)
    _require_one_chunk(x, [h_axis, w_axis], layout, "x", fn,
                       "each column holds a window from anywhere in the image")
    if layout == "NHWC":
        _require_one_chunk(x, [c_axis], layout, "x", fn,
                           "an NHWC column interleaves the channels of every window offset")
    kh, kw = window.kernel_size
    # Indices: image n, channel c, window position p (a new axis); H and W are dropped
    # without the copy that concatenating their (single) blocks would make.
    index = "nchw" if layout == "NCHW" else "nhwc"
    out_index = "ncp" if layout == "NCHW" else "npc"
    return da.blockwise(_im2col_block, out_index, x, index, concatenate=False,
                        new_axes={"p": window.out_h * window.out_w},
                        adjust_chunks={"c": lambda channels: channels * kh * kw},
                        dtype=x.dtype, meta=_meta(3, x.dtype), kernel_size=window.kernel_size,
                        stride=window.stride, padding=window.padding,
                        dilation=window.dilation, layout=layout)


def _im2col_block(blocks, **kwargs):
    return fastconv.im2col(_only_block(blocks), **kwargs)


# --------------------------------------------------------------------------- space_to_batch

def _space_to_batch_block(block, function, block_size, padding, layout):
    """The chunk's space_to_batch, its batch axis split into (offset, image): (bh·bw, Nc, …)."""
    result = function(block, block_size, padding, layout=layout)
    offsets = block_size[0] * block_size[1]
    return result.reshape((offsets, block.shape[0]) + result.shape[1:])


def space_to_batch(x, block_size, padding=0, *, layout="NCHW"):
    """:func:`fastconv.space_to_batch` over a dask array chunked along N (and C).

    The output batch index is ``ob = (off_h·bw + off_w)·N + n``: block offsets outer,
    images inner. A chunk of images n0..n1 gives its own ``(off_h·bw + off_w)·Nc + n − n0``,
    so each chunk's result is split into its bh·bw offset groups and the groups are
    concatenated across chunks, offset by offset.

    Parameters
    ----------
    x : dask.array.Array
        (N, C, H, W) for NCHW, (N, H, W, C) for NHWC; float32, float64, integer or bool.
        Chunks along N and C; H and W must be one chunk each.
    block_size : int or (bh, bw), >= 1
    padding : int, (pad_h, pad_w) or ((top, bottom), (left, right)), >= 0
        The padded size must be divisible by the block.
    layout : {"NCHW", "NHWC"}

    Returns
    -------
    dask.array.Array
        (N·bh·bw, C, Hp/bh, Wp/bw) for NCHW, (N·bh·bw, Hp/bh, Wp/bw, C) for NHWC, equal to
        ``fastconv.space_to_batch`` of the whole array; bh·bw runs of x's batch chunks.

    Raises
    ------
    TypeError, ValueError
        Any argument :func:`fastconv.space_to_batch` rejects; H or W split into several
        chunks.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastconv.dask
    >>> x = da.arange(4 * 2 * 4 * 4, chunks=32).reshape(4, 2, 4, 4).rechunk((2, 2, 4, 4))
    >>> y = fastconv.dask.space_to_batch(x, 2)
    >>> y.shape, np.array_equal(y.compute(), fastconv.space_to_batch(x.compute(), 2))
    ((16, 2, 2, 2), True)
    """
    fn = "fastconv.dask.space_to_batch"
    function = getattr(fastconv, "space_to_batch", None)
    if function is None:
        raise NotImplementedError(f"{fn}: this fastconv has no space_to_batch (docs/spec.md §3)")
    layout = _validate.normalize_layout(layout, fn)
    _check_dask_input(x, "x", fn, "space_to_batch")
    _validate.check_movable_dtype(x, "x", fn)
    block_size = _validate.normalize_pair(block_size, "block_size", fn)
    padding = _validate.normalize_padding(padding, fn)
    c_axis, h_axis, w_axis = _axes(layout)
    _, channels, height, width = _validate.image_dims(x.shape, layout)
    padded = (height + sum(padding[0]), width + sum(padding[1]))
    if padded[0] % block_size[0] or padded[1] % block_size[1]:
        raise ValueError(f"{fn}: padded size {padded[0]}×{padded[1]} (x {height}×{width} "
                         f"with padding={padding}) is not divisible by block_size="
                         f"{block_size}")
    _require_one_chunk(x, [h_axis, w_axis], layout, "x", fn,
                       "every output image takes pixels from all over its input image")
    offsets = block_size[0] * block_size[1]
    out_h, out_w = padded[0] // block_size[0], padded[1] // block_size[1]
    chunks = list(x.chunks)
    chunks[h_axis], chunks[w_axis] = (out_h,), (out_w,)
    grouped = da.map_blocks(_space_to_batch_block, x, function, block_size, padding, layout,
                            new_axis=0, chunks=((offsets,),) + tuple(chunks), dtype=x.dtype,
                            meta=_meta(5, x.dtype))
    return da.concatenate([grouped[offset] for offset in range(offsets)], axis=0)


# --------------------------------------------------------------------------- R-MAC

def _rmac_block(blocks, mean, projection, *, levels, overlap, eps, normalize, layout):
    whiten = None if mean is None else (mean, projection)
    return fastconv.rmac(_only_block(blocks), levels, overlap, eps, whiten=whiten,
                         normalize=normalize, layout=layout)


def rmac(x, levels=3, overlap=0.4, eps=1e-6, *, whiten=None, normalize=True, layout="NCHW"):
    """:func:`fastconv.rmac` descriptors of a dask array of feature maps, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array
        (N, C, H, W) for NCHW, (N, H, W, C) for NHWC; float32 or float64. Chunks along N
        only: an image's descriptor reads its whole map.
    levels, overlap, eps, normalize, layout
        As for :func:`fastconv.rmac`.
    whiten : (mean (C,), P (D, C)), optional
        As for :func:`fastconv.rmac`; held once in the graph.

    Returns
    -------
    dask.array.Array
        (N, C), or (N, D) with `whiten`; dtype of `x`; x's batch chunks. Equal to
        ``fastconv.rmac`` of the whole array (each image's descriptor is computed alone).

    Raises
    ------
    TypeError, ValueError
        Any argument :func:`fastconv.rmac` rejects; C, H or W split into several chunks.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastconv.dask
    >>> x = da.random.default_rng(0).standard_normal((2000, 512, 30, 40),
    ...     chunks=(100, -1, -1, -1), dtype=np.float32)
    >>> desc = fastconv.dask.rmac(x)          # lazy; desc.compute() is (2000, 512)
    >>> desc.chunks[1], len(desc.chunks[0])
    ((512,), 20)
    """
    fn = "fastconv.dask.rmac"
    layout = _validate.normalize_layout(layout, fn)
    _check_dask_input(x, "x", fn, "rmac")
    _validate.check_float_dtype(x, "x", fn)
    c_axis, h_axis, w_axis = _axes(layout)
    _, channels, height, width = _validate.image_dims(x.shape, layout)
    if height == 0 or width == 0:
        raise ValueError(f"{fn}: x has an empty {height}×{width} feature map (shape "
                         f"{x.shape}); R-MAC needs H, W >= 1")
    _require_one_chunk(x, [c_axis, h_axis, w_axis], layout, "x", fn,
                       "each descriptor reads the whole feature map of its image")
    # The NumPy function on an empty batch checks every other argument and gives the
    # descriptor size, without work.
    probe_shape = list(x.shape)
    probe_shape[0] = 0
    probe = fastconv.rmac(np.empty(probe_shape, dtype=x.dtype), levels, overlap, eps,
                          whiten=whiten, normalize=normalize, layout=layout)
    mean = projection = None
    if whiten is not None:
        mean, projection = (np.ascontiguousarray(_validate.as_array(v, "whiten", fn))
                            for v in whiten)
    # H and W are dropped without concatenating their (single) blocks: no copy.
    index = "nchw" if layout == "NCHW" else "nhwc"
    return da.blockwise(_rmac_block, "nc", x, index, _broadcast(mean), None,
                        _broadcast(projection), None, concatenate=False,
                        adjust_chunks={"c": probe.shape[1]}, dtype=x.dtype,
                        meta=_meta(2, x.dtype), levels=levels, overlap=overlap, eps=eps,
                        normalize=normalize, layout=layout)


def _regions_block(starts, boxes, block_info=None):
    """Rows of the images starting at starts[0]: each image's boxes with its batch index."""
    count = block_info[None]["chunk-shape"][0] // len(boxes)
    rois = _memory.empty((count, len(boxes), 5), np.float32)
    images = np.arange(starts[0], starts[0] + count, dtype=np.int64)
    rois[:, :, 0] = images.astype(np.float32)[:, np.newaxis]
    rois[:, :, 1:] = boxes[:, 1:]
    return rois.reshape(-1, 5)


def rmac_regions(x, scales=3, overlap=0.4, *, layout="NCHW"):
    """:func:`fastconv.rmac_regions` (Caffe2 RMACRegionsOp) for every image of a dask array.

    Only the shape and batch chunks of `x` are used: the boxes are made lazily, chunk by
    chunk, without computing `x`.

    Parameters
    ----------
    x : dask.array.Array
        (N, C, H, W) for NCHW, (N, H, W, C) for NHWC; any chunks.
    scales, overlap, layout
        As for :func:`fastconv.rmac_regions`.

    Returns
    -------
    dask.array.Array of float32, (N·R, 5)
        Rows ``[batch_index, x1, y1, x2, y2]`` with the global batch index; chunks of
        ``R·n`` rows for each batch chunk of n images. Equal to ``fastconv.rmac_regions``
        of the whole array; (0, 5) when any dimension is 0.

    Raises
    ------
    TypeError, ValueError
        Any argument :func:`fastconv.rmac_regions` rejects.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastconv.dask
    >>> x = da.zeros((6, 512, 30, 40), dtype=np.float32, chunks=(3, -1, -1, -1))
    >>> rois = fastconv.dask.rmac_regions(x)
    >>> rois.shape, rois.chunks[0]
    ((120, 5), (60, 60))
    """
    fn = "fastconv.dask.rmac_regions"
    layout = _validate.normalize_layout(layout, fn)
    _check_dask_input(x, "x", fn, "rmac_regions")
    one_image = (1,) + tuple(x.shape[1:])
    boxes = fastconv.rmac_regions(one_image, scales, overlap, layout=layout)
    if x.shape[0] == 0 or len(boxes) == 0:
        return da.from_array(_memory.empty((0, 5), np.float32))
    counts = x.chunks[0]
    starts = da.from_array(np.cumsum((0,) + counts[:-1], dtype=np.int64), chunks=1)
    return da.map_blocks(_regions_block, starts, boxes, new_axis=1,
                         chunks=(tuple(count * len(boxes) for count in counts), (5,)),
                         dtype=np.float32, meta=_meta(2, np.float32))
