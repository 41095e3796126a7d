/* Register-blocked 3×3 depthwise loops (multiplier 1): NHWC rows 16 channels at a time, and
   the NCHW weight gradient 16 columns at a time (at the end of this file).

   For one block of 16 channels the nine taps' weights (forward) or the nine taps' gradient
   sums (weight gradient) stay in AVX-512 registers while the loop walks along the output
   row, so each output pixel costs nine vector loads and nine fused multiply-adds, with no
   accumulator traffic through memory. `rows[i]` points at image row h_im of kernel row i
   (all three inside the image); `w_first` is the input column of output column ow_lo's
   first tap (inside the image, as are all taps of columns [ow_lo, ow_hi)).

   forward:      out[ow, c] = bias[c] + Σ_ij w[i, j, c]·x_i[ow·sw + w_first' + j·dw, c], the
                 terms added in (i, j) order (the order of the scalar loops);
   weight_grad:  taps[i, j, c] += Σ_ow grad[ow, c]·x_i[...] (each tap's sum over the row in
                 a register, then added);
   input_grad:   below (stride 1; there `rows` are output-gradient rows).

   Only AVX-512 builds define FASTCONV_DEPTHWISE_3X3 as 1 (18 live vectors need 32
   registers); elsewhere the Cython loops run, and these functions, never called, are
   empty. */
#ifndef FASTCONV_DEPTHWISE_3X3_H
#define FASTCONV_DEPTHWISE_3X3_H

#include "simd.h"

#ifdef __AVX512F__
#define FASTCONV_DEPTHWISE_3X3 1
#else
#define FASTCONV_DEPTHWISE_3X3 0
#endif

#if FASTCONV_DEPTHWISE_3X3
/* Stride 1, dilation 1: four output pixels at a time, so the three rows' six input columns
   are loaded once for the four pixels' 36 multiply-adds (instead of 36 loads), and the
   four sums are independent chains. Returns the first column left. */
static inline long fastconv_dw3x3_nhwc_forward_quads(const float* const* rows,
                                                     const fastconv_f32x16* w,
                                                     fastconv_f32x16 b, float* out,
                                                     long channels, long c0, long ow_lo,
                                                     long ow_hi, long w_first) {
    long ow;
    int i, j, p;
    for (ow = ow_lo; ow + 4 <= ow_hi; ow += 4) {
        fastconv_f32x16 total[4] = {b, b, b, b}, x[6];
        for (i = 0; i < 3; ++i) {
            const float* row = rows[i] + (w_first + ow) * channels + c0;
            for (p = 0; p < 6; ++p)
                x[p] = fastconv_load(row + p * channels);
            for (j = 0; j < 3; ++j)
                for (p = 0; p < 4; ++p)
                    total[p] = total[p] + w[i * 3 + j] * x[p + j];
        }
        for (p = 0; p < 4; ++p)
            fastconv_store(out + (ow + p) * channels + c0, total[p]);
    }
    return ow;
}

/* One edge pixel: the taps that read padding (a NULL row, a column outside [0, width))
   are skipped, the others added in (i, j) order. */
static inline fastconv_f32x16 fastconv_dw3x3_nhwc_edge_pixel(const float* const* rows,
                                                             const fastconv_f32x16* w,
                                                             fastconv_f32x16 total,
                                                             long channels, long c0,
                                                             long column, long dilation_w,
                                                             long width) {
    int i, j;
    for (i = 0; i < 3; ++i) {
        if (!rows[i])
            continue;
        for (j = 0; j < 3; ++j) {
            long w_im = column + j * dilation_w;
            if (w_im >= 0 && w_im < width)
                total = total + w[i * 3 + j] * fastconv_load(rows[i] + w_im * channels + c0);
        }
    }
    return total;
}
#endif

/* One output row, every column: `rows[i]` is the image row of kernel row i, NULL where it
   is padding; [ow_lo, ow_hi) are the columns whose taps are all inside the image, and
   w_first the input column of column 0's first tap. Every pixel adds bias, then its taps
   inside the image in (i, j) order (the order of the scalar loops). */
