"""fastconv's own float32 GEMM (f32_gemm_12x32_avx512.h) and the `gemm` dispatch every
kernel uses, against NumPy's float64 product: every shape class the blocking has (tiles of
32 and 16 columns, a narrow last tile, short slivers of A, depth blocks of KC, column
blocks of NC), A and B as stored or transposed, beta 0 and 1, and nothing written outside
the product (docs/performance.md#own-gemm)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import _engine

_conv = _engine._conv
KC, NC = 256, 512  # the header's depth and column blocks

needs_own = pytest.mark.skipif(not _conv.OWN_GEMM, reason="no AVX-512 build on this CPU")


def run(m, n, k, trans_a, trans_b, beta, own, seed=0, pad=3):
    """The product through _conv.gemm_f32 on buffers wider than the operands (leading
    dimensions > sizes), and the float64 oracle; C's cells outside m×n hold NaN."""
    rng = np.random.default_rng(seed)
    a_rows, a_cols = (k, m) if trans_a else (m, k)
    b_rows, b_cols = (n, k) if trans_b else (k, n)
    a = rng.standard_normal((a_rows + 1, a_cols + pad)).astype(np.float32)
    b = rng.standard_normal((b_rows + 1, b_cols + pad)).astype(np.float32)
    c = np.full((m + 1, n + pad), np.nan, np.float32)
    c[:m, :n] = rng.standard_normal((m, n)).astype(np.float32)
    op_a = a[:a_rows, :a_cols].astype(np.float64)
    op_b = b[:b_rows, :b_cols].astype(np.float64)
    expected = (op_a.T if trans_a else op_a) @ (op_b.T if trans_b else op_b)
    if beta:
        expected += c[:m, :n]
    _conv.gemm_f32(trans_a, trans_b, m, n, k, a, b, c, beta, own)
    return c, expected


def check(m, n, k, trans_a, trans_b, beta, own, seed=0):
    c, expected = run(m, n, k, trans_a, trans_b, beta, own, seed)
    tolerance = 1e-5 * (k + 1) * 4
    np.testing.assert_allclose(c[:m, :n], expected, rtol=0, atol=tolerance)
    assert np.isnan(c[m:]).all() and np.isnan(c[:, n:]).all(), "written outside the product"


SHAPES = [
    (12, 32, 7),             # one full tile
    (13, 33, 5),             # a short sliver and a narrow tile
    (4, 16, 300),            # a 16-column tile, two depth blocks
    (8, 48, 1),              # 32 + 16 columns, depth 1
    (1, 1, 1),
    (5, 17, 2 * KC + 3),     # three depth blocks
    (30, NC + 40, 20),       # two column blocks, the second with a narrow tile
    (70, 2 * NC + 16, 33),   # three column blocks
    (25, 8 * 32, 64),        # A packed (8 tiles in a block)
    (11, 9 * 32 + 5, 300),   # packed, narrow tile, two depth blocks
    (100, 15, 9),            # fewer columns than one vector
]


@needs_own
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [0, 1])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_own_gemm_matches_numpy(m, n, k, trans_a, trans_b, beta):
    check(m, n, k, trans_a, trans_b, beta, own=True)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", SHAPES[:6])
def test_dispatching_gemm_matches_numpy(m, n, k, trans_a, trans_b):
    check(m, n, k, trans_a, trans_b, 1, own=False)


@needs_own
@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 120), k=st.integers(1, 300),
       trans_a=st.booleans(), trans_b=st.booleans(), beta=st.sampled_from([0, 1]),
       seed=st.integers(0, 2**16))
def test_own_gemm_any_shape(m, n, k, trans_a, trans_b, beta, seed):
    check(m, n, k, trans_a, trans_b, beta, own=True, seed=seed)


@needs_own
def test_own_gemm_sums_depth_in_order():
    """The sums run k = 0, 1, 2, ... whatever the blocking: the product of rows [0, 12) is
    bit-identical computed alone or inside a taller product (row blocks never change an
    output's arithmetic), which is what thread-count bit-identity of the convolutions needs."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((37, 700)).astype(np.float32)
    b = rng.standard_normal((700, 90)).astype(np.float32)
    tall = np.zeros((37, 90), np.float32)
    alone = np.zeros((12, 90), np.float32)
    _conv.gemm_f32(False, False, 37, 90, 700, a, b, tall, 0, True)
    _conv.gemm_f32(False, False, 12, 90, 700, np.ascontiguousarray(a[:12]), b, alone, 0, True)
    assert np.array_equal(tall[:12], alone)


@needs_own
def test_own_gemm_rule():
    """Where `gemm` takes fastconv's own GEMM (docs/performance.md#own-gemm): columns a
    multiple of 16 or at least 256 (from 128 with enough rows and depth); not a deep, wide B
    streamed by few rows; A·Bᵀ from 64 rows with such columns, or from depth 1024 whatever
    the shape."""
    pays = _conv.own_gemm_pays
    assert pays(64, 128, 64, False) and pays(392, 256, 576, False)
    assert not pays(64, 100, 64, False)        # a narrow tile, few columns
    assert pays(300, 300, 64, False)           # narrow, but many columns
    assert pays(64, 196, 256, False) and pays(64, 169, 576, False)  # ... or enough work
    assert not pays(32, 196, 288, False) and not pays(512, 98, 1024, False)
    assert not pays(256, 196, 1024, False) and pays(128, 196, 1024, False)
    assert not pays(64, 3136, 256, False)      # few rows, deep, several column blocks
    assert pays(64, 392, 256, False)           # ... one block: fine
    assert pays(64, 3136, 128, False)          # ... shallow: fine
    assert pays(64, 576, 64, True) and not pays(32, 576, 64, True)
    assert not pays(64, 100, 512, True)        # A·Bᵀ: narrow columns, shallow
    assert pays(24, 27, 1024, True)            # ... deep: any shape
    # B's rows 4 KB-multiples apart: sgemm (it packs B) from 96 rows of A
    assert not pays(392, 2048, 512, False) and not pays(392, 512, 512, False, 1024)
    assert pays(392, 2064, 512, False) and pays(49, 512, 512, False, 2048)
    assert pays(392, 64, 1024, True, 1024)     # A·Bᵀ copies Bᵀ: no aliasing
