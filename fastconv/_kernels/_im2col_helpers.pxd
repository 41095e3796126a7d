# Per-row im2col / col2im helpers shared by the im2col and conv kernels.
# They trust their arguments: fastconv.geometry validated every index beforehand.
from libc.string cimport memcpy, memset

from fastconv._kernels._geometry cimport (
    Geometry, col_sources, input_col, input_row, output_row, source_row)
from fastconv._kernels._types cimport element_t


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for a >= 0, b > 0."""
    return (a + b - 1) // b


cdef inline void valid_range(Py_ssize_t offset, Py_ssize_t step, Py_ssize_t size,
                             Py_ssize_t count, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the k in [0, count) with 0 <= k*step + offset < size."""
    cdef Py_ssize_t first, end
    if step == 1:  # the common case, without integer division (tens of cycles each)
        first = 0 if offset >= 0 else -offset
        end = size - offset
    else:
        first = 0 if offset >= 0 else ceil_div(-offset, step)
        end = 0 if size - 1 - offset < 0 else (size - 1 - offset) // step + 1
    if end > count:
        end = count
    if end < 0:
        end = 0
    if first > end:
        first = end
    lo[0] = first
    hi[0] = end


cdef inline void inside_range(Py_ssize_t first_offset, Py_ssize_t last_offset,
                              Py_ssize_t step, Py_ssize_t size, Py_ssize_t count,
                              Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the k in [0, count) whose whole window, k*step + first_offset ..
    k*step + last_offset, lies in [0, size) (lo == hi when there is none)."""
    cdef Py_ssize_t unused
    valid_range(first_offset, step, size, count, lo, &unused)
    valid_range(last_offset, step, size, count, &unused, hi)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef inline void inside_rows(const Geometry* g, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the output rows whose kernel_h taps all read rows inside the image."""
    inside_range(input_row(g, 0, 0), input_row(g, 0, g.kernel_h - 1), g.stride_h, g.height,
                 g.out_h, lo, hi)


cdef inline void inside_cols(const Geometry* g, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi) = the output columns whose kernel_w taps all read columns inside the image."""
    inside_range(input_col(g, 0, 0), input_col(g, 0, g.kernel_w - 1), g.stride_w, g.width,
                 g.out_w, lo, hi)


cdef inline void im2col_nchw_rows(const element_t* plane, element_t* col_rows, const Geometry* g,
                                  Py_ssize_t i, Py_ssize_t oh_begin,
                                  Py_ssize_t oh_end) noexcept nogil:
    """The kw column rows (i, 0..kw-1) of one channel plane for output rows [oh_begin, oh_end)."""
    cdef Py_ssize_t j
    cdef Py_ssize_t row_len = (oh_end - oh_begin) * g.out_w
    for j in range(g.kernel_w):
        im2col_nchw_row(plane, col_rows + j * row_len, g, i, j, oh_begin, oh_end)


cdef inline void edge_columns(element_t* dst, const element_t* src, const Geometry* g,
                              Py_ssize_t ow_begin, Py_ssize_t ow_end,
                              Py_ssize_t w_offset) noexcept nogil:
    """dst[ow] for ow in [ow_begin, ow_end), positions whose column ow·sw + w_offset lies in
    the padding: 0, or with a padding mode the value of the image row `src` at the column
    the table names."""
    cdef Py_ssize_t ow, w_src
    cdef const Py_ssize_t* table = col_sources(g)
    if table == NULL:
        for ow in range(ow_begin, ow_end):
            dst[ow] = 0
        return
    for ow in range(ow_begin, ow_end):
        w_src = table[ow * g.stride_w + w_offset + g.pad_left]
        dst[ow] = src[w_src] if w_src >= 0 else 0


cdef inline void im2col_nchw_row(const element_t* plane, element_t* col_row, const Geometry* g,
                                 Py_ssize_t i, Py_ssize_t j, Py_ssize_t oh_begin,
                                 Py_ssize_t oh_end) noexcept nogil:
    """col_row[(oh - oh_begin)*OW + ow] = plane[oh*sh - top + i*dh, ow*sw - left + j*dw];
    0 in the padding, or with a padding mode the pixel the tables name."""
    cdef Py_ssize_t w_offset = j * g.dilation_w - g.pad_left
    cdef Py_ssize_t ow_lo, ow_hi, oh, ow, h_im
    cdef element_t* dst
    cdef const element_t* src
    valid_range(w_offset, g.stride_w, g.width, g.out_w, &ow_lo, &ow_hi)
    for oh in range(oh_begin, oh_end):
        dst = col_row + (oh - oh_begin) * g.out_w
        h_im = source_row(g, input_row(g, oh, i))
        if h_im < 0:
            for ow in range(g.out_w):
                dst[ow] = 0
            continue
        # Plain loops, not memcpy/memset: rows are short (7 to 224 elements), and the
        # compiler vectorises these without a call per row.
        src = plane + h_im * g.width
        edge_columns(dst, src, g, 0, ow_lo, w_offset)
        if g.stride_w == 1:
            for ow in range(ow_lo, ow_hi):
                dst[ow] = src[ow + w_offset]
        elif g.stride_w == 2:  # a constant stride lets the compiler vectorise (permutes)
            for ow in range(ow_lo, ow_hi):
                dst[ow] = src[2 * ow + w_offset]
        else:
            for ow in range(ow_lo, ow_hi):
                dst[ow] = src[ow * g.stride_w + w_offset]
        edge_columns(dst, src, g, ow_hi, g.out_w, w_offset)


cdef inline void edge_pixels(element_t* dst, const element_t* src_row, const Geometry* g,
                             const Py_ssize_t* table, Py_ssize_t w_im, Py_ssize_t j_begin,
                             Py_ssize_t j_end, Py_ssize_t c_count) noexcept nogil:
    """dst[j*c_count .. +c_count] for taps j in [j_begin, j_end) whose column
    w_im + j*dw lies in the padding: the pixel of the image row `src_row` (from channel
    c_begin on) the column table names, or zeros where it names none."""
    cdef Py_ssize_t j, w_src
    for j in range(j_begin, j_end):
        w_src = table[w_im + j * g.dilation_w + g.pad_left]
        if w_src >= 0:
            memcpy(dst + j * c_count, src_row + w_src * g.channels, c_count * sizeof(element_t))
        else:
            memset(dst + j * c_count, 0, c_count * sizeof(element_t))


cdef inline void im2col_nhwc_row(const element_t* image, element_t* col_rows, const Geometry* g,
                                 Py_ssize_t oh, Py_ssize_t c_begin,
                                 Py_ssize_t c_count) noexcept nogil:
    """col_rows[ow, (i*kw + j)*Cg + c]
    = image[oh*sh - top + i*dh, ow*sw - left + j*dw, c_begin + c] (0 in the padding, or
    with a padding mode the pixel the tables name)."""
    cdef Py_ssize_t row_len = g.kernel_h * g.kernel_w * c_count
    cdef Py_ssize_t run = g.kernel_w * c_count
    cdef Py_ssize_t ow, i, j, h_im, w_im, j_lo, j_hi
    cdef const Py_ssize_t* table = col_sources(g)
    cdef element_t* dst
    cdef const element_t* src_row
    for ow in range(g.out_w):
        w_im = input_col(g, ow, 0)
        valid_range(w_im, g.dilation_w, g.width, g.kernel_w, &j_lo, &j_hi)
        for i in range(g.kernel_h):
            dst = col_rows + ow * row_len + i * run
            h_im = source_row(g, input_row(g, oh, i))
            if h_im < 0:
                memset(dst, 0, run * sizeof(element_t))
                continue
            src_row = image + h_im * g.width * g.channels + c_begin
            if table == NULL:
                memset(dst, 0, j_lo * c_count * sizeof(element_t))
            else:
                edge_pixels(dst, src_row, g, table, w_im, 0, j_lo, c_count)
            if g.dilation_w == 1 and c_count == g.channels and j_lo < j_hi:
                # Neighbouring kernel columns are neighbouring pixels: one contiguous run.
                memcpy(dst + j_lo * c_count, src_row + (w_im + j_lo) * g.channels,
                       (j_hi - j_lo) * c_count * sizeof(element_t))
            else:
                for j in range(j_lo, j_hi):
                    memcpy(dst + j * c_count, src_row + (w_im + j * g.dilation_w) * g.channels,
                           c_count * sizeof(element_t))
            if table == NULL:
                memset(dst + j_hi * c_count, 0, (g.kernel_w - j_hi) * c_count * sizeof(element_t))
            else:
                edge_pixels(dst, src_row, g, table, w_im, j_hi, g.kernel_w, c_count)


cdef inline void col2im_nchw_row(const element_t* col_channel, element_t* dst_row,
                                 const Geometry* g, Py_ssize_t h_im, Py_ssize_t oh_begin,
                                 Py_ssize_t oh_end) noexcept nogil:
    """dst_row[w] += every col_channel[i*kw + j, (oh - oh_begin)*OW + ow], oh in the tile,
    that im2col took from (h_im, w)."""
    cdef Py_ssize_t out_size = (oh_end - oh_begin) * g.out_w
    cdef Py_ssize_t i, j, oh, ow, ow_lo, ow_hi, w_offset
    cdef const element_t* src
    cdef element_t* dst
    # Kernel rows from the bottom: contributions then arrive in ascending oh, the same
    # order however the output rows are cut into tiles, so sums do not depend on tiling.
    for i in range(g.kernel_h - 1, -1, -1):
        oh = output_row(g, h_im, i)
        if oh < oh_begin or oh >= oh_end:  # none (−1), or outside the tile
            continue
        for j in range(g.kernel_w):
            w_offset = j * g.dilation_w - g.pad_left
            valid_range(w_offset, g.stride_w, g.width, g.out_w, &ow_lo, &ow_hi)
            if ow_lo == ow_hi:  # no column lands in the image (and dst would point far outside)
                continue
            src = col_channel + (i * g.kernel_w + j) * out_size + (oh - oh_begin) * g.out_w
            if g.stride_w == 1:
                dst = dst_row + (ow_lo + w_offset)
                for ow in range(ow_hi - ow_lo):
                    dst[ow] += src[ow_lo + ow]
            else:
                for ow in range(ow_lo, ow_hi):
                    dst_row[ow * g.stride_w + w_offset] += src[ow]


cdef inline void col2im_nchw_plane(const element_t* col_channel, element_t* plane,
                                   const Geometry* g) noexcept nogil:
    """plane[h, w] += every col_channel[i*kw + j, oh*OW + ow] that im2col took from (h, w),
    tap by tap: the same per-pixel order as col2im_nchw_row (kernel rows from the bottom),
    so the same sums, with the bounds worked out once per tap instead of once per row."""
    cdef Py_ssize_t out_size = g.out_h * g.out_w
    cdef Py_ssize_t i, j, oh, ow, ow_lo, ow_hi, h_im, w_offset
    cdef const element_t* src
    cdef element_t* dst
    for i in range(g.kernel_h - 1, -1, -1):
        for j in range(g.kernel_w):
            w_offset = j * g.dilation_w - g.pad_left
            valid_range(w_offset, g.stride_w, g.width, g.out_w, &ow_lo, &ow_hi)
            if ow_lo == ow_hi:  # no column lands in the image (and dst would point far outside)
                continue
            for oh in range(g.out_h):
                h_im = input_row(g, oh, i)
                if h_im < 0 or h_im >= g.height:
                    continue
                src = col_channel + (i * g.kernel_w + j) * out_size + oh * g.out_w
                if g.stride_w == 1:
                    dst = plane + h_im * g.width + (ow_lo + w_offset)
                    for ow in range(ow_hi - ow_lo):
                        dst[ow] += src[ow_lo + ow]
                else:
                    dst = plane + h_im * g.width
                    for ow in range(ow_lo, ow_hi):
                        dst[ow * g.stride_w + w_offset] += src[ow]


cdef inline void col2im_nhwc_row(const element_t* col_tile, element_t* dst_row, const Geometry* g,
                                 Py_ssize_t h_im, Py_ssize_t c_begin, Py_ssize_t c_count,
                                 Py_ssize_t oh_begin, Py_ssize_t oh_end) noexcept nogil:
    """dst_row[w, c_begin + c] += every col_tile[(oh - oh_begin)*OW + ow, (i*kw + j)*Cg + c],
    oh in the tile, that im2col took from (h_im, w)."""
    cdef Py_ssize_t row_len = g.kernel_h * g.kernel_w * c_count
    cdef Py_ssize_t i, j, c, oh, ow, w_im, j_lo, j_hi
    cdef const element_t* src
    cdef element_t* dst
    # Kernel rows from the bottom: contributions then arrive in ascending oh, the same
    # order however the output rows are cut into tiles, so sums do not depend on tiling.
    for i in range(g.kernel_h - 1, -1, -1):
        oh = output_row(g, h_im, i)
        if oh < oh_begin or oh >= oh_end:  # none (−1), or outside the tile
            continue
        for ow in range(g.out_w):
            w_im = input_col(g, ow, 0)
            valid_range(w_im, g.dilation_w, g.width, g.kernel_w, &j_lo, &j_hi)
            for j in range(j_lo, j_hi):
                src = (col_tile + ((oh - oh_begin) * g.out_w + ow) * row_len
                       + (i * g.kernel_w + j) * c_count)
                dst = dst_row + (w_im + j * g.dilation_w) * g.channels + c_begin
                for c in range(c_count):
                    dst[c] += src[c]
