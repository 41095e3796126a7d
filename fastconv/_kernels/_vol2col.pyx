"""3-D convolution kernels (docs/spec.md §6): vol2col / col2vol and the GEMM drivers.

Every padded coordinate q of an axis reads the image index ``table[q]`` of that axis's
source-index table (fastconv._padding_mode.source_index; -1 reads a zero), so one kernel
serves every padding mode, and a table may start inside the image (a negative padding, as
the flipped convolution of an input gradient needs). The adjoints add what a coordinate
received onto the pixel its entry names. Every function trusts its arguments:
fastconv.conv3d / fastconv.im2col validated shapes, tables and dtypes and allocated every
buffer with the right size.

Layouts: channels-first volumes (N, C, D, H, W) with columns (C·kd·kh·kw, positions) per
image, row ((c·kd + i)·kh + j)·kw + k; channels-last volumes (N, D, H, W, C) with columns
(positions, kd·kh·kw·C), column ((i·kh + j)·kw + k)·C + c.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._kernels._blas cimport gemm
from fastconv._kernels._layout cimport transpose
from fastconv._kernels._openmp cimport omp_get_thread_num
from fastconv._kernels._types cimport element_t


cdef struct Vol:
    Py_ssize_t channels
    Py_ssize_t depth
    Py_ssize_t height
    Py_ssize_t width
    Py_ssize_t out_d
    Py_ssize_t out_h
    Py_ssize_t out_w
    Py_ssize_t kernel_d
    Py_ssize_t kernel_h
    Py_ssize_t kernel_w
    Py_ssize_t stride_d
    Py_ssize_t stride_h
    Py_ssize_t stride_w
    Py_ssize_t dilation_d
    Py_ssize_t dilation_h
    Py_ssize_t dilation_w
    # Where the width table reads the image in order: t.w[q] = q − pad_w for every q with
    # 0 <= q − pad_w < width (pad_w may be negative); those runs are copied without the
    # table.
    Py_ssize_t pad_w


cdef struct Run:
    # How a convolution pass is cut: `tile` output positions per work item, `chunks`
    # weight-gradient accumulators (each a fixed range of work items).
    Py_ssize_t batch
    Py_ssize_t out_channels
    Py_ssize_t groups
    bint channels_last
    bint pointwise
    Py_ssize_t tile
    Py_ssize_t col_size
    Py_ssize_t chunks
    bint has_bias


cdef struct Tables:
    const Py_ssize_t* d
    const Py_ssize_t* h
    const Py_ssize_t* w


# ------------------------------------------------------------------ one image, serial
cdef inline void interior(const Vol* v, Py_ssize_t k, Py_ssize_t ow, Py_ssize_t end,
                          Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) within [ow, end): the output columns whose tap k reads the image in order
    (0 <= q·sw + k·dw − pad_w < width)."""
    cdef Py_ssize_t first = v.pad_w - k * v.dilation_w
    cdef Py_ssize_t last = first + v.width - 1
    cdef Py_ssize_t a = 0 if first <= 0 else (first + v.stride_w - 1) // v.stride_w
    cdef Py_ssize_t b = 0 if last < 0 else last // v.stride_w + 1
    if a < ow:
        a = ow
    if b > end:
        b = end
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b