static inline void fastconv_dw3x3_nhwc_forward(const float* const* rows, const float* weight,
                                               const float* bias, float* out, long channels,
                                               long out_w, long ow_lo, long ow_hi,
                                               long w_first, long stride_w, long dilation_w,
                                               long width) {
#if FASTCONV_DEPTHWISE_3X3
    const long step = dilation_w * channels;
    const int full_rows = rows[0] && rows[1] && rows[2];
    long c0, ow, lo = full_rows ? ow_lo : out_w, hi = full_rows && ow_hi > ow_lo ? ow_hi : lo;
    int i, j, t;
    for (c0 = 0; c0 < channels; c0 += FASTCONV_LANES) {
        fastconv_f32x16 w[9], b = {0}, total;
        for (t = 0; t < 9; ++t)
            w[t] = fastconv_load(weight + t * channels + c0);
        if (bias)
            b = fastconv_load(bias + c0);
        for (ow = 0; ow < out_w; ++ow) {
            if (ow == lo) {  /* the interior */
                if (stride_w == 1 && dilation_w == 1)
                    ow = fastconv_dw3x3_nhwc_forward_quads(rows, w, b, out, channels, c0, lo,
                                                           hi, w_first);
                for (; ow < hi; ++ow) {
                    const long column = w_first + ow * stride_w;
                    total = b;
                    for (i = 0; i < 3; ++i)
                        for (j = 0; j < 3; ++j)
                            total = total + w[i * 3 + j]
                                            * fastconv_load(rows[i] + column * channels + c0
                                                            + j * step);
                    fastconv_store(out + ow * channels + c0, total);
                }
                if (ow >= out_w)
                    break;
            }
            total = fastconv_dw3x3_nhwc_edge_pixel(rows, w, b, channels, c0,
                                                   w_first + ow * stride_w, dilation_w, width);
            fastconv_store(out + ow * channels + c0, total);
        }
    }
#endif
}

/* Weight gradient of one output row, every column: rows, [ow_lo, ow_hi) and w_first as for
   the forward row; each tap's sum over the row (taps inside the image) in a register, then
   added into taps. */
static inline void fastconv_dw3x3_nhwc_weight_grad(const float* const* rows, const float* grad,
                                                   float* taps, long channels, long out_w,
                                                   long ow_lo, long ow_hi, long w_first,
                                                   long stride_w, long dilation_w,
                                                   long width) {
#if FASTCONV_DEPTHWISE_3X3
    const long step = dilation_w * channels;
    const int full_rows = rows[0] && rows[1] && rows[2];
    long c0, ow, lo = full_rows ? ow_lo : out_w, hi = full_rows && ow_hi > ow_lo ? ow_hi : lo;
    int i, j, t;
    for (c0 = 0; c0 < channels; c0 += FASTCONV_LANES) {
        fastconv_f32x16 acc[9], g, sum;
        for (t = 0; t < 9; ++t)
            acc[t] = (fastconv_f32x16){0};
        for (ow = 0; ow < out_w; ++ow) {
            const long column = w_first + ow * stride_w;
            g = fastconv_load(grad + ow * channels + c0);
            if (ow >= lo && ow < hi) {
                for (i = 0; i < 3; ++i)
                    for (j = 0; j < 3; ++j)
                        acc[i * 3 + j] += g * fastconv_load(rows[i] + column * channels + c0
                                                            + j * step);
                continue;
            }
            for (i = 0; i < 3; ++i) {
                if (!rows[i])
                    continue;
                for (j = 0; j < 3; ++j) {
                    const long w_im = column + j * dilation_w;
                    if (w_im >= 0 && w_im < width)
                        acc[i * 3 + j] += g * fastconv_load(rows[i] + w_im * channels + c0);
                }
            }
        }
        for (t = 0; t < 9; ++t) {
            sum = fastconv_load(taps + t * channels + c0) + acc[t];
            fastconv_store(taps + t * channels + c0, sum);
        }
    }
#endif
}

