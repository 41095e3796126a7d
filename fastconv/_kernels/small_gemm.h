/* A register-blocked float32 GEMM block for convolutions with few output channels.

   c[r*ldc + t] = row_bias[r] + col_bias[t] + sum_k a[r*lda + k] * b_rows[k][offset + t]
                                                           for r < 16, t < cols
   (either bias may be NULL: none).

   Sixteen rows of sixteen-float accumulators stay in AVX-512 registers while k runs, and
   each B row is reached through a pointer: a convolution points it straight into the
   image where the window is inside it (no im2col copy) and at a small gathered buffer
   elsewhere. Nothing is packed, which is what makes BLAS slow when a product has few
   rows. The sums run k = 0, 1, 2, ... for every output, whatever the tiling.

   Only AVX-512 builds define FASTCONV_SMALL_GEMM as 1: narrower registers cannot hold the
   accumulators, and there the convolution uses BLAS. This is C rather than Cython because
   the accumulators must be vector variables (GCC vector extensions) for the compiler to
   keep them in registers. */
#ifndef FASTCONV_SMALL_GEMM_H
#define FASTCONV_SMALL_GEMM_H

#include <string.h>

#define FASTCONV_SMALL_GEMM_ROWS 16
#define FASTCONV_SMALL_GEMM_COLS 16

#ifdef __AVX512F__
#define FASTCONV_SMALL_GEMM 1

typedef float fastconv_f32x16 __attribute__((vector_size(64)));

static inline fastconv_f32x16 fastconv_load16(const float* p) {
    fastconv_f32x16 v;
    memcpy(&v, p, sizeof v);  /* an unaligned vector load */
    return v;
}

static inline void fastconv_small_gemm_block(int depth, const float* a, int lda,
                                             const float* const* b_rows, long offset,
                                             const float* row_bias, const float* col_bias,
                                             float* c, int ldc, int cols) {
    fastconv_f32x16 acc[FASTCONV_SMALL_GEMM_ROWS];
    float partial[FASTCONV_SMALL_GEMM_COLS];
    int r, k;
    fastconv_f32x16 start = {0};
    if (col_bias)
        start = fastconv_load16(col_bias);
    for (r = 0; r < FASTCONV_SMALL_GEMM_ROWS; ++r)
        acc[r] = start + (row_bias ? row_bias[r] : 0.0f);
    for (k = 0; k < depth; ++k) {
        fastconv_f32x16 b = fastconv_load16(b_rows[k] + offset);
        for (r = 0; r < FASTCONV_SMALL_GEMM_ROWS; ++r)
            acc[r] += a[r * lda + k] * b;
    }
    for (r = 0; r < FASTCONV_SMALL_GEMM_ROWS; ++r) {
        if (cols == FASTCONV_SMALL_GEMM_COLS) {
            memcpy(c + (long)r * ldc, &acc[r], sizeof acc[r]);
        } else {
            memcpy(partial, &acc[r], sizeof partial);
            memcpy(c + (long)r * ldc, partial, (size_t)cols * sizeof(float));
        }
    }
}

#else
#define FASTCONV_SMALL_GEMM 0

static inline void fastconv_small_gemm_block(int depth, const float* a, int lda,
                                             const float* const* b_rows, long offset,
                                             const float* row_bias, const float* col_bias,
                                             float* c, int ldc, int cols) {
    /* Never called: plans use the small GEMM only where FASTCONV_SMALL_GEMM is 1. */
    (void)depth; (void)a; (void)lda; (void)b_rows; (void)offset; (void)row_bias;
    (void)col_bias; (void)c; (void)ldc;
    (void)cols;
}
#endif

#endif