cdef void vol2col_cf(const element_t* image, element_t* col, const Vol* v, const Tables* t,
                     Py_ssize_t c0, Py_ssize_t cc, Py_ssize_t p0,
                     Py_ssize_t p1) noexcept nogil:
    """col[(c·kd + i)·kh + j)·kw + k, p − p0] = image[c0 + c, td[od·sd + i·dd], ...] for the
    positions p in [p0, p1) of one channels-first image; col has p1 − p0 columns."""
    cdef Py_ssize_t width = p1 - p0
    cdef Py_ssize_t plane = v.height * v.width
    cdef Py_ssize_t volume = v.depth * plane
    cdef Py_ssize_t out_plane = v.out_h * v.out_w
    cdef Py_ssize_t c, i, j, k, p, od, oh, ow, end, q, sd, sh, s, lo, hi
    cdef const element_t* src
    cdef const element_t* row
    cdef element_t* dst
    for c in range(cc):
        src = image + (c0 + c) * volume
        for i in range(v.kernel_d):
            for j in range(v.kernel_h):
                for k in range(v.kernel_w):
                    dst = col + (((c * v.kernel_d + i) * v.kernel_h + j) * v.kernel_w + k) \
                        * width
                    p = p0
                    while p < p1:
                        od = p // out_plane
                        oh = (p - od * out_plane) // v.out_w
                        ow = p - od * out_plane - oh * v.out_w
                        end = v.out_w
                        if p1 - p < end - ow:
                            end = ow + (p1 - p)
                        sd = t.d[od * v.stride_d + i * v.dilation_d]
                        sh = t.h[oh * v.stride_h + j * v.dilation_h]
                        if sd < 0 or sh < 0:
                            memset(dst, 0, (end - ow) * sizeof(element_t))
                        else:
                            row = src + sd * plane + sh * v.width
                            interior(v, k, ow, end, &lo, &hi)
                            for q in range(ow, lo):
                                s = t.w[q * v.stride_w + k * v.dilation_w]
                                dst[q - ow] = row[s] if s >= 0 else 0
                            s = k * v.dilation_w - v.pad_w
                            if v.stride_w == 1:
                                for q in range(lo, hi):
                                    dst[q - ow] = row[q + s]
                            else:
                                for q in range(lo, hi):
                                    dst[q - ow] = row[q * v.stride_w + s]
                            for q in range(hi, end):
                                s = t.w[q * v.stride_w + k * v.dilation_w]
                                dst[q - ow] = row[s] if s >= 0 else 0
                        dst += end - ow
                        p += end - ow


cdef void col2vol_cf(const element_t* col, element_t* image, const Vol* v, const Tables* t,
                     Py_ssize_t c0, Py_ssize_t cc, Py_ssize_t p0,
                     Py_ssize_t p1) noexcept nogil:
    """The adjoint of vol2col_cf: adds each column entry onto the pixel it was read from."""
    cdef Py_ssize_t width = p1 - p0
    cdef Py_ssize_t plane = v.height * v.width
    cdef Py_ssize_t volume = v.depth * plane
    cdef Py_ssize_t out_plane = v.out_h * v.out_w
    cdef Py_ssize_t c, i, j, k, p, od, oh, ow, end, q, sd, sh, s, lo, hi
    cdef element_t* dst
    cdef element_t* row
    cdef const element_t* src
    for c in range(cc):
        dst = image + (c0 + c) * volume
        for i in range(v.kernel_d):
            for j in range(v.kernel_h):
                for k in range(v.kernel_w):
                    src = col + (((c * v.kernel_d + i) * v.kernel_h + j) * v.kernel_w + k) \
                        * width
                    p = p0
                    while p < p1:
                        od = p // out_plane
                        oh = (p - od * out_plane) // v.out_w
                        ow = p - od * out_plane - oh * v.out_w
                        end = v.out_w
                        if p1 - p < end - ow:
                            end = ow + (p1 - p)
                        sd = t.d[od * v.stride_d + i * v.dilation_d]
                        sh = t.h[oh * v.stride_h + j * v.dilation_h]
                        if sd >= 0 and sh >= 0:
                            row = dst + sd * plane + sh * v.width
                            interior(v, k, ow, end, &lo, &hi)
                            for q in range(ow, lo):
                                s = t.w[q * v.stride_w + k * v.dilation_w]
                                if s >= 0:
                                    row[s] += src[q - ow]
                            s = k * v.dilation_w - v.pad_w
                            if v.stride_w == 1:
                                for q in range(lo, hi):
                                    row[q + s] += src[q - ow]
                            else:
                                for q in range(lo, hi):
                                    row[q * v.stride_w + s] += src[q - ow]
                            for q in range(hi, end):
                                s = t.w[q * v.stride_w + k * v.dilation_w]
                                if s >= 0:
                                    row[s] += src[q - ow]
                        src += end - ow
                        p += end - ow


