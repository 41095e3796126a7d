"""1-D convolution (docs/spec.md §6): conv1d, conv1d_backward, conv_transpose1d, Conv1D and
im2col / col2im on 1-D signals.

Oracles: fastconv.reference's 1-D loops (written from the definitions, not via the 2-D
code) in exact integers, PyTorch's F.conv1d / F.conv_transpose1d / F.unfold with autograd
for every gradient (skipped without torch), and adjoint identities in exact integers.
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

LAYOUTS = ["NCL", "NLC"]


def to_nlc(x):
    """(N, C, L) → (N, L, C) or (C, L) → (L, C), C-contiguous."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


def to_ncl(x):
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


def oil_to_lio(w):
    """(C_out, C_in/g, k) → (k, C_in/g, C_out); also (C_in, C_out/g, k) → (k, C_out/g, C_in)."""
    return np.ascontiguousarray(w.transpose(2, 1, 0))


def ints(rng, shape, dtype=np.float64, span=3):
    return rng.integers(-span, span + 1, shape).astype(dtype)


def in_layout(x, w, layout):
    """NCL (x, OIL w) as given; NLC: (N, L, C) and LIO."""
    return (x, w) if layout == "NCL" else (to_nlc(x), oil_to_lio(w))


def from_layout(y, layout):
    """A result in `layout` as NCL."""
    return y if layout == "NCL" else to_ncl(y)


def explicit_padding(padding, length, k, s, d):
    if padding == "same":
        return reference.same_padding(length, k, s, d)
    if padding == "valid":
        return (0, 0)
    return (padding, padding) if np.isscalar(padding) else tuple(padding)


# (N, C_in, L), C_out, k, stride, padding, dilation, groups
CASES = {
    "plain": ((2, 3, 11), 4, 3, 1, 0, 1, 1),
    "padded": ((2, 3, 11), 4, 5, 1, 2, 1, 1),
    "asymmetric": ((1, 4, 9), 6, 3, 2, (2, 0), 1, 2),
    "same-odd": ((2, 2, 10), 3, 4, 1, "same", 1, 1),
    "same-strided": ((2, 3, 13), 5, 3, 4, "same", 1, 1),
    "same-strided-dilated": ((1, 2, 8), 2, 3, 3, "same", 2, 2),
    "stride-beyond-kernel": ((2, 3, 20), 4, 2, 5, 1, 1, 1),
    "dilated": ((2, 4, 17), 4, 3, 1, 3, 4, 2),
    "depthwise": ((2, 6, 12), 6, 5, 2, 2, 1, 6),
    "depthwise-multiplier": ((1, 3, 9), 6, 3, 1, 1, 1, 3),
    "length-1": ((2, 3, 1), 4, 1, 1, 0, 1, 1),
    "length-1-padded": ((1, 2, 1), 3, 3, 2, 1, 1, 1),
    "kernel-fills-padded": ((2, 2, 5), 3, 7, 1, 1, 1, 1),
    "pointwise": ((2, 5, 7), 3, 1, 1, 0, 1, 1),
    "pointwise-strided": ((2, 5, 7), 3, 1, 3, 0, 1, 1),
    "batch-1": ((1, 3, 8), 2, 3, 1, "valid", 1, 1),
    # one channel, a long strided kernel: NCL runs as the NLC view (conv1d.py)
    "front-end": ((2, 1, 300), 4, 128, 3, 2, 1, 1),
    "front-end-same": ((1, 1, 257), 3, 130, 5, "same", 1, 1),
}


def case_data(rng, case, dtype=np.float64):
    shape, cout, k, _, _, _, groups = case
    x = ints(rng, shape, dtype)
    w = ints(rng, (cout, shape[1] // groups, k), dtype)
    b = ints(rng, cout, dtype)
    return x, w, b


def case_kwargs(case):
    _, _, _, stride, padding, dilation, groups = case
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


# ------------------------------------------------------------------ against the oracles
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(CASES))
def test_conv1d_and_backward_equal_reference(rng, name, layout):
    """Exact integers, so every summation order gives the same bits."""
    case = CASES[name]
    x, w, b = case_data(rng, case)
    kwargs = case_kwargs(case)
    xs, ws = in_layout(x, w, layout)
    z, lio = to_nlc(x), oil_to_lio(w)
    want = reference.conv1d_naive(z, lio, kwargs["stride"], kwargs["padding"],
                                  kwargs["dilation"], kwargs["groups"]) + b
    y = fastconv.conv1d(xs, ws, b, layout=layout, **kwargs)
    np.testing.assert_array_equal(from_layout(y, layout), to_ncl(want))
    grad = ints(rng, y.shape)
    got = fastconv.conv1d_backward(grad, xs, ws, layout=layout, **kwargs)
    g = grad if layout == "NLC" else to_nlc(grad)
    gz, gw, gb = reference.conv1d_backward(g, z, lio, kwargs["stride"], kwargs["padding"],
                                           kwargs["dilation"], kwargs["groups"])
    np.testing.assert_array_equal(from_layout(got.grad_input, layout), to_ncl(gz))
    np.testing.assert_array_equal(got.grad_weight, gw if layout == "NLC" else oil_to_lio(gw))
    np.testing.assert_array_equal(got.grad_bias, gb)
    # One signal (no batch axis) gives the first image's results.
    one = fastconv.conv1d(xs[0], ws, b, layout=layout, **kwargs)
    np.testing.assert_array_equal(one, y[0])
    single = fastconv.conv1d_backward(grad[0], xs[0], ws, layout=layout, **kwargs)
    np.testing.assert_array_equal(
        single.grad_input, fastconv.conv1d_backward(grad[:1], xs[:1], ws, layout=layout,
                                                    **kwargs).grad_input[0])


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(0, 2), groups=st.integers(1, 3),
       cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), length=st.integers(0, 14),
       k=st.integers(1, 5), stride=st.integers(1, 4), dilation=st.integers(1, 3),
       layout=st.sampled_from(LAYOUTS), dtype=st.sampled_from([np.float32, np.float64]))
