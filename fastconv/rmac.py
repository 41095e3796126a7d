"""R-MAC (docs/spec.md §4): region grids, region max-pooling and R-MAC descriptors.

R-MAC (Tolias, Sicre and Jégou, ICLR 2016) describes an image by max-pooling a CNN feature
map over a fixed grid of square regions at several scales, L2-normalising each region's
vector and summing them. Two region rules are in use, and fastconv offers both:

* :func:`rmac_regions` is Caffe2's ``RMACRegionsOp``, bit for bit: the boxes of the
  ``ROIPoolOp`` format, for :func:`roi_max_pool` or any other ROI pooling.
* :func:`rmac` is cirtorch's ``rmac`` + ``l2n`` (filipradenovic/cnnimageretrieval-pytorch),
  the descriptor most retrieval work compares against: the global max-pooled vector plus
  the regions below.

Both rules pick the number of extra regions along the long side the same way (Caffe2's
float32 search, first minimum wins) and use the same region side ``⌊2m/(l+1)⌋`` at level
``l`` (m = min(H, W)). They differ in three details:

========================  ====================================  ===============================
                          Caffe2 (:func:`rmac_regions`)          cirtorch (:func:`rmac`)
========================  ====================================  ===============================
global region             no                                    yes, first
region start              ``int(b·k)``, float32, clamped         ``⌊wl2 + k·b⌋ − wl2``, float32,
                                                                 ``wl2 = ⌊wl/2 − 1⌋``
order                     x outer, y inner                      rows (y) outer, x inner
========================  ====================================  ===============================

The start rules agree except where float32 rounding puts ``b·k`` just below an integer:
on a 12×70 map at level 2 the last region starts at x = 61 in Caffe2 and 62 in cirtorch.

At an exact tie of the long-side search (e.g. 11×47: 5 and 6 extra regions give the same
overlap error) cirtorch's choice depends on how torch rounds its float32 tensor arithmetic;
fastconv always takes Caffe2's (the first minimum).
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from fastconv import _memory, _tuning, _validate, cpu

# Maxima along channels vectorise: the widest build this CPU runs.
_rmac = cpu.load_kernel("_rmac")

__all__ = ["rmac_regions", "roi_max_pool", "rmac"]

# Caffe2 and cirtorch both try 1..6 extra regions along the long side.
_MAX_EXTRA_REGIONS = 6
# A task takes at most as many channels as keep its workspace (see _RegionPlan) this small.
_WORKSPACE_ELEMENTS = 1 << 16


# --------------------------------------------------------------------------- arguments

def _check_real(value, name, fn, expected):
    """A finite real number (bools rejected) as a Python float, else ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    return number


def _check_overlap(overlap, fn):
    number = _check_real(overlap, "overlap", fn, "a number with 0 < overlap < 1")
    if not 0 < number < 1:
        raise ValueError(f"{fn}: overlap must be a number with 0 < overlap < 1, got {overlap!r}")
    return number


def _map_size(shape_or_x, layout, fn):
    """(batch, channels, height, width) of an array or of a shape (H, W), 3-D or 4-D.
    Anything with a ``shape`` attribute is an array; its shape is used. Channels are
    None for an (H, W) shape."""
    if hasattr(shape_or_x, "shape") and not isinstance(shape_or_x, (tuple, list)):
        dims = _validate.normalize_shape(tuple(shape_or_x.shape), "x.shape", fn, ndims=(2, 3, 4))
    else:
        dims = _validate.normalize_shape(shape_or_x, "shape", fn, ndims=(2, 3, 4))
    if len(dims) == 2:
        return (1, None) + dims
    shape4 = dims if len(dims) == 4 else (1,) + dims
    return _validate.image_dims(shape4, layout)


# --------------------------------------------------------------------------- region rules

def _level_count(size_min, scales):
    """Levels that have regions: side ⌊2m/(l+1)⌋ >= 1 up to l = 2m − 1."""
    return min(scales, 2 * size_min - 1)


def _region_count(height, width, scales, overlap):
    """Σ_l (l + Wd)(l + Hd) over the levels with regions, in closed form (one of Wd, Hd
    is 0), so an absurd request fails at allocation instead of looping for ever."""
    levels = _level_count(min(height, width), scales)
    extra = _long_side_extra(height, width, overlap)
    return levels * (levels + 1) * (2 * levels + 1) // 6 + extra * levels * (levels + 1) // 2


