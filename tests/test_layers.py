"""fastconv.Conv2D (docs/spec.md §2): initialisation, forward/backward against
fastconv.reference and the functional API, gradient accumulation, workspace reuse and caps,
thread safety."""
from __future__ import annotations

import concurrent.futures
import tracemalloc

import numpy as np
import pytest

import fastconv
from fastconv import Conv2D, conv2d, conv2d_backward, reference

from conftest import pads, pair

LAYOUTS = ["NCHW", "NHWC"]


def resolve_padding(padding, kernel, dilation):
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return ((0, 0), (0, 0))
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                     for k, d in zip(pair(kernel), pair(dilation)))
    return pads(padding)


def ref_forward(layer_kwargs, x, w, b, layout):
    """float64 fastconv.reference.conv2d_strided in the layer's layout (3-D input allowed)."""
    single = x.ndim == 3
    x4 = (x[None] if single else x).astype(np.float64)
    w = w.astype(np.float64)
    if layout == "NCHW":
        x4, w = x4.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    kw = dict(stride=1, padding=0, dilation=1, groups=1)
    kw.update({k: v for k, v in layer_kwargs.items() if k in kw})
    kw["padding"] = resolve_padding(kw["padding"], w.shape[:2], kw["dilation"])
    y = reference.conv2d_strided(x4, w, **kw)
    if b is not None:
        y = y + b
    if layout == "NCHW":
        y = y.transpose(0, 3, 1, 2)
    return y[0] if single else y


def input_shape(n, c, h, w, layout):
    return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)


def functional_kwargs(layer):
    return dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                groups=layer.groups, layout=layer.layout)


# ------------------------------------------------------------------ construction
@pytest.mark.parametrize("layout", LAYOUTS + ["nhwc"])
def test_weight_and_bias_shapes(layout):
    layer = Conv2D(6, 8, (3, 2), groups=2, layout=layout, seed=0)
    expected = (8, 3, 3, 2) if layout == "NCHW" else (3, 2, 3, 8)
    assert layer.weight.shape == expected
    assert layer.bias.shape == (8,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert layer.weight_grad.shape == expected and not layer.weight_grad.any()
    assert layer.bias_grad.shape == (8,) and not layer.bias_grad.any()
    assert layer.kernel_size == (3, 2)


@pytest.mark.parametrize("groups", [1, 4])
def test_init_uniform_within_pytorch_bound(groups):
    layer = Conv2D(16, 64, 3, groups=groups, seed=123)
    bound = 1 / np.sqrt(16 // groups * 9)
    w, b = layer.weight.astype(np.float64), layer.bias.astype(np.float64)
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(b).max() <= bound * (1 + 1e-6)
    # Really spread over the interval (so a too-small bound fails too): uniform std b/√3.
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.mean()) < 0.05 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert np.abs(b).max() > 0.5 * bound
    assert len(np.unique(w)) > 0.9 * w.size


def test_seed_reproducible():
    a = Conv2D(4, 8, 3, seed=7)
    b = Conv2D(4, 8, 3, seed=7)
    c = Conv2D(4, 8, 3, seed=8)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)
    assert not np.array_equal(a.bias, c.bias)
    # seed=None draws fresh weights each time.
    assert not np.array_equal(Conv2D(4, 8, 3).weight, Conv2D(4, 8, 3).weight)


def test_bias_false(rng):
    layer = Conv2D(3, 5, 3, padding=1, bias=False, seed=0)
    assert layer.bias is None and layer.bias_grad is None
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = layer(x)
    np.testing.assert_allclose(y, ref_forward(dict(padding=1), x, layer.weight, None, "NCHW"),
                               rtol=1e-4, atol=1e-5)
    gx = layer.backward(np.ones_like(y))
    assert gx.shape == x.shape
    assert layer.bias_grad is None
    layer.zero_grad()


@pytest.mark.parametrize("dtype", [np.float64, "float64", np.dtype("float64")])
def test_dtype_float64_honoured(rng, dtype):
    layer = Conv2D(3, 4, 3, dtype=dtype, seed=0)
    assert layer.weight.dtype == np.float64 and layer.bias.dtype == np.float64
    assert layer.weight_grad.dtype == np.float64
    x = rng.standard_normal((1, 3, 5, 5))
    y = layer(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref_forward({}, x, layer.weight, layer.bias, "NCHW"),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="float32"):
        layer(x.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.complex64, "int8"])