cdef void vol2col_cl(const element_t* image, element_t* col, const Vol* v, const Tables* t,
                     Py_ssize_t c0, Py_ssize_t cc, Py_ssize_t p0,
                     Py_ssize_t p1) noexcept nogil:
    """col[p − p0, ((i·kh + j)·kw + k)·cc + c] = image[td[..], th[..], tw[..], c0 + c] for the
    positions p in [p0, p1) of one channels-last image."""
    cdef Py_ssize_t out_plane = v.out_h * v.out_w
    cdef Py_ssize_t _p, od, oh, ow, i, j, k, c, sd, sh, sw
    cdef const element_t* src
    cdef element_t* dst = col
    od = p0 // out_plane
    oh = (p0 - od * out_plane) // v.out_w
    ow = p0 - od * out_plane - oh * v.out_w
    cdef Py_ssize_t first, run = v.kernel_w * cc
    # With every channel and dilation 1 along the width, the kw taps of a window inside the
    # width read kw·C consecutive values: one copy instead of kw.
    cdef bint whole = cc == v.channels and v.dilation_w == 1
    for _p in range(p0, p1):
        first = ow * v.stride_w - v.pad_w
        for i in range(v.kernel_d):
            sd = t.d[od * v.stride_d + i * v.dilation_d]
            for j in range(v.kernel_h):
                sh = t.h[oh * v.stride_h + j * v.dilation_h]
                if whole and sd >= 0 and sh >= 0 and first >= 0 \
                        and first + v.kernel_w <= v.width:
                    src = image + ((sd * v.height + sh) * v.width + first) * v.channels
                    for c in range(run):
                        dst[c] = src[c]
                    dst += run
                    continue
                for k in range(v.kernel_w):
                    sw = t.w[ow * v.stride_w + k * v.dilation_w]
                    if sd < 0 or sh < 0 or sw < 0:
                        memset(dst, 0, cc * sizeof(element_t))
                    else:
                        src = image + ((sd * v.height + sh) * v.width + sw) * v.channels + c0
                        for c in range(cc):
                            dst[c] = src[c]
                    dst += cc
        ow = ow + 1
        if ow == v.out_w:
            ow = 0
            oh = oh + 1
            if oh == v.out_h:
                oh = 0
                od = od + 1


cdef void col2vol_cl(const element_t* col, element_t* image, const Vol* v, const Tables* t,
                     Py_ssize_t c0, Py_ssize_t cc, Py_ssize_t p0,
                     Py_ssize_t p1) noexcept nogil:
    """The adjoint of vol2col_cl."""
    cdef Py_ssize_t out_plane = v.out_h * v.out_w
    cdef Py_ssize_t _p, od, oh, ow, i, j, k, c, sd, sh, sw
    cdef element_t* dst
    cdef const element_t* src = col
    od = p0 // out_plane
    oh = (p0 - od * out_plane) // v.out_w
    ow = p0 - od * out_plane - oh * v.out_w
    for _p in range(p0, p1):
        for i in range(v.kernel_d):
            sd = t.d[od * v.stride_d + i * v.dilation_d]
            for j in range(v.kernel_h):
                sh = t.h[oh * v.stride_h + j * v.dilation_h]
                for k in range(v.kernel_w):
                    sw = t.w[ow * v.stride_w + k * v.dilation_w]
                    if sd >= 0 and sh >= 0 and sw >= 0:
                        dst = image + ((sd * v.height + sh) * v.width + sw) * v.channels + c0
                        for c in range(cc):
                            dst[c] += src[c]
                    src += cc
        ow = ow + 1
        if ow == v.out_w:
            ow = 0
            oh = oh + 1
            if oh == v.out_h:
                oh = 0
                od = od + 1


