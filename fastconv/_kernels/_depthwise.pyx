"""Direct depthwise convolution: groups == C_in, so each output channel o reads one input
channel c = o // multiplier (multiplier = C_out / C_in). A GEMM per group would have M = 1;
these loops instead stream each output row once per kernel tap and vectorise along the row
(NCHW) or along the channels (NHWC).

Every pixel of every result is summed by one thread in a fixed order (taps i, j
ascending), so results do not depend on the thread count. Everything here trusts
fastconv.conv, which validated shapes and geometry.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from fastconv._kernels._geometry cimport (
    Geometry, input_col, input_row, output_col, output_row, source_col, source_row)
from fastconv._kernels._im2col_helpers cimport inside_cols, inside_rows, valid_range
from fastconv._kernels._layout cimport transpose
from fastconv._kernels._openmp cimport omp_get_thread_num
from fastconv._kernels._simd cimport FASTCONV_LANES


cdef extern from "depthwise_3x3.h" nogil:
    int FASTCONV_DEPTHWISE_3X3  # 1 where the register-blocked 3×3 loops are compiled
    void fastconv_dw3x3_nhwc_forward(const float* const* rows, const float* weight,
                                     const float* bias, float* out, long channels, long out_w,
                                     long ow_lo, long ow_hi, long w_first, long stride_w,
                                     long dilation_w, long width)
    void fastconv_dw3x3_nhwc_weight_grad(const float* const* rows, const float* grad,
                                         float* taps, long channels, long out_w, long ow_lo,
                                         long ow_hi, long w_first, long stride_w,
                                         long dilation_w, long width)
    void fastconv_dw3x3_nhwc_input_grad(const float* const* rows, const float* weight,
                                        float* out, long channels, long width, long out_w,
                                        long w_lo, long w_hi, long left, long dilation_w)
    void fastconv_dw3x3_nchw_weight_grad(const float* grad, const float* plane, float* taps,
                                         long out_w, long width, long oh_lo, long oh_hi,
                                         long ow_lo, long ow_hi, long stride_h, long top,
                                         long left, long dilation_h, long dilation_w)


cdef extern from "depthwise_tile.h" nogil:
    int FASTCONV_DEPTHWISE_TILE  # 1 where the any-size tile rows are compiled (AVX-512)
    void fastconv_dw_tile_forward_row(const float* tile, long tile_width, const float* taps,
                                      long kernel_h, long kernel_w, const float* bias,
                                      float* out, long out_w, long h_first, long stride_w,
                                      long dilation_h, long dilation_w)
    void fastconv_dw_tile_weight_grad_row(const float* tile, long tile_width,
                                          const float* grad, float* taps, long kernel_h,
                                          long kernel_w, long out_w, long h_first,
                                          long stride_w, long dilation_h, long dilation_w)


cdef inline void tap_rows_nhwc(const float* image, const Geometry* g, Py_ssize_t oh,
                               const float** rows) noexcept nogil:
    """rows[i] = the image row read by kernel row i of output row oh (NULL: padding)."""
    cdef Py_ssize_t i, h_im
    for i in range(3):
        h_im = input_row(g, oh, i)
        rows[i] = image + h_im * g.width * g.channels if 0 <= h_im < g.height else NULL


cdef inline bint register_forward_nhwc(const Geometry* g, Py_ssize_t multiplier) noexcept nogil:
    """Whether the forward rows run fastconv_dw3x3_nhwc_forward, padding rows and edge
    columns included: float32 AVX-512 builds, a 3×3 kernel, multiplier 1, channels a
    multiple of FASTCONV_LANES, zero padding (the register rows skip the padding; a mode's
    padding is read through the tables by the scalar loops)."""
    return (FASTCONV_DEPTHWISE_3X3 and g.kernel_h == 3 and g.kernel_w == 3
            and multiplier == 1 and g.channels % FASTCONV_LANES == 0
            and g.row_src == 0 and g.col_src == 0)


# ---------------------------------------------------------------- NCHW
cdef inline void add_tap_nchw(floating* dst, const floating* src, floating tap,
                              const Geometry* g, Py_ssize_t j, Py_ssize_t ow_begin,
                              Py_ssize_t ow_end) noexcept nogil:
    """dst[ow] += tap·src[ow·sw − left + j·dw] for ow in [ow_begin, ow_end) ∩ the columns
    whose tap j falls inside the image row `src` (with a padding mode, the others too,
    through the column table)."""
    cdef Py_ssize_t ow, lo, hi, w_src
    cdef Py_ssize_t w_offset = j * g.dilation_w - g.pad_left
    valid_range(w_offset, g.stride_w, g.width, g.out_w, &lo, &hi)
    lo = lo if lo > ow_begin else ow_begin
    hi = hi if hi < ow_end else ow_end
    if g.stride_w == 1:
        for ow in range(lo, hi):
            dst[ow] += tap * src[ow + w_offset]
    else:
        for ow in range(lo, hi):
            dst[ow] += tap * src[ow * g.stride_w + w_offset]
    if g.col_src == 0:
        return
    if lo >= hi:  # no column inside: all of [ow_begin, ow_end) reads the padding
        lo = hi = ow_end
    for ow in range(ow_begin, lo):
        w_src = source_col(g, ow * g.stride_w + w_offset)
        dst[ow] += tap * src[w_src]
    for ow in range(hi, ow_end):
        w_src = source_col(g, ow * g.stride_w + w_offset)
        dst[ow] += tap * src[w_src]


cdef inline void nine_taps_nchw(floating* dst, const floating* top_row, const floating* taps,
                                floating bias, const Geometry* g, Py_ssize_t lo,
                                Py_ssize_t hi) noexcept nogil:
    """dst[ow] = bias + Σ_ij taps[i, j]·rows[i][ow·sw − left + j·dw] for a 3×3 kernel whose
    three input rows (from top_row, dh apart) are inside the image, over the columns [lo, hi)
    whose taps all are: the nine terms added left to right in (i, j) order, one store per
    output."""
    cdef Py_ssize_t ow, w0
    cdef Py_ssize_t step = g.stride_w, dw = g.dilation_w
    cdef const floating* r0 = top_row - g.pad_left
    cdef const floating* r1 = r0 + g.dilation_h * g.width
    cdef const floating* r2 = r1 + g.dilation_h * g.width
    cdef floating t00 = taps[0], t01 = taps[1], t02 = taps[2]
    cdef floating t10 = taps[3], t11 = taps[4], t12 = taps[5]
    cdef floating t20 = taps[6], t21 = taps[7], t22 = taps[8]
    cdef floating total
    if step == 1 and dw == 1:  # constant offsets: the loop vectorises without spilling
        for ow in range(lo, hi):
            total = bias + t00 * r0[ow]
            total = total + t01 * r0[ow + 1]
            total = total + t02 * r0[ow + 2]
            total = total + t10 * r1[ow]
            total = total + t11 * r1[ow + 1]
            total = total + t12 * r1[ow + 2]
            total = total + t20 * r2[ow]
            total = total + t21 * r2[ow + 1]
            total = total + t22 * r2[ow + 2]
            dst[ow] = total
        return
    for ow in range(lo, hi):
        w0 = ow * step
        total = bias + t00 * r0[w0]
        total = total + t01 * r0[w0 + dw]
        total = total + t02 * r0[w0 + 2 * dw]
        total = total + t10 * r1[w0]
        total = total + t11 * r1[w0 + dw]
        total = total + t12 * r1[w0 + 2 * dw]
        total = total + t20 * r2[w0]
        total = total + t21 * r2[w0 + dw]
        total = total + t22 * r2[w0 + 2 * dw]
        dst[ow] = total


cdef floating output_pixel_nchw(const floating* plane, const floating* taps, floating bias,
                                const Geometry* g, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """bias + Σ_ij taps[i, j]·plane[oh·sh − top + i·dh, ow·sw − left + j·dw] over the taps
    inside the image (with a padding mode, all of them, the padding read through the
    tables), added in (i, j) order: one output pixel at the image's edge."""
    cdef Py_ssize_t i, j, h_im, w_im
    cdef floating total = bias
    for i in range(g.kernel_h):
        h_im = source_row(g, input_row(g, oh, i))
        if h_im < 0:
            continue
        for j in range(g.kernel_w):
            w_im = source_col(g, input_col(g, ow, j))
            if w_im >= 0:
                total = total + taps[i * g.kernel_w + j] * plane[h_im * g.width + w_im]
    return total


