"""fastconv.reference's convolutions (the oracles of the other test files) against each
other, against a per-output-element formula written here, and against PyTorch.

The reference works on NHWC input and HWIO weight. The formula below never pads an array:
it reads x[n, oh·sh − top + i·dh, ow·sw − left + j·dw, c] and treats out-of-range indices
as zero, straight from docs/spec.md §0/§1, so it shares no code with ``reference.pad_nhwc``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from fastconv import reference

from conftest import naive_col2im_nchw, naive_im2col_nchw, out_hw, pads, pair


class RGeom(NamedTuple):
    """A reference-convolution geometry: NHWC input (N, H, W, C), C_out, kernel (kh, kw)."""

    n: int
    h: int
    w: int
    c: int
    c_out: int
    kernel: object
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, rng, dtype=np.float64):
        kh, kw = pair(self.kernel)
        x = rng.standard_normal((self.n, self.h, self.w, self.c)).astype(dtype)
        w = rng.standard_normal((kh, kw, self.c // self.groups, self.c_out)).astype(dtype)
        return x, w


def formula_conv_nhwc(x, w, stride=1, padding=0, dilation=1, groups=1):
    """out[n, oh, ow, o] = Σ_{i, j, c} x[n, oh·sh − top + i·dh, ow·sw − left + j·dw,
    g·Cg + c] · w[i, j, c, o] with g = o // (C_out/groups), out-of-image reads being 0.
    Computed one output element at a time, in float64."""
    n_, h_, w_, _ = x.shape
    kh, kw, cin_g, c_out = w.shape
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    (top, bottom), (left, right) = pads(padding)
    oh_, ow_ = out_hw(h_, w_, (kh, kw), stride, padding, dilation)
    cout_g = c_out // groups
    out = np.zeros((n_, oh_, ow_, c_out), dtype=np.float64)
    for n in range(n_):
        for oh in range(oh_):
            for ow in range(ow_):
                for o in range(c_out):
                    g = o // cout_g
                    total = 0.0
                    for i in range(kh):
                        hh = oh * sh - top + i * dh
                        if not 0 <= hh < h_:
                            continue
                        for j in range(kw):
                            ww = ow * sw - left + j * dw
                            if not 0 <= ww < w_:
                                continue
                            total += float(np.dot(x[n, hh, ww, g * cin_g:(g + 1) * cin_g]
                                                  .astype(np.float64),
                                                  w[i, j, :, o].astype(np.float64)))
                    out[n, oh, ow, o] = total
    return out


def torch_conv_nhwc(torch, x, w, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d on the NCHW/OIHW transposes; asymmetric padding by F.pad."""
    F = torch.nn.functional
    (top, bottom), (left, right) = pads(padding)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    xt = F.pad(xt, (left, right, top, bottom))
    y = F.conv2d(xt, wt, None, stride=pair(stride), padding=0, dilation=pair(dilation),
                 groups=groups)
    return y.numpy().transpose(0, 2, 3, 1)


# Tiny geometries: conv2d_naive is seven Python loops.
TINY = {
    "basic": RGeom(2, 4, 5, 2, 3, 3),
    "pad1": RGeom(1, 4, 4, 2, 2, 3, padding=1),
    "pad-pair": RGeom(1, 3, 5, 1, 2, (2, 3), padding=(2, 1)),
    "pad-asym": RGeom(1, 4, 5, 2, 2, (3, 2), padding=((0, 2), (1, 0))),
    "stride2": RGeom(1, 5, 6, 2, 2, 3, stride=2, padding=1),
    "stride-rect": RGeom(2, 6, 7, 1, 2, (2, 3), stride=(3, 2)),
    "stride>kernel": RGeom(1, 7, 7, 2, 2, 2, stride=3),
    "dilation2": RGeom(1, 6, 6, 2, 2, 3, padding=2, dilation=2),
    "dilation-rect": RGeom(1, 6, 7, 1, 2, 2, stride=(1, 2), padding=((1, 0), (0, 2)),
                           dilation=(3, 2)),
    "groups2": RGeom(1, 4, 4, 4, 6, 2, groups=2),
    "depthwise": RGeom(2, 4, 3, 3, 3, 3, padding=1, groups=3),
    "depthwise-mult2": RGeom(1, 4, 4, 2, 4, 2, stride=2, padding=1, groups=2),
    "1x1": RGeom(2, 3, 4, 3, 2, 1),
    "1x1-strided": RGeom(1, 5, 5, 2, 3, 1, stride=2),
    "kernel=padded-input": RGeom(1, 3, 2, 2, 2, (5, 4), padding=1),
    "1x1-image": RGeom(2, 1, 1, 2, 3, 3, padding=1),
}

