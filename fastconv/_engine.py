"""How a convolution runs: typed plans, the chooser, and the kernel calls (docs/spec.md §2).

A plan says how one pass of one convolution runs: its strategy, its thread count, how the
work is cut, and how much workspace it needs. Each strategy has a planning function that
returns an immutable :class:`ConvPlan`, or None where the strategy does not apply;
:func:`choose_plan` asks them in the order of :data:`PLANNERS` and takes the first plan.
Adding a strategy is one planning function, one kernel entry in :func:`run_forward` or
:func:`run_backward`, and one line in PLANNERS.

Strategies:

- DEPTHWISE_BLOCKS: groups == C_in; kernels larger than 3×3, and in NCHW small planes or
  a stride: the _depthwise kernels on channels-last, zero-padded copies of 16 channels at
  a time, vectorised across the channels with no edge code (the plane loops of DEPTHWISE
  are scalar on rows shorter than a vector, and per pixel for large kernels). With a
  padding mode (docs/spec.md §6) the tiles' padding is read through the source tables,
  and every depthwise backward pass runs here.
- DEPTHWISE: groups == C_in; direct loops (the _depthwise kernels), no GEMM; with a
  padding mode the forward pass only (its edge pixels read through the tables).
- WINOGRAD: the forward pass of a 3×3 stride-1 convolution by Winograd's minimal filtering
  F(m×m, 3×3) (the _winograd kernels), when the algorithm chosen is "winograd".
- DIRECT: forward, float32, a weight that fits L2: register-blocked small-GEMM blocks
  read the image in place (no im2col, no BLAS).
- GROUPED_IMAGES: forward, NHWC, small images: the columns of several images side by side,
  one GEMM per block of output channels across them, straight into the output.
- WEIGHT_GRAD_IMAGES: backward, one group, images of few output positions: the weight
  gradient over the columns and output gradients of several images at once, one product
  per block of column-matrix rows straight into the gradient (no per-thread
  accumulators); the input gradient as ROW_TILES / POINTWISE.
- CHANNEL_BLOCKS: too few work items for the threads: each image's whole column matrix is
  built once and the GEMMs are split between threads by blocks of output channels
  (forward, weight gradient) or of column rows (input gradient).
- POINTWISE: 1×1, stride 1, unpadded: GEMMs on the image itself, by (image, row tile).
- ROW_TILES: the general case: per (image, tile of output rows), im2col into the thread's
  cache-sized tile of the workspace, then one single-threaded GEMM.

Padding modes other than "zeros" (docs/spec.md §6): every kernel that builds columns or
reads the image in place (im2col, DIRECT, WINOGRAD, DEPTHWISE_BLOCKS, DEPTHWISE's forward
loops) reads the padding through the window's source tables; the input gradient runs on
the padded geometry (unpadded, any strategy) and is folded back (input_grad_padded).

Every plan depends on the geometry, the batch, the dtype, the workspace cap and the
thread setting, never on timings; the way work is cut does not depend on the thread count,
so results are bit-identical for any number of threads.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import numpy as np

from fastconv import _memory, _tuning, cpu
from fastconv import geometry as geo
from fastconv._kernels import _im2col
from fastconv.threads import blas_limit, get_num_threads

# The direct loops are arithmetic-bound: the widest build this CPU runs.
_conv = cpu.load_kernel("_conv")
_depthwise = cpu.load_kernel("_depthwise")
_winograd = cpu.load_kernel("_winograd")

# Algorithms (docs/spec.md §5): what "auto" resolves to.
GEMM = "gemm"
WINOGRAD = "winograd"

# Passes of a convolution a plan is made for.
FORWARD = "forward"        # conv2d, Conv2D.forward
INPUT_GRAD = "input_grad"  # the input gradient alone: conv_transpose2d, or conv2d_backward
                           # without the weight gradient
BACKWARD = "backward"      # the weight gradient, and the input gradient if asked

# Strategies (see the module docstring).
DEPTHWISE = "depthwise"
DEPTHWISE_BLOCKS = "depthwise_blocks"
# WINOGRAD (above) is also the strategy that serves the algorithm
DIRECT = "direct"
GROUPED_IMAGES = "grouped_images"
WEIGHT_GRAD_IMAGES = "weight_grad_images"
CHANNEL_BLOCKS = "channel_blocks"
POINTWISE = "pointwise"
ROW_TILES = "row_tiles"


@dataclass(frozen=True)
class ConvPlan:
    """How one pass of one convolution runs."""

    geometry: geo.ConvGeometry
    strategy: str
    num_threads: int
    tile_rows: int   # output rows per work item (the whole image in the shared strategies)
    m_block: int     # output channels per GEMM block (CHANNEL_BLOCKS, GROUPED_IMAGES)
    k_block: int     # column-matrix rows per input-gradient block (CHANNEL_BLOCKS)
    images: int      # images whose columns one GEMM spans (GROUPED_IMAGES,
                     # WEIGHT_GRAD_IMAGES)
    col_size: int    # workspace elements per thread
    workspace: int   # workspace elements in all (DIRECT: with the packed weight)
    partials: int    # per-thread weight-gradient accumulators in all (BACKWARD; in
                     # WEIGHT_GRAD_IMAGES the images' columns and output gradients)
    winograd_m: int = 0    # WINOGRAD: output tile side m of F(m×m, 3×3)
    block_tiles: int = 0   # WINOGRAD: tiles per block
    transformed: int = 0   # WINOGRAD: elements of the transformed weight
    winograd_shared: bool = False  # WINOGRAD: the threads share each block

    def winograd_struct(self):
        """The dict that Cython converts to the `WinogradPlan` struct of _winograd.pyx."""
        return _winograd_struct(self.geometry, self.winograd_m, self.block_tiles,
                                self.winograd_shared)

    def kernel_struct(self):
        """The dict that Cython converts to the `Plan` struct of _conv.pyx."""
        geom = self.geometry
        return {"batch": geom.batch, "out_channels": geom.out_channels,
                "groups": geom.groups, "nhwc": geom.layout == "NHWC",
                "pointwise": geom.window.is_pointwise, "tile_rows": self.tile_rows,
                "shared": self.strategy in (CHANNEL_BLOCKS, GROUPED_IMAGES),
                "m_block": self.m_block, "k_block": self.k_block, "images": self.images,
                "direct": self.strategy == DIRECT,
                "weight_grad_images": self.strategy == WEIGHT_GRAD_IMAGES}


@dataclass(frozen=True)
class PlanRequest:
    """What every planning function starts from: the convolution, the pass, the workspace
    cap, the tuning, and the row tiling that fits the cap (the ROW_TILES plan's)."""

    geometry: geo.ConvGeometry
    itemsize: int
    pass_: str
    max_workspace_bytes: int | None
    tuning: _tuning.Tuning
    num_threads: int
    tile_rows: int
    row_elems: int     # column elements of one output row (0: the strategy needs none)
    weight_elems: int  # elements of one weight-gradient accumulator (BACKWARD)
    algorithm: str = GEMM  # GEMM or WINOGRAD (never "auto": choose_algorithm resolved it)
    weight_cached: bool = False  # a Conv2D keeps the transformed weight (WINOGRAD)

    @property
    def out_h(self):
        """Output rows, at least one (so an empty output still plans one item)."""
        return max(self.geometry.out_h, 1)

    @property
    def m_group(self):
        return self.geometry.gemm_shape[0]

    @property
    def k_group(self):
        return self.geometry.gemm_shape[1]

    def fits(self, elements):
        """`elements` of workspace are within the cap."""
        return (self.max_workspace_bytes is None
                or elements * self.itemsize <= self.max_workspace_bytes)


def is_depthwise(geom, pass_=FORWARD):
    """One input channel per group (groups == C_in > 1): the direct depthwise kernels serve
    `pass_`. With a padding mode their forward loops read the padding through the source
    tables, their gradient loops do not: the backward pass then runs DEPTHWISE_BLOCKS
    (whose tiles read it) and, where those do not fit a workspace cap, the grouped GEMM
    paths (False here)."""
    return is_one_channel_groups(geom) and (pass_ == FORWARD or not geom.reads_padding)


def is_one_channel_groups(geom):
    """groups == C_in > 1, whatever the padding mode."""
    return geom.groups > 1 and geom.in_channels == geom.groups


def uses_direct_path(geom, itemsize, tuning=None):
    """The forward pass can run on register-blocked small-GEMM blocks instead of BLAS,
    with no im2col (NCHW: the packed weight by the image read through row pointers; NHWC:
    the image's windows read in place by the HWIO weight rows, C_out a multiple of 16):
    float32, one group, a kernel larger than 1×1 (a strided 1×1 is a GEMM on a subsampled
    image, as fast on BLAS), C_out and the weight within the tuning's limits, in a build
    that has the block (AVX-512); NCHW at least tuning.direct_min_depth deep unless the
    output is at most one block wide."""
    tuning = tuning or _tuning.active()
    kh, kw = geom.kernel_size
    depth = geom.in_channels * kh * kw
    return bool(_conv.SMALL_GEMM and itemsize == 4
                and (geom.out_channels % _conv.SMALL_GEMM_LANES == 0
                     if geom.layout == "NHWC"
                     else depth >= tuning.direct_min_depth
                     or geom.out_w <= _conv.SMALL_GEMM_COLS)
                and geom.groups == 1 and kh * kw > 1
                and geom.out_channels <= tuning.direct_max_channels
                and depth <= _conv.DIRECT_DEPTH_LIMIT
                and geom.out_channels * depth * itemsize <= tuning.direct_max_weight_bytes)


def plan_request(geom, itemsize, pass_, *, max_workspace_bytes=None, tuning=None,
                 fn="conv2d", algorithm=GEMM, weight_cached=False):
    """Cut the convolution into (image, row tile) items and fit them to the cap.

    A tile's columns aim at tuning.tile_bytes (cache-sized); with few images, tiles shrink
    towards tuning.work_items items (keeping at least min_tile_positions output positions
    each, and a power of two of them per image). `max_workspace_bytes` caps the column
    tiles plus the weight-gradient accumulators of all threads: tiles shrink, then fewer
    threads run, and a cap below one output row's needs is a ValueError."""
    tuning = tuning or _tuning.active()
    if is_depthwise(geom):  # memory-bound: a few flops per value moved
        # (docs/performance.md#depthwise-threads)
        threads = _tuning.threads_for_elements(
            geom.batch * (geom.in_channels * geom.height * geom.width
                          + geom.out_channels * geom.out_h * geom.out_w), tuning)
    else:
        threads = _tuning.threads_for_flops(geom.flops, tuning)
    kh, kw = geom.kernel_size
    no_columns = geom.window.is_pointwise or is_depthwise(geom, pass_)
    row_elems = 0 if no_columns else geom.out_w * geom.in_channels * kh * kw
    weight_elems = (geom.out_channels * geom.in_channels // geom.groups * kh * kw
                    if pass_ == BACKWARD else 0)
    out_h = max(geom.out_h, 1)
    tile_rows = out_h
    if row_elems:
        tile_rows = max(1, min(out_h, tuning.tile_bytes // (row_elems * itemsize)))
    wanted_tiles = min(-(-tuning.work_items // max(geom.batch, 1)), out_h,
                       max(1, out_h * geom.out_w // tuning.min_tile_positions))
    # A power of two: even shares for 2, 4, 8 threads (docs/performance.md#tiles-power-of-two)
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
    return PlanRequest(geom, itemsize, pass_, max_workspace_bytes, tuning, threads, tile_rows,
                       row_elems, weight_elems, algorithm, weight_cached)


def _plan(request, strategy, *, col_size, workspace, partials=0, tile_rows=None,
          m_block=None, k_block=None, images=1):
    """A ConvPlan for `request`: its threads and row tiles unless given otherwise."""
    return ConvPlan(request.geometry, strategy, request.num_threads,
                    request.tile_rows if tile_rows is None else tile_rows,
                    request.m_group if m_block is None else m_block,
                    request.k_group if k_block is None else k_block, images, col_size,
                    workspace, partials)


def _row_tiled(request, strategy):
    """The row tiling of the request as it is: one column tile and one accumulator per
    thread."""
    threads = request.num_threads
    col_size = request.tile_rows * request.row_elems
    return _plan(request, strategy, col_size=col_size, workspace=threads * col_size,
                 partials=threads * request.weight_elems)


def _channel_blocks(request):
    """(blocks, block size) of the output channels when one image's GEMMs are split:
    at most work_items / groups blocks of at least min_channel_block channels, 16-aligned,
    a power of two of them (docs/performance.md#min_channel_block: 3 blocks on 2 threads
    ran as 2 + 1); when the convolution is one work item (one image, one row tile), two
    blocks of at least min_split_channel_block rather than one
    (docs/performance.md#min_split_channel_block)."""
    tuning = request.tuning
    wanted = -(-tuning.work_items // request.geometry.groups)
    blocks = max(1, min(wanted, request.m_group // tuning.min_channel_block))
    alone = request.geometry.batch * -(-request.out_h // request.tile_rows) == 1
    if (blocks == 1 and alone and wanted > 1
            and request.m_group >= 2 * tuning.min_split_channel_block):
        blocks = 2  # one work item: two thinner GEMMs beat one on one thread
    blocks = 1 << (blocks.bit_length() - 1)
    return blocks, _round_up(-(-request.m_group // blocks), 16)


def plan_depthwise_blocks(request):
    """DEPTHWISE_BLOCKS (docs/performance.md#depthwise-channel-blocks): a depthwise
    convolution whose kernel has more than tuning.depthwise_row_max_taps taps, in either
    layout; in NCHW also any with a stride, or whose block workspace (a thread's
    channels-last tiles of 16 channels) fits tuning.depthwise_block_bytes; and the
    backward pass of every depthwise convolution with a padding mode (its tiles read the
    padding through the source tables). Under a workspace cap fewer threads run; below
    one thread's tiles, DEPTHWISE (no workspace), or for a padding mode's backward pass
    the grouped GEMM paths."""
    geom = request.geometry
    if not is_one_channel_groups(geom):
        return None
    kh, kw = geom.kernel_size
    tuning = request.tuning
    # a padding mode's gradients: the depthwise kernels whose tiles read the padding
    wide = (kh * kw > tuning.depthwise_row_max_taps
            or geom.reads_padding and request.pass_ != FORWARD)
    if geom.layout == "NHWC" and not wide:
        return None
    per_thread = _depthwise.block_workspace(geom.window.kernel_struct(),
                                            geom.out_channels // geom.in_channels)
    if not (wide or geom.window.stride != (1, 1)
            or per_thread * request.itemsize <= tuning.depthwise_block_bytes):
        return None
    threads = request.num_threads
    if request.max_workspace_bytes is not None:
        threads = min(threads, request.max_workspace_bytes // (per_thread * request.itemsize))
        if threads < 1:
            return None
    return ConvPlan(geom, DEPTHWISE_BLOCKS, threads, request.out_h, request.m_group,
                    request.k_group, 1, per_thread, threads * per_thread, 0)


def plan_depthwise(request):
    """DEPTHWISE: groups == C_in (the depthwise kernels take no columns); with a padding
    mode the forward pass only."""
    if not is_depthwise(request.geometry, request.pass_):
        return None
    return _row_tiled(request, DEPTHWISE)


def winograd_tile(geom, itemsize, tuning=None, weight_cached=False):
    """m of F(m×m, 3×3) for this geometry: of tuning.winograd_tiles, the one with the
    lowest winograd_cost (docs/performance.md#winograd_tile). Small images take F(2×2):
    its GEMMs have 4× the tiles of F(4×4) to run on, its weight 16 points instead of 36."""
    return cheapest_winograd_tile(geom, itemsize, tuning or _tuning.active(),
                                  weight_cached)[0]


def cheapest_winograd_tile(geom, itemsize, tuning, weight_cached=False, input_grad=False):
    """(m, winograd_cost) of the tile winograd_tile picks (the first of the cheapest)."""
    costs = [(m, winograd_cost(geom, itemsize, m, tuning, weight_cached, input_grad))
             for m in tuning.winograd_tiles]
    return min(costs, key=lambda tile: tile[1])


def winograd_cost(geom, itemsize, m, tuning, weight_cached=False, input_grad=False):
    """Estimated time of F(m×m, 3×3) on `geom`, in multiply-adds of the im2col GEMM
    (docs/performance.md#winograd_pays): the alpha²·tiles·C_in/g·C_out multiply-adds of the
    Winograd-domain GEMMs (slower on thin blocks of tiles), the tile transforms, NCHW's
    transposes and, unless a layer keeps it (`weight_cached`), the weight transform
    (dearer for a transformed weight of winograd_large_weight_bytes or more; for an input
    gradient, whose flipped weight is made first, of winograd_shared_block_bytes or more)."""
    block, _ = winograd_blocking(geom, itemsize, m, tuning)
    points = (m + 2) ** 2
    tiles = geom.batch * -(-geom.out_h // m) * -(-geom.out_w // m)
    transform_cost = {2: tuning.winograd_f2_transform_cost,
                      4: tuning.winograd_f4_transform_cost}[m]
    cost = (points * tiles * geom.in_channels // geom.groups * geom.out_channels
            * (block + tuning.winograd_gemm_half_tiles) / block
            + transform_cost * points * tiles * (geom.in_channels + geom.out_channels))
    if geom.layout == "NCHW":
        cost += tuning.winograd_layout_cost * geom.batch * (
            geom.height * geom.width * geom.in_channels + geom.out_h * geom.out_w
            * geom.out_channels)
    if not weight_cached:
        elements = points * geom.in_channels // geom.groups * geom.out_channels
        # A transformed weight beyond the L3 cache (an input gradient's, whose flipped
        # weight is made first: beyond the threads' shared L3 blocks) goes out to memory
        # and is read back by the GEMMs: dearer per element
        # (docs/performance.md#winograd_pays)
        large = (tuning.winograd_shared_block_bytes if input_grad
                 else tuning.winograd_large_weight_bytes)
        per_element = (tuning.winograd_large_weight_cost if elements * itemsize >= large
                       else tuning.winograd_weight_cost)
        cost += per_element * elements
    return cost


def winograd_pays(geom, itemsize, tuning=None, weight_cached=False, input_grad=False):
    """Whether "auto" takes Winograd for an eligible geometry (docs/performance.md
    #winograd_pays): at least tuning.winograd_min_channels per group on both sides, and
    the winograd_cost of its tile below the im2col GEMM's 9·positions·C_in/g·C_out by
    tuning.winograd_min_speedup (tuning.winograd_input_grad_min_speedup for the flipped
    convolution of an input gradient, `input_grad`). A rule over shapes, dtype (through the
    block sizes) and the CPU's caches; never the thread count."""
    tuning = tuning or _tuning.active()
    cin_g, cout_g = geom.in_channels // geom.groups, geom.out_channels // geom.groups
    if min(cin_g, cout_g) < tuning.winograd_min_channels:
        return False
    _, cost = cheapest_winograd_tile(geom, itemsize, tuning, weight_cached, input_grad)
    gemm = 9 * geom.batch * geom.out_h * geom.out_w * cin_g * geom.out_channels
    speedup = (tuning.winograd_input_grad_min_speedup if input_grad
               else tuning.winograd_min_speedup)
    return gemm > speedup * cost


def choose_algorithm(geom, itemsize, requested="auto", *, fn="conv2d", tuning=None,
                     weight_cached=False, input_grad=False):
    """GEMM or WINOGRAD for the forward pass of `geom` (the input gradient asks the same of
    its flipped convolution, `input_grad`); `weight_cached`: a layer that keeps the
    transformed weight. Requesting WINOGRAD where it cannot serve is a ValueError."""
    if requested == GEMM:
        return GEMM
    blocker = geo.winograd_blocker(geom)
    if requested == WINOGRAD:
        if blocker is not None:
            raise ValueError(f"{fn}: algorithm='winograd' {blocker}")
        return WINOGRAD
    if blocker is None and winograd_pays(geom, itemsize, tuning, weight_cached, input_grad):
        return WINOGRAD
    return GEMM


def _winograd_struct(geom, m, block_tiles, shared):
    # A padding mode: the tables the input tiles read through (the window keeps them alive
    # as long as the plan).
    row_src, col_src = geom.window.table_addresses
    return {"row_src": row_src, "col_src": col_src,
            "batch": geom.batch, "channels": geom.in_channels, "height": geom.height,
            "width": geom.width, "out_channels": geom.out_channels, "groups": geom.groups,
            "pad_top": geom.padding[0][0], "pad_left": geom.padding[1][0],
            "out_h": geom.out_h, "out_w": geom.out_w, "m": m, "block_tiles": block_tiles,
            "nhwc": geom.layout == "NHWC", "shared": shared}


def winograd_blocking(geom, itemsize, m, tuning):
    """(tiles per block, shared) of plan_winograd for F(m×m, 3×3) before any workspace
    cap."""
    tiles = geom.batch * -(-geom.out_h // m) * -(-geom.out_w // m)
    per_tile = (m + 2) ** 2 * (geom.in_channels + geom.out_channels) * itemsize
    weight_bytes = ((m + 2) ** 2 * geom.out_channels * geom.in_channels // geom.groups
                    * itemsize)
    shared = weight_bytes > tuning.winograd_block_bytes
    budget = tuning.winograd_shared_block_bytes if shared else tuning.winograd_block_bytes
    block = max(1, min(tiles, max(tuning.winograd_min_block_tiles, budget // per_tile)))
    return block, shared


def plan_winograd(request):
    """WINOGRAD: the forward pass when the algorithm chosen is Winograd. A transformed
    weight that fits tuning.winograd_block_bytes (a core's L2) is read by every thread for
    its own blocks, each filling that much with its transformed input and products (at
    least winograd_min_block_tiles tiles); a larger one is read once per block of
    winograd_shared_block_bytes, which the threads work on together. Under a cap, blocks
    shrink to fit it, and a cap below one tile's needs leaves the convolution to GEMM."""
    geom = request.geometry
    if request.pass_ != FORWARD or request.algorithm != WINOGRAD:
        return None
    m = winograd_tile(geom, request.itemsize, request.tuning, request.weight_cached)
    block, shared = winograd_blocking(geom, request.itemsize, m, request.tuning)
    threads = request.num_threads
    transformed = _winograd.transformed_weight_size(_winograd_struct(geom, m, block, shared))
    while True:
        workspace = _winograd.workspace_size(_winograd_struct(geom, m, block, shared),
                                             threads)
        if request.fits(workspace + transformed) or block == 1:
            break
        block = max(1, block // 2)
    if not request.fits(workspace + transformed):
        return None
    return ConvPlan(geom, WINOGRAD, threads, request.tile_rows, request.m_group,
                    request.k_group, 1, 0, workspace, 0, m, block, transformed, shared)


def plan_direct(request):
    """DIRECT: the forward pass where :func:`uses_direct_path` holds and its scratch (per
    thread) and packed weight (NCHW) fit the cap."""
    geom, itemsize = request.geometry, request.itemsize
    if request.pass_ != FORWARD or not uses_direct_path(geom, itemsize, request.tuning):
        return None
    block, panel, k_group = _conv.SMALL_GEMM_COLS, _conv.PANEL_ROWS, request.k_group
    if geom.layout == "NHWC":  # per thread: one packed panel of positions
        direct_size, packed = panel * k_group, 0
    else:  # per thread: gathered or built columns, a zero row as long as an output row plus
        # a block; shared: the packed weight
        direct_size = k_group * max(block, geom.out_w) + block + geom.out_w + block
        packed = _round_up(geom.out_channels, panel) * k_group
    total = packed + request.num_threads * direct_size
    if not request.fits(total):
        return None
    return _plan(request, DIRECT, col_size=direct_size, workspace=total)


def images_per_gemm(request):
    """Images whose positions one NHWC forward GEMM should span: enough for
    batch_positions output positions when an image has fewer than small_image_positions,
    within the batch and tile_bytes of columns (1: image by image, always in NCHW, where
    the grouping measured slower: docs/performance.md#images_per_gemm)."""
    geom, tuning = request.geometry, request.tuning
    positions = geom.out_h * geom.out_w
    if (geom.layout != "NHWC" or geom.batch < 2 or positions == 0
            or positions >= tuning.small_image_positions):
        return 1
    images = min(geom.batch, -(-tuning.batch_positions // positions))
    if request.row_elems:
        images = min(images, tuning.tile_bytes
                     // max(1, geom.out_h * request.row_elems * request.itemsize))
    return max(1, images)


def plan_grouped_images(request):
    """GROUPED_IMAGES: the NHWC forward pass of small images whose output channels split
    into several blocks, when the group's columns fit the cap."""
    if request.pass_ != FORWARD or is_depthwise(request.geometry, request.pass_):
        return None
    m_blocks, m_block = _channel_blocks(request)
    images = images_per_gemm(request)
    if images == 1 or m_blocks == 1:
        return None
    size = images * request.out_h * request.row_elems
    if not request.fits(size):
        return None
    return _plan(request, GROUPED_IMAGES, col_size=size, workspace=size,
                 tile_rows=request.out_h, m_block=m_block, images=images)


def plan_weight_grad_images(request):
    """WEIGHT_GRAD_IMAGES: the backward pass of a convolution of one group, batch > 1, whose
    images have at most tuning.weight_grad_max_positions output positions: the weight
    gradient takes about tuning.batch_positions positions of images at a time (their
    columns, and in NCHW their output gradients, in the `partials` scratch), one product
    per block of column-matrix rows and of output channels (towards tuning.work_items
    blocks of at least 128, 16-aligned: never the thread count); the input gradient keeps
    the row tiling (docs/performance.md#weight-grad-images). None when that is one image at
    a time, or the scratch and the row tiles do not fit the cap."""
    geom, tuning = request.geometry, request.tuning
    positions = geom.out_h * geom.out_w
    if (request.pass_ != BACKWARD or geom.groups != 1 or geom.batch < 2
            or not 0 < positions <= tuning.weight_grad_max_positions
            or is_depthwise(geom, request.pass_)):
        return None
    images = min(geom.batch, -(-tuning.batch_positions // positions))
    if images < 2:
        return None
    if geom.layout == "NCHW":  # columns and output gradients side by side
        scratch = images * positions * (request.k_group + request.m_group)
    else:  # columns one under another (1×1: none), output gradients as they lie
        scratch = 0 if geom.window.is_pointwise else images * positions * request.k_group
    tiles = _row_tiled(request, ROW_TILES)
    if not request.fits(tiles.workspace + scratch):
        return None
    # Blocks of at least 128 column-matrix rows, then of output channels, towards
    # work_items tasks.
    k_blocks = max(1, min(tuning.work_items, request.k_group // 128))
    m_blocks = max(1, min(tuning.work_items // k_blocks, request.m_group // 128))
    return _plan(request, WEIGHT_GRAD_IMAGES, col_size=tiles.col_size,
                 workspace=tiles.workspace, partials=scratch, images=images,
                 k_block=_round_up(-(-request.k_group // k_blocks), 16),
                 m_block=_round_up(-(-request.m_group // m_blocks), 16))


def plan_channel_blocks(request):
    """CHANNEL_BLOCKS: fewer (image, row tile) items than tuning.work_items, and more than
    one block of output channels (or, with an input gradient, of column rows), when one
    image's columns fit the cap."""
    geom, tuning = request.geometry, request.tuning
    items = geom.batch * -(-request.out_h // request.tile_rows)
    if is_depthwise(geom, request.pass_) or items >= tuning.work_items:
        return None
    m_blocks, m_block = _channel_blocks(request)
    wanted = -(-tuning.work_items // geom.groups)
    k_blocks = max(1, min(wanted, request.k_group // tuning.min_channel_block))
    image_columns = request.out_h * request.row_elems
    input_grad = request.pass_ != FORWARD
    if not (m_blocks > 1 or input_grad and k_blocks > 1) or not request.fits(image_columns):
        return None
    return _plan(request, CHANNEL_BLOCKS, col_size=image_columns, workspace=image_columns,
                 tile_rows=request.out_h, m_block=m_block,
                 k_block=_round_up(-(-request.k_group // k_blocks), 16))


def plan_pointwise(request):
    """POINTWISE: a 1×1, stride-1, unpadded convolution, row tiles of GEMMs on the image."""
    if not request.geometry.window.is_pointwise:
        return None
    return _row_tiled(request, POINTWISE)


def plan_row_tiles(request):
    """ROW_TILES: im2col tiles and GEMMs per (image, row tile); serves every geometry."""
    return _row_tiled(request, ROW_TILES)


# The chooser's order: the first strategy that returns a plan runs.
PLANNERS = (plan_depthwise_blocks, plan_depthwise, plan_winograd, plan_direct,
            plan_grouped_images, plan_weight_grad_images, plan_channel_blocks, plan_pointwise,
            plan_row_tiles)


def choose_plan(geom, itemsize, pass_, *, max_workspace_bytes=None, tuning=None,
                fn="conv2d", algorithm=GEMM, weight_cached=False):
    """The plan of the first strategy in PLANNERS that serves this pass; `algorithm` is
    choose_algorithm's answer (GEMM or WINOGRAD); `weight_cached`: for a Conv2D, which
    keeps its transformed weight."""
    request = plan_request(geom, itemsize, pass_, max_workspace_bytes=max_workspace_bytes,
                           tuning=tuning, fn=fn, algorithm=algorithm,
                           weight_cached=weight_cached)
    for planner in PLANNERS:
        plan = planner(request)
        if plan is not None:
            return plan
    raise AssertionError("plan_row_tiles serves every geometry")


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def _empty(dtype):
    return np.empty(0, dtype=dtype)


# ------------------------------------------------------------------ kernels
def winograd_weight(weight, plan, out=None):
    """The transformed weight U of a WINOGRAD plan (into `out` when given)."""
    transformed = _memory.empty(plan.transformed, weight.dtype) if out is None else out
    _winograd.weight_transform(weight.reshape(-1), transformed, plan.winograd_struct(),
                               plan.num_threads)
    return transformed


def same_values(array, snapshot):
    """Whether a C-contiguous array still holds the bytes of `snapshot` (same shape and
    dtype), compared without the GIL and without allocating."""
    return _winograd.same_bytes(array.reshape(-1).view(np.uint8),
                                snapshot.reshape(-1).view(np.uint8))


def run_forward(x4, weight, bias, out4, plan, workspace, transformed=None):
    """out4 = conv2d(x4, weight) + bias by `plan`: x4, weight, out4 C-contiguous and 4-D;
    workspace has at least plan.workspace elements. A WINOGRAD plan uses `transformed`
    (winograd_weight of this weight) when given, else transforms the weight."""
    geom = plan.geometry
    if out4.size == 0:
        return
    if x4.size == 0:  # H or W is 0: all padding, the result is the bias
        out4[...] = 0 if bias is None else (
            bias[:, None, None] if geom.layout == "NCHW" else bias)
        return
    bias = _empty(x4.dtype) if bias is None else bias
    if plan.strategy == WINOGRAD:
        if transformed is None:
            transformed = winograd_weight(
                weight, plan, _memory.scratch("transformed", plan.transformed, weight.dtype))
        with blas_limit(1):  # BLAS runs inside the kernel's OpenMP loops
            _winograd.winograd_forward(x4.reshape(-1), weight.reshape(-1), transformed, bias,
                                       out4.reshape(-1), workspace[:plan.workspace],
                                       plan.winograd_struct(), plan.num_threads)
        return
    if plan.strategy == DEPTHWISE_BLOCKS:
        _depthwise.depthwise_blocks_forward(x4.reshape(-1), weight.reshape(-1), bias,
                                            out4.reshape(-1), workspace[:plan.workspace],
                                            geom.window.kernel_struct(), geom.batch,
                                            geom.out_channels, geom.layout == "NHWC",
                                            plan.num_threads)
        return
    if plan.strategy == DEPTHWISE:
        _depthwise.depthwise_forward(x4.reshape(-1), weight.reshape(-1), bias, out4.reshape(-1),
                                     geom.window.kernel_struct(), geom.batch,
                                     geom.out_channels, geom.layout == "NHWC",
                                     plan.num_threads)
        return
    # BLAS runs inside fastconv's own OpenMP loop: held at one thread (the direct
    # small-GEMM path calls no BLAS, and skips the ~15 µs of setting the limit).
    with contextlib.nullcontext() if plan.strategy == DIRECT else blas_limit(1):
        _conv.conv2d_forward(x4.reshape(-1), weight.reshape(-1), bias, out4.reshape(-1),
                             workspace[:plan.workspace], geom.window.kernel_struct(),
                             plan.kernel_struct(), plan.col_size, plan.num_threads)


@dataclass(frozen=True)
class FlippedConv:
    """The input gradient of a stride-1 convolution as a forward convolution: the output
    gradient, cropped by `crops` ((top, bottom), (left, right)), convolved with the flipped
    weight (flipped_weight) by `plan`."""

    plan: ConvPlan
    crops: tuple


def flipped_geometry(geom):
    """(geometry, crops) of the flipped convolution of a stride-1 convolution: padded by
    dilation·(k − 1) − padding on each side, or, where that is negative, the output
    gradient cropped by as much instead; None when the stride is not 1, the convolution
    is pointwise (its input gradient is one GEMM), cropping leaves nothing, or the image
    has rows or columns that no window reads."""
    if geom.stride != (1, 1) or geom.window.is_pointwise:
        return None
    pads, crops = [], []
    for k, d, (before, after) in zip(geom.kernel_size, geom.dilation, geom.padding):
        full = d * (k - 1)
        pads.append((max(full - before, 0), max(full - after, 0)))
        crops.append((max(before - full, 0), max(after - full, 0)))
    height = geom.out_h - sum(crops[0])
    width = geom.out_w - sum(crops[1])
    for size, (before, after), k, d in zip((height, width), pads, geom.kernel_size,
                                           geom.dilation):
        if size < 1 or size + before + after < d * (k - 1) + 1:
            return None  # nothing left, or an image too small for the window
    shape = ((geom.batch, geom.out_channels, height, width) if geom.layout == "NCHW"
             else (geom.batch, height, width, geom.out_channels))
    flipped = geo.ConvGeometry(shape, geom.in_channels, geom.kernel_size, 1, tuple(pads),
                               geom.dilation, geom.groups, layout=geom.layout)
    if (flipped.out_h, flipped.out_w) != (geom.height, geom.width):
        return None  # conv_transpose2d's output_padding: rows no window reads
    return flipped, tuple(crops)


def input_grad_plan(geom, itemsize, requested=GEMM, weight_cached=False):
    """The FlippedConv that computes the input gradient of `geom`, or None (then GEMM +
    col2im): WINOGRAD where `requested` is "winograd" (the caller checked `geom`) or "auto"
    picks it for the flipped convolution (`weight_cached`: a layer keeps its transformed
    flipped weight); else DIRECT where that path serves it
    (docs/performance.md#input_grad_as_conv), without cropping."""
    found = flipped_geometry(geom)
    if found is None:
        return None
    flipped, crops = found
    algorithm = (WINOGRAD if requested == WINOGRAD
                 else choose_algorithm(flipped, itemsize, requested,
                                       weight_cached=weight_cached, input_grad=True))
    if algorithm == WINOGRAD:
        plan = plan_winograd(plan_request(flipped, itemsize, FORWARD, algorithm=WINOGRAD,
                                          weight_cached=weight_cached))
    elif any(sum(axis) for axis in crops):
        return None
    else:
        plan = plan_direct(plan_request(flipped, itemsize, FORWARD))
    return None if plan is None else FlippedConv(plan, crops)


def input_grad_as_conv(grad_out4, weight, grad_x4, geom, workspace, capped=False,
                       requested=GEMM, transformed=None, flipped=False):
    """Run the input gradient as the flipped convolution of input_grad_plan into grad_x4
    and return True; or False (nothing done) where there is none. Its scratch is
    `workspace` (the backward pass's own) when large enough, else a new array, unless
    `capped` (a workspace cap holds: then False). A WINOGRAD plan uses `transformed` (the
    flipped weight's) when given. `flipped`: input_grad_plan's answer when the caller has
    it (None: there is none)."""
    if flipped is False:
        flipped = input_grad_plan(geom, grad_out4.dtype.itemsize, requested)
    if flipped is None:
        return False
    plan = flipped.plan
    if plan.workspace > workspace.size:
        if capped:
            return False
        workspace = _memory.scratch("flipped_workspace", plan.workspace, grad_out4.dtype)
    (top, bottom), (left, right) = flipped.crops
    if top or bottom or left or right:
        h, w = (2, 3) if geom.layout == "NCHW" else (1, 2)
        index = [slice(None)] * 4
        index[h] = slice(top, grad_out4.shape[h] - bottom)
        index[w] = slice(left, grad_out4.shape[w] - right)
        grad_out4 = np.ascontiguousarray(grad_out4[tuple(index)])
    run_forward(grad_out4, flipped_weight(weight, geom, scratch=True), None, grad_x4, plan,
                workspace, transformed)
    return True


def flipped_weight(weight, geom, scratch=False):
    """The weight of the flipped convolution (see flipped_geometry), C-contiguous: per group
    its input and output channels swapped, both spatial axes reversed (NHWC: in the
    thread's scratch when `scratch`, for a call that does not keep it)."""
    g = geom.groups
    if geom.layout == "NCHW":  # (C_out, C_in/g, kh, kw) → (C_in, C_out/g, kh, kw)
        cout, cin_g, kh, kw = weight.shape
        grouped = weight.reshape(g, cout // g, cin_g, kh, kw).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(grouped.reshape(g * cin_g, cout // g, kh, kw)[:, :, ::-1, ::-1])
    kh, kw, cin_g, cout = weight.shape  # (kh, kw, C_in/g, C_out) → (kh, kw, C_out/g, C_in)
    shape = (kh, kw, cout // g, g * cin_g)
    flipped = (_memory.scratch("flipped_weight", math.prod(shape), weight.dtype).reshape(shape)
               if scratch else _memory.empty(shape, weight.dtype))
    _winograd.flip_hwio(np.ascontiguousarray(weight).reshape(-1), flipped.reshape(-1), kh, kw,
                        g, cin_g, cout // g)
    return flipped


def input_grad_by_conv(plan):
    """Whether run_backward may compute the input gradient of `plan` as a convolution
    (input_grad_as_conv): every strategy but the depthwise kernels, which have their own."""
    return plan.strategy not in (DEPTHWISE, DEPTHWISE_BLOCKS)


def run_backward(grad_out4, x4, weight, grad_x4, grad_weight, plan, workspace, partials,
                 capped=False, algorithm=GEMM, transformed=None, flipped=False):
    """The input gradient into grad_x4 and the weight gradient added into grad_weight by
    `plan` (either may be None: not needed); partials (≥ plan.partials elements) is zeroed
    here. `capped`: the workspace is all the scratch memory allowed. `algorithm`: the
    request ("auto", "gemm", "winograd") for the input gradient's flipped convolution,
    whose transformed weight `transformed` is when given; `flipped`: its input_grad_plan
    when the caller has it."""
    geom = plan.geometry
    if grad_x4 is not None and grad_x4.size and grad_out4.size == 0:
        grad_x4[...] = 0
        grad_x4 = None
    if grad_out4.size == 0 or x4 is not None and x4.size == 0:
        grad_weight = None  # no output or no pixels: nothing to add
    if grad_x4 is not None and grad_x4.size == 0:
        grad_x4 = None
    if grad_x4 is not None and geom.reads_padding:
        input_grad_padded(grad_out4, weight, grad_x4, geom, algorithm)
        grad_x4 = None
    if (grad_x4 is not None and input_grad_by_conv(plan)
            and input_grad_as_conv(grad_out4, weight, grad_x4, geom, workspace, capped,
                                   algorithm, transformed, flipped)):
        grad_x4 = None  # done
    struct = geom.window.kernel_struct()
    if grad_weight is not None:
        acc = partials[:plan.partials]
        if plan.strategy != WEIGHT_GRAD_IMAGES:  # there, scratch the kernel fills
            acc.fill(0)
    if plan.strategy == DEPTHWISE_BLOCKS:
        ws = workspace[:plan.workspace]
        if grad_weight is not None:
            _depthwise.depthwise_blocks_weight_grad(grad_out4.reshape(-1), x4.reshape(-1),
                                                    grad_weight.reshape(-1), ws, struct,
                                                    geom.batch, geom.out_channels,
                                                    geom.layout == "NHWC", plan.num_threads)
        if grad_x4 is not None:
            _depthwise.depthwise_blocks_input_grad(grad_out4.reshape(-1), weight.reshape(-1),
                                                   grad_x4.reshape(-1), ws, struct, geom.batch,
                                                   geom.out_channels, geom.layout == "NHWC",
                                                   plan.num_threads)
        return
    if plan.strategy == DEPTHWISE:
        nhwc = geom.layout == "NHWC"
        if grad_weight is not None:
            _depthwise.depthwise_weight_grad(grad_out4.reshape(-1), x4.reshape(-1),
                                             grad_weight.reshape(-1), acc, struct, geom.batch,
                                             geom.out_channels, nhwc, plan.num_threads)
        if grad_x4 is not None:
            _depthwise.depthwise_input_grad(grad_out4.reshape(-1), weight.reshape(-1),
                                            grad_x4.reshape(-1), struct, geom.batch,
                                            geom.out_channels, nhwc, plan.num_threads)
        return
    with blas_limit(1):  # BLAS runs inside fastconv's own OpenMP loops
        if grad_weight is not None:
            _conv.conv2d_weight_grad(grad_out4.reshape(-1), x4.reshape(-1),
                                     grad_weight.reshape(-1), workspace[:plan.workspace], acc,
                                     struct, plan.kernel_struct(), plan.col_size,
                                     plan.num_threads)
        if grad_x4 is not None:
            _conv.conv2d_input_grad(grad_out4.reshape(-1), weight.reshape(-1),
                                    grad_x4.reshape(-1), workspace[:plan.workspace], struct,
                                    plan.kernel_struct(), plan.col_size, plan.num_threads)


@functools.lru_cache(maxsize=256)
def _padded_plans(geom, itemsize, algorithm, threads, generation):
    """(plan, flipped) of the input gradient of geom.padded_geometry(), for the thread
    count and tuning generation in force (the cache key)."""
    padded = geom.padded_geometry()
    plan = choose_plan(padded, itemsize, INPUT_GRAD)
    flipped = (input_grad_plan(padded, itemsize, algorithm)
               if input_grad_by_conv(plan) else None)
    return plan, flipped


def input_grad_padded(grad_out4, weight, grad_x4, geom, algorithm=GEMM):
    """The input gradient of a convolution with a padding mode (docs/spec.md §6): the input
    gradient of the same convolution on the padded image (unpadded, so every strategy
    serves it), into a scratch the padded image's size, then what each padded coordinate
    received is added onto the pixel it reads (fold_padding)."""
    plan, flipped = _padded_plans(geom, grad_out4.dtype.itemsize, algorithm,
                                  get_num_threads(), _tuning.generation())
    padded = plan.geometry
    shape = (padded.batch, padded.in_channels, padded.height, padded.width)
    if geom.layout == "NHWC":
        shape = (shape[0], shape[2], shape[3], shape[1])
    scratch = _memory.scratch("padded_grad", math.prod(shape), grad_out4.dtype).reshape(shape)
    run_backward(grad_out4, None, weight, scratch, None, plan,
                 _memory.scratch("padded_workspace", plan.workspace, grad_out4.dtype),
                 _empty(grad_out4.dtype), algorithm=algorithm, flipped=flipped)
    fold_padding(scratch, grad_x4, geom.window, geom.layout)


def fold_padding(padded4, image4, window, layout):
    """image4 = the padded image padded4 (C-contiguous, 4-D) folded onto `window`'s image
    through its source tables: each pixel gets what every padded coordinate reading it
    holds (the adjoint of reading the padding through the tables)."""
    rows, cols = window.source_tables
    if layout == "NCHW":
        planes, channels = image4.shape[0] * image4.shape[1], 1
    else:
        planes, channels = image4.shape[0], image4.shape[3]
    if image4.size == 0:
        return
    _im2col.fold_padded(_memory.kernel_view(padded4.reshape(-1)),
                        _memory.kernel_view(image4.reshape(-1)), rows, cols, planes,
                        window.height, window.width, channels, window.padding[1][0],
                        _tuning.threads_for_elements(padded4.size))


def bias_grad(grad_out4, layout, out=None):
    """Σ of a C-contiguous 4-D output gradient over batch and positions, per channel, in a
    fixed order (so independent of the thread count); added into `out` when given."""
    nhwc = layout == "NHWC"
    n = grad_out4.shape[0]
    channels = grad_out4.shape[3] if nhwc else grad_out4.shape[1]
    result = _memory.empty(channels, grad_out4.dtype)
    if grad_out4.size == 0:
        result.fill(0)
    else:
        partials = _memory.empty(_conv.BIAS_ROW_BLOCKS * channels if nhwc else 0,
                                 grad_out4.dtype)
        _conv.bias_grad(grad_out4.reshape(-1), result, partials, n, channels,
                        grad_out4.size // (n * channels), nhwc,
                        _tuning.threads_for_elements(grad_out4.size))
    if out is None:
        return result
    out += result
    return out