def test_conv1d_hypothesis_against_reference(data, n, groups, cin_g, cout_g, length, k,
                                             stride, dilation, layout, dtype):
    padding = data.draw(st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3),
                                                               st.integers(0, 3)),
                                  st.sampled_from(["same", "valid"])))
    pads = explicit_padding(padding, length, k, stride, dilation)
    if length + sum(pads) < dilation * (k - 1) + 1:
        with pytest.raises(ValueError, match=r"^conv1d: kernel_size=\d+ with dilation"):
            fastconv.conv1d(np.zeros((n, cin_g * groups, length), dtype),
                            np.zeros((cout_g * groups, cin_g, k), dtype), padding=padding,
                            stride=stride, dilation=dilation, groups=groups)
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = ints(rng, (n, cin_g * groups, length), dtype)
    w = ints(rng, (cout_g * groups, cin_g, k), dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv1d(xs, ws, layout=layout, **kwargs)
    want = reference.conv1d_naive(to_nlc(x), oil_to_lio(w), **kwargs)
    np.testing.assert_array_equal(from_layout(y, layout), to_ncl(want))
    assert y.dtype == dtype
    assert from_layout(y, layout).shape[2] == (-(-length // stride) if padding == "same"
                                               else want.shape[1])
    grad = ints(rng, y.shape, dtype)
    got = fastconv.conv1d_backward(grad, xs, ws, layout=layout, **kwargs)
    gz, gw, _ = reference.conv1d_backward(to_nlc(from_layout(grad, layout)), to_nlc(x),
                                          oil_to_lio(w), **kwargs)
    np.testing.assert_array_equal(from_layout(got.grad_input, layout), to_ncl(gz))
    np.testing.assert_array_equal(got.grad_weight, gw if layout == "NLC" else oil_to_lio(gw))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("length, k, stride, padding, out_pad, dilation, groups", [
    (5, 3, 1, 0, 0, 1, 1),
    (7, 4, 2, 1, 1, 1, 2),
    (6, 3, 3, (2, 0), 2, 1, 1),
    (4, 3, 1, 1, 1, 2, 3),
    (1, 1, 1, 0, 0, 1, 1),
    (3, 2, 5, 0, 4, 1, 1),       # stride beyond the kernel: gaps of zeros
])
def test_conv_transpose1d_equals_reference(rng, layout, length, k, stride, padding, out_pad,
                                           dilation, groups):
    cin, cout_g = 3 * groups, 2
    x = ints(rng, (2, cin, length))
    w = ints(rng, (cin, cout_g, k))
    b = ints(rng, cout_g * groups)
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv_transpose1d(xs, ws, b, stride, padding, out_pad, groups, dilation,
                                  layout=layout)
    want = reference.conv_transpose1d(to_nlc(x), oil_to_lio(w), stride, padding, out_pad,
                                      groups, dilation) + b
    np.testing.assert_array_equal(from_layout(y, layout), to_ncl(want))
    np.testing.assert_array_equal(
        fastconv.conv_transpose1d(xs[1], ws, b, stride, padding, out_pad, groups, dilation,
                                  layout=layout), y[1])


# ------------------------------------------------------------------ adjoint identities
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["padded", "asymmetric", "same-strided", "dilated",
                                  "depthwise", "stride-beyond-kernel", "length-1-padded"])
def test_adjoint_identities_exact(rng, name, layout):
    """⟨conv1d(x, w), g⟩ = ⟨x, conv_transpose1d(g, w)⟩ = ⟨w, grad_weight⟩, and
    ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩, in int64-valued float64 (exact)."""
    case = CASES[name]
    x, w, _ = case_data(rng, case)
    kwargs = case_kwargs(case)
    length, k = x.shape[2], w.shape[2]
    pads = explicit_padding(kwargs["padding"], length, k, kwargs["stride"],
                            kwargs["dilation"])
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv1d(xs, ws, layout=layout, **kwargs)
    g = ints(rng, y.shape)
    lhs = np.sum(y * g)
    # conv_transpose1d takes conv1d's weight as (C_in, C_out/g, k): the same array.
    full = (from_layout(y, layout).shape[2] - 1) * kwargs["stride"] + \
        kwargs["dilation"] * (k - 1) + 1 - sum(pads)
    out_pad = length - full
    xt = fastconv.conv_transpose1d(g, ws, None, kwargs["stride"], pads, out_pad,
                                   kwargs["groups"], kwargs["dilation"], layout=layout)
    assert np.sum(xs * xt) == lhs
    grads = fastconv.conv1d_backward(g, xs, ws, layout=layout, **kwargs)
    assert np.sum(ws * grads.grad_weight) == lhs
    np.testing.assert_array_equal(grads.grad_input, xt)
    # im2col / col2im on integers
    xi = rng.integers(-50, 50, x.shape)
    xi = xi if layout == "NCL" else to_nlc(xi)
    geo = dict(stride=kwargs["stride"], padding=pads, dilation=kwargs["dilation"],
               layout=layout)
    cols = fastconv.im2col(xi, (k,), **geo)
    c = rng.integers(-50, 50, cols.shape)
    assert int(np.sum(cols * c)) == int(np.sum(xi * fastconv.col2im(c, length, (k,), **geo)))
    np.testing.assert_array_equal(fastconv.im2col_backward(c, xi.shape, (k,), **geo),
                                  fastconv.col2im(c, length, (k,), **geo))
    np.testing.assert_array_equal(fastconv.col2im_backward(xi, (k,), **geo), cols)


# ------------------------------------------------------------------ im2col / col2im
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, bool])
@pytest.mark.parametrize("length, k, stride, padding, dilation", [
    (9, 3, 1, 0, 1), (9, 3, 2, (1, 2), 1), (10, 2, 4, 0, 3), (1, 1, 1, 0, 1),
    (4, 5, 1, (3, 0), 1), (0, 2, 1, 1, 1)])
def test_im2col1d_equals_reference(rng, layout, dtype, length, k, stride, padding, dilation):
    x = rng.integers(0, 2 if dtype is bool else 100, (2, 3, length)).astype(dtype)
    xs = x if layout == "NCL" else to_nlc(x)
    cols = fastconv.im2col(xs, (k,), stride=stride, padding=padding, dilation=dilation,
                           layout=layout)
    want = reference.im2col1d(xs, k, stride, padding, dilation, layout)
    assert cols.dtype == x.dtype
    np.testing.assert_array_equal(cols, want)
    np.testing.assert_array_equal(fastconv.im2col(xs[0], [k], stride=stride, padding=padding,
                                                  dilation=dilation, layout=layout), want[0])
    if dtype is not bool:
        back = fastconv.col2im(cols, (length,), (k,), stride=stride, padding=padding,
                               dilation=dilation, layout=layout)
        np.testing.assert_array_equal(back, reference.col2im1d(cols, length, k, stride,
                                                               padding, dilation, layout))


def test_im2col1d_channels_last_order():
    """(N, L_out, k·C): element [n, t, i·C + c] (docs/spec.md §6), spelt out."""
    x = np.arange(2 * 7 * 3).reshape(2, 7, 3)
    cols = fastconv.im2col(x, (2,), stride=2, dilation=2, layout="NLC")
    assert cols.shape == (2, 3, 6)
    for n in range(2):
        for t in range(3):
            for i in range(2):
                for c in range(3):
                    assert cols[n, t, i * 3 + c] == x[n, t * 2 + i * 2, c]
    # 'NCHW' / 'NHWC' (im2col's default) read as channels-first / channels-last
    np.testing.assert_array_equal(fastconv.im2col(x, (2,), stride=2, dilation=2,
                                                  layout="NHWC"), cols)
    first = fastconv.im2col(to_ncl(x), (2,), stride=2, dilation=2)
    for c in range(3):
        for i in range(2):
            np.testing.assert_array_equal(first[:, c * 2 + i, :], cols[:, :, i * 3 + c])