/* Input gradient of one input row, stride_w 1, every column: grad_x[w, c] =
   Σ_i Σ_{j = 2, 1, 0} w[i, j, c]·g_i[w + left − j·dw, c] over the output-gradient rows
   `rows[i]` of kernel row i (NULL: none reads this row) and the output columns inside
   [0, out_w), from 0, in that order (the order of the scalar scatter: kernel rows, then
   output columns ascending); [w_lo, w_hi) are the columns all three taps reach. */
static inline void fastconv_dw3x3_nhwc_input_grad(const float* const* rows, const float* weight,
                                                  float* out, long channels, long width,
                                                  long out_w, long w_lo, long w_hi, long left,
                                                  long dilation_w) {
#if FASTCONV_DEPTHWISE_3X3
    const long step = dilation_w * channels;
    const int full_rows = rows[0] && rows[1] && rows[2];
    long c0, w, lo = full_rows ? w_lo : width, hi = full_rows && w_hi > w_lo ? w_hi : lo;
    int i, j, t;
    for (c0 = 0; c0 < channels; c0 += FASTCONV_LANES) {
        fastconv_f32x16 k[9], total;
        for (t = 0; t < 9; ++t)
            k[t] = fastconv_load(weight + t * channels + c0);
        for (w = 0; w < width; ++w) {
            total = (fastconv_f32x16){0};
            if (w >= lo && w < hi) {
                for (i = 0; i < 3; ++i)
                    for (j = 2; j >= 0; --j)
                        total = total + k[i * 3 + j]
                                        * fastconv_load(rows[i] + (w + left) * channels + c0
                                                        - j * step);
            } else {
                for (i = 0; i < 3; ++i) {
                    if (!rows[i])
                        continue;
                    for (j = 2; j >= 0; --j) {
                        const long ow = w + left - j * dilation_w;
                        if (ow >= 0 && ow < out_w)
                            total = total + k[i * 3 + j]
                                            * fastconv_load(rows[i] + ow * channels + c0);
                    }
                }
            }
            fastconv_store(out + w * channels + c0, total);
        }
    }
#endif
}

/* NCHW weight gradient of one plane, stride_w 1: taps[i·3 + j] += Σ_oh Σ_ow g[oh, ow]·
   x[oh·sh − top + i·dh, ow − left + j·dw] over output rows [oh_lo, oh_hi) and columns
   [ow_lo, ow_hi) whose nine taps are all inside the plane: each tap's sum in a register of
   16 columns (and a scalar for the last columns of a row), added into taps at the end. */
static inline void fastconv_dw3x3_nchw_weight_grad(const float* grad, const float* plane,
                                                   float* taps, long out_w, long width,
                                                   long oh_lo, long oh_hi, long ow_lo,
                                                   long ow_hi, long stride_h, long top,
                                                   long left, long dilation_h,
                                                   long dilation_w) {
#if FASTCONV_DEPTHWISE_3X3
    fastconv_f32x16 acc[9], g;
    float tail[9] = {0}, lanes[FASTCONV_LANES];
    long oh, ow, i, j, t, lane;
    for (t = 0; t < 9; ++t)
        acc[t] = (fastconv_f32x16){0};
    for (oh = oh_lo; oh < oh_hi; ++oh) {
        const float* g_row = grad + oh * out_w;
        const float* x[3];
        for (i = 0; i < 3; ++i)
            x[i] = plane + (oh * stride_h - top + i * dilation_h) * width - left;
        for (ow = ow_lo; ow + FASTCONV_LANES <= ow_hi; ow += FASTCONV_LANES) {
            g = fastconv_load(g_row + ow);
            for (i = 0; i < 3; ++i)
                for (j = 0; j < 3; ++j)
                    acc[i * 3 + j] += g * fastconv_load(x[i] + ow + j * dilation_w);
        }
        for (; ow < ow_hi; ++ow)
            for (i = 0; i < 3; ++i)
                for (j = 0; j < 3; ++j)
                    tail[i * 3 + j] += g_row[ow] * x[i][ow + j * dilation_w];
    }
    for (t = 0; t < 9; ++t) {
        float total = tail[t];
        fastconv_store(lanes, acc[t]);
        for (lane = 0; lane < FASTCONV_LANES; ++lane)
            total += lanes[lane];
        taps[t] += total;
    }
#endif
}

#endif
