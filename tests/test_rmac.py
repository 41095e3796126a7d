"""R-MAC (docs/spec.md §4): rmac_regions against pinned Caffe2 region sets and a float32
re-derivation, roi_max_pool against NumPy slicing, rmac against a plain NumPy rendering of
cirtorch's algorithm (and against torch renderings of it)."""
import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

from conftest import to_nhwc

rmac_module = importlib.import_module("fastconv.rmac")

FLOATS = [np.float32, np.float64]


def boxes_of(rois):
    """The (x1, y1, x2, y2) integer tuples of a (R, 5) rois array."""
    return [tuple(int(v) for v in row[1:]) for row in rois]


def tolerance(dtype):
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


def rmac_over_boxes(x, boxes, eps=1e-6):
    """l2n(Σ l2n(max over box)) for a batched NCHW x over the given boxes."""
    def l2n(v):
        return v / (np.sqrt((v * v).sum(axis=-1, keepdims=True)) + eps)
    total = sum(l2n(x[:, :, y1:y2 + 1, x1:x2 + 1].max(axis=(2, 3))) for x1, y1, x2, y2 in boxes)
    return l2n(total)


# --------------------------------------------------------------------------- rmac_regions

PINNED_7x7 = [
    (0, 0, 6, 6),
    (0, 0, 3, 3), (0, 3, 3, 6), (3, 0, 6, 3), (3, 3, 6, 6),
    (0, 0, 2, 2), (0, 2, 2, 4), (0, 4, 2, 6), (2, 0, 4, 2), (2, 2, 4, 4), (2, 4, 4, 6),
    (4, 0, 6, 2), (4, 2, 6, 4), (4, 4, 6, 6),
]

# The 9×5 example: the list comes out with H = 9 rows and W = 5 columns, so the
# long side is H and the extra region (step 1) runs along y.
PINNED_9x5 = [(0, 0, 4, 4), (0, 4, 4, 8), (0, 0, 2, 2), (0, 3, 2, 5), (0, 6, 2, 8),
              (2, 0, 4, 2), (2, 3, 4, 5), (2, 6, 4, 8)]

# 1×10 (H = 1): m = 1, step 6 (b = 1.5 is nearest the overlap), so one level of 7 single
# pixels at int(1.5·i); level 2 has side 2//3 = 0 and ends the loop.
PINNED_1x10 = [(x, 0, x, 0) for x in (0, 1, 3, 4, 6, 7, 9)]

# 2×2: side 2 (whole map), then side 1 at 2×2 starts {0, 1}, then side 1 at 3×3 starts
# int(0.5·k) = {0, 0, 1}; x outer.
PINNED_2x2 = [
    (0, 0, 1, 1),
    (0, 0, 0, 0), (0, 1, 0, 1), (1, 0, 1, 0), (1, 1, 1, 1),
    (0, 0, 0, 0), (0, 0, 0, 0), (0, 1, 0, 1), (0, 0, 0, 0), (0, 0, 0, 0), (0, 1, 0, 1),
    (1, 0, 1, 0), (1, 0, 1, 0), (1, 1, 1, 1),
]


@pytest.mark.parametrize("shape, scales, expected", [
    ((7, 7), 3, PINNED_7x7),
    ((9, 5), 2, PINNED_9x5),
    ((1, 10), 3, PINNED_1x10),
    ((2, 2), 3, PINNED_2x2),
])
def test_regions_pinned(shape, scales, expected):
    rois = fastconv.rmac_regions(shape, scales)
    assert rois.dtype == np.float32 and rois.shape == (len(expected), 5)
    assert boxes_of(rois) == expected
    assert (rois[:, 0] == 0).all()


def test_regions_7x7_count_and_first():
    rois = fastconv.rmac_regions((7, 7), 3)
    assert len(rois) == 14
    assert boxes_of(rois)[0] == (0, 0, 6, 6)


def test_regions_transposed_map_swaps_axes():
    # 10×1 is 1×10 with x and y exchanged (the extra regions now run along H).
    assert boxes_of(fastconv.rmac_regions((10, 1))) == [(y1, x1, y2, x2) for x1, y1, x2, y2
                                                        in PINNED_1x10]


def test_regions_float32_rounding_12x70():
    # Level 2: side 8, 8 starts along W with b = float32(62/7); 7·b rounds to 61.999996 in
    # float32, so Caffe2's int() gives 61 where exact arithmetic gives 62.
    last = boxes_of(fastconv.rmac_regions((12, 70), 2))[-1]
    assert last == (61, 4, 68, 11)
    assert int(7 * (62 / 7)) == 62  # double arithmetic would say 62


