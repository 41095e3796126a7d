"""conv2d, conv2d_backward and conv_transpose2d (docs/spec.md §0, §2) against independent oracles.

Oracles: ``fastconv.reference`` (NumPy only: conv2d_strided for the forward; reference
im2col + matmul + reference col2im for the backward), float64 central finite differences,
adjoint identities, and PyTorch (``F.conv2d`` / autograd / ``F.conv_transpose2d``) when
torch is importable.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import tracemalloc
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _engine, _tuning, conv2d, conv2d_backward, conv_transpose2d, reference
from fastconv import geometry as geo

from conftest import out_hw, pads, pair
from planned import backward_by, conv2d_by, plan_with

LAYOUTS = ["NCHW", "NHWC"]
DTYPES = [np.float32, np.float64]
TOL = {np.dtype(np.float32): dict(rtol=1e-4, atol=2e-5),
       np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}


def tol(dtype):
    return TOL[np.dtype(dtype)]


# ------------------------------------------------------------------ oracles
def resolve_padding(padding, kernel, dilation):
    """'valid' / 'same' (extra pixel bottom/right, as PyTorch) / numeric → ((t, b), (l, r))."""
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return ((0, 0), (0, 0))
        assert padding.lower() == "same"
        result = []
        for k, d in zip(pair(kernel), pair(dilation)):
            total = d * (k - 1)
            result.append((total // 2, total - total // 2))
        return tuple(result)
    return pads(padding)


def to_nhwc_hwio(x4, w, layout):
    if layout == "NCHW":
        return x4.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    return x4, w


def ref_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """float64 result of reference.conv2d_strided in the given layout (3-D input allowed)."""
    single = x.ndim == 3
    x4 = (x[None] if single else x).astype(np.float64)
    xz, wz = to_nhwc_hwio(x4, w.astype(np.float64), layout)
    kernel = wz.shape[:2]
    y = reference.conv2d_strided(xz, wz, stride, resolve_padding(padding, kernel, dilation),
                                 dilation, groups)
    if bias is not None:
        y = y + bias.astype(np.float64)
    if layout == "NCHW":
        y = y.transpose(0, 3, 1, 2)
    return y[0] if single else y


def ref_conv2d_backward(g, x, w, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """float64 (grad_input, grad_weight, grad_bias) from reference.im2col / col2im and
    per-group matmuls, all in NCHW: grad_cols = Wᵀ·g, grad_x = col2im(grad_cols),
    grad_w = Σ_n g·colsᵀ."""
    single = x.ndim == 3
    x4 = (x[None] if single else x).astype(np.float64)
    g4 = (g[None] if single else g).astype(np.float64)
    w = w.astype(np.float64)
    if layout == "NHWC":
        x4, g4, w = x4.transpose(0, 3, 1, 2), g4.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    n, c, h, wd = x4.shape
    c_out, cin_g, kh, kw = w.shape
    pad = resolve_padding(padding, (kh, kw), dilation)
    kwargs = dict(stride=stride, padding=pad, dilation=dilation)
    cols = reference.im2col(x4, (kh, kw), **kwargs)             # (N, C·kh·kw, P)
    gflat = g4.reshape(n, c_out, g4.shape[2] * g4.shape[3])      # (N, C_out, P)
    mg, kg = c_out // groups, cin_g * kh * kw
    wflat = w.reshape(c_out, kg)
    grad_cols = np.empty_like(cols)
    grad_w = np.empty_like(wflat)
    for grp in range(groups):
        o, k = slice(grp * mg, (grp + 1) * mg), slice(grp * kg, (grp + 1) * kg)
        grad_cols[:, k] = np.einsum("ok,nop->nkp", wflat[o], gflat[:, o])
        grad_w[o] = np.einsum("nop,nkp->ok", gflat[:, o], cols[:, k])
    grad_x = reference.col2im(grad_cols, (h, wd), (kh, kw), **kwargs)
    grad_w = grad_w.reshape(w.shape)
    grad_b = g4.sum(axis=(0, 2, 3))
    if layout == "NHWC":
        grad_x, grad_w = grad_x.transpose(0, 2, 3, 1), grad_w.transpose(2, 3, 1, 0)
    return (grad_x[0] if single else grad_x), grad_w, grad_b


def torch_t(torch, a):
    return torch.from_numpy(np.ascontiguousarray(a))


def torch_conv2d_grads(torch, x, w, b, g, stride, padding, dilation, groups, layout):
    """(y, grad_x, grad_w, grad_b) by torch autograd; asymmetric padding via F.pad."""
    F = torch.nn.functional
    if layout == "NHWC":
        x, w, g = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), g.transpose(0, 3, 1, 2)
    (top, bottom), (left, right) = resolve_padding(padding, w.shape[2:], dilation)
    xt = torch_t(torch, x).requires_grad_(True)
    wt = torch_t(torch, w).requires_grad_(True)
    bt = None if b is None else torch_t(torch, b).requires_grad_(True)
    y = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=pair(stride),
                 dilation=pair(dilation), groups=groups)
    (y * torch_t(torch, g)).sum().backward()
    res = [y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
           None if b is None else bt.grad.numpy()]
    if layout == "NHWC":
        res[0], res[1] = res[0].transpose(0, 2, 3, 1), res[1].transpose(0, 2, 3, 1)
        res[2] = res[2].transpose(2, 3, 1, 0)
    return res


# ------------------------------------------------------------------ geometries
class CGeom(NamedTuple):
    """A conv2d geometry given in NCHW terms: input (N, C, H, W), C_out, kernel."""

    n: int
    c: int
    h: int
    w: int
    c_out: int
    kernel: object
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = False

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, rng, dtype=np.float64, layout="NCHW"):
        kh, kw = pair(self.kernel)
        fan_in = self.c // self.groups * kh * kw
        x = rng.standard_normal((self.n, self.c, self.h, self.w))
        w = rng.standard_normal((self.c_out, self.c // self.groups, kh, kw)) / np.sqrt(fan_in)
        b = rng.standard_normal(self.c_out) if self.bias else None
        if layout == "NHWC":
            x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
        x, w = np.ascontiguousarray(x, dtype=dtype), np.ascontiguousarray(w, dtype=dtype)
        return x, w, (None if b is None else b.astype(dtype))

    def out_shape(self, layout):
        kh, kw = pair(self.kernel)
        pad = resolve_padding(self.padding, (kh, kw), self.dilation)
        oh, ow = out_hw(self.h, self.w, (kh, kw), self.stride, pad, self.dilation)
        if layout == "NCHW":
            return (self.n, self.c_out, oh, ow)
        return (self.n, oh, ow, self.c_out)


GEOMS = {
    "basic": CGeom(2, 3, 8, 8, 4, 3),
    "bias-pad1": CGeom(2, 3, 7, 6, 5, 3, padding=1, bias=True),
    "stride2-pad1": CGeom(2, 3, 9, 9, 4, 3, stride=2, padding=1, bias=True),
    "stride-rect": CGeom(1, 2, 9, 11, 3, (2, 3), stride=(2, 3)),
    "pad-pair": CGeom(2, 2, 6, 7, 3, 3, padding=(2, 1)),
    "pad-asym": CGeom(2, 3, 6, 7, 4, (3, 2), padding=((0, 2), (1, 0)), bias=True),
    "same-k3": CGeom(2, 3, 7, 8, 4, 3, padding="same"),
    "same-k4-even": CGeom(1, 2, 6, 5, 3, (4, 2), padding="same", bias=True),
    "same-dilated": CGeom(1, 2, 9, 9, 3, 3, padding="SAME", dilation=(2, 3)),
    "valid": CGeom(2, 3, 7, 8, 4, 3, padding="valid"),
    "dilation2": CGeom(2, 2, 10, 10, 3, 3, padding=2, dilation=2),
    "dil-stride-asym": CGeom(1, 3, 11, 12, 4, (2, 3), stride=(2, 1), padding=((1, 3), (2, 0)),
                             dilation=(3, 2), bias=True),
    "groups2": CGeom(2, 4, 7, 7, 6, 3, padding=1, groups=2, bias=True),
    "groups3-strided": CGeom(1, 6, 8, 9, 9, (3, 2), stride=2, padding=1, groups=3),
    "depthwise": CGeom(2, 5, 8, 8, 5, 3, padding=1, groups=5, bias=True),
    "depthwise-mult2": CGeom(1, 4, 7, 7, 8, 3, stride=2, padding=1, groups=4),
    # Wide rows: the depthwise kernels' one-pass 3x3 paths inside the image and their edges.
    "depthwise-wide-dilated": CGeom(2, 3, 9, 23, 3, 3, padding=((1, 2), (2, 1)),
                                    dilation=(1, 2), groups=3, bias=True),
    "depthwise-wide-stride2": CGeom(1, 4, 10, 25, 4, 3, stride=2, padding=1, groups=4,
                                    bias=True),
    "depthwise-wide-unpadded": CGeom(2, 3, 6, 19, 3, 3, groups=3),
    "depthwise-wide-dil3-pad": CGeom(1, 2, 12, 17, 2, 3, padding=3, dilation=3, groups=2),
    "depthwise-wide-k5-mult2": CGeom(1, 2, 8, 20, 4, 5, padding=2, groups=2),
    "pointwise": CGeom(2, 8, 6, 7, 5, 1, bias=True),
    "pointwise-groups": CGeom(2, 6, 5, 5, 4, 1, groups=2),
    "pointwise-dilated": CGeom(1, 3, 4, 4, 2, 1, dilation=3),
    "pointwise-1row": CGeom(1, 3, 1, 9, 4, 1),
    "1x1-strided": CGeom(2, 4, 7, 8, 3, 1, stride=2, bias=True),
    "1x1-padded": CGeom(1, 3, 4, 4, 2, 1, padding=1),
    "stride>kernel": CGeom(2, 3, 10, 11, 4, 2, stride=3),
    "stride>kernel-asym": CGeom(1, 2, 10, 10, 3, (1, 2), stride=(4, 5),
                                padding=((2, 1), (0, 3))),
    "kernel=padded-input": CGeom(2, 2, 3, 4, 3, (5, 6), padding=1, bias=True),
    "kernel=input": CGeom(1, 3, 5, 5, 2, 5),
    "dilated-kernel=input": CGeom(1, 2, 5, 7, 3, (2, 3), dilation=(4, 3)),
    "1x1-image-k1": CGeom(3, 2, 1, 1, 4, 1, bias=True),
    "1x1-image-pad": CGeom(2, 2, 1, 1, 3, 3, padding=1),
    "1x1-image-stride-pad": CGeom(1, 2, 1, 1, 2, 2, stride=2, padding=2),
    "padding>kernel": CGeom(1, 1, 2, 2, 2, 2, padding=3),
    "batch0": CGeom(0, 3, 5, 5, 4, 3, padding=1, bias=True),
    "batch0-pointwise": CGeom(0, 3, 5, 5, 4, 1),
    "batch1": CGeom(1, 3, 6, 6, 4, 3),
    "H0-padded": CGeom(2, 3, 0, 4, 2, 2, padding=1, bias=True),
    "many-tiles": CGeom(3, 8, 37, 21, 16, 3, padding=1, bias=True),
    "wide-k5": CGeom(2, 3, 20, 9, 4, 5, stride=(1, 2), padding=2),
}

# A smaller set for the costlier checks.
SOME = ["basic", "pad-asym", "same-k4-even", "dil-stride-asym", "groups3-strided",
        "depthwise", "pointwise", "pointwise-groups", "1x1-strided", "stride>kernel-asym",
        "kernel=padded-input", "1x1-image-pad", "batch0", "many-tiles"]


def random_like_output(rng, geom, layout, dtype):
    return rng.standard_normal(geom.out_shape(layout)).astype(dtype)


# ================================================================== conv2d forward
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(GEOMS))
def test_conv2d_matches_reference(rng, name, layout, dtype):
    geom = GEOMS[name]
    x, w, b = geom.arrays(rng, dtype, layout)
    y = conv2d(x, w, b, **geom.kwargs, layout=layout)
    assert y.dtype == np.dtype(dtype)
    assert y.shape == geom.out_shape(layout)
    expected = ref_conv2d(x, w, b, **geom.kwargs, layout=layout)
    np.testing.assert_allclose(y, expected, **tol(dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["basic", "pad-asym", "groups2", "pointwise", "1x1-strided",
                                  "dil-stride-asym", "same-k4-even"])
def test_conv2d_matches_torch(rng, torch, name, layout):
    geom = GEOMS[name]
    x, w, b = geom.arrays(rng, np.float64, layout)
    g = random_like_output(rng, geom, layout, np.float64)
    y_t = torch_conv2d_grads(torch, x, w, b, g, geom.stride, geom.padding, geom.dilation,
                             geom.groups, layout)[0]
    np.testing.assert_allclose(conv2d(x, w, b, **geom.kwargs, layout=layout), y_t,
                               rtol=1e-10, atol=1e-12)


def test_conv2d_hand_computed():
    # 1×1×3×3 image 1..9, 2×2 ones kernel, bias 0.5, stride 1: sums of 2×2 windows.
    x = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2))
    y = conv2d(x, w, np.array([0.5]))
    np.testing.assert_array_equal(y, [[[[12.5, 16.5], [24.5, 28.5]]]])
    # Cross-correlation, not convolution: an asymmetric kernel is not flipped.
    w2 = np.zeros((1, 1, 2, 2))
    w2[0, 0, 0, 1] = 1.0
    np.testing.assert_array_equal(conv2d(x, w2)[0, 0], [[2, 3], [5, 6]])


UNBATCHED = ["basic", "pad-asym", "groups2", "pointwise", "1x1-strided", "1x1-image-pad"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", UNBATCHED)
def test_conv2d_unbatched_input_values(rng, name, layout):
    # Values only (the shape is checked by the test below).
    geom = GEOMS[name]._replace(n=1)
    x, w, b = geom.arrays(rng, np.float64, layout)
    y3 = conv2d(x[0], w, b, **geom.kwargs, layout=layout)
    expected = ref_conv2d(x[0], w, b, **geom.kwargs, layout=layout)
    assert y3.size == expected.size
    np.testing.assert_allclose(y3.reshape(expected.shape), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y3.reshape(expected.shape),
                               conv2d(x, w, b, **geom.kwargs, layout=layout)[0],
                               rtol=1e-12, atol=1e-14)
    out = np.full(expected.shape, np.nan)
    conv2d(x[0], w, b, **geom.kwargs, layout=layout, out=out)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv2d_unbatched_input_drops_batch_axis(rng, layout):
    bad = []
    for name in UNBATCHED:
        geom = GEOMS[name]._replace(n=1)
        x, w, b = geom.arrays(rng, np.float32, layout)
        expected = geom.out_shape(layout)[1:]
        y3 = conv2d(x[0], w, b, **geom.kwargs, layout=layout)
        if y3.shape != expected:
            bad.append((name, y3.shape, expected))
        out = np.empty(expected, np.float32)
        y3 = conv2d(x[0], w, b, **geom.kwargs, layout=layout, out=out)
        if y3.shape != expected:
            bad.append((name, "out=", y3.shape, expected))
    assert not bad, bad


@pytest.mark.parametrize("name", ["basic", "bias-pad1", "pad-asym", "same-k4-even",
                                  "dil-stride-asym", "groups3-strided", "depthwise",
                                  "pointwise", "pointwise-groups", "1x1-strided",
                                  "stride>kernel-asym", "many-tiles"])
def test_nhwc_equals_nchw_transposed(rng, name):
    geom = GEOMS[name]
    x, w, b = geom.arrays(rng, np.float64, "NCHW")
    y_nchw = conv2d(x, w, b, **geom.kwargs)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    w_hwio = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    y_nhwc = conv2d(x_nhwc, w_hwio, b, **geom.kwargs, layout="nhwc")  # case-insensitive
    np.testing.assert_allclose(y_nhwc, y_nchw.transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-13)


def test_padding_spellings_agree(rng):
    x, w, b = CGeom(2, 3, 7, 8, 4, (3, 4)).arrays(rng, np.float64)
    explicit_same = conv2d(x, w, b, padding=((1, 1), (1, 2)))
    np.testing.assert_array_equal(conv2d(x, w, b, padding="same"), explicit_same)
    assert explicit_same.shape[2:] == (7, 8)
    np.testing.assert_array_equal(conv2d(x, w, b, padding="Valid"), conv2d(x, w, b, padding=0))
    np.testing.assert_array_equal(conv2d(x, w, b, padding=(1, 2)),
                                  conv2d(x, w, b, padding=((1, 1), (2, 2))))
    np.testing.assert_array_equal(conv2d(x, w, b, padding=2),
                                  conv2d(x, w, b, padding=[[2, 2], [2, 2]]))


# ------------------------------------------------------------------ memory order
def memory_variants(a):
    """Fortran-ordered, strided, negatively-strided, read-only and transposed-view versions
    of `a`, all with a's values and shape."""
    yield "fortran", np.asfortranarray(a)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    yield "strided", big[..., ::2]
    yield "negative", np.flip(np.ascontiguousarray(np.flip(a)))
    ro = a.copy()
    ro.setflags(write=False)
    yield "readonly", ro
    if a.ndim > 1:
        yield "swapped", np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)