def test_im2col1d_matches_torch_unfold(torch, rng):
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 15))
    for k, s, p, d in ((3, 1, 1, 1), (4, 3, 2, 2), (1, 2, 0, 1)):
        want = F.unfold(torch.from_numpy(x)[:, :, None, :], (1, k), dilation=(1, d),
                        padding=(0, p), stride=(1, s)).numpy()
        np.testing.assert_array_equal(fastconv.im2col(x, (k,), stride=s, padding=p,
                                                      dilation=d), want)
        folded = F.fold(torch.from_numpy(want), (1, 15), (1, k), dilation=(1, d),
                        padding=(0, p), stride=(1, s)).numpy()[:, :, 0, :]
        np.testing.assert_allclose(fastconv.col2im(want, 15, (k,), stride=s, padding=p,
                                                   dilation=d), folded, rtol=1e-12)


# ------------------------------------------------------------------ against torch
TORCH_CASES = ["padded", "asymmetric", "same-strided", "same-strided-dilated",
               "stride-beyond-kernel", "dilated", "depthwise", "length-1-padded",
               "kernel-fills-padded", "front-end"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", TORCH_CASES)
def test_conv1d_matches_torch_autograd(torch, rng, name, layout, dtype):
    """F.pad (for asymmetric and strided "same" padding) + F.conv1d; autograd's grads."""
    F = torch.nn.functional
    case = CASES[name]
    kwargs = case_kwargs(case)
    x = rng.standard_normal(case[0]).astype(dtype)
    w = rng.standard_normal((case[1], case[0][1] // case[6], case[2])).astype(dtype)
    b = rng.standard_normal(case[1]).astype(dtype)
    pads = explicit_padding(kwargs["padding"], x.shape[2], w.shape[2], kwargs["stride"],
                            kwargs["dilation"])
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    yt = F.conv1d(F.pad(xt, pads), wt, bt, stride=kwargs["stride"],
                  dilation=kwargs["dilation"], groups=kwargs["groups"])
    grad = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.from_numpy(grad))
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv1d(xs, ws, b, layout=layout, **kwargs)
    got = fastconv.conv1d_backward(grad if layout == "NCL" else to_nlc(grad), xs, ws,
                                   layout=layout, **kwargs)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(from_layout(y, layout), yt.detach().numpy(), **tol)
    np.testing.assert_allclose(from_layout(got.grad_input, layout), xt.grad.numpy(), **tol)
    gw = got.grad_weight if layout == "NCL" else oil_to_lio(got.grad_weight)
    np.testing.assert_allclose(gw, wt.grad.numpy(), **tol)
    np.testing.assert_allclose(got.grad_bias, bt.grad.numpy(), **tol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("length, k, stride, padding, out_pad, dilation, groups", [
    (7, 4, 2, 1, 1, 1, 2), (6, 3, 3, 2, 2, 1, 1), (4, 3, 1, 1, 1, 2, 3), (1, 1, 1, 0, 0, 1, 1),
    (9, 5, 1, 4, 0, 1, 1)])
def test_conv_transpose1d_matches_torch_autograd(torch, rng, layout, length, k, stride,
                                                 padding, out_pad, dilation, groups):
    """F.conv_transpose1d's result; its input gradient is conv1d of the output gradient
    with the same weight, its weight gradient conv1d_backward's with the roles swapped."""
    F = torch.nn.functional
    cin, cout_g = 2 * groups, 3
    x = rng.standard_normal((2, cin, length))
    w = rng.standard_normal((cin, cout_g, k))
    b = rng.standard_normal(cout_g * groups)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    yt = F.conv_transpose1d(xt, wt, torch.from_numpy(b), stride, padding, out_pad, groups,
                            dilation)
    grad = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(grad))
    xs, ws = in_layout(x, w, layout)
    y = fastconv.conv_transpose1d(xs, ws, b, stride, padding, out_pad, groups, dilation,
                                  layout=layout)
    np.testing.assert_allclose(from_layout(y, layout), yt.detach().numpy(), rtol=1e-10,
                               atol=1e-10)
    gs = grad if layout == "NCL" else to_nlc(grad)
    gx = fastconv.conv1d(gs, ws, None, stride, padding, dilation, groups, layout=layout)
    # output_padding can leave room for more windows than x has samples: those are extra
    np.testing.assert_allclose(from_layout(gx, layout)[:, :, :length], xt.grad.numpy(),
                               rtol=1e-10, atol=1e-10)
    # ... which take no part in the weight gradient: x padded with zeros to their length
    x_ext = np.zeros(from_layout(gx, layout).shape)
    x_ext[:, :, :length] = x
    x_ext = x_ext if layout == "NCL" else to_nlc(x_ext)
    gw = fastconv.conv1d_backward(x_ext, gs, ws, stride=stride, padding=padding,
                                  dilation=dilation, groups=groups, layout=layout).grad_weight
    gw = gw if layout == "NCL" else oil_to_lio(gw)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["padded", "same-strided", "stride-beyond-kernel", "pointwise"])
def test_conv1d_matches_tensorflow(rng, name):
    """tf.nn.conv1d (NLC, LIO; "SAME" / explicit padding) where TensorFlow is installed."""
    tf = pytest.importorskip("tensorflow")
    case = CASES[name]
    kwargs = case_kwargs(case)
    x, w, _ = case_data(rng, case, np.float32)
    z, lio = to_nlc(x), oil_to_lio(w)
    padding = kwargs["padding"]
    if padding == "same":
        want = tf.nn.conv1d(z, lio, stride=kwargs["stride"], padding="SAME").numpy()
    else:
        pads = explicit_padding(padding, x.shape[2], w.shape[2], kwargs["stride"], 1)
        want = tf.nn.conv1d(np.pad(z, ((0, 0), pads, (0, 0))), lio, stride=kwargs["stride"],
                            padding="VALID").numpy()
    got = fastconv.conv1d(z, lio, layout="NLC", **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_conv1d_layer_matches_torch_module(torch, rng):
    """Conv1D against nn.Conv1d with copied parameters, two accumulating backward passes."""
    module = torch.nn.Conv1d(4, 6, 5, stride=2, padding=2, dilation=2, groups=2).double()
    layer = fastconv.Conv1D(4, 6, 5, stride=2, padding=2, dilation=2, groups=2,
                            dtype=np.float64)
    layer.weight[...] = module.weight.detach().numpy()
    layer.bias[...] = module.bias.detach().numpy()
    x = rng.standard_normal((3, 4, 21))
    xt = torch.from_numpy(x).requires_grad_()
    yt = module(xt)
    grad = rng.standard_normal(tuple(yt.shape))
    for _ in range(2):
        yt.backward(torch.from_numpy(grad), retain_graph=True)
        y = layer(x)
        gx = layer.backward(grad)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gx, xt.grad.numpy() / 2, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.weight_grad, module.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(layer.bias_grad, module.bias.grad.numpy(), rtol=1e-10)


# ------------------------------------------------------------------ memory order, threads
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_and_read_only_inputs(rng, layout):
    x = ints(rng, (3, 4, 30))[:, :, ::2]          # strided
    w = ints(rng, (6, 4, 3))
    if layout == "NLC":
        x, w = np.swapaxes(x, 1, 2), w.transpose(2, 1, 0)   # non-contiguous views
    else:
        w = np.asfortranarray(w)
    b = ints(rng, 6)[::-1]                          # negatively strided
    for a in (x, w, b):
        a.flags.writeable = False
    before = [a.copy() for a in (x, w, b)]
    y = fastconv.conv1d(x, w, b, stride=2, padding="same", layout=layout)
    want = fastconv.conv1d(*(np.ascontiguousarray(a) for a in (x, w, b)), stride=2,
                           padding="same", layout=layout)
    np.testing.assert_array_equal(y, want)
    g = fastconv.conv1d_backward(y, x, w, stride=2, padding="same", layout=layout)
    g2 = fastconv.conv1d_backward(want, np.ascontiguousarray(x), np.ascontiguousarray(w),
                                  stride=2, padding="same", layout=layout)
    for a, c in zip(g, g2):
        np.testing.assert_array_equal(a, c)
    cols = fastconv.im2col(x, (3,), padding=1, layout=layout)
    np.testing.assert_array_equal(cols, fastconv.im2col(np.ascontiguousarray(x), (3,),
                                                        padding=1, layout=layout))
    for a, copy in zip((x, w, b), before):
        np.testing.assert_array_equal(a, copy)


def test_out_buffers(rng):
    x, w, b = ints(rng, (2, 3, 9)), ints(rng, (4, 3, 3)), ints(rng, 4)
    out = np.empty((2, 4, 9))
    assert fastconv.conv1d(x, w, b, padding=1, out=out) is out
    np.testing.assert_array_equal(out, fastconv.conv1d(x, w, b, padding=1))
    out1 = np.empty((4, 9))
    assert fastconv.conv1d(x[0], w, b, padding=1, out=out1) is out1
    np.testing.assert_array_equal(out1, out[0])
    t_out = np.empty((2, 3, 9))
    assert fastconv.conv_transpose1d(out, w, None, 1, 1, out=t_out) is t_out
    np.testing.assert_array_equal(t_out, fastconv.conv_transpose1d(out, w, None, 1, 1))
    c_out = np.empty((2, 9, 9))
    assert fastconv.im2col(x, (3,), padding=1, out=c_out) is c_out
    i_out = np.empty((2, 3, 9))
    assert fastconv.col2im(c_out, 9, (3,), padding=1, out=i_out) is i_out


def test_one_channel_front_end_path(rng):
    """The NCL one-channel long-kernel route (via NLC) gives the NCL result, with out=, for
    one signal, and bit-identically on 1 and 2 threads; a kernel or stride just below the
    threshold takes the plain route and agrees."""
    module = importlib.import_module("fastconv.conv1d")  # (fastconv.conv1d is the function)

    x = ints(rng, (3, 1, 2000))
    w = ints(rng, (8, 1, module.CHANNELS_LAST_MIN_KERNEL))
    b = ints(rng, 8)
    want = to_ncl(reference.conv1d_naive(to_nlc(x[:1]), oil_to_lio(w), 7, "same") + b)
    y = fastconv.conv1d(x, w, b, stride=7, padding="same")
    np.testing.assert_array_equal(y[:1], want)
    out = np.empty_like(y)
    assert fastconv.conv1d(x, w, b, stride=7, padding="same", out=out) is out
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(fastconv.conv1d(x[1], w, b, stride=7, padding="same"), y[1])
    plain = fastconv.conv1d(x, w[:, :, 1:], b, stride=7, padding=(0, 1))   # k = 127
    np.testing.assert_array_equal(plain, fastconv.conv1d(to_nlc(x), oil_to_lio(w[:, :, 1:]), b,
                                                         stride=7, padding=(0, 1),
                                                         layout="NLC").transpose(0, 2, 1))
    xf = rng.standard_normal((4, 1, 5000)).astype(np.float32)
    wf = rng.standard_normal((16, 1, 400)).astype(np.float32)
    _needs_two_threads()
    results = []
    for n in (1, 2):
        with fastconv.threads(n):
            results.append(fastconv.conv1d(xf, wf, stride=160))
    np.testing.assert_array_equal(results[0], results[1])


def _needs_two_threads():
    with fastconv.threads(2):
        if fastconv.get_num_threads() < 2:
            pytest.skip("OpenMP gives one thread here")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_thread_counts_bit_identical(rng, layout):
    """Forward and input gradient bit-identical on 1 and 2 threads; weight gradients and
    col2im equal to rounding (docs/spec.md §0)."""
    _needs_two_threads()
    x = rng.standard_normal((4, 16, 300)).astype(np.float32)
    w = rng.standard_normal((32, 16, 9)).astype(np.float32)
    xs, ws = in_layout(x, w, layout)
    results = []
    for n in (1, 2):
        with fastconv.threads(n):
            y = fastconv.conv1d(xs, ws, stride=2, padding="same", layout=layout)
            g = fastconv.conv1d_backward(y, xs, ws, stride=2, padding="same", layout=layout)
            t = fastconv.conv_transpose1d(y, ws, stride=2, padding=3, output_padding=1,
                                          layout=layout)
            layer = fastconv.Conv1D(16, 32, 9, padding=4, layout=layout, seed=3)
            ly = layer(xs)
            lg = layer.backward(ly)
            results.append((y, g.grad_input, t, ly, lg, g.grad_weight, layer.weight_grad))
    for a, b in zip(results[0][:5], results[1][:5]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(results[0][5:], results[1][5:]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------ the layer
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_equals_functions(rng, layout):
    layer = fastconv.Conv1D(4, 6, 3, stride=2, padding="same", groups=2, layout=layout,
                            dtype=np.float64, seed=5)
    assert layer.padding == "same" and layer.kernel_size == (3,) and layer.stride == (2,)
    shape = (6, 2, 3) if layout == "NCL" else (3, 2, 6)
    assert layer.weight.shape == shape and layer.weight_grad.shape == shape
    bound = 1 / np.sqrt(2 * 3)
    assert np.all(np.abs(layer.weight) <= bound) and np.all(np.abs(layer.bias) <= bound)
    for length in (9, 10, 1):
        x = ints(rng, (2, 4, length))
        xs = x if layout == "NCL" else to_nlc(x)
        y = layer(xs)
        np.testing.assert_array_equal(y, fastconv.conv1d(xs, layer.weight, layer.bias, 2,
                                                         "same", 1, 2, layout=layout))
        grad = ints(rng, y.shape)
        layer.zero_grad()
        gx = layer.backward(grad)
        want = fastconv.conv1d_backward(grad, xs, layer.weight, stride=2, padding="same",
                                        groups=2, layout=layout)
        np.testing.assert_array_equal(gx, want.grad_input)
        np.testing.assert_array_equal(layer.weight_grad, want.grad_weight)
        np.testing.assert_array_equal(layer.bias_grad, want.grad_bias)
    # one signal, without the batch axis
    x1 = ints(rng, (4, 7)) if layout == "NCL" else ints(rng, (7, 4))
    y1 = layer(x1)
    assert y1.ndim == 2 and layer.backward(y1).shape == x1.shape
    # an in-place update of the weight is seen; so is an assigned one
    layer.weight[...] *= 2
    np.testing.assert_array_equal(layer(x1), fastconv.conv1d(x1, layer.weight, layer.bias, 2,
                                                             "same", 1, 2, layout=layout))
    new = np.ones_like(layer.weight)
    layer.weight = new
    assert np.shares_memory(layer.weight, new)
    np.testing.assert_array_equal(layer(x1), fastconv.conv1d(x1, new, layer.bias, 2, "same",
                                                             1, 2, layout=layout))


def test_layer_one_channel_front_end(rng, torch):
    """An NCL layer with one input channel and a long strided kernel runs channels-last
    inside: the same numbers from the same seed, results and gradients as the functions,
    as nn.Conv1d, in-place and assigned weights seen, no allocation but the result."""
    layer = fastconv.Conv1D(1, 8, 200, stride=50, padding=3, seed=4, dtype=np.float64)
    reference_layer = fastconv.Conv2D(1, 8, (1, 200), (1, 50), ((0, 0), (3, 3)), seed=4,
                                      dtype=np.float64)
    np.testing.assert_array_equal(layer.weight, reference_layer.weight[:, :, 0, :])
    np.testing.assert_array_equal(layer.bias, reference_layer.bias)
    layer.weight[...] = ints(rng, layer.weight.shape)       # in place, through the view
    layer.bias[...] = ints(rng, 8)
    x = ints(rng, (3, 1, 1000))
    y = layer(x)
    np.testing.assert_array_equal(y, fastconv.conv1d(x, layer.weight, layer.bias, 50, 3))
    np.testing.assert_array_equal(layer(x[0]), y[0])
    np.testing.assert_array_equal(layer(x), y)   # the forward backward() pairs with
    grad = ints(rng, y.shape)
    gx = layer.backward(grad)
    want = fastconv.conv1d_backward(grad, x, layer.weight, stride=50, padding=3)
    np.testing.assert_array_equal(gx, want.grad_input)
    np.testing.assert_array_equal(layer.weight_grad, want.grad_weight)
    np.testing.assert_array_equal(layer.bias_grad, want.grad_bias)
    layer.zero_grad()
    assert not layer.weight_grad.any()
    new = ints(rng, layer.weight.shape)
    layer.weight = new
    np.testing.assert_array_equal(layer(x), fastconv.conv1d(x, new, layer.bias, 50, 3))
    clone = pickle.loads(pickle.dumps(layer))
    np.testing.assert_array_equal(clone(x), layer(x))
    module = torch.nn.Conv1d(1, 8, 200, stride=50, padding=3).double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.weight)))
        module.bias.copy_(torch.from_numpy(layer.bias))
    np.testing.assert_allclose(layer(x), module(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-9)
    x32 = rng.standard_normal((4, 1, 20000)).astype(np.float32)
    layer32 = fastconv.Conv1D(1, 16, 400, stride=160, seed=0)
    out = np.empty((4, 16, 123), np.float32)
    layer32(x32, out=out)
    peak, result = _traced_peak(lambda: layer32(x32, out=out))
    assert result is out and peak < 64 * 1024, peak


def test_layer_seed_and_pickle(rng):
    a = fastconv.Conv1D(3, 5, 4, seed=7, layout="NLC")
    b = fastconv.Conv1D(3, 5, 4, seed=7, layout="NCL")
    np.testing.assert_array_equal(a.weight, fastconv.Conv1D(3, 5, 4, seed=7,
                                                            layout="NLC").weight)
    assert a.weight.dtype == np.float32 and b.weight.shape == (5, 3, 4)
    x = rng.standard_normal((2, 3, 12)).astype(np.float32)
    y = b(x)
    b.backward(y)
    clone = pickle.loads(pickle.dumps(b))
    np.testing.assert_array_equal(clone(x), y)
    np.testing.assert_array_equal(clone.weight_grad, b.weight_grad)
    assert "Conv1D(3, 5, kernel_size=(4,)" in repr(clone)


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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_workspace_is_reused(rng, layout):
    layer = fastconv.Conv1D(16, 32, 9, padding=4, layout=layout, seed=0)
    x = rng.standard_normal((4, 16, 2000) if layout == "NCL" else (4, 2000, 16))
    x = x.astype(np.float32)
    out = np.empty((4, 32, 2000) if layout == "NCL" else (4, 2000, 32), np.float32)
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
    assert layer.workspace_bytes == held


def test_layer_workspace_cap(rng):
    """The smallest piece of work is one signal's columns (8·5·500 floats = 80 000 bytes)
    and, in backward, a weight-gradient accumulator per thread."""
    x = rng.standard_normal((2, 8, 500)).astype(np.float32)
    free = fastconv.Conv1D(8, 8, 5, padding=2, seed=1)
    capped = fastconv.Conv1D(8, 8, 5, padding=2, seed=1, max_workspace_bytes=90_000)
    np.testing.assert_allclose(capped(x), free(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(capped.backward(x), free.backward(x), rtol=1e-5, atol=1e-5)
    assert capped.workspace_bytes <= 90_000
    tiny = fastconv.Conv1D(8, 8, 5, padding=2, seed=1, max_workspace_bytes=100)
    with pytest.raises(ValueError, match=r"^Conv1D: max_workspace_bytes=100 is smaller"):
        tiny(x)


def test_layer_threads_keep_their_own_forward(rng):
    layer = fastconv.Conv1D(2, 3, 3, padding=1, seed=0, dtype=np.float64)
    inputs = [rng.standard_normal((1, 2, n)) for n in (5, 8)]
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
X = np.zeros((2, 3, 10), np.float32)
W = np.zeros((4, 3, 3), np.float32)
F64 = np.zeros((2, 3, 10), np.float64)
CONV1D_ERRORS = {
    "layout": (dict(layout="NCHW"), ValueError,
               r"^conv1d: layout must be one of 'NCL', 'NLC' \(case-insensitive\), "
               r"got 'NCHW'"),
    "input-4d": (dict(x=np.zeros((2, 3, 1, 10), np.float32)), ValueError,
                 r"^conv1d: expected input of shape \(N, C, L\) or \(C, L\) for layout "
                 r"'NCL', got shape \(2, 3, 1, 10\) \(4-D\)"),
    "input-1d": (dict(x=np.zeros(10, np.float32)), ValueError,
                 r"^conv1d: expected input of shape .*\(10,\) \(1-D\)"),
    "input-nlc-4d": (dict(x=np.zeros((1, 2, 3, 4), np.float32), layout="nlc"), ValueError,
                     r"^conv1d: expected input of shape \(N, L, C\) or \(L, C\)"),
    "weight-4d": (dict(w=np.zeros((4, 3, 1, 3), np.float32)), ValueError,
                  r"^conv1d: expected a 3-D weight, got shape \(4, 3, 1, 3\)"),
    "channels": (dict(x=np.zeros((2, 5, 10), np.float32)), ValueError,
                 r"^conv1d: expected input with 3 channels \(weight \(4, 3, 3\), groups=1\), "
                 r"got 5 channels in input of shape \(2, 5, 10\)"),
    "groups-channels": (dict(w=np.zeros((3, 2, 3), np.float32), groups=3), ValueError,
                        r"^conv1d: expected input with 6 channels \(weight \(3, 2, 3\), "
                        r"groups=3\), got 3 channels"),
    "groups-divide": (dict(w=np.zeros((4, 1, 3), np.float32), groups=3), ValueError,
                      r"^conv1d: groups=3 must divide the weight's 4 output channels"),
    "groups-zero": (dict(groups=0), ValueError, r"^conv1d: groups must be >= 1, got 0"),
    "empty-weight": (dict(w=np.zeros((4, 3, 0), np.float32)), ValueError,
                     r"^conv1d: weight has an empty axis, shape \(4, 3, 0\)"),
    "stride-zero": (dict(stride=0), ValueError, r"^conv1d: stride must be >= 1, got 0"),
    "stride-pair": (dict(stride=(1, 2)), ValueError,
                    r"^conv1d: stride must be an int or a 1-tuple \(l,\), got \(1, 2\)"),
    "stride-float": (dict(stride=1.5), ValueError, r"^conv1d: stride must be an int >= 1"),
    "dilation-zero": (dict(dilation=(0,)), ValueError, r"^conv1d: dilation must be >= 1"),
    "padding-negative": (dict(padding=-1), ValueError,
                         r"^conv1d: padding must be an int or a pair \(before, after\) of "
                         r"ints >= 0, got -1"),
    "padding-2d": (dict(padding=((1, 1), (1, 1))), ValueError, r"^conv1d: padding must be"),
    "padding-triple": (dict(padding=(1, 1, 1)), ValueError, r"^conv1d: padding must be"),
    "padding-word": (dict(padding="full"), ValueError,
                     r"^conv1d: padding must be 'valid', 'same' or a number, got 'full'"),
    "window": (dict(x=np.zeros((2, 3, 2), np.float32)), ValueError,
               r"^conv1d: kernel_size=3 with dilation=1 spans 3 samples, larger than the "
               r"padded input length 2 \+ 0 \+ 0 = 2"),
    "window-dilated": (dict(dilation=6, padding=1), ValueError,
                       r"^conv1d: kernel_size=3 with dilation=6 spans 13 samples"),
    "huge-stride": (dict(stride=2**63), ValueError,
                    r"^conv1d: stride=9223372036854775808 exceeds the largest supported"),
    "huge-padding": (dict(padding=2**62), ValueError,
                     r"^conv1d: padding=.*larger than the largest supported size"),
    "dtype": (dict(x=np.zeros((2, 3, 10), np.float16), w=np.zeros((4, 3, 3), np.float16)),
              TypeError, r"^conv1d: input must be float32 or float64, got dtype float16"),
    "int-weight": (dict(w=np.zeros((4, 3, 3), np.int32)), TypeError,
                   r"^conv1d: weight must be float32 or float64, got dtype int32"),
    "mixed": (dict(x=F64), TypeError,
              r"^conv1d: input has dtype float64 but weight has dtype float32"),
    "mixed-bias": (dict(b=np.zeros(4)), TypeError,
                   r"^conv1d: input has dtype float32 but bias has dtype float64"),
    "bias-shape": (dict(b=np.zeros(5, np.float32)), ValueError,
                   r"^conv1d: expected bias of shape \(4,\), got \(5,\)"),
    "out-shape": (dict(out=np.zeros((2, 4, 9), np.float32)), ValueError,
                  r"^conv1d: out must have shape \(2, 4, 8\), got \(2, 4, 9\)"),
    "out-dtype": (dict(out=np.zeros((2, 4, 8))), ValueError,
                  r"^conv1d: out must have dtype float32, got float64"),
    "out-strided": (dict(out=np.zeros((2, 4, 16), np.float32)[:, :, ::2]), ValueError,
                    r"^conv1d: out must be C-contiguous"),
    "object": (dict(x=np.zeros((2, 3, 10), object)), TypeError,
               r"^conv1d: input has unsupported dtype object"),
}


@pytest.mark.parametrize("name", list(CONV1D_ERRORS))
def test_conv1d_errors(name):
    kwargs, error, match = CONV1D_ERRORS[name]
    kwargs = dict(kwargs)
    x, w, b = kwargs.pop("x", X), kwargs.pop("w", W), kwargs.pop("b", None)
    with pytest.raises(error, match=match):
        fastconv.conv1d(x, w, b, **kwargs)
    if "out" in kwargs or b is not None:
        return
    # conv1d_backward checks the same arguments the same way, under its own name
    grad = np.zeros((2, 4, 8), x.dtype if x.dtype.kind == "f" else np.float32)
    with pytest.raises(error, match=match.replace("conv1d", "conv1d_backward", 1)):
        fastconv.conv1d_backward(grad, x, w, **kwargs)


BACKWARD_ERRORS = {
    "grad-shape": (np.zeros((2, 4, 9), np.float32), ValueError,
                   r"^conv1d_backward: expected grad_output of shape \(2, 4, 8\) \(the conv1d "
                   r"output for input \(2, 3, 10\) and weight \(4, 3, 3\)\), got \(2, 4, 9\)"),
    "grad-dtype": (np.zeros((2, 4, 8)), TypeError,
                   r"^conv1d_backward: input has dtype float32 but grad_output has dtype "
                   r"float64"),
    "grad-int": (np.zeros((2, 4, 8), np.int64), TypeError,
                 r"^conv1d_backward: grad_output must be float32 or float64"),
}


@pytest.mark.parametrize("name", list(BACKWARD_ERRORS))
def test_conv1d_backward_errors(name):
    grad, error, match = BACKWARD_ERRORS[name]
    with pytest.raises(error, match=match):
        fastconv.conv1d_backward(grad, X, W)


WT = np.zeros((3, 2, 4), np.float32)   # (C_in, C_out/groups, k)
TRANSPOSE_ERRORS = {
    "channels": (dict(x=np.zeros((2, 4, 5), np.float32)), ValueError,
                 r"^conv_transpose1d: expected input with 3 channels \(weight \(3, 2, 4\)\), "
                 r"got 4 channels in input of shape \(2, 4, 5\)"),
    "groups": (dict(groups=2), ValueError,
               r"^conv_transpose1d: groups=2 must divide the 3 input channels"),
    "output-padding": (dict(stride=2, output_padding=2), ValueError,
                       r"^conv_transpose1d: output_padding=2 must be smaller than stride 2 "
                       r"or dilation 1"),
    "padding-removes": (dict(padding=(4, 4)), ValueError,
                        r"^conv_transpose1d: padding=\(4, 4\) removes the whole output "
                        r"length \(8 before padding\)"),
    "padding-string": (dict(padding="same"), ValueError,
                       r"^conv_transpose1d: padding must be an int or a pair"),
    "weight-2d": (dict(w=np.zeros((3, 8), np.float32)), ValueError,
                  r"^conv_transpose1d: expected a 3-D weight, got shape \(3, 8\)"),
    "layout": (dict(layout="NHWC"), ValueError, r"^conv_transpose1d: layout must be one of"),
    "bias": (dict(b=np.zeros(3, np.float32)), ValueError,
             r"^conv_transpose1d: expected bias of shape \(2,\), got \(3,\)"),
    "stride-pair": (dict(stride=(2, 2)), ValueError,
                    r"^conv_transpose1d: stride must be an int or a 1-tuple"),
    "empty-input-window": (dict(x=np.zeros((2, 3, 0), np.float32)), ValueError,
                           r"^conv_transpose1d: kernel_size=4 with dilation=1 spans 4 "
                           r"samples, larger than the padded output length"),
}


@pytest.mark.parametrize("name", list(TRANSPOSE_ERRORS))
def test_conv_transpose1d_errors(name):
    kwargs, error, match = TRANSPOSE_ERRORS[name]
    kwargs = dict(kwargs)
    x = kwargs.pop("x", np.zeros((2, 3, 5), np.float32))
    w, b = kwargs.pop("w", WT), kwargs.pop("b", None)
    with pytest.raises(error, match=match):
        fastconv.conv_transpose1d(x, w, b, **kwargs)


LAYER_ERRORS = [
    (dict(in_channels=3, out_channels=4, kernel_size=(3, 3)), ValueError,
     r"^Conv1D: kernel_size must be an int or a 1-tuple \(l,\), got \(3, 3\)"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), ValueError,
     r"^Conv1D: groups=2 must divide in_channels \(3\) and out_channels \(4\)"),
    (dict(in_channels=0, out_channels=4, kernel_size=3), ValueError, r"^Conv1D: in_channels"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=0), ValueError,
     r"^Conv1D: stride must be >= 1"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding="full"), ValueError,
     r"^Conv1D: padding must be 'valid', 'same' or a number"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding=(1, 2, 3)), ValueError,
     r"^Conv1D: padding must be an int or a pair"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, layout="NCHW"), ValueError,
     r"^Conv1D: layout must be one of 'NCL', 'NLC'"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, dtype=np.float16), TypeError,
     r"^Conv1D: dtype must be float32 or float64, got float16"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, max_workspace_bytes=0), ValueError,
     r"^Conv1D: max_workspace_bytes must be >= 1"),
    (dict(in_channels=3, out_channels=4, kernel_size=2**63), ValueError,
     r"^Conv1D: kernel_size=\d+ exceeds the largest supported value"),
]


