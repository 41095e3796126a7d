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

/* x[i] = the first of FASTCONV_LANES channels from c0 at column `column` of rows[i]. */
static inline void fastconv_dw_window(const float* const* rows, long column, long channels,
                                      long c0, const float** x) {
    int i;
    for (i = 0; i < 3; ++i)
        x[i] = rows[i] + column * channels + c0;
}

static inline void fastconv_dw3x3_nhwc_forward(const float* const* rows, const float* weight,
                                               const float* bias, float* out, long channels,
                                               long ow_lo, long ow_hi, long w_first,
                                               long stride_w, long dilation_w) {
#if FASTCONV_DEPTHWISE_3X3
    const long step = dilation_w * channels;
    const float* x[3];
    long c0, ow;
    int i, j, t;
    for (c0 = 0; c0 < channels; c0 += FASTCONV_LANES) {
        fastconv_f32x16 w[9], b = {0}, total;
        for (t = 0; t < 9; ++t)
            w[t] = fastconv_load(weight + t * channels + c0);
        if (bias)
            b = fastconv_load(bias + c0);
        for (ow = ow_lo; ow < ow_hi; ++ow) {
            fastconv_dw_window(rows, w_first + (ow - ow_lo) * stride_w, channels, c0, x);
            total = b;
            for (i = 0; i < 3; ++i)
                for (j = 0; j < 3; ++j)
                    total = total + w[i * 3 + j] * fastconv_load(x[i] + j * step);
            fastconv_store(out + ow * channels + c0, total);
        }
    }
#endif
}

static inline void fastconv_dw3x3_nhwc_weight_grad(const float* const* rows, const float* grad,
                                                   float* taps, long channels, long ow_lo,
                                                   long ow_hi, long w_first, long stride_w,
                                                   long dilation_w) {
#if FASTCONV_DEPTHWISE_3X3
    const long step = dilation_w * channels;
    const float* x[3];
    long c0, ow;
    int i, j, t;
    for (c0 = 0; c0 < channels; c0 += FASTCONV_LANES) {
        fastconv_f32x16 acc[9], g, sum;
        for (t = 0; t < 9; ++t)
            acc[t] = (fastconv_f32x16){0};
        for (ow = ow_lo; ow < ow_hi; ++ow) {
            fastconv_dw_window(rows, w_first + (ow - ow_lo) * stride_w, channels, c0, x);
            g = fastconv_load(grad + ow * channels + c0);
            for (i = 0; i < 3; ++i)
                for (j = 0; j < 3; ++j)
                    acc[i * 3 + j] += g * fastconv_load(x[i] + j * step);
        }
        for (t = 0; t < 9; ++t) {
            sum = fastconv_load(taps + t * channels + c0) + acc[t];
            fastconv_store(taps + t * channels + c0, sum);
        }
    }
#endif
}

/* Input gradient, stride 1: grad_x[w, c] = Σ_i Σ_{j = 2, 1, 0} w[i, j, c]·g_i[w + left − j·dw, c]
   from 0 (the order of the scalar scatter: output columns ascending), for the columns
   [w_lo, w_hi) that all three taps reach, `rows[i]` the output-gradient row of kernel row i. */
static inline void fastconv_dw3x3_nhwc_input_grad(const float* const* rows, const float* weight,
                                                  float* out, long channels, long w_lo,
                                                  long w_hi, long left, long dilation_w) {
#if FASTCONV_DEPTHWISE_3X3
    const long step = dilation_w * channels;
    const float* g[3];
    long c0, w;
    int i, j, t;
    for (c0 = 0; c0 < channels; c0 += FASTCONV_LANES) {
        fastconv_f32x16 k[9], total;
        for (t = 0; t < 9; ++t)
            k[t] = fastconv_load(weight + t * channels + c0);
        for (w = w_lo; w < w_hi; ++w) {
            fastconv_dw_window(rows, w + left, channels, c0, g);
            total = (fastconv_f32x16){0};
            for (i = 0; i < 3; ++i)
                for (j = 2; j >= 0; --j)
                    total = total + k[i * 3 + j] * fastconv_load(g[i] - j * step);
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
