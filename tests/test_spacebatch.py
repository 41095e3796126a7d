"""space_to_batch / batch_to_space / atrous_conv2d (docs/spec.md §3) against independent oracles.

Oracles: the docs/spec.md §3 index formula written element by element here, ``fastconv.reference``
(np.pad + reshape/transpose), pinned hand-computed values, the adjoint identity, torch
autograd of a torch pad/reshape/permute version, reference.conv2d_naive and torch's
dilated conv2d for atrous_conv2d, and TensorFlow's *_nd ops when TensorFlow is importable.
"""
from __future__ import annotations

import itertools
import re
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

from conftest import INTEGER_DTYPES, pads, pair, random_array, to_nhwc

LAYOUTS = ["NCHW", "NHWC"]


class Geom(NamedTuple):
    """One space_to_batch geometry; `shape` is always given as NCHW (N, C, H, W)."""

    shape: tuple
    block: object
    padding: object = 0

    def image_shape(self, layout):
        n, c, h, w = self.shape
        return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)

    def blocks_shape(self, layout):
        n, c, h, w = self.shape
        (bh, bw), ((top, bottom), (left, right)) = pair(self.block), pads(self.padding)
        oh, ow = (h + top + bottom) // bh, (w + left + right) // bw
        return (bh * bw * n, c, oh, ow) if layout == "NCHW" else (bh * bw * n, oh, ow, c)


GEOMS = {
    "basic": Geom((2, 3, 4, 6), 2),
    "rect-block": Geom((2, 2, 6, 9), (2, 3)),
    "pad-int": Geom((2, 3, 4, 6), 2, 1),
    "pad-pair": Geom((2, 1, 5, 4), (3, 2), (2, 1)),
    "pad-asym": Geom((1, 3, 5, 7), (2, 4), ((1, 0), (0, 1))),
    "odd-left-bw2": Geom((2, 2, 5, 7), 2, ((1, 0), (1, 0))),
    "right-pad-bw2": Geom((1, 2, 4, 5), 2, ((0, 0), (0, 1))),
    "wide-pad-bw2": Geom((1, 1, 3, 3), 2, ((1, 0), (3, 2))),
    "pad-bw3": Geom((1, 2, 4, 7), (2, 3), ((0, 0), (1, 1))),
    "padding>image": Geom((1, 2, 1, 1), 2, ((3, 0), (2, 1))),
    "block1": Geom((2, 3, 4, 5), 1, ((1, 2), (0, 3))),
    "block-h-only": Geom((1, 2, 6, 5), (3, 1)),
    "block-w-only": Geom((2, 2, 3, 8), (1, 4)),
    "block>image": Geom((1, 1, 2, 2), 4, ((1, 1), (2, 0))),
    "block=image": Geom((2, 2, 3, 3), 3),
    "1x1-image": Geom((3, 2, 1, 1), 1),
    "1x1-image-pad": Geom((1, 1, 1, 1), 2, ((0, 1), (1, 0))),
    "batch1": Geom((1, 4, 4, 4), 2),
    "batch0": Geom((0, 3, 4, 4), 2),
    "C0": Geom((2, 0, 4, 4), 2),
    "H0-padded": Geom((2, 3, 0, 4), 2, ((1, 1), (0, 0))),
    "W0-padded": Geom((1, 2, 2, 0), (1, 3), ((0, 0), (2, 1))),
}
GEOM_IDS = list(GEOMS)
GEOM_LIST = list(GEOMS.values())


def naive_space_to_batch(x, block_size, padding=0):
    """docs/spec.md §3 literally, one element at a time, batched NCHW:
    y[(off_h·bw + off_w)·N + n, c, oh, ow] = x_padded[n, c, oh·bh + off_h, ow·bw + off_w]."""
    n_, c_, h_, w_ = x.shape
    bh, bw = pair(block_size)
    (top, bottom), (left, right) = pads(padding)
    oh_, ow_ = (h_ + top + bottom) // bh, (w_ + left + right) // bw
    y = np.zeros((bh * bw * n_, c_, oh_, ow_), dtype=x.dtype)
    for off_h, off_w, n, c, oh, ow in itertools.product(range(bh), range(bw), range(n_),
                                                        range(c_), range(oh_), range(ow_)):
        h, w = oh * bh + off_h - top, ow * bw + off_w - left
        if 0 <= h < h_ and 0 <= w < w_:
            y[(off_h * bw + off_w) * n_ + n, c, oh, ow] = x[n, c, h, w]
    return y


