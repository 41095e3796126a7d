"""The direct small-GEMM forward path (float32, a weight that fits L2, AVX-512 builds).
NCHW: the packed weight by row pointers into the image, gathered edge blocks, one-row im2col
for strides > 1. NHWC (C_out a multiple of 16): blocks of 12 positions read in place from
the image by the HWIO weight rows, packed blocks at the edges and for short last blocks.

Every geometry of tests/test_conv.py without groups is rerun with 5, 16, 20, 32 or 48 output
channels, so the blocks meet every padding form, stride, dilation and width (narrower
than a block, not a multiple of it, partial last blocks at the end of the image buffer),
and compared with the float64 oracle and with the BLAS path of the same build.
"""
import dataclasses

import numpy as np
import pytest

import fastconv
from fastconv import ConvGeometry, _engine, _tuning, reference

from planned import conv2d_by, plan_with
from test_conv import GEOMS, ref_conv2d, tol

pytestmark = pytest.mark.skipif(not _engine._conv.SMALL_GEMM,
                                reason="this build has no small-GEMM block (needs AVX-512)")

DENSE = [name for name, geom in GEOMS.items() if geom.groups == 1]
EXTRA = {
    # width 45: blocks of 32 and 13 columns; the last rows end the image buffer
    "wide-tail": dict(n=2, c=3, h=9, w=45, kernel=3, padding=1),
    "wide-tail-unpadded": dict(n=1, c=2, h=5, w=37, kernel=(2, 5)),
    "stride2-wide": dict(n=2, c=3, h=21, w=50, kernel=3, stride=2, padding=1),
    "stride3-dilated": dict(n=1, c=2, h=17, w=61, kernel=3, stride=(2, 3), dilation=2,
                            padding=((0, 2), (3, 1))),
    "dilated-right-edge": dict(n=1, c=4, h=8, w=40, kernel=3, dilation=(1, 4), padding=(1, 3)),
    "deep-k7": dict(n=1, c=20, h=12, w=33, kernel=7, padding=3),
}