cdef void forward_plane_nchw(const floating* plane, const floating* taps, floating bias,
                             floating* out, const Geometry* g) noexcept nogil:
    """out[oh, ow] = bias + Σ_ij taps[i, j]·plane[oh·sh − top + i·dh, ow·sw − left + j·dw],
    summed in (i, j) order. Row by row, every tap added while the output row is in L1; a
    3×3 kernel whose taps all fall inside the image sums its nine terms in one pass."""
    cdef Py_ssize_t i, j, oh, ow, h_im, lo, hi
    cdef bint three_by_three = g.kernel_h == 3 and g.kernel_w == 3
    cdef floating* dst
    inside_cols(g, &lo, &hi)  # the columns whose taps are all inside the image
    for oh in range(g.out_h):
        dst = out + oh * g.out_w
        h_im = input_row(g, oh, 0)
        if three_by_three and h_im >= 0 and input_row(g, oh, 2) < g.height:
            nine_taps_nchw(dst, plane + h_im * g.width, taps, bias, g, lo, hi)
            for ow in range(0, lo):  # the edge columns, pixel by pixel
                dst[ow] = output_pixel_nchw(plane, taps, bias, g, oh, ow)
            for ow in range(hi, g.out_w):
                dst[ow] = output_pixel_nchw(plane, taps, bias, g, oh, ow)
            continue
        for ow in range(g.out_w):
            dst[ow] = bias
        for i in range(g.kernel_h):
            h_im = source_row(g, input_row(g, oh, i))
            if h_im < 0:
                continue
            for j in range(g.kernel_w):
                add_tap_nchw(dst, plane + h_im * g.width, taps[i * g.kernel_w + j], g, j, 0,
                             g.out_w)