def assert_untouched(arrays, copies):
    for a, c in zip(arrays, copies):
        if a is not None:
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["dil-stride-asym", "groups2", "pointwise"])
def test_conv2d_memory_orders(rng, name, layout):
    geom = GEOMS[name]._replace(bias=True)
    x, w, b = geom.arrays(rng, np.float32, layout)
    expected = conv2d(x, w, b, **geom.kwargs, layout=layout)
    for (kind, xv), (_, wv), (_, bv) in zip(memory_variants(x), memory_variants(w),
                                            itertools.cycle(memory_variants(b))):
        copies = [xv.copy(), wv.copy(), bv.copy()]
        assert not (xv.flags.c_contiguous and xv.flags.writeable) or kind == "readonly"
        got = conv2d(xv, wv, bv, **geom.kwargs, layout=layout)
        np.testing.assert_array_equal(got, expected, err_msg=kind)
        assert_untouched([xv, wv, bv], copies)
        got = conv2d(xv, w, b, **geom.kwargs, layout=layout)  # only the input unusual
        np.testing.assert_array_equal(got, expected, err_msg=kind)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv2d_backward_memory_orders(rng, layout):
    geom = GEOMS["dil-stride-asym"]
    x, w, _ = geom.arrays(rng, np.float64, layout)
    g = random_like_output(rng, geom, layout, np.float64)
    expected = conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    for (kind, gv), (_, xv), (_, wv) in zip(memory_variants(g), memory_variants(x),
                                            memory_variants(w)):
        copies = [gv.copy(), xv.copy(), wv.copy()]
        got = conv2d_backward(gv, xv, wv, **geom.kwargs, layout=layout)
        for a, e in zip(got, expected):
            np.testing.assert_array_equal(a, e, err_msg=kind)
        assert_untouched([gv, xv, wv], copies)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv_transpose2d_memory_orders(rng, layout):
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    if layout == "NHWC":
        x, w = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(
            w.transpose(2, 3, 1, 0))
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, layout=layout)
    expected = conv_transpose2d(x, w, b, **kw)
    for (kind, xv), (_, wv), (_, bv) in zip(memory_variants(x), memory_variants(w),
                                            itertools.cycle(memory_variants(b))):
        copies = [xv.copy(), wv.copy(), bv.copy()]
        np.testing.assert_array_equal(conv_transpose2d(xv, wv, bv, **kw), expected,
                                      err_msg=kind)
        assert_untouched([xv, wv, bv], copies)


# ------------------------------------------------------------------ out=
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["bias-pad1", "pointwise", "groups3-strided"])
def test_conv2d_out_is_written_and_returned(rng, name, layout):
    geom = GEOMS[name]
    x, w, b = geom.arrays(rng, np.float64, layout)
    out = np.full(geom.out_shape(layout), np.nan)
    y = conv2d(x, w, b, **geom.kwargs, layout=layout, out=out)
    assert y is out
    np.testing.assert_allclose(out, ref_conv2d(x, w, b, **geom.kwargs, layout=layout),
                               rtol=1e-10, atol=1e-12)
    # A second call overwrites (does not accumulate into) out.
    conv2d(x, w, b, **geom.kwargs, layout=layout, out=out)
    np.testing.assert_allclose(out, ref_conv2d(x, w, b, **geom.kwargs, layout=layout),
                               rtol=1e-10, atol=1e-12)


