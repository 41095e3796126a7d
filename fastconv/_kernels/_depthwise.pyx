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
from libc.string cimport memset

from fastconv._kernels._geometry cimport Geometry
from fastconv._kernels._im2col_helpers cimport valid_range
from fastconv._kernels._openmp cimport omp_get_thread_num


cdef inline Py_ssize_t input_row(const Geometry* g, Py_ssize_t oh, Py_ssize_t i) noexcept nogil:
    """h_im = oh·sh − top + i·dh."""
    return oh * g.stride_h - g.pad_top + i * g.dilation_h


cdef inline Py_ssize_t output_row(const Geometry* g, Py_ssize_t h_im, Py_ssize_t i) noexcept nogil:
    """The oh with input_row(oh, i) == h_im, or −1 when there is none."""
    cdef Py_ssize_t t = h_im + g.pad_top - i * g.dilation_h
    if t < 0 or (g.stride_h != 1 and t % g.stride_h != 0):
        return -1
    t = t if g.stride_h == 1 else t // g.stride_h
    return t if t < g.out_h else -1


# ---------------------------------------------------------------- NCHW
cdef void forward_plane_nchw(const floating* plane, const floating* taps, floating bias,
                             floating* out, const Geometry* g) noexcept nogil:
    """out[oh, ow] = bias + Σ_ij taps[i, j]·plane[oh·sh − top + i·dh, ow·sw − left + j·dw].
    Row by row, every tap added while the output row is in L1."""
    cdef Py_ssize_t i, j, oh, ow, h_im, lo, hi, w_offset
    cdef floating tap
    cdef floating* dst
    cdef const floating* src
    for oh in range(g.out_h):
        dst = out + oh * g.out_w
        for ow in range(g.out_w):
            dst[ow] = bias
        for i in range(g.kernel_h):
            h_im = input_row(g, oh, i)
            if h_im < 0 or h_im >= g.height:
                continue
            src = plane + h_im * g.width
            for j in range(g.kernel_w):
                tap = taps[i * g.kernel_w + j]
                w_offset = j * g.dilation_w - g.pad_left
                valid_range(w_offset, g.stride_w, g.width, g.out_w, &lo, &hi)
                if g.stride_w == 1:
                    for ow in range(lo, hi):
                        dst[ow] += tap * src[ow + w_offset]
                else:
                    for ow in range(lo, hi):
                        dst[ow] += tap * src[ow * g.stride_w + w_offset]


cdef void input_grad_plane_nchw(const floating* grad_out, const floating* weight,
                                floating* grad_plane, const Geometry* g,
                                Py_ssize_t multiplier) noexcept nogil:
    """grad_plane[h, w] = Σ over this channel's outputs o and taps (i, j) that read (h, w) of
    weight[o, i, j]·grad_out[o, oh, ow]; grad_out and weight start at the channel's first output."""
    cdef Py_ssize_t m, i, j, h_im, oh, ow, lo, hi, w_offset
    cdef Py_ssize_t out_plane = g.out_h * g.out_w
    cdef floating tap
    cdef floating* dst
    cdef const floating* src
    memset(grad_plane, 0, g.height * g.width * sizeof(floating))
    for h_im in range(g.height):
        dst = grad_plane + h_im * g.width
        for m in range(multiplier):
            for i in range(g.kernel_h):
                oh = output_row(g, h_im, i)
                if oh < 0:
                    continue
                src = grad_out + m * out_plane + oh * g.out_w
                for j in range(g.kernel_w):
                    tap = weight[(m * g.kernel_h + i) * g.kernel_w + j]
                    w_offset = j * g.dilation_w - g.pad_left
                    valid_range(w_offset, g.stride_w, g.width, g.out_w, &lo, &hi)
                    if g.stride_w == 1:
                        for ow in range(lo, hi):
                            dst[ow + w_offset] += tap * src[ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * g.stride_w + w_offset] += tap * src[ow]


cdef enum:
    CHUNK = 512  # output columns summed at once in a stack buffer


