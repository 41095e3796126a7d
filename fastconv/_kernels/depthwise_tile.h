/* Depthwise rows of any kernel size on a zero-padded channels-last tile of 16 channels
   (the channel blocks of _depthwise.pyx): every window lies inside the tile, so the loops
   have no edge cases, and one vector holds a pixel's 16 channels.

   forward_row:      out[ow, c] = bias[c] + Σ_ij w[i, j, c]·tile[h_first + i·dh, ow·sw + j·dw, c],
                     the terms added in (i, j) order; FASTCONV_DW_COLUMNS output columns at a
                     time, so each weight vector loaded serves them all and their sums are
                     independent chains of fused multiply-adds; at stride 1, kernels 3, 5 or
                     7 wide load each input vector of a kernel row once (a sliding window).
   weight_grad_row:  taps[i, j, c] += Σ_ow g[ow, c]·tile[h_first + i·dh, ow·sw + j·dw, c],
                     each tap's sum over the row (columns ascending) in a register, up to
                     FASTCONV_DW_TAPS taps at a time, then added into taps.

   AVX-512 builds only (FASTCONV_DEPTHWISE_TILE 1); elsewhere the Cython row loops run and
   these functions, never called, are empty. */
#ifndef FASTCONV_DEPTHWISE_TILE_H
#define FASTCONV_DEPTHWISE_TILE_H

#include "simd.h"

#ifdef __AVX512F__
#define FASTCONV_DEPTHWISE_TILE 1
#else
#define FASTCONV_DEPTHWISE_TILE 0
#endif

#define FASTCONV_DW_COLUMNS 8
#define FASTCONV_DW_TAPS 8

#if FASTCONV_DEPTHWISE_TILE
/* `count` (a constant after inlining) output columns from ow. */
static inline __attribute__((always_inline)) void fastconv_dw_tile_columns(
        const int count, const float* tile, long tile_width, const float* taps,
        long kernel_h, long kernel_w, fastconv_f32x16 start, float* out, long ow,
        long h_first, long stride_w, long dilation_h, long dilation_w) {
    const long lanes = FASTCONV_LANES;
    fastconv_f32x16 acc[FASTCONV_DW_COLUMNS], weight;
    long i, j;
    int q;
    for (q = 0; q < count; ++q)
        acc[q] = start;
    for (i = 0; i < kernel_h; ++i) {
        const float* row = tile + (h_first + i * dilation_h) * tile_width * lanes;
        for (j = 0; j < kernel_w; ++j) {
            const float* x = row + (ow * stride_w + j * dilation_w) * lanes;
            weight = fastconv_load(taps + (i * kernel_w + j) * lanes);
            for (q = 0; q < count; ++q)
                acc[q] = acc[q] + weight * fastconv_load(x + q * stride_w * lanes);
        }
    }
    for (q = 0; q < count; ++q)
        fastconv_store(out + (ow + q) * lanes, acc[q]);
}

/* The same at stride 1 and column dilation 1 for a kernel KW wide (count and KW constants
   after inlining): each kernel row's count + KW − 1 input vectors are loaded once and
   slide under its KW taps (the same multiply-adds in the same order). */
static inline __attribute__((always_inline)) void fastconv_dw_tile_columns_slide(
        const int count, const int KW, const float* tile, long tile_width, const float* taps,
        long kernel_h, fastconv_f32x16 start, float* out, long ow, long h_first,
        long dilation_h) {
    const long lanes = FASTCONV_LANES;
    fastconv_f32x16 acc[FASTCONV_DW_COLUMNS], x[FASTCONV_DW_COLUMNS + 7], weight;
    long i;
    int q, j;
    for (q = 0; q < count; ++q)
        acc[q] = start;
    for (i = 0; i < kernel_h; ++i) {
        const float* row = tile + ((h_first + i * dilation_h) * tile_width + ow) * lanes;
        for (q = 0; q < count + KW - 1; ++q)
            x[q] = fastconv_load(row + q * lanes);
        for (j = 0; j < KW; ++j) {
            weight = fastconv_load(taps + (i * KW + j) * lanes);
            for (q = 0; q < count; ++q)
                acc[q] = acc[q] + weight * x[q + j];
        }
    }
    for (q = 0; q < count; ++q)
        fastconv_store(out + (ow + q) * lanes, acc[q]);
}

/* `count` output columns from ow: sliding windows for kernels 3, 5 or 7 wide at stride 1,
   else the general loop. */