@pytest.mark.parametrize("kwargs, error, match", LAYER_ERRORS)
def test_layer_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastconv.Conv1D(**kwargs)


def test_layer_call_errors():
    layer = fastconv.Conv1D(3, 4, 3, seed=0)
    with pytest.raises(RuntimeError, match=r"^Conv1D.backward: call forward before backward"):
        layer.backward(np.zeros((2, 4, 8), np.float32))
    with pytest.raises(ValueError, match=r"^Conv1D.forward: expected input with 3 channels "
                                         r"\(weight \(4, 3, 3\), groups=1\), got 2 channels"):
        layer(np.zeros((2, 2, 10), np.float32))
    with pytest.raises(TypeError, match=r"^Conv1D.forward: input has dtype float64 but "
                                        r"weight has dtype float32"):
        layer(np.zeros((2, 3, 10)))
    with pytest.raises(ValueError, match=r"^Conv1D.forward: expected input of shape "
                                         r"\(N, C, L\) or \(C, L\)"):
        layer(np.zeros((2, 3, 1, 10), np.float32))
    with pytest.raises(ValueError, match=r"^Conv1D.forward: kernel_size=3 with dilation=1 "
                                         r"spans 3 samples, larger than the padded input "
                                         r"length 2"):
        layer(np.zeros((2, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"^Conv1D.forward: out must have shape \(2, 4, 8\)"):
        layer(np.zeros((2, 3, 10), np.float32), out=np.zeros((2, 4, 10), np.float32))
    layer(np.zeros((2, 3, 10), np.float32))
    with pytest.raises(ValueError, match=r"^Conv1D.backward: expected grad_output of shape "
                                         r"\(2, 4, 8\), got \(2, 4, 9\)"):
        layer.backward(np.zeros((2, 4, 9), np.float32))
    with pytest.raises(TypeError, match=r"^Conv1D.backward: grad_output has dtype float64"):
        layer.backward(np.zeros((2, 4, 8)))
    with pytest.raises(ValueError, match=r"^Conv1D: weight must have shape \(4, 3, 3\), got "
                                         r"\(4, 3\)"):
        layer.weight = np.zeros((4, 3), np.float32)
    with pytest.raises(TypeError, match=r"^Conv1D: weight must have dtype float32, got "
                                        r"float64"):
        layer.weight = np.zeros((4, 3, 3))


X1 = np.zeros((2, 3, 10), np.float32)
IM2COL_ERRORS = {
    "image-4d": (lambda: fastconv.im2col(np.zeros((2, 3, 4, 10)), (3,)), ValueError,
                 r"^im2col: kernel_size=\(3,\) \(one value\) means 1-D images: expected x of "
                 r"shape \(N, C, L\) or \(C, L\) for layout 'NCL', \(N, L, C\) or \(L, C\) "
                 r"for 'NLC', got shape \(2, 3, 4, 10\) \(4-D\)"),
    "layout": (lambda: fastconv.im2col(X1, (3,), layout="NCDHW"), ValueError,
               r"^im2col: layout must be one of 'NCL', 'NLC' for 1-D images"),
    "stride-pair": (lambda: fastconv.im2col(X1, (3,), stride=(1, 1)), ValueError,
                    r"^im2col: stride must be an int or a 1-tuple"),
    "padding-2d": (lambda: fastconv.im2col(X1, (3,), padding=((1, 1), (0, 0))), ValueError,
                   r"^im2col: padding must be an int or a pair \(before, after\)"),
    "padding-same": (lambda: fastconv.im2col(X1, (3,), padding="same"), ValueError,
                     r"^im2col: padding must be an int or a pair"),
    "window": (lambda: fastconv.im2col(X1, (11,)), ValueError,
               r"^im2col: kernel_size=11 with dilation=1 spans 11 samples, larger than the "
               r"padded input length 10 \+ 0 \+ 0 = 10"),
    "kernel-zero": (lambda: fastconv.im2col(X1, (0,)), ValueError,
                    r"^im2col: kernel_size must be >= 1, got 0"),
    "dtype": (lambda: fastconv.im2col(X1.astype(np.complex64), (3,)), TypeError,
              r"^im2col: x must be float32, float64, integer or bool, got dtype complex64"),
    "out": (lambda: fastconv.im2col(X1, (3,), out=np.zeros((2, 9, 7), np.float32)),
            ValueError, r"^im2col: out must have shape \(2, 9, 8\), got \(2, 9, 7\)"),
    "col2im-rows": (lambda: fastconv.col2im(np.zeros((2, 8, 8)), 10, (3,)), ValueError,
                    r"^col2im: cols has 8 rows \(axis -2\), which is not a positive multiple "
                    r"of k = 3 for kernel_size=\(3,\); shape \(2, 8, 8\)"),
    "col2im-positions": (lambda: fastconv.col2im(np.zeros((2, 9, 7)), 10, (3,)), ValueError,
                         r"^col2im: cols has 7 sliding-window positions, but output_size=10 "
                         r"with this geometry gives 8; shape \(2, 9, 7\)"),
    "col2im-size-2d": (lambda: fastconv.col2im(np.zeros((2, 9, 8)), (1, 10), (3,)),
                       ValueError, r"^col2im: output_size must be an int or a 1-tuple"),
    "col2im-ndim": (lambda: fastconv.col2im(np.zeros(8), 10, (3,)), ValueError,
                    r"^col2im: expected cols of shape \(N, C·k, L_out\) or \(C·k, L_out\)"),
    "col2im-bool": (lambda: fastconv.col2im(np.zeros((2, 9, 8), bool), 10, (3,)), TypeError,
                    r"^col2im: cols must be float32, float64, integer, got dtype bool"),
    "col2im-window": (lambda: fastconv.col2im(np.zeros((2, 9, 1)), 1, (3,)), ValueError,
                      r"^col2im: kernel_size=3 with dilation=1 spans 3 samples, larger than "
                      r"the padded output length 1"),
    "im2col_backward-shape": (
        lambda: fastconv.im2col_backward(np.zeros((2, 9, 7)), (2, 3, 10), (3,)), ValueError,
        r"^im2col_backward: grad_cols must have shape \(2, 9, 8\) for input_shape "
        r"\(2, 3, 10\), got \(2, 9, 7\)"),
    "im2col_backward-input-shape": (
        lambda: fastconv.im2col_backward(np.zeros((2, 9, 8)), (2, 3, 1, 10), (3,)),
        ValueError, r"^im2col_backward: input_shape must have 2 or 3 dimensions"),
    "col2im_backward-4d": (
        lambda: fastconv.col2im_backward(np.zeros((2, 3, 1, 10)), (3,)), ValueError,
        r"^col2im_backward: kernel_size=\(3,\) \(one value\) means 1-D images: expected "
        r"grad_image"),
}


@pytest.mark.parametrize("name", list(IM2COL_ERRORS))
def test_im2col1d_errors(name):
    call, error, match = IM2COL_ERRORS[name]
    with pytest.raises(error, match=match):
        call()


def test_errors_come_before_any_work():
    """A refused call leaves its out buffer untouched."""
    out = np.full((2, 4, 8), 7.0, np.float32)
    with pytest.raises(TypeError):
        fastconv.conv1d(X, W, np.zeros(4), out=out)
    assert np.all(out == 7.0)


# ------------------------------------------------------------------ the asv benchmark
def test_asv_conv1d_benchmarks(monkeypatch, torch):
    """benchmarks/bench_conv1d.py runs every class on a small stand-in for its layers."""
    from conftest import asv_benchmark

    module = asv_benchmark(monkeypatch, "bench_conv1d")
    from fastconv.bench import suite

    small = suite.Signal("conv1d.64to64.k3", 4, 300, 5, 3, 1, 1)
    monkeypatch.setattr(module, "SIGNALS", (small,))
    monkeypatch.setattr(module, "BATCH", 2)
    assert module.NAMES == ["conv1d.64to64.k3", "conv1d.64to64.k9", "audio.frontend"]
    for layout in module.LAYOUTS:
        for cls, timer, tracker in ((module.Conv1DForward, "time_forward",
                                     "track_forward_ratio"),
                                    (module.Conv1DBackward, "time_backward",
                                     "track_backward_ratio"),
                                    (module.Conv1DLayer, "time_layer_forward", None)):
            benchmark = cls()
            benchmark.setup(small.name, layout)
            try:
                getattr(benchmark, timer)(small.name, layout)
                if tracker:
                    assert getattr(benchmark, tracker)(small.name, layout) > 0
            finally:
                benchmark.teardown()


@pytest.mark.parametrize("case", [
    # (N, L, C_in, C_out, k, stride, padding, layout): windows that are image runs (the
    # own GEMM reads them in place from 128 a row), and neighbours that are not
    (3, 21000, 1, 64, 400, 160, 0, "NCL"),   # the audio front end, shorter: 129 windows
    (2, 21000, 1, 48, 400, 160, 0, "NLC"),   # C_out a multiple of 16, not of 32
    (2, 1700, 1, 64, 400, 160, 0, "NLC"),    # 9 windows a row: columns as before
    (2, 999, 3, 32, 9, 2, 0, "NLC"),         # several channels per tap
    (1, 640, 5, 64, 7, 1, 0, "NLC"),         # stride 1, batch 1
    (2, 811, 4, 64, 9, 3, 0, "NLC"),         # the last window ends before the signal
    (2, 640, 4, 64, 9, 1, 4, "NLC"),         # padded: im2col / direct as before
    (0, 640, 4, 64, 9, 1, 0, "NLC"),         # batch 0
])
@pytest.mark.parametrize("bias", [False, True])
def test_windows_read_in_place_are_exact(rng, case, bias):
    """Integer data, so every path's sum is exact: the windows a 1-D convolution reads as
    contiguous runs of the signal (docs/performance.md#image-run-windows) give exactly the
    oracle's result, with and without bias, on one and two threads."""
    n, length, cin, cout, k, stride, padding, layout = case
    x = rng.integers(-3, 4, (n, length, cin)).astype(np.float32)
    w = rng.integers(-3, 4, (k, cin, cout)).astype(np.float32)
    b = rng.integers(-3, 4, cout).astype(np.float32) if bias else None
    want = reference.conv1d_naive(x.astype(np.float64), w.astype(np.float64), stride, padding)
    if bias:
        want = want + b
    if layout == "NCL":
        x = np.ascontiguousarray(x.transpose(0, 2, 1))
        w = np.ascontiguousarray(w.transpose(2, 1, 0))
        want = want.transpose(0, 2, 1)
    for threads in (1, 2):
        with fastconv.threads(threads):
            got = fastconv.conv1d(x, w, b, stride=stride, padding=padding, layout=layout)
        np.testing.assert_array_equal(got, want.astype(np.float32))
