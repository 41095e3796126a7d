"""Shared fixtures and oracle helpers for the fastconv test suite.

Nothing here calls fastconv's kernels: the helpers are written straight from the index
formulas of docs/spec.md §0/§1 so that tests compare two independent pieces of code.
"""
from __future__ import annotations

import importlib
import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest

INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.int64,
                  np.uint8, np.uint16, np.uint32, np.uint64]
FLOAT_DTYPES = [np.float32, np.float64]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the test's node id: reproducible and different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def torch():
    """The torch module, or skip the test when it is not importable."""
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _parallel_even_when_tiny():
    """Test inputs are small: plan them for the parallel kernels as large inputs would be,
    so thread-count tests compare real multi-threaded runs (test_conv.py checks the
    one-thread rules for small convolutions itself, with the default tuning)."""
    tuning = importlib.import_module("fastconv._tuning")
    with tuning.tuned(parallel_min_flops=0, parallel_min_elements=0):
        yield


@pytest.fixture(autouse=True)
def _restore_fastconv_threads():
    """Safety net: whatever a test does to fastconv's thread setting is undone afterwards
    (the library offers no public 'reset to the OpenMP default')."""
    module = importlib.import_module("fastconv.threads")
    saved = getattr(module, "_num_threads", None)
    yield
    if hasattr(module, "_num_threads"):
        module._num_threads = saved


# --------------------------------------------------------------------------- helpers

def asv_benchmark(monkeypatch, name):
    """benchmarks/NAME.py, imported from the checkout (the test skips where benchmarks/ is
    not next to the tests, e.g. an installed package)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / f"{name}.py").is_file():
        pytest.skip("no benchmarks/ next to the tests")
    monkeypatch.syspath_prepend(str(root))
    return importlib.import_module(f"benchmarks.{name}")


def to_nhwc(x):
    """(N, C, H, W) → (N, H, W, C), or (C, H, W) → (H, W, C); a C-contiguous copy."""
    return np.ascontiguousarray(np.moveaxis(x, -3, -1))


def to_nchw(x):
    """(N, H, W, C) → (N, C, H, W), or (H, W, C) → (C, H, W); a C-contiguous copy."""
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(a) for a in v)


def pads(p):
    """int | (ph, pw) | ((top, bottom), (left, right)) → ((top, bottom), (left, right))."""
    if np.isscalar(p):
        return ((int(p), int(p)), (int(p), int(p)))
    return tuple((int(a), int(a)) if np.isscalar(a) else (int(a[0]), int(a[1])) for a in p)


def out_size(size, before, after, k, s, d):
    """docs/spec.md §0: (H + top + bottom - dilation*(kh-1) - 1)//stride + 1."""
    return (size + before + after - d * (k - 1) - 1) // s + 1


def out_hw(h, w, kernel_size, stride=1, padding=0, dilation=1):
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel_size), pair(stride), pair(dilation)
    (top, bottom), (left, right) = pads(padding)
    return out_size(h, top, bottom, kh, sh, dh), out_size(w, left, right, kw, sw, dw)


def naive_im2col_nchw(x, kernel_size, stride=1, padding=0, dilation=1):
    """docs/spec.md §1 literally, one element at a time, for a batched NCHW x:
    col[n, (c·kh + i)·kw + j, oh·OW + ow] = x[n, c, oh·sh − top + i·dh, ow·sw − left + j·dw],
    zero where that index falls outside the image."""
    n_, c_, h_, w_ = x.shape
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel_size), pair(stride), pair(dilation)
    (top, _), (left, _) = pads(padding)
    oh_, ow_ = out_hw(h_, w_, kernel_size, stride, padding, dilation)
    col = np.zeros((n_, c_ * kh * kw, oh_ * ow_), dtype=x.dtype)
    for n, c, i, j, oh, ow in itertools.product(range(n_), range(c_), range(kh), range(kw),
                                                range(oh_), range(ow_)):
        h = oh * sh - top + i * dh
        w = ow * sw - left + j * dw
        if 0 <= h < h_ and 0 <= w < w_:
            col[n, (c * kh + i) * kw + j, oh * ow_ + ow] = x[n, c, h, w]
    return col


def naive_col2im_nchw(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Scatter-add, one element at a time, the exact transpose of naive_im2col_nchw."""
    h_, w_ = pair(output_size)
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel_size), pair(stride), pair(dilation)
    (top, _), (left, _) = pads(padding)
    oh_, ow_ = out_hw(h_, w_, kernel_size, stride, padding, dilation)
    n_ = cols.shape[0]
    c_ = cols.shape[1] // (kh * kw)
    image = np.zeros((n_, c_, h_, w_), dtype=cols.dtype)
    for n, c, i, j, oh, ow in itertools.product(range(n_), range(c_), range(kh), range(kw),
                                                range(oh_), range(ow_)):
        h = oh * sh - top + i * dh
        w = ow * sw - left + j * dw
        if 0 <= h < h_ and 0 <= w < w_:
            image[n, c, h, w] += cols[n, (c * kh + i) * kw + j, oh * ow_ + ow]
    return image


def nchw_cols_to_nhwc_cols(cols, channels, kernel_size):
    """Re-index an NCHW column array (N, C·kh·kw, L) into the NHWC one (N, L, kh·kw·C) by the
    two index formulas of docs/spec.md §1:
    nhwc[n, p, (i·kw + j)·C + c] = nchw[n, (c·kh + i)·kw + j, p]."""
    kh, kw = pair(kernel_size)
    n_, rows, length = cols.shape
    assert rows == channels * kh * kw
    result = np.empty((n_, length, kh * kw * channels), dtype=cols.dtype)
    for c, i, j in itertools.product(range(channels), range(kh), range(kw)):
        result[:, :, (i * kw + j) * channels + c] = cols[:, (c * kh + i) * kw + j, :]
    return result


def random_array(rng, shape, dtype):
    """Random data of any supported dtype, covering the full range for integers."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