def image(rng, geom, layout, dtype=np.float64):
    return random_array(rng, geom.image_shape(layout), dtype)


def blocks(rng, geom, layout, dtype=np.float64):
    return random_array(rng, geom.blocks_shape(layout), dtype)


def assert_same(actual, expected):
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


# ============================================================ pinned values

def test_pinned_block2_arange16():
    x = np.arange(16).reshape(1, 1, 4, 4)
    y = fastconv.space_to_batch(x, 2)
    expected = np.array([[[0, 2], [8, 10]], [[1, 3], [9, 11]],
                         [[4, 6], [12, 14]], [[5, 7], [13, 15]]]).reshape(4, 1, 2, 2)
    assert_same(y, expected)
    assert_same(fastconv.space_to_batch(x.reshape(1, 4, 4, 1), 2, layout="NHWC"),
                expected.reshape(4, 2, 2, 1))
    assert_same(fastconv.batch_to_space(expected, 2), x)


def test_pinned_padding1_block2():
    # Padded 4×4: [[0,0,0,0],[0,0,1,0],[0,2,3,0],[0,0,0,0]]; offsets (0,0), (0,1), (1,0), (1,1).
    x = np.array([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 1, 2, 2)
    y = fastconv.space_to_batch(x, 2, 1)
    expected = np.array([[[0, 0], [0, 3]], [[0, 0], [2, 0]],
                         [[0, 1], [0, 0]], [[0, 0], [0, 0]]], dtype=np.float64)
    assert_same(y, expected.reshape(4, 1, 2, 2))
    assert_same(fastconv.batch_to_space(y, 2, crops=1), x)


def test_pinned_batch_order_offsets_outermost():
    # Two images: block batch (off_h·bw + off_w)·N + n, so image 1's offset (0, 0) is entry 1.
    x = np.stack([np.arange(4).reshape(1, 2, 2), 10 + np.arange(4).reshape(1, 2, 2)])
    y = fastconv.space_to_batch(x, 2)
    assert y[:, 0, 0, 0].tolist() == [0, 10, 1, 11, 2, 12, 3, 13]


def test_pinned_rectangular_block():
    x = np.arange(12).reshape(1, 1, 2, 6)
    y = fastconv.space_to_batch(x, (1, 3))
    assert y[:, 0].tolist() == [[[0, 3], [6, 9]], [[1, 4], [7, 10]], [[2, 5], [8, 11]]]


def test_pinned_batch_to_space_crops():
    y = fastconv.space_to_batch(np.arange(16).reshape(1, 1, 4, 4), 2)
    assert fastconv.batch_to_space(y, 2, crops=((1, 0), (0, 2)))[0, 0].tolist() == [
        [4, 5], [8, 9], [12, 13]]


# ============================================================ against the oracles

@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
def test_space_to_batch_equals_spec_formula(rng, geom):
    x = image(rng, geom, "NCHW")
    expected = naive_space_to_batch(x, geom.block, geom.padding)
    assert_same(fastconv.space_to_batch(x, geom.block, geom.padding), expected)
    assert_same(reference.space_to_batch(x, geom.block, geom.padding), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
def test_both_directions_equal_reference(rng, geom, layout):
    x = image(rng, geom, layout)
    assert_same(fastconv.space_to_batch(x, geom.block, geom.padding, layout=layout),
                reference.space_to_batch(x, geom.block, geom.padding, layout=layout))
    y = blocks(rng, geom, layout)
    assert_same(fastconv.batch_to_space(y, geom.block, geom.padding, layout=layout),
                reference.batch_to_space(y, geom.block, geom.padding, layout=layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
def test_round_trip_is_exact(rng, geom, layout):
    x = image(rng, geom, layout)
    y = fastconv.space_to_batch(x, geom.block, geom.padding, layout=layout)
    assert_same(fastconv.batch_to_space(y, geom.block, crops=geom.padding, layout=layout), x)


@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
def test_nchw_and_nhwc_agree(rng, geom):
    x = image(rng, geom, "NCHW")
    y = fastconv.space_to_batch(x, geom.block, geom.padding)
    assert_same(fastconv.space_to_batch(to_nhwc(x), geom.block, geom.padding, layout="NHWC"),
                to_nhwc(y))
    assert_same(fastconv.batch_to_space(to_nhwc(y), geom.block, geom.padding, layout="nhwc"),
                to_nhwc(x))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", INTEGER_DTYPES + [np.bool_, np.float32])
def test_any_integer_or_bool_dtype_is_copied_bit_for_bit(rng, dtype, layout):
    geom = GEOMS["pad-asym"]
    x = image(rng, geom, layout, dtype)
    y = fastconv.space_to_batch(x, geom.block, geom.padding, layout=layout)
    assert_same(y, reference.space_to_batch(x, geom.block, geom.padding, layout=layout))
    assert_same(fastconv.batch_to_space(y, geom.block, geom.padding, layout=layout), x)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_large_input_all_paths_and_threads(rng, layout):
    # Above the single-thread cutoff; odd left padding (bw = 2 pair paths), bw = 3 (generic
    # strided path), a wide NHWC pixel (memcpy path), few NCHW planes (row tasks instead
    # of plane tasks). Results must not depend on threads.
    for shape, block, padding in [((3, 16, 33, 35), 2, ((1, 0), (1, 0))),
                                  ((2, 40, 20, 25), (2, 3), ((0, 0), (1, 1))),
                                  ((1, 70, 24, 24), (3, 2), 0),
                                  ((1, 2, 131, 129), (3, 2), ((0, 1), (2, 1))),
                                  ((1, 1, 190, 180), (2, 3), ((1, 1), (0, 0)))]:
        geom = Geom(shape, block, padding)
        x = image(rng, geom, layout, np.float32)
        expected = reference.space_to_batch(x, block, padding, layout=layout)
        y = blocks(rng, geom, layout, np.float32)
        expected_image = reference.batch_to_space(y, block, padding, layout=layout)
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                assert_same(fastconv.space_to_batch(x, block, padding, layout=layout), expected)
                assert_same(fastconv.batch_to_space(y, block, padding, layout=layout),
                            expected_image)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3), c=st.integers(0, 3), h=st.integers(0, 9), w=st.integers(0, 9),
       bh=st.integers(1, 4), bw=st.integers(1, 4), top=st.integers(0, 4),
       bottom=st.integers(0, 4), left=st.integers(0, 4), right=st.integers(0, 4),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**32 - 1))
def test_hypothesis_shapes(n, c, h, w, bh, bw, top, bottom, left, right, layout, seed):
    bottom += -(h + top + bottom) % bh  # make the padded size divisible by the block
    right += -(w + left + right) % bw
    geom = Geom((n, c, h, w), (bh, bw), ((top, bottom), (left, right)))
    rng = np.random.default_rng(seed)
    x = image(rng, geom, layout, np.int16)
    y = fastconv.space_to_batch(x, geom.block, geom.padding, layout=layout)
    assert_same(y, reference.space_to_batch(x, geom.block, geom.padding, layout=layout))
    assert_same(fastconv.batch_to_space(y, geom.block, geom.padding, layout=layout), x)
    other = blocks(rng, geom, layout, np.int16)
    assert_same(fastconv.batch_to_space(other, geom.block, geom.padding, layout=layout),
                reference.batch_to_space(other, geom.block, geom.padding, layout=layout))


def test_padding_zeros_are_written_into_a_dirty_out(rng):
    geom = GEOMS["wide-pad-bw2"]
    x = image(rng, geom, "NCHW")
    out = np.full(geom.blocks_shape("NCHW"), np.nan)
    fastconv.space_to_batch(x, geom.block, geom.padding, out=out)
    assert_same(out, naive_space_to_batch(x, geom.block, geom.padding))


# ============================================================ gradients

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
def test_adjoint_identity(rng, geom, layout):
    # ⟨space_to_batch(x), y⟩ = ⟨x, batch_to_space(y)⟩, exactly with integers.
    x = image(rng, geom, layout, np.int64) % 1000
    y = blocks(rng, geom, layout, np.int64) % 1000
    sx = fastconv.space_to_batch(x, geom.block, geom.padding, layout=layout)
    by = fastconv.batch_to_space(y, geom.block, crops=geom.padding, layout=layout)
    assert int(np.sum(sx * y)) == int(np.sum(x * by))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_functions(rng, layout):
    geom = GEOMS["pad-asym"]
    x = image(rng, geom, layout)
    grad = blocks(rng, geom, layout)
    grad_x = fastconv.space_to_batch_backward(grad, x.shape, geom.block, geom.padding,
                                              layout=layout)
    assert_same(grad_x, fastconv.batch_to_space(grad, geom.block, geom.padding, layout=layout))
    grad_y = fastconv.batch_to_space_backward(x, geom.block, geom.padding, layout=layout)
    assert_same(grad_y, fastconv.space_to_batch(x, geom.block, geom.padding, layout=layout))
    out = np.empty_like(x)
    assert fastconv.space_to_batch_backward(grad, x.shape, geom.block, geom.padding,
                                            layout=layout, out=out) is out
    assert_same(out, grad_x)


def test_space_to_batch_backward_of_one_image(rng):
    x = rng.standard_normal((3, 5, 7))  # (C, H, W)
    grad = rng.standard_normal((4, 3, 3, 4))
    grad_x = fastconv.space_to_batch_backward(grad, x.shape, 2, ((1, 0), (0, 1)))
    assert grad_x.shape == x.shape
    assert_same(grad_x, fastconv.batch_to_space(grad, 2, ((1, 0), (0, 1)))[0])
    out = np.empty_like(x)
    fastconv.space_to_batch_backward(grad, x.shape, 2, ((1, 0), (0, 1)), out=out)
    assert_same(out, grad_x)


def test_gradient_equals_torch_autograd(rng, torch):
    # torch has no space_to_batch: write it with F.pad + reshape + permute, differentiate.
    bh, bw, (top, bottom), (left, right) = 2, 3, (1, 0), (2, 1)
    x = rng.standard_normal((2, 3, 5, 6))
    grad = rng.standard_normal((12, 3, 3, 3))
    x_t = torch.tensor(x, requires_grad=True)
    padded = torch.nn.functional.pad(x_t, (left, right, top, bottom))
    y_t = padded.reshape(2, 3, 3, bh, 3, bw).permute(3, 5, 0, 1, 2, 4).reshape(12, 3, 3, 3)
    np.testing.assert_array_equal(
        fastconv.space_to_batch(x, (bh, bw), ((top, bottom), (left, right))),
        y_t.detach().numpy())
    y_t.backward(torch.tensor(grad))
    np.testing.assert_array_equal(
        fastconv.space_to_batch_backward(grad, x.shape, (bh, bw), ((top, bottom), (left, right))),
        x_t.grad.numpy())


# ============================================================ TensorFlow

def test_equals_tensorflow(rng):
    tf = pytest.importorskip("tensorflow")
    for geom in (GEOMS["pad-asym"], GEOMS["rect-block"], GEOMS["odd-left-bw2"]):
        x = image(rng, geom, "NHWC")
        block = list(pair(geom.block))
        paddings = [list(p) for p in pads(geom.padding)]
        expected = tf.space_to_batch_nd(x, block, paddings).numpy()
        y = fastconv.space_to_batch(x, geom.block, geom.padding, layout="NHWC")
        assert_same(y, expected)
        assert_same(fastconv.batch_to_space(y, geom.block, geom.padding, layout="NHWC"),
                    tf.batch_to_space(expected, block, paddings).numpy())


# ============================================================ shapes, memory order, out=

@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_image_gives_a_batch_of_blocks(rng, layout):
    x = rng.standard_normal((3, 4, 6) if layout == "NCHW" else (4, 6, 3))
    y = fastconv.space_to_batch(x, (2, 3), layout=layout)
    assert y.ndim == 4 and y.shape[0] == 6
    assert_same(y, fastconv.space_to_batch(x[None], (2, 3), layout=layout))


def test_batch_to_space_rejects_3d():
    with pytest.raises(ValueError, match=re.escape("batch_to_space: expected x of shape "
                                                   "(N, C, H, W)") + ".*got shape \\(4, 2, 2\\)"):
        fastconv.batch_to_space(np.zeros((4, 2, 2)), 2)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*\(3-D\)"):
        fastconv.batch_to_space(np.zeros((4, 2, 2)), 2, layout="NHWC")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_memory_orders_give_the_same_result(rng, layout):
    geom = GEOMS["pad-asym"]
    base = image(rng, Geom((2, 6, 10, 14), 1), layout)
    views = {
        "fortran": np.asfortranarray(base[:1, :3, :5, :7] if layout == "NCHW"
                                     else base[:1, :5, :7, :3]),
        "strided": base[:, ::2, ::2, ::2][:1, :3, :5, :7] if layout == "NCHW"
        else base[:, ::2, ::2, ::2][:1, :5, :7, :3],
        "negative": base[::-1, ::-1, ::-1, ::-1][:1, :3, :5, :7] if layout == "NCHW"
        else base[::-1, ::-1, ::-1, ::-1][:1, :5, :7, :3],
    }
    for name, x in views.items():
        assert x.shape == geom.image_shape(layout), name
        before = x.copy()
        readonly = x.view()
        readonly.flags.writeable = False
        expected = reference.space_to_batch(np.ascontiguousarray(x), geom.block, geom.padding,
                                            layout=layout)
        assert_same(fastconv.space_to_batch(readonly, geom.block, geom.padding, layout=layout),
                    expected)
        assert_same(x, before)  # input untouched
        reversed_view = expected[::-1, :, ::-1].copy()[::-1, :, ::-1]
        reversed_view.flags.writeable = False
        strided_view = np.repeat(expected, 2, axis=-1)[..., ::2]
        for blocks_in in (reversed_view, strided_view, np.asfortranarray(expected)):
            assert not blocks_in.flags.c_contiguous
            assert_same(fastconv.batch_to_space(blocks_in, geom.block, geom.padding,
                                                layout=layout), np.ascontiguousarray(x))


def test_big_endian_and_list_input():
    x = np.arange(16, dtype=">i4").reshape(1, 1, 4, 4)
    y = fastconv.space_to_batch(x, 2)
    assert y.dtype == np.dtype("int32") and y.dtype.isnative
    assert y[:, 0, 0, 0].tolist() == [0, 1, 4, 5]
    assert fastconv.space_to_batch(x.tolist(), 2)[:, 0, 0, 0].tolist() == [0, 1, 4, 5]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out(rng, layout):
    geom = GEOMS["pad-int"]
    x = image(rng, geom, layout)
    out = np.empty(geom.blocks_shape(layout))
    assert fastconv.space_to_batch(x, geom.block, geom.padding, layout=layout, out=out) is out
    assert_same(out, reference.space_to_batch(x, geom.block, geom.padding, layout=layout))
    back = np.empty_like(x)
    assert fastconv.batch_to_space(out, geom.block, geom.padding, layout=layout,
                                   out=back) is back
    assert_same(back, x)
    grad = np.empty_like(out)
    assert fastconv.batch_to_space_backward(x, geom.block, geom.padding, layout=layout,
                                            out=grad) is grad
    assert_same(grad, out)


@pytest.mark.parametrize("make_out, message", [
    (lambda s: np.empty(s[:-1] + (s[-1] + 1,)), "out must have shape"),
    (lambda s: np.empty(s, dtype=np.float32), "out must have dtype float64"),
    (lambda s: np.empty(s[::-1]).T, "out must be C-contiguous"),
    (lambda s: [0.0], "out must be a numpy.ndarray"),
])
def test_bad_out(make_out, message):
    x = np.zeros((2, 3, 4, 6))
    with pytest.raises(ValueError, match=f"space_to_batch: {message}"):
        fastconv.space_to_batch(x, 2, out=make_out((8, 3, 2, 3)))
    with pytest.raises(ValueError, match=f"batch_to_space: {message}"):
        fastconv.batch_to_space(np.zeros((8, 3, 2, 3)), 2, out=make_out((2, 3, 4, 6)))


def test_out_overlapping_input_is_rejected():
    buffer = np.zeros(2 * 96)
    x = buffer[:48].reshape(2, 3, 2, 4)
    with pytest.raises(ValueError, match="space_to_batch: out overlaps an input"):
        fastconv.space_to_batch(x, 2, out=buffer[40:88].reshape(8, 3, 1, 2))


# ============================================================ errors

@pytest.mark.parametrize("block, message", [
    (0, "block_size must be >= 1, got 0"),
    (-2, "block_size must be >= 1, got -2"),
    ((2, 0), "block_size must be >= 1, got 0"),
    (2.0, "block_size must be an int >= 1, got 2.0"),
    ((2, 2, 2), re.escape("block_size must be an int or a pair (h, w), got (2, 2, 2)")),
])
def test_bad_block(block, message):
    for call in (lambda: fastconv.space_to_batch(np.zeros((1, 1, 4, 4)), block),
                 lambda: fastconv.batch_to_space(np.zeros((4, 1, 2, 2)), block)):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("padding, bad", [(-1, "-1"), ((1, -1), "-1"), (((0, 0), (-2, 0)), "-2")])
def test_negative_padding_and_crops(padding, bad):
    with pytest.raises(ValueError, match=f"space_to_batch: padding must be .*>= 0, got {bad}"):
        fastconv.space_to_batch(np.zeros((1, 1, 4, 4)), 1, padding)
    with pytest.raises(ValueError, match=f"batch_to_space: crops must be .*>= 0, got {bad}"):
        fastconv.batch_to_space(np.zeros((1, 1, 4, 4)), 1, crops=padding)
    with pytest.raises(ValueError, match=f"batch_to_space_backward: crops must be .*, got {bad}"):
        fastconv.batch_to_space_backward(np.zeros((1, 1, 4, 4)), 1, crops=padding)


def test_padded_size_not_divisible():
    with pytest.raises(ValueError, match=re.escape(
            "space_to_batch: padded height 5 + 1 + 0 = 6 is not divisible by the block "
            "bh = 4 (block_size=(4, 2)")):
        fastconv.space_to_batch(np.zeros((1, 1, 5, 4)), (4, 2), ((1, 0), (0, 0)))
    with pytest.raises(ValueError, match=re.escape(
            "space_to_batch: padded width 5 + 0 + 0 = 5 is not divisible by the block bw = 2")):
        fastconv.space_to_batch(np.zeros((1, 4, 5, 3)), 2, layout="NHWC")


def test_batch_not_divisible():
    with pytest.raises(ValueError, match=re.escape(
            "batch_to_space: x batch 6 (shape (6, 1, 2, 2)) is not divisible by bh·bw = 4 "
            "for block_size=(2, 2)")):
        fastconv.batch_to_space(np.zeros((6, 1, 2, 2)), 2)


def test_crops_larger_than_the_image():
    with pytest.raises(ValueError, match=re.escape(
            "batch_to_space: crops 3 + 2 = 5 in height exceed the height 2·2 = 4")):
        fastconv.batch_to_space(np.zeros((4, 1, 2, 3)), 2, crops=((3, 2), (0, 0)))
    with pytest.raises(ValueError, match=re.escape(
            "crops 0 + 7 = 7 in width exceed the width 3·2 = 6")):
        fastconv.batch_to_space(np.zeros((4, 2, 3, 1)), 2, crops=((0, 0), (0, 7)),
                                layout="NHWC")
    # Crops equal to the expanded image leave an empty image, as TensorFlow allows.
    assert fastconv.batch_to_space(np.zeros((4, 1, 2, 3)), 2, crops=((4, 0), (0, 0))).shape == (
        1, 1, 0, 6)


@pytest.mark.parametrize("dtype", [np.float16, np.complex64, object])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match=f"space_to_batch: x .*dtype {np.dtype(dtype)}"):
        fastconv.space_to_batch(np.zeros((1, 1, 2, 2), dtype=dtype), 2)
    with pytest.raises(TypeError, match=f"batch_to_space: x .*dtype {np.dtype(dtype)}"):
        fastconv.batch_to_space(np.zeros((4, 1, 2, 2), dtype=dtype), 2)