@functools.lru_cache(maxsize=256)
def _long_side_extra(height, width, overlap):
    """Caffe2's ``step``: the extra regions along the long side, 1..6, whose overlap
    (m² − m·b)/m² with b = (max(H, W) − m)/step is nearest `overlap`; 0 for a square map.

    Evaluated as Caffe2 does: b divided in double and stored as float32, everything else
    in float32 (the int m² converted to float), strictly-smaller-wins so the first minimum
    is kept at a tie."""
    if height == width:
        return 0
    f32 = np.float32
    size_min = min(height, width)
    area = f32(size_min * size_min)
    target = f32(overlap)
    best_error = f32(np.finfo(np.float32).max)  # Caffe2's FLT_MAX
    best_step = 0
    for step in range(1, _MAX_EXTRA_REGIONS + 1):
        spacing = f32((max(height, width) - size_min) / step)
        error = abs((area - f32(size_min) * spacing) / area - target)
        if error < best_error:
            best_step, best_error = step, error
    return best_step


def _caffe2_starts(size, side, count):
    """Caffe2's region starts along one axis: int(b·k) in float32 for k < count, with
    b = float32((size − side)/(count − 1)) (0 when count is 1), clamped to size − side."""
    spacing = np.float32((size - side) / (count - 1)) if count > 1 else np.float32(0)
    starts = (np.arange(count, dtype=np.float32) * spacing).astype(np.int64)  # truncates
    return np.minimum(starts, size - side)


def _cirtorch_starts(size, side, count):
    """cirtorch's region starts along one axis: ⌊wl2 + k·b⌋ − wl2 in float32 for k < count,
    b = float32((size − side)/(count − 1)) (0 when count is 1), wl2 = ⌊side/2 − 1⌋ (cirtorch's
    "center" offset, which changes float32 rounding, not the exact value ⌊k·b⌋)."""
    spacing = np.float32((size - side) / (count - 1)) if count > 1 else np.float32(0)
    offset = math.floor(side / 2 - 1)
    starts = np.floor(np.float32(offset) + np.arange(count, dtype=np.float32) * spacing)
    return starts.astype(np.int64) - offset


def _level_boxes(height, width, scales, overlap, starts, x_outer):
    """[x1, y1, x2, y2] of every level's regions, levels in order, as one (R, 4) array."""
    size_min = min(height, width)
    extra = _long_side_extra(height, width, overlap)
    extra_w = extra if width > height else 0
    extra_h = extra if height > width else 0
    blocks = []
    for level in range(1, _level_count(size_min, scales) + 1):
        side = 2 * size_min // (level + 1)
        xs = starts(width, side, level + extra_w)
        ys = starts(height, side, level + extra_h)
        if x_outer:
            x1, y1 = np.repeat(xs, len(ys)), np.tile(ys, len(xs))
        else:
            y1, x1 = np.repeat(ys, len(xs)), np.tile(xs, len(ys))
        blocks.append(np.stack([x1, y1, x1 + side - 1, y1 + side - 1], axis=1))
    return np.concatenate(blocks) if blocks else _memory.empty((0, 4), np.int64)


@functools.lru_cache(maxsize=64)
def _caffe2_boxes(height, width, scales, overlap):
    """Caffe2's regions of one image: (R, 4) int64 [x1, y1, x2, y2], read-only."""
    boxes = _level_boxes(height, width, scales, overlap, _caffe2_starts, x_outer=True)
    boxes.flags.writeable = False
    return boxes


# --------------------------------------------------------------------------- rmac_regions

