/* Matrix transposes for the layout changes of the Winograd kernel (NCHW <-> channels-last).

   dst[j·dst_stride + i] = src[i·src_stride + j] for i < rows, j < cols. In AVX-512 builds
   float32 runs 16×16 blocks in registers: 16 row loads, four stages of two-source
   shuffles (stage d swaps the off-diagonal d×d sub-blocks of every 2d×2d block, so after
   d = 8, 4, 2, 1 each block is transposed), 16 row stores. The rest, and every other build
   and type, is the plain loop: a strided store per element, about 4× slower. */
#ifndef FASTCONV_TRANSPOSE_H
#define FASTCONV_TRANSPOSE_H

#include "simd.h"

#ifdef __AVX512F__
typedef int fastconv_i32x16 __attribute__((vector_size(FASTCONV_LANES * sizeof(int))));

/* Rows i and i + d (i without bit d): row i keeps its columns without bit d and takes row
   i + d's columns k − d for k with bit d; row i + d the other halves (k + d and k). */
static inline void fastconv_transpose_stage(fastconv_f32x16* r, int d, fastconv_i32x16 low,
                                            fastconv_i32x16 high) {
    for (int i = 0; i < FASTCONV_LANES; i++) {
        if (i & d) continue;
        fastconv_f32x16 a = r[i], b = r[i + d];
        r[i] = __builtin_shuffle(a, b, low);
        r[i + d] = __builtin_shuffle(a, b, high);
    }
}

/* One 16×16 block. */
static inline void fastconv_transpose16_f32(const float* src, long src_stride, float* dst,
                                            long dst_stride) {
    const fastconv_i32x16 low8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const fastconv_i32x16 high8 = {8, 9, 10, 11, 12, 13, 14, 15,
                                   24, 25, 26, 27, 28, 29, 30, 31};
    const fastconv_i32x16 low4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27};
    const fastconv_i32x16 high4 = {4, 5, 6, 7, 20, 21, 22, 23,
                                   12, 13, 14, 15, 28, 29, 30, 31};
    const fastconv_i32x16 low2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    const fastconv_i32x16 high2 = {2, 3, 18, 19, 6, 7, 22, 23,
                                   10, 11, 26, 27, 14, 15, 30, 31};
    const fastconv_i32x16 low1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30};
    const fastconv_i32x16 high1 = {1, 17, 3, 19, 5, 21, 7, 23,
                                   9, 25, 11, 27, 13, 29, 15, 31};
    fastconv_f32x16 r[FASTCONV_LANES];
    for (int i = 0; i < FASTCONV_LANES; i++)
        r[i] = fastconv_load(src + i * src_stride);
    fastconv_transpose_stage(r, 8, low8, high8);
    fastconv_transpose_stage(r, 4, low4, high4);
    fastconv_transpose_stage(r, 2, low2, high2);
    fastconv_transpose_stage(r, 1, low1, high1);
    for (int i = 0; i < FASTCONV_LANES; i++)
        fastconv_store(dst + i * dst_stride, r[i]);
}
#endif

/* dst[j·dst_stride + i] = src[i·src_stride + j] for i < rows, j < cols (float32). */
static inline void fastconv_transpose_f32(const float* src, long src_stride, float* dst,
                                          long dst_stride, long rows, long cols) {
    long i0 = 0, j0 = 0;
#ifdef __AVX512F__
    for (; i0 + FASTCONV_LANES <= rows; i0 += FASTCONV_LANES)
        for (long j = 0; j + FASTCONV_LANES <= cols; j += FASTCONV_LANES)
            fastconv_transpose16_f32(src + i0 * src_stride + j, src_stride,
                                     dst + j * dst_stride + i0, dst_stride);
    j0 = cols / FASTCONV_LANES * FASTCONV_LANES;
#endif
    /* Rows below i0 have columns [0, j0) done; rows from i0 have none. */
    for (long i = 0; i < rows; i++)
        for (long j = i < i0 ? j0 : 0; j < cols; j++)
            dst[j * dst_stride + i] = src[i * src_stride + j];
}

/* The same for float64, by the plain loop. */
static inline void fastconv_transpose_f64(const double* src, long src_stride, double* dst,
                                          long dst_stride, long rows, long cols) {
    for (long i = 0; i < rows; i++)
        for (long j = 0; j < cols; j++)
            dst[j * dst_stride + i] = src[i * src_stride + j];
}

#endif