cdef inline void three_tap_columns(const Geometry* g, Py_ssize_t* lo,
                                   Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the input columns w that all three taps of a 3-wide, stride-1 kernel row
    reach: w = ow − left + j·dw with 0 <= ow < OW, for j = 0, 1, 2 alike."""
    cdef Py_ssize_t first = 2 * g.dilation_w - g.pad_left
    cdef Py_ssize_t end = g.out_w - g.pad_left
    first = first if first > 0 else 0
    end = end if end < g.width else g.width
    lo[0] = first
    hi[0] = end if end > first else first


cdef inline void scatter_tap_nchw(floating* dst, const floating* src, floating tap,
                                  const Geometry* g, Py_ssize_t j, Py_ssize_t w_begin,
                                  Py_ssize_t w_end) noexcept nogil:
    """dst[ow·sw − left + j·dw] += tap·src[ow] for the ow whose target column lies in
    [w_begin, w_end) ∩ the image row."""
    cdef Py_ssize_t ow, lo, hi
    cdef Py_ssize_t w_offset = j * g.dilation_w - g.pad_left
    valid_range(w_offset, g.stride_w, g.width, g.out_w, &lo, &hi)
    if g.stride_w == 1:
        lo = lo if lo > w_begin - w_offset else w_begin - w_offset
        hi = hi if hi < w_end - w_offset else w_end - w_offset
        for ow in range(lo, hi):
            dst[ow + w_offset] += tap * src[ow]
    else:  # only called with the whole row
        for ow in range(lo, hi):
            dst[ow * g.stride_w + w_offset] += tap * src[ow]


cdef inline void gather_three_taps_nchw(floating* dst, const floating* src,
                                        const floating* taps, const Geometry* g,
                                        Py_ssize_t w_lo, Py_ssize_t w_hi) noexcept nogil:
    """Stride 1, 3-wide kernel: dst[w] = ((dst[w] + t0·src[w + left]) + t1·src[w + left − dw])
    + t2·src[w + left − 2dw] over [w_lo, w_hi), the columns that all three taps reach: one
    pass instead of three, the same additions in the same order."""
    cdef Py_ssize_t w, dw = g.dilation_w
    cdef floating t0 = taps[0], t1 = taps[1], t2 = taps[2]
    cdef const floating* row = src + g.pad_left
    for w in range(w_lo, w_hi):
        dst[w] = ((dst[w] + t0 * row[w]) + t1 * row[w - dw]) + t2 * row[w - 2 * dw]


cdef floating input_grad_pixel_nchw(const floating* grad_out, const floating* taps,
                                    const Geometry* g, Py_ssize_t h_im,
                                    Py_ssize_t w_im) noexcept nogil:
    """Σ_ij taps[i, j]·grad_out[oh, ow] over the outputs (oh, ow) whose tap (i, j) reads
    (h_im, w_im), added in (i, j) order from 0 (one output channel): one pixel at the edge."""
    cdef Py_ssize_t i, j, oh, ow
    cdef floating total = 0
    for i in range(g.kernel_h):
        oh = output_row(g, h_im, i)
        if oh < 0:
            continue
        for j in range(g.kernel_w):
            ow = output_col(g, w_im, j)
            if ow >= 0:
                total = total + taps[i * g.kernel_w + j] * grad_out[oh * g.out_w + ow]
    return total


cdef inline void nine_taps_input_grad_nchw(floating* dst, const floating* r0,
                                           const floating* r1, const floating* r2,
                                           const floating* taps, Py_ssize_t w_lo,
                                           Py_ssize_t w_hi, Py_ssize_t left,
                                           Py_ssize_t dw) noexcept nogil:
    """Stride 1, 3×3, one output channel: dst[w] = Σ_ij taps[i, j]·r_i[w + left − j·dw] from
    0 in (i, j) order, over [w_lo, w_hi), the columns all three taps of each row reach, for
    an image row whose three output rows r0, r1, r2 all exist: one pass, one store."""
    cdef Py_ssize_t w
    cdef floating t00 = taps[0], t01 = taps[1], t02 = taps[2]
    cdef floating t10 = taps[3], t11 = taps[4], t12 = taps[5]
    cdef floating t20 = taps[6], t21 = taps[7], t22 = taps[8]
    cdef floating total
    r0 = r0 + left
    r1 = r1 + left
    r2 = r2 + left
    if dw == 1:  # constant offsets: the loop vectorises without spilling
        for w in range(w_lo, w_hi):
            total = 0
            total = total + t00 * r0[w]
            total = total + t01 * r0[w - 1]
            total = total + t02 * r0[w - 2]
            total = total + t10 * r1[w]
            total = total + t11 * r1[w - 1]
            total = total + t12 * r1[w - 2]
            total = total + t20 * r2[w]
            total = total + t21 * r2[w - 1]
            total = total + t22 * r2[w - 2]
            dst[w] = total
        return
    for w in range(w_lo, w_hi):
        total = 0
        total = total + t00 * r0[w]
        total = total + t01 * r0[w - dw]
        total = total + t02 * r0[w - 2 * dw]
        total = total + t10 * r1[w]
        total = total + t11 * r1[w - dw]
        total = total + t12 * r1[w - 2 * dw]
        total = total + t20 * r2[w]
        total = total + t21 * r2[w - dw]
        total = total + t22 * r2[w - 2 * dw]
        dst[w] = total


cdef void input_grad_plane_nchw(const floating* grad_out, const floating* weight,
                                floating* grad_plane, const Geometry* g,
                                Py_ssize_t multiplier) noexcept nogil:
    """grad_plane[h, w] = Σ over this channel's outputs o and taps (i, j) that read (h, w) of
    weight[o, i, j]·grad_out[o, oh, ow], in (o, i, j) order; grad_out and weight start at the
    channel's first output. Stride 1 with a 3-wide kernel adds a kernel row's three taps in
    one pass over the columns all three reach."""
    cdef Py_ssize_t m, i, j, h_im, oh, w_lo = 0, w_hi = 0
    cdef Py_ssize_t out_plane = g.out_h * g.out_w
    cdef bint three_wide = g.kernel_w == 3 and g.stride_w == 1
    cdef floating* dst
    cdef const floating* src
    cdef const floating* taps
    cdef Py_ssize_t o0, o1, o2, w
    if three_wide:
        three_tap_columns(g, &w_lo, &w_hi)
    for h_im in range(g.height):
        dst = grad_plane + h_im * g.width
        if three_wide and multiplier == 1 and g.kernel_h == 3:
            o0 = output_row(g, h_im, 0)
            o1 = output_row(g, h_im, 1)
            o2 = output_row(g, h_im, 2)
            if o0 >= 0 and o1 >= 0 and o2 >= 0:  # every tap reaches this row: one pass
                nine_taps_input_grad_nchw(dst, grad_out + o0 * g.out_w,
                                          grad_out + o1 * g.out_w, grad_out + o2 * g.out_w,
                                          weight, w_lo, w_hi, g.pad_left, g.dilation_w)
                for w in range(0, w_lo):  # the edge columns, pixel by pixel
                    dst[w] = input_grad_pixel_nchw(grad_out, weight, g, h_im, w)
                for w in range(w_hi, g.width):
                    dst[w] = input_grad_pixel_nchw(grad_out, weight, g, h_im, w)
                continue
        memset(dst, 0, g.width * sizeof(floating))
        for m in range(multiplier):
            for i in range(g.kernel_h):
                oh = output_row(g, h_im, i)
                if oh < 0:
                    continue
                src = grad_out + m * out_plane + oh * g.out_w
                taps = weight + (m * g.kernel_h + i) * g.kernel_w
                if three_wide:
                    for j in range(3):  # the edge columns, tap by tap
                        scatter_tap_nchw(dst, src, taps[j], g, j, 0, w_lo)
                        scatter_tap_nchw(dst, src, taps[j], g, j, w_hi, g.width)
                    gather_three_taps_nchw(dst, src, taps, g, w_lo, w_hi)
                else:
                    for j in range(g.kernel_w):
                        scatter_tap_nchw(dst, src, taps[j], g, j, 0, g.width)


cdef enum:
    CHUNK = 512  # output columns summed at once in a stack buffer


cdef void weight_grad_edges_nchw(const floating* grad_out, const floating* plane,
                                 floating* taps, const Geometry* g, Py_ssize_t oh_lo,
                                 Py_ssize_t oh_hi, Py_ssize_t in_lo,
                                 Py_ssize_t in_hi) noexcept nogil:
    """taps[i, j] += the terms of weight_grad_taps_nchw's sum from the output pixels outside
    rows [oh_lo, oh_hi) × columns [in_lo, in_hi) (3×3, stride_w 1): pixel by pixel, each
    adding its taps that fall inside the plane."""
    cdef Py_ssize_t oh, ow, i, j, h_im, w_im
    cdef floating edge[9]
    cdef floating value
    for i in range(9):
        edge[i] = 0
    for oh in range(g.out_h):
        ow = 0
        while ow < g.out_w:
            if oh_lo <= oh < oh_hi and ow == in_lo:
                ow = in_hi  # the block the register loops summed
                continue
            value = grad_out[oh * g.out_w + ow]
            for i in range(3):
                h_im = input_row(g, oh, i)
                if h_im < 0 or h_im >= g.height:
                    continue
                for j in range(3):
                    w_im = input_col(g, ow, j)
                    if 0 <= w_im < g.width:
                        edge[i * 3 + j] += value * plane[h_im * g.width + w_im]
            ow = ow + 1
    for i in range(9):
        taps[i] += edge[i]


cdef void weight_grad_taps_nchw(const floating* grad_out, const floating* plane, floating* taps,
                                const Geometry* g) noexcept nogil:
    """taps[i, j] += Σ_{oh, ow} grad_out[oh, ow]·plane[oh·sh − top + i·dh, ow·sw − left + j·dw].

    Summed per output column over the rows first (elementwise, so it vectorises without
    reassociating a reduction), CHUNK columns at a time, then across the columns. A float32
    3×3 kernel at stride_w 1 (AVX-512) sums the outputs whose nine taps are all inside the
    plane in registers (depthwise_3x3.h) and the others pixel by pixel instead."""
    cdef Py_ssize_t i, j, k, oh, h_im, lo, hi, w_offset, c0, count
    cdef Py_ssize_t oh_lo = 0, oh_hi = 0, in_lo = 0, in_hi = 0
    cdef floating column_sums[CHUNK]
    cdef floating total
    cdef const floating* src
    cdef const floating* gsrc
    if floating is float:
        if (FASTCONV_DEPTHWISE_3X3 and g.kernel_h == 3 and g.kernel_w == 3
                and g.stride_w == 1):
            inside_rows(g, &oh_lo, &oh_hi)
            inside_cols(g, &in_lo, &in_hi)
            if oh_hi > oh_lo and in_hi > in_lo:
                fastconv_dw3x3_nchw_weight_grad(grad_out, plane, taps, g.out_w, g.width, oh_lo,
                                                oh_hi, in_lo, in_hi, g.stride_h, g.pad_top,
                                                g.pad_left, g.dilation_h, g.dilation_w)
                weight_grad_edges_nchw(grad_out, plane, taps, g, oh_lo, oh_hi, in_lo, in_hi)
                return
    for i in range(g.kernel_h):
        for j in range(g.kernel_w):
            w_offset = j * g.dilation_w - g.pad_left
            valid_range(w_offset, g.stride_w, g.width, g.out_w, &lo, &hi)
            total = 0
            c0 = lo
            while c0 < hi:
                count = hi - c0 if hi - c0 < CHUNK else CHUNK
                for k in range(count):
                    column_sums[k] = 0
                for oh in range(g.out_h):
                    h_im = input_row(g, oh, i)
                    if h_im < 0 or h_im >= g.height:
                        continue
                    gsrc = grad_out + oh * g.out_w + c0
                    if g.stride_w == 1:
                        src = plane + h_im * g.width + c0 + w_offset
                        for k in range(count):
                            column_sums[k] += gsrc[k] * src[k]
                    else:
                        src = plane + h_im * g.width
                        for k in range(count):
                            column_sums[k] += gsrc[k] * src[(c0 + k) * g.stride_w + w_offset]
                for k in range(count):
                    total += column_sums[k]
                c0 += count
            taps[i * g.kernel_w + j] += total


# ---------------------------------------------------------------- NHWC
cdef inline void multiply_add_pixel(floating* dst, const floating* scale, const floating* src,
                                    Py_ssize_t channels, Py_ssize_t multiplier) noexcept nogil:
    """dst[c·multiplier + m] += scale[c·multiplier + m]·src[c], for one pixel's channels."""
    cdef Py_ssize_t c, m
    if multiplier == 1:
        for c in range(channels):
            dst[c] += scale[c] * src[c]
    else:
        for c in range(channels):
            for m in range(multiplier):
                dst[c * multiplier + m] += scale[c * multiplier + m] * src[c]


cdef inline void pixel_taps_nhwc(const floating* image, floating* taps, floating* pixel,
                                 const Geometry* g, Py_ssize_t oh, Py_ssize_t ow,
                                 Py_ssize_t multiplier, Py_ssize_t out_channels,
                                 bint into_taps) noexcept nogil:
    """For each tap (i, j) of output pixel (oh, ow) that reads an input pixel x (with a
    padding mode, every tap: the padding read through the tables), in (i, j) order:
    into_taps: taps[i, j, o] += pixel[o]·x[o // multiplier] (the weight gradient);
    else:      pixel[o] += taps[i, j, o]·x[o // multiplier] (the forward pass)."""
    cdef Py_ssize_t i, j, h_im, j_lo, j_hi, w_src
    cdef Py_ssize_t w_im = input_col(g, ow, 0)
    cdef const floating* src
    cdef floating* tap
    valid_range(w_im, g.dilation_w, g.width, g.kernel_w, &j_lo, &j_hi)
    if g.col_src != 0:  # a padding mode: every tap reads a pixel
        j_lo, j_hi = 0, g.kernel_w
    for i in range(g.kernel_h):
        h_im = source_row(g, input_row(g, oh, i))
        if h_im < 0:
            continue
        for j in range(j_lo, j_hi):
            w_src = source_col(g, w_im + j * g.dilation_w)
            src = image + (h_im * g.width + w_src) * g.channels
            tap = taps + (i * g.kernel_w + j) * out_channels
            if into_taps:
                multiply_add_pixel(tap, pixel, src, g.channels, multiplier)
            else:
                multiply_add_pixel(pixel, tap, src, g.channels, multiplier)


cdef inline void three_pixels_nhwc(floating* dst, const floating* x0, const floating* x1,
                                   const floating* x2, const floating* taps,
                                   const Geometry* g) noexcept nogil:
    """dst[c] = ((dst[c] + taps[0, c]·x0[c]) + taps[1, c]·x1[c]) + taps[2, c]·x2[c]: one
    kernel row of a 3-wide kernel (multiplier 1) over three pixels anywhere (a padding
    mode's edge pixels read through the column table)."""
    cdef Py_ssize_t c, channels = g.channels
    cdef const floating* t0 = taps
    cdef const floating* t1 = taps + channels
    cdef const floating* t2 = taps + 2 * channels
    for c in range(channels):
        dst[c] = ((dst[c] + t0[c] * x0[c]) + t1[c] * x1[c]) + t2[c] * x2[c]


cdef inline void three_taps_pixel_nhwc(floating* dst, const floating* left,
                                       const floating* taps, const Geometry* g) noexcept nogil:
    """dst[c] = ((dst[c] + taps[0, c]·x[0, c]) + taps[1, c]·x[dw, c]) + taps[2, c]·x[2dw, c]:
    one kernel row of a 3-wide kernel (multiplier 1) whose taps are inside the image, x
    starting at `left`; one pass over dst instead of three, the same additions in order."""
    three_pixels_nhwc(dst, left, left + g.dilation_w * g.channels,
                      left + 2 * g.dilation_w * g.channels, taps, g)


cdef void forward_row_nhwc(const floating* image, const floating* weight, const floating* bias,
                           floating* out_row, const Geometry* g, Py_ssize_t oh,
                           Py_ssize_t multiplier, Py_ssize_t out_channels) noexcept nogil:
    """out_row[ow, o] = bias[o] + Σ_ij weight[i, j, o]·image[h_im, w_im, o // multiplier],
    summed in (i, j) order; with a 3-wide kernel and multiplier 1, a pixel whose columns are
    inside the image adds each kernel row's three taps in one pass."""
    cdef Py_ssize_t ow, o, i, h_im, w_im, w0, w1, w2, lo = 0, hi = 0
    cdef bint three_wide = g.kernel_w == 3 and multiplier == 1
    cdef const floating* row
    cdef floating* dst
    cdef const float* rows[3]
    if floating is float:
        if register_forward_nhwc(g, multiplier):
            inside_cols(g, &lo, &hi)
            tap_rows_nhwc(image, g, oh, rows)
            fastconv_dw3x3_nhwc_forward(rows, weight, bias, out_row, g.channels, g.out_w, lo,
                                        hi, input_col(g, 0, 0), g.stride_w, g.dilation_w,
                                        g.width)
            return
    for ow in range(g.out_w):
        dst = out_row + ow * out_channels
        for o in range(out_channels):
            dst[o] = bias[o] if bias != NULL else 0
        w_im = input_col(g, ow, 0)
        if three_wide and g.col_src != 0:
            # a padding mode: each of the three taps reads the pixel the tables name
            w0 = source_col(g, w_im) * g.channels
            w1 = source_col(g, w_im + g.dilation_w) * g.channels
            w2 = source_col(g, w_im + 2 * g.dilation_w) * g.channels
            for i in range(g.kernel_h):
                h_im = source_row(g, input_row(g, oh, i))
                row = image + h_im * g.width * g.channels
                three_pixels_nhwc(dst, row + w0, row + w1, row + w2,
                                  weight + i * 3 * out_channels, g)
            continue
        if three_wide and w_im >= 0 and w_im + 2 * g.dilation_w < g.width:
            for i in range(g.kernel_h):
                h_im = source_row(g, input_row(g, oh, i))
                if h_im >= 0:
                    three_taps_pixel_nhwc(dst, image + (h_im * g.width + w_im) * g.channels,
                                          weight + i * 3 * out_channels, g)
            continue
        pixel_taps_nhwc(image, <floating*> weight, dst, g, oh, ow, multiplier, out_channels,
                        False)


cdef inline void gather_three_taps_nhwc(floating* dst, const floating* grad_row,
                                        const floating* taps, const Geometry* g,
                                        Py_ssize_t w) noexcept nogil:
    """Stride 1, 3-wide kernel, multiplier 1: input pixel w of one kernel row gets its three
    taps in the order the scatter adds them (output columns ascending, so j = 2, 1, 0):
    dst[c] = ((dst[c] + t2[c]·g[w + left − 2dw, c]) + t1[c]·g[w + left − dw, c])
    + t0[c]·g[w + left, c]."""
    cdef Py_ssize_t c, channels = g.channels, dw = g.dilation_w
    cdef const floating* g2 = grad_row + (w + g.pad_left - 2 * dw) * channels
    cdef const floating* g1 = g2 + dw * channels
    cdef const floating* g0 = g1 + dw * channels
    cdef const floating* t0 = taps
    cdef const floating* t1 = taps + channels
    cdef const floating* t2 = taps + 2 * channels
    for c in range(channels):
        dst[c] = ((dst[c] + t2[c] * g2[c]) + t1[c] * g1[c]) + t0[c] * g0[c]


cdef void input_grad_row_nhwc(const floating* grad_out, const floating* weight,
                              floating* grad_row, const Geometry* g, Py_ssize_t h_im,
                              Py_ssize_t multiplier, Py_ssize_t out_channels) noexcept nogil:
    """grad_row[w, c] = Σ over taps that read (h_im, w) of
    Σ_m weight[i, j, c·mult + m]·grad_out[oh, ow, c·mult + m], added kernel row by kernel row,
    output column by column. With stride 1, a 3-wide kernel and multiplier 1, the pixels that
    all three taps reach gather them in one pass (same order, same bits); the others are
    scattered to."""
    cdef Py_ssize_t i, j, ow, c, m, oh, w_im, j_lo, j_hi, w, target
    cdef Py_ssize_t inside_lo = 0, inside_hi = 0
    cdef floating* dst
    cdef const floating* src
    cdef const floating* taps
    cdef const float* rows[3]
    if g.kernel_w == 3 and g.stride_w == 1 and multiplier == 1:
        three_tap_columns(g, &inside_lo, &inside_hi)
    if floating is float:
        # The whole row in registers, edge columns and kernel rows that miss it included.
        if (FASTCONV_DEPTHWISE_3X3 and g.kernel_h == 3 and g.kernel_w == 3
                and g.stride_w == 1 and multiplier == 1
                and g.channels % FASTCONV_LANES == 0 and g.row_src == 0 and g.col_src == 0):
            for i in range(3):
                oh = output_row(g, h_im, i)
                rows[i] = grad_out + oh * g.out_w * out_channels if oh >= 0 else NULL
            fastconv_dw3x3_nhwc_input_grad(rows, weight, grad_row, g.channels, g.width,
                                           g.out_w, inside_lo, inside_hi, g.pad_left,
                                           g.dilation_w)
            return
    memset(grad_row, 0, g.width * g.channels * sizeof(floating))
    for i in range(g.kernel_h):
        oh = output_row(g, h_im, i)
        if oh < 0:
            continue
        for w in range(inside_lo, inside_hi):
            gather_three_taps_nhwc(grad_row + w * g.channels,
                                   grad_out + oh * g.out_w * out_channels,
                                   weight + i * 3 * out_channels, g, w)
        for ow in range(g.out_w):
            w_im = input_col(g, ow, 0)
            valid_range(w_im, g.dilation_w, g.width, g.kernel_w, &j_lo, &j_hi)
            src = grad_out + (oh * g.out_w + ow) * out_channels
            for j in range(j_lo, j_hi):
                target = w_im + j * g.dilation_w
                if inside_lo <= target < inside_hi:
                    continue  # gathered above
                dst = grad_row + target * g.channels
                taps = weight + (i * g.kernel_w + j) * out_channels
                if multiplier == 1:
                    for c in range(g.channels):
                        dst[c] += taps[c] * src[c]
                else:
                    for c in range(g.channels):
                        for m in range(multiplier):
                            dst[c] += taps[c * multiplier + m] * src[c * multiplier + m]


cdef inline void tap_sums_nhwc(floating* acc, const floating* grad_row,
                               const floating* src_row, const Geometry* g, Py_ssize_t w_offset,
                               Py_ssize_t ow_begin, Py_ssize_t ow_end, Py_ssize_t multiplier,
                               Py_ssize_t out_channels) noexcept nogil:
    """acc[o] += Σ_ow grad_row[ow, o]·src_row[ow·sw + w_offset, o // multiplier] over
    [ow_begin, ow_end), output columns ascending (one tap of one output row)."""
    cdef Py_ssize_t ow
    for ow in range(ow_begin, ow_end):
        multiply_add_pixel(acc, grad_row + ow * out_channels,
                           src_row + (ow * g.stride_w + w_offset) * g.channels, g.channels,
                           multiplier)


cdef void weight_grad_row_nhwc(const floating* grad_out, const floating* image, floating* taps_acc,
                               const Geometry* g, Py_ssize_t oh, Py_ssize_t multiplier,
                               Py_ssize_t out_channels) noexcept nogil:
    """taps_acc[i, j, o] += Σ_ow grad_out[oh, ow, o]·image[h_im, w_im, o // multiplier]:
    tap by tap along the output row (output columns ascending), so each tap's accumulators
    stay in L1 and no per-pixel bookkeeping runs."""
    cdef Py_ssize_t i, j, h_im, ow_lo, ow_hi, w_offset, lo = 0, hi = 0
    cdef const floating* grad_row = grad_out + oh * g.out_w * out_channels
    cdef const floating* src_row
    cdef floating* acc
    cdef const float* rows[3]
    if floating is float:
        if register_forward_nhwc(g, multiplier):  # the whole row, edges included
            inside_cols(g, &lo, &hi)
            tap_rows_nhwc(image, g, oh, rows)
            fastconv_dw3x3_nhwc_weight_grad(rows, grad_row, taps_acc, g.channels, g.out_w, lo,
                                            hi, input_col(g, 0, 0), g.stride_w, g.dilation_w,
                                            g.width)
            return
    for i in range(g.kernel_h):
        h_im = input_row(g, oh, i)
        if h_im < 0 or h_im >= g.height:
            continue
        src_row = image + h_im * g.width * g.channels
        for j in range(g.kernel_w):
            acc = taps_acc + (i * g.kernel_w + j) * out_channels
            w_offset = j * g.dilation_w - g.pad_left
            valid_range(w_offset, g.stride_w, g.width, g.out_w, &ow_lo, &ow_hi)
            tap_sums_nhwc(acc, grad_row, src_row, g, w_offset, ow_lo, ow_hi, multiplier,
                          out_channels)


# ---------------------------------------------------------------- whole batch
def depthwise_forward(const floating[::1] x, const floating[::1] weight, const floating[::1] bias,
                      floating[::1] out, Geometry g, Py_ssize_t batch, Py_ssize_t out_channels,
                      bint nhwc, int num_threads):
    """out = depthwise conv(x, weight) + bias (bias empty: none). NCHW weight (O, 1, kh, kw);
    NHWC weight (kh, kw, 1, O)."""
    cdef Py_ssize_t multiplier = out_channels // g.channels
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_plane = g.out_h * g.out_w
    cdef Py_ssize_t taps = g.kernel_h * g.kernel_w
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t task, n, o
    if nhwc:
        for task in prange(batch * g.out_h, nogil=True, num_threads=num_threads,
                           schedule="static"):
            n = task // g.out_h
            forward_row_nhwc(&x[0] + n * image_size, &weight[0], bias_ptr,
                             &out[0] + task * g.out_w * out_channels, &g, task % g.out_h,
                             multiplier, out_channels)
    else:
        for task in prange(batch * out_channels, nogil=True, num_threads=num_threads,
                           schedule="static"):
            n = task // out_channels
            o = task % out_channels
            forward_plane_nchw(&x[0] + n * image_size + (o // multiplier) * g.height * g.width,
                               &weight[0] + o * taps, bias_ptr[o] if bias_ptr != NULL else 0,
                               &out[0] + task * out_plane, &g)


def depthwise_input_grad(const floating[::1] grad_out, const floating[::1] weight,
                         floating[::1] grad_x, Geometry g, Py_ssize_t batch,
                         Py_ssize_t out_channels, bint nhwc, int num_threads):
    """grad_x = the input gradient of depthwise_forward (also its transposed convolution)."""
    cdef Py_ssize_t multiplier = out_channels // g.channels
    cdef Py_ssize_t out_size = out_channels * g.out_h * g.out_w
    cdef Py_ssize_t taps = g.kernel_h * g.kernel_w
    cdef Py_ssize_t task, n, c
    if nhwc:
        for task in prange(batch * g.height, nogil=True, num_threads=num_threads,
                           schedule="static"):
            n = task // g.height
            input_grad_row_nhwc(&grad_out[0] + n * out_size, &weight[0],
                                &grad_x[0] + task * g.width * g.channels, &g, task % g.height,
                                multiplier, out_channels)
    else:
        for task in prange(batch * g.channels, nogil=True, num_threads=num_threads,
                           schedule="static"):
            n = task // g.channels
            c = task % g.channels
            input_grad_plane_nchw(&grad_out[0] + n * out_size + c * multiplier * g.out_h * g.out_w,
                                  &weight[0] + c * multiplier * taps,
                                  &grad_x[0] + task * g.height * g.width, &g, multiplier)


def depthwise_weight_grad(const floating[::1] grad_out, const floating[::1] x,
                          floating[::1] grad_weight, floating[::1] partials, Geometry g,
                          Py_ssize_t batch, Py_ssize_t out_channels, bint nhwc, int num_threads):
    """grad_weight += the weight gradient of depthwise_forward. NCHW: one task per output
    channel (it owns its taps). NHWC: one task per (image, output row), accumulated per
    thread in `partials` (num_threads × weight size, arriving zeroed), then added up."""
    cdef Py_ssize_t multiplier = out_channels // g.channels
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_plane = g.out_h * g.out_w
    cdef Py_ssize_t taps = g.kernel_h * g.kernel_w
    cdef Py_ssize_t weight_size = grad_weight.shape[0]
    cdef Py_ssize_t task, n, o, k, t
    cdef floating* acc
    cdef floating* gw = &grad_weight[0]
    if nhwc:
        acc = &partials[0]
        for task in prange(batch * g.out_h, nogil=True, num_threads=num_threads,
                           schedule="static"):
            n = task // g.out_h
            weight_grad_row_nhwc(&grad_out[0] + n * out_plane * out_channels,
                                 &x[0] + n * image_size, acc + omp_get_thread_num() * weight_size,
                                 &g, task % g.out_h, multiplier, out_channels)
        for k in prange(weight_size, nogil=True, num_threads=num_threads, schedule="static"):
            for t in range(num_threads):
                gw[k] += acc[t * weight_size + k]
    else:
        for o in prange(out_channels, nogil=True, num_threads=num_threads, schedule="static"):
            for n in range(batch):
                weight_grad_taps_nchw(&grad_out[0] + (n * out_channels + o) * out_plane,
                                      &x[0] + n * image_size
                                      + (o // multiplier) * g.height * g.width,
                                      gw + o * taps, &g)


# ---------------------------------------------------------------- by channel blocks
# Small NCHW planes leave the plane loops above mostly scalar (a 7×7 row is shorter than
# one vector) and pay their per-row bookkeeping per channel; kernels other than 3×3 run
# the loops' generic per-pixel code in both layouts. Instead BLOCK_CHANNELS channels of one
# image are copied (NCHW: transposed) into a channels-last tile in the thread's workspace,
# zero-padded so that every window is inside it, run row by row (a full float32 block: the
# vector loops of depthwise_tile.h, any kernel size, no edge code; else the NHWC row loops
# above) and copied back, all within L1/L2. The zeros make a NaN or Inf weight reach the
# border outputs (0·NaN), as PyTorch's do (docs/spec.md §0).
cdef enum:
    BLOCK_CHANNELS = 16


cdef inline Py_ssize_t padded_extent(Py_ssize_t size, Py_ssize_t before, Py_ssize_t outputs,
                                     Py_ssize_t stride, Py_ssize_t kernel,
                                     Py_ssize_t dilation) noexcept nogil:
    """before + max(size, the end of the last window in image coordinates)."""
    cdef Py_ssize_t end = (outputs - 1) * stride - before + (kernel - 1) * dilation + 1
    return before + (end if end > size else size)


cdef inline Geometry padded(const Geometry* g, Py_ssize_t channels) noexcept nogil:
    """The geometry of g's image with `channels` channels and its padding made part of the
    image: every window inside, pad_top = pad_left = 0, the same outputs."""
    cdef Geometry result = g[0]
    result.channels = channels
    result.height = padded_extent(g.height, g.pad_top, g.out_h, g.stride_h, g.kernel_h,
                                  g.dilation_h)
    result.width = padded_extent(g.width, g.pad_left, g.out_w, g.stride_w, g.kernel_w,
                                 g.dilation_w)
    result.pad_top = 0
    result.pad_left = 0
    result.row_src = 0  # the tile holds the padding: every window reads inside it
    result.col_src = 0
    return result


cdef inline Geometry flipped(const Geometry* g) noexcept nogil:
    """The stride-1 geometry whose forward pass over the output gradient (and the kernel
    turned by 180°) is g's input gradient: grad_x[h, w] = Σ_ij w[i, j]·grad[h + top − i·dh,
    w + left − j·dw]. Valid while the padding is at most the dilated kernel's reach."""
    cdef Geometry result = g[0]
    result.height = g.out_h
    result.width = g.out_w
    result.out_h = g.height
    result.out_w = g.width
    result.pad_top = (g.kernel_h - 1) * g.dilation_h - g.pad_top
    result.pad_left = (g.kernel_w - 1) * g.dilation_w - g.pad_left
    return result


cdef inline bint input_grad_by_flip(const Geometry* g, Py_ssize_t multiplier) noexcept nogil:
    """The input gradient runs as the forward pass of flipped(g): stride 1, multiplier 1
    (a multiplier > 1 sums over several output channels per input channel) and padding
    within the kernel's reach."""
    return (g.stride_h == 1 and g.stride_w == 1 and multiplier == 1
            and g.pad_top <= (g.kernel_h - 1) * g.dilation_h
            and g.pad_left <= (g.kernel_w - 1) * g.dilation_w)


cdef inline Py_ssize_t tile_pixels(const Geometry* g) noexcept nogil:
    """Pixels of g's zero-padded image."""
    cdef Geometry p = padded(g, 1)
    return p.height * p.width


cdef struct BlockSizes:
    Py_ssize_t tile    # a zero-padded tile (image, or output gradient for the input's)
    Py_ssize_t plain   # an unpadded channels-last copy, also the result tile
    Py_ssize_t taps    # the block's taps (weights or weight-gradient sums)


cdef BlockSizes block_sizes(const Geometry* g, Py_ssize_t multiplier) noexcept nogil:
    """Elements of each part of one thread's channel-block workspace."""
    cdef BlockSizes sizes
    cdef Geometry back = flipped(g)
    sizes.tile = BLOCK_CHANNELS * max(tile_pixels(g), tile_pixels(&back) if
                                      input_grad_by_flip(g, multiplier) else 0)
    sizes.plain = BLOCK_CHANNELS * max(g.height * g.width, multiplier * g.out_h * g.out_w)
    sizes.taps = BLOCK_CHANNELS * multiplier * g.kernel_h * g.kernel_w
    return sizes


cdef inline Py_ssize_t workspace_elements(BlockSizes sizes) noexcept nogil:
    """One thread's workspace: a tile, two plain copies (one the result) and the taps."""
    return sizes.tile + 2 * sizes.plain + sizes.taps


def block_workspace(Geometry g, Py_ssize_t multiplier):
    """Workspace elements one thread needs for the channel-block kernels: a padded tile,
    an unpadded copy, a result tile and the block's taps."""
    return workspace_elements(block_sizes(&g, multiplier))


cdef struct BlockBuffers:
    void* tile      # zero-padded channels-last tile
    void* plain     # an unpadded channels-last copy
    void* result    # channels-last result
    void* taps      # the block's weights or weight-gradient sums, (kh·kw, block channels)


cdef inline BlockBuffers block_buffers(floating* ws, BlockSizes sizes) noexcept nogil:
    """One thread's workspace (workspace_elements of `sizes`) cut into its parts."""
    cdef BlockBuffers b
    b.tile = ws
    b.plain = ws + sizes.tile
    b.result = ws + sizes.tile + sizes.plain
    b.taps = ws + sizes.tile + 2 * sizes.plain
    return b


cdef inline bint tile_rows(const Geometry* tiled, Py_ssize_t multiplier) noexcept nogil:
    """Whether a zero-padded tile's rows run depthwise_tile.h's vector loops: float32 in an
    AVX-512 build, a full block of channels, multiplier 1 (the caller checks the type)."""
    return (FASTCONV_DEPTHWISE_TILE and tiled.channels == BLOCK_CHANNELS and multiplier == 1)


cdef inline Py_ssize_t block_size(const Geometry* g, Py_ssize_t c0) noexcept nogil:
    """Input channels of the block starting at c0 (BLOCK_CHANNELS, fewer in the last)."""
    return BLOCK_CHANNELS if c0 + BLOCK_CHANNELS <= g.channels else g.channels - c0


cdef inline void copy_run(floating* dst, const floating* src,
                          Py_ssize_t count) noexcept nogil:
    """dst[:count] = src[:count]; a full block's run with a constant size, which the
    compiler turns into vector moves instead of a call per pixel."""
    if count == BLOCK_CHANNELS:
        memcpy(dst, src, BLOCK_CHANNELS * sizeof(floating))
    else:
        memcpy(dst, src, count * sizeof(floating))


cdef void gather_block(const floating* src, Py_ssize_t stride, bint nhwc, floating* dst,
                       Py_ssize_t channels, Py_ssize_t pixels) noexcept nogil:
    """dst[p, c] = the block's channel c at pixel p, c < channels, p < pixels: NCHW planes
    `stride` apart (a transpose), or NHWC pixels `stride` apart (a run per pixel)."""
    cdef Py_ssize_t p
    if not nhwc:
        transpose(src, stride, dst, channels, channels, pixels)
        return
    for p in range(pixels):
        copy_run(dst + p * channels, src + p * stride, channels)


cdef void scatter_block(const floating* src, floating* dst, Py_ssize_t stride, bint nhwc,
                        Py_ssize_t channels, Py_ssize_t pixels) noexcept nogil:
    """The inverse of gather_block: the block's channels-last values back into the image."""
    cdef Py_ssize_t p
    if not nhwc:
        transpose(src, channels, dst, stride, pixels, channels)
        return
    for p in range(pixels):
        copy_run(dst + p * stride, src + p * channels, channels)


cdef void to_padded_tile(const floating* src, Py_ssize_t stride, bint nhwc, floating* plain,
                         floating* tile, const Geometry* g, const Geometry* tiled) noexcept nogil:
    """tile = the block (`tiled.channels` channels of g's image, see gather_block),
    channels-last and padded to `tiled`'s size (NCHW through the unpadded copy `plain`):
    with zeros, or with a padding mode the pixels g's source tables name
    (fill_tile_padding)."""
    cdef Py_ssize_t h, w, channels = tiled.channels
    cdef Py_ssize_t row = g.width * channels
    cdef floating* dst
    if g.row_src == 0:
        memset(tile, 0, tiled.height * tiled.width * channels * sizeof(floating))
    if nhwc:
        for h in range(g.height):
            dst = tile + ((g.pad_top + h) * tiled.width + g.pad_left) * channels
            for w in range(g.width):
                copy_run(dst + w * channels, src + (h * g.width + w) * stride, channels)
    else:
        gather_block(src, stride, False, plain, channels, g.height * g.width)
        for h in range(g.height):
            memcpy(tile + ((g.pad_top + h) * tiled.width + g.pad_left) * channels,
                   plain + h * row, row * sizeof(floating))
    if g.row_src != 0:
        fill_tile_padding(tile, g, tiled)


cdef void fill_tile_padding(floating* tile, const Geometry* g,
                            const Geometry* tiled) noexcept nogil:
    """A padding mode (docs/spec.md §6): the padding of a tile whose image part is filled,
    copied from the tile's own image pixels the source tables name: first the columns
    left and right of each image row, then whole padding rows (with their columns). A
    mode's tables name a pixel for every coordinate; the tile never reaches beyond the
    padded image, the tables' length."""
    cdef Py_ssize_t th, tw, source, channels = tiled.channels
    cdef Py_ssize_t row = tiled.width * channels
    cdef floating* dst
    for th in range(g.pad_top, g.pad_top + g.height):
        dst = tile + th * row
        for tw in range(tiled.width):
            if g.pad_left <= tw < g.pad_left + g.width:
                continue
            source = source_col(g, tw - g.pad_left)
            copy_run(dst + tw * channels, dst + (g.pad_left + source) * channels, channels)
    for th in range(tiled.height):
        if g.pad_top <= th < g.pad_top + g.height:
            continue
        source = source_row(g, th - g.pad_top)
        memcpy(tile + th * row, tile + (g.pad_top + source) * row, row * sizeof(floating))


cdef void block_taps_of(const floating* weight, bint nhwc, Py_ssize_t o0, Py_ssize_t width,
                        Py_ssize_t taps, Py_ssize_t out_channels, bint turned,
                        floating* block_taps) noexcept nogil:
    """block_taps[t, o] = tap t (t_turned = taps − 1 − t when `turned`: the kernel turned by
    180°) of output channel o0 + o: NCHW weight (O, 1, kh, kw), NHWC (kh, kw, 1, O)."""
    cdef Py_ssize_t o, t, source
    for t in range(taps):
        source = taps - 1 - t if turned else t
        if nhwc:
            memcpy(block_taps + t * width, weight + source * out_channels + o0,
                   width * sizeof(floating))
        else:
            for o in range(width):
                block_taps[t * width + o] = weight[(o0 + o) * taps + source]


cdef void forward_block(const floating* src, Py_ssize_t src_stride, const floating* weight,
                        bint turned, const floating* bias, floating* dst,
                        Py_ssize_t dst_stride, bint nhwc, BlockBuffers b, const Geometry* g,
                        Py_ssize_t c0, Py_ssize_t multiplier) noexcept nogil:
    """The depthwise forward pass of one block: input channels [c0, c0 + cb) of one image
    at `src` into output channels [c0·mult, (c0 + cb)·mult) at `dst` (strides as in
    gather_block), the kernel turned by 180° when `turned`."""
    cdef Py_ssize_t cb = block_size(g, c0)
    cdef Geometry tiled = padded(g, cb)
    cdef Py_ssize_t oh, taps = g.kernel_h * g.kernel_w
    cdef Py_ssize_t width = cb * multiplier
    cdef floating* tile = <floating*> b.tile
    cdef floating* result = <floating*> b.result
    cdef floating* block_taps = <floating*> b.taps
    cdef const floating* block_bias = bias + c0 * multiplier if bias != NULL else NULL
    cdef Geometry plain
    block_taps_of(weight, nhwc, c0 * multiplier, width, taps, g.channels * multiplier, turned,
                  block_taps)
    if floating is float:
        plain = g[0]
        plain.channels = cb
        if not nhwc and register_forward_nhwc(&plain, multiplier):
            # the 3×3 register rows read padding as absent: no padded tile to build
            gather_block(src, src_stride, False, <floating*> b.plain, cb, g.height * g.width)
            for oh in range(g.out_h):
                forward_row_nhwc(<floating*> b.plain, block_taps, block_bias,
                                 result + oh * g.out_w * width, &plain, oh, multiplier, width)
            scatter_block(result, dst, dst_stride, nhwc, width, g.out_h * g.out_w)
            return
    to_padded_tile(src, src_stride, nhwc, <floating*> b.plain, tile, g, &tiled)
    for oh in range(g.out_h):
        if floating is float:
            if tile_rows(&tiled, multiplier):
                fastconv_dw_tile_forward_row(tile, tiled.width, block_taps, g.kernel_h,
                                             g.kernel_w, block_bias,
                                             result + oh * g.out_w * width, g.out_w,
                                             oh * g.stride_h, g.stride_w, g.dilation_h,
                                             g.dilation_w)
                continue
        forward_row_nhwc(tile, block_taps, block_bias, result + oh * g.out_w * width, &tiled,
                         oh, multiplier, width)
    scatter_block(result, dst, dst_stride, nhwc, width, g.out_h * g.out_w)


cdef enum:
    GATHER_MAX_TAPS = 16  # kernel rows / columns the gathered input gradient handles


cdef inline void gather_row_phase(const floating* grad_out, const floating* weight,
                                  floating* grad_row, const Geometry* g,
                                  const Py_ssize_t* row_i, const Py_ssize_t* row_oh,
                                  Py_ssize_t rows, Py_ssize_t phase,
                                  const Py_ssize_t channels) noexcept nogil:
    """Columns w = phase + stride·q of one channels-last input row of `channels` channels:
    grad_row[w, c] = Σ over its kernel rows (row_i, read from output rows row_oh) and this
    phase's kernel columns j of weight[i, j, c]·grad_out[oh, q + delta_j, c], rows then
    columns in order."""
    cdef Py_ssize_t col_j[GATHER_MAX_TAPS]
    cdef Py_ssize_t col_delta[GATHER_MAX_TAPS]
    cdef Py_ssize_t cols = 0, j, num, q, r, t, c, ow
    cdef floating acc[BLOCK_CHANNELS]
    cdef floating* dst
    cdef const floating* src
    cdef const floating* tap
    for j in range(g.kernel_w):  # the taps that reach this phase's columns
        num = phase + g.pad_left - j * g.dilation_w
        if num % g.stride_w == 0:  # C's remainder: 0 exactly when divisible, any sign
            col_j[cols] = j
            col_delta[cols] = num // g.stride_w
            cols += 1
    for q in range((g.width - phase + g.stride_w - 1) // g.stride_w):
        for c in range(channels):
            acc[c] = 0
        for r in range(rows):
            src = grad_out + row_oh[r] * g.out_w * channels
            tap = weight + row_i[r] * g.kernel_w * channels
            for t in range(cols):
                ow = q + col_delta[t]
                if 0 <= ow < g.out_w:
                    for c in range(channels):
                        acc[c] += tap[col_j[t] * channels + c] * src[ow * channels + c]
        dst = grad_row + (phase + g.stride_w * q) * channels
        for c in range(channels):
            dst[c] = acc[c]


cdef void input_grad_gather_nhwc(const floating* grad_out, const floating* weight,
                                 floating* grad_x, const Geometry* g,
                                 Py_ssize_t channels) noexcept nogil:
    """The input gradient of a channels-last block of at most BLOCK_CHANNELS channels
    (multiplier 1, kernels of at most GATHER_MAX_TAPS rows and columns), every pixel
    gathered from the taps that read it, column phase by column phase (the columns one
    stride apart share their taps): nothing zeroed first or scattered to, where
    input_grad_row_nhwc scatters every tap at a stride
    (docs/performance.md#depthwise-strided-input-grad)."""
    cdef Py_ssize_t row_i[GATHER_MAX_TAPS]
    cdef Py_ssize_t row_oh[GATHER_MAX_TAPS]
    cdef Py_ssize_t h, i, num, rows, phase
    for h in range(g.height):
        rows = 0
        for i in range(g.kernel_h):  # the kernel rows that read image row h
            num = h + g.pad_top - i * g.dilation_h
            if num >= 0 and num % g.stride_h == 0 and num // g.stride_h < g.out_h:
                row_i[rows] = i
                row_oh[rows] = num // g.stride_h
                rows += 1
        for phase in range(g.stride_w if g.stride_w < g.width else g.width):
            if channels == BLOCK_CHANNELS:  # a constant trip count: one vector
                gather_row_phase(grad_out, weight, grad_x + h * g.width * channels, g, row_i,
                                 row_oh, rows, phase, BLOCK_CHANNELS)
            else:
                gather_row_phase(grad_out, weight, grad_x + h * g.width * channels, g, row_i,
                                 row_oh, rows, phase, channels)


cdef void input_grad_block(const floating* grad_out, Py_ssize_t grad_stride,
                           const floating* weight, floating* grad_x, Py_ssize_t x_stride,
                           bint nhwc, BlockBuffers b, const Geometry* g, Py_ssize_t c0,
                           Py_ssize_t multiplier) noexcept nogil:
    """The input gradient of one block: input channels [c0, c0 + cb) at `grad_x` from
    output-gradient channels [c0·mult, (c0 + cb)·mult) at `grad_out`: the forward pass of
    flipped(g) where it applies, else input_grad_row_nhwc on a channels-last copy."""
    cdef Geometry back = flipped(g)
    cdef Geometry block = g[0]
    cdef Py_ssize_t h, taps = g.kernel_h * g.kernel_w
    cdef Py_ssize_t cb = block_size(g, c0)
    cdef Py_ssize_t width = cb * multiplier
    cdef floating* plain = <floating*> b.plain
    cdef floating* result = <floating*> b.result
    cdef floating* block_taps = <floating*> b.taps
    if input_grad_by_flip(g, multiplier):
        forward_block(grad_out, grad_stride, weight, True, NULL, grad_x, x_stride, nhwc, b,
                      &back, c0, 1)
        return
    block.channels = cb
    gather_block(grad_out, grad_stride, nhwc, plain, width, g.out_h * g.out_w)
    block_taps_of(weight, nhwc, c0 * multiplier, width, taps, g.channels * multiplier, False,
                  block_taps)
    if (multiplier == 1 and g.kernel_h <= GATHER_MAX_TAPS
            and g.kernel_w <= GATHER_MAX_TAPS):
        input_grad_gather_nhwc(plain, block_taps, result, &block, cb)
    else:
        for h in range(g.height):
            input_grad_row_nhwc(plain, block_taps, result + h * g.width * cb, &block, h,
                                multiplier, width)
    scatter_block(result, grad_x, x_stride, nhwc, cb, g.height * g.width)


cdef void weight_grad_block(const floating* grad_out, Py_ssize_t grad_stride,
                            Py_ssize_t grad_image, const floating* x, Py_ssize_t x_stride,
                            Py_ssize_t x_image, floating* grad_weight, bint nhwc,
                            BlockBuffers b, const Geometry* g, Py_ssize_t batch,
                            Py_ssize_t c0, Py_ssize_t multiplier) noexcept nogil:
    """The weight gradient of one block summed over the whole batch (images in order, rows
    in order) and added into grad_weight; grad_out and x point at the block in image 0,
    images grad_image and x_image elements apart."""
    cdef Py_ssize_t cb = block_size(g, c0)
    cdef Geometry tiled = padded(g, cb)
    cdef Py_ssize_t n, oh, taps = g.kernel_h * g.kernel_w
    cdef Py_ssize_t width = cb * multiplier, o0 = c0 * multiplier
    cdef Py_ssize_t out_channels = g.channels * multiplier
    cdef floating* tile = <floating*> b.tile
    cdef floating* result = <floating*> b.result
    cdef floating* block_taps = <floating*> b.taps
    cdef Geometry plain
    memset(block_taps, 0, taps * width * sizeof(floating))
    if floating is float:
        plain = g[0]
        plain.channels = cb
        if not nhwc and register_forward_nhwc(&plain, multiplier):
            # the 3×3 register rows read padding as absent: no padded tile to build
            for n in range(batch):
                gather_block(x + n * x_image, x_stride, False, <floating*> b.plain, cb,
                             g.height * g.width)
                gather_block(grad_out + n * grad_image, grad_stride, False, result, width,
                             g.out_h * g.out_w)
                for oh in range(g.out_h):
                    weight_grad_row_nhwc(result, <floating*> b.plain, block_taps, &plain, oh,
                                         multiplier, width)
            add_block_taps(block_taps, grad_weight, nhwc, o0, width, taps, out_channels)
            return
    for n in range(batch):
        to_padded_tile(x + n * x_image, x_stride, nhwc, <floating*> b.plain, tile, g, &tiled)
        gather_block(grad_out + n * grad_image, grad_stride, nhwc, result, width,
                     g.out_h * g.out_w)
        for oh in range(g.out_h):
            if floating is float:
                if tile_rows(&tiled, multiplier):
                    fastconv_dw_tile_weight_grad_row(tile, tiled.width,
                                                     result + oh * g.out_w * width, block_taps,
                                                     g.kernel_h, g.kernel_w, g.out_w,
                                                     oh * g.stride_h, g.stride_w,
                                                     g.dilation_h, g.dilation_w)
                    continue
            weight_grad_row_nhwc(result, tile, block_taps, &tiled, oh, multiplier, width)
    add_block_taps(block_taps, grad_weight, nhwc, o0, width, taps, out_channels)


cdef inline void add_block_taps(const floating* block_taps, floating* grad_weight, bint nhwc,
                                Py_ssize_t o0, Py_ssize_t width, Py_ssize_t taps,
                                Py_ssize_t out_channels) noexcept nogil:
    """grad_weight[tap t, channel o0 + o] += block_taps[t, o] (NCHW (O, 1, kh, kw) or NHWC
    (kh, kw, 1, O) weight)."""
    cdef Py_ssize_t t, o
    for t in range(taps):
        for o in range(width):
            if nhwc:
                grad_weight[t * out_channels + o0 + o] += block_taps[t * width + o]
            else:
                grad_weight[(o0 + o) * taps + t] += block_taps[t * width + o]


cdef struct BlockLayout:
    Py_ssize_t multiplier   # output channels per input channel
    Py_ssize_t blocks       # blocks of BLOCK_CHANNELS input channels
    BlockSizes sizes        # of one thread's workspace
    Py_ssize_t per_thread   # its elements
    Py_ssize_t image        # elements of one input image
    Py_ssize_t out_image    # elements of one output image
    Py_ssize_t pixels       # input pixels of one image
    Py_ssize_t out_pixels   # output pixels of one image
    Py_ssize_t x_stride     # gather_block's stride in the input (or its gradient)
    Py_ssize_t out_stride   # gather_block's stride in the output (or its gradient)
    bint nhwc


cdef BlockLayout block_layout(Geometry g, Py_ssize_t out_channels, bint nhwc):
    """How the channel-block entry points find their blocks in a batch."""
    cdef BlockLayout b
    b.multiplier = out_channels // g.channels
    b.blocks = (g.channels + BLOCK_CHANNELS - 1) // BLOCK_CHANNELS
    b.sizes = block_sizes(&g, b.multiplier)
    b.per_thread = workspace_elements(b.sizes)
    b.pixels = g.height * g.width
    b.out_pixels = g.out_h * g.out_w
    b.image = g.channels * b.pixels
    b.out_image = out_channels * b.out_pixels
    b.x_stride = g.channels if nhwc else b.pixels
    b.out_stride = out_channels if nhwc else b.out_pixels
    b.nhwc = nhwc
    return b


cdef inline Py_ssize_t x_at(const BlockLayout* b, Py_ssize_t n, Py_ssize_t c0) noexcept nogil:
    """Where input channel c0 of image n starts."""
    return n * b.image + (c0 if b.nhwc else c0 * b.pixels)


cdef inline Py_ssize_t out_at(const BlockLayout* b, Py_ssize_t n,
                              Py_ssize_t c0) noexcept nogil:
    """Where output channel c0·multiplier of image n starts."""
    return n * b.out_image + (c0 * b.multiplier if b.nhwc
                              else c0 * b.multiplier * b.out_pixels)


def depthwise_blocks_forward(const floating[::1] x, const floating[::1] weight,
                             const floating[::1] bias, floating[::1] out,
                             floating[::1] workspace, Geometry g, Py_ssize_t batch,
                             Py_ssize_t out_channels, bint nhwc, int num_threads):
    """depthwise_forward by channel blocks, one (image, block) per task; workspace:
    num_threads × block_workspace elements."""
    cdef BlockLayout b = block_layout(g, out_channels, nhwc)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t task, n, c0
    for task in prange(batch * b.blocks, nogil=True, num_threads=num_threads,
                       schedule="static"):
        n = task // b.blocks
        c0 = task % b.blocks * BLOCK_CHANNELS
        forward_block(&x[0] + x_at(&b, n, c0), b.x_stride, &weight[0], False, bias_ptr,
                      &out[0] + out_at(&b, n, c0), b.out_stride, nhwc,
                      block_buffers(&workspace[0] + omp_get_thread_num() * b.per_thread,
                                    b.sizes),
                      &g, c0, b.multiplier)


def depthwise_blocks_input_grad(const floating[::1] grad_out, const floating[::1] weight,
                                floating[::1] grad_x, floating[::1] workspace, Geometry g,
                                Py_ssize_t batch, Py_ssize_t out_channels, bint nhwc,
                                int num_threads):
    """depthwise_input_grad by channel blocks, one (image, block) per task."""
    cdef BlockLayout b = block_layout(g, out_channels, nhwc)
    cdef Py_ssize_t task, n, c0
    for task in prange(batch * b.blocks, nogil=True, num_threads=num_threads,
                       schedule="static"):
        n = task // b.blocks
        c0 = task % b.blocks * BLOCK_CHANNELS
        input_grad_block(&grad_out[0] + out_at(&b, n, c0), b.out_stride, &weight[0],
                         &grad_x[0] + x_at(&b, n, c0), b.x_stride, nhwc,
                         block_buffers(&workspace[0] + omp_get_thread_num() * b.per_thread,
                                       b.sizes),
                         &g, c0, b.multiplier)


def depthwise_blocks_weight_grad(const floating[::1] grad_out, const floating[::1] x,
                                 floating[::1] grad_weight, floating[::1] workspace,
                                 Geometry g, Py_ssize_t batch, Py_ssize_t out_channels,
                                 bint nhwc, int num_threads):
    """grad_weight += depthwise_weight_grad by channel blocks, one block (all images) per
    task, so each block's taps are summed by one thread in one order."""
    cdef BlockLayout b = block_layout(g, out_channels, nhwc)
    cdef Py_ssize_t blk, c0
    for blk in prange(b.blocks, nogil=True, num_threads=num_threads, schedule="static"):
        c0 = blk * BLOCK_CHANNELS
        weight_grad_block(&grad_out[0] + out_at(&b, 0, c0), b.out_stride, b.out_image,
                          &x[0] + x_at(&b, 0, c0), b.x_stride, b.image, &grad_weight[0], nhwc,
                          block_buffers(&workspace[0] + omp_get_thread_num() * b.per_thread,
                                        b.sizes),
                          &g, batch, c0, b.multiplier)
