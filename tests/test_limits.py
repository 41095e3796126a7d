"""Size limits (docs/spec.md §0 "Errors"): huge shapes fail cleanly before any kernel runs.

Huge inputs are faked with ``numpy.broadcast_to`` views (zero strides: nothing is
allocated). Three kinds of limit:

- BLAS takes its GEMM dimensions and leading dimensions as C int: a convolution whose
  C_in, C_out, K = C_in/groups·kh·kw, OH·OW or H·W exceeds 2**31 − 1 is a ValueError,
  raised before any buffer is allocated (checked with tracemalloc, which sees NumPy's
  allocations).
- Window numbers (kernel_size, stride, dilation) and padded sizes above 2**62 are a
  ValueError: the kernels add a few of them in int64, and below that bound no sum
  overflows. Values up to the bound work, with exact results.
- A result or copy that cannot be allocated is a MemoryError or ValueError from NumPy.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastconv
from fastconv import reference

from conftest import naive_col2im_nchw, naive_im2col_nchw, nchw_cols_to_nhwc_cols

REPO_ROOT = pathlib.Path(fastconv.__file__).resolve().parents[1]
INT_MAX = 2**31 - 1
LIMIT = 2**62
BLAS_RANGE = r"exceeds the BLAS int range"
# What a clean refusal of a too-large buffer may look like.
TOO_BIG = (MemoryError, ValueError)


def huge(shape, dtype=np.float32):
    """A read-only array of `shape` that allocates one element (all strides zero)."""
    return np.broadcast_to(np.ones((), dtype=dtype), shape)


def assert_raises_without_allocating(exc, match, call, limit=1 << 20):
    """`call()` raises `exc` matching `match`, and NumPy allocated < `limit` bytes first."""
    tracemalloc.start()
    try:
        with pytest.raises(exc, match=match):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"allocated {peak} bytes before raising"


# ============================================================ BLAS int range

W1 = np.ones((1, 1, 1, 1), np.float32)

BLAS_CASES = {
    # OH·OW = 2**32 output positions: the N of every GEMM.
    "conv2d-positions": lambda: fastconv.conv2d(huge((1, 1, 2**16, 2**16)), W1),
    "conv2d-positions-nhwc": lambda: fastconv.conv2d(huge((1, 2**16, 2**16, 1)), W1,
                                                     layout="NHWC"),
    # Padding alone makes the output huge while the input is one pixel.
    "conv2d-padding": lambda: fastconv.conv2d(np.ones((1, 1, 1, 1), np.float32), W1,
                                              padding=2**16),
    # K = C_in·kh·kw = 2**31.
    "conv2d-K": lambda: fastconv.conv2d(huge((1, 2**31, 1, 1)), huge((1, 2**31, 1, 1))),
    "conv2d-K-kernel": lambda: fastconv.conv2d(huge((1, 1, 2**16, 2**15)),
                                               huge((1, 1, 2**16, 2**15))),
    # M = C_out = 2**31.
    "conv2d-M": lambda: fastconv.conv2d(np.ones((1, 1, 1, 1), np.float32),
                                        huge((2**31, 1, 1, 1))),
    "conv2d-M-nhwc": lambda: fastconv.conv2d(np.ones((1, 1, 1, 1), np.float32),
                                             huge((1, 1, 1, 2**31)), layout="NHWC"),
    "conv2d_backward-positions": lambda: fastconv.conv2d_backward(
        huge((1, 1, 2**16, 2**16)), huge((1, 1, 2**16, 2**16)), W1),
    "conv2d_backward-K": lambda: fastconv.conv2d_backward(
        huge((1, 1, 1, 1)), huge((1, 2**31, 1, 1)), huge((1, 2**31, 1, 1))),
    # The transposed convolution's output (H·W of its GEMMs) is 2**32 pixels.
    "conv_transpose2d-output": lambda: fastconv.conv_transpose2d(
        huge((1, 1, 2**16, 2**16)), W1),
    "conv_transpose2d-stride": lambda: fastconv.conv_transpose2d(
        np.ones((1, 1, 2, 2), np.float32), W1, stride=2**31),
}


@pytest.mark.parametrize("name", list(BLAS_CASES))
def test_gemm_dimensions_beyond_int_are_a_value_error_before_any_allocation(name):
    assert_raises_without_allocating(ValueError, BLAS_RANGE, BLAS_CASES[name])


def test_gemm_dimensions_at_int_max_pass_the_check():
    # OH·OW = 2**31 − 1 exactly is in range: the check lets it through to the allocation,
    # which a broadcast 2**31-pixel input then needs (8 GiB): stop it there by a batch of 0.
    x = huge((0, 1, 1, INT_MAX))
    y = fastconv.conv2d(x, W1)
    assert y.shape == (0, 1, 1, INT_MAX)
    geom = fastconv.ConvGeometry((1, 1, 1, INT_MAX), 1, 1)
    assert geom.gemm_shape == (1, 1, INT_MAX)


def test_conv_geometry_answers_huge_shapes_without_allocating():
    tracemalloc.start()
    try:
        geom = fastconv.ConvGeometry((2**40, 3, 2**20, 2**20), 64, 3, padding=1)
        assert geom.output_shape == (2**40, 64, 2**20, 2**20)
        assert geom.gemm_shape == (64, 27, 2**40)
        assert geom.flops == 2 * 2**40 * 64 * 27 * 2**40
        assert geom.column_bytes(np.float64) == 2**40 * 27 * 2**40 * 8
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _run_limited(code, address_space):
    """Run `code` in a fresh interpreter whose address space is capped (RLIMIT_AS), so an
    allocation that would succeed here fails there instead of touching gigabytes."""
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("ASan reserves terabytes of shadow memory: RLIMIT_AS cannot apply")
    prelude = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "2"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_conv2d_layer_checks_the_blas_range_before_allocating():
    # One pixel padded by 2**15 on each side: OH·OW = (2**16 + 1)**2 > 2**31 − 1. Without
    # the check the layer allocates a 17 GB output and passes int-truncated sizes to sgemm;
    # the subprocess's 3 GB address space turns that allocation into a MemoryError.
    result = _run_limited("""
        import numpy as np, fastconv
        layer = fastconv.Conv2D(1, 1, 1, padding=2**15, seed=0)
        try:
            layer(np.ones((1, 1, 1, 1), np.float32))
        except ValueError as error:
            assert "exceeds the BLAS int range" in str(error), error
            print("ValueError")
        except MemoryError:
            print("MemoryError")
    """, 3 << 30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ValueError"]


@pytest.mark.parametrize("kernel_size", [2**48, (2**40, 2**40)])
def test_conv2d_layer_huge_kernel_fails_cleanly(kernel_size):
    with pytest.raises(TOO_BIG):
        fastconv.Conv2D(1, 1, kernel_size)


def test_conv2d_layer_large_kernel_fails_cleanly():
    # C_in·kh·kw within int64: the weight's allocation is a clean MemoryError already.
    with pytest.raises(TOO_BIG):
        fastconv.Conv2D(2, 1, 2**24)


# ============================================================ window numbers

X5 = np.arange(25.0).reshape(1, 1, 5, 5)

TOO_LARGE_WINDOWS = {
    "im2col-stride": (lambda: fastconv.im2col(X5, 1, stride=2**63), r"im2col: stride"),
    "im2col-stride-pair": (lambda: fastconv.im2col(X5, 1, stride=(1, LIMIT + 1)),
                           r"im2col: stride=\(1, 4611686018427387905\) exceeds"),
    "im2col-dilation": (lambda: fastconv.im2col(X5, 1, dilation=2**64), r"im2col: dilation"),
    "im2col-kernel": (lambda: fastconv.im2col(X5, (1, 2**63), padding=2**63),
                      r"im2col: kernel_size"),
    "im2col-padding": (lambda: fastconv.im2col(X5, 1, padding=((0, 0), (LIMIT, 0))),
                       r"im2col: padding=.* 5 \+ 4611686018427387904 \+ 0"),
    "im2col-padding-dilation": (lambda: fastconv.im2col(X5, 3, dilation=LIMIT // 2,
                                                        padding=LIMIT // 2),
                                r"im2col: padding=.*larger than the largest supported"),
    "col2im-output_size": (lambda: fastconv.col2im(np.ones((1, 1, 1)), (1, LIMIT + 1), 1),
                           r"col2im: padding=.*padded output width"),
    "col2im-stride": (lambda: fastconv.col2im(np.ones((1, 1, 1)), (1, 1), 1, stride=2**63),
                      r"col2im: stride"),
    "im2col_backward-dilation": (lambda: fastconv.im2col_backward(
        np.ones((1, 1, 25)), (1, 1, 5, 5), 1, dilation=2**63), r"im2col_backward: dilation"),
    "conv2d-stride": (lambda: fastconv.conv2d(X5, np.ones((1, 1, 1, 1)), stride=2**63),
                      r"conv2d: stride"),
    "conv2d-dilation": (lambda: fastconv.conv2d(X5, np.ones((1, 1, 1, 1)), dilation=2**63),
                        r"conv2d: dilation"),
    "conv2d_backward-stride": (lambda: fastconv.conv2d_backward(
        np.ones((1, 1, 1, 1)), X5, np.ones((1, 1, 1, 1)), stride=2**63),
        r"conv2d_backward: stride"),
    "conv_transpose2d-stride": (lambda: fastconv.conv_transpose2d(
        np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), stride=2**63),
        r"conv_transpose2d: stride"),
    "ConvGeometry-stride": (lambda: fastconv.ConvGeometry((1, 1, 5, 5), 1, 1, stride=2**63),
                            r"ConvGeometry: stride"),
    "Conv2D-stride": (lambda: fastconv.Conv2D(1, 1, 1, stride=2**63)(np.float32(X5)),
                      r"Conv2D: stride"),
}


@pytest.mark.parametrize("name", list(TOO_LARGE_WINDOWS))
def test_window_numbers_beyond_2_62_are_a_value_error(name):
    # Before the bound these reached the kernels: an OverflowError converting to
    # Py_ssize_t, or (dilation·i, −offset + stride) a signed overflow that UBSan reports.
    call, match = TOO_LARGE_WINDOWS[name]
    with pytest.raises(ValueError, match=match):
        call()


def test_window_numbers_at_the_bound_give_exact_results():
    # Kernel 3, dilation 2**60, padding 2**60 on each side of a 5×5 image: padded size
    # 5 + 2**61 (within the bound), 5×5 outputs, and only the centre tap (i = j = 1) lands in
    # the image: h = oh − 2**60 + 1·2**60 = oh. The other taps land 2**60 away, in the
    # padding; computing that must not overflow.
    big = 2**60
    x = np.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    cols = fastconv.im2col(x, 3, dilation=big, padding=big)
    expected = np.zeros((1, 9, 25))
    expected[0, 4] = x.ravel()
    np.testing.assert_array_equal(cols, expected)
    nhwc = fastconv.im2col(x.transpose(0, 2, 3, 1), 3, dilation=big, padding=big,
                           layout="NHWC")
    np.testing.assert_array_equal(nhwc, expected.transpose(0, 2, 1))
    # col2im is the adjoint: only the centre tap's entries come back.
    np.testing.assert_array_equal(fastconv.col2im(expected, (5, 5), 3, dilation=big,
                                                  padding=big), x)
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, dilation=big, padding=big), 5 * x)
    grads = fastconv.conv2d_backward(np.ones((1, 1, 5, 5)), x, w, dilation=big, padding=big)
    np.testing.assert_array_equal(grads.grad_input, np.full_like(x, 5.0))
    expected_w = np.zeros((1, 1, 3, 3))
    expected_w[0, 0, 1, 1] = x.sum()
    np.testing.assert_array_equal(grads.grad_weight, expected_w)


@pytest.mark.parametrize("batch, channels", [(1, 2), (4, 4)])  # col2im: by rows / by planes
@pytest.mark.parametrize("padding, stride, dilation", [
    (((0, 0), (2**60, 2**60)), (1, 2**60), 1),        # columns 2**60 away from the image
    (((2**60, 1), (2**59, 2**59)), (2**60, 2**59), (1, 2)),
    (((1, 2**61), (0, 2**61)), (2**61, 2**61), (2**60, 1)),
])
def test_far_padding_with_huge_strides(batch, channels, padding, stride, dilation):
    # A few output positions whose taps land 2**60 pixels into the padding or in the image:
    # the kernels must neither overflow nor form pointers far outside their buffers (UBSan
    # checks both in scripts/sanitize.sh). The oracles loop over output positions and never
    # build the padded image.
    rng = np.random.default_rng(batch)
    x = rng.integers(-9, 10, (batch, channels, 4, 5)).astype(np.float64)
    kernel = (2, 3)
    expected = naive_im2col_nchw(x, kernel, stride, padding, dilation)
    assert 0 < expected.shape[-1] <= 16
    cols = fastconv.im2col(x, kernel, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_array_equal(cols, expected)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    cols_nhwc = fastconv.im2col(x_nhwc, kernel, stride=stride, padding=padding,
                                dilation=dilation, layout="NHWC")
    np.testing.assert_array_equal(cols_nhwc, nchw_cols_to_nhwc_cols(expected, channels, kernel))
    grad = rng.integers(-9, 10, expected.shape).astype(np.float64)
    image = naive_col2im_nchw(grad, (4, 5), kernel, stride, padding, dilation)
    np.testing.assert_array_equal(fastconv.col2im(grad, (4, 5), kernel, stride=stride,
                                                  padding=padding, dilation=dilation), image)
    grad_nhwc = nchw_cols_to_nhwc_cols(grad, channels, kernel)
    np.testing.assert_array_equal(
        fastconv.col2im(grad_nhwc, (4, 5), kernel, stride=stride, padding=padding,
                        dilation=dilation, layout="NHWC"), image.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("stride", [2**31, 2**40, LIMIT])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_huge_strides_take_one_window(stride, layout):
    x = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6)
    xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    cols = fastconv.im2col(xl, (2, 3), stride=stride, layout=layout)
    expected = reference.im2col(xl, (2, 3), stride=stride, layout=layout)
    assert cols.shape == expected.shape == ((2, 18, 1) if layout == "NCHW" else (2, 1, 18))
    np.testing.assert_array_equal(cols, expected)
    w = np.ones((4, 3, 2, 3), np.float32)
    wl = w if layout == "NCHW" else np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    y = fastconv.conv2d(xl, wl, stride=stride, layout=layout)
    y = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(y[:, :, 0, 0], np.broadcast_to(
        x[:, :, :2, :3].sum(axis=(1, 2, 3))[:, None], (2, 4)))


# ============================================================ allocations

@pytest.mark.parametrize("call", [
    # Results beyond the address space (2**48 bytes and more).
    lambda: fastconv.im2col(np.zeros((1, 1, 1, 1)), 1, padding=2**40),
    lambda: fastconv.im2col(huge((2**48, 1, 1, 1)), 1),
    lambda: fastconv.im2col(huge((1, 1, 2**24, 2**24), np.uint8), 1),
    lambda: fastconv.col2im(huge((1, 2**48, 1)), (1, 1), 1),
    lambda: fastconv.col2im(np.zeros((1, 1, 1)), (2**40, 2**40), 1),
    lambda: fastconv.im2col_backward(np.zeros((1, 1, 1)), (1, 1, 2**40, 2**40), 1,
                                     padding=0, stride=2**40),
    # A small result whose input copy is beyond the address space (NumPy's copy fails).
    lambda: fastconv.im2col(huge((1, 1, 2**48, 1)), 1, stride=2**48),
    lambda: fastconv.conv2d(huge((2**48, 1, 1, 1)), W1),
    lambda: fastconv.conv2d_backward(huge((2**48, 1, 1, 1)), huge((2**48, 1, 1, 1)), W1),
    lambda: fastconv.conv_transpose2d(huge((2**48, 1, 1, 1)), W1),
    lambda: fastconv.Conv2D(1, 1, 1)(huge((2**48, 1, 1, 1))),
], ids=["im2col-padding", "im2col-batch", "im2col-pixels", "col2im-rows", "col2im-size",
        "im2col_backward", "im2col-copy", "conv2d-batch", "conv2d_backward-batch",
        "conv_transpose2d-batch", "Conv2D-batch"])
def test_unallocatable_sizes_fail_cleanly(call):
    with pytest.raises(TOO_BIG):
        call()


def test_zero_size_results_with_huge_axes_are_not_allocated():
    # An empty batch makes any result empty, however large its other axes.
    x = huge((0, 3, 2**20, 2**20))
    cols = fastconv.im2col(x, 3, padding=1)
    assert cols.shape == (0, 27, 2**40)
    w = np.ones((8, 3, 3, 3), np.float32)
    assert fastconv.ConvGeometry(x.shape, 8, 3, padding=1).output_shape == (0, 8, 2**20, 2**20)
    # The conv GEMMs would still be out of int range, so conv2d refuses before allocating.
    assert_raises_without_allocating(ValueError, BLAS_RANGE,
                                     lambda: fastconv.conv2d(x, w, padding=1))
