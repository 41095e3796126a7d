"""im2col / col2im (docs/spec.md §1) against independent oracles.

Oracles: ``fastconv.reference`` (plain NumPy, no fastconv kernels), the element-by-element
loops in conftest (docs/spec.md §1 written literally), hand-computed examples, and PyTorch's
unfold / fold when torch is importable.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

from conftest import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    naive_col2im_nchw,
    naive_im2col_nchw,
    nchw_cols_to_nhwc_cols,
    out_hw,
    pads,
    pair,
    random_array,
    to_nchw,
    to_nhwc,
)

LAYOUTS = ["NCHW", "NHWC"]


class Geom(NamedTuple):
    """One im2col geometry; `shape` is always given as NCHW (N, C, H, W)."""

    shape: tuple
    kernel: object
    stride: object = 1
    padding: object = 0
    dilation: object = 1

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

    @property
    def hw(self):
        return self.shape[2], self.shape[3]

    def image_shape(self, layout):
        n, c, h, w = self.shape
        return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)

    def cols_shape(self, layout):
        n, c, h, w = self.shape
        kh, kw = pair(self.kernel)
        oh, ow = out_hw(h, w, self.kernel, self.stride, self.padding, self.dilation)
        if layout == "NCHW":
            return (n, c * kh * kw, oh * ow)
        return (n, oh * ow, kh * kw * c)


GEOMS = {
    "basic": Geom((2, 3, 5, 6), 3),
    "pad1": Geom((2, 3, 5, 6), 3, padding=1),
    "stride2-pad1": Geom((1, 2, 7, 7), 3, stride=2, padding=1),
    "rect-pairs": Geom((2, 2, 6, 9), (2, 3), stride=(1, 2), padding=(1, 0)),
    "asym-pad": Geom((2, 3, 5, 7), (3, 2), padding=((0, 2), (1, 0))),
    "asym-pad-stride-dil": Geom((1, 2, 9, 8), (2, 3), stride=(2, 3), padding=((1, 3), (2, 0)),
                                dilation=(2, 1)),
    "dilation2": Geom((2, 2, 8, 8), 3, padding=2, dilation=2),
    "dilation-rect": Geom((1, 1, 9, 11), 2, dilation=(4, 5)),
    "stride>kernel": Geom((2, 3, 8, 9), 2, stride=3),
    "stride>kernel-asym": Geom((1, 2, 10, 10), (1, 2), stride=(4, 5), padding=((2, 1), (0, 3))),
    "kernel=padded-input": Geom((2, 2, 3, 4), (5, 6), padding=1),
    "dilated-kernel=input": Geom((1, 1, 5, 7), (2, 3), dilation=(4, 3)),
    "padding>kernel": Geom((1, 1, 2, 2), 2, padding=3),
    "1x1-image-k1": Geom((3, 2, 1, 1), 1),
    "1x1-image-pad": Geom((1, 1, 1, 1), 3, padding=1),
    "1x1-image-stride-pad": Geom((1, 2, 1, 1), 2, stride=2, padding=2),
    "kernel1x1": Geom((2, 4, 3, 5), 1),
    "batch0": Geom((0, 3, 5, 5), 3, padding=1),
    "batch1": Geom((1, 3, 4, 4), 2, stride=2),
    "H0-padded": Geom((2, 3, 0, 4), 2, padding=1),
    "W0-padded": Geom((2, 1, 3, 0), (1, 2), padding=((0, 0), (1, 1))),
}
GEOM_IDS = list(GEOMS)
GEOM_LIST = list(GEOMS.values())
NONEMPTY = {k: g for k, g in GEOMS.items() if 0 not in g.shape}


def make_image(rng, geom, layout, dtype=np.float64):
    return random_array(rng, geom.image_shape(layout), dtype)


def ref_im2col(x, geom, layout):
    return reference.im2col(x, geom.kernel, layout=layout, **geom.kwargs)


def ref_col2im(cols, geom, layout):
    return reference.col2im(cols, geom.hw, geom.kernel, layout=layout, **geom.kwargs)


def assert_same(actual, expected, exact=True):
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if exact:
        np.testing.assert_array_equal(actual, expected)
    else:
        rtol = 1e-5 if actual.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


# ============================================================ worked examples (by hand)

def test_caffe2_worked_example_im2col():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    cols = fastconv.im2col(x, 2)
    expected = np.array([[[0, 1], [3, 4]],
                         [[1, 2], [4, 5]],
                         [[3, 4], [6, 7]],
                         [[4, 5], [7, 8]]], dtype=np.float64).reshape(1, 4, 4)
    assert_same(cols, expected)


def test_caffe2_worked_example_col2im_coverage():
    image = fastconv.col2im(np.ones((1, 4, 4)), (3, 3), 2)
    expected = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64)
    assert_same(image, expected.reshape(1, 1, 3, 3))


def test_caffe2_worked_example_nhwc():
    # One channel: the NHWC patch matrix is [p, i·kw + j], the transpose of the NCHW one.
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    expected = np.array([[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]], float).T
    assert_same(fastconv.im2col(x, 2, layout="NHWC"), expected[None])
    coverage = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64)
    assert_same(fastconv.col2im(np.ones((1, 4, 4)), (3, 3), 2, layout="NHWC"),
                coverage.reshape(1, 3, 3, 1))


def test_hand_example_padding_and_stride():
    x = (np.arange(9.0) + 1).reshape(1, 3, 3)  # unbatched, values 1..9
    cols = fastconv.im2col(x, 2, stride=2, padding=1)
    expected = np.array([[0, 0, 0, 5],
                         [0, 0, 4, 6],
                         [0, 2, 0, 8],
                         [1, 3, 7, 9]], dtype=np.float64)
    assert_same(cols, expected)
    # stride = kernel: the windows tile the padded image, every pixel is covered once.
    assert_same(fastconv.col2im(np.ones((4, 4)), (3, 3), 2, stride=2, padding=1),
                np.ones((1, 3, 3)))


def test_hand_example_dilation():
    x = (np.arange(9.0) + 1).reshape(1, 1, 3, 3)
    assert_same(fastconv.im2col(x, 2, dilation=2), np.array([[[1.0], [3.0], [7.0], [9.0]]]))
    coverage = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]], dtype=np.float64)
    assert_same(fastconv.col2im(np.ones((1, 4, 1)), (3, 3), 2, dilation=2),
                coverage.reshape(1, 1, 3, 3))


def test_hand_example_asymmetric_padding():
    x = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # (C, H, W) = (1, 2, 2)
    # top 1, bottom 0, left 0, right 1: padded image [[0,0,0],[1,2,0],[3,4,0]], k=2 → 2×2.
    cols = fastconv.im2col(x, 2, padding=((1, 0), (0, 1)))
    expected = np.array([[0, 0, 1, 2],
                         [0, 0, 2, 0],
                         [1, 2, 3, 4],
                         [2, 0, 4, 0]], dtype=np.float64)
    assert_same(cols, expected)


# ============================================================ im2col vs oracles

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_matches_reference(rng, layout, geom, dtype):
    x = make_image(rng, geom, layout, dtype)
    cols = fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs)
    assert cols.shape == geom.cols_shape(layout)
    assert_same(cols, ref_im2col(x, geom, layout))


@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
def test_im2col_matches_elementwise_definition(rng, geom):
    x = make_image(rng, geom, "NCHW")
    cols = fastconv.im2col(x, geom.kernel, **geom.kwargs)
    assert_same(cols, naive_im2col_nchw(x, geom.kernel, **geom.kwargs))


@pytest.mark.parametrize("geom", [GEOMS[k] for k in ("pad1", "asym-pad-stride-dil",
                                                      "1x1-image-pad", "H0-padded")])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_unbatched(rng, layout, geom):
    x = make_image(rng, geom, layout)[0]
    cols = fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs)
    expected = ref_im2col(x[None], geom, layout)[0]
    assert cols.ndim == 2
    assert_same(cols, expected)


def test_layout_is_case_insensitive(rng):
    geom = GEOMS["asym-pad-stride-dil"]
    for layout in ("NCHW", "NHWC"):
        x = make_image(rng, geom, layout)
        for spelling in (layout.lower(), layout.capitalize()):
            assert_same(fastconv.im2col(x, geom.kernel, layout=spelling, **geom.kwargs),
                        ref_im2col(x, geom, layout))


def test_nhwc_reads_height_and_width_from_axes_1_and_2():
    x = np.arange(2 * 5 * 8 * 3).reshape(2, 5, 8, 3).astype(np.float32)  # N, H, W, C
    cols = fastconv.im2col(x, (5, 8), layout="NHWC")  # the kernel covers the whole image
    assert_same(cols, x.reshape(2, 1, 5 * 8 * 3))
    with pytest.raises(ValueError, match="im2col: kernel_size"):
        fastconv.im2col(x, (8, 5), layout="NHWC")


@pytest.mark.parametrize("dtype", INTEGER_DTYPES + [np.bool_])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_integer_and_bool_exact(rng, layout, dtype):
    geom = GEOMS["asym-pad-stride-dil"]
    x = make_image(rng, geom, layout, dtype)
    if np.dtype(dtype).kind != "b":  # make sure the extremes of the range go through
        info = np.iinfo(dtype)
        x.reshape(-1)[:2] = [info.min, info.max]
    cols = fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs)
    assert_same(cols, ref_im2col(x, geom, layout))
    if layout == "NCHW":
        assert_same(cols, naive_im2col_nchw(x, geom.kernel, **geom.kwargs))


@pytest.mark.parametrize("dtype", [">i2", ">u4", ">f8", ">f4"])
def test_im2col_non_native_byte_order(rng, dtype):
    geom = GEOMS["pad1"]
    native = np.dtype(dtype).newbyteorder("=")
    x = make_image(rng, geom, "NCHW", native)
    cols = fastconv.im2col(x.astype(dtype), geom.kernel, **geom.kwargs)
    np.testing.assert_array_equal(cols, naive_im2col_nchw(x, geom.kernel, **geom.kwargs))


# ============================================================ col2im vs oracles

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_col2im_matches_reference(rng, layout, geom, dtype):
    cols = random_array(rng, geom.cols_shape(layout), dtype)
    image = fastconv.col2im(cols, geom.hw, geom.kernel, layout=layout, **geom.kwargs)
    assert image.shape == geom.image_shape(layout)
    assert_same(image, ref_col2im(cols, geom, layout), exact=False)


@pytest.mark.parametrize("geom", GEOM_LIST, ids=GEOM_IDS)
def test_col2im_matches_elementwise_definition(rng, geom):
    cols = rng.integers(-50, 50, geom.cols_shape("NCHW"))  # integers: sums are exact
    image = fastconv.col2im(cols, geom.hw, geom.kernel, **geom.kwargs)
    assert_same(image, naive_col2im_nchw(cols, geom.hw, geom.kernel, **geom.kwargs))


@pytest.mark.parametrize("geom", [GEOMS[k] for k in ("pad1", "asym-pad-stride-dil",
                                                      "1x1-image-pad", "H0-padded")])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_col2im_unbatched(rng, layout, geom):
    cols = random_array(rng, geom.cols_shape(layout), np.float64)[0]
    image = fastconv.col2im(cols, geom.hw, geom.kernel, layout=layout, **geom.kwargs)
    assert image.ndim == 3
    assert_same(image, ref_col2im(cols[None], geom, layout)[0], exact=False)


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_col2im_integers_wrap_like_numpy(rng, layout, dtype):
    geom = GEOMS["dilation2"]  # heavy overlap: up to 9 entries per pixel
    cols = random_array(rng, geom.cols_shape(layout), dtype)  # full range: sums overflow
    image = fastconv.col2im(cols, geom.hw, geom.kernel, layout=layout, **geom.kwargs)
    assert_same(image, ref_col2im(cols, geom, layout))
    # The same with Python integers reduced modulo 2**bits (independent of numpy's adds).
    wide = ref_col2im(cols.astype(object), geom, layout)
    bits = 8 * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(image.astype(object) % (1 << bits), wide % (1 << bits))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int64])
def test_col2im_coverage_times_value_wraps(dtype):
    value = np.iinfo(dtype).max
    cols = np.full((1, 4, 4), value, dtype=dtype)
    coverage = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=object)
    bits = 8 * np.dtype(dtype).itemsize
    expected = (coverage * int(value)) % (1 << bits)
    image = fastconv.col2im(cols, (3, 3), 2)
    assert image.dtype == dtype
    np.testing.assert_array_equal(image[0, 0].astype(object) % (1 << bits), expected)


@pytest.mark.parametrize("dtype", [">i4", ">i8", ">f8", ">f4"])
def test_col2im_non_native_byte_order(dtype):
    # Regression: sums used to be done on the byte-swapped representation, so carries went
    # to the wrong bytes (255 + 255 gave 254 for '>i4').
    cols = np.full((1, 4, 4), 255, dtype=dtype)
    image = fastconv.col2im(cols, (3, 3), 2)
    expected = 255 * np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    np.testing.assert_array_equal(image[0, 0], expected)


# ============================================================ out=

def _out_case(rng, op, layout, batched):
    """(args, kwargs, expected, inputs) for a call of `op` whose result is known."""
    geom = GEOMS["asym-pad-stride-dil"]
    if op == "im2col":
        x = make_image(rng, geom, layout)
        expected = ref_im2col(x, geom, layout)
        args = (x, geom.kernel)
    else:
        x = random_array(rng, geom.cols_shape(layout), np.float64)
        expected = np.ascontiguousarray(ref_col2im(x, geom, layout))
        args = (x, geom.hw, geom.kernel)
    if not batched:
        x = x[0]
        args = (x,) + args[1:]
        expected = expected[0]
    return args, dict(layout=layout, **geom.kwargs), expected, x


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", ["im2col", "col2im"])
def test_out_is_filled_and_returned(rng, op, layout, batched):
    args, kwargs, expected, _ = _out_case(rng, op, layout, batched)
    out = np.full(expected.shape, np.nan)  # garbage everywhere, also where padding goes
    result = getattr(fastconv, op)(*args, out=out, **kwargs)
    assert result.shape == expected.shape
    assert np.shares_memory(result, out)
    assert result.__array_interface__["data"][0] == out.__array_interface__["data"][0]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("op", ["im2col", "col2im"])
def test_out_object_itself_is_returned(rng, op, batched):
    # NumPy's out= convention (regression: a new view of `out` used to be returned).
    args, kwargs, expected, _ = _out_case(rng, op, "NCHW", batched)
    out = np.empty(expected.shape)
    assert getattr(fastconv, op)(*args, out=out, **kwargs) is out


def _bad_outs(shape):
    shape = tuple(shape)
    wider = np.empty(shape[:-1] + (2 * shape[-1],))
    ro = np.empty(shape)
    ro.flags.writeable = False
    return {
        "wrong-shape": (np.empty(shape[:-1] + (shape[-1] + 1,)), "shape"),
        "extra-axis": (np.empty((1,) + shape), "shape"),
        "wrong-dtype": (np.empty(shape, np.float32), "dtype"),
        "non-contiguous": (wider[..., ::2], "contiguous"),
        "fortran": (np.empty(shape, order="F"), "contiguous"),
        "read-only": (ro, ""),
        "not-an-array": (np.empty(shape).tolist(), ""),
    }


@pytest.mark.parametrize("case", ["wrong-shape", "extra-axis", "wrong-dtype", "non-contiguous",
                                  "fortran", "read-only", "not-an-array"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("op", ["im2col", "col2im"])
def test_bad_out_is_rejected(rng, op, batched, case):
    args, kwargs, expected, x = _out_case(rng, op, "NCHW", batched)
    out, word = _bad_outs(expected.shape)[case]
    before = np.array(out, copy=True)
    x_before = x.copy()
    with pytest.raises(ValueError, match=rf"{op}: out.*{word}"):
        getattr(fastconv, op)(*args, out=out, **kwargs)
    np.testing.assert_array_equal(np.asarray(out), before)  # nothing written
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("op", ["im2col", "col2im"])
def test_out_overlapping_the_input_is_rejected(rng, op):
    # A 1×1 kernel makes input and result the same size, so one buffer can be both.
    if op == "im2col":
        x = rng.standard_normal((2, 3, 4, 5))
        out = x.reshape(2, 3, 20)
        call = lambda: fastconv.im2col(x, 1, out=out)  # noqa: E731
    else:
        x = rng.standard_normal((2, 3, 20))
        out = x.reshape(2, 3, 4, 5)
        call = lambda: fastconv.col2im(x, (4, 5), 1, out=out)  # noqa: E731
    before = x.copy()
    with pytest.raises(ValueError, match=rf"{op}: out.*overlap"):
        call()
    np.testing.assert_array_equal(x, before)


def test_out_overlapping_part_of_the_input_is_rejected(rng):
    # x and out are different slices of one buffer that share a few elements.
    buffer = rng.standard_normal(400)
    x = buffer[:60].reshape(1, 3, 4, 5)
    cols_shape = (1, 3 * 2 * 2, 4 * 5)  # k=2, padding ((1, 0), (0, 1)) → 4×5 positions
    out = buffer[50:50 + 240].reshape(cols_shape)
    before = buffer.copy()
    with pytest.raises(ValueError, match="im2col: out.*overlap"):
        fastconv.im2col(x, 2, padding=((1, 0), (0, 1)), out=out)
    np.testing.assert_array_equal(buffer, before)


# ============================================================ adjoint and gradients

ADJOINT_GEOMS = ["basic", "pad1", "stride2-pad1", "asym-pad-stride-dil", "dilation2",
                 "stride>kernel-asym", "kernel=padded-input", "padding>kernel", "1x1-image-pad"]


@pytest.mark.parametrize("name", ADJOINT_GEOMS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_adjoint_identity(rng, layout, name):
    geom = GEOMS[name]
    x = make_image(rng, geom, layout)
    y = rng.standard_normal(geom.cols_shape(layout))
    lhs = np.vdot(fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs), y)
    rhs = np.vdot(x, fastconv.col2im(y, geom.hw, geom.kernel, layout=layout, **geom.kwargs))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_backward_is_col2im(rng, layout, batched):
    geom = GEOMS["asym-pad-stride-dil"]
    grad = rng.standard_normal(geom.cols_shape(layout))
    shape = geom.image_shape(layout)
    expected = ref_col2im(grad, geom, layout)
    if not batched:
        grad, shape, expected = grad[0], shape[1:], expected[0]
    result = fastconv.im2col_backward(grad, shape, geom.kernel, layout=layout, **geom.kwargs)
    assert result.shape == shape
    assert_same(result, np.ascontiguousarray(expected), exact=False)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_col2im_backward_is_im2col(rng, layout, batched):
    geom = GEOMS["asym-pad-stride-dil"]
    grad = make_image(rng, geom, layout)
    expected = ref_im2col(grad, geom, layout)
    if not batched:
        grad, expected = grad[0], expected[0]
    result = fastconv.col2im_backward(grad, geom.kernel, layout=layout, **geom.kwargs)
    assert_same(result, expected)


def test_backward_functions_accept_out(rng):
    geom = GEOMS["pad1"]
    grad_cols = rng.standard_normal(geom.cols_shape("NCHW"))
    out = np.full(geom.shape, np.nan)
    fastconv.im2col_backward(grad_cols, geom.shape, geom.kernel, out=out, **geom.kwargs)
    np.testing.assert_allclose(out, ref_col2im(grad_cols, geom, "NCHW"), rtol=1e-12)
    grad_image = rng.standard_normal(geom.shape)
    out = np.full(geom.cols_shape("NCHW"), np.nan)
    fastconv.col2im_backward(grad_image, geom.kernel, out=out, **geom.kwargs)
    np.testing.assert_array_equal(out, ref_im2col(grad_image, geom, "NCHW"))


@pytest.mark.parametrize("grad_shape, input_shape", [
    ((2, 27, 31), (2, 3, 5, 6)),       # one column too many
    ((2, 28, 30), (2, 3, 5, 6)),       # one row too many
    ((3, 27, 30), (2, 3, 5, 6)),       # batch mismatch
    ((27, 30), (2, 3, 5, 6)),          # unbatched cols for a batched input
    ((1, 27, 30), (3, 5, 6)),          # batched cols for an unbatched input
    ((2, 27, 30), (2, 3, 5, 7)),       # cols of a 5×6 image for a 5×7 one
    ((2, 27, 30), (2, 5, 6, 3)),       # an NHWC shape given with the NCHW layout
])
def test_im2col_backward_validates_grad_cols_shape(grad_shape, input_shape):
    # kernel 3, padding 1 on 5×6 → 5×6 = 30 positions, 3·9 = 27 rows.
    with pytest.raises(ValueError, match=r"im2col_backward: grad_cols.*shape"):
        fastconv.im2col_backward(np.zeros(grad_shape), input_shape, 3, padding=1)


def test_im2col_backward_validates_input_shape():
    with pytest.raises(ValueError, match=r"im2col_backward: input_shape"):
        fastconv.im2col_backward(np.zeros((4, 4)), (3, 3), 2)
    with pytest.raises(ValueError, match=r"im2col_backward: input_shape"):
        fastconv.im2col_backward(np.zeros((4, 4)), (1, 1, 1, 3, 3), 2)
    with pytest.raises(ValueError, match=r"im2col_backward: kernel_size"):
        fastconv.im2col_backward(np.zeros((1, 4, 4)), (1, 1, 3, 3), 4)


@pytest.mark.parametrize("input_shape", [5, (1, 1, 3.5, 3), (1, 1, -3, 3), None],
                         ids=["int", "float-size", "negative-size", "None"])
def test_im2col_backward_rejects_malformed_input_shape(input_shape):
    # Regression: an int gave a bare TypeError, a float size an error blaming col2im.
    with pytest.raises(ValueError, match=r"im2col_backward: input_shape"):
        fastconv.im2col_backward(np.zeros((1, 4, 4)), input_shape, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_backward_of_zero_channel_input(layout):
    shape = (2, 0, 3, 3) if layout == "NCHW" else (2, 3, 3, 0)
    cols = fastconv.im2col(np.zeros(shape), 2, layout=layout)
    assert cols.size == 0
    grad = fastconv.im2col_backward(cols, shape, 2, layout=layout)
    assert grad.shape == shape


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fastconv.im2col_backward(np.zeros((1, 4, 4), np.float16), (1, 1, 3, 3), 2),
     TypeError, r"im2col_backward: grad_cols.*float16"),
    (lambda: fastconv.col2im_backward(np.zeros((1, 1, 3, 3), np.float16), 2),
     TypeError, r"col2im_backward: grad_image.*float16"),
    (lambda: fastconv.col2im_backward(np.zeros((1, 1, 3, 3)), 0),
     ValueError, r"col2im_backward: kernel_size"),
    (lambda: fastconv.col2im_backward(np.zeros((3, 3)), 2),
     ValueError, r"col2im_backward: .*grad_image"),
], ids=["im2col_backward-dtype", "col2im_backward-dtype", "col2im_backward-kernel",
        "col2im_backward-ndim"])
def test_backward_error_messages_name_the_backward_function(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ============================================================ NCHW ↔ NHWC

@pytest.mark.parametrize("name", ["basic", "asym-pad-stride-dil", "stride>kernel-asym",
                                  "dilation-rect", "1x1-image-stride-pad", "kernel1x1"])
def test_nhwc_im2col_is_the_spec_permutation_of_nchw(rng, name):
    geom = GEOMS[name]
    x = rng.integers(-10**6, 10**6, geom.shape)
    nchw = fastconv.im2col(x, geom.kernel, layout="NCHW", **geom.kwargs)
    nhwc = fastconv.im2col(to_nhwc(x), geom.kernel, layout="NHWC", **geom.kwargs)
    np.testing.assert_array_equal(nhwc, nchw_cols_to_nhwc_cols(nchw, geom.shape[1],
                                                               geom.kernel))


@pytest.mark.parametrize("name", ["basic", "asym-pad-stride-dil", "stride>kernel-asym",
                                  "dilation2", "1x1-image-stride-pad"])
def test_nhwc_col2im_is_the_spec_permutation_of_nchw(rng, name):
    geom = GEOMS[name]
    cols = rng.integers(-10**6, 10**6, geom.cols_shape("NCHW"))
    nchw = fastconv.col2im(cols, geom.hw, geom.kernel, layout="NCHW", **geom.kwargs)
    nhwc = fastconv.col2im(nchw_cols_to_nhwc_cols(cols, geom.shape[1], geom.kernel), geom.hw,
                           geom.kernel, layout="NHWC", **geom.kwargs)
    np.testing.assert_array_equal(nhwc, to_nhwc(nchw))
    np.testing.assert_array_equal(to_nchw(nhwc), nchw)


# ============================================================ memory order

def _layouts_of(rng, shape, dtype=np.float64):
    """Arrays equal in value to one C-contiguous base, held in unusual memory orders."""
    base = random_array(rng, shape, dtype)
    big = random_array(rng, tuple(2 * s + 1 for s in shape), dtype)
    index = tuple(slice(1, 1 + 2 * s, 2) for s in shape)
    big[index] = base
    flipped = np.ascontiguousarray(base[(slice(None, None, -1),) * base.ndim])
    readonly = base.copy()
    readonly.flags.writeable = False
    first = base[:1]
    broadcast_base = np.broadcast_to(first, shape)  # zero stride on the batch axis
    return base, {
        "step-slices": (big[index], base),
        "fortran": (np.asfortranarray(base), base),
        "negative-strides": (flipped[(slice(None, None, -1),) * base.ndim], base),
        "read-only": (readonly, base),
        "broadcast": (broadcast_base, np.ascontiguousarray(broadcast_base)),
    }


MEMORY_CASES = ["step-slices", "fortran", "negative-strides", "read-only", "broadcast"]
MEMORY_GEOM = Geom((2, 2, 9, 8), (2, 3), stride=(2, 3), padding=((1, 3), (2, 0)),
                   dilation=(2, 1))


@pytest.mark.parametrize("geom", [MEMORY_GEOM, Geom((2, 3, 4, 5), 1)], ids=["asym", "1x1"])
@pytest.mark.parametrize("case", MEMORY_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_memory_order_does_not_matter(rng, layout, case, geom):
    _, cases = _layouts_of(rng, geom.image_shape(layout))
    x, contiguous = cases[case]
    assert not x.flags.c_contiguous or not x.flags.writeable
    before = np.array(x, copy=True)
    cols = fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs)
    np.testing.assert_array_equal(x, before)  # input untouched
    np.testing.assert_array_equal(cols, fastconv.im2col(contiguous, geom.kernel, layout=layout,
                                                        **geom.kwargs))
    assert_same(cols, ref_im2col(contiguous, geom, layout))


@pytest.mark.parametrize("geom", [MEMORY_GEOM, Geom((2, 3, 4, 5), 1)], ids=["asym", "1x1"])
@pytest.mark.parametrize("case", MEMORY_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_col2im_memory_order_does_not_matter(rng, layout, case, geom):
    _, cases = _layouts_of(rng, geom.cols_shape(layout))
    cols, contiguous = cases[case]
    before = np.array(cols, copy=True)
    image = fastconv.col2im(cols, geom.hw, geom.kernel, layout=layout, **geom.kwargs)
    np.testing.assert_array_equal(cols, before)
    np.testing.assert_array_equal(image, fastconv.col2im(contiguous, geom.hw, geom.kernel,
                                                         layout=layout, **geom.kwargs))
    assert_same(image, np.ascontiguousarray(ref_col2im(contiguous, geom, layout)), exact=False)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nhwc_view_of_nchw_array(rng, layout):
    # A transposed view (non-contiguous) in the other layout.
    geom = GEOMS["stride2-pad1"]
    base = rng.standard_normal(geom.shape)
    x = np.moveaxis(base, 1, 3) if layout == "NHWC" else np.moveaxis(to_nhwc(base), 3, 1)
    assert not x.flags.c_contiguous
    assert_same(fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs),
                ref_im2col(np.ascontiguousarray(x), geom, layout))


def test_inputs_are_never_modified(rng):
    geom = GEOMS["dilation2"]
    for layout in LAYOUTS:
        x = make_image(rng, geom, layout)
        x_copy = x.copy()
        cols = fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs)
        cols_copy = cols.copy()
        fastconv.col2im(cols, geom.hw, geom.kernel, layout=layout, **geom.kwargs)
        fastconv.im2col_backward(cols, x.shape, geom.kernel, layout=layout, **geom.kwargs)
        fastconv.col2im_backward(x, geom.kernel, layout=layout, **geom.kwargs)
        np.testing.assert_array_equal(x, x_copy)
        np.testing.assert_array_equal(cols, cols_copy)


# ============================================================ threads

THREAD_GEOMS = [Geom((2, 8, 40, 40), 3, padding=1),
                Geom((3, 5, 37, 41), (3, 4), stride=(2, 1), padding=((2, 1), (0, 3)),
                     dilation=(1, 2))]


@pytest.mark.parametrize("geom", THREAD_GEOMS, ids=["k3-pad1", "asym"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_bit_identical_across_thread_counts(rng, layout, geom):
    x = make_image(rng, geom, layout, np.float32)
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            results.append(fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs))
    assert results[0].size > 32768  # large enough for the parallel path
    for other in results[1:]:
        assert np.array_equal(results[0], other)
    assert_same(results[0], ref_im2col(x, geom, layout))


@pytest.mark.parametrize("geom", THREAD_GEOMS, ids=["k3-pad1", "asym"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_col2im_bit_identical_across_thread_counts(rng, layout, geom):
    cols = random_array(rng, geom.cols_shape(layout), np.float32)
    assert cols.size > 32768
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            results.append(fastconv.col2im(cols, geom.hw, geom.kernel, layout=layout,
                                           **geom.kwargs))
    for other in results[1:]:
        assert np.array_equal(results[0], other)
    expected = ref_col2im(cols.astype(np.float64), geom, layout)
    np.testing.assert_allclose(results[0], expected, rtol=1e-5, atol=1e-5)


# ============================================================ PyTorch

TORCH_GEOMS = {
    "basic": Geom((2, 3, 6, 7), 3),
    "pad-stride": Geom((2, 3, 8, 9), 3, stride=2, padding=1),
    "rect": Geom((1, 2, 7, 9), (2, 4), stride=(2, 1), padding=(0, 2)),
    "dilation": Geom((2, 2, 9, 9), 3, padding=2, dilation=2),
    "dilation-rect-stride": Geom((1, 3, 11, 10), (2, 3), stride=(3, 2), padding=(1, 0),
                                 dilation=(3, 2)),
    "stride>kernel": Geom((2, 2, 10, 10), 2, stride=3, padding=1),
    "1x1": Geom((2, 4, 5, 5), 1),
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", list(TORCH_GEOMS))
def test_im2col_equals_torch_unfold(torch, rng, name, dtype):
    geom = TORCH_GEOMS[name]
    x = random_array(rng, geom.shape, dtype)
    expected = torch.nn.functional.unfold(
        torch.from_numpy(x), kernel_size=geom.kernel, dilation=geom.dilation,
        padding=geom.padding, stride=geom.stride).numpy()
    assert_same(fastconv.im2col(x, geom.kernel, **geom.kwargs), expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", list(TORCH_GEOMS))
def test_col2im_equals_torch_fold(torch, rng, name, dtype):
    geom = TORCH_GEOMS[name]
    cols = random_array(rng, geom.cols_shape("NCHW"), dtype)
    expected = torch.nn.functional.fold(
        torch.from_numpy(cols), output_size=geom.hw, kernel_size=geom.kernel,
        dilation=geom.dilation, padding=geom.padding, stride=geom.stride).numpy()
    assert_same(fastconv.col2im(cols, geom.hw, geom.kernel, **geom.kwargs), expected,
                exact=False)


@pytest.mark.parametrize("name", ["pad-stride", "dilation-rect-stride"])
def test_nhwc_equals_torch_unfold_reordered(torch, rng, name):
    geom = TORCH_GEOMS[name]
    x = rng.standard_normal(geom.shape)
    n, c = geom.shape[:2]
    kh, kw = pair(geom.kernel)
    unfolded = torch.nn.functional.unfold(
        torch.from_numpy(x), kernel_size=geom.kernel, dilation=geom.dilation,
        padding=geom.padding, stride=geom.stride)
    # (N, C·kh·kw, L) → (N, C, kh, kw, L) → (N, L, kh, kw, C): the NHWC patch order.
    expected = unfolded.reshape(n, c, kh, kw, -1).permute(0, 4, 2, 3, 1).reshape(n, -1,
                                                                                 kh * kw * c)
    assert_same(fastconv.im2col(to_nhwc(x), geom.kernel, layout="NHWC", **geom.kwargs),
                expected.numpy())


@pytest.mark.parametrize("geom", [GEOMS["asym-pad"], GEOMS["asym-pad-stride-dil"],
                                  GEOMS["stride>kernel-asym"]], ids=["a", "b", "c"])
def test_asymmetric_padding_equals_torch_pad_then_unfold_and_fold_then_crop(torch, rng, geom):
    F = torch.nn.functional
    (top, bottom), (left, right) = pads(geom.padding)
    x = rng.standard_normal(geom.shape)
    padded = F.pad(torch.from_numpy(x), (left, right, top, bottom))
    expected = F.unfold(padded, geom.kernel, dilation=geom.dilation, stride=geom.stride)
    assert_same(fastconv.im2col(x, geom.kernel, **geom.kwargs), expected.numpy())

    h, w = geom.hw
    cols = rng.standard_normal(geom.cols_shape("NCHW"))
    folded = F.fold(torch.from_numpy(cols), (h + top + bottom, w + left + right), geom.kernel,
                    dilation=geom.dilation, stride=geom.stride)
    expected = folded[:, :, top:top + h, left:left + w].contiguous().numpy()
    assert_same(fastconv.col2im(cols, geom.hw, geom.kernel, **geom.kwargs), expected,
                exact=False)


# ============================================================ property tests

@st.composite
def geometries(draw):
    """A random small geometry whose window fits the padded image (H or W may be 0)."""
    layout = draw(st.sampled_from(LAYOUTS))
    n = draw(st.integers(0, 2))
    c = draw(st.integers(1, 3))
    square = draw(st.booleans())
    kh = draw(st.integers(1, 4))
    kw = kh if square else draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    form = draw(st.sampled_from(["int", "pair", "full"]))
    top, bottom, left, right = (draw(st.integers(0, 3)) for _ in range(4))
    if form == "int":
        bottom = left = right = top
        padding = top
    elif form == "pair":
        bottom, right = top, left
        padding = (top, left)
    else:
        padding = ((top, bottom), (left, right))
    min_h = max(0, dh * (kh - 1) + 1 - top - bottom)
    min_w = max(0, dw * (kw - 1) + 1 - left - right)
    h = draw(st.integers(min_h, min_h + 6))
    w = draw(st.integers(min_w, min_w + 6))
    kernel = kh if square else (kh, kw)
    stride = sh if sh == sw else (sh, sw)
    dilation = dh if dh == dw else (dh, dw)
    return layout, Geom((n, c, h, w), kernel, stride, padding, dilation)


@settings(max_examples=300, deadline=None)
@given(geometries(), st.integers(0, 2**32 - 1))
def test_property_im2col_matches_reference(case, seed):
    layout, geom = case
    x = random_array(np.random.default_rng(seed), geom.image_shape(layout), np.float64)
    cols = fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs)
    assert_same(cols, ref_im2col(x, geom, layout))


@settings(max_examples=200, deadline=None)
@given(geometries(), st.integers(0, 2**32 - 1))
def test_property_col2im_matches_reference(case, seed):
    layout, geom = case
    cols = np.random.default_rng(seed).integers(-100, 100, geom.cols_shape(layout))
    image = fastconv.col2im(cols, geom.hw, geom.kernel, layout=layout, **geom.kwargs)
    assert_same(image, ref_col2im(cols, geom, layout))


@settings(max_examples=200, deadline=None)
@given(geometries(), st.integers(0, 2**32 - 1))
def test_property_adjoint_identity(case, seed):
    layout, geom = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(geom.image_shape(layout))
    y = rng.standard_normal(geom.cols_shape(layout))
    lhs = np.vdot(fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs), y)
    rhs = np.vdot(x, fastconv.col2im(y, geom.hw, geom.kernel, layout=layout, **geom.kwargs))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@settings(max_examples=300, deadline=None)
@given(geometries())
def test_property_output_shape_formula(case):
    layout, geom = case
    n, c, h, w = geom.shape
    kh, kw = pair(geom.kernel)
    (sh, sw), (dh, dw) = pair(geom.stride), pair(geom.dilation)
    (top, bottom), (left, right) = pads(geom.padding)
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    x = np.zeros(geom.image_shape(layout), np.float32)
    cols = fastconv.im2col(x, geom.kernel, layout=layout, **geom.kwargs)
    expected = (n, c * kh * kw, oh * ow) if layout == "NCHW" else (n, oh * ow, kh * kw * c)
    assert cols.shape == expected
    assert not cols.any()
    image = fastconv.col2im(cols, (h, w), geom.kernel, layout=layout, **geom.kwargs)
    assert image.shape == x.shape


# ============================================================ errors

X4 = np.zeros((2, 3, 5, 5))

IM2COL_VALUE_ERRORS = {
    # name: (x, kwargs, match)
    "layout-typo": (X4, dict(kernel_size=2, layout="NCWH"), r"im2col: layout.*'NCHW'.*'NHWC'"),
    "layout-None": (X4, dict(kernel_size=2, layout=None), r"im2col: layout.*'NCHW'.*'NHWC'"),
    "layout-empty": (X4, dict(kernel_size=2, layout=""), r"im2col: layout.*'NCHW'.*'NHWC'"),
    "x-2d": (np.zeros((5, 5)), dict(kernel_size=2), r"im2col: .*x.*\(5, 5\)"),
    "x-1d": (np.zeros(5), dict(kernel_size=1), r"im2col: .*x.*\(5,\)"),
    "x-5d": (np.zeros((1, 2, 3, 5, 5)), dict(kernel_size=2), r"im2col: .*x.*\(1, 2, 3, 5, 5\)"),
    "x-0d": (np.float64(1.0), dict(kernel_size=1), r"im2col: .*x"),
    "x-2d-nhwc": (np.zeros((5, 5)), dict(kernel_size=2, layout="NHWC"), r"im2col: .*x.*NHWC"),
    "kernel-0": (X4, dict(kernel_size=0), r"im2col: kernel_size.*0"),
    "kernel-neg": (X4, dict(kernel_size=-2), r"im2col: kernel_size.*-2"),
    "kernel-pair-0": (X4, dict(kernel_size=(2, 0)), r"im2col: kernel_size.*0"),
    "kernel-float": (X4, dict(kernel_size=2.0), r"im2col: kernel_size.*2\.0"),
    "kernel-float-in-pair": (X4, dict(kernel_size=(2, 1.5)), r"im2col: kernel_size.*1\.5"),
    "kernel-bool": (X4, dict(kernel_size=True), r"im2col: kernel_size.*True"),
    "kernel-str": (X4, dict(kernel_size="3"), r"im2col: kernel_size"),
    "kernel-None": (X4, dict(kernel_size=None), r"im2col: kernel_size.*None"),
    # (a 3-tuple means volumes, docs/spec.md §6: tests/test_conv3d.py)
    "kernel-len4": (X4, dict(kernel_size=(1, 2, 3, 4)), r"im2col: kernel_size.*\(1, 2, 3, 4\)"),
    "kernel-len1": (X4, dict(kernel_size=(2,)), r"im2col: kernel_size.*\(2,\)"),
    "stride-0": (X4, dict(kernel_size=2, stride=0), r"im2col: stride.*0"),
    "stride-neg": (X4, dict(kernel_size=2, stride=(1, -1)), r"im2col: stride.*-1"),
    "stride-float": (X4, dict(kernel_size=2, stride=1.5), r"im2col: stride.*1\.5"),
    "stride-bool": (X4, dict(kernel_size=2, stride=True), r"im2col: stride"),
    "stride-len3": (X4, dict(kernel_size=2, stride=(1, 1, 1)), r"im2col: stride"),
    "dilation-0": (X4, dict(kernel_size=2, dilation=0), r"im2col: dilation.*0"),
    "dilation-neg": (X4, dict(kernel_size=2, dilation=-1), r"im2col: dilation.*-1"),
    "dilation-float": (X4, dict(kernel_size=2, dilation=(1, 2.0)), r"im2col: dilation"),
    "dilation-len1": (X4, dict(kernel_size=2, dilation=[1]), r"im2col: dilation"),
    "padding-neg": (X4, dict(kernel_size=2, padding=-1), r"im2col: padding.*-1"),
    "padding-pair-neg": (X4, dict(kernel_size=2, padding=(0, -1)), r"im2col: padding.*-1"),
    "padding-full-neg": (X4, dict(kernel_size=2, padding=((0, 1), (-1, 0))),
                         r"im2col: padding.*-1"),
    "padding-float": (X4, dict(kernel_size=2, padding=1.5), r"im2col: padding.*1\.5"),
    "padding-len3": (X4, dict(kernel_size=2, padding=(1, 1, 1)), r"im2col: padding"),
    "padding-len1": (X4, dict(kernel_size=2, padding=((1, 1),)), r"im2col: padding"),
    "padding-3-pairs": (X4, dict(kernel_size=2, padding=((1, 2), (1, 2), (1, 2))),
                        r"im2col: padding"),
    "padding-triple": (X4, dict(kernel_size=2, padding=((1, 2, 3), (0, 0))), r"im2col: padding"),
    "padding-mixed": (X4, dict(kernel_size=2, padding=(1, (1, 2))), r"im2col: padding"),
    "padding-None": (X4, dict(kernel_size=2, padding=None), r"im2col: padding"),
    "padding-str": (X4, dict(kernel_size=2, padding="same"), r"im2col: padding"),
    "kernel>input": (X4, dict(kernel_size=6), r"im2col: kernel_size.*6"),
    "kernel>padded-input": (X4, dict(kernel_size=(8, 3), padding=((1, 1), (0, 0))),
                            r"im2col: kernel_size.*8"),
    "dilated-kernel>input": (X4, dict(kernel_size=(3, 4), dilation=2), r"im2col: kernel_size"),
    "kernel>input-W": (X4, dict(kernel_size=(1, 6), padding=((3, 3), (0, 0))),
                       r"im2col: kernel_size.*width"),
    "kernel>empty-image": (np.zeros((1, 1, 0, 4)), dict(kernel_size=1), r"im2col: kernel_size"),
}


@pytest.mark.parametrize("name", list(IM2COL_VALUE_ERRORS))
def test_im2col_value_errors(name):
    x, kwargs, match = IM2COL_VALUE_ERRORS[name]
    with pytest.raises(ValueError, match=match):
        fastconv.im2col(x, **kwargs)


@pytest.mark.parametrize("name, argument", [
    ("kernel-0", "kernel_size"), ("kernel-float", "kernel_size"), ("stride-0", "stride"),
    ("dilation-neg", "dilation"), ("padding-neg", "padding"), ("padding-mixed", "padding"),
    ("kernel>input", "kernel_size"), ("layout-typo", "layout"), ("x-2d", "x"),
])
def test_col2im_backward_value_errors(name, argument):
    x, kwargs, _ = IM2COL_VALUE_ERRORS[name]
    with pytest.raises(ValueError, match=argument):
        fastconv.col2im_backward(x, **kwargs)


BAD_DTYPES = [np.float16, np.complex64, np.complex128, np.longdouble, object, "U1",
              "datetime64[s]", "timedelta64[s]"]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
def test_im2col_rejects_unsupported_dtypes(dtype):
    x = np.zeros((1, 2, 3, 3)).astype(dtype)
    name = re.escape(np.dtype(dtype).name if np.dtype(dtype).kind != "U" else "U1")
    with pytest.raises(TypeError, match=rf"im2col: x.*{name}"):
        fastconv.im2col(x, 2)


@pytest.mark.parametrize("dtype", BAD_DTYPES + [np.bool_], ids=str)
def test_col2im_rejects_unsupported_dtypes(dtype):
    cols = np.zeros((1, 4, 4)).astype(dtype)
    name = re.escape(np.dtype(dtype).name if np.dtype(dtype).kind != "U" else "U1")
    with pytest.raises(TypeError, match=rf"col2im: cols.*{name}"):
        fastconv.col2im(cols, (3, 3), 2)


@pytest.mark.parametrize("dtype", [np.float16, np.complex128, object])
def test_backward_functions_reject_unsupported_dtypes(dtype):
    name = np.dtype(dtype).name
    with pytest.raises(TypeError, match=name):
        fastconv.im2col_backward(np.zeros((1, 4, 4)).astype(dtype), (1, 1, 3, 3), 2)
    with pytest.raises(TypeError, match=name):
        fastconv.col2im_backward(np.zeros((1, 1, 3, 3)).astype(dtype), 2)


C3 = np.zeros((2, 12, 9))  # C=3, k=2, output 4×4 → 3×3 = 9 positions

COL2IM_VALUE_ERRORS = {
    # name: (cols, output_size, kwargs, match)
    "layout-typo": (C3, (4, 4), dict(kernel_size=2, layout="NHCW"),
                    r"col2im: layout.*'NCHW'.*'NHWC'"),
    "cols-1d": (np.zeros(9), (4, 4), dict(kernel_size=2), r"col2im: .*cols.*\(9,\)"),
    "cols-4d": (np.zeros((1, 2, 12, 9)), (4, 4), dict(kernel_size=2),
                r"col2im: .*cols.*\(1, 2, 12, 9\)"),
    "rows-not-multiple": (np.zeros((2, 13, 9)), (4, 4), dict(kernel_size=2),
                          r"col2im: cols.*13"),
    "rows-0": (np.zeros((2, 0, 9)), (4, 4), dict(kernel_size=2), r"col2im: cols.*0"),
    "rows-not-multiple-2d": (np.zeros((10, 9)), (4, 4), dict(kernel_size=2),
                             r"col2im: cols.*10"),
    "nhwc-channels-not-multiple": (np.zeros((2, 9, 13)), (4, 4),
                                   dict(kernel_size=2, layout="NHWC"), r"col2im: cols.*13"),
    "positions-too-many": (np.zeros((2, 12, 10)), (4, 4), dict(kernel_size=2),
                           r"col2im: cols.*10.*output_size"),
    "positions-too-few": (np.zeros((2, 12, 8)), (4, 4), dict(kernel_size=2),
                          r"col2im: cols.*8.*output_size"),
    "positions-stride": (C3, (4, 4), dict(kernel_size=2, stride=2), r"col2im: cols.*9"),
    "positions-nhwc": (np.zeros((2, 12, 12)), (4, 4), dict(kernel_size=2, layout="NHWC"),
                       r"col2im: cols.*12.*output_size"),
    "output_size-neg": (C3, (-4, 4), dict(kernel_size=2), r"col2im: output_size.*-4"),
    "output_size-len3": (C3, (4, 4, 4), dict(kernel_size=2), r"col2im: output_size"),
    "output_size-float": (C3, 4.0, dict(kernel_size=2), r"col2im: output_size.*4\.0"),
    "output_size-None": (C3, None, dict(kernel_size=2), r"col2im: output_size"),
    "kernel-0": (C3, (4, 4), dict(kernel_size=0), r"col2im: kernel_size.*0"),
    "kernel-float": (C3, (4, 4), dict(kernel_size=2.5), r"col2im: kernel_size.*2\.5"),
    "kernel-len4": (C3, (4, 4), dict(kernel_size=(2, 2, 1, 1)), r"col2im: kernel_size"),
    "stride-0": (C3, (4, 4), dict(kernel_size=2, stride=0), r"col2im: stride.*0"),
    "dilation-neg": (C3, (4, 4), dict(kernel_size=2, dilation=(-1, 1)), r"col2im: dilation"),
    "padding-neg": (C3, (4, 4), dict(kernel_size=2, padding=-1), r"col2im: padding.*-1"),
    "padding-malformed": (C3, (4, 4), dict(kernel_size=2, padding=((1,), (1, 1))),
                          r"col2im: padding"),
    "kernel>padded-output": (np.zeros((2, 12, 1)), (1, 1), dict(kernel_size=2),
                             r"col2im: kernel_size"),
}


@pytest.mark.parametrize("name", list(COL2IM_VALUE_ERRORS))
def test_col2im_value_errors(name):
    cols, output_size, kwargs, match = COL2IM_VALUE_ERRORS[name]
    with pytest.raises(ValueError, match=match):
        fastconv.col2im(cols, output_size, **kwargs)


@pytest.mark.parametrize("call", [
    lambda: fastconv.im2col(np.zeros((1, 1, 1, 1)), 1, padding=2**40),
    lambda: fastconv.im2col(np.zeros((1, 1, 1, 1)), 2**40, padding=2**40),
    lambda: fastconv.im2col(np.zeros((1, 1, 1, 1), np.uint8), (1, 2**62),
                            padding=((0, 0), (2**62, 0))),
    lambda: fastconv.col2im(np.zeros((1, 1, 1)), (2**40, 2**40), 1),
], ids=["huge-padding", "huge-kernel", "huge-row", "huge-col2im"])
def test_huge_sizes_fail_cleanly(call):
    with pytest.raises((MemoryError, ValueError)):
        call()