def test_conv2d_pointwise_out_allocates_nothing_of_output_size(rng):
    # 1×1 stride-1 unpadded needs no column buffer: with out= nothing output-sized is made.
    x = rng.standard_normal((4, 32, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 32, 1, 1)).astype(np.float32)
    out = np.empty((4, 32, 32, 32), np.float32)
    conv2d(x, w, out=out)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        conv2d(x, w, out=out)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes // 4, peak
    np.testing.assert_allclose(out, ref_conv2d(x, w), rtol=1e-4, atol=1e-4)


def _out_error_cases(x, w, shape):
    yield "shape", np.empty(shape[:-1] + (shape[-1] + 1,), x.dtype), r"out must have shape"
    yield "dtype", np.empty(shape, np.float64), r"out must have dtype"
    yield "fortran", np.asfortranarray(np.empty(shape, x.dtype)), r"C-contiguous"
    yield "strided", np.empty(shape[:-1] + (2 * shape[-1],), x.dtype)[..., ::2], \
        r"C-contiguous"
    ro = np.empty(shape, x.dtype)
    ro.setflags(write=False)
    yield "readonly", ro, r"read-only|writ"
    yield "list", np.empty(shape, x.dtype).tolist(), r"out"


@pytest.mark.parametrize("fn", ["conv2d", "conv_transpose2d"])
def test_out_errors(rng, fn):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    if fn == "conv2d":
        w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        call = conv2d
        shape = (2, 4, 4, 4)
    else:
        w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
        call = conv_transpose2d
        shape = (2, 4, 8, 8)
    for _kind, out, pattern in _out_error_cases(x, w, shape):
        with pytest.raises(ValueError, match=pattern):
            call(x, w, out=out)


def test_conv2d_out_overlapping_an_input_is_rejected(rng):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    x0 = x.copy()
    with pytest.raises(ValueError, match="overlap"):
        conv2d(x, w, out=x)  # in place
    np.testing.assert_array_equal(x, x0)
    # A partial overlap: out starts inside x's buffer.
    buf = np.zeros(2 * x.size, np.float32)
    xs = buf[:x.size].reshape(x.shape)
    xs[...] = x
    with pytest.raises(ValueError, match="overlap"):
        conv2d(xs, w, out=buf[x.size - 7:2 * x.size - 7].reshape(x.shape))
    # Overlapping the weight or the bias.
    wbuf = np.zeros(x.size + w.size, np.float32)
    wv = wbuf[:w.size].reshape(w.shape)
    wv[...] = w
    with pytest.raises(ValueError, match="overlap"):
        conv2d(x, wv, out=wbuf[:x.size].reshape(x.shape))
    bbuf = np.zeros(x.size, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        conv2d(x, w, bbuf[:4], out=bbuf.reshape(x.shape))


def test_conv_transpose2d_out(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out = np.full((2, 4, 12, 12), np.nan, np.float32)  # (6-1)·2 - 2 + 3 + 1
    y = conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, out=out)
    assert y is out
    expected = conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="overlap"):
        xb = np.zeros(out.size, np.float32)
        xv = xb[:x.size].reshape(x.shape)
        xv[...] = x
        conv_transpose2d(xv, w, b, stride=2, padding=1, output_padding=1,
                         out=xb.reshape(out.shape))


# ================================================================== conv2d_backward
def numeric_grads(x, w, b, g, kwargs, layout, eps=1e-3):
    """Central differences of L = Σ conv2d(x, w, b)·g w.r.t. every element of x, w, b."""
    def loss(xx, ww, bb):
        return float(np.sum(conv2d(xx, ww, bb, **kwargs, layout=layout) * g))

    grads = []
    with fastconv.threads(1):  # hundreds of tiny calls: skip the OpenMP team start-ups
        for idx_arg in range(3):
            grads.append(_numeric_grad(loss, [x, w, b], idx_arg, eps))
    return grads


def _numeric_grad(loss, arrays, idx_arg, eps):
    args = [a.copy() for a in arrays]
    target = args[idx_arg]
    grad = np.zeros_like(target)
    for idx in np.ndindex(target.shape):
        orig = target[idx]
        target[idx] = orig + eps
        plus = loss(*args)
        target[idx] = orig - eps
        minus = loss(*args)
        target[idx] = orig
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