def rmac_regions(shape_or_x, scales=3, overlap=0.4, *, layout="NCHW"):
    """R-MAC region grid of Caffe2's ``RMACRegionsOp``, bit for bit.

    With m = min(H, W): if H ≠ W, ``step`` in 1..6 minimises
    ``|(m² − m·b)/m² − overlap|`` for b = (max(H, W) − m)/step in float32 (first minimum wins).
    Level l = 1..scales has square regions of side ``rs = 2m // (l+1)`` (stop at 0):
    ``l + step`` positions along the long side, ``l`` along the short one, starting at
    ``int(b·k)`` in float32 with ``b = float32((W − rs)/(count − 1))`` (0 for one position),
    clamped to W − rs (the same along H). x runs outer, y inner; the block repeats for every
    image with its batch index.

    Parameters
    ----------
    shape_or_x : ndarray or tuple of int
        A feature map, or its shape: (N, C, H, W) / (C, H, W) for NCHW, (N, H, W, C) /
        (H, W, C) for NHWC, or (H, W) for one image. Anything with a ``shape`` attribute is
        taken as an array and only its shape is used.
    scales : int, >= 1
    overlap : float, 0 < overlap < 1
        Target overlap of neighbouring regions along the long side (Caffe2 stores it as
        float32).
    layout : {"NCHW", "NHWC"}
        Where H and W sit in a 3-D or 4-D shape.

    Returns
    -------
    rois : ndarray of float32, (N·R, 5)
        Rows ``[batch_index, x1, y1, x2, y2]``, inclusive corners, x along W and y along H;
        image n's R rows come n-th. Any zero dimension (like Caffe2, which checks
        ``X.size() == 0``) gives shape (0, 5).

    Raises
    ------
    ValueError
        For a shape that is not 2-, 3- or 4-D, ``scales < 1``, an overlap outside (0, 1)
        or a bad layout, naming it.

    See Also
    --------
    roi_max_pool : pools a feature map over these boxes.
    fastconv.reference.rmac_regions : the plain Python version.

    Examples
    --------
    >>> fastconv.rmac_regions((9, 5), scales=2)  # H = 9, W = 5: the long side is H
    array([[0., 0., 0., 4., 4.],
           [0., 0., 4., 4., 8.],
           [0., 0., 0., 2., 2.],
           [0., 0., 3., 2., 5.],
           [0., 0., 6., 2., 8.],
           [0., 2., 0., 4., 2.],
           [0., 2., 3., 4., 5.],
           [0., 2., 6., 4., 8.]], dtype=float32)
    """
    fn = "rmac_regions"
    layout = _validate.normalize_layout(layout, fn)
    scales = _validate.as_int(scales, "scales", fn, 1)
    overlap = _check_overlap(overlap, fn)
    batch, channels, height, width = _map_size(shape_or_x, layout, fn)
    if 0 in (batch, channels, height, width):
        return _memory.empty((0, 5), np.float32)
    count = _region_count(height, width, scales, overlap)
    rois = _memory.empty((batch, count, 5), np.float32)  # fails here if absurdly large
    rois[:, :, 0] = np.arange(batch, dtype=np.float32)[:, np.newaxis]
    rois[:, :, 1:] = _caffe2_boxes(height, width, scales, overlap)
    return rois.reshape(batch * count, 5)


# --------------------------------------------------------------------------- roi_max_pool

def _format_row(row):
    return "[" + ", ".join(f"{value:g}" for value in row) + "]"


def _check_rois(rois, batch, height, width, batched, fn):
    """Validated boxes as a flat intp array of R rows [batch_index, x1, y1, x2, y2]."""
    rois = _validate.as_array(rois, "rois", fn)
    if rois.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: rois must be a float or integer array, got dtype {rois.dtype}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"{fn}: rois must have shape (R, 5), rows [batch_index, x1, y1, x2, "
                         f"y2], got shape {rois.shape}")
    values = rois.astype(np.float64)  # exact for every coordinate a map can have

    def first_bad(mask, problem):
        rows = np.flatnonzero(mask)
        if rows.size:
            row = rows[0]
            raise ValueError(f"{fn}: rois row {row} = {_format_row(rois[row])}: {problem(row)}")

    first_bad(~np.isfinite(values).all(axis=1) | (values != np.floor(values)).any(axis=1),
              lambda row: "batch index and corners must be whole numbers")
    index, x1, y1, x2, y2 = values.T
    images = "x is one image, so 0" if not batched else f"the batch of x has {batch}"
    first_bad((index < 0) | (index >= batch),
              lambda row: f"batch index {index[row]:g} out of range ({images})")
    first_bad(x2 < x1, lambda row: f"x2 = {x2[row]:g} < x1 = {x1[row]:g} (an empty box)")
    first_bad(y2 < y1, lambda row: f"y2 = {y2[row]:g} < y1 = {y1[row]:g} (an empty box)")
    first_bad((x1 < 0) | (x2 >= width) | (y1 < 0) | (y2 >= height),
              lambda row: f"box outside the {height}×{width} feature map; expected "
                          f"0 <= x1 <= x2 < {width} and 0 <= y1 <= y2 < {height}")
    return np.ascontiguousarray(values, dtype=np.intp).reshape(-1)