def test_bad_dtype_is_type_error(dtype):
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        Conv2D(3, 4, 3, dtype=dtype)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), r"groups=2"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=4), r"groups=4"),
    (dict(in_channels=0, out_channels=4, kernel_size=3), r"in_channels"),
    (dict(in_channels=3, out_channels=0, kernel_size=3), r"out_channels"),
    (dict(in_channels=3, out_channels=4, kernel_size=0), r"kernel_size"),
    (dict(in_channels=3, out_channels=4, kernel_size=(3, 3, 3)), r"kernel_size"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=0), r"stride"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, dilation=(1, 0)), r"dilation"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding=-1), r"padding"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding=((0, 1), (-1, 0))),
     r"padding"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding="full"), r"padding"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, layout="NCWH"),
     r"layout.*NCHW.*NHWC"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, max_workspace_bytes=0),
     r"max_workspace_bytes"),
])
def test_bad_geometry_is_value_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Conv2D(**kwargs)


def test_forward_argument_errors(rng):
    layer = Conv2D(3, 4, 3, seed=0)
    with pytest.raises(ValueError, match=r"expected input with 3 channels.*got 5 channels"):
        layer(np.zeros((1, 5, 8, 8), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer(np.zeros((1, 3, 2, 8), np.float32))
    with pytest.raises(ValueError, match=r"input"):
        layer(np.zeros((8, 8), np.float32))
    with pytest.raises(TypeError, match="float64"):
        layer(np.zeros((1, 3, 8, 8)))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="out"):
        layer(x, out=np.empty((1, 4, 6, 7), np.float32))
    y = layer(x)
    with pytest.raises(ValueError, match=r"grad_output of shape \(1, 4, 6, 6\)"):
        layer.backward(np.zeros((1, 4, 6, 5), np.float32))
    with pytest.raises(TypeError):
        layer.backward(np.zeros(y.shape, np.float64))


# ------------------------------------------------------------------ forward / backward
LAYER_CASES = {
    "k3p1-bias": (dict(in_channels=3, out_channels=5, kernel_size=3, padding=1), (2, 9, 8)),
    "strided-asym": (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                          padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2), (2, 11, 9)),
    "depthwise-same": (dict(in_channels=5, out_channels=5, kernel_size=4, padding="same",
                            groups=5), (1, 7, 6)),
    "pointwise": (dict(in_channels=8, out_channels=3, kernel_size=1), (3, 5, 4)),
    "no-bias": (dict(in_channels=2, out_channels=3, kernel_size=2, stride=2, bias=False),
                (2, 6, 7)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_forward_matches_reference_and_conv2d(rng, case, layout, dtype):
    kwargs, (n, h, w) = LAYER_CASES[case]
    layer = Conv2D(**kwargs, layout=layout, dtype=dtype, seed=3)
    x = rng.standard_normal(input_shape(n, kwargs["in_channels"], h, w, layout)).astype(dtype)
    y = layer(x)
    assert y.dtype == np.dtype(dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, ref_forward(kwargs, x, layer.weight, layer.bias, layout),
                               **tol)
    np.testing.assert_allclose(
        y, conv2d(x, layer.weight, layer.bias, **functional_kwargs(layer)), **tol)
    np.testing.assert_array_equal(layer.forward(x), y)  # __call__ is forward; deterministic


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_backward_matches_conv2d_backward_and_accumulates(rng, case, layout):
    kwargs, (n, h, w) = LAYER_CASES[case]
    layer = Conv2D(**kwargs, layout=layout, dtype=np.float64, seed=4)
    x = rng.standard_normal(input_shape(n, kwargs["in_channels"], h, w, layout))
    y = layer(x)
    g = rng.standard_normal(y.shape)
    expected = conv2d_backward(g, x, layer.weight, **functional_kwargs(layer))
    gx = layer.backward(g)
    np.testing.assert_allclose(gx, expected.grad_input, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.weight_grad, expected.grad_weight, rtol=1e-12,
                               atol=1e-12)
    # Independent of the kernels: L = ⟨conv(x, w), g⟩ is linear in x and in w.
    y0 = ref_forward(kwargs, x, layer.weight, None, layout)
    lhs = np.vdot(y0, g)
    scale = 1e-10 * (1 + np.abs(y0).sum() * np.abs(g).max())
    assert abs(np.vdot(x, gx) - lhs) <= scale
    assert abs(np.vdot(layer.weight, layer.weight_grad) - lhs) <= scale
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    if layer.bias is not None:
        np.testing.assert_allclose(layer.bias_grad, g.sum(axis=axes), rtol=1e-12, atol=1e-12)
    # A second identical backward adds the same again.
    gx2 = layer.backward(g)
    np.testing.assert_allclose(gx2, gx, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.weight_grad, 2 * expected.grad_weight, rtol=1e-12,
                               atol=1e-12)
    if layer.bias is not None:
        np.testing.assert_allclose(layer.bias_grad, 2 * g.sum(axis=axes), rtol=1e-12,
                                   atol=1e-12)
    layer.zero_grad()
    assert not layer.weight_grad.any()
    if layer.bias is not None:
        assert not layer.bias_grad.any()
    # After zero_grad, accumulation restarts from zero.
    layer.backward(g)
    np.testing.assert_allclose(layer.weight_grad, expected.grad_weight, rtol=1e-12,
                               atol=1e-12)


def test_backward_uses_the_last_forward_input(rng):
    layer = Conv2D(3, 4, 3, padding=1, dtype=np.float64, seed=0)
    x1 = rng.standard_normal((1, 3, 5, 5))
    x2 = rng.standard_normal((2, 3, 7, 6))
    layer(x1)
    y2 = layer(x2)
    g = rng.standard_normal(y2.shape)
    layer.backward(g)
    expected = conv2d_backward(g, x2, layer.weight, padding=1)
    np.testing.assert_allclose(layer.weight_grad, expected.grad_weight, rtol=1e-12, atol=1e-12)


def test_backward_before_forward_is_runtime_error():
    layer = Conv2D(3, 4, 3, seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((1, 4, 6, 6), np.float32))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_forward_and_backward(rng, layout):
    kwargs = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2)
    layer = Conv2D(**kwargs, layout=layout, dtype=np.float64, seed=5)
    x = rng.standard_normal(input_shape(1, 4, 9, 8, layout))
    y4 = layer(x)
    g4 = rng.standard_normal(y4.shape)
    gx4 = layer.backward(g4)
    w4 = layer.weight_grad.copy()
    layer.zero_grad()
    y3 = layer(x[0])
    assert y3.shape == y4.shape[1:]
    np.testing.assert_allclose(y3, y4[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y3, ref_forward(kwargs, x[0], layer.weight, layer.bias, layout),
                               rtol=1e-10, atol=1e-12)
    gx3 = layer.backward(g4[0])
    assert gx3.shape == x.shape[1:]
    np.testing.assert_allclose(gx3, gx4[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.weight_grad, w4, rtol=1e-12, atol=1e-12)
    out = np.empty(y4.shape[1:])
    assert layer(x[0], out=out).shape == out.shape
    np.testing.assert_allclose(out, y4[0], rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ workspace
def _traced_peak(fn):
    """Peak bytes allocated (above the start) while fn runs."""
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
def test_workspace_is_reused(rng, layout):
    layer = Conv2D(16, 32, 3, padding=1, layout=layout, seed=0)
    x = rng.standard_normal(input_shape(4, 16, 32, 32, layout)).astype(np.float32)
    out = np.empty(input_shape(4, 32, 32, 32, layout), np.float32)
    assert layer(x, out=out) is out
    held = layer.workspace_bytes
    assert held > 64 * 1024  # a real column workspace, so the check below means something
    expected = out.copy()
    np.testing.assert_allclose(expected, ref_forward(dict(padding=1), x, layer.weight,
                                                     layer.bias, layout),
                               rtol=1e-4, atol=1e-4)
    out.fill(np.nan)
    peak, result = _traced_peak(lambda: layer(x, out=out))
    assert result is out
    assert peak < 64 * 1024, f"second same-shape forward with out= allocated {peak} bytes"
    assert layer.workspace_bytes == held
    np.testing.assert_array_equal(out, expected)
    # Without out=: only the output.
    peak, y = _traced_peak(lambda: layer(x))
    assert peak < y.nbytes + 64 * 1024
    np.testing.assert_array_equal(y, expected)
    # A smaller batch does not grow the workspace.
    y_small = layer(x[:2])
    assert layer.workspace_bytes == held
    # (Another batch size may cut the work into other tiles: equal up to rounding.)
    np.testing.assert_allclose(y_small, expected[:2], rtol=1e-5, atol=1e-5)
    # Nor does a backward pass (its accumulators were sized at the first call).
    layer.backward(np.ones_like(y_small))
    assert layer.workspace_bytes == held


@pytest.mark.parametrize("threads_n", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_workspace_bytes_cap_gives_same_results(rng, layout, threads_n):
    kwargs = dict(in_channels=3, out_channels=8, kernel_size=3, padding=1, layout=layout,
                  seed=11)
    cap = 20_000
    with fastconv.threads(threads_n):
        free = Conv2D(**kwargs)
        capped = Conv2D(**kwargs, max_workspace_bytes=cap)
        x = rng.standard_normal(input_shape(2, 3, 40, 16, layout)).astype(np.float32)
        y_free, y_cap = free(x), capped(x)
        assert free.workspace_bytes > cap  # the cap really bites
        assert 0 < capped.workspace_bytes <= cap
        np.testing.assert_allclose(y_cap, y_free, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y_cap, ref_forward(kwargs, x, capped.weight, capped.bias,
                                                      layout), rtol=1e-4, atol=1e-5)
        g = rng.standard_normal(y_free.shape).astype(np.float32)
        gx_free, gx_cap = free.backward(g), capped.backward(g)
        assert capped.workspace_bytes <= cap
    np.testing.assert_allclose(gx_cap, gx_free, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(capped.weight_grad, free.weight_grad, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(capped.bias_grad, free.bias_grad, rtol=1e-4, atol=1e-3)


def test_max_workspace_bytes_too_small_for_one_row():
    layer = Conv2D(16, 32, 3, padding=1, max_workspace_bytes=1000, seed=0)
    with pytest.raises(ValueError, match="max_workspace_bytes"):
        layer(np.zeros((1, 16, 32, 32), np.float32))


@pytest.mark.parametrize("cap", [10_000, 20_000])
def test_max_workspace_bytes_respected_for_pointwise_layer(rng, cap):
    # Weight 64·64 float32 = 16 KiB of accumulators per thread.
    with fastconv.threads(2):
        free = Conv2D(64, 64, 1, seed=2)
        capped = Conv2D(64, 64, 1, seed=2, max_workspace_bytes=cap)
        x = rng.standard_normal((2, 64, 4, 4)).astype(np.float32)
        g = rng.standard_normal((2, 64, 4, 4)).astype(np.float32)
        try:
            y = capped(x)
            gx = capped.backward(g)
        except ValueError as err:  # refusing a cap that cannot be met is fine too
            assert "max_workspace_bytes" in str(err)
            return
        np.testing.assert_allclose(y, free(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gx, free.backward(g), rtol=1e-5, atol=1e-6)
        assert capped.workspace_bytes <= cap, capped.workspace_bytes


# ------------------------------------------------------------------ threads
def test_shared_layer_from_four_python_threads(rng):
    layer = Conv2D(8, 16, 3, padding=1, seed=9)
    shapes = [(2, 8, 20, 20), (2, 8, 20, 20), (3, 8, 24, 16), (1, 8, 9, 31)]
    inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    expected = [layer(x).copy() for x in inputs]
    for x, e in zip(inputs, expected):
        np.testing.assert_allclose(e, ref_forward(dict(padding=1), x, layer.weight, layer.bias,
                                                  "NCHW"), rtol=1e-4, atol=1e-4)

    def worker(i):
        bad = 0
        for _ in range(15):
            if not np.array_equal(layer(inputs[i]), expected[i]):
                bad += 1
        return bad

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        mismatches = list(pool.map(worker, range(4)))
    assert mismatches == [0, 0, 0, 0]
    for x, e in zip(inputs, expected):
        np.testing.assert_array_equal(layer(x), e)


# ------------------------------------------------------------------ pickling, threads
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_pickles_parameters_not_runtime_state(rng, layout):
    import pickle

    layer = Conv2D(3, 8, 3, padding=1, layout=layout, seed=4)
    x = rng.standard_normal(input_shape(2, 3, 9, 7, layout)).astype(np.float32)
    y = layer(x)
    layer.backward(np.ones_like(y))
    copy = pickle.loads(pickle.dumps(layer))
    assert copy.workspace_bytes == 0 and copy.workspace_bytes < layer.workspace_bytes
    np.testing.assert_array_equal(copy.weight, layer.weight)
    np.testing.assert_array_equal(copy.weight_grad, layer.weight_grad)
    np.testing.assert_array_equal(copy(x), y)
    with pytest.raises(RuntimeError, match="call forward before backward"):
        pickle.loads(pickle.dumps(layer)).backward(np.ones_like(y))


def test_forward_backward_pairs_in_two_threads_use_their_own_inputs(rng):
    """Each Python thread's backward uses the input of that thread's last forward."""
    import threading

    layer = Conv2D(2, 4, 3, padding=1, seed=1, bias=False)
    shapes = {"A": (1, 2, 6, 6), "B": (1, 2, 5, 8)}
    inputs = {name: rng.standard_normal(shapes[name]).astype(np.float32) for name in "AB"}
    ones = {name: np.ones((1, 4) + shapes[name][2:], np.float32) for name in "AB"}
    a_forward_done, b_forward_done = threading.Event(), threading.Event()
    grads = {}

    def run(name, mine, other):
        layer(inputs[name])
        mine.set()
        assert other.wait(10)  # both forwards made before either backward
        grads[name] = layer.backward(ones[name])

    workers = [threading.Thread(target=run, args=("A", a_forward_done, b_forward_done)),
               threading.Thread(target=run, args=("B", b_forward_done, a_forward_done))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    for name in "AB":
        expected = fastconv.conv2d_backward(ones[name], inputs[name], layer.weight,
                                            padding=1).grad_input
        np.testing.assert_allclose(grads[name], expected, rtol=1e-5, atol=1e-6)
    # The weight gradient holds both threads' contributions.
    total = sum(fastconv.conv2d_backward(ones[name], inputs[name], layer.weight,
                                         padding=1).grad_weight for name in "AB")
    np.testing.assert_allclose(layer.weight_grad, total, rtol=1e-5, atol=1e-5)