FD_GEOMS = {
    "basic": CGeom(1, 2, 4, 5, 3, (2, 3), bias=True),
    "stride-dil-asym": CGeom(2, 2, 5, 5, 2, 2, stride=2, padding=((1, 0), (0, 2)),
                             dilation=(2, 1), bias=True),
    "groups": CGeom(1, 4, 4, 4, 2, 3, padding=1, groups=2, bias=True),
    "pointwise": CGeom(2, 3, 2, 3, 2, 1, bias=True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(FD_GEOMS))
def test_conv2d_backward_matches_finite_differences(rng, name, layout):
    geom = FD_GEOMS[name]
    x, w, b = geom.arrays(rng, np.float64, layout)
    g = random_like_output(rng, geom, layout, np.float64)
    gx_n, gw_n, gb_n = numeric_grads(x, w, b, g, geom.kwargs, layout)
    grads = conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    assert isinstance(grads, fastconv.Gradients)
    np.testing.assert_allclose(grads.grad_input, gx_n, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads.grad_weight, gw_n, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads.grad_bias, gb_n, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(GEOMS))
def test_conv2d_backward_matches_reference(rng, name, layout, dtype):
    geom = GEOMS[name]
    x, w, _ = geom.arrays(rng, dtype, layout)
    g = random_like_output(rng, geom, layout, dtype)
    grads = conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    gx, gw, gb = ref_conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    assert grads.grad_input.shape == x.shape and grads.grad_input.dtype == np.dtype(dtype)
    assert grads.grad_weight.shape == w.shape and grads.grad_weight.dtype == np.dtype(dtype)
    assert grads.grad_bias.shape == (geom.c_out,) and grads.grad_bias.dtype == np.dtype(dtype)
    t = tol(dtype)
    # Weight gradients sum over the whole batch and image: scale the tolerance by the count.
    count = max(1, g.size // geom.c_out)
    np.testing.assert_allclose(grads.grad_input, gx, **t)
    np.testing.assert_allclose(grads.grad_weight, gw, rtol=t["rtol"],
                               atol=t["atol"] * np.sqrt(count))
    np.testing.assert_allclose(grads.grad_bias, gb, rtol=t["rtol"],
                               atol=t["atol"] * np.sqrt(count))


TORCH_BACKWARD = ["basic", "pad-asym", "dil-stride-asym", "groups2", "groups3-strided",
                  "depthwise-mult2", "pointwise-groups", "1x1-strided", "stride>kernel-asym",
                  "same-k4-even", "kernel=padded-input"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", TORCH_BACKWARD)
def test_conv2d_backward_matches_torch_autograd(rng, torch, name, layout, dtype):
    geom = GEOMS[name]._replace(bias=True)
    x, w, b = geom.arrays(rng, dtype, layout)
    g = random_like_output(rng, geom, layout, dtype)
    _, gx_t, gw_t, gb_t = torch_conv2d_grads(torch, x, w, b, g, geom.stride, geom.padding,
                                             geom.dilation, geom.groups, layout)
    grads = conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    t = tol(dtype)
    count = max(1, g.size // geom.c_out)
    np.testing.assert_allclose(grads.grad_input, gx_t, **t)
    np.testing.assert_allclose(grads.grad_weight, gw_t, rtol=t["rtol"],
                               atol=t["atol"] * np.sqrt(count))
    np.testing.assert_allclose(grads.grad_bias, gb_t, rtol=t["rtol"],
                               atol=t["atol"] * np.sqrt(count))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv2d_backward_needs_flags(rng, layout):
    geom = GEOMS["dil-stride-asym"]
    x, w, _ = geom.arrays(rng, np.float64, layout)
    g = random_like_output(rng, geom, layout, np.float64)
    full = ref_conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    for flags in itertools.product([True, False], repeat=3):
        grads = conv2d_backward(g, x, w, **geom.kwargs, layout=layout,
                                needs_input_grad=flags[0], needs_weight_grad=flags[1],
                                needs_bias_grad=flags[2])
        assert len(grads) == 3
        assert grads._fields == ("grad_input", "grad_weight", "grad_bias")
        for wanted, got, exp in zip(flags, grads, full):
            if wanted:
                np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)
            else:
                assert got is None


@pytest.mark.parametrize("name", ["pad-asym", "dil-stride-asym", "groups3-strided",
                                  "depthwise", "pointwise-groups", "1x1-strided", "many-tiles"])
def test_conv2d_backward_nhwc_equals_nchw_transposed(rng, name):
    geom = GEOMS[name]
    x, w, _ = geom.arrays(rng, np.float64, "NCHW")
    g = random_like_output(rng, geom, "NCHW", np.float64)
    a = conv2d_backward(g, x, w, **geom.kwargs)
    bwd = conv2d_backward(np.ascontiguousarray(g.transpose(0, 2, 3, 1)),
                          np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
                          np.ascontiguousarray(w.transpose(2, 3, 1, 0)), **geom.kwargs,
                          layout="NHWC")
    np.testing.assert_allclose(bwd.grad_input, a.grad_input.transpose(0, 2, 3, 1), rtol=1e-12,
                               atol=1e-13)
    np.testing.assert_allclose(bwd.grad_weight, a.grad_weight.transpose(2, 3, 1, 0),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bwd.grad_bias, a.grad_bias, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(GEOMS))
def test_conv2d_backward_adjoint_identities(rng, name, layout):
    """⟨conv2d(x, w), g⟩ = ⟨x, grad_input(g)⟩ = ⟨w, grad_weight(g)⟩ (linear in x, in w);
    grad_bias = Σ g over batch and space, in float64."""
    geom = GEOMS[name]
    x, w, _ = geom.arrays(rng, np.float64, layout)
    g = random_like_output(rng, geom, layout, np.float64)
    y = conv2d(x, w, **geom.kwargs, layout=layout)
    grads = conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    lhs = np.vdot(y, g)
    scale = 1e-11 * (1 + np.abs(y).sum() * np.abs(g).max(initial=0))
    assert abs(np.vdot(x, grads.grad_input) - lhs) <= scale
    assert abs(np.vdot(w, grads.grad_weight) - lhs) <= scale
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    np.testing.assert_allclose(grads.grad_bias, g.sum(axis=axes), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv2d_backward_unbatched(rng, layout):
    geom = GEOMS["groups2"]._replace(n=1)
    x, w, _ = geom.arrays(rng, np.float64, layout)
    g = random_like_output(rng, geom, layout, np.float64)
    grads = conv2d_backward(g[0], x[0], w, **geom.kwargs, layout=layout)
    assert grads.grad_input.shape == x.shape[1:]
    expected = ref_conv2d_backward(g[0], x[0], w, **geom.kwargs, layout=layout)
    for got, exp in zip(grads, expected):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


def test_conv2d_backward_batch0_gives_zero_gradients(rng):
    x = np.zeros((0, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    grads = conv2d_backward(np.zeros((0, 4, 5, 5)), x, w, padding=1)
    assert grads.grad_input.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(grads.grad_weight, np.zeros_like(w))
    np.testing.assert_array_equal(grads.grad_bias, np.zeros(4))


# ================================================================== conv_transpose2d
class TGeom(NamedTuple):
    """conv_transpose2d geometry: input (N, C_in, H, W), weight (C_in, C_out/groups, kh, kw)."""

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: object
    stride: object = 1
    padding: object = 0
    output_padding: object = 0
    groups: int = 1
    dilation: object = 1
    bias: bool = False

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def arrays(self, rng, dtype, layout):
        kh, kw = pair(self.kernel)
        x = rng.standard_normal((self.n, self.c_in, self.h, self.w))
        w = rng.standard_normal((self.c_in, self.c_out // self.groups, kh, kw)) / np.sqrt(
            self.c_in // self.groups * kh * kw)
        b = rng.standard_normal(self.c_out).astype(dtype) if self.bias else None
        return x.astype(dtype), w.astype(dtype), b


def torch_conv_transpose(torch, x, w, b, geom):
    """F.conv_transpose2d, with ((t, b), (l, r)) padding done by cropping the unpadded
    result (and zero rows where output_padding reaches past it)."""
    F = torch.nn.functional
    (top, bottom), (left, right) = pads(geom.padding)
    oph, opw = pair(geom.output_padding)
    if top == bottom and left == right:
        y = F.conv_transpose2d(torch_t(torch, x), torch_t(torch, w),
                               None if b is None else torch_t(torch, b), stride=pair(geom.stride),
                               padding=(top, left), output_padding=(oph, opw),
                               groups=geom.groups, dilation=pair(geom.dilation))
        return y.numpy()
    full = F.conv_transpose2d(torch_t(torch, x), torch_t(torch, w), None,
                              stride=pair(geom.stride), groups=geom.groups,
                              dilation=pair(geom.dilation)).numpy()
    fh, fw = full.shape[2:]
    oh, ow = fh + oph - top - bottom, fw + opw - left - right
    y = np.zeros(full.shape[:2] + (oh, ow), full.dtype)
    part = full[:, :, top:top + oh, left:left + ow]
    y[:, :, :part.shape[2], :part.shape[3]] = part
    if b is not None:
        y += b[:, None, None]
    return y


TGEOMS = {
    "basic": TGeom(2, 3, 4, 5, 4, 3),
    "stride2": TGeom(2, 3, 4, 4, 2, 3, stride=2, bias=True),
    "stride2-pad1-op1": TGeom(1, 2, 5, 4, 3, 3, stride=2, padding=1, output_padding=1,
                              bias=True),
    "rect": TGeom(2, 2, 3, 5, 4, (2, 3), stride=(3, 2), padding=(1, 0),
                  output_padding=(2, 1)),
    "groups2": TGeom(2, 4, 4, 4, 6, 3, stride=2, padding=1, groups=2, bias=True),
    "depthwise": TGeom(1, 3, 5, 5, 3, 3, padding=1, groups=3),
    "dilation2": TGeom(1, 2, 4, 4, 3, 3, dilation=2, padding=2, bias=True),
    "dilation-op": TGeom(1, 2, 4, 5, 2, 2, stride=1, dilation=2, output_padding=1),
    "all": TGeom(2, 4, 3, 4, 4, (3, 2), stride=(2, 3), padding=(2, 1), output_padding=(1, 2),
                 groups=2, dilation=(2, 1), bias=True),
    "1x1": TGeom(2, 4, 3, 3, 5, 1, bias=True),
    "1x1-strided": TGeom(1, 3, 3, 3, 2, 1, stride=2, output_padding=1),
    "1x1-image": TGeom(2, 2, 1, 1, 3, 3, stride=2, bias=True),
    "asym-pad": TGeom(1, 2, 4, 4, 3, 3, stride=2, padding=((0, 2), (1, 0)), output_padding=1),
    "batch0": TGeom(0, 2, 4, 4, 3, 3, bias=True),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(TGEOMS))
def test_conv_transpose2d_matches_torch(rng, torch, name, layout, dtype):
    geom = TGEOMS[name]
    x, w, b = geom.arrays(rng, dtype, layout)
    expected = torch_conv_transpose(torch, x, w, b, geom)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        w = np.ascontiguousarray(w.transpose(2, 3, 1, 0))   # (kh, kw, C_out/groups, C_in)
        expected = expected.transpose(0, 2, 3, 1)
    y = conv_transpose2d(x, w, b, **geom.kwargs, layout=layout)
    assert y.shape == expected.shape and y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, expected, **tol(dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["basic", "stride2-pad1-op1", "groups2", "all", "1x1",
                                  "asym-pad"])
def test_conv_transpose2d_unbatched(rng, name, layout):
    geom = TGEOMS[name]._replace(n=1)
    x, w, b = geom.arrays(rng, np.float64, layout)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        w = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    y = conv_transpose2d(x, w, b, **geom.kwargs, layout=layout)
    y3 = conv_transpose2d(x[0], w, b, **geom.kwargs, layout=layout)
    np.testing.assert_allclose(y3, y[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(GEOMS))
def test_conv_transpose2d_is_conv2d_input_gradient(rng, name, layout):
    """Without torch: conv_transpose2d(g, w) == conv2d_backward(g, x, w).grad_input, with
    output_padding chosen so the shapes agree; and it matches the reference backward."""
    geom = GEOMS[name]
    if geom.h == 0:
        pytest.skip("an image of height 0 has no transposed-convolution form")
    x, w, _ = geom.arrays(rng, np.float64, layout)
    g = random_like_output(rng, geom, layout, np.float64)
    (kh, kw), (sh, sw), (dh, dw) = pair(geom.kernel), pair(geom.stride), pair(geom.dilation)
    # conv_transpose2d takes numeric padding only: spell out "same" / "valid".
    (t, bo), (le, r) = resolve_padding(geom.padding, (kh, kw), geom.dilation)
    op = ((geom.h + t + bo - dh * (kh - 1) - 1) % sh, (geom.w + le + r - dw * (kw - 1) - 1) % sw)
    y = conv_transpose2d(g, w, None, stride=geom.stride, padding=((t, bo), (le, r)),
                         output_padding=op, groups=geom.groups, dilation=geom.dilation,
                         layout=layout)
    assert y.shape == x.shape
    grad_x = conv2d_backward(g, x, w, **geom.kwargs, layout=layout).grad_input
    np.testing.assert_allclose(y, grad_x, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, ref_conv2d_backward(g, x, w, **geom.kwargs,
                                                      layout=layout)[0],
                               rtol=1e-10, atol=1e-12)


# ================================================================== threads and tiles
THREAD_GEOMS = [CGeom(1, 3, 10, 10, 4, 3, padding=1), CGeom(2, 4, 21, 13, 6, 3, padding=1),
                CGeom(1, 2, 30, 7, 3, 5, padding=2), CGeom(3, 3, 17, 9, 5, 3, stride=2, padding=1),
                CGeom(2, 6, 19, 11, 6, 3, padding=1, groups=3, bias=True),
                CGeom(1, 4, 14, 10, 6, 1)]


def _run_at(threads_n, geom, x, w, b, g, layout):
    with fastconv.threads(threads_n):
        y = conv2d(x, w, b, **geom.kwargs, layout=layout)
        grads = conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    return y, grads


def _needs_two_threads():
    with fastconv.threads(2):
        if fastconv.get_num_threads() < 2:
            pytest.skip("fastconv built without OpenMP: one thread only")


def _thread_results(rng):
    for geom, layout, dtype in itertools.product(THREAD_GEOMS, LAYOUTS, DTYPES):
        x, w, b = geom.arrays(rng, dtype, layout)
        g = random_like_output(rng, geom, layout, dtype)
        yield (geom, layout, dtype), _run_at(1, geom, x, w, b, g, layout), \
            _run_at(2, geom, x, w, b, g, layout), ref_conv2d(x, w, b, **geom.kwargs,
                                                             layout=layout)


def test_thread_counts_agree_to_rounding(rng):
    for case, (y1, g1), (y2, g2), ref in _thread_results(rng):
        t = tol(case[2])
        np.testing.assert_allclose(y1, ref, **t, err_msg=str(case))
        np.testing.assert_allclose(y2, y1, **t, err_msg=str(case))
        np.testing.assert_allclose(g2.grad_input, g1.grad_input, **t, err_msg=str(case))
        np.testing.assert_allclose(g2.grad_weight, g1.grad_weight, rtol=t["rtol"],
                                   atol=10 * t["atol"], err_msg=str(case))
        np.testing.assert_array_equal(g2.grad_bias, g1.grad_bias)


def test_conv2d_forward_bit_identical_across_thread_counts(rng):
    _needs_two_threads()
    bad = [case for case, (y1, _), (y2, _), _ in _thread_results(rng)
           if not np.array_equal(y1, y2)]
    assert not bad, f"forward differs between threads(1) and threads(2) for {bad}"


def test_conv2d_grad_input_bit_identical_across_thread_counts(rng):
    _needs_two_threads()
    bad = [case for case, (_, g1), (_, g2), _ in _thread_results(rng)
           if not np.array_equal(g1.grad_input, g2.grad_input)]
    assert not bad, f"grad_input differs between threads(1) and threads(2) for {bad}"


def conv_geometry(geom, x, layout):
    """The ConvGeometry of a CGeom case for its input `x` in `layout`."""
    return fastconv.ConvGeometry(x.shape, geom.c_out, geom.kernel, **geom.kwargs,
                                 layout=layout)


@pytest.mark.parametrize("threads_n", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_many_tiny_tiles_still_match_reference(rng, layout, threads_n):
    """Plans whose column tiles hold one output row (tile_bytes=1): forward, both
    gradients and the transposed convolution still match the oracle."""
    for name in ["many-tiles", "dil-stride-asym", "groups3-strided", "pointwise",
                 "stride>kernel-asym", "batch1"]:
        geom = GEOMS[name]
        x, w, b = geom.arrays(rng, np.float64, layout)
        g = random_like_output(rng, geom, layout, np.float64)
        cgeom = conv_geometry(geom, x, layout)
        with fastconv.threads(threads_n):
            forward = plan_with(cgeom, 8, _engine.FORWARD, tile_bytes=1)
            backward = plan_with(cgeom, 8, _engine.BACKWARD, tile_bytes=1)
            y = conv2d_by(forward, x, w, b)
            grads = backward_by(backward, g, x, w)
        if not cgeom.window.is_pointwise:
            assert forward.tile_rows == backward.tile_rows == 1, name
        np.testing.assert_allclose(y, ref_conv2d(x, w, b, **geom.kwargs, layout=layout),
                                   rtol=1e-10, atol=1e-12, err_msg=name)
        for got, exp in zip(grads, ref_conv2d_backward(g, x, w, **geom.kwargs, layout=layout)):
            np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-11, err_msg=name)
    tg = TGEOMS["all"]
    x, w, b = tg.arrays(rng, np.float64, "NCHW")
    tgeom = geo.transposed_conv_geometry("test", x, w, tg.stride, pads(tg.padding),
                                         tg.output_padding, tg.groups, tg.dilation, "NCHW",
                                         x.shape)
    tiny = plan_with(tgeom, 8, _engine.INPUT_GRAD, tile_bytes=1)
    assert tiny.tile_rows == 1
    y = np.empty(tgeom.input_shape)
    _engine.run_backward(x, None, w, y, None, tiny, np.empty(tiny.workspace), np.empty(0))
    np.testing.assert_allclose(y + b[:, None, None], conv_transpose2d(x, w, b, **tg.kwargs),
                               rtol=1e-12, atol=1e-13)


# ================================================================== errors
class _Exploding:
    """Stands in for the compiled kernels: any kernel call during a failing call is a bug."""

    def __getattr__(self, name):
        raise AssertionError(f"kernel {name} ran before the argument error was raised")


@pytest.fixture
def no_kernels(monkeypatch):
    monkeypatch.setattr(_engine, "_conv", _Exploding())


F32 = np.float32


def z(*shape, dtype=F32):
    return np.zeros(shape, dtype)


X = z(2, 4, 8, 8)
W = z(16, 3, 3, 3)
X3 = z(2, 3, 8, 8)
G = z(2, 16, 6, 6)

ERROR_CASES = {
    "channels": (conv2d, (X, W), {}, ValueError, re.escape(
        "conv2d: expected input with 3 channels (weight (16, 3, 3, 3), groups=1), got 4 "
        "channels in input of shape (2, 4, 8, 8)")),
    "channels-nhwc": (conv2d, (z(2, 8, 8, 4), z(3, 3, 3, 16)), dict(layout="NHWC"), ValueError,
                      re.escape("expected input with 3 channels (weight (3, 3, 3, 16), "
                                "groups=1), got 4 channels in input of shape (2, 8, 8, 4)")),
    "channels-groups": (conv2d, (z(1, 3, 5, 5), z(4, 1, 3, 3)), dict(groups=2), ValueError,
                        r"expected input with 2 channels .*groups=2.*got 3 channels"),
    "channels-unbatched": (conv2d, (z(4, 8, 8), W), {}, ValueError,
                           r"expected input with 3 channels.*shape \(4, 8, 8\)"),
    "groups-cout": (conv2d, (z(1, 2, 5, 5), z(5, 1, 3, 3)), dict(groups=2), ValueError,
                    r"groups=2.*divide.*5"),
    "groups-zero": (conv2d, (X3, W), dict(groups=0), ValueError, r"groups"),
    "groups-float": (conv2d, (X3, W), dict(groups=1.5), ValueError, r"groups"),
    "kernel-too-big": (conv2d, (z(1, 3, 4, 4), z(2, 3, 7, 7)), dict(padding=1), ValueError,
                       r"kernel_size=\(7, 7\).*larger than the padded input height "
                       r"4 \+ 1 \+ 1 = 6"),
    "dilated-kernel-too-big": (conv2d, (z(1, 3, 6, 6), z(2, 3, 3, 3)), dict(dilation=(1, 3)),
                               ValueError, r"spans 7 pixels in width"),
    "bias-shape": (conv2d, (X3, W, z(5)), {}, ValueError, r"bias of shape \(16,\), got \(5,\)"),
    "bias-2d": (conv2d, (X3, W, z(16, 1)), {}, ValueError, r"bias.*\(16, 1\)"),
    "weight-3d": (conv2d, (X3, z(16, 3, 3)), {}, ValueError, r"4-D weight.*\(16, 3, 3\)"),
    "weight-5d": (conv2d, (X3, z(1, 16, 3, 3, 3)), {}, ValueError, r"4-D weight"),
    "input-2d": (conv2d, (z(8, 8), W), {}, ValueError,
                 r"expected input of shape \(N, C, H, W\) or \(C, H, W\).*\(8, 8\)"),
    "input-5d": (conv2d, (z(1, 2, 3, 8, 8), W), {}, ValueError,
                 r"input.*\(1, 2, 3, 8, 8\)"),
    "input-5d-nhwc": (conv2d, (z(1, 2, 8, 8, 3), z(3, 3, 3, 16)), dict(layout="NHWC"),
                      ValueError, r"\(N, H, W, C\) or \(H, W, C\)"),
    "mixed-x-w": (conv2d, (z(2, 3, 8, 8, dtype=np.float64), W), {}, TypeError,
                  r"float64.*float32|float32.*float64"),
    "mixed-bias": (conv2d, (X3, W, z(16, dtype=np.float64)), {}, TypeError,
                   r"float64.*float32|float32.*float64"),
    "float16": (conv2d, (z(2, 3, 8, 8, dtype=np.float16), z(16, 3, 3, 3, dtype=np.float16)),
                {}, TypeError, r"float16"),
    "int32": (conv2d, (z(2, 3, 8, 8, dtype=np.int32), W), {}, TypeError, r"int32"),
    "int-weight": (conv2d, (X3, z(16, 3, 3, 3, dtype=np.int64)), {}, TypeError, r"int64"),
    "complex": (conv2d, (z(2, 3, 8, 8, dtype=np.complex64), W), {}, TypeError, r"complex64"),
    "padding-word": (conv2d, (X3, W), dict(padding="full"), ValueError, r"padding.*'full'"),
    "layout": (conv2d, (X3, W), dict(layout="NCWH"), ValueError,
               r"layout.*'NCHW'.*'NHWC'.*'NCWH'"),
    "layout-none": (conv2d, (X3, W), dict(layout=None), ValueError, r"layout"),
    "padding-negative": (conv2d, (X3, W), dict(padding=-1), ValueError, r"padding"),
    "padding-negative-pair": (conv2d, (X3, W), dict(padding=(1, -1)), ValueError, r"padding"),
    "padding-negative-pairs": (conv2d, (X3, W), dict(padding=((0, -1), (0, 0))), ValueError,
                               r"padding"),
    "padding-three": (conv2d, (X3, W), dict(padding=(1, 1, 1)), ValueError, r"padding"),
    "stride-zero": (conv2d, (X3, W), dict(stride=0), ValueError, r"stride"),
    "stride-zero-pair": (conv2d, (X3, W), dict(stride=(1, 0)), ValueError, r"stride"),
    "dilation-zero": (conv2d, (X3, W), dict(dilation=0), ValueError, r"dilation"),
    "bwd-grad-shape": (conv2d_backward, (z(2, 16, 6, 5), X3, W), {}, ValueError,
                       r"grad_output of shape \(2, 16, 6, 6\).*got \(2, 16, 6, 5\)"),
    "bwd-grad-dtype": (conv2d_backward, (z(2, 16, 6, 6, dtype=np.float64), X3, W), {},
                       TypeError, r"float64.*float32|float32.*float64"),
    "bwd-channels": (conv2d_backward, (G, X, W), {}, ValueError,
                     r"expected input with 3 channels .*got 4 channels"),
    "bwd-int": (conv2d_backward, (z(2, 16, 6, 6, dtype=np.int16), X3, W), {}, TypeError,
                r"int16"),
    "bwd-layout": (conv2d_backward, (G, X3, W), dict(layout="hwcn"), ValueError, r"layout"),
    "tr-output-padding-stride": (conv_transpose2d, (z(1, 3, 4, 4), z(3, 2, 3, 3)),
                                 dict(stride=2, output_padding=2), ValueError,
                                 r"output_padding"),
    "tr-output-padding-1": (conv_transpose2d, (z(1, 3, 4, 4), z(3, 2, 3, 3)),
                            dict(output_padding=(0, 1)), ValueError, r"output_padding"),
    "tr-output-padding-dil": (conv_transpose2d, (z(1, 3, 4, 4), z(3, 2, 3, 3)),
                              dict(dilation=2, stride=(1, 3), output_padding=(2, 0)),
                              ValueError, r"output_padding"),
    "tr-channels": (conv_transpose2d, (z(1, 4, 4, 4), z(3, 2, 3, 3)), {}, ValueError,
                    r"expected input with 3 channels.*got 4"),
    "tr-groups": (conv_transpose2d, (z(1, 3, 4, 4), z(3, 2, 3, 3)), dict(groups=2),
                  ValueError, r"groups=2"),
    "tr-bias": (conv_transpose2d, (z(1, 3, 4, 4), z(3, 2, 3, 3), z(3)), {}, ValueError,
                r"bias of shape \(2,\)"),
    "tr-mixed": (conv_transpose2d, (z(1, 3, 4, 4, dtype=np.float64), z(3, 2, 3, 3)), {},
                 TypeError, r"float64.*float32|float32.*float64"),
    "tr-padding-eats-output": (conv_transpose2d, (z(1, 3, 1, 1), z(3, 2, 1, 1)),
                               dict(padding=1), ValueError, r"padding"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_raised_before_any_work(no_kernels, case):
    fn, args, kwargs, exc, pattern = ERROR_CASES[case]
    before = [a.copy() for a in args]
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)


def test_no_kernels_fixture_bites(no_kernels):
    with pytest.raises(AssertionError, match="kernel"):
        conv2d(X3, W)


def test_valid_output_padding_below_dilation_is_accepted(rng):
    # output_padding < max(stride, dilation): 1 < dilation 2 with stride 1 is allowed.
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((2, 3, 3, 3))
    y = conv_transpose2d(x, w, dilation=2, output_padding=1)
    assert y.shape == (1, 3, 9, 9)



@pytest.mark.parametrize("with_out", [False, True], ids=["new", "out"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("output_padding, dilation", [((1, 0), (2, 1)), ((0, 2), (1, 3)),
                                                      (1, 2)])
def test_conv_transpose2d_1x1_output_padding_writes_every_element(
        rng, monkeypatch, layout, output_padding, dilation, with_out):
    """Issue 19: with a 1×1 kernel at stride 1 the output_padding rows and columns (allowed
    by a dilation > 1) hold the bias alone. Buffers are poisoned (NaN), so an element the
    kernels leave unwritten shows up instead of whatever the allocator left there."""
    monkeypatch.setattr(fastconv._memory, "POISON", True)
    x = rng.standard_normal((2, 3, 2, 3))
    w = rng.standard_normal((3, 4, 1, 1))
    b = rng.standard_normal(4)
    oph, opw = pair(output_padding)
    expected = np.zeros((2, 4, 2 + oph, 3 + opw))
    expected[:, :, :2, :3] = np.einsum("nchw,co->nohw", x, w[:, :, 0, 0])
    expected += b[:, None, None]
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)  # w: (kh, kw, C_out, C_in)
        expected = expected.transpose(0, 2, 3, 1)
    out = np.zeros(expected.shape) if with_out else None
    y = conv_transpose2d(x, w, b, output_padding=output_padding, dilation=dilation,
                         layout=layout, out=out)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


# ================================================================== property test
@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    return dict(
        n=draw(st.integers(0, 2)), groups=groups,
        cin_g=draw(st.integers(1, 3)), cout_g=draw(st.integers(1, 3)),
        h=draw(st.integers(1, 9)), w=draw(st.integers(1, 9)),
        kernel=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        padding=((draw(st.integers(0, 2)), draw(st.integers(0, 2))),
                 (draw(st.integers(0, 2)), draw(st.integers(0, 2)))),
        layout=draw(st.sampled_from(LAYOUTS)),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases())
def test_property_conv2d_and_adjoint(case):
    rng = np.random.default_rng(case["seed"])
    geom = CGeom(case["n"], case["cin_g"] * case["groups"], case["h"], case["w"],
                 case["cout_g"] * case["groups"], case["kernel"], case["stride"],
                 case["padding"], case["dilation"], case["groups"], case["bias"])
    layout = case["layout"]
    x, w, b = geom.arrays(rng, np.float64, layout)
    (kh, kw), (dh, dw) = geom.kernel, geom.dilation
    (t, bo), (le, r) = geom.padding
    fits = (geom.h + t + bo >= dh * (kh - 1) + 1) and (geom.w + le + r >= dw * (kw - 1) + 1)
    if not fits:
        with pytest.raises(ValueError, match="larger than the padded input"):
            conv2d(x, w, b, **geom.kwargs, layout=layout)
        return
    y = conv2d(x, w, b, **geom.kwargs, layout=layout)
    assert y.shape == geom.out_shape(layout)
    np.testing.assert_allclose(y, ref_conv2d(x, w, b, **geom.kwargs, layout=layout),
                               rtol=1e-10, atol=1e-12)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    y32 = conv2d(x32, w32, None if b is None else b.astype(np.float32), **geom.kwargs,
                 layout=layout)
    np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)
    g = rng.standard_normal(y.shape)
    grads = conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
    y0 = y if b is None else conv2d(x, w, **geom.kwargs, layout=layout)
    lhs = np.vdot(y0, g)
    scale = 1e-11 * (1 + np.abs(y0).sum() * np.abs(g).max(initial=0))
    assert abs(np.vdot(x, grads.grad_input) - lhs) <= scale
    assert abs(np.vdot(w, grads.grad_weight) - lhs) <= scale


# ------------------------------------------------------------------ shared-column mode
SHARED_CASES = [
    # (N, C, H, W, C_out, k, stride, padding, groups)
    (1, 8, 7, 7, 64, 3, 1, 1, 1),
    (2, 8, 5, 6, 96, 3, 2, 1, 2),
    (1, 32, 6, 6, 80, 1, 1, 0, 1),      # pointwise
    (1, 32, 6, 5, 128, 1, 1, 0, 4),     # pointwise, grouped
    (1, 6, 9, 9, 48, 2, 1, ((1, 0), (0, 2)), 1),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", SHARED_CASES)
def test_shared_column_mode_matches_reference(rng, case, layout):
    """Few images with many output channels: the columns are built once per image and the
    GEMMs split by channel / column-row blocks (CHANNEL_BLOCKS). Blocks of 16 channels make
    the small cases use it."""
    n, c, h, w_, c_out, k, stride, padding, groups = case
    shape = (n, c, h, w_) if layout == "NCHW" else (n, h, w_, c)
    geom = fastconv.ConvGeometry(shape, c_out, k, stride, padding, groups=groups, layout=layout)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(geom.weight_shape)
    b = rng.standard_normal(c_out)
    kwargs = dict(stride=stride, padding=padding, groups=groups)
    g = rng.standard_normal(geom.output_shape)
    expected = ref_conv2d(x, w, b, layout=layout, **kwargs)
    exp_gx, exp_gw, exp_gb = ref_conv2d_backward(g, x, w, layout=layout, **kwargs)[:3]
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            forward = plan_with(geom, 8, _engine.FORWARD, _engine.plan_channel_blocks,
                                min_channel_block=16)
            backward = plan_with(geom, 8, _engine.BACKWARD, _engine.plan_channel_blocks,
                                 min_channel_block=16)
            y = conv2d_by(forward, x, w, b)
            grad_input, grad_weight = backward_by(backward, g, x, w)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad_input, exp_gx, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad_weight, exp_gw, rtol=1e-10, atol=1e-10)
        results.append((y, grad_input))
    for y, gx in results[1:]:  # forward and input gradient: bit-identical for any thread count
        assert np.array_equal(y, results[0][0])
        assert np.array_equal(gx, results[0][1])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [(1, 16, 7, 7, 16, 1), (1, 32, 6, 6, 16, 2),
                                  (2, 24, 5, 5, 12, 1)])
def test_shared_weight_gradient_splits_column_rows(rng, case, layout):
    """CHANNEL_BLOCKS with one block of output channels: the weight gradient's GEMMs are
    split by blocks of column-matrix rows instead (each element one GEMM's sum), against
    the oracle and bit-identical for any thread count."""
    n, c, h, w_, c_out, groups = case
    shape = (n, c, h, w_) if layout == "NCHW" else (n, h, w_, c)
    geom = fastconv.ConvGeometry(shape, c_out, 3, 1, 1, groups=groups, layout=layout)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(geom.weight_shape)
    g = rng.standard_normal(geom.output_shape)
    exp_gx, exp_gw = ref_conv2d_backward(g, x, w, padding=1, groups=groups, layout=layout)[:2]
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            plan = plan_with(geom, 8, _engine.BACKWARD, _engine.plan_channel_blocks,
                             min_channel_block=16)
            assert plan.m_block >= c_out // groups and plan.k_block < geom.gemm_shape[1]
            grad_input, grad_weight = backward_by(plan, g, x, w)
        np.testing.assert_allclose(grad_input, exp_gx, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad_weight, exp_gw, rtol=1e-10, atol=1e-10)
        results.append(grad_weight)
    assert all(np.array_equal(r, results[0]) for r in results[1:])


DEPTHWISE_WIDE = [
    # (H, W, stride, padding, dilation): 3×3, rows wide enough for interior columns
    (6, 23, 1, 1, 1),
    (7, 40, 1, 1, 1),      # NCHW: two blocks of 16 columns and a scalar tail
    (9, 23, 1, ((1, 2), (2, 1)), (1, 2)),
    (10, 25, 2, 1, 1),
    (6, 19, 1, 0, 1),
    (12, 17, 1, 3, 3),
    (5, 3, 1, 1, 1),       # no interior column: edges only
    (3, 40, (1, 3), ((0, 0), (1, 4)), (1, 2)),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("channels", [16, 48])
@pytest.mark.parametrize("case", DEPTHWISE_WIDE)
def test_depthwise_3x3_register_loops(rng, case, channels, layout):
    """Depthwise 3×3, float32: the register-blocked loops of depthwise_3x3.h (NHWC rows of
    16 channels, edge columns and padding rows included; NCHW weight-gradient blocks of 16
    columns, scalar loops at the plane's edges); forward and gradients against the float64
    oracle, exactly in integers, and bit-identical forwards for any thread count."""
    h, w_, stride, padding, dilation = case
    x = rng.standard_normal((2, h, w_, channels)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, channels)).astype(np.float32)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    b = rng.standard_normal(channels).astype(np.float32)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=channels,
                  layout=layout)
    y = conv2d(x, w, b, **kwargs)
    np.testing.assert_allclose(y, ref_conv2d(x.astype(np.float64), w.astype(np.float64), b,
                                             **kwargs), rtol=1e-4, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    grads = conv2d_backward(g, x, w, **kwargs)
    expected = ref_conv2d_backward(g.astype(np.float64), x.astype(np.float64),
                                   w.astype(np.float64), **kwargs)
    for got, want in zip(grads, expected[:3]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    # small integers: every sum is exact, so a tap read from the wrong pixel, a padding
    # tap not skipped or an edge pixel left unwritten cannot hide in the tolerance
    xi, wi, bi, gi = (np.rint(a * 3).astype(np.float32) for a in (x, w, b, g))
    np.testing.assert_array_equal(conv2d(xi, wi, bi, **kwargs),
                                  ref_conv2d(xi, wi, bi, **kwargs))
    exact = conv2d_backward(gi, xi, wi, **kwargs)
    for got, want in zip(exact, ref_conv2d_backward(gi, xi, wi, **kwargs)[:3]):
        np.testing.assert_array_equal(got, want)
    with fastconv.threads(1):
        one = conv2d(x, w, b, **kwargs)
    with fastconv.threads(3):
        three = conv2d(x, w, b, **kwargs)
    assert np.array_equal(one, y) and np.array_equal(three, y)
    if layout == "NCHW":  # small planes run by channel blocks: the plane loops too
        geom = fastconv.ConvGeometry(x.shape, channels, 3, stride, padding, dilation,
                                     groups=channels)
        planes = (conv2d_by(plan_with(geom, 4, _engine.FORWARD, _engine.plan_depthwise),
                            x, w, b),)
        planes += backward_by(plan_with(geom, 4, _engine.BACKWARD, _engine.plan_depthwise),
                              g, x, w)
        for got, want in zip(planes, (y,) + tuple(grads[:2])):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


DEPTHWISE_BLOCK_CASES = [
    # (N, C, H, W, multiplier, kernel, stride, padding, dilation): depthwise by channel
    # blocks of 16 (DEPTHWISE_BLOCKS)
    (2, 16, 7, 7, 1, 3, 1, 1, 1),                  # one full block: registers, edges too
    (1, 33, 14, 14, 1, 3, 2, 1, 1),                # a last block of one channel; stride 2
    (3, 17, 5, 9, 2, 5, 1, 2, 1),                  # multiplier 2 (input gradient by rows)
    (2, 20, 9, 8, 1, (1, 7), 1, ((0, 0), (3, 3)), 1),
    (2, 20, 9, 8, 1, (7, 1), (2, 1), ((3, 3), (0, 0)), 1),
    (1, 16, 1, 1, 1, 3, 1, 1, 1),                  # a 1×1 image
    (2, 16, 6, 6, 1, 3, 1, 4, 1),                  # padding beyond the kernel's reach
    (2, 32, 8, 8, 1, 3, 1, ((2, 0), (0, 2)), 2),   # asymmetric padding, dilation
    (1, 16, 4, 4, 3, 6, 1, 1, 1),                  # kernel as large as the padded input
    (2, 48, 10, 11, 1, 3, 4, 0, 1),                # stride > kernel: rows never read
    (2, 32, 9, 9, 1, 5, 2, 2, 1),                  # 5×5, stride 2, two full blocks
    (1, 16, 10, 12, 1, (7, 7), 1, 3, 1),           # 49 taps: the tap loop in groups
    (0, 16, 5, 5, 1, 3, 1, 1, 1),                  # batch 0
    (2, 16, 11, 12, 1, 3, 2, 2, 2),                # stride 2 and dilation: gathered
    (1, 16, 3, 20, 1, (1, 17), 2, ((0, 0), (8, 8)), 1),  # 17 columns: scattered rows
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", DEPTHWISE_BLOCK_CASES)
def test_depthwise_channel_blocks(rng, case, dtype, layout):
    """Depthwise by channel blocks (channels-last, zero-padded tiles of 16 channels; float32
    full blocks through depthwise_tile.h) and by the row / plane loops: forward, input and
    weight gradients against the float64 oracle; the blocks' results bit-identical for 1,
    2 and 3 threads."""
    n, c, h, w_, multiplier, k, stride, padding, dilation = case
    shape = (n, c, h, w_) if layout == "NCHW" else (n, h, w_, c)
    geom = fastconv.ConvGeometry(shape, c * multiplier, k, stride, padding, dilation,
                                 groups=c, layout=layout)
    x = rng.standard_normal(geom.input_shape).astype(dtype)
    w = rng.standard_normal(geom.weight_shape).astype(dtype)
    b = rng.standard_normal(c * multiplier).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=c, layout=layout)
    wide = {k: v.astype(np.float64) for k, v in dict(x=x, w=w, b=b).items()}
    expected = ref_conv2d(wide["x"], wide["w"], wide["b"], **kwargs)
    g = rng.standard_normal(expected.shape).astype(dtype)
    exp_gx, exp_gw = ref_conv2d_backward(g.astype(np.float64), wide["x"], wide["w"],
                                         **kwargs)[:2]
    itemsize = np.dtype(dtype).itemsize
    runs = []
    for planner, threads in [(_engine.plan_depthwise, 2), (_engine.plan_depthwise_blocks, 1),
                             (_engine.plan_depthwise_blocks, 2),
                             (_engine.plan_depthwise_blocks, 3)]:
        with fastconv.threads(threads):
            plans = [plan_with(geom, itemsize, pass_, planner, parallel_min_elements=0,
                               depthwise_row_max_taps=0)
                     for pass_ in (_engine.FORWARD, _engine.BACKWARD)]
            results = (conv2d_by(plans[0], x, w, b),) + backward_by(plans[1], g, x, w)
        assert plans[0].num_threads == threads or planner is _engine.plan_depthwise
        for got, want in zip(results, (expected, exp_gx, exp_gw)):
            np.testing.assert_allclose(got, want, **tol(dtype), err_msg=planner.__name__)
        if planner is _engine.plan_depthwise_blocks:
            runs.append(results)
    for results in runs[1:]:
        for got, first in zip(results, runs[0]):
            assert np.array_equal(got, first)
    assert conv2d(x, w, b, **kwargs).shape == expected.shape


BATCHED_CASES = [
    # (N, C, H, W, C_out, k, stride, padding, groups): small NHWC images, several per GEMM
    (5, 8, 3, 4, 64, 3, 1, 1, 1),       # groups of 2 images and a last one alone
    (4, 6, 5, 5, 48, 3, 2, ((1, 0), (0, 2)), 1),
    (3, 32, 2, 3, 80, 1, 1, 0, 1),      # pointwise: the images themselves are the columns
    (4, 16, 3, 3, 128, 1, 1, 0, 4),     # pointwise, grouped
    (6, 12, 4, 3, 96, 2, 1, 1, 3),
    (2, 3, 1, 1, 32, 3, 1, 1, 1),       # 1×1 images
]


@pytest.mark.parametrize("case", BATCHED_CASES)
def test_batched_small_images_match_reference(rng, case):
    """NHWC images with few positions: their columns side by side and one GEMM per block of
    output channels across them, written straight into the output (GROUPED_IMAGES). Small
    limits make small cases take that path; the forward is bit-identical for any thread
    count."""
    n, c, h, w_, c_out, k, stride, padding, groups = case
    shape = (n, h, w_, c)
    geom = fastconv.ConvGeometry(shape, c_out, k, stride, padding, groups=groups, layout="NHWC")
    x = rng.standard_normal(shape)
    w = rng.standard_normal(geom.weight_shape)
    b = rng.standard_normal(c_out)
    kwargs = dict(stride=stride, padding=padding, groups=groups, layout="NHWC")
    expected = ref_conv2d(x, w, b, **kwargs)
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            plan = plan_with(geom, 8, _engine.FORWARD, _engine.plan_grouped_images,
                             min_channel_block=16, batch_positions=2 * h * w_)
            assert plan.images > 1
            results.append(conv2d_by(plan, x, w, b))
        np.testing.assert_allclose(results[-1], expected, rtol=1e-10, atol=1e-10)
    for y in results[1:]:
        assert np.array_equal(y, results[0])


@pytest.mark.parametrize("batch,tiles", [(1, 2), (2, 2), (3, 2), (5, 2), (8, 1)])
def test_tiles_per_image_are_a_power_of_two(batch, tiles):
    """28 output rows of 28 positions allow 3 tiles of at least MIN_TILE_POSITIONS; the
    plan takes 2, which share evenly between 2 threads (3 ran as 2 + 1)."""
    geom = fastconv.ConvGeometry((batch, 128, 56, 56), 128, 3, 2, 1)
    plan = _engine.choose_plan(geom, 4, _engine.FORWARD, tuning=_tuning.DEFAULT)
    assert plan.strategy == _engine.ROW_TILES
    assert -(-geom.out_h // plan.tile_rows) == tiles


def test_batched_small_images_plan():
    """Which layers group images: NHWC only, images under SMALL_IMAGE_POSITIONS positions,
    up to BATCH_POSITIONS positions and TILE_BYTES of columns per group, and a workspace
    cap that cannot hold a group falls back to image by image."""
    def plan(shape, c_out=512, k=3, layout="NHWC", pass_=_engine.FORWARD, **kwargs):
        geom = fastconv.ConvGeometry(shape, c_out, k, padding=k // 2, layout=layout)
        return _engine.choose_plan(geom, 4, pass_, tuning=_tuning.DEFAULT, **kwargs)

    res5 = plan((8, 7, 7, 512))
    assert res5.strategy == _engine.GROUPED_IMAGES
    assert res5.images == min(8, _tuning.DEFAULT.tile_bytes // (49 * 4608 * 4))
    assert res5.workspace == res5.images * 49 * 4608
    assert plan((8, 7, 7, 2048), k=1).images == 8  # pointwise: no columns to hold
    assert plan((8, 14, 14, 256), 256).images == 1
    assert plan((8, 512, 7, 7), layout="NCHW").images == 1
    assert plan((1, 7, 7, 512)).images == 1
    assert plan((8, 7, 7, 512), pass_=_engine.INPUT_GRAD).images == 1
    capped = plan((8, 7, 7, 512), max_workspace_bytes=49 * 4608 * 4 * 2 - 4)
    assert capped.images == 1
    assert capped.workspace * 4 <= 49 * 4608 * 4 * 2 - 4


def test_small_convolutions_run_on_one_thread():
    """Below parallel_min_flops waking the OpenMP team costs more than it saves."""
    small = fastconv.ConvGeometry((32, 1, 8, 8), 16, 3, padding=1)   # ~0.6 MFLOP
    large = fastconv.ConvGeometry((8, 64, 56, 56), 64, 3, padding=1)
    default = _tuning.DEFAULT
    with fastconv.threads(2):
        assert small.flops < default.parallel_min_flops <= large.flops
        for pass_ in (_engine.FORWARD, _engine.BACKWARD, _engine.INPUT_GRAD):
            assert _engine.choose_plan(small, 4, pass_, tuning=default).num_threads == 1
            assert _engine.choose_plan(large, 4, pass_, tuning=default).num_threads == 2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_threads_follow_the_elements(layout):
    """A depthwise convolution is memory-bound: its thread count follows the elements read
    and written (parallel_min_elements), not the flops. MobileNetV2's 960-channel 7×7
    layer (0.85 MFLOP, under parallel_min_flops) runs on every thread; a tiny one on one."""
    default = _tuning.DEFAULT
    shape = (1, 960, 7, 7) if layout == "NCHW" else (1, 7, 7, 960)
    deep = fastconv.ConvGeometry(shape, 960, 3, padding=1, groups=960, layout=layout)
    tiny = fastconv.ConvGeometry((1, 16, 6, 6) if layout == "NCHW" else (1, 6, 6, 16), 16,
                                 3, padding=1, groups=16, layout=layout)
    assert deep.flops < default.parallel_min_flops
    with fastconv.threads(2):
        for pass_ in (_engine.FORWARD, _engine.BACKWARD, _engine.INPUT_GRAD):
            assert _engine.choose_plan(deep, 4, pass_, tuning=default).num_threads == 2
            assert _engine.choose_plan(tiny, 4, pass_, tuning=default).num_threads == 1


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,c_out", [((8, 7, 7, 256), 36), ((3, 5, 5, 512), 20),
                                         ((30, 6, 6, 256), 40), ((2, 1, 1, 256), 4),
                                         ((4, 3, 3, 40), 8), ((3, 9, 9, 256), 24)])
def test_pointwise_input_grad_over_the_batch(rng, layout, dtype, shape, c_out):
    """Batches of small images (at most 64 positions each, C_in a multiple of 256) take the
    1×1 input gradient as one product over the whole batch, cut into fixed blocks of rows
    and input channels that cross image boundaries (30·36 rows in blocks of 1024; 512
    channels in blocks of 128); NCHW (float32) gathers the rows across images and writes
    them back transposed. The others (40 channels; 81 positions) keep their per-image
    GEMMs. The oracle's values, bit-identical on 1 and 2 threads (NHWC shapes; the NCHW
    input is their transpose)."""
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((1, 1, shape[3], c_out)).astype(dtype)
    grad_out = rng.standard_normal(shape[:3] + (c_out,)).astype(dtype)
    expected = fastconv.reference.conv2d_backward(grad_out, x, w)[0]  # NHWC / HWIO
    if layout == "NCHW":
        x, grad_out = x.transpose(0, 3, 1, 2).copy(), grad_out.transpose(0, 3, 1, 2).copy()
        w, expected = w.transpose(3, 2, 0, 1).copy(), expected.transpose(0, 3, 1, 2)
    grads = []
    for n in (1, 2):
        with fastconv.threads(n):
            grads.append(fastconv.conv2d_backward(grad_out, x, w, layout=layout,
                                                  needs_weight_grad=False,
                                                  needs_bias_grad=False).grad_input)
    np.testing.assert_allclose(grads[0], expected, **tol(dtype))
    assert np.array_equal(grads[0], grads[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,c_out", [((3, 6, 7, 144), 24), ((2, 5, 5, 32), 5),
                                         ((1, 9, 9, 48), 40)])
def test_pointwise_nhwc_weight_grad_of_few_output_channels(rng, dtype, shape, c_out):
    """NHWC 1×1 weight gradients whose C_out is not a multiple of 16 while C_in is: float32
    accumulates the transposed product (C_out × C_in) per thread and adds it back
    transposed (docs/performance.md#weight-grad-transposed). The oracle's values on 1 and
    2 threads."""
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((1, 1, shape[3], c_out)).astype(dtype)
    grad_out = rng.standard_normal(shape[:3] + (c_out,)).astype(dtype)
    expected = fastconv.reference.conv2d_backward(grad_out, x, w)[1]  # HWIO
    for n in (1, 2):
        with fastconv.threads(n):
            got = fastconv.conv2d_backward(grad_out, x, w, layout="NHWC",
                                           needs_input_grad=False,
                                           needs_bias_grad=False).grad_weight
        t = tol(dtype)
        np.testing.assert_allclose(got, expected, rtol=t["rtol"], atol=10 * t["atol"])


WEIGHT_GRAD_IMAGES = [
    # (N, C, H, W, C_out, kernel, stride, padding, dilation, batch_positions)
    (13, 6, 7, 7, 5, 3, 1, 1, 1, 100),     # 3 images a group (49 positions): 3+3+3+3+1
    (5, 4, 9, 9, 8, 3, 2, 1, 1, 512),      # strided: 5×5 outputs, one group of 5
    (4, 8, 7, 7, 20, 1, 1, 0, 1, 60),      # 1×1: the images themselves, 2 a group
    (3, 5, 8, 8, 7, 3, 1, 2, 2, 65),       # dilated, padded: 8×8, 2 a group
    (2, 3, 1, 1, 4, 3, 1, 1, 1, 512),      # 1×1 images, the kernel past every edge
    (6, 40, 6, 5, 33, (3, 1), (1, 2), ((2, 0), (1, 1)), 1, 128),  # 16-row blocks + rest
    (3, 8, 4, 4, 300, 1, 1, 0, 1, 48),     # output channels in blocks of 160 + 140
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WEIGHT_GRAD_IMAGES)
def test_weight_grad_over_images(rng, case, dtype, layout):
    """WEIGHT_GRAD_IMAGES (one group, images of few positions): the weight gradient over
    several images' columns at once (NCHW side by side with their output gradients; NHWC
    one under another), one product per block of column-matrix rows into the gradient;
    groups of images with a partial last one. The oracle's values for both gradients, and
    bit-identical for 1, 2 and 3 threads."""
    n, c, h, w_, c_out, k, stride, padding, dilation, positions = case
    shape = (n, c, h, w_) if layout == "NCHW" else (n, h, w_, c)
    geom = fastconv.ConvGeometry(shape, c_out, k, stride, padding, dilation, layout=layout)
    x = rng.standard_normal(geom.input_shape).astype(dtype)
    w = rng.standard_normal(geom.weight_shape).astype(dtype)
    g = rng.standard_normal(geom.output_shape).astype(dtype)
    exp_gx, exp_gw = ref_conv2d_backward(g, x, w, stride, padding, dilation,
                                         layout=layout)[:2]
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            plan = plan_with(geom, x.itemsize, _engine.BACKWARD,
                             _engine.plan_weight_grad_images, batch_positions=positions)
            grad_input, grad_weight = backward_by(plan, g, x, w)
        per_image = geom.out_h * geom.out_w
        assert plan.images == min(n, -(-positions // per_image))
        columns = 0 if layout == "NHWC" and geom.window.is_pointwise else geom.gemm_shape[1]
        outputs = c_out if layout == "NCHW" else 0
        assert plan.partials == plan.images * per_image * (columns + outputs)
        np.testing.assert_allclose(grad_input, exp_gx, **tol(dtype))
        np.testing.assert_allclose(grad_weight, exp_gw, rtol=tol(dtype)["rtol"],
                                   atol=10 * tol(dtype)["atol"])
        results.append(grad_weight)
    assert all(np.array_equal(r, results[0]) for r in results[1:])


def test_weight_grad_over_images_plan():
    """Where WEIGHT_GRAD_IMAGES serves: the backward pass (not the input gradient alone) of
    convolutions of one group, batch > 1, at most weight_grad_max_positions positions
    an image, its scratch and row tiles within the cap; column-matrix rows in at most
    work_items blocks of at least 128 rows, then output channels likewise towards
    work_items blocks, 16-aligned."""
    def plan(shape, c_out=512, k=3, stride=1, groups=1, layout="NCHW", pass_=_engine.BACKWARD,
             cap=None, **tuning):
        geom = fastconv.ConvGeometry(shape, c_out, k, stride, k // 2, groups=groups,
                                     layout=layout)
        with fastconv.threads(2):
            return _engine.choose_plan(geom, 4, pass_, max_workspace_bytes=cap,
                                       tuning=dataclasses.replace(_tuning.DEFAULT, **tuning))
    found = plan((8, 512, 7, 7))
    assert found.strategy == _engine.WEIGHT_GRAD_IMAGES
    assert (found.images, found.k_block) == (8, 576)          # 4608 rows in 8 blocks
    assert found.partials == 8 * 49 * (4608 + 512)
    assert plan((8, 2048, 7, 7), k=1).strategy == _engine.WEIGHT_GRAD_IMAGES
    assert plan((8, 1024, 14, 14), 2048, k=1, stride=2).strategy == _engine.WEIGHT_GRAD_IMAGES
    assert plan((8, 64, 8, 8), 64, k=1).k_block == 64         # 64 rows: one block
    few_rows = plan((8, 160, 7, 7), 960, k=1)                  # ... then channel blocks
    assert (few_rows.k_block, few_rows.m_block) == (160, 144)
    assert (found.k_block, found.m_block) == (576, 512)
    assert plan((8, 256, 14, 14)).strategy != _engine.WEIGHT_GRAD_IMAGES  # 196 positions
    assert plan((1, 512, 7, 7)).strategy != _engine.WEIGHT_GRAD_IMAGES    # one image
    nhwc = plan((8, 7, 7, 512), layout="NHWC")                # columns, no output copies
    assert (nhwc.strategy, nhwc.partials) == (_engine.WEIGHT_GRAD_IMAGES, 8 * 49 * 4608)
    assert plan((8, 7, 7, 2048), k=1, layout="NHWC").partials == 0  # the images themselves
    assert plan((8, 512, 7, 7), groups=2).strategy != _engine.WEIGHT_GRAD_IMAGES
    assert plan((8, 512, 7, 7), pass_=_engine.INPUT_GRAD).strategy != _engine.WEIGHT_GRAD_IMAGES
    small = plan((8, 8, 7, 7), 8)                               # scratch > one accumulator
    cap = (small.workspace + small.partials) * 4
    assert plan((8, 8, 7, 7), 8, cap=cap).strategy == _engine.WEIGHT_GRAD_IMAGES
    assert plan((8, 8, 7, 7), 8, cap=cap - 4).strategy == _engine.ROW_TILES
    assert plan((8, 512, 7, 7), batch_positions=49).strategy != _engine.WEIGHT_GRAD_IMAGES