def _channel_block(channels, per_channel, tasks_outside, num_threads):
    """Channels per task: equal blocks, a multiple of 16 (or all channels), few enough that
    a task's workspace (`per_channel` elements a channel) fits _WORKSPACE_ELEMENTS, and
    enough blocks that `tasks_outside` × blocks keeps every thread busy."""
    largest = max(16, _WORKSPACE_ELEMENTS // max(per_channel, 1) // 16 * 16)
    wanted_blocks = -(-4 * num_threads // max(tasks_outside, 1))  # 4 tasks per thread
    blocks = max(-(-channels // largest), wanted_blocks)
    block = -(-channels // blocks)  # equal blocks, rounded up to whole vectors
    return min(channels, max(16, (block + 15) // 16 * 16))


def roi_max_pool(x, rois, *, layout="NCHW"):
    """Per-channel maximum of a feature map over each box of `rois` (Caffe2 ``ROIPoolOp``
    with one output bin, i.e. R-MAC's region max-pooling).

    Parameters
    ----------
    x : ndarray, (N, C, H, W) / (C, H, W) for NCHW, (N, H, W, C) / (H, W, C) for NHWC
        float32 or float64.
    rois : array_like, (R, 5)
        Rows ``[batch_index, x1, y1, x2, y2]`` (:func:`rmac_regions`' format): inclusive
        corners, x along W, y along H. Any real dtype; every value must be a whole number
        (no rounding is done), with 0 <= batch_index < N (0 for a 3-D `x`),
        0 <= x1 <= x2 < W and 0 <= y1 <= y2 < H.
    layout : {"NCHW", "NHWC"}

    Returns
    -------
    pooled : ndarray, (R, C), dtype of `x`
        ``pooled[r, c] = max x[batch_index, c, y1:y2+1, x1:x2+1]``. A NaN inside a box gives
        NaN, as ``np.max`` does.

    Raises
    ------
    ValueError
        Bad `rois` shape, a non-integral value, a batch index out of range, x2 < x1 or
        y2 < y1, or a box outside the map; the message names the first offending row.
    TypeError
        `x` not float32/float64, or `rois` not a real-number array.

    Examples
    --------
    >>> fmap = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    >>> rois = fastconv.rmac_regions(fmap, scales=2)
    >>> rois.shape, fastconv.roi_max_pool(fmap, rois).shape
    ((16, 5), (16, 3))
    >>> fastconv.roi_max_pool(fmap, [[1, 0, 0, 1, 1]])   # image 1, the top-left 2×2 box
    array([[ 66.,  86., 106.]], dtype=float32)
    """
    fn = "roi_max_pool"
    layout = _validate.normalize_layout(layout, fn)
    x = _validate.as_array(x, "x", fn)
    _validate.check_float_dtype(x, "x", fn)
    x4, batched = _validate.split_batch(x, "x", fn, layout)
    batch, channels, height, width = _validate.image_dims(x4.shape, layout)
    boxes = _check_rois(rois, batch, height, width, batched, fn)
    count = boxes.size // 5
    pooled = _memory.empty((count, channels), x.dtype)
    if pooled.size == 0:
        return pooled
    nhwc = layout == "NHWC"
    # Roughly the elements read: the boxes' areas times the channels.
    areas = ((boxes[3::5] - boxes[1::5] + 1) * (boxes[4::5] - boxes[2::5] + 1)).sum()
    threads = _tuning.threads_for_elements(int(areas) * channels)
    block = _channel_block(channels, 1, count, threads) if nhwc else 1
    work = _memory.empty(threads * width, x.dtype)
    _rmac.roi_max_pool(np.ascontiguousarray(x4).reshape(-1), boxes, pooled.reshape(-1), work,
                       channels, height, width, nhwc, block, threads)
    return pooled


# --------------------------------------------------------------------------- rmac

class _RegionPlan:
    """cirtorch's regions of one H×W map, cut for the kernel so every element is read once.

    Rows are cut at every box's top and bottom edge (``row_cuts``, 0..H) and columns at
    every left and right edge (``col_cuts``, 0..W). Boxes sharing their rows form a *band*:
    a run of row segments [first, end) (``band_segments``, flat pairs). ``band_regions``
    gives each band's slice of the regions in band order; ``region_index`` is each one's
    row in the result and ``region_segments`` its run of column segments (flat pairs).
    """

    def __init__(self, boxes, height, width):
        self.boxes = boxes
        self.count = len(boxes)
        x1, y1, x2, y2 = boxes.T
        self.row_cuts = np.unique(np.concatenate([y1, y2 + 1])).astype(np.intp)
        self.col_cuts = np.unique(np.concatenate([x1, x2 + 1])).astype(np.intp)
        bands, band_of = np.unique(np.stack([y1, y2], axis=1), axis=0, return_inverse=True)
        order = np.argsort(band_of.reshape(-1), kind="stable")
        self.region_index = order.astype(np.intp)
        self.band_regions = np.searchsorted(band_of.reshape(-1)[order],
                                            np.arange(len(bands) + 1)).astype(np.intp)
        self.band_segments = np.stack([np.searchsorted(self.row_cuts, bands[:, 0]),
                                       np.searchsorted(self.row_cuts, bands[:, 1] + 1)],
                                      axis=1).astype(np.intp).reshape(-1)
        self.region_segments = np.stack([np.searchsorted(self.col_cuts, x1[order]),
                                         np.searchsorted(self.col_cuts, x2[order] + 1)],
                                        axis=1).astype(np.intp).reshape(-1)
        # Vectors of one task's workspace per channel: each row segment's row, the band's
        # row and the column segments.
        self.per_channel = (len(self.row_cuts) * width) + len(self.col_cuts) - 1
        for array in (self.boxes, self.row_cuts, self.col_cuts, self.region_index,
                      self.band_regions, self.band_segments, self.region_segments):
            array.flags.writeable = False  # shared by every call through the cache


@functools.lru_cache(maxsize=64)
def _rmac_plan(height, width, levels, overlap):
    """The global region (whole map) then cirtorch's regions, rows outer."""
    whole = np.array([[0, 0, width - 1, height - 1]], dtype=np.int64)
    regions = _level_boxes(height, width, levels, overlap, _cirtorch_starts, x_outer=False)
    return _RegionPlan(np.concatenate([whole, regions]), height, width)


def _region_maxima_into(x4, plan, layout, maxima):
    """maxima (N, R, C) = the maximum of every channel over every region of the plan."""
    batch, channels, height, width = _validate.image_dims(x4.shape, layout)
    nhwc = layout == "NHWC"
    threads = _tuning.threads_for_elements(x4.size)
    block = _channel_block(channels, plan.per_channel, batch, threads)
    work = _memory.empty(threads * (plan.per_channel * block + width), x4.dtype)
    _rmac.rmac_region_max(np.ascontiguousarray(x4).reshape(-1), maxima.reshape(-1), work,
                          plan.row_cuts, plan.col_cuts, plan.band_segments, plan.band_regions,
                          plan.region_index, plan.region_segments, batch, channels, height,
                          width, nhwc, block, threads)


def _l2n(vectors, eps):
    """cirtorch's l2n along the last axis: v / (‖v‖₂ + eps)."""
    norms = np.sqrt(np.sum(vectors * vectors, axis=-1, keepdims=True))
    return vectors / (norms + eps)


def _check_whiten(whiten, channels, x, fn):
    """(mean (C,), P (D, C)) with x's dtype, or (None, None)."""
    if whiten is None:
        return None, None
    if not isinstance(whiten, (tuple, list)) or len(whiten) != 2:
        raise ValueError(f"{fn}: whiten must be a pair (mean, P) with mean of shape (C,) and "
                         f"P of shape (D, C), got {type(whiten).__name__}")
    mean = _validate.as_array(whiten[0], "whiten mean", fn)
    projection = _validate.as_array(whiten[1], "whiten P", fn)
    _validate.check_same_dtype(fn, x=x, mean=mean, P=projection)
    if mean.shape != (channels,):
        raise ValueError(f"{fn}: whiten mean must have shape ({channels},) for x with "
                         f"{channels} channels, got shape {mean.shape}")
    if projection.ndim != 2 or projection.shape[1] != channels:
        raise ValueError(f"{fn}: whiten P must have shape (D, {channels}) for x with "
                         f"{channels} channels, got shape {projection.shape}")
    return mean, projection


def rmac(x, levels=3, overlap=0.4, eps=1e-6, *, whiten=None, normalize=True, layout="NCHW"):
    """R-MAC descriptor of each image: cirtorch's ``rmac`` followed by its ``l2n``.

    With l2n(v) = v / (‖v‖₂ + eps), the descriptor is
    ``l2n(Σ_r l2n(max over region r))`` over the global region (the whole map) and
    cirtorch's regions at levels 1..`levels`: side ``wl = ⌊2m/(l+1)⌋`` (m = min(H, W)),
    ``l + step`` positions along the long side and ``l`` along the short one (``step`` as in
    :func:`rmac_regions`), starting at ``⌊k·b⌋`` with b = (size − wl)/(count − 1) as cirtorch
    evaluates it in float32 (see the module notes), rows outer. Activations are used as
    they are (no ReLU).

    Parameters
    ----------
    x : ndarray, (N, C, H, W) / (C, H, W) for NCHW, (N, H, W, C) / (H, W, C) for NHWC
        float32 or float64 feature map, H, W >= 1.
    levels : int, >= 1
    overlap : float, 0 < overlap < 1
        Target overlap along the long side (cirtorch fixes it at 0.4).
    eps : float, >= 0
        Added to every norm, as cirtorch does (0 and an all-zero vector give NaN).
    whiten : (mean, P), optional
        The full Tolias pipeline: every region vector (the global one included) becomes
        ``l2n((l2n(v) − mean)·Pᵀ)`` before the sum. mean (C,), P (D, C), both of x's dtype
        (cirtorch's ``whitenapply`` with ``P[:D]``).
    normalize : bool
        False returns the sum of region vectors without the final l2n.
    layout : {"NCHW", "NHWC"}

    Returns
    -------
    descriptor : ndarray, (N, C), or (N, D) with `whiten`; dtype of `x`
        The batch axis is dropped for a 3-D `x`.

    Raises
    ------
    TypeError
        `x` not float32/float64, or a whitening of another dtype.
    ValueError
        For an empty map, ``levels < 1``, an overlap outside (0, 1), a negative `eps`, a
        whitening of the wrong shape or a bad layout, naming it.

    Notes
    -----
    The region maxima come from one kernel pass: rows are cut at every region edge, each
    row segment is max-reduced once, and every region combines a few segment maxima.
    The sums and norms are NumPy's, so results match cirtorch up to float rounding.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((2, 512, 30, 40), dtype=np.float32)
    >>> fastconv.rmac(x).shape
    (2, 512)
    >>> mean, P = np.zeros(512, np.float32), np.eye(256, 512, dtype=np.float32)
    >>> fastconv.rmac(x, whiten=(mean, P)).shape
    (2, 256)
    """
    fn = "rmac"
    layout = _validate.normalize_layout(layout, fn)
    levels = _validate.as_int(levels, "levels", fn, 1)
    overlap = _check_overlap(overlap, fn)
    eps = _check_real(eps, "eps", fn, "a finite number >= 0")
    if eps < 0:
        raise ValueError(f"{fn}: eps must be a finite number >= 0, got {eps!r}")
    if not isinstance(normalize, (bool, np.bool_)):
        raise ValueError(f"{fn}: normalize must be True or False, got {normalize!r}")
    x = _validate.as_array(x, "x", fn)
    _validate.check_float_dtype(x, "x", fn)
    x4, batched = _validate.split_batch(x, "x", fn, layout)
    batch, channels, height, width = _validate.image_dims(x4.shape, layout)
    if height == 0 or width == 0:
        raise ValueError(f"{fn}: x has an empty {height}×{width} feature map (shape "
                         f"{x.shape}); R-MAC needs H, W >= 1")
    mean, projection = _check_whiten(whiten, channels, x, fn)
    size = channels if projection is None else projection.shape[0]
    if batch == 0 or channels == 0:  # no region vectors, or all of them empty (norm 0)
        # An empty vector whitens to D zeros, whose l2n is 0 / (0 + eps): 0, or NaN (with
        # NumPy's warning, as on the general path) when eps is 0, as the formula says.
        fill = np.float64(0.0) / np.float64(eps) if projection is not None else 0.0
        descriptor = np.full((batch, size), fill, dtype=x.dtype)
        return descriptor if batched else descriptor[0]
    # Allocated before the plan is built: an absurd `levels` on a large map fails here
    # with MemoryError instead of building regions for ever.
    maxima = _memory.empty((batch, _region_count(height, width, levels, overlap) + 1, channels),
                           x.dtype)
    plan = _rmac_plan(height, width, levels, overlap)
    _region_maxima_into(x4, plan, layout, maxima)
    vectors = _l2n(maxima, eps)  # (N, R, C)
    if projection is not None:
        vectors = _l2n((vectors - mean) @ projection.T, eps)  # (N, R, D)
    descriptor = vectors.sum(axis=1)
    if normalize:
        descriptor = _l2n(descriptor, eps)
    return descriptor if batched else descriptor[0]
