"""padding_mode (docs/spec.md §6): "zeros", "reflect", "replicate" and "circular" on
im2col / col2im (and their gradients), conv2d / conv2d_backward, conv1d / conv1d_backward,
the layers and fastconv.dask.conv2d, against PyTorch (F.pad + conv, nn.Conv2d with
autograd), the NumPy oracles of fastconv.reference in exact integers, and the adjoint
identity of im2col / col2im."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _engine, _tuning, reference

MODES = ["zeros", "reflect", "replicate", "circular"]
PAD_MODES = ["reflect", "replicate", "circular"]
LAYOUTS = ["NCHW", "NHWC"]
TORCH_PAD = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def ints(rng, shape, dtype=np.float64, low=-4, high=5):
    """Integer-valued floats: sums of their products are exact in float32 and float64."""
    return rng.integers(low, high, size=shape).astype(dtype)


def pairs(padding):
    """((top, bottom), (left, right)) of an int, an (h, w) pair or pairs."""
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    a, b = padding
    a = (a, a) if isinstance(a, int) else tuple(a)
    b = (b, b) if isinstance(b, int) else tuple(b)
    return (a, b)


def to_nhwc(x):
    return np.ascontiguousarray(np.moveaxis(x, 1, 3))


def to_nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, 3, 1))


def oihw_to_hwio(w):
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def torch_conv2d(torch, x, w, b, stride, padding, dilation, groups, mode):
    """PyTorch's conv2d of NCHW `x` with `padding` ((top, bottom), (left, right)) in `mode`."""
    F = torch.nn.functional
    (top, bottom), (left, right) = padding
    xt = torch.from_numpy(x)
    if mode == "zeros":
        xt = F.pad(xt, (left, right, top, bottom))
    else:
        xt = F.pad(xt, (left, right, top, bottom), mode=TORCH_PAD[mode])
    return F.conv2d(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                    stride, 0, dilation, groups).numpy()


# --------------------------------------------------------------------------- im2col / col2im

IM2COL_CASES = [
    # (shape NCHW, kernel, stride, padding, dilation)
    ((2, 3, 5, 6), 3, 1, 1, 1),
    ((1, 2, 4, 4), 3, 1, 3, 1),            # padding 3 < 4: reflect fits; circular <= 4
    ((2, 2, 5, 4), (2, 3), (2, 1), ((2, 1), (0, 3)), 1),
    ((1, 1, 6, 7), 3, 3, ((1, 2), (2, 1)), (2, 1)),
    ((1, 3, 3, 3), 5, 1, 1, 1),            # kernel as large as the padded image
    ((1, 2, 5, 5), 2, 4, 2, 1),            # stride > kernel
    ((3, 2, 2, 7), 1, 1, ((1, 1), (0, 2)), 1),  # 1x1 with padding
    ((0, 2, 4, 4), 3, 1, 1, 1),            # empty batch
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(IM2COL_CASES)))
def test_im2col_matches_reference_exactly(rng, mode, layout, case):
    shape, kernel, stride, padding, dilation = IM2COL_CASES[case]
    x = ints(rng, shape, np.int64)
    x = x if layout == "NCHW" else to_nhwc(x)
    got = fastconv.im2col(x, kernel, stride=stride, padding=padding, dilation=dilation,
                          layout=layout, padding_mode=mode)
    want = reference.im2col(x, kernel, stride, padding, dilation, layout, padding_mode=mode)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(IM2COL_CASES)))
