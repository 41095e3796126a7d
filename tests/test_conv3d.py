"""3-D convolution (docs/spec.md §6): conv3d, conv3d_backward, conv_transpose3d, Conv3D,
im2col / col2im of volumes, and padding_mode on all of them.

Oracles: fastconv.reference's 3-D tap loops (np.pad copies, written from the definitions,
not via the kernels) in exact integers, PyTorch's F.conv3d / F.conv_transpose3d /
nn.Conv3d(padding_mode=...) with autograd for every gradient (skipped without torch), and
adjoint identities in exact integers for every padding mode.
"""
from __future__ import annotations

import importlib
import pickle
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

LAYOUTS = ["NCDHW", "NDHWC"]
MODES = ["zeros", "reflect", "replicate", "circular"]
TORCH_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def to_cl(x):
    """(N, C, D, H, W) → (N, D, H, W, C) (also without N), C-contiguous."""
    return np.ascontiguousarray(np.moveaxis(x, -4, -1))


def to_cf(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, -4))


def oidhw_to_dhwio(w):
    """(C_out, C_in/g, kd, kh, kw) → (kd, kh, kw, C_in/g, C_out); also the transposed
    convolution's (C_in, C_out/g, ...) → (..., C_out/g, C_in)."""
    return np.ascontiguousarray(w.transpose(2, 3, 4, 1, 0))


def ints(rng, shape, dtype=np.float64, span=3):
    return rng.integers(-span, span + 1, shape).astype(dtype)


def in_layout(x, w, layout):
    return (x, w) if layout == "NCDHW" else (to_cl(x), oidhw_to_dhwio(w))


def from_layout(y, layout):
    return y if layout == "NCDHW" else to_cf(y)


def pairs(padding, sizes, kernel, stride, dilation):
    return reference.pad_triples(padding, sizes, kernel, stride, dilation)


# (N, C_in, D, H, W), C_out, kernel, stride, padding, dilation, groups
CASES = {
    "plain": ((2, 3, 4, 5, 6), 4, 3, 1, 0, 1, 1),
    "padded": ((2, 3, 4, 5, 6), 4, 3, 1, 1, 1, 1),
    "asymmetric": ((1, 4, 5, 4, 6), 6, (3, 2, 3), (1, 2, 1), ((1, 2), 0, (2, 1)), 1, 2),
    "same": ((2, 2, 5, 4, 6), 3, (2, 3, 4), 1, "same", 1, 1),
    "same-strided": ((2, 3, 7, 5, 6), 5, 3, (2, 3, 2), "same", 1, 1),
    "stride-beyond-kernel": ((2, 3, 9, 8, 10), 4, 2, 4, 1, 1, 1),
    "dilated": ((2, 4, 7, 6, 7), 4, 3, 1, (2, 1, 3), (2, 1, 3), 2),
    "depthwise": ((2, 6, 5, 5, 5), 6, 3, 2, 1, 1, 6),
    "volume-1": ((2, 3, 1, 1, 1), 4, 1, 1, 0, 1, 1),
    "volume-1-padded": ((1, 2, 1, 1, 1), 3, 3, 1, 1, 1, 1),
    "kernel-fills-padded": ((2, 2, 3, 2, 3), 3, (5, 4, 5), 1, 1, 1, 1),
    "pointwise": ((2, 5, 3, 4, 5), 3, 1, 1, 0, 1, 1),
    "pointwise-strided": ((2, 5, 5, 4, 5), 3, 1, 2, 0, 1, 1),
    "batch-1": ((1, 3, 4, 4, 4), 2, 3, 1, "valid", 1, 1),
    "batch-0": ((0, 3, 4, 4, 4), 2, 3, 1, 1, 1, 1),
    "channels-last-copy": ((2, 16, 4, 5, 6), 8, 3, 1, 1, 1, 2),   # C_in/g >= 8 (NCDHW)
    "channels-last-copy-strided": ((2, 8, 5, 6, 5), 4, 3, 2, 1, 1, 1),
}


def _case(rng, name, dtype=np.float64):
    shape, cout, k, s, p, d, g = CASES[name]
    kernel = (k,) * 3 if np.isscalar(k) else k
    x = ints(rng, shape, dtype)
    w = ints(rng, (cout, shape[1] // g) + kernel, dtype)
    b = ints(rng, cout, dtype)
    return x, w, b, dict(stride=s, padding=p, dilation=d, groups=g)


def _fits(mode, x_shape, padding, kernel, stride, dilation):
    if mode == "zeros":
        return True
    pads = pairs(padding, x_shape[2:], kernel, stride, dilation)
    for (before, after), size in zip(pads, x_shape[2:]):
        pad = max(before, after)
        if pad and (mode == "reflect" and pad >= size or mode == "circular" and pad > size):
            return False
    return True


# ------------------------------------------------------------------ exact against oracles
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(CASES))
def test_conv3d_and_backward_equal_reference(rng, name, layout, mode):
    x, w, b, kw = _case(rng, name)
    if not _fits(mode, x.shape, kw["padding"], w.shape[2:], kw["stride"], kw["dilation"]):
        pytest.skip("padding too large for the mode")
    kw = dict(kw, padding_mode=mode)
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv3d(xs, ws, b, layout=layout, **kw)
    want = reference.conv3d_naive(to_cl(x), oidhw_to_dhwio(w), **kw) + b
    np.testing.assert_array_equal(y, want if layout == "NDHWC" else to_cf(want))
    grad = ints(rng, y.shape)
    got = fastconv.conv3d_backward(grad, xs, ws, layout=layout, **kw)
    gcl = grad if layout == "NDHWC" else to_cl(grad)
    gx, gw, gb = reference.conv3d_backward(gcl, to_cl(x), oidhw_to_dhwio(w), **kw)
    np.testing.assert_array_equal(from_layout(got.grad_input, layout), to_cf(gx))
    np.testing.assert_array_equal(got.grad_weight, gw if layout == "NDHWC"
                                  else gw.transpose(4, 3, 0, 1, 2))
    np.testing.assert_array_equal(got.grad_bias, gb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_and_float32(rng, layout, dtype):
    x, w, b, kw = _case(rng, "asymmetric", dtype)
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv3d(xs, ws, b, layout=layout, **kw)
    assert y.dtype == dtype
    one = fastconv.conv3d(xs[1 if len(xs) > 1 else 0], ws, b, layout=layout, **kw)
    np.testing.assert_array_equal(one, y[1 if len(xs) > 1 else 0])
    g = fastconv.conv3d_backward(y[0], xs[0], ws, layout=layout, **kw)
    assert g.grad_input.shape == xs[0].shape and g.grad_input.dtype == dtype
    full = fastconv.conv3d_backward(y[:1], xs[:1], ws, layout=layout, **kw)
    np.testing.assert_array_equal(g.grad_input, full.grad_input[0])
    np.testing.assert_array_equal(g.grad_weight, full.grad_weight)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(0, 2), groups=st.integers(1, 3),
       cin_g=st.integers(1, 3), cout_g=st.integers(1, 3),
       sizes=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2)),
       mode=st.sampled_from(MODES), layout=st.sampled_from(LAYOUTS))
