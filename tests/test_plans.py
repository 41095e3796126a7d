"""Plans and geometry as values: which strategy the chooser picks, and that neither a plan
nor a geometry can change once made (fastconv._engine, fastconv.geometry)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fastconv
from fastconv import _engine, _tuning
from fastconv import geometry as geo

E = _engine
DEFAULT = _tuning.DEFAULT
SMALL_GEMM = bool(_engine._conv.SMALL_GEMM)

# (input shape, C_out, kernel, stride, padding, groups, layout, dtype, pass, strategy) with
# the default tuning and two threads.
CHOICES = [
    ((8, 112, 112, 32), 32, 3, 2, 1, 32, "NHWC", np.float32, E.BACKWARD, E.DEPTHWISE),
    ((8, 576, 14, 14), 576, 3, 1, 1, 576, "NCHW", np.float32, E.FORWARD, E.DEPTHWISE_BLOCKS),
    ((1, 96, 112, 112), 96, 3, 2, 1, 96, "NCHW", np.float32, E.BACKWARD, E.DEPTHWISE_BLOCKS),
    ((2, 960, 7, 7), 960, 5, 1, 2, 960, "NCHW", np.float64, E.INPUT_GRAD, E.DEPTHWISE_BLOCKS),
    ((1, 64, 56, 56), 64, 3, 1, 1, 1, "NCHW", np.float32, E.FORWARD,
     E.DIRECT if SMALL_GEMM else E.ROW_TILES),
    ((1, 64, 56, 56), 64, 3, 1, 1, 1, "NCHW", np.float64, E.FORWARD, E.ROW_TILES),
    ((1, 64, 56, 56), 64, 3, 1, 1, 1, "NCHW", np.float32, E.BACKWARD, E.ROW_TILES),
    ((8, 7, 7, 512), 512, 3, 1, 1, 1, "NHWC", np.float32, E.FORWARD, E.GROUPED_IMAGES),
    ((1, 512, 7, 7), 512, 3, 1, 1, 1, "NCHW", np.float32, E.FORWARD, E.CHANNEL_BLOCKS),
    ((8, 512, 7, 7), 512, 3, 1, 1, 1, "NCHW", np.float32, E.FORWARD, E.ROW_TILES),
    ((8, 512, 7, 7), 512, 3, 1, 1, 1, "NCHW", np.float32, E.BACKWARD, E.WEIGHT_GRAD_IMAGES),
    ((1, 256, 14, 14), 256, 3, 1, 1, 1, "NCHW", np.float32, E.INPUT_GRAD, E.CHANNEL_BLOCKS),
    ((8, 64, 56, 56), 256, 1, 1, 0, 1, "NCHW", np.float32, E.FORWARD, E.POINTWISE),
    ((8, 256, 56, 56), 128, 1, 2, 0, 1, "NCHW", np.float32, E.FORWARD, E.ROW_TILES),
]


@pytest.mark.parametrize("case", CHOICES, ids=lambda case: f"{case[-1]}-{case[-2]}")
def test_chooser_picks_the_strategy(case):
    shape, c_out, k, stride, padding, groups, layout, dtype, pass_, strategy = case
    geom = fastconv.ConvGeometry(shape, c_out, k, stride, padding, groups=groups,
                                 layout=layout)
    with fastconv.threads(2):
        plan = _engine.choose_plan(geom, np.dtype(dtype).itemsize, pass_, tuning=DEFAULT)
    assert plan.strategy == strategy
    assert plan.geometry is geom
    assert plan.num_threads == 2


def test_nchw_depthwise_runs_by_channel_blocks_while_their_tiles_fit_the_cache():
    """DEPTHWISE_BLOCKS at stride 1 while one thread's block workspace fits
    depthwise_block_bytes, with a stride always; never NHWC; under a workspace cap, fewer
    threads, and DEPTHWISE (no workspace) below one thread's tiles."""
    def plan(shape, stride=1, layout="NCHW", cap=None, **tuning):
        geom = fastconv.ConvGeometry(shape, 32, 3, stride, 1, groups=32, layout=layout)
        with fastconv.threads(2):
            return _engine.choose_plan(geom, 4, E.FORWARD, max_workspace_bytes=cap,
                                       tuning=dataclasses.replace(DEFAULT, **tuning))

    per_thread = plan((1, 32, 112, 112), depthwise_block_bytes=1 << 40).col_size * 4
    assert per_thread > 0
    assert plan((1, 32, 112, 112), depthwise_block_bytes=per_thread - 4).strategy == (
        E.DEPTHWISE)
    fits = plan((1, 32, 112, 112), depthwise_block_bytes=per_thread)
    assert (fits.strategy, fits.num_threads, fits.workspace) == (E.DEPTHWISE_BLOCKS, 2,
                                                                  2 * fits.col_size)
    assert plan((1, 32, 112, 112), 2, depthwise_block_bytes=0).strategy == E.DEPTHWISE_BLOCKS
    assert plan((1, 112, 112, 32), 2, "NHWC").strategy == E.DEPTHWISE
    assert plan((1, 112, 112, 32), layout="NHWC").strategy == E.DEPTHWISE
    small = plan((1, 32, 14, 14))
    capped = plan((1, 32, 14, 14), cap=small.col_size * 4)
    assert (capped.strategy, capped.num_threads) == (E.DEPTHWISE_BLOCKS, 1)
    assert plan((1, 32, 14, 14), cap=small.col_size * 4 - 1).strategy == E.DEPTHWISE


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_depthwise_kernels_beyond_3x3_run_by_channel_blocks(layout):
    """More taps than depthwise_row_max_taps (9): channel blocks in either layout, whatever
    the plane size; 3×3 and narrower kernels keep the NHWC row loops."""
    def strategy(kernel, size=112):
        shape = (1, 32, size, size) if layout == "NCHW" else (1, size, size, 32)
        geom = fastconv.ConvGeometry(shape, 32, kernel, 1, "same", groups=32, layout=layout)
        return _engine.choose_plan(geom, 4, E.FORWARD,
                                   tuning=dataclasses.replace(DEFAULT,
                                                              depthwise_block_bytes=0)).strategy
    assert strategy(5) == strategy((7, 7)) == strategy((2, 5)) == E.DEPTHWISE_BLOCKS
    assert strategy(3) == strategy((1, 7)) == strategy((3, 2)) == E.DEPTHWISE