static inline __attribute__((always_inline)) void fastconv_dw_tile_columns_any(
        const int count, const float* tile, long tile_width, const float* taps,
        long kernel_h, long kernel_w, fastconv_f32x16 start, float* out, long ow,
        long h_first, long stride_w, long dilation_h, long dilation_w) {
    if (stride_w == 1 && dilation_w == 1 && kernel_w == 3)
        fastconv_dw_tile_columns_slide(count, 3, tile, tile_width, taps, kernel_h, start, out,
                                       ow, h_first, dilation_h);
    else if (stride_w == 1 && dilation_w == 1 && kernel_w == 5)
        fastconv_dw_tile_columns_slide(count, 5, tile, tile_width, taps, kernel_h, start, out,
                                       ow, h_first, dilation_h);
    else if (stride_w == 1 && dilation_w == 1 && kernel_w == 7)
        fastconv_dw_tile_columns_slide(count, 7, tile, tile_width, taps, kernel_h, start, out,
                                       ow, h_first, dilation_h);
    else
        fastconv_dw_tile_columns(count, tile, tile_width, taps, kernel_h, kernel_w, start, out,
                                 ow, h_first, stride_w, dilation_h, dilation_w);
}

/* `count` (a constant after inlining) taps from t0 over the whole output row. */
static inline __attribute__((always_inline)) void fastconv_dw_tile_tap_sums(
        const int count, const float* tile, long tile_width, const float* grad,
        float* taps, long t0, long kernel_w, long out_w, long h_first, long stride_w,
        long dilation_h, long dilation_w) {
    const long lanes = FASTCONV_LANES;
    const float* x[FASTCONV_DW_TAPS];
    fastconv_f32x16 acc[FASTCONV_DW_TAPS], g;
    long ow;
    int q;
    for (q = 0; q < count; ++q) {
        long i = (t0 + q) / kernel_w, j = (t0 + q) % kernel_w;
        x[q] = tile + ((h_first + i * dilation_h) * tile_width + j * dilation_w) * lanes;
        acc[q] = (fastconv_f32x16){0};
    }
    for (ow = 0; ow < out_w; ++ow) {
        g = fastconv_load(grad + ow * lanes);
        for (q = 0; q < count; ++q)
            acc[q] += g * fastconv_load(x[q] + ow * stride_w * lanes);
    }
    for (q = 0; q < count; ++q)
        fastconv_store(taps + (t0 + q) * lanes,
                       fastconv_load(taps + (t0 + q) * lanes) + acc[q]);
}
#endif

/* One output row oh (h_first = oh·sh) of the forward pass; bias may be NULL (none). */
static inline void fastconv_dw_tile_forward_row(const float* tile, long tile_width,
                                                const float* taps, long kernel_h,
                                                long kernel_w, const float* bias, float* out,
                                                long out_w, long h_first, long stride_w,
                                                long dilation_h, long dilation_w) {
#if FASTCONV_DEPTHWISE_TILE
    fastconv_f32x16 start = {0};
    long ow = 0;
    if (bias)
        start = fastconv_load(bias);
    for (; ow + FASTCONV_DW_COLUMNS <= out_w; ow += FASTCONV_DW_COLUMNS)
        fastconv_dw_tile_columns_any(FASTCONV_DW_COLUMNS, tile, tile_width, taps, kernel_h,
                                     kernel_w, start, out, ow, h_first, stride_w, dilation_h,
                                     dilation_w);
    for (; ow + 4 <= out_w; ow += 4)
        fastconv_dw_tile_columns_any(4, tile, tile_width, taps, kernel_h, kernel_w, start,
                                     out, ow, h_first, stride_w, dilation_h, dilation_w);
    for (; ow < out_w; ++ow)
        fastconv_dw_tile_columns_any(1, tile, tile_width, taps, kernel_h, kernel_w, start,
                                     out, ow, h_first, stride_w, dilation_h, dilation_w);
#endif
}

/* One output row (h_first = oh·sh, grad: its output-gradient row) of the weight gradient. */
static inline void fastconv_dw_tile_weight_grad_row(const float* tile, long tile_width,
                                                    const float* grad, float* taps,
                                                    long kernel_h, long kernel_w, long out_w,
                                                    long h_first, long stride_w,
                                                    long dilation_h, long dilation_w) {
#if FASTCONV_DEPTHWISE_TILE
    const long count = kernel_h * kernel_w;
    long t0 = 0;
    for (; t0 + FASTCONV_DW_TAPS <= count; t0 += FASTCONV_DW_TAPS)
        fastconv_dw_tile_tap_sums(FASTCONV_DW_TAPS, tile, tile_width, grad, taps, t0,
                                  kernel_w, out_w, h_first, stride_w, dilation_h, dilation_w);
    for (; t0 + 4 <= count; t0 += 4)
        fastconv_dw_tile_tap_sums(4, tile, tile_width, grad, taps, t0, kernel_w, out_w,
                                  h_first, stride_w, dilation_h, dilation_w);
    for (; t0 < count; ++t0)
        fastconv_dw_tile_tap_sums(1, tile, tile_width, grad, taps, t0, kernel_w, out_w,
                                  h_first, stride_w, dilation_h, dilation_w);
#endif
}

#endif