def test_bad_layout_and_ndim():
    with pytest.raises(ValueError, match="space_to_batch: layout must be one of 'NCHW', 'NHWC'"):
        fastconv.space_to_batch(np.zeros((1, 1, 2, 2)), 2, layout="CHWN")
    with pytest.raises(ValueError, match=r"space_to_batch: expected x of shape .*got shape "
                                         r"\(2, 2\) \(2-D\)"):
        fastconv.space_to_batch(np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match=r"batch_to_space: expected x .*\(5-D\)"):
        fastconv.batch_to_space(np.zeros((4, 1, 1, 2, 2)), 2)


def test_backward_shape_errors():
    with pytest.raises(ValueError, match=re.escape(
            "space_to_batch_backward: grad_output must have shape (4, 1, 2, 2) "
            "(space_to_batch's output for input_shape (1, 1, 4, 4)), got (4, 1, 2, 3)")):
        fastconv.space_to_batch_backward(np.zeros((4, 1, 2, 3)), (1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match="space_to_batch_backward: padded height 3"):
        fastconv.space_to_batch_backward(np.zeros((4, 1, 2, 2)), (1, 1, 3, 4), 2)
    with pytest.raises(ValueError, match="space_to_batch_backward: input_shape must have 3 or 4"):
        fastconv.space_to_batch_backward(np.zeros((4, 1, 2, 2)), (4, 4), 2)
    with pytest.raises(ValueError, match=r"batch_to_space_backward: expected grad_output .*3-D"):
        fastconv.batch_to_space_backward(np.zeros((1, 4, 4)), 2)


def test_huge_padding_is_an_error_not_a_crash():
    with pytest.raises((ValueError, MemoryError)):
        fastconv.space_to_batch(np.zeros((1, 1, 2, 2)), 2, ((2**62, 2**62), (0, 0)))


# ============================================================ atrous_conv2d

ATROUS_CASES = [
    # (NCHW input shape, weight (C_out, C_in, kh, kw), padding)
    ((2, 3, 11, 9), (4, 3, 3, 3), "valid"),
    ((2, 3, 11, 9), (4, 3, 3, 3), "same"),
    ((1, 2, 13, 10), (3, 2, 2, 3), "same"),
    ((2, 2, 9, 12), (2, 2, 3, 2), 1),
    ((1, 3, 10, 7), (5, 3, 3, 1), ((0, 2), (3, 1))),
    ((1, 1, 8, 8), (1, 1, 1, 1), "valid"),
]


def _to_layout(x, weight, layout):
    if layout == "NCHW":
        return x, weight
    return to_nhwc(x), np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rate", [1, 2, 3, 4, (2, 3)])
@pytest.mark.parametrize("case", ATROUS_CASES, ids=[str(i) for i in range(len(ATROUS_CASES))])
def test_atrous_equals_dilated_conv2d(rng, case, rate, layout):
    shape, wshape, padding = case
    x, weight = _to_layout(rng.standard_normal(shape), rng.standard_normal(wshape), layout)
    bias = rng.standard_normal(wshape[0])
    try:
        expected = fastconv.conv2d(x, weight, bias, padding=padding, dilation=rate,
                                   layout=layout)
    except ValueError:  # the dilated kernel does not fit: atrous must refuse the same way
        with pytest.raises(ValueError, match="atrous_conv2d: kernel_size"):
            fastconv.atrous_conv2d(x, weight, rate, bias, padding, layout=layout)
        return
    result = fastconv.atrous_conv2d(x, weight, rate, bias, padding, layout=layout)
    assert result.shape == expected.shape and result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
    no_bias = fastconv.atrous_conv2d(x, weight, rate, padding=padding, layout=layout)
    np.testing.assert_allclose(no_bias + (bias if layout == "NHWC" else bias[:, None, None]),
                               expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rate", [2, 3])
def test_atrous_equals_naive_reference(rng, rate):
    # reference.conv2d_naive (seven loops, NHWC/HWIO) shares no code with fastconv.
    x = rng.standard_normal((1, 9, 8, 2))
    weight = rng.standard_normal((3, 2, 2, 3))
    expected = reference.conv2d_naive(x, weight, padding=((2, 1), (0, 3)), dilation=rate)
    result = fastconv.atrous_conv2d(x, weight, rate, padding=((2, 1), (0, 3)), layout="NHWC")
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rate", [2, 4])
def test_atrous_equals_torch(rng, torch, rate):
    x = rng.standard_normal((2, 4, 15, 13)).astype(np.float32)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                          torch.from_numpy(bias), padding="same",
                                          dilation=rate).numpy()
    result = fastconv.atrous_conv2d(x, weight, rate, bias, "same")
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_atrous_float32_close_to_conv2d(rng, layout):
    x, weight = _to_layout(rng.standard_normal((2, 8, 17, 19)).astype(np.float32),
                           rng.standard_normal((5, 8, 3, 3)).astype(np.float32), layout)
    expected = fastconv.conv2d(x, weight, padding="same", dilation=3, layout=layout)
    result = fastconv.atrous_conv2d(x, weight, 3, padding="same", layout=layout)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_atrous_equals_tensorflow(rng):
    tf = pytest.importorskip("tensorflow")
    x = rng.standard_normal((2, 13, 11, 3))
    weight = rng.standard_normal((3, 3, 3, 4))
    for padding in ("VALID", "SAME"):
        expected = tf.nn.atrous_conv2d(x, weight, 2, padding).numpy()
        result = fastconv.atrous_conv2d(x, weight, 2, padding=padding, layout="NHWC")
        np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_atrous_batch0_batch1_and_one_image(rng, layout):
    weight = rng.standard_normal((4, 3, 3, 3))
    for shape in [(0, 3, 9, 9), (1, 3, 9, 9)]:
        x, w = _to_layout(rng.standard_normal(shape), weight, layout)
        expected = fastconv.conv2d(x, w, padding="same", dilation=2, layout=layout)
        result = fastconv.atrous_conv2d(x, w, 2, padding="same", layout=layout)
        assert result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
    one = x[0]
    result = fastconv.atrous_conv2d(one, w, 2, padding="same", layout=layout)
    assert result.ndim == 3
    np.testing.assert_allclose(result, expected[0], rtol=1e-12, atol=1e-12)


def test_atrous_out(rng):
    x = rng.standard_normal((2, 3, 9, 10))
    weight = rng.standard_normal((4, 3, 3, 3))
    expected = fastconv.conv2d(x, weight, padding="same", dilation=2)
    out = np.empty_like(expected)
    assert fastconv.atrous_conv2d(x, weight, 2, padding="same", out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=re.escape(
            "atrous_conv2d: out must have shape (2, 4, 5, 6), got (2, 4, 9, 10)")):
        fastconv.atrous_conv2d(x, weight, 2, out=out)  # "valid": 9 - 2·2 by 10 - 2·2


def test_atrous_errors():
    x = np.zeros((1, 3, 9, 9))
    weight = np.zeros((4, 3, 3, 3))
    with pytest.raises(ValueError, match="atrous_conv2d: rate must be >= 1, got 0"):
        fastconv.atrous_conv2d(x, weight, 0)
    with pytest.raises(ValueError, match=re.escape(
            "atrous_conv2d: kernel_size=(3, 3) with dilation=(5, 5) spans 11 pixels")):
        fastconv.atrous_conv2d(x, weight, 5)
    with pytest.raises(TypeError, match="atrous_conv2d: input has dtype float64 but weight "
                                        "has dtype float32"):
        fastconv.atrous_conv2d(x, weight.astype(np.float32), 2)
    with pytest.raises(TypeError, match="atrous_conv2d: input must be float32 or float64"):
        fastconv.atrous_conv2d(x.astype(np.int32), weight, 2)
    with pytest.raises(ValueError, match="atrous_conv2d: expected input with 3 channels"):
        fastconv.atrous_conv2d(np.zeros((1, 2, 9, 9)), weight, 2)
    with pytest.raises(ValueError, match=re.escape("atrous_conv2d: expected bias of shape (4,)")):
        fastconv.atrous_conv2d(x, weight, 2, np.zeros(3))
    with pytest.raises(ValueError, match="atrous_conv2d: padding must be 'valid', 'same'"):
        fastconv.atrous_conv2d(x, weight, 2, padding="full")


# ============================================================ benchmark pieces

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", [GEOMS["basic"], GEOMS["pad-asym"], GEOMS["block1"]],
                         ids=["basic", "pad-asym", "block1"])