# Larger ones for the two vectorised references (still small).
MEDIUM = {
    "basic": RGeom(2, 9, 11, 4, 6, 3, padding=1),
    "asym-all": RGeom(3, 10, 8, 6, 9, (3, 2), stride=(2, 3), padding=((2, 0), (1, 3)),
                      dilation=(1, 2), groups=3),
    "depthwise": RGeom(2, 8, 8, 5, 5, 3, stride=2, padding=1, groups=5),
    "big-dilation": RGeom(1, 12, 12, 2, 4, 3, padding=((4, 4), (0, 1)), dilation=4, groups=2),
    "1x1": RGeom(2, 6, 5, 8, 4, 1),
    "batch0": RGeom(0, 5, 5, 2, 3, 3, padding=1),
}


# ------------------------------------------------------------------ the formula itself
def test_formula_hand_computed_example():
    # One channel, 3×3 image 1..9, 2×2 kernel of ones, padding 1 on top/left only:
    # each output is the sum of the 2×2 window at (oh - 1, ow - 1).
    x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    w = np.ones((2, 2, 1, 1))
    got = formula_conv_nhwc(x, w, padding=((1, 0), (1, 0)))[0, :, :, 0]
    expected = np.array([[1, 3, 5], [5, 12, 16], [11, 24, 28]], dtype=float)
    np.testing.assert_array_equal(got, expected)


def test_formula_groups_and_stride_hand_computed():
    # Two groups of one channel each, stride 2, dilation 2: output o reads channel o only.
    x = np.arange(2 * 5 * 5, dtype=float).reshape(1, 5, 5, 2)
    w = np.zeros((2, 2, 1, 2))
    w[0, 0, 0, 0] = 1.0   # group 0: top-left tap of channel 0
    w[1, 1, 0, 1] = 10.0  # group 1: bottom-right tap (2 pixels away, dilation 2) of channel 1
    got = formula_conv_nhwc(x, w, stride=2, dilation=2, groups=2)
    assert got.shape == (1, 2, 2, 2)  # (5 - 2·(2-1) - 1)//2 + 1 = 2
    for a in range(2):
        for b in range(2):
            assert got[0, a, b, 0] == x[0, 2 * a, 2 * b, 0]
            assert got[0, a, b, 1] == 10.0 * x[0, 2 * a + 2, 2 * b + 2, 1]


# ------------------------------------------------------------------ the three references
@pytest.mark.parametrize("name", list(TINY))
def test_naive_matmul_strided_agree_with_formula(rng, name):
    geom = TINY[name]
    x, w = geom.arrays(rng)
    expected = formula_conv_nhwc(x, w, **geom.kwargs)
    for fn in (reference.conv2d_naive, reference.conv2d_matmul, reference.conv2d_strided):
        got = fn(x, w, **geom.kwargs)
        assert got.shape == expected.shape, fn.__name__
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=fn.__name__)


@pytest.mark.parametrize("name", list(MEDIUM))
def test_matmul_and_strided_agree_with_formula(rng, name):
    geom = MEDIUM[name]
    x, w = geom.arrays(rng)
    expected = formula_conv_nhwc(x, w, **geom.kwargs)
    for fn in (reference.conv2d_matmul, reference.conv2d_strided):
        got = fn(x, w, **geom.kwargs)
        assert got.shape == expected.shape, fn.__name__
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=fn.__name__)


@pytest.mark.parametrize("fn", [reference.conv2d_naive, reference.conv2d_matmul,
                                reference.conv2d_strided], ids=lambda f: f.__name__)
def test_float32_stays_float32_and_inputs_untouched(rng, fn):
    geom = TINY["depthwise-mult2"]
    x, w = geom.arrays(rng, np.float32)
    x0, w0 = x.copy(), w.copy()
    got = fn(x, w, **geom.kwargs)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)
    expected = formula_conv_nhwc(x, w, **geom.kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [reference.conv2d_matmul, reference.conv2d_strided],
                         ids=lambda f: f.__name__)