def test_conv3d_hypothesis_against_reference(data, n, groups, cin_g, cout_g, sizes, kernel,
                                             stride, dilation, mode, layout):
    pads = []
    for size, k, d in zip(sizes, kernel, dilation):
        limit = {"reflect": size - 1, "circular": size}.get(mode, 3)
        before = data.draw(st.integers(0, max(0, min(3, limit))))
        after = data.draw(st.integers(0, max(0, min(3, limit))))
        if size + before + after < d * (k - 1) + 1:
            before = after = 0
            if size < d * (k - 1) + 1:
                k = 1
        pads.append((before, after))
    kernel = tuple(k if s + b + a >= d * (k - 1) + 1 else 1
                   for k, s, (b, a), d in zip(kernel, sizes, pads, dilation))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = ints(rng, (n, cin_g * groups) + sizes)
    w = ints(rng, (cout_g * groups, cin_g) + kernel)
    kw = dict(stride=stride, padding=tuple(pads), dilation=dilation, groups=groups,
              padding_mode=mode)
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv3d(xs, ws, layout=layout, **kw)
    want = reference.conv3d_naive(to_cl(x), oidhw_to_dhwio(w), **kw)
    np.testing.assert_array_equal(from_layout(y, layout), to_cf(want))
    grad = ints(rng, y.shape)
    got = fastconv.conv3d_backward(grad, xs, ws, layout=layout, **kw)
    gx, gw, _ = reference.conv3d_backward(grad if layout == "NDHWC" else to_cl(grad),
                                          to_cl(x), oidhw_to_dhwio(w), **kw)
    np.testing.assert_array_equal(from_layout(got.grad_input, layout), to_cf(gx))
    np.testing.assert_array_equal(
        got.grad_weight, gw if layout == "NDHWC" else gw.transpose(4, 3, 0, 1, 2))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sizes, k, stride, padding, out_pad, dilation, groups", [
    ((3, 4, 5), 3, 2, 1, 1, 1, 2),
    ((3, 4, 5), (3, 2, 3), (1, 2, 1), (1, 0, 2), (0, 1, 0), (1, 1, 2), 1),
    ((2, 2, 2), 2, 3, 0, (2, 0, 1), 1, 1),
    ((1, 1, 1), 3, 1, 1, 0, 1, 2),
    ((4, 3, 3), 3, 1, ((1, 2), 0, (2, 1)), 0, (2, 1, 1), 1),
    ((2, 3, 2), 2, 1, 0, (1, 0, 0), 2, 1),       # output_padding < dilation
])
def test_conv_transpose3d_equals_reference(rng, layout, sizes, k, stride, padding, out_pad,
                                           dilation, groups):
    kernel = (k,) * 3 if np.isscalar(k) else k
    x = ints(rng, (2, 4) + sizes)
    w = ints(rng, (4, 6 // groups) + kernel)
    b = ints(rng, 6)
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv_transpose3d(xs, ws, b, stride, padding, out_pad, groups, dilation,
                                  layout=layout)
    want = reference.conv_transpose3d(to_cl(x), oidhw_to_dhwio(w), stride, padding, out_pad,
                                      groups, dilation) + b
    np.testing.assert_array_equal(from_layout(y, layout), to_cf(want))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_adjoint_identities_exact(rng, layout, mode):
    """⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ and ⟨conv3d(x), y⟩ = ⟨x, ∂input⟩, in integers."""
    x = ints(rng, (2, 3, 4, 5, 6))
    xs = x if layout == "NCDHW" else to_cl(x)
    geometry = dict(stride=(1, 2, 1), padding=((1, 2), 1, (0, 2)), dilation=(1, 1, 2),
                    layout=layout, padding_mode=mode)
    cols = fastconv.im2col(xs, (3, 2, 3), **geometry)
    c = ints(rng, cols.shape)
    image = fastconv.col2im(c, (4, 5, 6), (3, 2, 3), **geometry)
    assert (cols * c).sum() == (xs * image).sum()
    assert image.shape == xs.shape
    w = ints(rng, (4, 3, 3, 2, 3))
    ws = w if layout == "NCDHW" else oidhw_to_dhwio(w)
    kw = {k: v for k, v in geometry.items()}
    y = fastconv.conv3d(xs, ws, **kw)
    g = ints(rng, y.shape)
    grads = fastconv.conv3d_backward(g, xs, ws, **kw)
    assert (y * g).sum() == (xs * grads.grad_input).sum()
    assert (y * g).sum() == (ws * grads.grad_weight).sum()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint8, np.bool_])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col3d_equals_reference(rng, layout, dtype, mode):
    x = rng.integers(0, 5, (2, 3, 4, 5, 6)).astype(dtype)
    xs = x if layout == "NCDHW" else to_cl(x)
    args = ((3, 2, 2), (2, 1, 3), (1, (0, 2), 2), (1, 2, 1))
    cols = fastconv.im2col(xs, args[0], stride=args[1], padding=args[2], dilation=args[3],
                           layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(cols, reference.im2col3d(xs, *args, layout, mode))
    assert cols.dtype == dtype
    if dtype == np.bool_:
        return
    back = fastconv.col2im(cols, (4, 5, 6), args[0], stride=args[1], padding=args[2],
                           dilation=args[3], layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(back, reference.col2im3d(cols, (4, 5, 6), *args, layout,
                                                           mode))
    g = fastconv.im2col_backward(cols, xs.shape, args[0], stride=args[1], padding=args[2],
                                 dilation=args[3], layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(g, back)
    c = fastconv.col2im_backward(xs, args[0], stride=args[1], padding=args[2],
                                 dilation=args[3], layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(c, cols)


def test_im2col3d_row_order():
    """Rows ((c·kd + i)·kh + j)·kw + k (Caffe2's Im2ColNd); channels-last columns
    ((i·kh + j)·kw + k)·C + c; 2-D layout names read as the 3-D ones; unbatched."""
    x = np.arange(2 * 2 * 2 * 3, dtype=np.float64).reshape(2, 2, 2, 3)   # C, D, H, W
    cols = fastconv.im2col(x, (2, 2, 2))
    assert cols.shape == (16, 2)
    for c, i, j, k in np.ndindex(2, 2, 2, 2):
        np.testing.assert_array_equal(cols[((c * 2 + i) * 2 + j) * 2 + k],
                                      x[c, i, j, k:k + 2])
    last = fastconv.im2col(to_cl(x), (2, 2, 2), layout="NHWC")
    for c, i, j, k in np.ndindex(2, 2, 2, 2):
        np.testing.assert_array_equal(last[:, ((i * 2 + j) * 2 + k) * 2 + c],
                                      x[c, i, j, k:k + 2])


def test_padding_mode_values():
    """What each mode reads along an axis, on a 1×1×4 row [1, 2, 3, 4] with a 1×1×1
    identity kernel."""
    x = np.array([1.0, 2, 3, 4]).reshape(1, 1, 1, 1, 4)
    w = np.ones((1, 1, 1, 1, 1))
    expected = {"zeros": [0, 0, 1, 2, 3, 4, 0, 0], "reflect": [3, 2, 1, 2, 3, 4, 3, 2],
                "replicate": [1, 1, 1, 2, 3, 4, 4, 4], "circular": [3, 4, 1, 2, 3, 4, 1, 2]}
    for mode, values in expected.items():
        y = fastconv.conv3d(x, w, padding=(0, 0, 2), padding_mode=mode)
        np.testing.assert_array_equal(y.ravel(), values)


# ------------------------------------------------------------------ PyTorch
def _torch_conv(torch, x, w, b, kw):
    F = torch.nn.functional
    mode = kw.get("padding_mode", "zeros")
    pads = pairs(kw["padding"], x.shape[2:], w.shape[2:], (kw["stride"],) * 3
                 if np.isscalar(kw["stride"]) else kw["stride"],
                 (kw["dilation"],) * 3 if np.isscalar(kw["dilation"]) else kw["dilation"])
    flat = [v for pair in reversed(pads) for v in pair]
    padded = F.pad(x, flat, mode=TORCH_MODES.get(mode, "constant"))
    return F.conv3d(padded, w, b, kw["stride"], 0, kw["dilation"], kw["groups"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["padded", "asymmetric", "same-strided", "dilated",
                                  "depthwise", "channels-last-copy",
                                  "channels-last-copy-strided", "kernel-fills-padded"])
def test_conv3d_matches_torch_autograd(torch, rng, name, layout, dtype, mode):
    x, w, b, kw = _case(rng, name, dtype)
    if not _fits(mode, x.shape, kw["padding"], w.shape[2:], kw["stride"], kw["dilation"]):
        pytest.skip("padding too large for the mode")
    x = rng.standard_normal(x.shape).astype(dtype)
    w = rng.standard_normal(w.shape).astype(dtype)
    b = rng.standard_normal(b.shape).astype(dtype)
    kw = dict(kw, padding_mode=mode)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = _torch_conv(torch, xt, wt, bt, kw)
    grad = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(grad))
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv3d(xs, ws, b, layout=layout, **kw)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(from_layout(y, layout), yt.detach().numpy(), **tol)
    g = fastconv.conv3d_backward(grad if layout == "NCDHW" else to_cl(grad), xs, ws,
                                 layout=layout, **kw)
    np.testing.assert_allclose(from_layout(g.grad_input, layout), xt.grad.numpy(), **tol)
    gw = g.grad_weight if layout == "NCDHW" else g.grad_weight.transpose(4, 3, 0, 1, 2)
    np.testing.assert_allclose(gw, wt.grad.numpy(), **tol)
    np.testing.assert_allclose(g.grad_bias, bt.grad.numpy(), **tol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride, padding, out_pad, dilation, groups", [
    (2, 1, 1, 1, 2), ((1, 2, 3), (0, 1, 2), (0, 1, 2), (2, 1, 1), 1), (1, 2, 0, 2, 4)])
def test_conv_transpose3d_matches_torch_autograd(torch, rng, layout, stride, padding,
                                                 out_pad, dilation, groups):
    x = rng.standard_normal((2, 4, 3, 4, 5))
    w = rng.standard_normal((4, 8 // groups, 3, 2, 3))
    b = rng.standard_normal(8)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv_transpose3d(xt, wt, torch.tensor(b), stride, padding,
                                              out_pad, groups, dilation)
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv_transpose3d(xs, ws, b, stride, padding, out_pad, groups, dilation,
                                  layout=layout)
    np.testing.assert_allclose(from_layout(y, layout), yt.detach().numpy(), rtol=1e-10,
                               atol=1e-10)
    # its gradients are conv3d's forward and weight gradient (with the roles swapped)
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(g))
    gs = g if layout == "NCDHW" else to_cl(g)
    grad_x = fastconv.conv3d(gs, ws, None, stride, padding, dilation, groups, layout=layout)
    np.testing.assert_allclose(from_layout(grad_x, layout), xt.grad.numpy(), rtol=1e-10,
                               atol=1e-10)
    grads = fastconv.conv3d_backward(xs, gs, ws, stride=stride, padding=padding,
                                     dilation=dilation, groups=groups, layout=layout,
                                     needs_input_grad=False, needs_bias_grad=False)
    gw = grads.grad_weight if layout == "NCDHW" else grads.grad_weight.transpose(4, 3, 0, 1, 2)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_matches_torch_module(torch, rng, layout, mode):
    module = torch.nn.Conv3d(4, 6, (3, 2, 3), stride=(1, 2, 1), padding=(1, 1, 2),
                             dilation=(1, 1, 2), groups=2, padding_mode=mode).double()
    layer = fastconv.Conv3D(4, 6, (3, 2, 3), stride=(1, 2, 1), padding=(1, 1, 2),
                            dilation=(1, 1, 2), groups=2, padding_mode=mode, layout=layout,
                            dtype=np.float64)
    w = module.weight.detach().numpy()
    layer.weight = w.copy() if layout == "NCDHW" else oidhw_to_dhwio(w)
    layer.bias = module.bias.detach().numpy().copy()
    x = rng.standard_normal((2, 4, 5, 6, 7))
    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    xs = x if layout == "NCDHW" else to_cl(x)
    for _ in range(2):   # gradients accumulate
        y = layer(xs)
        g = rng.standard_normal(y.shape)
        gt = torch.tensor(g if layout == "NCDHW" else to_cf(g))
        grad_x = layer.backward(g)
        (gxt,) = torch.autograd.grad(yt, xt, gt, retain_graph=True)
        yt.backward(gt, retain_graph=True)
        np.testing.assert_allclose(from_layout(y, layout), yt.detach().numpy(), rtol=1e-10,
                                   atol=1e-10)
        np.testing.assert_allclose(from_layout(grad_x, layout), gxt.numpy(), rtol=1e-10,
                                   atol=1e-10)
    gw = layer.weight_grad if layout == "NCDHW" else layer.weight_grad.transpose(4, 3, 0, 1, 2)
    np.testing.assert_allclose(gw, module.weight.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.bias_grad, module.bias.grad.numpy(), rtol=1e-10,
                               atol=1e-10)


def test_im2col3d_matches_torch_unfold_of_depth_slices(torch, rng):
    """torch has no 3-D unfold: a 1-deep kernel's columns are F.unfold's of each depth plane
    side by side."""
    x = rng.standard_normal((2, 3, 4, 6, 7))
    cols = fastconv.im2col(x, (1, 3, 2), stride=(1, 2, 1), padding=(0, 1, 1))
    unfolded = [torch.nn.functional.unfold(torch.tensor(x[:, :, d]), (3, 2), padding=1,
                                           stride=(2, 1)).numpy() for d in range(4)]
    positions = unfolded[0].shape[-1]
    for d in range(4):
        np.testing.assert_allclose(cols[:, :, d * positions:(d + 1) * positions],
                                   unfolded[d])


# ------------------------------------------------------------------ memory order, threads
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_and_read_only_inputs(rng, layout):
    x = ints(rng, (3, 10, 4, 5, 12))[:, :, :, :, ::2]         # strided
    w = ints(rng, (6, 10, 3, 3, 3))
    if layout == "NDHWC":
        x, w = np.moveaxis(x, 1, -1), w.transpose(2, 3, 4, 1, 0)   # non-contiguous views
    else:
        w = np.asfortranarray(w)
    b = ints(rng, 6)[::-1]
    for a in (x, w, b):
        a.flags.writeable = False
    before = [a.copy() for a in (x, w, b)]
    kw = dict(stride=2, padding="same", layout=layout, padding_mode="reflect")
    y = fastconv.conv3d(x, w, b, **kw)
    want = fastconv.conv3d(*(np.ascontiguousarray(a) for a in (x, w, b)), **kw)
    np.testing.assert_array_equal(y, want)
    g = fastconv.conv3d_backward(y, x, w, **kw)
    g2 = fastconv.conv3d_backward(want, np.ascontiguousarray(x), np.ascontiguousarray(w),
                                  **kw)
    for a, c in zip(g, g2):
        np.testing.assert_array_equal(a, c)
    cols = fastconv.im2col(x, (3, 3, 3), padding=1, layout=layout)
    np.testing.assert_array_equal(cols, fastconv.im2col(np.ascontiguousarray(x), (3, 3, 3),
                                                        padding=1, layout=layout))
    for a, copy in zip((x, w, b), before):
        np.testing.assert_array_equal(a, copy)


def test_out_buffers(rng):
    x, w, b = ints(rng, (2, 3, 4, 4, 4)), ints(rng, (4, 3, 3, 3, 3)), ints(rng, 4)
    out = np.empty((2, 4, 4, 4, 4))
    assert fastconv.conv3d(x, w, b, padding=1, out=out) is out
    np.testing.assert_array_equal(out, fastconv.conv3d(x, w, b, padding=1))
    out1 = np.empty((4, 4, 4, 4))
    assert fastconv.conv3d(x[0], w, b, padding=1, out=out1) is out1
    np.testing.assert_array_equal(out1, out[0])
    t_out = np.empty((2, 3, 4, 4, 4))
    assert fastconv.conv_transpose3d(out, w, None, 1, 1, out=t_out) is t_out
    np.testing.assert_array_equal(t_out, fastconv.conv_transpose3d(out, w, None, 1, 1))
    c_out = np.empty((2, 81, 64))
    assert fastconv.im2col(x, (3, 3, 3), padding=1, out=c_out) is c_out
    i_out = np.empty((2, 3, 4, 4, 4))
    assert fastconv.col2im(c_out, 4, (3, 3, 3), padding=1, out=i_out) is i_out


def _needs_two_threads():
    with fastconv.threads(2):
        if fastconv.get_num_threads() < 2:
            pytest.skip("needs 2 threads")


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_thread_counts_bit_identical(rng, layout, mode):
    """Every result, gradients included, bit-identical on 1, 2 and 3 threads (docs/spec.md
    §0): the work items and the weight-gradient chunks do not depend on the thread count."""
    _needs_two_threads()
    x = rng.standard_normal((3, 16, 6, 9, 10)).astype(np.float32)
    w = rng.standard_normal((12, 16, 3, 3, 3)).astype(np.float32)
    xs, ws = in_layout(x, w, layout)
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            kw = dict(padding=1, layout=layout, padding_mode=mode)
            y = fastconv.conv3d(xs, ws, **kw)
            g = fastconv.conv3d_backward(y, xs, ws, **kw)
            s = fastconv.conv3d_backward(y[:, :, ::2] if layout == "NCDHW" else y[:, ::2],
                                         xs, ws, stride=(2, 1, 1), **kw)
            t = fastconv.conv_transpose3d(y, ws, stride=2, padding=1, output_padding=1,
                                          layout=layout)
            layer = fastconv.Conv3D(16, 12, 3, padding=1, padding_mode=mode, layout=layout,
                                    seed=3)
            ly = layer(xs)
            lg = layer.backward(ly)
            cols = fastconv.im2col(xs, (3, 3, 3), padding=1, layout=layout)
            back = fastconv.col2im(cols, (6, 9, 10), (3, 3, 3), padding=1, layout=layout)
            results.append((y, *g, *s[:2], t, ly, lg, layer.weight_grad, cols, back))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ the layer
@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_equals_functions(rng, layout, mode):
    layer = fastconv.Conv3D(4, 6, 3, stride=2, padding="same", groups=2, padding_mode=mode,
                            layout=layout, seed=1, dtype=np.float64)
    x = rng.standard_normal((2, 4, 5, 6, 7))
    xs = x if layout == "NCDHW" else to_cl(x)
    y = layer(xs)
    kw = dict(stride=2, padding="same", groups=2, padding_mode=mode, layout=layout)
    np.testing.assert_array_equal(y, fastconv.conv3d(xs, layer.weight, layer.bias, **kw))
    g = rng.standard_normal(y.shape)
    grad_x = layer.backward(g)
    want = fastconv.conv3d_backward(g, xs, layer.weight, **kw)
    np.testing.assert_array_equal(grad_x, want.grad_input)
    np.testing.assert_array_equal(layer.weight_grad, want.grad_weight)
    np.testing.assert_array_equal(layer.bias_grad, want.grad_bias)
    one = layer(xs[0])
    np.testing.assert_array_equal(one, y[0])
    assert layer.backward(g[0]).shape == xs[0].shape
    layer.zero_grad()
    assert not layer.weight_grad.any() and not layer.bias_grad.any()
    assert layer.padding == "same" and layer.kernel_size == (3, 3, 3)


def test_layer_seed_and_pickle(rng):
    a = fastconv.Conv3D(3, 5, (2, 3, 4), seed=7, layout="NDHWC")
    b = fastconv.Conv3D(3, 5, (2, 3, 4), seed=7)
    np.testing.assert_array_equal(a.weight, fastconv.Conv3D(3, 5, (2, 3, 4), seed=7,
                                                            layout="NDHWC").weight)
    assert a.weight.shape == (2, 3, 4, 3, 5) and b.weight.shape == (5, 3, 2, 3, 4)
    assert a.weight.dtype == np.float32
    bound = 1 / np.sqrt(3 * 24)
    assert np.abs(b.weight).max() <= bound and np.abs(b.bias).max() <= bound
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    y = b(x)
    b.backward(y)
    clone = pickle.loads(pickle.dumps(b))
    np.testing.assert_array_equal(clone(x), y)
    np.testing.assert_array_equal(clone.weight_grad, b.weight_grad)
    assert "Conv3D(3, 5, kernel_size=(2, 3, 4)" in repr(clone)
    assert fastconv.Conv3D(3, 5, 1, bias=False).bias is None


def _traced_peak(fn):
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, result


@pytest.mark.parametrize("channels", [16, 32])   # 32: the Winograd planes ("auto")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_workspace_is_reused(rng, layout, channels):
    layer = fastconv.Conv3D(channels, channels, 3, padding=1, layout=layout, seed=0)
    shape = (2, channels, 12, 12, 12)
    x = rng.standard_normal(shape if layout == "NCDHW" else (2, 12, 12, 12, channels))
    x = x.astype(np.float32)
    out = np.empty(x.shape, np.float32)
    assert layer(x, out=out) is out
    held = layer.workspace_bytes
    assert held > 64 * 1024
    expected = out.copy()
    peak, result = _traced_peak(lambda: layer(x, out=out))
    assert result is out
    assert peak < 64 * 1024, f"second same-shape forward with out= allocated {peak} bytes"
    np.testing.assert_array_equal(out, expected)
    peak, y = _traced_peak(lambda: layer(x))
    assert peak < y.nbytes + 64 * 1024
    layer.backward(y)
    held = layer.workspace_bytes
    layer.backward(y)
    assert layer.workspace_bytes == held


def test_layer_workspace_cap(rng):
    x = rng.standard_normal((2, 8, 6, 6, 6)).astype(np.float32)
    free = fastconv.Conv3D(8, 8, 3, padding=1, seed=1)
    capped = fastconv.Conv3D(8, 8, 3, padding=1, seed=1, max_workspace_bytes=200_000)
    np.testing.assert_allclose(capped(x), free(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(capped.backward(x), free.backward(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(capped.weight_grad, free.weight_grad, rtol=1e-4, atol=1e-4)
    tiny = fastconv.Conv3D(8, 8, 3, padding=1, seed=1, max_workspace_bytes=100)
    with pytest.raises(ValueError, match=r"^Conv3D: max_workspace_bytes=100 is below one "
                                         r"output position's columns"):
        tiny(x)


def test_layer_threads_keep_their_own_forward(rng):
    layer = fastconv.Conv3D(2, 3, 3, padding=1, seed=0, dtype=np.float64)
    inputs = [rng.standard_normal((1, 2, n, 4, 4)) for n in (3, 5)]
    results = {}

    def run(i):
        y = layer(inputs[i])
        results[i] = layer.backward(np.ones_like(y))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert results[i].shape == inputs[i].shape


# ------------------------------------------------------------------ errors
X = np.zeros((2, 3, 4, 5, 6), np.float32)
W = np.zeros((4, 3, 3, 3, 3), np.float32)
CONV3D_ERRORS = {
    "layout": (dict(layout="NCHW"), ValueError,
               r"^conv3d: layout must be one of 'NCDHW', 'NDHWC' \(case-insensitive\), "
               r"got 'NCHW'"),
    "input-4d-batch": (dict(x=np.zeros((2, 3, 4, 5, 6, 1), np.float32)), ValueError,
                       r"^conv3d: expected input of shape \(N, C, D, H, W\) or \(C, D, H, W\) "
                       r"for layout 'NCDHW', got shape \(2, 3, 4, 5, 6, 1\) \(6-D\)"),
    "input-3d": (dict(x=np.zeros((3, 5, 6), np.float32)), ValueError,
                 r"^conv3d: expected input of shape .*\(3, 5, 6\) \(3-D\)"),
    "weight-2d-kernel": (dict(w=np.zeros((4, 3, 3, 3), np.float32)), ValueError,
                         r"^conv3d: expected a 5-D weight, got shape \(4, 3, 3, 3\)"),
    "channels": (dict(x=np.zeros((2, 5, 4, 5, 6), np.float32)), ValueError,
                 r"^conv3d: expected input with 3 channels \(weight \(4, 3, 3, 3, 3\), "
                 r"groups=1\), got 5 channels in input of shape \(2, 5, 4, 5, 6\)"),
    "channels-last": (dict(x=np.zeros((2, 4, 5, 6, 5), np.float32), layout="ndhwc"),
                      ValueError, r"^conv3d: expected input with 3 channels \(weight "
                                  r"\(4, 3, 3, 3, 3\), groups=1\), got 5 channels"),
    "groups-divide": (dict(w=np.zeros((4, 1, 3, 3, 3), np.float32), groups=3), ValueError,
                      r"^conv3d: groups=3 must divide the weight's 4 output channels"),
    "groups-zero": (dict(groups=0), ValueError, r"^conv3d: groups must be >= 1, got 0"),
    "empty-weight": (dict(w=np.zeros((4, 3, 3, 0, 3), np.float32)), ValueError,
                     r"^conv3d: weight has an empty axis, shape \(4, 3, 3, 0, 3\)"),
    "stride-zero": (dict(stride=0), ValueError, r"^conv3d: stride must be >= 1, got 0"),
    "stride-pair": (dict(stride=(1, 2)), ValueError,
                    r"^conv3d: stride must be an int or a 3-tuple \(d, h, w\), got \(1, 2\)"),
    "stride-float": (dict(stride=1.5), ValueError, r"^conv3d: stride must be an int >= 1"),
    "dilation-zero": (dict(dilation=(1, 0, 1)), ValueError,
                      r"^conv3d: dilation must be >= 1"),
    "padding-negative": (dict(padding=-1), ValueError,
                         r"^conv3d: padding must be an int or a 3-tuple of ints or \(before, "
                         r"after\) pairs, all >= 0 \(one per axis d, h, w\), got -1"),
    "padding-pair": (dict(padding=(1, 1)), ValueError, r"^conv3d: padding must be an int"),
    "padding-triple-of-triples": (dict(padding=((1, 1, 1), 1, 1)), ValueError,
                                  r"^conv3d: padding must be an int"),
    "padding-word": (dict(padding="full"), ValueError,
                     r"^conv3d: padding must be 'valid', 'same' or a number, got 'full'"),
    "window": (dict(x=np.zeros((2, 3, 2, 5, 6), np.float32)), ValueError,
               r"^conv3d: kernel_size=\(3, 3, 3\) with dilation=\(1, 1, 1\) spans 3 along the "
               r"depth, larger than the padded input depth 2 \+ 0 \+ 0 = 2"),
    "window-dilated": (dict(dilation=(1, 1, 4), padding=1), ValueError,
                       r"^conv3d: kernel_size=\(3, 3, 3\) with dilation=\(1, 1, 4\) spans 9 "
                       r"along the width"),
    "huge-stride": (dict(stride=2**63), ValueError,
                    r"^conv3d: stride=9223372036854775808 exceeds the largest supported"),
    "huge-padding": (dict(padding=2**62), ValueError,
                     r"^conv3d: padding=.*larger than the largest supported size"),
    "mode": (dict(padding_mode="mirror"), ValueError,
             r"^conv3d: padding_mode must be one of 'zeros', 'reflect', 'replicate', "
             r"'circular' \(case-insensitive\), got 'mirror'"),
    "reflect-too-large": (dict(padding=(4, 1, 1), padding_mode="reflect"), ValueError,
                          r"^conv3d: padding_mode='reflect' needs padding < the input's depth "
                          r"\(4\), got padding 4 on that axis"),
    "circular-too-large": (dict(padding=(0, 0, 7), padding_mode="Circular"), ValueError,
                           r"^conv3d: padding_mode='circular' needs padding <= the input's "
                           r"width \(6\), got padding 7 on that axis"),
    "dtype": (dict(x=np.zeros((2, 3, 4, 5, 6), np.float16),
                   w=np.zeros((4, 3, 3, 3, 3), np.float16)),
              TypeError, r"^conv3d: input must be float32 or float64, got dtype float16"),
    "mixed": (dict(x=np.zeros((2, 3, 4, 5, 6))), TypeError,
              r"^conv3d: input has dtype float64 but weight has dtype float32"),
    "mixed-bias": (dict(b=np.zeros(4)), TypeError,
                   r"^conv3d: input has dtype float32 but bias has dtype float64"),
    "bias-shape": (dict(b=np.zeros(5, np.float32)), ValueError,
                   r"^conv3d: expected bias of shape \(4,\), got \(5,\)"),
    "out-shape": (dict(out=np.zeros((2, 4, 2, 3, 5), np.float32)), ValueError,
                  r"^conv3d: out must have shape \(2, 4, 2, 3, 4\), got \(2, 4, 2, 3, 5\)"),
    "out-dtype": (dict(out=np.zeros((2, 4, 2, 3, 4))), ValueError,
                  r"^conv3d: out must have dtype float32, got float64"),
    "out-overlap": (dict(x=np.zeros((2, 3, 4, 5, 6), np.float32)), None, None),
    "object": (dict(x=np.zeros((2, 3, 4, 5, 6), object)), TypeError,
               r"^conv3d: input has unsupported dtype object"),
}
del CONV3D_ERRORS["out-overlap"]


@pytest.mark.parametrize("name", list(CONV3D_ERRORS))
def test_conv3d_errors(name):
    kwargs, error, match = CONV3D_ERRORS[name]
    kwargs = dict(kwargs)
    x, w, b = kwargs.pop("x", X), kwargs.pop("w", W), kwargs.pop("b", None)
    out = np.full((2, 4, 2, 3, 4), 7.0, np.float32)
    with pytest.raises(error, match=match):
        fastconv.conv3d(x, w, b, **kwargs)
    if "out" in kwargs or b is not None:
        return
    # conv3d_backward and Conv3D check the same arguments the same way, under their names
    with pytest.raises(error, match=match.replace("conv3d", "conv3d_backward", 1)):
        fastconv.conv3d_backward(out, x, w, **kwargs)
    assert np.all(out == 7.0)


BACKWARD_ERRORS = {
    "grad-shape": (np.zeros((2, 4, 2, 3, 5), np.float32), ValueError,
                   r"^conv3d_backward: expected grad_output of shape \(2, 4, 2, 3, 4\) \(the "
                   r"conv3d output for input \(2, 3, 4, 5, 6\) and weight \(4, 3, 3, 3, 3\)\), "
                   r"got \(2, 4, 2, 3, 5\)"),
    "grad-dtype": (np.zeros((2, 4, 2, 3, 4)), TypeError,
                   r"^conv3d_backward: input has dtype float32 but grad_output has dtype "
                   r"float64"),
    "grad-int": (np.zeros((2, 4, 2, 3, 4), np.int32), TypeError,
                 r"^conv3d_backward: grad_output must be float32 or float64, got dtype int32"),
}


@pytest.mark.parametrize("name", list(BACKWARD_ERRORS))
def test_conv3d_backward_errors(name):
    grad, error, match = BACKWARD_ERRORS[name]
    with pytest.raises(error, match=match):
        fastconv.conv3d_backward(grad, X, W)


TRANSPOSE_ERRORS = {
    "padding-mode": (dict(padding_mode="reflect"), ValueError,
                     r"^conv_transpose3d: padding_mode must be 'zeros' for a transposed "
                     r"convolution \(as PyTorch's ConvTranspose\), got 'reflect'"),
    "padding-mode-bad": (dict(padding_mode=3), ValueError,
                         r"^conv_transpose3d: padding_mode must be one of"),
    "output-padding": (dict(stride=2, output_padding=(0, 2, 0)), ValueError,
                       r"^conv_transpose3d: output_padding=\(0, 2, 0\) must be smaller than "
                       r"stride \(2, 2, 2\) or dilation \(1, 1, 1\) \(the height axis\)"),
    "channels": (dict(x=np.zeros((2, 5, 2, 2, 2), np.float32)), ValueError,
                 r"^conv_transpose3d: expected input with 3 channels \(weight \(3, 4, 3, 3, "
                 r"3\)\), got 5 channels in input of shape \(2, 5, 2, 2, 2\)"),
    "groups": (dict(groups=2), ValueError,
               r"^conv_transpose3d: groups=2 must divide the 3 input channels"),
    "whole-output": (dict(padding=(0, 3, 0)), ValueError,
                     r"^conv_transpose3d: padding=\(\(0, 0\), \(3, 3\), \(0, 0\)\) removes the "
                     r"whole output height \(4 before padding\)"),
    "layout": (dict(layout="NDHW"), ValueError,
               r"^conv_transpose3d: layout must be one of 'NCDHW', 'NDHWC'"),
    "weight-4d": (dict(w=np.zeros((3, 4, 3, 3), np.float32)), ValueError,
                  r"^conv_transpose3d: expected a 5-D weight"),
    "padding-same": (dict(padding="same"), ValueError,
                     r"^conv_transpose3d: padding must be an int or a 3-tuple"),
}


@pytest.mark.parametrize("name", list(TRANSPOSE_ERRORS))
def test_conv_transpose3d_errors(name):
    kwargs, error, match = TRANSPOSE_ERRORS[name]
    kwargs = dict(kwargs)
    x = kwargs.pop("x", np.zeros((2, 3, 2, 2, 2), np.float32))
    w = kwargs.pop("w", np.zeros((3, 4, 3, 3, 3), np.float32))
    with pytest.raises(error, match=match):
        fastconv.conv_transpose3d(x, w, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kernel_size=(3, 3)), ValueError,
     r"^Conv3D: kernel_size must be an int or a 3-tuple \(d, h, w\), got \(3, 3\)"),
    (dict(groups=2), ValueError,
     r"^Conv3D: groups=2 must divide in_channels \(3\) and out_channels \(4\)"),
    (dict(padding_mode="wrap"), ValueError, r"^Conv3D: padding_mode must be one of"),
    (dict(layout="NHWC"), ValueError, r"^Conv3D: layout must be one of 'NCDHW', 'NDHWC'"),
    (dict(dtype=np.float16), TypeError, r"^Conv3D: dtype must be float32 or float64"),
    (dict(max_workspace_bytes=0), ValueError, r"^Conv3D: max_workspace_bytes must be >= 1"),
    (dict(padding="full"), ValueError, r"^Conv3D: padding must be 'valid', 'same'"),
])
def test_layer_construction_errors(kwargs, error, match):
    args = dict(in_channels=3, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fastconv.Conv3D(**args)


def test_layer_call_errors():
    layer = fastconv.Conv3D(3, 4, 3, padding=1, padding_mode="reflect")
    with pytest.raises(RuntimeError, match=r"^Conv3D.backward: call forward before backward"):
        layer.backward(np.zeros((2, 4, 4, 5, 6), np.float32))
    with pytest.raises(ValueError, match=r"^Conv3D.forward: expected input with 3 channels"):
        layer(np.zeros((2, 5, 4, 5, 6), np.float32))
    with pytest.raises(TypeError, match=r"^Conv3D.forward: input has dtype float64 but "
                                        r"weight has dtype float32"):
        layer(np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(ValueError, match=r"^Conv3D.forward: padding_mode='reflect' needs "
                                         r"padding < the input's depth \(1\)"):
        layer(np.zeros((2, 3, 1, 5, 6), np.float32))
    with pytest.raises(ValueError, match=r"^Conv3D.forward: expected input of shape"):
        layer(np.zeros((3, 5, 6), np.float32))
    y = layer(np.zeros((2, 3, 4, 5, 6), np.float32))
    with pytest.raises(ValueError, match=r"^Conv3D.backward: expected grad_output of shape "
                                         r"\(2, 4, 4, 5, 6\), got \(2, 4, 4, 5, 5\)"):
        layer.backward(y[..., :5])


IM2COL_ERRORS = {
    "ndim": (lambda: fastconv.im2col(np.zeros((2, 3, 4)), (2, 2, 2)), ValueError,
             r"^im2col: kernel_size=\(2, 2, 2\) \(three values\) means volumes: expected x "
             r"of shape \(N, C, D, H, W\)"),
    "layout": (lambda: fastconv.im2col(np.zeros((1, 1, 2, 2, 2)), (2, 2, 2), layout="NCL"),
               ValueError, r"^im2col: layout must be one of 'NCDHW', 'NDHWC' for volumes"),
    "reflect": (lambda: fastconv.im2col(np.zeros((1, 1, 2, 2, 2)), (2, 2, 2), padding=2,
                                        padding_mode="reflect"), ValueError,
                r"^im2col: padding_mode='reflect' needs padding < the input's depth \(2\)"),
    "mode-bad": (lambda: fastconv.im2col(np.zeros((1, 1, 2, 2, 2)), (2, 2, 2),
                                         padding_mode="edge"), ValueError,
                 r"^im2col: padding_mode must be one of"),
    "window": (lambda: fastconv.im2col(np.zeros((1, 1, 2, 2, 2)), (3, 2, 2)), ValueError,
               r"^im2col: kernel_size=\(3, 2, 2\) with dilation=\(1, 1, 1\) spans 3 along "
               r"the depth"),
    "float16": (lambda: fastconv.im2col(np.zeros((1, 1, 2, 2, 2), np.float16), (1, 1, 1)),
                TypeError, r"^im2col: x must be float32, float64, integer or bool"),
    "col2im-rows": (lambda: fastconv.col2im(np.zeros((1, 7, 8)), 3, (2, 2, 2)), ValueError,
                    r"^col2im: cols has 7 rows \(axis -2\), which is not a positive multiple "
                    r"of kd·kh·kw = 8"),
    "col2im-positions": (lambda: fastconv.col2im(np.zeros((1, 8, 7)), 3, (2, 2, 2)),
                         ValueError, r"^col2im: cols has 7 sliding-window positions, but "
                                     r"output_size=\(3, 3, 3\) with this geometry gives "
                                     r"2×2×2 = 8"),
    "col2im-ndim": (lambda: fastconv.col2im(np.zeros(8), 3, (2, 2, 2)), ValueError,
                    r"^col2im: expected cols of shape \(N, C·kd·kh·kw, OD·OH·OW\)"),
    "col2im-bool": (lambda: fastconv.col2im(np.zeros((1, 8, 8), bool), 3, (2, 2, 2)),
                    TypeError, r"^col2im: cols must be float32, float64, integer, got dtype bool"),
    "col2im-circular": (lambda: fastconv.col2im(np.zeros((1, 8, 8)), 3, (2, 2, 2),
                                                padding=(0, 0, 4), padding_mode="circular"),
                        ValueError, r"^col2im: padding_mode='circular' needs padding <= the "
                                    r"input's width \(3\)"),
    "backward-shape": (lambda: fastconv.im2col_backward(np.zeros((1, 8, 7)), (1, 1, 3, 3, 3),
                                                        (2, 2, 2)), ValueError,
                       r"^im2col_backward: grad_cols must have shape \(1, 8, 8\) for "
                       r"input_shape \(1, 1, 3, 3, 3\), got \(1, 8, 7\)"),
    "backward-input-shape": (lambda: fastconv.im2col_backward(np.zeros((1, 8, 8)), (3, 3),
                                                              (2, 2, 2)), ValueError,
                             r"^im2col_backward: input_shape must have 4 or 5 dimensions"),
}


@pytest.mark.parametrize("name", list(IM2COL_ERRORS))
def test_im2col3d_errors(name):
    call, error, match = IM2COL_ERRORS[name]
    with pytest.raises(error, match=match):
        call()


def test_empty_volume_with_padding_and_batch_zero(rng):
    """D = 0 with padding: every window reads zeros (the bias); batch 0: empty results."""
    w, b = ints(rng, (2, 3, 1, 3, 3)), ints(rng, 2)
    y = fastconv.conv3d(np.zeros((1, 3, 0, 4, 4)), w, b, padding=(1, 1, 1))
    assert y.shape == (1, 2, 2, 4, 4)
    np.testing.assert_array_equal(y, np.broadcast_to(b.reshape(1, 2, 1, 1, 1), y.shape))
    g = fastconv.conv3d_backward(np.ones_like(y), np.zeros((1, 3, 0, 4, 4)), w,
                                 padding=(1, 1, 1))
    assert g.grad_input.shape == (1, 3, 0, 4, 4) and not g.grad_weight.any()
    y0 = fastconv.conv3d(np.zeros((0, 3, 4, 4, 4)), w, b, padding=1, layout="NCDHW")
    assert y0.shape == (0, 2, 6, 4, 4)
    t0 = fastconv.conv_transpose3d(np.zeros((0, 2, 3, 3, 3)), w, None)
    assert t0.shape == (0, 3, 3, 5, 5)


# ------------------------------------------------------------------ the asv benchmark
def test_asv_conv3d_benchmarks(monkeypatch, torch):
    """benchmarks/bench_conv3d.py runs every class on a small stand-in for its layer."""
    from conftest import asv_benchmark

    module = asv_benchmark(monkeypatch, "bench_conv3d")
    from fastconv.bench import suite

    small = suite.Volume("conv3d.32to32.k3", 4, (5, 6, 7), 3, 3, 1, 1)
    monkeypatch.setattr(module, "VOLUMES", (small,))
    monkeypatch.setattr(module, "BATCH", 2)
    assert module.NAMES == ["conv3d.32to32.k3"]
    for layout in module.LAYOUTS:
        for cls, timer, tracker in ((module.Conv3DForward, "time_forward",
                                     "track_forward_ratio"),
                                    (module.Conv3DBackward, "time_backward",
                                     "track_backward_ratio"),
                                    (module.Conv3DLayer, "time_layer_forward", None)):
            benchmark = cls()
            benchmark.setup(small.name, layout)
            try:
                getattr(benchmark, timer)(small.name, layout)
                if tracker:
                    assert getattr(benchmark, tracker)(small.name, layout) > 0
            finally:
                benchmark.teardown()


# ------------------------------------------------------------------ Winograd (algorithm=)
def _wide(rng, layout, dtype=np.float32, channels=32, sizes=(5, 9, 10)):
    x = rng.standard_normal((2, channels) + sizes).astype(dtype)
    w = (rng.standard_normal((channels, channels, 3, 3, 3)) / 10).astype(dtype)
    return in_layout(x, w, layout)


@pytest.mark.parametrize("padding, mode", [(1, "zeros"), ((2, 1, 1), "reflect"),
                                           (((0, 2), 1, 1), "circular"),
                                           ((1, (1, 0), 1), "zeros")])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_winograd_planes_match_gemm_and_torch(torch, rng, layout, padding, mode):
    """algorithm="winograd" (each depth tap as the 2-D engine's Winograd convolution of the
    depth planes) equals algorithm="gemm" and PyTorch to Winograd's rounding; for
    "reflect" / "circular" (height and width padded) only the input gradient can run
    Winograd (its flipped convolution pads with zeros)."""
    xs, ws = _wide(rng, layout)
    b = rng.standard_normal(32).astype(np.float32)
    kw = dict(padding=padding, layout=layout, padding_mode=mode)
    hw_ok = mode == "zeros"
    if hw_ok:
        y = fastconv.conv3d(xs, ws, b, algorithm="winograd", **kw)
    else:
        with pytest.raises(ValueError, match=r"^conv3d: algorithm='winograd' needs "
                                             r"padding_mode='zeros' along height and width"):
            fastconv.conv3d(xs, ws, b, algorithm="winograd", **kw)
        y = fastconv.conv3d(xs, ws, b, **kw)
    want = fastconv.conv3d(xs, ws, b, algorithm="gemm", **kw)
    scale = np.abs(want).max()
    np.testing.assert_allclose(y, want, atol=1e-5 * scale)
    g = rng.standard_normal(y.shape).astype(np.float32)
    got = fastconv.conv3d_backward(g, xs, ws, **kw)
    ref = fastconv.conv3d_backward(g, xs, ws, algorithm="gemm", **kw)
    for a, c in zip(got, ref):
        np.testing.assert_allclose(a, c, atol=1e-5 * np.abs(c).max())
    x = xs if layout == "NCDHW" else to_cf(xs)
    w = ws if layout == "NCDHW" else ws.transpose(4, 3, 0, 1, 2)
    xt = torch.tensor(x, requires_grad=True)
    yt = _torch_conv(torch, xt, torch.tensor(w), torch.tensor(b),
                     dict(padding=padding, stride=1, dilation=1, groups=1,
                          padding_mode=mode))
    yt.backward(torch.tensor(from_layout(g, layout)))
    np.testing.assert_allclose(from_layout(y, layout), yt.detach().numpy(),
                               atol=1e-5 * scale)
    np.testing.assert_allclose(from_layout(got.grad_input, layout), xt.grad.numpy(),
                               atol=1e-5 * np.abs(xt.grad.numpy()).max())


def test_winograd_auto_rule_and_threads(rng):
    """"auto" takes Winograd for float32 where conv2d's rule takes it for the planes, never
    for float64; Winograd results are bit-identical on 1 and 2 threads."""
    conv3d_module = importlib.import_module("fastconv.conv3d")
    xs, ws = _wide(rng, "NDHWC")
    geom = fastconv._three_d.conv_geometry("t", xs, ws, 1, 1, 1, 1, "NDHWC", xs.shape)
    assert conv3d_module.planes_algorithm(geom, 4) == "winograd"
    assert conv3d_module.planes_algorithm(geom, 8) == "gemm"
    assert conv3d_module.planes_algorithm(geom, 4, "gemm") == "gemm"
    small = fastconv._three_d.conv_geometry("t", xs[..., :4], ws[..., :4, :], 1, 1, 1, 1,
                                            "NDHWC", xs.shape)
    assert conv3d_module.planes_algorithm(small, 4) == "gemm"
    _needs_two_threads()
    results = []
    for n in (1, 2):
        with fastconv.threads(n):
            y = fastconv.conv3d(xs, ws, padding=1, layout="NDHWC")
            g = fastconv.conv3d_backward(y, xs, ws, padding=1, layout="NDHWC")
            t = fastconv.conv_transpose3d(y, ws, padding=1, layout="NDHWC")
            layer = fastconv.Conv3D(32, 32, 3, padding=1, layout="NDHWC", seed=0)
            ly = layer(xs)
            results.append((y, *g, t, ly, layer.backward(ly)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_winograd_errors_and_layer(rng):
    xs, ws = _wide(rng, "NCDHW", sizes=(4, 6, 6))
    with pytest.raises(ValueError, match=r"^conv3d: algorithm must be one of 'auto', "
                                         r"'gemm', 'winograd'"):
        fastconv.conv3d(xs, ws, algorithm="fft")
    with pytest.raises(ValueError, match=r"^conv3d: algorithm='winograd' .*stride"):
        fastconv.conv3d(xs, ws, stride=(1, 2, 2), algorithm="winograd")
    with pytest.raises(ValueError, match=r"^conv3d_backward: algorithm='winograd'"):
        fastconv.conv3d_backward(xs[:, :, :2, :2, :2], xs, ws, stride=(1, 2, 2),
                                 algorithm="winograd")
    with pytest.raises(ValueError, match=r"^conv_transpose3d: algorithm='winograd' needs "
                                         r"stride 1"):
        fastconv.conv_transpose3d(xs, ws, stride=2, algorithm="winograd")
    layer = fastconv.Conv3D(32, 32, 3, padding=1, algorithm="winograd", seed=0,
                            max_workspace_bytes=1 << 30)
    with pytest.raises(ValueError, match=r"^Conv3D.forward: algorithm='winograd' keeps "
                                         r"transformed weights"):
        layer(xs)
    layer = fastconv.Conv3D(32, 32, 3, padding=1, algorithm="winograd", seed=0)
    y = layer(xs)
    np.testing.assert_allclose(y, fastconv.conv3d(xs, layer.weight, layer.bias, padding=1,
                                                  algorithm="gemm"),
                               atol=1e-5 * np.abs(y).max())
    assert "algorithm='winograd'" in repr(layer)


# ------------------------------------------------------------------ the SIMD builds
def _vol2col_builds():
    from fastconv import cpu
    builds = [("baseline", importlib.import_module("fastconv._kernels._vol2col"))]
    for isa in cpu.supported_isas():
        try:
            builds.append((isa, importlib.import_module(f"fastconv._kernels._vol2col_{isa}")))
        except ImportError:
            pass
    return builds


VOL2COL_BUILDS = _vol2col_builds()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("isa,module", VOL2COL_BUILDS, ids=[i for i, _ in VOL2COL_BUILDS])
def test_every_vol2col_build_agrees(monkeypatch, rng, isa, module, layout):
    """Every build (baseline, AVX2, AVX-512 with fastconv's own GEMM) gives the oracle's
    values: exact on integers in float32, whatever GEMM ran."""
    conv3d_module = importlib.import_module("fastconv.conv3d")
    monkeypatch.setattr(conv3d_module, "_vol2col", module)
    x, w, b, kw = _case(rng, "channels-last-copy", np.float32)
    xs, ws = in_layout(x, w, layout)
    kw = dict(kw, padding_mode="replicate")
    y = fastconv.conv3d(xs, ws, b, layout=layout, algorithm="gemm", **kw)
    want = reference.conv3d_naive(to_cl(x), oidhw_to_dhwio(w), **kw) + b
    np.testing.assert_array_equal(from_layout(y, layout), to_cf(want))
    g = ints(rng, y.shape, np.float32)
    got = fastconv.conv3d_backward(g, xs, ws, layout=layout, algorithm="gemm", **kw)
    gx, gw, _ = reference.conv3d_backward(g if layout == "NDHWC" else to_cl(g), to_cl(x),
                                          oidhw_to_dhwio(w), **kw)
    np.testing.assert_array_equal(from_layout(got.grad_input, layout), to_cf(gx))
    np.testing.assert_array_equal(
        got.grad_weight, gw if layout == "NDHWC" else gw.transpose(4, 3, 0, 1, 2))