def test_numpy_baseline_equals_reference(rng, geom, layout):
    from fastconv.bench import numpy_space_to_batch
    x = image(rng, geom, layout, np.float32)
    assert_same(numpy_space_to_batch(x, geom.block, geom.padding, layout),
                reference.space_to_batch(x, geom.block, geom.padding, layout=layout))


def test_bench_section_rows():
    from fastconv import bench
    config = bench.make_config(layers=["resnet50.res5.3x3"], ops=["space_to_batch"],
                               layout="NHWC", repeats=1, use_torch=False)
    cases = bench.SECTIONS["space_to_batch"].cases(config)
    assert [(c.layer.name, c.batch) for c in cases] == [("resnet50.res5.3x3", 8)]  # largest
    rows = bench.run(config, progress=False)
    (row,) = rows
    assert row.matches_numpy is True and row.unit == "GB/s"
    assert row.nbytes == 4 * 8 * 512 * 4 * 4 * 4  # 8 images of 7×7 padded to 8×8, float32
    assert row.extra["copy_ratio"] == pytest.approx(row.extra["copy_ms"] / 1e3 / row.fastconv_s)
    assert "numpy.copyto bandwidth of the same bytes" in bench.format_table(rows, config)
    assert bench.to_json(rows, config)["rows"][0]["copy_gbps"] > 0
    config = bench.make_config(layers=["resnet50.res5.3x3"], batches=[1, 2],
                               ops=["space_to_batch"])
    assert [c.batch for c in bench.SECTIONS["space_to_batch"].cases(config)] == [1, 2]


def test_bench_torch_route_equals_reference(rng, torch):
    from fastconv.bench.baselines import torch_space_to_batch
    x = rng.standard_normal((2, 3, 5, 7))
    padding = ((1, 0), (0, 1))
    assert_same(torch_space_to_batch(torch, torch.from_numpy(x), 2, padding).numpy(),
                reference.space_to_batch(x, 2, padding))
