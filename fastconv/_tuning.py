"""The measured numbers that steer how work is cut and when threads wake, in one place.

Each field keeps one line of reason; the measurements behind it are in
docs/performance.md (the anchor named at the field). Planning reads the active
:class:`Tuning`; tests that need another one say so with :func:`tuned` or pass a Tuning to
a planning function, instead of patching module constants.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os

from fastconv import cpu
from fastconv.threads import get_num_threads

__all__ = ["Tuning", "DEFAULT", "DERIVED", "active", "tuned", "threads_for_flops",
           "threads_for_elements"]


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Tuning constants of the convolution planner and the data-movement kernels."""

    # Bytes of one thread's column tile: cache-sized, and wide enough that each GEMM packs
    # its weight once for many positions (docs/performance.md#tile_bytes).
    tile_bytes: int = 4 << 20
    # Work items to aim for when the batch alone has too few images. Never derived from the
    # thread count in use: tiles change GEMM shapes, so the last bits of results
    # (docs/performance.md#work_items).
    work_items: int = max(8, 2 * (os.cpu_count() or 1))
    # Fewest output positions in a tile cut for parallelism: narrower GEMMs run slowly
    # (docs/performance.md#min_tile_positions).
    min_tile_positions: int = 256
    # Output positions one NHWC forward GEMM aims at when images are small, so OpenBLAS
    # packs the weight once per group of images (docs/performance.md#batch_positions).
    batch_positions: int = 512
    # Images with fewer output positions than this are grouped (NHWC forward;
    # docs/performance.md#small_image_positions).
    small_image_positions: int = 128
    # NCHW weight gradients of images with at most this many output positions take several
    # images' columns per product (about batch_positions positions)
    # (docs/performance.md#weight-grad-images).
    weight_grad_max_positions: int = 64
    # Below this many floating-point operations a convolution runs on one thread: waking
    # the OpenMP team costs more than it saves (docs/performance.md#parallel_min_flops).
    parallel_min_flops: int = 1 << 21
    # Fewest output channels per GEMM when one image's channels are split between threads
    # (docs/performance.md#min_channel_block).
    min_channel_block: int = 128
    # ... but a convolution that is one work item splits fewer than 2 · min_channel_block
    # channels in two blocks of at least this many rather than run on one thread
    # (docs/performance.md#min_split_channel_block).
    min_split_channel_block: int = 32
    # The direct small-GEMM forward path re-reads the packed weight for every block of
    # positions: it wins while the weight stays in L2
    # (docs/performance.md#direct_max_weight_bytes).
    direct_max_weight_bytes: int = 256 << 10
    # Widest output of the direct path (docs/performance.md#direct_max_channels).
    direct_max_channels: int = 256
    # Shallowest NCHW direct path (C_in·kh·kw) for outputs wider than one block: below it
    # (the stems) im2col and the own GEMM are faster (docs/performance.md#direct_min_depth).
    direct_min_depth: int = 32
    # Below this many elements written, a data-movement kernel (im2col, col2im,
    # space_to_batch, R-MAC pooling) runs on one thread
    # (docs/performance.md#parallel_min_elements).
    parallel_min_elements: int = 1 << 15
    # A depthwise convolution runs by channel blocks when its kernel has more taps than
    # this (either layout); in NCHW also with a stride, or while one thread's channels-last
    # tiles fit this CPU's L2 (docs/performance.md#depthwise-channel-blocks).
    depthwise_row_max_taps: int = 9
    depthwise_block_bytes: int = cpu.l2_cache_bytes()
    # Winograd: bytes of one block's transformed input and products, sized to this CPU's
    # L2 so a thread's block stays in its cache (docs/performance.md#winograd_block_bytes).
    winograd_block_bytes: int = cpu.l2_cache_bytes()
    # Fewest tiles in a Winograd block: thinner GEMMs run slowly
    # (docs/performance.md#winograd_min_block_tiles).
    winograd_min_block_tiles: int = 32
    # Transformed weights larger than winograd_block_bytes are shared by the threads block
    # by block, each block as large as this (half the L3 cache), so each transformed weight
    # is read once per block of many tiles (docs/performance.md#winograd_shared_block_bytes).
    # The L3 counted is this process's share (cpu.l3_share_bytes; docs/performance.md#l3-share).
    winograd_shared_block_bytes: int = cpu.l3_share_bytes() // 2
    # The output tiles m of F(m×m, 3×3) a layer may run: the one estimated fastest
    # (docs/performance.md#winograd_tile).
    winograd_tiles: tuple = (2, 4)
    # "auto"'s Winograd rule (docs/performance.md#winograd_pays): costs in multiply-adds of
    # the im2col GEMM. Per transformed input or output element (both tile transforms) of
    # F(2×2) and F(4×4)...
    winograd_f2_transform_cost: float = 8.0
    winograd_f4_transform_cost: float = 24.0
    # ... per element of an NCHW image transposed to channels-last and back ...
    winograd_layout_cost: float = 20.0
    # ... per element of the transformed weight, made on each functional call (one as large
    # as winograd_large_weight_bytes, the L3 cache, or more, or for an input gradient, whose
    # flipped weight is made first, as winograd_shared_block_bytes: winograd_large_weight_cost,
    # it goes out to memory and comes back for the GEMMs) ...
    winograd_weight_cost: float = 20.0
    winograd_large_weight_cost: float = 30.0
    winograd_large_weight_bytes: int = cpu.l3_share_bytes()
    # ... and the Winograd-domain GEMMs of a block of b tiles run at b / (b + this) of the
    # im2col GEMM's speed.
    winograd_gemm_half_tiles: int = 16
    # Fewest channels per group on either side: the transforms run 64 bytes of channels
    # at a time, and below this their cost is not repaid.
    winograd_min_channels: int = 32
    # "auto" takes Winograd when it is estimated this many times faster than GEMM.
    winograd_min_speedup: float = 1.2
    # ... and for an input gradient (the flipped convolution), this many: the same since
    # its scratch is reused (a fresh workspace per call had cost page faults;
    # docs/performance.md#winograd_pays).
    winograd_input_grad_min_speedup: float = 1.2