cdef void weight_grad_taps_nchw(const floating* grad_out, const floating* plane, floating* taps,
                                const Geometry* g) noexcept nogil:
    """taps[i, j] += Σ_{oh, ow} grad_out[oh, ow]·plane[oh·sh − top + i·dh, ow·sw − left + j·dw].

    Summed per output column over the rows first (elementwise, so it vectorises without
    reassociating a reduction), CHUNK columns at a time, then across the columns."""
    cdef Py_ssize_t i, j, k, oh, h_im, lo, hi, w_offset, c0, count
    cdef floating column_sums[CHUNK]
    cdef floating total
    cdef const floating* src
    cdef const floating* gsrc
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
    """For each tap (i, j) of output pixel (oh, ow) that reads an input pixel x:
    into_taps: taps[i, j, o] += pixel[o]·x[o // multiplier] (the weight gradient);
    else:      pixel[o] += taps[i, j, o]·x[o // multiplier] (the forward pass)."""
    cdef Py_ssize_t i, j, h_im, j_lo, j_hi
    cdef Py_ssize_t w_im = ow * g.stride_w - g.pad_left
    cdef const floating* src
    cdef floating* tap
    valid_range(w_im, g.dilation_w, g.width, g.kernel_w, &j_lo, &j_hi)
    for i in range(g.kernel_h):
        h_im = input_row(g, oh, i)
        if h_im < 0 or h_im >= g.height:
            continue
        for j in range(j_lo, j_hi):
            src = image + (h_im * g.width + w_im + j * g.dilation_w) * g.channels
            tap = taps + (i * g.kernel_w + j) * out_channels
            if into_taps:
                multiply_add_pixel(tap, pixel, src, g.channels, multiplier)
            else:
                multiply_add_pixel(pixel, tap, src, g.channels, multiplier)


cdef void forward_row_nhwc(const floating* image, const floating* weight, const floating* bias,
                           floating* out_row, const Geometry* g, Py_ssize_t oh,
                           Py_ssize_t multiplier, Py_ssize_t out_channels) noexcept nogil:
    """out_row[ow, o] = bias[o] + Σ_ij weight[i, j, o]·image[h_im, w_im, o // multiplier]."""
    cdef Py_ssize_t ow, o
    cdef floating* dst
    for ow in range(g.out_w):
        dst = out_row + ow * out_channels
        for o in range(out_channels):
            dst[o] = bias[o] if bias != NULL else 0
        pixel_taps_nhwc(image, <floating*> weight, dst, g, oh, ow, multiplier, out_channels,
                        False)


cdef void input_grad_row_nhwc(const floating* grad_out, const floating* weight,
                              floating* grad_row, const Geometry* g, Py_ssize_t h_im,
                              Py_ssize_t multiplier, Py_ssize_t out_channels) noexcept nogil:
    """grad_row[w, c] = Σ over taps that read (h_im, w) of Σ_m weight[i, j, c·mult + m]·grad_out[oh, ow, c·mult + m]."""
    cdef Py_ssize_t i, j, ow, c, m, oh, w_im, j_lo, j_hi
    cdef floating* dst
    cdef const floating* src
    cdef const floating* taps
    memset(grad_row, 0, g.width * g.channels * sizeof(floating))
    for i in range(g.kernel_h):
        oh = output_row(g, h_im, i)
        if oh < 0:
            continue
        for ow in range(g.out_w):
            w_im = ow * g.stride_w - g.pad_left
            valid_range(w_im, g.dilation_w, g.width, g.kernel_w, &j_lo, &j_hi)
            src = grad_out + (oh * g.out_w + ow) * out_channels
            for j in range(j_lo, j_hi):
                dst = grad_row + (w_im + j * g.dilation_w) * g.channels
                taps = weight + (i * g.kernel_w + j) * out_channels
                if multiplier == 1:
                    for c in range(g.channels):
                        dst[c] += taps[c] * src[c]
                else:
                    for c in range(g.channels):
                        for m in range(multiplier):
                            dst[c] += taps[c * multiplier + m] * src[c * multiplier + m]


cdef void weight_grad_row_nhwc(const floating* grad_out, const floating* image, floating* taps_acc,
                               const Geometry* g, Py_ssize_t oh, Py_ssize_t multiplier,
                               Py_ssize_t out_channels) noexcept nogil:
    """taps_acc[i, j, o] += Σ_ow grad_out[oh, ow, o]·image[h_im, w_im, o // multiplier]."""
    cdef Py_ssize_t ow
    for ow in range(g.out_w):
        pixel_taps_nhwc(image, taps_acc, <floating*> (grad_out + (oh * g.out_w + ow) * out_channels),
                        g, oh, ow, multiplier, out_channels, True)


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
                                      &x[0] + n * image_size + (o // multiplier) * g.height * g.width,
                                      gw + o * taps, &g)