def test_one_work_item_splits_its_channels_in_two():
    """A convolution that is one work item (one image, one row tile) with fewer than
    2 · min_channel_block output channels runs as two channel blocks of at least
    min_split_channel_block (not on one thread); more items, or too few channels, do not;
    block counts are powers of two."""
    def plan(shape, c_out, k=1):
        geom = fastconv.ConvGeometry(shape, c_out, k, padding=k // 2)
        return _engine.choose_plan(geom, 4, E.FORWARD, tuning=DEFAULT)

    alone = plan((1, 576, 14, 14), 96)
    assert (alone.strategy, alone.m_block) == (E.CHANNEL_BLOCKS, 48)
    assert plan((1, 576, 14, 14), 48).strategy == E.POINTWISE      # 48 < 2 · 32
    assert plan((2, 576, 14, 14), 96).strategy == E.POINTWISE      # two items already
    assert plan((1, 64, 14, 14), 384).m_block == 192               # 3 blocks → 2
    assert plan((1, 160, 7, 7), 960).m_block == 240                # 7 blocks → 4


def test_every_strategy_has_a_planner_and_row_tiles_serve_last():
    strategies = {E.DEPTHWISE_BLOCKS, E.DEPTHWISE, E.WINOGRAD, E.DIRECT, E.GROUPED_IMAGES,
                  E.WEIGHT_GRAD_IMAGES, E.CHANNEL_BLOCKS, E.POINTWISE, E.ROW_TILES}
    assert {planner.__name__.removeprefix("plan_") for planner in E.PLANNERS} == strategies
    assert E.PLANNERS[-1] is E.plan_row_tiles
    geom = fastconv.ConvGeometry((2, 3, 9, 9), 4, 3, 2, 1)
    request = E.plan_request(geom, 8, E.BACKWARD)
    assert E.plan_row_tiles(request).strategy == E.ROW_TILES


def test_a_strategy_that_does_not_apply_returns_none():
    geom = fastconv.ConvGeometry((2, 3, 9, 9), 4, 3, padding=1)
    request = E.plan_request(geom, 8, E.FORWARD)
    assert E.plan_depthwise(request) is None
    assert E.plan_depthwise_blocks(request) is None
    assert E.plan_direct(request) is None          # float64
    assert E.plan_pointwise(request) is None
    assert E.plan_grouped_images(request) is None  # NCHW
    assert E.plan_weight_grad_images(request) is None  # forward


def test_plans_and_requests_are_immutable():
    geom = fastconv.ConvGeometry((2, 3, 9, 9), 4, 3, padding=1)
    plan = _engine.choose_plan(geom, 4, E.FORWARD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.tile_rows = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        E.plan_request(geom, 4, E.FORWARD).num_threads = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.tile_bytes = 1


def test_geometry_is_immutable():
    geom = fastconv.ConvGeometry((2, 3, 9, 9), 4, 3, padding=1)
    for name, value in [("out_h", 3), ("window", None), ("layout", "NHWC"), ("new", 1)]:
        with pytest.raises(AttributeError, match="ConvGeometry is immutable"):
            setattr(geom, name, value)
    assert (geom.out_h, geom.out_w, geom.layout) == (9, 9, "NCHW")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_transposed_geometry_is_the_conv2d_it_inverts(layout):
    """conv_transpose2d's geometry: the conv2d from the (N, C_out, OH, OW) result to the
    input, its window mapping OH×OW onto H×W, with output_padding rows no output reads."""
    x = np.zeros((2, 5, 4, 6) if layout == "NCHW" else (2, 4, 6, 5), np.float32)
    w = np.zeros((5, 3, 3, 2) if layout == "NCHW" else (3, 2, 3, 5), np.float32)
    geom = geo.transposed_conv_geometry("conv_transpose2d", x, w, 2, ((1, 0), (0, 1)), 1, 1,
                                        (1, 2), layout, x.shape)
    # OH = (4 − 1)·2 − 1 + 1·2 + 1 + 1 = 9, OW = (6 − 1)·2 − 1 + 2·1 + 1 + 1 = 13
    image = (2, 3, 9, 13) if layout == "NCHW" else (2, 9, 13, 3)
    assert geom.input_shape == image
    assert (geom.in_channels, geom.out_channels) == (3, 5)
    assert (geom.out_h, geom.out_w) == (4, 6)
    assert geom.window.out_h == 4 and geom.window.height == 9
    forward = fastconv.ConvGeometry(image, 5, (3, 2), 2, ((1, 0), (0, 1)), (1, 2),
                                    layout=layout)
    assert forward.window == geom.window
    # output_padding from a dilation: the 1×1 window's outputs are fewer than its pixels
    x1 = np.zeros((1, 2, 2, 3), np.float32)
    w1 = np.zeros((2, 1, 1, 1), np.float32)
    dilated = geo.transposed_conv_geometry("conv_transpose2d", x1, w1, 1, 0, (1, 0), 1,
                                           (2, 1), "NCHW", x1.shape)
    assert dilated.input_shape == (1, 1, 3, 3) and (dilated.out_h, dilated.out_w) == (2, 3)
    assert not dilated.window.is_pointwise


def test_tuned_changes_the_active_tuning_and_restores_it():
    before = _tuning.active()
    with _tuning.tuned(tile_bytes=1) as inside:
        assert _tuning.active() is inside and inside.tile_bytes == 1
        assert inside.parallel_min_flops == before.parallel_min_flops
    assert _tuning.active() is before


def test_tuning_reaches_the_plan_it_is_given():
    geom = fastconv.ConvGeometry((2, 3, 20, 20), 4, 3, padding=1)
    tiny = dataclasses.replace(_tuning.active(), tile_bytes=1)
    with fastconv.threads(1):
        assert E.choose_plan(geom, 4, E.BACKWARD, tuning=tiny).tile_rows == 1
        assert E.choose_plan(geom, 4, E.BACKWARD).tile_rows > 1