# The fields DEFAULT derives from the machine at import, and from what (`python -m
# fastconv info` prints them); the others are constants measured on the project's machines.
DERIVED = {
    "work_items": "max(8, 2 × os.cpu_count())",
    "depthwise_block_bytes": "L2 per core",
    "winograd_block_bytes": "L2 per core",
    "winograd_shared_block_bytes": "L3 share / 2",
    "winograd_large_weight_bytes": "L3 share",
}

DEFAULT = Tuning()
_active = DEFAULT
_generations = itertools.count(1)
_generation = 0  # changes whenever _active does: plans cached under one stay with it


def generation():
    """A number that differs for every Tuning made active (fastconv._plan_cache keys)."""
    return _generation


def active():
    """The Tuning that planning uses now (DEFAULT unless inside :func:`tuned`)."""
    return _active


@contextlib.contextmanager
def tuned(tuning=None, **changes):
    """Within the block, plan with `tuning` (default: the active one) with `changes` made,
    e.g. ``with tuned(parallel_min_flops=0):``. Process-wide (every thread plans with it):
    meant for tests and experiments, not for use while other threads run convolutions."""
    global _active, _generation
    previous, previous_generation = _active, _generation
    _active = dataclasses.replace(tuning or previous, **changes)
    _generation = next(_generations)
    try:
        yield _active
    finally:
        _active, _generation = previous, previous_generation


def threads_for_flops(flops, tuning=None):
    """The thread count for a convolution of `flops` operations: one below
    parallel_min_flops, else fastconv's thread setting."""
    tuning = tuning or _active
    return get_num_threads() if flops >= tuning.parallel_min_flops else 1


def threads_for_elements(elements, tuning=None):
    """The thread count for a data-movement kernel writing `elements` values."""
    tuning = tuning or _active
    return get_num_threads() if elements >= tuning.parallel_min_elements else 1