def test_regions_first_minimum_wins_at_a_float32_tie():
    # 9×33: 4 and 5 extra regions give bit-identical float32 overlap errors; the first wins,
    # so level 1 has 1 + 4 regions.
    errors = [abs((np.float32(81) - np.float32(9) * np.float32(24 / s)) / np.float32(81)
                  - np.float32(0.4)) for s in (4, 5)]
    assert errors[0] == errors[1]
    assert len(fastconv.rmac_regions((9, 33), 1)) == 5


def test_regions_match_float32_rederivation_on_grid():
    # reference.rmac_regions follows Caffe2's loops one float32 scalar at a time; levels come
    # in order, so the 4-scale list holds the 1..3-scale lists as prefixes.
    for height in range(1, 41):
        for width in range(1, 41):
            expected = reference.rmac_regions(height, width, 4)
            for scales in (1, 2, 3, 4):
                got = boxes_of(fastconv.rmac_regions((height, width), scales))
                assert got == expected[:len(got)], (height, width, scales)
            assert len(got) == len(expected)


def test_regions_other_overlap_changes_step():
    # 30×40: overlap 1 − b/30 with b = 10/step: 0.4 wants step 1 (0.67 is nearest), 0.9
    # wants b = 3, so step 3 (0.889) beats step 4 (0.917).
    assert rmac_module._long_side_extra(30, 40, 0.4) == reference.rmac_step(30, 40, 0.4) == 1
    assert rmac_module._long_side_extra(30, 40, 0.9) == reference.rmac_step(30, 40, 0.9) == 3
    rois = fastconv.rmac_regions((30, 40), 2, overlap=0.9)
    assert boxes_of(rois) == reference.rmac_regions(30, 40, 2, 0.9)
    assert len(rois) == 1 * (1 + 3) + 2 * (2 + 3)


def test_regions_batch_repeats_with_batch_index():
    one = fastconv.rmac_regions((5, 3, 7, 9)[1:])
    rois = fastconv.rmac_regions((3, 5, 7, 9))
    assert rois.shape == (3 * len(one), 5)
    for n in range(3):
        block = rois[n * len(one):(n + 1) * len(one)]
        assert (block[:, 0] == n).all()
        np.testing.assert_array_equal(block[:, 1:], one[:, 1:])


@pytest.mark.parametrize("layout", ["NCHW", "nhwc"])
def test_regions_from_array_and_shapes_agree(rng, layout):
    x = rng.standard_normal((2, 3, 8, 11))
    if layout == "nhwc":
        x = to_nhwc(x)
    from_array = fastconv.rmac_regions(x, layout=layout)
    np.testing.assert_array_equal(from_array, fastconv.rmac_regions(x.shape, layout=layout))
    np.testing.assert_array_equal(from_array, fastconv.rmac_regions(list(x.shape),
                                                                    layout=layout))
    single = fastconv.rmac_regions(x[0], layout=layout)
    np.testing.assert_array_equal(single, fastconv.rmac_regions((8, 11)))
    np.testing.assert_array_equal(from_array[:len(single)], single)


@pytest.mark.parametrize("shape", [(0, 3, 7, 7), (2, 0, 7, 7), (2, 3, 0, 7), (2, 3, 7, 0),
                                   (0, 7), (7, 0), (3, 0, 4)])
def test_regions_empty_input(shape):
    rois = fastconv.rmac_regions(shape)
    assert rois.shape == (0, 5) and rois.dtype == np.float32


def test_regions_absurd_request_fails_cleanly():
    with pytest.raises((MemoryError, ValueError)):
        fastconv.rmac_regions((10**6, 10**6), scales=10**9)


@pytest.mark.parametrize("kwargs, match", [
    ({"scales": 0}, "scales must be >= 1, got 0"),
    ({"scales": -2}, "scales must be >= 1"),
    ({"scales": 1.5}, "scales must be an int >= 1, got 1.5"),
    ({"scales": True}, "scales must be an int >= 1, got True"),
    ({"overlap": 0}, r"overlap must be a number with 0 < overlap < 1, got 0"),
    ({"overlap": 1.0}, r"0 < overlap < 1, got 1.0"),
    ({"overlap": -0.1}, r"0 < overlap < 1, got -0.1"),
    ({"overlap": float("nan")}, r"0 < overlap < 1, got nan"),
    ({"overlap": "0.4"}, r"0 < overlap < 1, got '0.4'"),
    ({"layout": "NWHC"}, "layout must be one of 'NCHW', 'NHWC'"),
])
def test_regions_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastconv.rmac_regions((7, 7), **kwargs)


