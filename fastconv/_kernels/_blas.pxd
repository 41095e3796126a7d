# Row-major GEMM over scipy's BLAS (no BLAS library is linked: scipy exports the symbols),
# or, for float32 in AVX-512 builds, fastconv's own where it measured faster.
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef extern from "f32_gemm_12x32_avx512.h" nogil:
    # 1 where the functions below are compiled (AVX-512 builds).
    int FASTCONV_F32_GEMM
    # Whether it measured faster than sgemm for an m×n product, B as stored (rows ldb
    # apart) or transposed (0 where it is not compiled, in builds without AVX-512;
    # docs/performance.md#own-gemm).
    int fastconv_f32_gemm_pays(int m, int n, int depth, long ldb, int trans_b)
    # C (+)= A·B and C (+)= A·Bᵀ; A(r, k) = a[r·a_row + k·a_col].
    void fastconv_f32_gemm(int m, int n, int depth, const float* a, long a_row, long a_col,
                           const float* b, long ldb, float* c, long ldc, int accumulate)
    void fastconv_f32_gemm_nt(int m, int n, int depth, const float* a, long a_row, long a_col,
                              const float* b, long ldb, float* c, long ldc, int accumulate)
    # C = A·B with A's and C's rows gathered through pointers (n a multiple of 16).
    void fastconv_f32_gemm_gathered(int m, int n, int depth, const float* const* a_rows,
                                    long a_col, const float* b, long ldb, float* const* c_rows,
                                    long c_col)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major C(m×n) = alpha·op(A)·op(B) + beta·C, computed by BLAS as Cᵀ = op(B)ᵀ·op(A)ᵀ,
    or by fastconv_f32_gemm(_nt) (float32, alpha 1, beta 0 or 1, where it measured faster: see
    f32_gemm_12x32_avx512.h)."""
    cdef char transa = b'T' if trans_b else b'N'
    cdef char transb = b'T' if trans_a else b'N'
    if floating is float:
        if (alpha == 1 and (beta == 0 or beta == 1)
                and fastconv_f32_gemm_pays(m, n, k, ldb, trans_b)):
            if trans_b:
                fastconv_f32_gemm_nt(m, n, k, a, 1 if trans_a else lda, lda if trans_a else 1,
                                     b, ldb, c, ldc, beta == 1)
            else:
                fastconv_f32_gemm(m, n, k, a, 1 if trans_a else lda, lda if trans_a else 1, b,
                                  ldb, c, ldc, beta == 1)
            return
        sgemm(&transa, &transb, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)
