"""padding="same" with a stride: TensorFlow's SAME (docs/spec.md §6).

Output ceil(size/stride); total padding max((out−1)·stride + dilation·(k−1) + 1 − size, 0),
the odd pixel at the end (bottom/right). At stride 1 it is PyTorch's "same", as before.
The oracles: the formula written here, an explicit numeric padding given to
fastconv.reference, torch's F.pad + F.conv2d (with autograd for the gradients) and, where
installed, TensorFlow's "SAME".
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

from conftest import pair, to_nchw, to_nhwc


def tf_same(size, k, s, d):
    """TensorFlow's SAME along one axis, from its definition: (before, after), out."""
    out = (size + s - 1) // s
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return (total // 2, total - total // 2), out


# ------------------------------------------------------------------ the geometry
@settings(max_examples=60, deadline=None)
@given(size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       kernel=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       stride=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       layout=st.sampled_from(["NCHW", "NHWC"]))
def test_geometry_is_tensorflow_same(size, kernel, stride, dilation, layout):
    shape = (2, 3) + size if layout == "NCHW" else (2,) + size + (3,)
    geom = fastconv.ConvGeometry(shape, 4, kernel, stride, "same", dilation, layout=layout)
    expected = [tf_same(n, k, s, d) for n, k, s, d in zip(size, kernel, stride, dilation)]
    assert geom.padding == tuple(pads for pads, _ in expected)
    outs = tuple(out for _, out in expected)
    assert outs == tuple(-(-n // s) for n, s in zip(size, stride))
    assert geom.output_shape == ((2, 4) + outs if layout == "NCHW" else (2,) + outs + (4,))
    assert fastconv.ConvGeometry(shape, 4, kernel, stride, "SAME", dilation,
                                 layout=layout).padding == geom.padding


@pytest.mark.parametrize("size, kernel, stride, dilation, expected", [
    (7, 3, 2, 1, (1, 1)),     # 4 outputs need 9 pixels
    (8, 3, 2, 1, (0, 1)),     # 4 outputs need 9: the odd pixel at the end
    (224, 7, 2, 1, (2, 3)),   # ResNet's stem in TensorFlow
    (5, 1, 4, 1, (0, 0)),     # the windows fit without padding: never negative
    (11, 2, 3, 1, (0, 0)),
    (10, 2, 3, 1, (0, 1)),
    (1, 5, 2, 1, (2, 2)),
    (9, 3, 2, 2, (2, 2)),
    (9, 4, 1, 1, (1, 2)),     # stride 1: PyTorch's "same", d·(k−1) = 3
])
def test_same_padding_examples(size, kernel, stride, dilation, expected):
    geom = fastconv.ConvGeometry((1, 1, size, 3), 1, (kernel, 1), (stride, 1), "same",
                                 (dilation, 1))
    assert geom.padding[0] == expected
    assert reference.same_padding(size, kernel, stride, dilation) == expected


def test_stride_one_same_is_unchanged():
    """At stride 1 the split is d·(k−1) as PyTorch's, whatever the size."""
    for size in (1, 2, 9):
        for k, d in ((3, 1), (4, 1), (2, 3), (5, 2)):
            geom = fastconv.ConvGeometry((1, 1, size, size), 1, k, 1, "same", d)
            total = d * (k - 1)
            assert geom.padding == ((total // 2, total - total // 2),) * 2
            assert geom.output_shape[2:] == (size, size)


# ------------------------------------------------------------------ results
CASES = [
    # (N, C_in, H, W), C_out, kernel, stride, dilation, groups
    ((2, 3, 7, 8), 4, 3, 2, 1, 1),
    ((1, 4, 9, 10), 6, (4, 3), (2, 3), 1, 2),
    ((2, 2, 11, 6), 2, (3, 2), (3, 2), (2, 1), 2),       # depthwise
    ((1, 3, 5, 5), 5, 1, 2, 1, 1),                       # 1×1 strided
    ((1, 2, 3, 4), 3, 5, 4, 1, 1),                       # kernel beyond the image
    ((3, 8, 13, 12), 8, 3, (2, 1), 1, 1),                # one axis strided
]


def _data(rng, case, dtype=np.float64):
    shape, cout, kernel, stride, dilation, groups = case
    kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
    x = rng.integers(-3, 4, shape).astype(dtype)
    w = rng.integers(-3, 4, (cout, shape[1] // groups, kh, kw)).astype(dtype)
    b = rng.integers(-3, 4, cout).astype(dtype)
    return x, w, b


def _explicit(case):
    shape, _, kernel, stride, dilation, _ = case
    return tuple(tf_same(n, k, s, d)[0] for n, k, s, d in
                 zip(shape[2:], pair(kernel), pair(stride), pair(dilation)))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_same_equals_explicit_padding(rng, case, layout):
    """Exact integers: conv2d's "same" equals the reference with the formula's padding, and
    conv2d_backward's gradients likewise; the Conv2D layer and reference's own "same" too."""
    _, cout, _, stride, dilation, groups = case
    x, w, b = _data(rng, case)
    padding = _explicit(case)
    z, hwio = to_nhwc(x), w.transpose(2, 3, 1, 0)
    want = reference.conv2d_naive(z, hwio, stride, padding, dilation, groups) + b
    assert np.array_equal(reference.conv2d_strided(z, hwio, stride, "same", dilation, groups)
                          + b, want)
    if layout == "NCHW":
        xs, ws, want_l = x, w, to_nchw(want)
    else:
        xs, ws, want_l = z, np.ascontiguousarray(hwio), want
    y = fastconv.conv2d(xs, ws, b, stride, "same", dilation, groups, layout=layout)
    np.testing.assert_array_equal(y, want_l)
    grad = rng.integers(-3, 4, y.shape).astype(y.dtype)
    got = fastconv.conv2d_backward(grad, xs, ws, stride=stride, padding="same",
                                   dilation=dilation, groups=groups, layout=layout)
    g_nhwc = grad if layout == "NHWC" else to_nhwc(grad)
    gz, gw, gb = reference.conv2d_backward(g_nhwc, z, hwio, stride, padding, dilation, groups)
    np.testing.assert_array_equal(got.grad_input, gz if layout == "NHWC" else to_nchw(gz))
    np.testing.assert_array_equal(got.grad_weight,
                                  gw if layout == "NHWC" else gw.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(got.grad_bias, gb)
    layer = fastconv.Conv2D(x.shape[1], cout, w.shape[2:], stride, "same", dilation, groups,
                            layout=layout, dtype=np.float64)
    assert layer.padding == ("same" if np.any(np.array(stride) > 1) else padding)
    layer.weight[...] = ws
    layer.bias[...] = b
    np.testing.assert_array_equal(layer(xs), want_l)
    np.testing.assert_array_equal(layer.backward(grad), got.grad_input)
    np.testing.assert_array_equal(layer.weight_grad, got.grad_weight)


def test_layer_resolves_same_per_input_size(rng):
    """A strided "same" layer pads each input size by its own SAME padding."""
    layer = fastconv.Conv2D(2, 3, 3, stride=2, padding="same", seed=1, dtype=np.float64)
    assert "padding='same'" in repr(layer)
    for size in (7, 8, 1, 12):
        x = rng.standard_normal((1, 2, size, size + 1))
        want = fastconv.conv2d(x, layer.weight, layer.bias, 2, _explicit(
            ((1, 2, size, size + 1), 3, 3, 2, 1, 1)))
        y = layer(x)
        assert y.shape == (1, 3, -(-size // 2), -(-(size + 1) // 2))
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_same_stride_thread_counts_agree(rng):
    x = rng.standard_normal((4, 8, 17, 15)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    grad = rng.standard_normal((4, 16, 9, 8)).astype(np.float32)
    results = []
    for n in (1, 2):
        with fastconv.threads(n):
            y = fastconv.conv2d(x, w, stride=2, padding="same")
            g = fastconv.conv2d_backward(grad, x, w, stride=2, padding="same")
            results.append((y, g.grad_input))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dask_conv2d_same_stride(rng):
    da = pytest.importorskip("dask.array")
    import fastconv.dask as fdask

    x = rng.integers(-3, 4, (6, 3, 9, 10)).astype(np.float64)
    w = rng.integers(-3, 4, (4, 3, 3, 3)).astype(np.float64)
    y = fdask.conv2d(da.from_array(x, chunks=(2, 3, 9, 10)), w, stride=2, padding="same")
    np.testing.assert_array_equal(y.compute(), fastconv.conv2d(x, w, stride=2, padding="same"))
    assert y.shape == (6, 4, 5, 5)
    layer = fastconv.Conv2D(3, 4, 3, stride=(2, 1), padding="same", seed=0, dtype=np.float64)
    # W split: stride 1 along W, so the halo rule serves it
    y = fdask.layer_forward(layer, da.from_array(x, chunks=(3, 3, 9, 5)))
    np.testing.assert_allclose(y.compute(), layer(x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ torch and TensorFlow
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES)
def test_same_stride_matches_torch(torch, rng, case, layout):
    """F.pad with TensorFlow's asymmetric padding, then F.conv2d; autograd's gradients."""
    F = torch.nn.functional
    _, _, _, stride, dilation, groups = case
    x, w, b = _data(rng, case, np.float32)
    x, w, b = x / 2, w / 3, b / 5  # not just integers
    (top, bottom), (left, right) = _explicit(case)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    yt = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=stride,
                  dilation=dilation, groups=groups)
    grad = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.from_numpy(grad))
    if layout == "NCHW":
        args, g = (x, w), grad
    else:
        args, g = (to_nhwc(x), np.ascontiguousarray(w.transpose(2, 3, 1, 0))), to_nhwc(grad)
    y = fastconv.conv2d(*args, b, stride, "same", dilation, groups, layout=layout)
    got = fastconv.conv2d_backward(g, *args, stride=stride, padding="same", dilation=dilation,
                                   groups=groups, layout=layout)
    want_y = yt.detach().numpy()
    want_gx, want_gw = xt.grad.numpy(), wt.grad.numpy()
    if layout == "NHWC":
        want_y, want_gx, want_gw = to_nhwc(want_y), to_nhwc(want_gx), want_gw.transpose(2, 3,
                                                                                         1, 0)
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.grad_input, want_gx, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.grad_weight, want_gw, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got.grad_bias, bt.grad.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("case", CASES[:4])
def test_same_stride_matches_tensorflow(rng, case):
    tf = pytest.importorskip("tensorflow")
    shape, _, kernel, stride, dilation, groups = case
    if groups != 1 or np.any(np.array(stride) > 1) and np.any(np.array(dilation) > 1):
        pytest.skip("tf.nn.conv2d takes no groups, nor a stride with a dilation")
    x, w, _ = _data(rng, case, np.float32)
    z, hwio = to_nhwc(x), np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    want = tf.nn.conv2d(z, hwio, strides=stride, padding="SAME", dilations=dilation).numpy()
    got = fastconv.conv2d(z, hwio, stride=stride, padding="same", dilation=dilation,
                          layout="NHWC")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