@pytest.mark.parametrize("shape, match", [
    ((7,), r"shape must have 2 or 3 or 4 dimensions, got \(7,\)"),
    ((1, 2, 3, 4, 5), "shape must have 2 or 3 or 4 dimensions"),
    ((7, -1), r"shape must not have negative sizes, got \(7, -1\)"),
    ((7, 7.5), r"shape must be a tuple of ints, got \(7, 7.5\)"),
    (7, "shape must be a tuple of ints, got 7"),
    (np.zeros(5), r"x.shape must have 2 or 3 or 4 dimensions, got \(5,\)"),
])
def test_regions_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        fastconv.rmac_regions(shape)


# --------------------------------------------------------------------------- roi_max_pool

def random_rois(rng, count, batch, height, width):
    x1 = rng.integers(0, width, count)
    y1 = rng.integers(0, height, count)
    x2 = x1 + rng.integers(0, width - x1)
    y2 = y1 + rng.integers(0, height - y1)
    return np.stack([rng.integers(0, batch, count), x1, y1, x2, y2], axis=1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("channels", [1, 3, 17, 40])
def test_roi_max_pool_matches_slicing(rng, dtype, layout, channels):
    x = rng.standard_normal((3, channels, 9, 13)).astype(dtype)
    rois = random_rois(rng, 25, 3, 9, 13).astype(np.float32)
    expected = reference.roi_max_pool(x, rois)
    data = to_nhwc(x) if layout == "NHWC" else x
    pooled = fastconv.roi_max_pool(data, rois, layout=layout)
    assert pooled.dtype == dtype and pooled.shape == (25, channels)
    np.testing.assert_array_equal(pooled, expected)


def test_roi_max_pool_many_channels_many_blocks(rng):
    x = rng.standard_normal((2, 300, 6, 7)).astype(np.float32)
    rois = random_rois(rng, 3, 2, 6, 7)
    expected = reference.roi_max_pool(x, rois)
    np.testing.assert_array_equal(fastconv.roi_max_pool(to_nhwc(x), rois, layout="NHWC"),
                                  expected)
    np.testing.assert_array_equal(fastconv.roi_max_pool(x, rois), expected)


def test_roi_max_pool_nhwc_one_channel_last_block(rng):
    # 17 channels shared by 2 threads: blocks of 16 and 1, the 1-channel block's pixels
    # 17 apart (not adjacent as with a single channel).
    x = rng.standard_normal((1, 17, 48, 48)).astype(np.float32)
    rois = [[0, 0, 0, 47, 47], [0, 3, 5, 40, 9]]
    expected = reference.roi_max_pool(x, rois)
    with fastconv.threads(2):
        np.testing.assert_array_equal(fastconv.roi_max_pool(to_nhwc(x), rois, layout="NHWC"),
                                      expected)


@pytest.mark.parametrize("rois_dtype", [np.int64, np.int32, np.uint8, np.float32, np.float64])
def test_roi_max_pool_rois_dtypes(rng, rois_dtype):
    x = rng.standard_normal((2, 4, 6, 5))
    rois = random_rois(rng, 6, 2, 6, 5)
    np.testing.assert_array_equal(fastconv.roi_max_pool(x, rois.astype(rois_dtype)),
                                  reference.roi_max_pool(x, rois))


def test_roi_max_pool_with_rmac_regions_and_lists(rng):
    x = rng.standard_normal((2, 5, 9, 5)).astype(np.float32)
    rois = fastconv.rmac_regions(x, 2)
    np.testing.assert_array_equal(fastconv.roi_max_pool(x, rois),
                                  reference.roi_max_pool(x, rois))
    np.testing.assert_array_equal(fastconv.roi_max_pool(x, rois.tolist()),
                                  reference.roi_max_pool(x, rois))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_roi_max_pool_single_image(rng, layout):
    x = rng.standard_normal((3, 4, 6))
    rois = [[0, 1, 0, 5, 2], [0, 0, 3, 0, 3]]
    expected = reference.roi_max_pool(x[np.newaxis], rois)
    data = to_nhwc(x) if layout == "NHWC" else x
    np.testing.assert_array_equal(fastconv.roi_max_pool(data, rois, layout=layout), expected)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_roi_max_pool_nan_propagates_like_np_max(rng, layout):
    x = rng.standard_normal((1, 20, 5, 6)).astype(np.float32)
    x[0, 3, 2, 2] = np.nan
    x[0, 4, 0, 0] = -np.inf
    x[0, 5, 4, 5] = np.inf
    rois = [[0, 0, 0, 5, 4], [0, 2, 2, 2, 2], [0, 3, 0, 5, 1], [0, 0, 0, 1, 1]]
    expected = reference.roi_max_pool(x, rois)
    data = to_nhwc(x) if layout == "NHWC" else x
    pooled = fastconv.roi_max_pool(data, rois, layout=layout)
    np.testing.assert_array_equal(pooled, expected)
    assert np.isnan(pooled[:2, 3]).all() and not np.isnan(pooled[2:, 3]).any()
    assert pooled[0, 5] == np.inf


def test_roi_max_pool_nan_at_every_position_of_a_run():
    # The NaN first, in the middle and last of the scanned run: each must stick.
    rois = [[0, 0, 0, 4, 0]]
    for position in range(5):
        x = np.arange(5.0, dtype=np.float32).reshape(1, 1, 1, 5)
        x[0, 0, 0, position] = np.nan
        assert np.isnan(fastconv.roi_max_pool(x, rois)[0, 0])
        assert np.isnan(fastconv.roi_max_pool(x.reshape(1, 1, 5, 1), rois=[[0, 0, 0, 0, 4]])[0, 0])


@pytest.mark.parametrize("make", [
    lambda x: np.asfortranarray(x),
    lambda x: x[:, :, ::-1, ::-1],
    lambda x: x[:, ::2],
    lambda x: x.astype(x.dtype.newbyteorder(">")),
])
def test_roi_max_pool_memory_orders(rng, make):
    base = rng.standard_normal((2, 6, 7, 8)).astype(np.float32)
    view = make(base)
    rois = random_rois(rng, 10, 2, 7, 8)
    expected = reference.roi_max_pool(np.ascontiguousarray(view), rois)
    np.testing.assert_array_equal(fastconv.roi_max_pool(view, rois), expected)


def test_roi_max_pool_read_only_and_untouched(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    x.flags.writeable = False
    copy = x.copy()
    rois = random_rois(rng, 4, 2, 5, 5)
    rois_copy = rois.copy()
    fastconv.roi_max_pool(x, rois)
    np.testing.assert_array_equal(x, copy)
    np.testing.assert_array_equal(rois, rois_copy)


def test_roi_max_pool_empty_cases(rng):
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert fastconv.roi_max_pool(x, np.zeros((0, 5))).shape == (0, 3)
    empty_channels = np.zeros((2, 0, 5, 5), dtype=np.float32)
    assert fastconv.roi_max_pool(empty_channels, [[1, 0, 0, 4, 4]]).shape == (1, 0)
    with pytest.raises(ValueError, match="batch index 0 out of range"):
        fastconv.roi_max_pool(np.zeros((0, 3, 5, 5)), [[0, 0, 0, 1, 1]])


def test_roi_max_pool_thread_count_does_not_change_result(rng):
    x = rng.standard_normal((4, 64, 20, 20)).astype(np.float32)
    rois = random_rois(rng, 40, 4, 20, 20)
    with fastconv.threads(1):
        one = fastconv.roi_max_pool(x, rois)
        one_nhwc = fastconv.roi_max_pool(to_nhwc(x), rois, layout="NHWC")
    with fastconv.threads(2):
        np.testing.assert_array_equal(fastconv.roi_max_pool(x, rois), one)
        np.testing.assert_array_equal(
            fastconv.roi_max_pool(to_nhwc(x), rois, layout="NHWC"), one_nhwc)


@pytest.mark.parametrize("rois, match", [
    (np.zeros(5), r"rois must have shape \(R, 5\), rows \[batch_index, x1, y1, x2, y2\], "
                  r"got shape \(5,\)"),
    (np.zeros((3, 4)), r"rois must have shape \(R, 5\).*got shape \(3, 4\)"),
    (np.zeros((2, 5, 1)), r"got shape \(2, 5, 1\)"),
    ([[0, 0, 0, 1, 1], [0, 1.5, 0, 2, 2]],
     r"rois row 1 = \[0, 1.5, 0, 2, 2\]: batch index and corners must be whole numbers"),
    ([[0, 0, 0, 1, np.nan]], r"rois row 0 = \[0, 0, 0, 1, nan\]: batch index and corners "
                             "must be whole numbers"),
    ([[0, 0, 0, 1, 1], [2, 0, 0, 1, 1]],
     r"rois row 1 = \[2, 0, 0, 1, 1\]: batch index 2 out of range \(the batch of x has 2\)"),
    ([[-1, 0, 0, 1, 1]], r"rois row 0 = \[-1, 0, 0, 1, 1\]: batch index -1 out of range"),
    ([[0, 3, 0, 2, 1]], r"rois row 0 = \[0, 3, 0, 2, 1\]: x2 = 2 < x1 = 3 \(an empty box\)"),
    ([[1, 0, 4, 2, 1]], r"rois row 0 = \[1, 0, 4, 2, 1\]: y2 = 1 < y1 = 4 \(an empty box\)"),
    ([[0, 0, 0, 6, 1]], r"rois row 0 = \[0, 0, 0, 6, 1\]: box outside the 5×6 feature map; "
                        r"expected 0 <= x1 <= x2 < 6 and 0 <= y1 <= y2 < 5"),
    ([[0, 0, 0, 1, 5]], r"rois row 0 = \[0, 0, 0, 1, 5\]: box outside the 5×6 feature map"),
    ([[0, -1, 0, 1, 1]], r"rois row 0 = \[0, -1, 0, 1, 1\]: box outside"),
])
def test_roi_max_pool_bad_rois(rois, match):
    x = np.zeros((2, 3, 5, 6), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        fastconv.roi_max_pool(x, rois)


def test_roi_max_pool_single_image_batch_index_error():
    with pytest.raises(ValueError, match=r"batch index 1 out of range \(x is one image, so 0\)"):
        fastconv.roi_max_pool(np.zeros((3, 5, 6)), [[1, 0, 0, 1, 1]])


def test_roi_max_pool_bad_types_and_shapes():
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="x must be float32 or float64, got dtype int32"):
        fastconv.roi_max_pool(x.astype(np.int32), [[0, 0, 0, 1, 1]])
    with pytest.raises(TypeError, match="rois must be a float or integer array, got dtype bool"):
        fastconv.roi_max_pool(x, np.ones((1, 5), dtype=bool))
    with pytest.raises(TypeError, match="got dtype complex128"):
        fastconv.roi_max_pool(x, np.ones((1, 5), dtype=complex))
    with pytest.raises(ValueError, match=r"expected x of shape \(N, C, H, W\) or \(C, H, W\)"):
        fastconv.roi_max_pool(x[0, 0], [[0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match="layout must be one of"):
        fastconv.roi_max_pool(x, [[0, 0, 0, 1, 1]], layout="CHWN")


# --------------------------------------------------------------------------- rmac

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (3, 4, 30, 40), (1, 6, 12, 70), (2, 3, 1, 1),
                                   (2, 3, 1, 10), (1, 8, 20, 9), (2, 7, 7, 10)])
def test_rmac_matches_numpy_rendering(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    result = fastconv.rmac(x)
    assert result.dtype == dtype and result.shape == shape[:2]
    np.testing.assert_allclose(result, reference.rmac(x), **tolerance(dtype))
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("levels", [1, 2, 4, 6])
@pytest.mark.parametrize("overlap", [0.2, 0.4, 0.75])
def test_rmac_levels_and_overlap(rng, levels, overlap):
    x = rng.standard_normal((2, 5, 11, 23))
    np.testing.assert_allclose(fastconv.rmac(x, levels, overlap),
                               reference.rmac(x, levels, overlap), **tolerance(np.float64))


def test_rmac_uses_cirtorch_regions_not_caffe2s(rng):
    # 12×70 at 2 levels: the last level-2 regions start at x = 62 in cirtorch, 61 in Caffe2.
    x = rng.standard_normal((2, 6, 12, 70))
    x[:, :, :, 69] += 5  # the column only cirtorch's last regions reach
    cirtorch = [(0, 0, 69, 11)] + reference.rmac_cirtorch_regions(12, 70, 2)
    caffe2 = [(0, 0, 69, 11)] + reference.rmac_regions(12, 70, 2)
    assert sorted(cirtorch) != sorted(caffe2)
    result = fastconv.rmac(x, levels=2)
    np.testing.assert_allclose(result, rmac_over_boxes(x, cirtorch), rtol=1e-12)
    assert not np.allclose(result, rmac_over_boxes(x, caffe2), rtol=1e-6)


def test_rmac_global_region_is_included(rng):
    # levels=1 on a square map: the global region and the one level-1 region coincide, so
    # the descriptor is l2n(2·l2n(mac)) = l2n(mac).
    x = rng.standard_normal((3, 4, 6, 6))
    mac = x.max(axis=(2, 3))
    expected = mac / (np.linalg.norm(mac, axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(fastconv.rmac(x, levels=1), expected, rtol=1e-6)
    summed = fastconv.rmac(x, levels=1, normalize=False)
    np.testing.assert_allclose(summed, 2 * mac / (np.linalg.norm(mac, axis=1,
                                                                  keepdims=True) + 1e-6))


@pytest.mark.parametrize("dtype", FLOATS)
def test_rmac_nhwc_equals_nchw(rng, dtype):
    for shape in [(2, 5, 9, 13), (1, 300, 7, 10), (2, 1, 4, 6)]:
        x = rng.standard_normal(shape).astype(dtype)
        np.testing.assert_array_equal(fastconv.rmac(to_nhwc(x), layout="nhwc"), fastconv.rmac(x))


@pytest.mark.parametrize("channels", [17, 33])
def test_rmac_nhwc_uneven_channel_blocks(rng, channels):
    # One image on 2 threads: the channels split into blocks of 16 and a short last one.
    x = rng.standard_normal((1, channels, 45, 47)).astype(np.float32)
    with fastconv.threads(2):
        result = fastconv.rmac(to_nhwc(x), layout="NHWC")
    np.testing.assert_allclose(result, reference.rmac(x), rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(result, fastconv.rmac(x))


def test_rmac_single_image(rng):
    x = rng.standard_normal((5, 8, 9))
    result = fastconv.rmac(x)
    assert result.shape == (5,)
    np.testing.assert_array_equal(result, fastconv.rmac(x[np.newaxis])[0])
    np.testing.assert_array_equal(fastconv.rmac(to_nhwc(x), layout="NHWC"), result)


def test_rmac_normalize_false_returns_the_sum(rng):
    x = rng.standard_normal((2, 6, 10, 14))
    summed = fastconv.rmac(x, normalize=False)
    np.testing.assert_allclose(summed, reference.rmac(x, normalize=False), rtol=1e-12)
    regions = 1 + len(reference.rmac_cirtorch_regions(10, 14, 3))
    assert np.all(np.linalg.norm(summed, axis=1) <= regions)
    assert np.all(np.linalg.norm(summed, axis=1) > 1)
    np.testing.assert_allclose(summed / (np.linalg.norm(summed, axis=1, keepdims=True) + 1e-6),
                               fastconv.rmac(x), rtol=1e-12)


@pytest.mark.parametrize("dtype", FLOATS)
def test_rmac_whitening(rng, dtype):
    x = rng.standard_normal((3, 6, 9, 12)).astype(dtype)
    mean = rng.standard_normal(6).astype(dtype)
    projection = rng.standard_normal((4, 6)).astype(dtype)
    result = fastconv.rmac(x, whiten=(mean, projection))
    assert result.shape == (3, 4) and result.dtype == dtype
    np.testing.assert_allclose(result, reference.rmac(x, whiten=(mean, projection)),
                               **tolerance(dtype))
    # Whitening is applied per region, not to the finished descriptor.
    plain = fastconv.rmac(x)
    after = (plain - mean) @ projection.T
    after /= np.linalg.norm(after, axis=1, keepdims=True)
    assert not np.allclose(result, after, atol=1e-3)


def test_rmac_identity_whitening_is_plain_rmac(rng):
    x = rng.standard_normal((2, 5, 8, 8))
    whiten = (np.zeros(5), np.eye(5))
    # With eps = 0 normalising twice is normalising once (eps would shrink each region by
    # 1/(1 + eps) again).
    np.testing.assert_allclose(fastconv.rmac(x, eps=0, whiten=whiten), fastconv.rmac(x, eps=0),
                               rtol=1e-12)


def test_rmac_eps(rng):
    zeros = np.zeros((2, 3, 5, 5))
    np.testing.assert_array_equal(fastconv.rmac(zeros), 0)
    x = rng.standard_normal((1, 4, 6, 6))
    np.testing.assert_allclose(fastconv.rmac(x, eps=0.5), reference.rmac(x, eps=0.5),
                               rtol=1e-12)
    assert not np.allclose(fastconv.rmac(x, eps=0.5), fastconv.rmac(x), rtol=1e-3)


def test_rmac_nan_propagates(rng):
    x = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    x[1, 2, 3, 3] = np.nan
    result = fastconv.rmac(x)
    assert np.isnan(result[1]).all() and not np.isnan(result[0]).any()
    np.testing.assert_array_equal(fastconv.rmac(to_nhwc(x), layout="NHWC"), result)


def test_rmac_empty_batch_and_channels(rng):
    assert fastconv.rmac(np.zeros((0, 5, 7, 7), np.float32)).shape == (0, 5)
    empty = fastconv.rmac(np.zeros((2, 0, 7, 7)))
    assert empty.shape == (2, 0)
    whitened = fastconv.rmac(np.zeros((2, 0, 7, 7)), whiten=(np.zeros(0), np.zeros((3, 0))))
    np.testing.assert_array_equal(whitened, np.zeros((2, 3)))
    assert fastconv.rmac(np.zeros((0, 7, 7, 5)), layout="NHWC").shape == (0, 5)


@pytest.mark.parametrize("make", [
    lambda x: np.asfortranarray(x),
    lambda x: x[:, :, ::-1, :],
    lambda x: x[:, 1::2],
    lambda x: x.astype(x.dtype.newbyteorder(">")),
])
def test_rmac_memory_orders(rng, make):
    view = make(rng.standard_normal((2, 8, 9, 11)).astype(np.float32))
    np.testing.assert_array_equal(fastconv.rmac(view), fastconv.rmac(np.ascontiguousarray(view)))


def test_rmac_read_only_and_untouched(rng):
    x = rng.standard_normal((2, 3, 6, 7))
    mean, projection = rng.standard_normal(3), rng.standard_normal((3, 3))
    x.flags.writeable = False
    saved = (x.copy(), mean.copy(), projection.copy())
    fastconv.rmac(x, whiten=(mean, projection))
    for array, copy in zip((x, mean, projection), saved):
        np.testing.assert_array_equal(array, copy)


def test_rmac_thread_count_does_not_change_result(rng):
    x = rng.standard_normal((4, 64, 15, 20)).astype(np.float32)
    with fastconv.threads(1):
        one = fastconv.rmac(x)
        one_nhwc = fastconv.rmac(to_nhwc(x), layout="NHWC")
    with fastconv.threads(2):
        np.testing.assert_array_equal(fastconv.rmac(x), one)
        np.testing.assert_array_equal(fastconv.rmac(to_nhwc(x), layout="NHWC"), one_nhwc)


@pytest.mark.parametrize("with_nan", [False, True])
def test_rmac_region_maxima_match_roi_max_pool(rng, with_nan):
    # The kernel's cut-into-segments maxima equal a box-by-box max over the same boxes;
    # NaNs (at a corner, a segment's first row, inside) make exactly their boxes NaN.
    x = rng.standard_normal((2, 20, 13, 31)).astype(np.float32)
    if with_nan:
        x[0, 0, 0, 0] = x[1, 7, 12, 30] = x[0, 19, 6, 0] = x[1, 3, 4, 17] = np.nan
    plan = rmac_module._rmac_plan(13, 31, 4, 0.4)
    for layout, data in (("NCHW", x), ("NHWC", to_nhwc(x))):
        maxima = np.empty((2, plan.count, 20), dtype=np.float32)
        rmac_module._region_maxima_into(data, plan, layout, maxima)
        rois = np.array([[n, *box] for n in range(2) for box in plan.boxes])
        np.testing.assert_array_equal(maxima.reshape(-1, 20), reference.roi_max_pool(x, rois))
        assert np.isnan(maxima[:, :, 0]).any() == with_nan
        assert not np.isnan(maxima[:, :, 0]).all()


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 2), channels=st.integers(1, 5), height=st.integers(1, 14),
       width=st.integers(1, 14), levels=st.integers(1, 4), nhwc=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_rmac_hypothesis(batch, channels, height, width, levels, nhwc, seed):
    x = np.random.default_rng(seed).standard_normal((batch, channels, height, width))
    expected = reference.rmac(x, levels)
    data, layout = (to_nhwc(x), "NHWC") if nhwc else (x, "NCHW")
    # Few channels: region vectors near ±1 cancel in the sum, so absolute error counts.
    np.testing.assert_allclose(fastconv.rmac(data, levels, layout=layout), expected,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"levels": 0}, ValueError, "levels must be >= 1, got 0"),
    ({"levels": 2.0}, ValueError, "levels must be an int >= 1, got 2.0"),
    ({"overlap": 1}, ValueError, r"overlap must be a number with 0 < overlap < 1, got 1"),
    ({"eps": -1e-6}, ValueError, r"eps must be a finite number >= 0, got -1e-06"),
    ({"eps": float("inf")}, ValueError, r"eps must be a finite number >= 0, got inf"),
    ({"normalize": "yes"}, ValueError, "normalize must be True or False, got 'yes'"),
    ({"layout": "NCWH"}, ValueError, "layout must be one of 'NCHW', 'NHWC'"),
    ({"whiten": np.eye(3)}, ValueError, r"whiten must be a pair \(mean, P\) with mean of shape "
                                        r"\(C,\) and P of shape \(D, C\), got ndarray"),
    ({"whiten": (np.zeros(4), np.eye(3))}, ValueError,
     r"whiten mean must have shape \(3,\) for x with 3 channels, got shape \(4,\)"),
    ({"whiten": (np.zeros(3), np.eye(4))}, ValueError,
     r"whiten P must have shape \(D, 3\) for x with 3 channels, got shape \(4, 4\)"),
    ({"whiten": (np.zeros(3), np.zeros(3))}, ValueError,
     r"whiten P must have shape \(D, 3\).*got shape \(3,\)"),
    ({"whiten": (np.zeros(3, np.float32), np.eye(3))}, TypeError,
     "x has dtype float64 but mean has dtype float32"),
    ({"whiten": (np.zeros(3), np.eye(3, dtype=np.float32))}, TypeError,
     "x has dtype float64 but P has dtype float32"),
])
def test_rmac_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastconv.rmac(np.zeros((2, 3, 5, 5)), **kwargs)


@pytest.mark.parametrize("x, error, match", [
    (np.zeros((2, 3, 5, 5), dtype=np.int64), TypeError,
     "x must be float32 or float64, got dtype int64"),
    (np.zeros((2, 3, 5, 5), dtype=np.float16), TypeError, "got dtype float16"),
    (np.zeros((5, 5)), ValueError, r"expected x of shape \(N, C, H, W\) or \(C, H, W\)"),
    (np.zeros((2, 3, 0, 5)), ValueError, r"x has an empty 0×5 feature map \(shape "
                                         r"\(2, 3, 0, 5\)\); R-MAC needs H, W >= 1"),
    (np.zeros((2, 3, 5, 0)), ValueError, "empty 5×0 feature map"),
])
def test_rmac_bad_inputs(x, error, match):
    with pytest.raises(error, match=match):
        fastconv.rmac(x)


def test_rmac_absurd_levels_fail_cleanly():
    x = np.broadcast_to(np.float32(0), (1, 1, 3000, 3000))
    with pytest.raises((MemoryError, ValueError)):
        fastconv.rmac(x, levels=10**9)


# --------------------------------------------------------------------------- cirtorch in torch

def cirtorch_style_rmac(torch, x, levels=3, eps=1e-6):
    """cirtorch's rmac then l2n, rendered here in torch float32 tensor arithmetic: the
    long-side search over 2..7 regions with tensor ops, region starts from float32 tensor
    floors, F.max_pool2d per region."""
    F = torch.nn.functional
    height, width = x.shape[2:]
    short = min(height, width)
    counts = torch.arange(2, 8, dtype=torch.float32)
    spacing = (max(height, width) - short) / (counts - 1)
    error = torch.abs((short ** 2 - short * spacing) / short ** 2 - 0.4)
    extra = int(torch.argmin(error)) + 1
    extra_w = extra if width > height else 0
    extra_h = extra if height > width else 0

    def l2n(v):
        return v / (torch.norm(v, p=2, dim=1, keepdim=True) + eps)

    total = l2n(F.max_pool2d(x, (height, width)))
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        half = math.floor(side / 2 - 1)

        def starts(size, count, side=side, half=half):
            step = 0 if count == 1 else (size - side) / (count - 1)
            return (torch.floor(half + torch.arange(count, dtype=torch.float32) * step)
                    - half).int().tolist()

        for top in starts(height, level + extra_h):
            for left in starts(width, level + extra_w):
                region = x[:, :, top:top + side, left:left + side]
                total = total + l2n(F.max_pool2d(region, (side, side)))
    return l2n(total).squeeze(-1).squeeze(-1)


@pytest.mark.parametrize("shape", [(2, 16, 7, 10), (2, 8, 30, 40), (1, 8, 12, 70),
                                   (2, 4, 13, 13), (1, 4, 25, 9), (1, 3, 1, 6)])
def test_rmac_matches_cirtorch_style_torch(rng, torch, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    expected = cirtorch_style_rmac(torch, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fastconv.rmac(x), expected, rtol=2e-5, atol=2e-6)


def test_rmac_matches_cirtorch_package(rng, torch):
    functional = pytest.importorskip("cirtorch.layers.functional")
    x = rng.standard_normal((2, 8, 30, 40)).astype(np.float32)
    descriptor = functional.l2n(functional.rmac(torch.from_numpy(x), L=3))
    np.testing.assert_allclose(fastconv.rmac(x), descriptor.squeeze(-1).squeeze(-1).numpy(),
                               rtol=2e-5, atol=2e-6)


# --------------------------------------------------------------------------- bench section

def test_bench_rmac_section():
    from fastconv import bench
    config = bench.make_config(batches=[1], ops=["rmac"], repeats=1)
    rows = bench.run(config, progress=False)
    assert [(row.layer, row.batch) for row in rows] == [(fmap.name, 1)
                                                        for fmap in bench.RMAC_MAPS]
    for row in rows:
        assert row.matches_numpy is True
        assert row.extra["fastconv_descriptors_per_s"] == pytest.approx(1 / row.fastconv_s)
        assert row.gbps > 0
    table = bench.format_table(rows, config)
    assert "rmac descriptors/s, vgg16.conv5 batch 1: fastconv" in table
    assert "geometric mean speed-up rmac" in table


def test_bench_rmac_baselines_agree(rng, torch):
    from fastconv import bench
    x = rng.standard_normal((2, 16, 12, 70)).astype(np.float32)
    expected = fastconv.rmac(x)
    np.testing.assert_allclose(bench.numpy_rmac(x), expected, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(bench.numpy_rmac(to_nhwc(x), layout="NHWC"), expected,
                               rtol=2e-5, atol=2e-6)
    run = bench.torch_rmac(torch, torch.from_numpy(x))
    np.testing.assert_allclose(run().numpy(), expected, rtol=2e-5, atol=2e-6)