def test_col2im_matches_reference_and_is_the_adjoint(rng, mode, layout, case):
    shape, kernel, stride, padding, dilation = IM2COL_CASES[case]
    x = ints(rng, shape, np.int64)
    x = x if layout == "NCHW" else to_nhwc(x)
    cols_shape = fastconv.im2col(x, kernel, stride=stride, padding=padding,
                                 dilation=dilation, layout=layout, padding_mode=mode).shape
    c = ints(rng, cols_shape, np.int64)
    size = shape[2:]
    image = fastconv.col2im(c, size, kernel, stride=stride, padding=padding,
                            dilation=dilation, layout=layout, padding_mode=mode)
    want = reference.col2im(c, size, kernel, stride, padding, dilation, layout,
                            padding_mode=mode)
    np.testing.assert_array_equal(image, want)
    cols = fastconv.im2col(x, kernel, stride=stride, padding=padding, dilation=dilation,
                           layout=layout, padding_mode=mode)
    assert int((cols * c).sum()) == int((x * image).sum())
    # the gradients are the adjoints, with the mode
    back = fastconv.im2col_backward(c, x.shape, kernel, stride=stride, padding=padding,
                                    dilation=dilation, layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(back, image)
    again = fastconv.col2im_backward(x, kernel, stride=stride, padding=padding,
                                     dilation=dilation, layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(again, cols)


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
def test_im2col_dtypes_single_image_and_1d(rng, mode, dtype):
    x = ints(rng, (3, 5, 6), dtype, 0, 9)
    got = fastconv.im2col(x, 3, padding=2, padding_mode=mode)
    want = reference.im2col(x[None], 3, 1, 2, 1, "NCHW", padding_mode=mode)[0]
    np.testing.assert_array_equal(got, want)
    s = ints(rng, (2, 3, 7), dtype, 0, 9)
    for layout in ("NCL", "NLC"):
        sig = s if layout == "NCL" else np.ascontiguousarray(s.transpose(0, 2, 1))
        cols = fastconv.im2col(sig, (3,), stride=2, padding=(2, 3), layout=layout,
                               padding_mode=mode)
        np.testing.assert_array_equal(
            cols, reference.im2col1d(sig, 3, 2, (2, 3), 1, layout, padding_mode=mode))
        if dtype in (np.float32, np.float64):
            back = fastconv.col2im(cols, 7, (3,), stride=2, padding=(2, 3), layout=layout,
                                   padding_mode=mode)
            np.testing.assert_array_equal(
                back, reference.col2im1d(cols, 7, 3, 2, (2, 3), 1, layout,
                                         padding_mode=mode))


def test_im2col_reflect_worked_example():
    x = np.arange(4.0).reshape(1, 1, 1, 4)
    cols = fastconv.im2col(x, (1, 3), padding=((0, 0), (2, 2)), padding_mode="reflect")
    # padded row [2, 1, 0, 1, 2, 3, 2, 1]
    np.testing.assert_array_equal(cols[0], [[2, 1, 0, 1, 2, 3], [1, 0, 1, 2, 3, 2],
                                            [0, 1, 2, 3, 2, 1]])


def test_im2col_mode_case_insensitive_and_zero_padding_is_zeros(rng):
    x = ints(rng, (1, 2, 4, 4))
    a = fastconv.im2col(x, 3, padding=1, padding_mode="Reflect")
    b = fastconv.im2col(x, 3, padding=1, padding_mode="reflect")
    np.testing.assert_array_equal(a, b)
    for mode in PAD_MODES:  # no padding: every mode reads the same pixels
        np.testing.assert_array_equal(fastconv.im2col(x, 3, padding_mode=mode),
                                      fastconv.im2col(x, 3))


# --------------------------------------------------------------------------- conv2d vs torch

CONV_CASES = [
    # (N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups)
    (2, 3, 7, 6, 4, 3, 1, 1, 1, 1),
    (1, 4, 8, 8, 6, 3, 2, ((1, 2), (2, 0)), 1, 2),
    (2, 4, 6, 5, 4, 3, 1, 2, 2, 4),          # depthwise, dilated
    (2, 32, 9, 10, 32, 3, 1, 1, 1, 32),      # depthwise, 16-channel blocks (the zero-padding
    (1, 16, 8, 7, 16, 3, 2, 1, 1, 16),       # register rows must not serve a mode)
    (1, 2, 5, 5, 3, 5, 1, 2, 1, 1),
    (1, 16, 12, 12, 16, 3, 1, 1, 1, 1),      # a 3x3 layer "auto" runs on Winograd in zeros
    (2, 3, 9, 9, 8, 7, 2, 3, 1, 1),          # a ResNet-stem-like layer
    (1, 2, 4, 4, 3, 1, 1, 1, 1, 1),          # 1x1 with padding
    (1, 3, 1, 1, 2, 1, 1, 0, 1, 1),          # a 1x1 image, no padding
    (1, 3, 6, 6, 5, 2, 3, 1, 1, 1),          # stride > kernel
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_and_backward_match_torch(torch, rng, mode, layout, case):
    n, cin, h, w_, cout, k, s, p, d, g = CONV_CASES[case]
    x = ints(rng, (n, cin, h, w_))
    w = ints(rng, (cout, cin // g, k, k))
    b = ints(rng, (cout,))
    padding = pairs(p)
    want = torch_conv2d(torch, x, w, b, s, padding, d, g, mode)
    xl, wl = (x, w) if layout == "NCHW" else (to_nhwc(x), oihw_to_hwio(w))
    got = fastconv.conv2d(xl, wl, b, s, padding, d, g, layout=layout, padding_mode=mode)
    got = got if layout == "NCHW" else to_nchw(got)
    np.testing.assert_array_equal(got, want)
    # gradients by autograd through F.pad
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    F = torch.nn.functional
    (top, bottom), (left, right) = padding
    xp = (F.pad(xt, (left, right, top, bottom)) if mode == "zeros"
          else F.pad(xt, (left, right, top, bottom), mode=mode))
    y = F.conv2d(xp, wt, bt, s, 0, d, g)
    gy = ints(rng, tuple(y.shape))
    y.backward(torch.from_numpy(gy))
    gyl = gy if layout == "NCHW" else to_nhwc(gy)
    grads = fastconv.conv2d_backward(gyl, xl, wl, stride=s, padding=padding, dilation=d,
                                     groups=g, layout=layout, padding_mode=mode)
    gx = grads.grad_input if layout == "NCHW" else to_nchw(grads.grad_input)
    gw = grads.grad_weight if layout == "NCHW" else grads.grad_weight.transpose(3, 2, 0, 1)
    np.testing.assert_array_equal(gx, xt.grad.numpy())
    np.testing.assert_array_equal(gw, wt.grad.numpy())
    np.testing.assert_array_equal(grads.grad_bias, bt.grad.numpy())


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_matches_reference_oracles_exactly(rng, mode, dtype):
    x = ints(rng, (2, 6, 7, 3), dtype)       # NHWC / HWIO, the oracles' layout
    w = ints(rng, (3, 2, 3, 4), dtype)
    kwargs = dict(stride=(1, 2), padding=((2, 1), (1, 1)), dilation=(2, 1), groups=1)
    got = fastconv.conv2d(x, w, layout="NHWC", padding_mode=mode, **kwargs)
    for oracle in (reference.conv2d_naive, reference.conv2d_matmul, reference.conv2d_strided):
        np.testing.assert_array_equal(got, oracle(x, w, padding_mode=mode, **kwargs))
    gy = ints(rng, got.shape, dtype)
    grads = fastconv.conv2d_backward(gy, x, w, layout="NHWC", padding_mode=mode, **kwargs)
    gx, gw, gb = reference.conv2d_backward(gy, x, w, padding_mode=mode, **kwargs)
    np.testing.assert_array_equal(grads.grad_input, gx)
    np.testing.assert_array_equal(grads.grad_weight, gw)
    np.testing.assert_array_equal(grads.grad_bias, gb)


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_with_modes(torch, rng, mode, stride):
    x = ints(rng, (2, 3, 7, 8))
    w = ints(rng, (4, 3, 3, 3))
    got = fastconv.conv2d(x, w, stride=stride, padding="same", padding_mode=mode)
    pads = tuple(reference.same_padding(n, 3, stride) for n in (7, 8))
    np.testing.assert_array_equal(got, torch_conv2d(torch, x, w, None, stride, pads, 1, 1,
                                                    mode))
    ref = reference.conv2d_naive(to_nhwc(x), oihw_to_hwio(w), stride, "same",
                                 padding_mode=mode)
    np.testing.assert_array_equal(to_nhwc(got), ref)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_non_contiguous_read_only_and_single_image(torch, rng, mode):
    base = ints(rng, (2, 3, 8, 10))
    x = base[:, :, ::2, 1::2]                      # non-contiguous view
    want_x = np.ascontiguousarray(x)
    x.flags.writeable = False
    w = ints(rng, (5, 3, 3, 3))
    w.flags.writeable = False
    want = torch_conv2d(torch, want_x, w.copy(), None, 1, pairs(2), 1, 1, mode)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, padding=2, padding_mode=mode), want)
    single = fastconv.conv2d(x[0], w, padding=2, padding_mode=mode)   # (C, H, W)
    np.testing.assert_array_equal(single, want[0])
    gy = ints(rng, want.shape)
    grads = fastconv.conv2d_backward(gy, x, w, padding=2, padding_mode=mode)
    gx, gw, _ = reference.conv2d_backward(to_nhwc(gy), to_nhwc(np.ascontiguousarray(x)),
                                          oihw_to_hwio(w), padding=2, padding_mode=mode)
    np.testing.assert_array_equal(to_nhwc(grads.grad_input), gx)
    np.testing.assert_array_equal(grads.grad_weight, gw.transpose(3, 2, 0, 1))


@pytest.mark.parametrize("mode", PAD_MODES)
def test_empty_batch(mode):
    x = np.zeros((0, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    y = fastconv.conv2d(x, w, padding=1, padding_mode=mode)
    assert y.shape == (0, 4, 5, 5)
    grads = fastconv.conv2d_backward(y, x, w, padding=1, padding_mode=mode)
    assert grads.grad_input.shape == x.shape
    assert not grads.grad_weight.any()


@pytest.mark.parametrize("mode", PAD_MODES)
def test_out_argument_and_explicit_gemm(rng, mode):
    x = ints(rng, (1, 4, 6, 6), np.float32)
    w = ints(rng, (8, 4, 3, 3), np.float32)
    out = np.empty((1, 8, 6, 6), np.float32)
    got = fastconv.conv2d(x, w, padding=1, out=out, padding_mode=mode, algorithm="gemm")
    assert got is out
    np.testing.assert_array_equal(out, fastconv.conv2d(x, w, padding=1, padding_mode=mode))


# --------------------------------------------------------------------------- threads

def _needs_two_threads():
    with fastconv.threads(2):
        if fastconv.get_num_threads() < 2:
            pytest.skip("needs two threads")


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bit_identical_across_thread_counts(rng, mode, layout):
    _needs_two_threads()
    x = rng.standard_normal((3, 8, 11, 9)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    if layout == "NHWC":
        x, w = to_nhwc(x), oihw_to_hwio(w)
    results = []
    for n in (1, 2):
        with fastconv.threads(n):
            y = fastconv.conv2d(x, w, padding=2, layout=layout, padding_mode=mode)
            grads = fastconv.conv2d_backward(np.ones_like(y) * 0.5 + y, x, w, padding=2,
                                             layout=layout, padding_mode=mode)
            cols = fastconv.im2col(x, 3, padding=2, layout=layout, padding_mode=mode)
            back = fastconv.col2im(cols, x.shape[2:] if layout == "NCHW" else x.shape[1:3],
                                   3, padding=2, layout=layout, padding_mode=mode)
        results.append((y, grads.grad_input, grads.grad_weight, back))
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)


# --------------------------------------------------------------------------- layers

@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv2d_layer_matches_torch_module(torch, rng, mode, layout):
    layer = fastconv.Conv2D(4, 6, 3, stride=1, padding=2, dilation=1, groups=2,
                            layout=layout, dtype=np.float64, seed=1, padding_mode=mode)
    module = torch.nn.Conv2d(4, 6, 3, padding=2, groups=2, padding_mode=mode,
                             dtype=torch.float64)
    w = layer.weight if layout == "NCHW" else layer.weight.transpose(3, 2, 0, 1)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        module.bias.copy_(torch.from_numpy(layer.bias))
    x = rng.standard_normal((2, 4, 7, 6))
    xt = torch.from_numpy(x).requires_grad_()
    yt = module(xt)
    y = layer(x if layout == "NCHW" else to_nhwc(x))
    y = y if layout == "NCHW" else to_nchw(y)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(gy))
    gx = layer.backward(gy if layout == "NCHW" else to_nhwc(gy))
    gx = gx if layout == "NCHW" else to_nchw(gx)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    gw = layer.weight_grad if layout == "NCHW" else layer.weight_grad.transpose(3, 2, 0, 1)
    np.testing.assert_allclose(gw, module.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.bias_grad, module.bias.grad.numpy(), rtol=1e-12)
    assert f"padding_mode={mode!r}" in repr(layer)
    clone = pickle.loads(pickle.dumps(layer))
    assert clone.padding_mode == mode
    np.testing.assert_array_equal(clone(x if layout == "NCHW" else to_nhwc(x)),
                                  layer(x if layout == "NCHW" else to_nhwc(x)))


@pytest.mark.parametrize("mode", PAD_MODES)
def test_conv2d_layer_strided_same_and_workspace_cap(torch, rng, mode):
    layer = fastconv.Conv2D(3, 4, 3, stride=2, padding="same", dtype=np.float64, seed=0,
                            padding_mode=mode)
    capped = fastconv.Conv2D(3, 4, 3, stride=2, padding="same", dtype=np.float64, seed=0,
                             padding_mode=mode, max_workspace_bytes=4096)
    for each in (layer, capped):
        each.weight[...] = ints(np.random.default_rng(0), each.weight.shape)
        each.bias[...] = ints(np.random.default_rng(1), each.bias.shape)
    for shape in ((1, 3, 7, 8), (2, 3, 6, 5)):
        x = ints(rng, shape)
        pads = tuple(reference.same_padding(n, 3, 2) for n in shape[2:])
        want = torch_conv2d(torch, x, layer.weight, layer.bias, 2, pads, 1, 1, mode)
        np.testing.assert_array_equal(layer(x), want)
        np.testing.assert_allclose(capped(x), want, rtol=1e-12)


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
def test_conv1d_functions_and_layer_match_torch(torch, rng, mode, layout):
    F = torch.nn.functional
    x = ints(rng, (2, 4, 9))
    w = ints(rng, (6, 2, 3))
    b = ints(rng, (6,))
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    yt = F.conv1d(F.pad(xt, (3, 1), mode=mode), wt, torch.from_numpy(b), 2, 0, 1, 2)
    gy = ints(rng, tuple(yt.shape))
    yt.backward(torch.from_numpy(gy))
    nlc = layout == "NLC"
    xl = np.ascontiguousarray(x.transpose(0, 2, 1)) if nlc else x
    wl = np.ascontiguousarray(w.transpose(2, 1, 0)) if nlc else w
    gyl = np.ascontiguousarray(gy.transpose(0, 2, 1)) if nlc else gy
    y = fastconv.conv1d(xl, wl, b, 2, (3, 1), 1, 2, layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(y.transpose(0, 2, 1) if nlc else y, yt.detach().numpy())
    grads = fastconv.conv1d_backward(gyl, xl, wl, stride=2, padding=(3, 1), groups=2,
                                     layout=layout, padding_mode=mode)
    gx = grads.grad_input.transpose(0, 2, 1) if nlc else grads.grad_input
    gw = grads.grad_weight.transpose(2, 1, 0) if nlc else grads.grad_weight
    np.testing.assert_array_equal(gx, xt.grad.numpy())
    np.testing.assert_array_equal(gw, wt.grad.numpy())
    # the oracles (NLC / LIO)
    ref = reference.conv1d_naive(np.ascontiguousarray(x.transpose(0, 2, 1)),
                                 w.transpose(2, 1, 0), 2, (3, 1), 1, 2, padding_mode=mode)
    np.testing.assert_array_equal(ref.transpose(0, 2, 1) + b[:, None], yt.detach().numpy())
    rgx, rgw, _ = reference.conv1d_backward(np.ascontiguousarray(gy.transpose(0, 2, 1)),
                                            np.ascontiguousarray(x.transpose(0, 2, 1)),
                                            w.transpose(2, 1, 0), 2, (3, 1), 1, 2,
                                            padding_mode=mode)
    np.testing.assert_array_equal(rgx.transpose(0, 2, 1), xt.grad.numpy())
    # the layer against nn.Conv1d
    layer = fastconv.Conv1D(4, 6, 3, padding=2, groups=2, layout=layout, dtype=np.float64,
                            seed=3, padding_mode=mode)
    module = torch.nn.Conv1d(4, 6, 3, padding=2, groups=2, padding_mode=mode,
                             dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(
            layer.weight.transpose(2, 1, 0) if nlc else layer.weight)))
        module.bias.copy_(torch.from_numpy(layer.bias))
    np.testing.assert_allclose(
        layer(xl).transpose(0, 2, 1) if nlc else layer(xl),
        module(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-12)
    assert layer.padding_mode == mode and f"padding_mode={mode!r}" in repr(layer)


def test_conv1d_one_channel_long_kernel_path(torch, rng):
    """conv1d of one NCL channel with k >= 128, stride >= 2 runs on the NLC view."""
    F = torch.nn.functional
    x = ints(rng, (2, 1, 600))
    w = ints(rng, (4, 1, 130))
    for mode in PAD_MODES:
        want = F.conv1d(F.pad(torch.from_numpy(x), (100, 100), mode=mode),
                        torch.from_numpy(w), stride=3).numpy()
        np.testing.assert_array_equal(
            fastconv.conv1d(x, w, stride=3, padding=100, padding_mode=mode), want)


# --------------------------------------------------------------------------- dask

@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dask_conv2d_with_split_spatial_axes(rng, mode, layout):
    da = pytest.importorskip("dask.array")
    import fastconv.dask  # noqa: F401

    x = ints(rng, (2, 3, 13, 12))
    w = ints(rng, (4, 3, 3, 3))
    if layout == "NHWC":
        x, w = to_nhwc(x), oihw_to_hwio(w)
    chunks = (1, 3, 4, 5) if layout == "NCHW" else (1, 4, 5, 3)
    lazy = fastconv.dask.conv2d(da.from_array(x, chunks=chunks), w, padding=2,
                                layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(
        lazy.compute(), fastconv.conv2d(x, w, padding=2, layout=layout, padding_mode=mode))
    layer = fastconv.Conv2D(3, 4, 3, padding=1, dtype=np.float64, seed=0, layout=layout,
                            padding_mode=mode)
    np.testing.assert_allclose(
        fastconv.dask.layer_forward(layer, da.from_array(x, chunks=chunks)).compute(),
        layer(x), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- errors

def test_unknown_or_non_string_mode_is_refused():
    x = np.zeros((1, 1, 4, 4), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    message = ("conv2d: padding_mode must be one of 'zeros', 'reflect', 'replicate', "
               "'circular' (case-insensitive), got 'symmetric'")
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(x, w, padding=1, padding_mode="symmetric")
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"im2col: padding_mode must be one of .* got 3"):
        fastconv.im2col(x, 3, padding_mode=3)
    with pytest.raises(ValueError, match=r"Conv2D: padding_mode must be one of .* got None"):
        fastconv.Conv2D(1, 1, 3, padding_mode=None)
    with pytest.raises(ValueError, match=r"conv1d: padding_mode must be one of"):
        fastconv.conv1d(x[0], w[0], padding_mode="edge")
    with pytest.raises(ValueError, match=r"col2im: padding_mode must be one of"):
        fastconv.col2im(np.zeros((1, 9, 4)), (4, 4), 3, padding=1, padding_mode="wrap")
    with pytest.raises(ValueError, match=r"conv2d_backward: padding_mode must be one of"):
        fastconv.conv2d_backward(np.zeros((1, 1, 2, 2), np.float32), x, w,
                                 padding_mode=b"zeros")


@pytest.mark.parametrize("fn, call", [
    ("conv2d", lambda m, p: fastconv.conv2d(np.zeros((1, 1, 3, 5), np.float32),
                                            np.zeros((1, 1, 3, 3), np.float32), padding=p,
                                            padding_mode=m)),
    ("im2col", lambda m, p: fastconv.im2col(np.zeros((1, 1, 3, 5)), 3, padding=p,
                                            padding_mode=m)),
    ("col2im", lambda m, p: fastconv.col2im(np.zeros((1, 9, (1 + 2 * p) * (3 + 2 * p))),
                                            (3, 5), 3, padding=p, padding_mode=m)),
    ("Conv2D.forward", None),
])
def test_padding_too_large_for_the_mode(fn, call):
    def run(mode, pad):
        if call is None:
            layer = fastconv.Conv2D(1, 1, 3, padding=pad, padding_mode=mode)
            return layer(np.zeros((1, 1, 3, 5), np.float32))
        return call(mode, pad)

    name = "Conv2D" if fn == "Conv2D.forward" else fn
    with pytest.raises(ValueError) as info:
        run("reflect", 3)
    assert str(info.value) == (f"{name}: padding_mode='reflect' needs padding < the input's "
                               f"height (3), got padding 3 on that axis")
    run("reflect", 2)      # 2 < 3 fits
    run("circular", 3)     # 3 <= 3 fits
    with pytest.raises(ValueError) as info:
        run("circular", 4)
    assert str(info.value) == (f"{name}: padding_mode='circular' needs padding <= the "
                               f"input's height (3), got padding 4 on that axis")
    run("replicate", 9)    # replicate fits any padding


def test_one_d_messages_name_the_length():
    x = np.zeros((1, 2, 4), np.float32)
    w = np.zeros((3, 2, 3), np.float32)
    with pytest.raises(ValueError) as info:
        fastconv.conv1d(x, w, padding=4, padding_mode="reflect")
    assert str(info.value) == ("conv1d: padding_mode='reflect' needs padding < the input's "
                               "length (4), got padding 4 on that axis")
    with pytest.raises(ValueError, match=r"^conv1d_backward: padding_mode='circular' needs "
                                         r"padding <= the input's length \(4\)"):
        fastconv.conv1d_backward(np.zeros((1, 3, 12), np.float32), x, w, padding=5,
                                 padding_mode="circular")
    with pytest.raises(ValueError, match=r"^Conv1D.forward: padding_mode='reflect' needs "
                                         r"padding < the input's length \(4\)"):
        fastconv.Conv1D(2, 3, 3, padding=(0, 4), padding_mode="reflect")(x)
    with pytest.raises(ValueError, match=r"^im2col: padding_mode='reflect' needs padding < "
                                         r"the input's length \(4\)"):
        fastconv.im2col(x, (3,), padding=4, padding_mode="reflect")


def test_transposed_convolutions_take_zeros_only():
    x = np.zeros((1, 2, 4, 4), np.float32)
    w = np.zeros((2, 3, 3, 3), np.float32)
    fastconv.conv_transpose2d(x, w, padding_mode="zeros")
    with pytest.raises(ValueError) as info:
        fastconv.conv_transpose2d(x, w, padding_mode="reflect")
    assert str(info.value) == ("conv_transpose2d: padding_mode must be 'zeros' for a "
                               "transposed convolution (as PyTorch's ConvTranspose), got "
                               "'reflect'")
    with pytest.raises(ValueError, match=r"^conv_transpose1d: padding_mode must be 'zeros' "
                                         r"for a transposed convolution"):
        fastconv.conv_transpose1d(x[0], w[:, :, 0], padding_mode="circular")
    with pytest.raises(ValueError, match=r"^conv_transpose1d: padding_mode must be one of"):
        fastconv.conv_transpose1d(x[0], w[:, :, 0], padding_mode="nope")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_reads_the_padding_through_the_tables(torch, rng, mode, layout, m, dtype):
    """Winograd's input tiles (and its direct fallback for non-finite outputs) read the
    padding through the source tables: F(2x2) and F(4x4), padding 1 and 2, odd sizes."""
    for h, w_, p in ((9, 7, 1), (6, 11, ((2, 1), (1, 2))), (5, 5, 2)):
        x = rng.standard_normal((2, 8, h, w_))
        w = rng.standard_normal((16, 8, 3, 3))
        b = rng.standard_normal(16)
        want = torch_conv2d(torch, x, w, b, 1, pairs(p), 1, 1, mode)
        xl, wl = (x, w) if layout == "NCHW" else (to_nhwc(x), oihw_to_hwio(w))
        with _tuning.tuned(winograd_tiles=(m,)):
            got = fastconv.conv2d(xl.astype(dtype), wl.astype(dtype), b.astype(dtype), 1, p,
                                  layout=layout, algorithm="winograd", padding_mode=mode)
            layer = fastconv.Conv2D(8, 16, 3, padding=p, layout=layout, dtype=dtype,
                                    algorithm="winograd", padding_mode=mode)
            np.copyto(layer.weight, wl)
            np.copyto(layer.bias, b)
            from_layer = layer(xl.astype(dtype))
            assert layer.algorithm == "winograd"
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10,
                                                                          atol=1e-10)
        for y in (got, from_layer):
            np.testing.assert_allclose(y if layout == "NCHW" else to_nchw(y), want, **tol)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_winograd_non_finite_fallback_reads_the_tables(torch, mode):
    """An Inf in the image: Winograd sums the outputs it leaves non-finite directly, and
    those reads go through the tables too (an Inf on the edge reaches the outputs whose
    padded windows copy it)."""
    x = np.ones((1, 16, 6, 6))
    x[0, 3, 1, 0] = np.inf
    w = np.ones((16, 16, 3, 3))
    want = torch_conv2d(torch, x, w, None, 1, pairs(1), 1, 1, mode)
    got = fastconv.conv2d(x, w, padding=1, algorithm="winograd", padding_mode=mode)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)])


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_strategy_reads_the_padding(rng, mode, layout):
    """Geometries planned onto each strategy that builds columns or reads the image in
    place (forward and backward) give the oracles' exact results with a padding mode."""
    cases = [  # (input NCHW, C_out, kernel, stride, padding, groups, tuning)
        ((1, 32, 9, 10), 32, 3, 1, 2, 1, {}),                      # direct / winograd
        ((1, 32, 9, 10), 32, 3, 2, 2, 1, {"direct_min_depth": 1}),  # direct, strided
        ((1, 8, 6, 7), 16, 3, 1, 1, 1, {"direct_min_depth": 1}),    # direct, shallow
        ((4, 8, 5, 5), 72, 3, 1, 1, 1, {"min_channel_block": 32}),  # grouped images
        ((4, 8, 5, 5), 16, 3, 1, 2, 1, {"tile_bytes": 1}),          # row tiles of one row
        ((1, 8, 12, 12), 256, 3, 1, 1, 1, {}),                      # channel blocks
        ((6, 4, 4, 4), 8, 3, 1, 1, 1, {}),                          # weight-grad images
        ((2, 8, 7, 7), 8, 5, 1, 2, 8, {}),                          # depthwise blocks
        ((2, 18, 7, 6), 36, 3, 2, 1, 18, {}),                       # blocks, multiplier 2
    ]
    strategies = set()
    for shape, cout, k, s, p, g, tuning in cases:
        x = ints(rng, shape, np.float32)
        w = ints(rng, (cout, shape[1] // g, k, k), np.float32)
        xn, wn = to_nhwc(x), oihw_to_hwio(w)
        xl, wl = (x, w) if layout == "NCHW" else (xn, wn)
        geom = fastconv.ConvGeometry(xl.shape, cout, k, s, p, groups=g, layout=layout,
                                     padding_mode=mode)
        with _tuning.tuned(**tuning):
            for pass_ in (_engine.FORWARD, _engine.BACKWARD):
                algorithm = (_engine.choose_algorithm(geom, 4) if pass_ == _engine.FORWARD
                             else _engine.GEMM)
                strategies.add(_engine.choose_plan(geom, 4, pass_,
                                                   algorithm=algorithm).strategy)
            y = fastconv.conv2d(xl, wl, None, s, p, 1, g, layout=layout, padding_mode=mode,
                                algorithm="gemm")
            gy = ints(rng, y.shape, np.float32)
            grads = fastconv.conv2d_backward(gy, xl, wl, stride=s, padding=p, groups=g,
                                             layout=layout, padding_mode=mode,
                                             algorithm="gemm")
        ref = reference.conv2d_matmul(xn, wn, s, p, 1, g, padding_mode=mode)
        np.testing.assert_array_equal(y if layout == "NHWC" else to_nhwc(y), ref)
        gx, gw, _ = reference.conv2d_backward(gy if layout == "NHWC" else to_nhwc(gy), xn,
                                              wn, s, p, 1, g, padding_mode=mode)
        np.testing.assert_array_equal(
            grads.grad_input if layout == "NHWC" else to_nhwc(grads.grad_input), gx)
        np.testing.assert_array_equal(
            grads.grad_weight if layout == "NHWC" else oihw_to_hwio(grads.grad_weight), gw)
    wanted = {_engine.ROW_TILES, _engine.CHANNEL_BLOCKS, _engine.WEIGHT_GRAD_IMAGES,
              _engine.DEPTHWISE_BLOCKS}
    if layout == "NHWC":
        wanted.add(_engine.GROUPED_IMAGES)
    if _engine._conv.SMALL_GEMM:
        wanted.add(_engine.DIRECT)
    assert wanted <= strategies, strategies
    # the depthwise row loops serve a mode's forward pass only (their gradient loops read
    # zeros): the backward plans are channel blocks
    assert all(_engine.choose_plan(fastconv.ConvGeometry(
        (2, 8, 7, 7) if layout == "NCHW" else (2, 7, 7, 8), 8, 3, 1, 1, groups=8,
        layout=layout, padding_mode=mode), 4,
        pass_).strategy != _engine.DEPTHWISE for pass_ in (_engine.BACKWARD,
                                                          _engine.INPUT_GRAD))


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_blocks_read_the_padding(torch, rng, mode, layout, dtype):
    """Depthwise layers (full and partial blocks of 16 channels, multiplier 1 and 2, 3x3
    and 5x5, strides, dilation, asymmetric padding): the forward pass by the row loops
    (DEPTHWISE, edge pixels through the tables) or the channel-block tiles, the backward
    pass by the tiles, whose padding is read through the tables; a workspace cap below one
    thread's tiles falls back to the grouped GEMM paths. Exact on integers against torch
    (F.pad + conv2d, autograd); the forward pass by each depthwise kernel."""
    F = torch.nn.functional
    for c, mult, k, s, d, p in ((32, 1, 3, 1, 1, 1), (20, 2, 5, 2, 1, ((2, 1), (0, 2))),
                                (16, 1, 3, 1, 2, 2), (3, 1, 3, 1, 1, 1),
                                (16, 1, 3, 2, 1, ((0, 2), (2, 1))), (8, 3, 2, 1, 1, 1)):
        x = ints(rng, (2, c, 9, 8))
        w = ints(rng, (c * mult, 1, k, k))
        (top, bottom), (left, right) = pairs(p)
        xt = torch.from_numpy(x).requires_grad_()
        wt = torch.from_numpy(w).requires_grad_()
        yt = F.conv2d(F.pad(xt, (left, right, top, bottom), mode=mode), wt, None, s, 0, d, c)
        gy = ints(rng, tuple(yt.shape))
        yt.backward(torch.from_numpy(gy))
        xl, wl, gyl = ((x, w, gy) if layout == "NCHW"
                       else (to_nhwc(x), oihw_to_hwio(w), to_nhwc(gy)))
        xl, wl, gyl = xl.astype(dtype), wl.astype(dtype), gyl.astype(dtype)
        geom = fastconv.ConvGeometry(xl.shape, c * mult, k, s, p, d, c, layout=layout,
                                     padding_mode=mode)
        assert _engine.choose_plan(geom, 4, _engine.BACKWARD).strategy == \
            _engine.DEPTHWISE_BLOCKS
        y = fastconv.conv2d(xl, wl, None, s, p, d, c, layout=layout, padding_mode=mode)
        np.testing.assert_array_equal(y if layout == "NCHW" else to_nchw(y),
                                      yt.detach().numpy())
        for tuning in ({"depthwise_block_bytes": 0, "depthwise_row_max_taps": 25},
                       {"depthwise_block_bytes": 1 << 40}):
            with _tuning.tuned(**tuning):  # the row loops, then the tiles when they may
                np.testing.assert_array_equal(
                    fastconv.conv2d(xl, wl, None, s, p, d, c, layout=layout,
                                    padding_mode=mode), y)
        grads = fastconv.conv2d_backward(gyl, xl, wl, stride=s, padding=p, dilation=d,
                                         groups=c, layout=layout, padding_mode=mode)
        gx = grads.grad_input if layout == "NCHW" else to_nchw(grads.grad_input)
        gw = (grads.grad_weight if layout == "NCHW"
              else grads.grad_weight.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(gx, xt.grad.numpy())
        np.testing.assert_array_equal(gw, wt.grad.numpy())
        # a cap that holds one GEMM row of columns (and the weight-gradient accumulator)
        # on one thread, but not one thread's tiles
        itemsize = np.dtype(dtype).itemsize
        row = (geom.out_w * c * k * k + c * mult * k * k) * itemsize
        tiles = _engine._depthwise.block_workspace(geom.window.kernel_struct(), mult)
        if row < tiles * itemsize:
            capped = fastconv.Conv2D(c, c * mult, k, s, p, d, c, bias=False, layout=layout,
                                     dtype=dtype, padding_mode=mode, max_workspace_bytes=row)
            np.copyto(capped.weight, wl)
            np.testing.assert_array_equal(capped(xl), y)
            plan = capped._plans[next(iter(capped._plans))].forward
            assert plan.strategy != _engine.DEPTHWISE_BLOCKS


# --------------------------------------------------------------------------- hypothesis

@st.composite
def geometries(draw):
    mode = draw(st.sampled_from(MODES))
    layout = draw(st.sampled_from(LAYOUTS))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    limit_h = {"reflect": h - 1, "circular": h}.get(mode, 4)
    limit_w = {"reflect": w - 1, "circular": w}.get(mode, 4)
    pads = tuple((draw(st.integers(0, min(limit, 4))), draw(st.integers(0, min(limit, 4))))
                 for limit in (limit_h, limit_w))
    if h + sum(pads[0]) < dh * (kh - 1) + 1 or w + sum(pads[1]) < dw * (kw - 1) + 1:
        kh = kw = 1
    groups = draw(st.sampled_from([1, 2]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    n = draw(st.integers(0, 2))
    return mode, layout, (n, c_in, h, w), c_out, (kh, kw), (sh, sw), pads, (dh, dw), groups


@settings(max_examples=120, deadline=None)
@given(geometries(), st.integers(0, 2**32 - 1))
def test_hypothesis_against_the_oracles(case, seed):
    mode, layout, shape, c_out, kernel, stride, pads, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = ints(rng, shape)
    w = ints(rng, (c_out, shape[1] // groups) + kernel)
    xn, wn = to_nhwc(x), oihw_to_hwio(w)
    xl, wl = (x, w) if layout == "NCHW" else (xn, wn)
    y = fastconv.conv2d(xl, wl, None, stride, pads, dilation, groups, layout=layout,
                        padding_mode=mode)
    ref = reference.conv2d_matmul(xn, wn, stride, pads, dilation, groups, padding_mode=mode)
    np.testing.assert_array_equal(y if layout == "NHWC" else to_nhwc(y), ref)
    gy = ints(rng, y.shape)
    grads = fastconv.conv2d_backward(gy, xl, wl, stride=stride, padding=pads,
                                     dilation=dilation, groups=groups, layout=layout,
                                     padding_mode=mode)
    gx, gw, _ = reference.conv2d_backward(gy if layout == "NHWC" else to_nhwc(gy), xn, wn,
                                          stride, pads, dilation, groups, padding_mode=mode)
    got_gx = grads.grad_input if layout == "NHWC" else to_nhwc(grads.grad_input)
    got_gw = grads.grad_weight if layout == "NHWC" else oihw_to_hwio(grads.grad_weight)
    np.testing.assert_array_equal(got_gx, gx)
    np.testing.assert_array_equal(got_gw, gw)
    cols = fastconv.im2col(xl, kernel, stride=stride, padding=pads, dilation=dilation,
                           layout=layout, padding_mode=mode)
    np.testing.assert_array_equal(cols, reference.im2col(xl, kernel, stride, pads, dilation,
                                                         layout, padding_mode=mode))
    c = ints(rng, cols.shape)
    image = fastconv.col2im(c, shape[2:], kernel, stride=stride, padding=pads,
                            dilation=dilation, layout=layout, padding_mode=mode)
    assert (cols * c).sum() == (xl * image).sum()


def test_padded_axis_beyond_the_tables_is_refused():
    x = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError) as info:
        fastconv.im2col(x, 1, stride=2**40, padding=2**31, padding_mode="replicate")
    assert str(info.value) == (
        "im2col: padding_mode='replicate' reads the padding through a table per axis: the "
        f"padded input height 2 + {2**31} + {2**31} = {2**32 + 2} must be at most 2**31 - 1")
    # zeros takes such padding (no tables)
    assert fastconv.im2col(x, 1, stride=2**40, padding=2**31).shape == (1, 1, 1)


# --------------------------------------------------------------------------- bench and asv

def test_bench_padding_mode_section(tmp_path):
    import json
    import subprocess
    import sys

    path = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--ops", "padding_mode", "--layers",
         "resnet50.res5.3x3", "--batch", "1", "--repeats", "1", "--padding-mode",
         "circular", "--quiet", "--json", str(path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "padding_mode='circular' vs zeros" in result.stdout
    assert "geometric mean circular vs zeros:" in result.stdout
    (row,) = json.loads(path.read_text())["rows"]
    assert row["op"] == "padding_mode" and row["padding_mode"] == "circular"
    assert row["matches_numpy"] is True
    assert row["zeros_ms"] > 0 and row["mode_vs_zeros"] > 0
    bad = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--padding-mode",
                          "zeros"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--padding-mode" in bad.stderr


def test_asv_padding_mode_benchmarks(monkeypatch):
    from conftest import asv_benchmark

    module = asv_benchmark(monkeypatch, "bench_padding_mode")
    assert module.MODES[0] == "zeros"
    for cls, timer in ((module.LayerForward, "time_forward"),
                       (module.Conv2DBackward, "time_backward")):
        for mode in ("zeros", "reflect"):
            benchmark = cls()
            params = (mode, "NHWC", "resnet50.res4.3x3", 1)
            benchmark.setup(*params)
            getattr(benchmark, timer)(*params)
