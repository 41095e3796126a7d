/* A register-blocked float32 GEMM block for the direct convolution paths.

   c[r*ldc + t] = row_bias[r] + col_bias[t] + sum_k panel[k*PANEL_ROWS + r] * b_rows[k][offset + t]
                                                           for r < rows, t < cols
   (either bias may be NULL: none; rows <= PANEL_ROWS, cols <= COLS).

   The left operand is a packed panel: PANEL_ROWS rows stored column by column, so each k
   reads one run of consecutive floats (rows past `rows` are zero padding, computed and not
   stored). Each right-hand row is reached through a pointer: a convolution points it
   straight into the image where the window is inside it (no im2col copy), at a small
   gathered buffer elsewhere, or at a row of the HWIO weight. It reads 16 floats from the
   pointer when cols <= 16, else 32.

   Up to 12 rows × 2 vectors of 16 accumulators stay in AVX-512 registers while k runs: per
   k, 2 vector loads and 12 broadcasts feed 24 fused multiply-adds, so the loop is bound by
   the multiply-adds, not by loads (docs/performance.md#panel_rows). The sums run k = 0, 1, 2, ... for every output, whatever the
   tiling, so results do not depend on how the work is cut.

   Only AVX-512 builds define FASTCONV_SMALL_GEMM as 1: narrower registers cannot hold the
   accumulators, and there the convolution uses BLAS. This is C rather than Cython because
   the accumulators must be vector variables (GCC vector extensions) for the compiler to
   keep them in registers. */
#ifndef FASTCONV_SMALL_GEMM_H
#define FASTCONV_SMALL_GEMM_H

#include <string.h>

#include "simd.h"

#define FASTCONV_PANEL_ROWS 12
#define FASTCONV_SMALL_GEMM_COLS (2 * FASTCONV_LANES)

#ifdef __AVX512F__
#define FASTCONV_SMALL_GEMM 1

/* The block for R rows and V vectors (R, V constants after inlining, so the accumulators
   are registers); stores rows < `rows` and columns < `cols`. The left operand is the packed
   panel, or, when a_rows is not NULL, element (r, k) at a_rows[k] + a_offset + r·a_stride. */
static inline __attribute__((always_inline)) void fastconv_block(
        const int R, const int V, int depth, const float* panel,
        const float* const* a_rows, long a_offset, long a_stride,
        const float* const* b_rows, long offset, const float* row_bias,
        const float* col_bias, float* c, long ldc, int rows, int cols) {
    fastconv_f32x16 acc[FASTCONV_PANEL_ROWS][2];
    fastconv_f32x16 start[2] = {{0}, {0}};
    fastconv_f32x16 b[2];
    float partial[FASTCONV_LANES];
    int r, v, k, count;
    for (v = 0; v < V; ++v)
        if (col_bias)
            start[v] = fastconv_load(col_bias + FASTCONV_LANES * v);
    for (r = 0; r < R; ++r)
        for (v = 0; v < V; ++v)
            acc[r][v] = start[v] + (row_bias && r < rows ? row_bias[r] : 0.0f);
    for (k = 0; k < depth; ++k) {
        const float* b_row = b_rows[k] + offset;
        for (v = 0; v < V; ++v)
            b[v] = fastconv_load(b_row + FASTCONV_LANES * v);
        if (a_rows) {
            const float* a = a_rows[k] + a_offset;
            for (r = 0; r < R; ++r)
                for (v = 0; v < V; ++v)
                    acc[r][v] += a[r * a_stride] * b[v];
        } else {
            const float* a = panel + (long)k * FASTCONV_PANEL_ROWS;
            for (r = 0; r < R; ++r)
                for (v = 0; v < V; ++v)
                    acc[r][v] += a[r] * b[v];
        }
    }
    /* memcpy from the accumulators in place: storing them through fastconv_store (by
       value) measured slower on the NHWC direct path. */
    for (r = 0; r < R && r < rows; ++r) {
        for (v = 0; v < V; ++v) {
            count = cols - FASTCONV_LANES * v;
            if (count >= FASTCONV_LANES) {
                memcpy(c + r * ldc + FASTCONV_LANES * v, &acc[r][v], sizeof acc[r][v]);
            } else if (count > 0) {
                memcpy(partial, &acc[r][v], sizeof partial);
                memcpy(c + r * ldc + FASTCONV_LANES * v, partial, (size_t)count * sizeof(float));
            }
        }
    }
}

/* The fewest rows (4, 8 or 12) that cover the block, for V vectors. */
static inline __attribute__((always_inline)) void fastconv_block_rows_of(
        const int V, int depth, const float* panel, const float* const* a_rows,
        long a_offset, long a_stride, const float* const* b_rows, long offset,
        const float* row_bias, const float* col_bias, float* c, long ldc, int rows,
        int cols) {
    if (rows > 8)
        fastconv_block(12, V, depth, panel, a_rows, a_offset, a_stride, b_rows, offset,
                       row_bias, col_bias, c, ldc, rows, cols);
    else if (rows > 4)
        fastconv_block(8, V, depth, panel, a_rows, a_offset, a_stride, b_rows, offset,
                       row_bias, col_bias, c, ldc, rows, cols);
    else
        fastconv_block(4, V, depth, panel, a_rows, a_offset, a_stride, b_rows, offset,
                       row_bias, col_bias, c, ldc, rows, cols);
}

/* The fewest vectors (1 or 2) that cover the block. */
static inline __attribute__((always_inline)) void fastconv_block_any(
        int depth, const float* panel, const float* const* a_rows, long a_offset,
        long a_stride, const float* const* b_rows, long offset, const float* row_bias,
        const float* col_bias, float* c, long ldc, int rows, int cols) {
    if (cols > FASTCONV_LANES)
        fastconv_block_rows_of(2, depth, panel, a_rows, a_offset, a_stride, b_rows, offset,
                               row_bias, col_bias, c, ldc, rows, cols);
    else
        fastconv_block_rows_of(1, depth, panel, a_rows, a_offset, a_stride, b_rows, offset,
                               row_bias, col_bias, c, ldc, rows, cols);
}

#else
#define FASTCONV_SMALL_GEMM 0
#endif

/* The entry points: empty where FASTCONV_SMALL_GEMM is 0 (plans use the small GEMM only
   where it is 1). */
static inline void fastconv_small_gemm_block(int depth, const float* panel, int rows,
                                             const float* const* b_rows, long offset,
                                             const float* row_bias, const float* col_bias,
                                             float* c, long ldc, int cols) {
#if FASTCONV_SMALL_GEMM
    fastconv_block_any(depth, panel, (const float* const*)0, 0, 0, b_rows, offset,
                       row_bias, col_bias, c, ldc, rows, cols);
#endif
}

/* The same block with the left operand read in place: element (r, k) at
   a_rows[k] + a_offset + r·a_stride (an NHWC image: rows are output positions). */
static inline void fastconv_small_gemm_block_rows(int depth, const float* const* a_rows,
                                                  long a_offset, long a_stride, int rows,
                                                  const float* const* b_rows, long offset,
                                                  const float* row_bias,
                                                  const float* col_bias, float* c, long ldc,
                                                  int cols) {
#if FASTCONV_SMALL_GEMM
    fastconv_block_any(depth, (const float*)0, a_rows, a_offset, a_stride, b_rows, offset,
                       row_bias, col_bias, c, ldc, rows, cols);
#endif
}

#endif