cdef inline Tables make_tables(const Py_ssize_t[::1] td, const Py_ssize_t[::1] th,
                               const Py_ssize_t[::1] tw) noexcept nogil:
    cdef Tables t
    t.d = &td[0]
    t.h = &th[0]
    t.w = &tw[0]
    return t


# ------------------------------------------------------------------ im2col / col2im 3-D
def vol2col(const element_t[::1] image, element_t[::1] col, Vol v, const Py_ssize_t[::1] td,
            const Py_ssize_t[::1] th, const Py_ssize_t[::1] tw, Py_ssize_t batch,
            bint channels_last, Py_ssize_t tile, int num_threads):
    """Columns of `batch` volumes; one task per (image, tile of `tile` output positions)."""
    cdef Tables t = make_tables(td, th, tw)
    cdef Py_ssize_t positions = v.out_d * v.out_h * v.out_w
    cdef Py_ssize_t rows = v.channels * v.kernel_d * v.kernel_h * v.kernel_w
    cdef Py_ssize_t volume = v.channels * v.depth * v.height * v.width
    cdef Py_ssize_t tiles = (positions + tile - 1) // tile
    cdef Py_ssize_t task, n, p0, p1, c
    cdef const element_t* src = &image[0]
    cdef element_t* dst = &col[0]
    if channels_last:
        for task in prange(batch * tiles, nogil=True, num_threads=num_threads,
                           schedule="static"):
            n = task // tiles
            p0 = (task % tiles) * tile
            p1 = min(p0 + tile, positions)
            vol2col_cl(src + n * volume, dst + (n * positions + p0) * rows, &v, &t, 0,
                       v.channels, p0, p1)
        return
    # channels-first: a tile's rows are strided in the result; one task per (image, channel)
    # writes its rows straight there (the tile is the whole image).
    for task in prange(batch * v.channels, nogil=True, num_threads=num_threads,
                       schedule="static"):
        n = task // v.channels
        c = task % v.channels
        vol2col_cf(src + n * volume, dst + (n * rows + c * (rows // v.channels)) * positions,
                   &v, &t, c, 1, 0, positions)


def col2vol(const element_t[::1] col, element_t[::1] image, Vol v, const Py_ssize_t[::1] td,
            const Py_ssize_t[::1] th, const Py_ssize_t[::1] tw, Py_ssize_t batch,
            bint channels_last, int num_threads):
    """image = the adjoint of vol2col applied to col; channels-first one task per (image,
    channel), channels-last one per image: each task owns what it writes, and every pixel
    sums its entries in one fixed order (independent of the thread count)."""
    cdef Tables t = make_tables(td, th, tw)
    cdef Py_ssize_t positions = v.out_d * v.out_h * v.out_w
    cdef Py_ssize_t rows = v.channels * v.kernel_d * v.kernel_h * v.kernel_w
    cdef Py_ssize_t plane = v.depth * v.height * v.width
    cdef Py_ssize_t volume = v.channels * plane
    cdef Py_ssize_t task, n, c
    cdef const element_t* src = &col[0]
    cdef element_t* dst = &image[0]
    if channels_last:
        for task in prange(batch, nogil=True, num_threads=num_threads, schedule="static"):
            memset(dst + task * volume, 0, volume * sizeof(element_t))
            col2vol_cl(src + task * positions * rows, dst + task * volume, &v, &t, 0,
                       v.channels, 0, positions)
        return
    for task in prange(batch * v.channels, nogil=True, num_threads=num_threads,
                       schedule="static"):
        n = task // v.channels
        c = task % v.channels
        memset(dst + task * plane, 0, plane * sizeof(element_t))
        col2vol_cf(src + (n * rows + c * (rows // v.channels)) * positions,
                   dst + n * volume, &v, &t, c, 1, 0, positions)


# ------------------------------------------------------------------ convolution drivers
cdef inline void add_bias(floating* out, const floating* bias, const Run* r,
                          Py_ssize_t positions, Py_ssize_t p0,
                          Py_ssize_t p1) noexcept nogil:
    """out (one image) += bias over the positions [p0, p1)."""
    cdef Py_ssize_t m, p
    cdef floating b
    cdef floating* row
    if r.channels_last:
        for p in range(p0, p1):
            row = out + p * r.out_channels
            for m in range(r.out_channels):
                row[m] += bias[m]
    else:
        for m in range(r.out_channels):
            b = bias[m]
            row = out + m * positions
            for p in range(p0, p1):
                row[p] += b


def conv3d_forward(const floating[::1] x, const floating[::1] weight,
                   const floating[::1] bias, floating[::1] out, floating[::1] workspace,
                   Vol v, const Py_ssize_t[::1] td, const Py_ssize_t[::1] th,
                   const Py_ssize_t[::1] tw, Run r, int num_threads):
    """out = conv3d(x, weight) + bias: per (image, tile of output positions) vol2col of each
    group into the thread's col_size-element part of the workspace, one GEMM per group
    (1×1×1 stride-1 unpadded kernels read the image in place). Work items do not depend on
    the thread count, so neither do the results."""
    cdef Tables t = make_tables(td, th, tw)
    cdef Py_ssize_t positions = v.out_d * v.out_h * v.out_w
    cdef Py_ssize_t kernel = v.kernel_d * v.kernel_h * v.kernel_w
    cdef Py_ssize_t cin_g = v.channels // r.groups
    cdef Py_ssize_t m_g = r.out_channels // r.groups
    cdef Py_ssize_t k_g = cin_g * kernel
    cdef Py_ssize_t volume = v.channels * v.depth * v.height * v.width
    cdef Py_ssize_t tiles = (positions + r.tile - 1) // r.tile
    cdef Py_ssize_t task, n, p0, p1, grp
    cdef const floating* xs = &x[0]
    cdef const floating* ws = &weight[0]
    cdef floating* ys = &out[0]
    cdef floating* buffers = &workspace[0]
    cdef floating* buf
    cdef const floating* col
    cdef floating* y
    cdef int ld
    for task in prange(r.batch * tiles, nogil=True, num_threads=num_threads,
                       schedule="dynamic"):
        n = task // tiles
        p0 = (task % tiles) * r.tile
        p1 = min(p0 + r.tile, positions)
        buf = buffers + omp_get_thread_num() * r.col_size
        y = ys + n * positions * r.out_channels
        for grp in range(r.groups):
            if r.channels_last:
                if r.pointwise:
                    col = xs + (n * positions + p0) * v.channels + grp * cin_g
                    ld = <int> v.channels
                else:
                    vol2col_cl(xs + n * volume, buf, &v, &t, grp * cin_g, cin_g, p0, p1)
                    col = buf
                    ld = <int> k_g
                # y[p, grp·m_g + m] = col[p, :] · weight[:, grp·m_g + m]
                gemm(False, False, <int> (p1 - p0), <int> m_g, <int> k_g, 1, col, ld,
                     ws + grp * m_g, <int> r.out_channels, 0,
                     y + p0 * r.out_channels + grp * m_g, <int> r.out_channels)
            else:
                if r.pointwise:
                    col = xs + n * volume + grp * cin_g * positions + p0
                    ld = <int> positions
                else:
                    vol2col_cf(xs + n * volume, buf, &v, &t, grp * cin_g, cin_g, p0, p1)
                    col = buf
                    ld = <int> (p1 - p0)
                gemm(False, False, <int> m_g, <int> (p1 - p0), <int> k_g, 1,
                     ws + grp * m_g * k_g, <int> k_g, col, ld, 0,
                     y + grp * m_g * positions + p0, <int> positions)
        if r.has_bias:
            add_bias(y, &bias[0], &r, positions, p0, p1)


def conv3d_weight_grad(const floating[::1] x, const floating[::1] grad_out,
                       floating[::1] partials, floating[::1] workspace, Vol v,
                       const Py_ssize_t[::1] td, const Py_ssize_t[::1] th,
                       const Py_ssize_t[::1] tw, Run r, int num_threads):
    """partials[chunk] = Σ over the work items of the chunk (a fixed range of (image, tile)
    items, in order) of grad_out_tile · columnsᵀ; the caller sums the chunks in order."""
    cdef Tables t = make_tables(td, th, tw)
    cdef Py_ssize_t positions = v.out_d * v.out_h * v.out_w
    cdef Py_ssize_t kernel = v.kernel_d * v.kernel_h * v.kernel_w
    cdef Py_ssize_t cin_g = v.channels // r.groups
    cdef Py_ssize_t m_g = r.out_channels // r.groups
    cdef Py_ssize_t k_g = cin_g * kernel
    cdef Py_ssize_t wsize = r.out_channels * k_g
    cdef Py_ssize_t volume = v.channels * v.depth * v.height * v.width
    cdef Py_ssize_t tiles = (positions + r.tile - 1) // r.tile
    cdef Py_ssize_t items = r.batch * tiles
    cdef Py_ssize_t chunk, item, first, last, n, p0, p1, grp
    cdef const floating* xs = &x[0]
    cdef const floating* gs = &grad_out[0]
    cdef floating* buffers = &workspace[0]
    cdef floating* buf
    cdef floating* acc
    cdef const floating* col
    cdef const floating* g
    cdef int ld
    cdef floating beta
    for chunk in prange(r.chunks, nogil=True, num_threads=num_threads, schedule="dynamic"):
        first = chunk * items // r.chunks
        last = (chunk + 1) * items // r.chunks
        acc = &partials[0] + chunk * wsize
        buf = buffers + omp_get_thread_num() * r.col_size
        if first == last:
            memset(acc, 0, wsize * sizeof(floating))
        for item in range(first, last):
            n = item // tiles
            p0 = (item % tiles) * r.tile
            p1 = min(p0 + r.tile, positions)
            beta = 0 if item == first else 1
            g = gs + n * positions * r.out_channels
            for grp in range(r.groups):
                if r.channels_last:
                    if r.pointwise:
                        col = xs + (n * positions + p0) * v.channels + grp * cin_g
                        ld = <int> v.channels
                    else:
                        vol2col_cl(xs + n * volume, buf, &v, &t, grp * cin_g, cin_g, p0, p1)
                        col = buf
                        ld = <int> k_g
                    # acc[K, grp·m_g + m] (+)= colᵀ · g[p0:p1, grp·m_g + m]
                    gemm(True, False, <int> k_g, <int> m_g, <int> (p1 - p0), 1, col, ld,
                         g + p0 * r.out_channels + grp * m_g, <int> r.out_channels, beta,
                         acc + grp * m_g, <int> r.out_channels)
                else:
                    if r.pointwise:
                        col = xs + n * volume + grp * cin_g * positions + p0
                        ld = <int> positions
                    else:
                        vol2col_cf(xs + n * volume, buf, &v, &t, grp * cin_g, cin_g, p0, p1)
                        col = buf
                        ld = <int> (p1 - p0)
                    gemm(False, True, <int> m_g, <int> k_g, <int> (p1 - p0), 1,
                         g + grp * m_g * positions + p0, <int> positions, col, ld, beta,
                         acc + grp * m_g * k_g, <int> k_g)


def conv3d_input_grad(const floating[::1] grad_out, const floating[::1] weight,
                      floating[::1] grad_x, floating[::1] workspace, Vol v,
                      const Py_ssize_t[::1] td, const Py_ssize_t[::1] th,
                      const Py_ssize_t[::1] tw, Run r, int num_threads):
    """grad_x = col2vol(weightᵀ · grad_out) tile by tile; one task per (image, group), which
    owns the pixels it adds into (its image's channels of its group), so no two tasks write
    the same pixel and each pixel sums in one fixed order."""
    cdef Tables t = make_tables(td, th, tw)
    cdef Py_ssize_t positions = v.out_d * v.out_h * v.out_w
    cdef Py_ssize_t kernel = v.kernel_d * v.kernel_h * v.kernel_w
    cdef Py_ssize_t cin_g = v.channels // r.groups
    cdef Py_ssize_t m_g = r.out_channels // r.groups
    cdef Py_ssize_t k_g = cin_g * kernel
    cdef Py_ssize_t volume = v.channels * v.depth * v.height * v.width
    cdef Py_ssize_t plane = v.depth * v.height * v.width
    cdef Py_ssize_t tiles = (positions + r.tile - 1) // r.tile
    cdef Py_ssize_t task, n, grp, tile, p0, p1, c
    cdef const floating* gs = &grad_out[0]
    cdef const floating* ws = &weight[0]
    cdef floating* xs = &grad_x[0]
    cdef floating* buffers = &workspace[0]
    cdef floating* buf
    cdef const floating* g
    cdef floating* image
    for task in prange(r.batch * r.groups, nogil=True, num_threads=num_threads,
                       schedule="dynamic"):
        n = task // r.groups
        grp = task % r.groups
        buf = buffers + omp_get_thread_num() * r.col_size
        g = gs + n * positions * r.out_channels
        image = xs + n * volume
        if r.channels_last:
            for c in range(plane):
                memset(image + c * v.channels + grp * cin_g, 0, cin_g * sizeof(floating))
        else:
            memset(image + grp * cin_g * plane, 0, cin_g * plane * sizeof(floating))
        for tile in range(tiles):
            p0 = tile * r.tile
            p1 = min(p0 + r.tile, positions)
            if r.channels_last:
                # col[p, K] = g[p, grp·m_g + :] · weight[K, grp·m_g + :]ᵀ
                gemm(False, True, <int> (p1 - p0), <int> k_g, <int> m_g, 1,
                     g + p0 * r.out_channels + grp * m_g, <int> r.out_channels,
                     ws + grp * m_g, <int> r.out_channels, 0, buf, <int> k_g)
                col2vol_cl(buf, image, &v, &t, grp * cin_g, cin_g, p0, p1)
            else:
                gemm(True, False, <int> k_g, <int> (p1 - p0), <int> m_g, 1,
                     ws + grp * m_g * k_g, <int> k_g, g + grp * m_g * positions + p0,
                     <int> positions, 0, buf, <int> (p1 - p0))
                col2vol_cf(buf, image, &v, &t, grp * cin_g, cin_g, p0, p1)


# ------------------------------------------------------------------ layouts
def change_layout(const floating[::1] src, floating[::1] dst, Py_ssize_t batch,
                  Py_ssize_t channels, Py_ssize_t pixels, bint to_channels_last,
                  int num_threads):
    """dst[n, q, c] = src[n, c, q] (to_channels_last) or dst[n, c, q] = src[n, q, c], for
    the `pixels` voxels q of each volume: by runs of 64 voxels, whose channels-last block
    stays in cache while its C rows are read or written (16×16 register transposes in the
    AVX-512 build)."""
    cdef Py_ssize_t runs = (pixels + 63) // 64
    cdef Py_ssize_t row, n, q0, first, last
    cdef const floating* s = &src[0]
    cdef floating* d = &dst[0]
    for row in prange(batch * runs, nogil=True, num_threads=num_threads, schedule="static"):
        n = row // runs
        q0 = row % runs * 64
        first = n * channels * pixels + q0
        last = (n * pixels + q0) * channels
        if to_channels_last:
            transpose(s + first, pixels, d + last, channels, channels, min(64, pixels - q0))
        else:
            transpose(s + last, channels, d + first, pixels, min(64, pixels - q0), channels)