def test_non_contiguous_input_same_as_contiguous(rng, fn):
    geom = MEDIUM["asym-all"]
    x, w = geom.arrays(rng)
    xf = np.asfortranarray(x)
    xneg = np.ascontiguousarray(x[:, ::-1])[:, ::-1]
    expected = fn(x, w, **geom.kwargs)
    np.testing.assert_allclose(fn(xf, np.asfortranarray(w), **geom.kwargs), expected,
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(fn(xneg, w, **geom.kwargs), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["basic", "pad-asym", "stride-rect", "dilation-rect",
                                  "groups2", "depthwise", "1x1-strided",
                                  "kernel=padded-input"])
def test_references_agree_with_torch(rng, torch, name):
    geom = TINY[name]
    x, w = geom.arrays(rng)
    expected = torch_conv_nhwc(torch, x, w, **geom.kwargs)
    for fn in (reference.conv2d_naive, reference.conv2d_matmul, reference.conv2d_strided):
        np.testing.assert_allclose(fn(x, w, **geom.kwargs), expected, rtol=1e-12, atol=1e-12,
                                   err_msg=fn.__name__)


@pytest.mark.parametrize("name", list(MEDIUM))
def test_strided_agrees_with_torch_medium(rng, torch, name):
    geom = MEDIUM[name]
    x, w = geom.arrays(rng)
    np.testing.assert_allclose(reference.conv2d_strided(x, w, **geom.kwargs),
                               torch_conv_nhwc(torch, x, w, **geom.kwargs),
                               rtol=1e-12, atol=1e-12)


def test_padding_forms_are_equivalent(rng):
    x, w = RGeom(1, 5, 6, 2, 2, 3).arrays(rng)
    for fn in (reference.conv2d_naive, reference.conv2d_matmul, reference.conv2d_strided):
        a = fn(x, w, padding=1)
        b = fn(x, w, padding=(1, 1))
        c = fn(x, w, padding=((1, 1), (1, 1)))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        # Asymmetric: ((0, 2), (1, 0)) differs from symmetric and has the right size.
        d = fn(x, w, padding=((0, 2), (1, 0)))
        assert d.shape == (1, 5, 5, 2)


# ------------------------------------------------------------------ reference im2col/col2im
@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1),
                                    dict(kernel_size=(2, 3), stride=(2, 1),
                                         padding=((1, 0), (0, 2)), dilation=(1, 2))],
                         ids=["k3p1", "asym"])
def test_reference_im2col_col2im_match_elementwise_formulas(rng, kwargs):
    x = rng.standard_normal((2, 3, 5, 6))
    cols = reference.im2col(x, **kwargs)
    np.testing.assert_array_equal(cols, naive_im2col_nchw(x, **kwargs))
    back = reference.col2im(cols, (5, 6), **kwargs)
    np.testing.assert_allclose(back, naive_col2im_nchw(cols, (5, 6), **kwargs), rtol=1e-13,
                               atol=1e-13)


@pytest.mark.parametrize("stride, padding, dilation, groups", [
    (1, 0, 1, 1), (2, ((1, 0), (2, 1)), 1, 2), (1, 1, 2, 3), (3, 2, 1, 1)])
def test_reference_conv2d_backward_matches_finite_differences(stride, padding, dilation, groups):
    rng = np.random.default_rng(7)
    Z = rng.standard_normal((2, 6, 7, 6))
    W = rng.standard_normal((2, 3, 6 // groups, 6))
    G = rng.standard_normal(reference.conv2d_strided(Z, W, stride, padding, dilation, groups).shape)

    def loss(Z_, W_):
        result = reference.conv2d_strided(Z_, W_, stride, padding, dilation, groups)
        return float(np.sum(result * G))

    grad_Z, grad_W, grad_b = reference.conv2d_backward(G, Z, W, stride, padding, dilation, groups)
    eps = 1e-6
    for array, grad in ((Z, grad_Z), (W, grad_W)):
        for index in [tuple(rng.integers(0, s) for s in array.shape) for _ in range(6)]:
            plus, minus = array.copy(), array.copy()
            plus[index] += eps
            minus[index] -= eps
            args_p = (plus, W) if array is Z else (Z, plus)
            args_m = (minus, W) if array is Z else (Z, minus)
            numeric = (loss(*args_p) - loss(*args_m)) / (2 * eps)
            assert grad[index] == pytest.approx(numeric, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(grad_b, G.sum(axis=(0, 1, 2)))