def direct_case(rng, geom_kwargs, c_out, layout="NCHW"):
    """Input, weight, bias (float32, in `layout`) and the conv2d keyword arguments."""
    kwargs = dict(geom_kwargs)
    n, c, h, w = (kwargs.pop(key) for key in ("n", "c", "h", "w"))
    kernel = kwargs.pop("kernel")
    kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = (rng.standard_normal((c_out, c, kh, kw)) / np.sqrt(c * kh * kw)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        weight = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
        kwargs["layout"] = "NHWC"
    return x, weight, bias, kwargs


def from_geoms(name):
    geom = GEOMS[name]
    return dict(n=geom.n, c=geom.c, h=geom.h, w=geom.w, kernel=geom.kernel,
                stride=geom.stride, padding=geom.padding, dilation=geom.dilation)


CASES = {**{name: from_geoms(name) for name in DENSE}, **EXTRA}


@pytest.fixture(autouse=True)
def any_depth(request):
    """The direct kernels are tested on shallow geometries too (3 channels: edges, tails),
    which the planner sends to im2col and GEMM in NCHW (Tuning.direct_min_depth); tests
    marked `planner_rules` plan with the real tuning."""
    if request.node.get_closest_marker("planner_rules"):
        yield
        return
    with _tuning.tuned(direct_min_depth=1):
        yield


def geometry_of(x, weight, kwargs):
    layout = kwargs.get("layout", "NCHW")
    c_out, kernel = ((weight.shape[0], weight.shape[2:]) if layout == "NCHW"
                     else (weight.shape[3], weight.shape[:2]))
    return ConvGeometry(x.shape, c_out, kernel, kwargs.get("stride", 1),
                        kwargs.get("padding", 0), kwargs.get("dilation", 1), layout=layout)


def takes_direct_path(x, weight, kwargs):
    geom = geometry_of(x, weight, kwargs)
    return _engine.choose_plan(geom, 4, _engine.FORWARD).strategy == _engine.DIRECT


@pytest.mark.parametrize("layout,c_out", [("NCHW", 5), ("NCHW", 16), ("NCHW", 20),
                                          ("NCHW", 32), ("NCHW", 48), ("NHWC", 16),
                                          ("NHWC", 32), ("NHWC", 48), ("NHWC", 20)])
@pytest.mark.parametrize("name", list(CASES))
def test_direct_path_matches_reference(rng, name, layout, c_out):
    """NCHW blocks of 4, 8 and 12 output channels (5: one block of 8 storing 5 rows; 20:
    12 + 8) and of 16 or 32 positions; NHWC blocks of 4, 8 or 12 positions and 16 or 32
    channels (48: 32 + 16; 20 channels: not a multiple of 16, BLAS)."""
    x, weight, bias, kwargs = direct_case(rng, CASES[name], c_out, layout)
    geom = geometry_of(x, weight, kwargs)
    one_by_one = geom.kernel_size == (1, 1)  # a plain GEMM instead
    assert takes_direct_path(x, weight, kwargs) == (
        not one_by_one and (layout == "NCHW" or c_out % 16 == 0))
    y = fastconv.conv2d(x, weight, bias, **kwargs)
    np.testing.assert_allclose(y, ref_conv2d(x, weight, bias, **kwargs), **tol(np.float32))


@pytest.mark.parametrize("name", ["wide-tail", "stride2-wide", "stride3-dilated", "deep-k7",
                                  "pad-asym", "dil-stride-asym"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_direct_path_agrees_with_blas_path(rng, name, layout):
    x, weight, bias, kwargs = direct_case(rng, CASES[name], 32, layout)
    assert takes_direct_path(x, weight, kwargs)
    direct = fastconv.conv2d(x, weight, bias, **kwargs)
    tiles = plan_with(geometry_of(x, weight, kwargs), 4, _engine.FORWARD,
                      _engine.plan_row_tiles)
    blas = conv2d_by(tiles, x, weight) + (bias[:, None, None] if layout == "NCHW" else bias)
    np.testing.assert_allclose(direct, blas, rtol=1e-5, atol=1e-5)


def test_nhwc_blocks_in_place_and_packed(rng):
    """A 40-wide NHWC image, 3×3 with padding 1: per row, a packed block at each edge, two
    blocks read in place between them, and the first and last rows packed throughout."""
    x, weight, bias, kwargs = direct_case(rng, dict(n=2, c=5, h=6, w=40, kernel=3, padding=1),
                                          32, "NHWC")
    assert takes_direct_path(x, weight, kwargs)
    y = fastconv.conv2d(x, weight, bias, **kwargs)
    np.testing.assert_allclose(y, ref_conv2d(x, weight, bias, **kwargs), **tol(np.float32))


@pytest.mark.planner_rules
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_suite_layers_that_take_the_direct_path(layout):
    """The suite's layers with a kernel larger than 1×1 and a weight that fits L2 go direct
    (in NHWC all of them have C_out a multiple of 16), the others do not; in NCHW not the
    3-channel 3×3 stems either (depth 27 < direct_min_depth, wide outputs)."""
    from fastconv.bench import load_layers

    direct = set()
    for layer in load_layers():
        shape = (1, layer.in_channels, layer.size, layer.size)
        if layout == "NHWC":
            shape = (1, layer.size, layer.size, layer.in_channels)
        geom = ConvGeometry(shape, layer.out_channels, layer.kernel, layer.stride,
                            layer.padding, groups=layer.groups, layout=layout)
        if _engine.choose_plan(geom, 4, _engine.FORWARD).strategy == _engine.DIRECT:
            direct.add(layer.name)
    stems = {"mobilenet.stem", "vgg16.conv1_1"}
    assert direct == {"small.16ch", "lecture.8to16", "resnet50.conv1", "vgg16.conv1_2",
                      "resnet50.res2.3x3"} | (stems if layout == "NHWC" else set())


@pytest.mark.planner_rules
def test_direct_min_depth():
    """NCHW: shallower than direct_min_depth goes to im2col and GEMM unless the output is
    at most one block (32 positions) wide; NHWC has no depth rule
    (docs/performance.md#direct_min_depth)."""
    depth = _tuning.active().direct_min_depth
    assert depth == 32

    def direct(shape, c_out, kernel, layout="NCHW", stride=1):
        geom = ConvGeometry(shape, c_out, kernel, stride, kernel // 2, layout=layout)
        return _engine.choose_plan(geom, 4, _engine.FORWARD).strategy == _engine.DIRECT

    assert not direct((1, 3, 224, 224), 64, 3)                # 27 deep, 224 wide
    assert not direct((8, 3, 224, 224), 32, 3, stride=2)      # 112 wide
    assert direct((1, 224, 224, 3), 64, 3, "NHWC")
    assert direct((8, 3, 32, 32), 16, 3)                      # 32 wide: one block
    assert direct((1, 4, 224, 224), 16, 3)                    # 36 deep
    assert direct((1, 3, 224, 224), 64, 7, stride=2)          # 147 deep


def direct_plan(geom, itemsize=4, **tuning):
    """The DIRECT plan for the geometry's forward pass, or None where it does not apply."""
    request = _engine.plan_request(geom, itemsize, _engine.FORWARD,
                                   tuning=dataclasses.replace(_tuning.active(), **tuning))
    return _engine.plan_direct(request)


def test_depth_beyond_the_tables_uses_blas():
    depth = _engine._conv.DIRECT_DEPTH_LIMIT
    fits = ConvGeometry((1, depth // 9, 12, 12), 16, 3)
    too_deep = ConvGeometry((1, depth // 9 + 1, 12, 12), 16, 3)
    # whatever the weight size allowed: the depth is the stack tables' limit
    assert direct_plan(fits, direct_max_weight_bytes=1 << 40)
    assert not direct_plan(too_deep, direct_max_weight_bytes=1 << 40)


@pytest.mark.parametrize("dtype,layout,c_out,groups", [
    (np.float64, "NCHW", 16, 1), (np.float64, "NHWC", 16, 1), (np.float32, "NHWC", 24, 1),
    (np.float32, "NHWC", 40, 1), (np.float32, "NCHW", 32, 2), (np.float32, "NHWC", 32, 2),
    (np.float32, "NCHW", 300, 1)])
def test_other_cases_use_blas(dtype, layout, c_out, groups):
    shape = (1, 8, 20, 20) if layout == "NCHW" else (1, 20, 20, 8)
    geom = ConvGeometry(shape, c_out, 3, padding=1, groups=groups, layout=layout)
    assert not direct_plan(geom, np.dtype(dtype).itemsize)


def test_weight_beyond_the_cache_limit_uses_blas():
    limit = _tuning.DEFAULT.direct_max_weight_bytes // 4  # floats
    fits = ConvGeometry((1, limit // (9 * 64), 12, 12), 64, 3)
    too_big = ConvGeometry((1, limit // (9 * 64) + 1, 12, 12), 64, 3)
    assert _engine.choose_plan(fits, 4, _engine.FORWARD).strategy == _engine.DIRECT
    assert _engine.choose_plan(too_big, 4, _engine.FORWARD).strategy != _engine.DIRECT


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_direct_path_thread_counts_bit_identical(rng, layout):
    x, weight, bias, kwargs = direct_case(rng, EXTRA["stride2-wide"], 32, layout)
    with fastconv.threads(1):
        one = fastconv.conv2d(x, weight, bias, **kwargs)
    with fastconv.threads(2):
        two = fastconv.conv2d(x, weight, bias, **kwargs)
    np.testing.assert_array_equal(one, two)


def test_layer_uses_direct_path_with_reused_workspace(rng):
    layer = fastconv.Conv2D(3, 16, 3, padding=1, seed=0)
    x = rng.standard_normal((2, 3, 30, 41)).astype(np.float32)
    first = layer(x)
    second = layer(x)
    np.testing.assert_array_equal(first, second)
    expected = ref_conv2d(x, layer.weight, layer.bias, padding=1)
    np.testing.assert_allclose(second, expected, **tol(np.float32))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("cap", [9_000, 40_000, None])
def test_direct_path_respects_workspace_cap(rng, layout, cap):
    """The direct path's scratch (and NCHW's packed weight) counts against the cap: with a
    tight cap the plan runs fewer threads or falls back to BLAS tiles that fit it. (NHWC's
    scratch, one packed block of positions, is smaller than one BLAS output row's.)"""
    with fastconv.threads(2):
        layer = fastconv.Conv2D(3, 16, 3, padding=1, layout=layout, seed=0,
                                max_workspace_bytes=cap)
        shape = (2, 3, 40, 64) if layout == "NCHW" else (2, 40, 64, 3)
        x = rng.standard_normal(shape).astype(np.float32)
        y = layer(x)
        geom = ConvGeometry(shape, 16, 3, padding=1, layout=layout)
        plan = _engine.choose_plan(geom, 4, _engine.FORWARD, max_workspace_bytes=cap)
    if cap is not None:
        assert layer.workspace_bytes <= cap
        assert plan.workspace * 4 <= cap
    assert (plan.strategy == _engine.DIRECT) == (layout == "NHWC" or cap != 9_000)
    weight = layer.weight if layout == "NCHW" else layer.weight.transpose(3, 2, 0, 1)
    x_nchw = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    expected = ref_conv2d(x_nchw, weight, layer.bias, padding=1)
    if layout == "NHWC":
        expected = expected.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, expected, **tol(np.float32))


INPUT_GRAD_CASES = [
    # (C_in, H, W, C_out, kernel, padding, dilation, as_conv): stride 1, one group
    (5, 9, 37, 16, 3, 1, 1, True),
    (3, 8, 40, 32, (2, 5), ((1, 0), (2, 3)), (2, 1), True),   # asymmetric, dilated
    (4, 7, 20, 20, 3, ((0, 2), (1, 1)), 1, True),            # NCHW only (C_in 4 in NHWC)
    (16, 6, 30, 8, 3, 1, 1, True),                           # NHWC too (C_in 16)
    (6, 10, 33, 16, 3, (3, 1), 1, False),                    # padding > dilation·(k−1)
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", INPUT_GRAD_CASES)
def test_input_gradient_as_flipped_convolution(monkeypatch, rng, case, layout):
    """Stride 1: the input gradient runs as the direct convolution of the output gradient
    with the flipped, channel-swapped weight (padded dilation·(k−1) − padding) where that
    takes the direct path; otherwise GEMM + col2im. Both against the float64 oracle, and
    bit-identical for any thread count; conv_transpose2d at stride 1 goes the same way."""
    from test_conv import ref_conv2d_backward

    c_in, h, w, c_out, kernel, padding, dilation, as_conv = case
    ran = []
    original = _engine.input_grad_as_conv
    monkeypatch.setattr(_engine, "input_grad_as_conv",
                        lambda *args: ran.append(original(*args)) or ran[-1])
    x, weight, _, kwargs = direct_case(
        rng, dict(n=2, c=c_in, h=h, w=w, kernel=kernel, padding=padding, dilation=dilation),
        c_out, layout)
    y = fastconv.conv2d(x, weight, **kwargs)
    g = rng.standard_normal(y.shape).astype(np.float32)
    grads = fastconv.conv2d_backward(g, x, weight, **kwargs)
    # the flipped convolution's output channels are C_in: NHWC needs a multiple of 16
    assert ran == [as_conv and (layout == "NCHW" or c_in % 16 == 0)]
    expected = ref_conv2d_backward(g.astype(np.float64), x.astype(np.float64),
                                   weight.astype(np.float64), **kwargs)
    np.testing.assert_allclose(grads.grad_input, expected[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads.grad_weight, expected[1], rtol=1e-4, atol=1e-3)
    with fastconv.threads(1):
        one = fastconv.conv2d_backward(g, x, weight, needs_weight_grad=False, **kwargs)
    with fastconv.threads(3):
        three = fastconv.conv2d_backward(g, x, weight, needs_weight_grad=False, **kwargs)
    assert np.array_equal(one.grad_input, grads.grad_input)
    assert np.array_equal(three.grad_input, grads.grad_input)
    # conv_transpose2d(g, weight) is this input gradient (same padding and dilation)
    transposed = fastconv.conv_transpose2d(g, weight, padding=kwargs.get("padding", 0),
                                           dilation=kwargs.get("dilation", 1), layout=layout)
    np.testing.assert_array_equal(transposed, grads.grad_input)



@pytest.mark.parametrize("cap", [30_000, 200_000, None])
def test_input_gradient_as_convolution_within_the_layer_cap(monkeypatch, rng, cap):
    """A capped Conv2D runs the flipped convolution only in the workspace it holds (no
    other scratch): when that is too small the input gradient takes GEMM + col2im. An
    uncapped one may allocate the convolution's scratch. Gradients match the oracle."""
    from test_conv import ref_conv2d_backward

    ran = []
    original = _engine.input_grad_as_conv
    monkeypatch.setattr(_engine, "input_grad_as_conv",
                        lambda *args, **kwargs: ran.append(original(*args, **kwargs))
                        or ran[-1])
    layer = fastconv.Conv2D(16, 16, 3, padding=1, seed=0, max_workspace_bytes=cap)
    x = rng.standard_normal((1, 16, 20, 30)).astype(np.float32)
    y = layer(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    grad_x = layer.backward(g)
    need = _engine.choose_plan(ConvGeometry(y.shape, 16, 3, padding=1), 4,
                               _engine.FORWARD).workspace
    assert ran == [cap is None or need <= layer._workspace.size]
    if cap is not None:
        assert layer.workspace_bytes <= cap
    expected = ref_conv2d_backward(g.astype(np.float64), x.astype(np.float64),
                                   layer.weight.astype(np.float64), padding=1)
    np.testing.assert_allclose(grad_x, expected[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [(1, 1), (2, 3), (3, 2), (3, 7)])
def test_one_row_kernels_read_in_place_are_exact(rng, stride):
    """An NHWC 1×kw kernel without padding reads each output row's windows as contiguous
    runs of an image row (docs/performance.md#image-run-windows) when a row has 128 of
    them (not at stride (3, 7): 59): integer data, exact against the oracle, on one and two
    threads, for several output rows."""
    x = rng.integers(-3, 4, (2, 7, 420, 3)).astype(np.float32)
    w = rng.integers(-3, 4, (1, 9, 3, 32)).astype(np.float32)
    want = reference.conv2d_naive(x.astype(np.float64), w.astype(np.float64), stride)
    for threads in (1, 2):
        with fastconv.threads(threads):
            got = fastconv.conv2d(x, w, stride=stride, layout="NHWC")
        np.testing.assert_array_equal(got, want.astype(np.float32))
