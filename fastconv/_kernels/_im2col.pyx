"""im2col / col2im kernels over flat C-contiguous buffers (layouts in SPEC §1).

Every function trusts its arguments: fastconv.im2col validated shapes, geometry and
dtypes, and allocated `col` / `image` with the right sizes.
"""
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._kernels._geometry cimport Geometry
from fastconv._kernels._types cimport element_t
from fastconv._kernels._im2col_helpers cimport (
    col2im_nchw_plane, col2im_nchw_row, col2im_nhwc_row, im2col_nchw_rows, im2col_nhwc_row)

cdef enum:
    # channels-last: channels per fold_padded task (fixed, never the thread count)
    FOLD_CHANNELS = 64


def im2col_nchw(const element_t[::1] image, element_t[::1] col, Geometry g,
                Py_ssize_t batch, int num_threads):
    """col[n, (c*kh + i)*kw + j, oh*OW + ow]
    = image[n, c, oh*sh - top + i*dh, ow*sw - left + j*dw]."""
    cdef Py_ssize_t plane = g.height * g.width
    cdef Py_ssize_t rows_size = g.kernel_w * g.out_h * g.out_w
    cdef Py_ssize_t task
    cdef const element_t* src = &image[0]
    cdef element_t* dst = &col[0]
    # One task per (image, channel, kernel row i): enough tasks to keep every core busy
    # even for a single 3-channel image, and few integer divisions per element.
    for task in prange(batch * g.channels * g.kernel_h, nogil=True, num_threads=num_threads,
                       schedule="static"):
        im2col_nchw_rows(src + (task // g.kernel_h) * plane, dst + task * rows_size, &g,
                         task % g.kernel_h, 0, g.out_h)


def im2col_nhwc(const element_t[::1] image, element_t[::1] col, Geometry g,
                Py_ssize_t batch, int num_threads):
    """col[n, oh*OW + ow, (i*kw + j)*C + c]
    = image[n, oh*sh - top + i*dh, ow*sw - left + j*dw, c]."""
    cdef Py_ssize_t image_size = g.height * g.width * g.channels
    cdef Py_ssize_t rows_size = g.out_w * g.kernel_h * g.kernel_w * g.channels
    cdef Py_ssize_t task, n
    cdef const element_t* src = &image[0]
    cdef element_t* dst = &col[0]
    # One task per (image, output row).
    for task in prange(batch * g.out_h, nogil=True, num_threads=num_threads, schedule="static"):
        n = task // g.out_h
        im2col_nhwc_row(src + n * image_size, dst + task * rows_size, &g,
                        task % g.out_h, 0, g.channels)


def col2im_nchw(const element_t[::1] col, element_t[::1] image, Geometry g,
                Py_ssize_t batch, int num_threads):
    """image[n, c, h, w] = sum of the col entries im2col_nchw took from (h, w), in fixed order."""
    cdef Py_ssize_t kernel_area = g.kernel_h * g.kernel_w
    cdef Py_ssize_t channel_col = kernel_area * g.out_h * g.out_w
    cdef Py_ssize_t plane = g.height * g.width
    cdef Py_ssize_t task
    cdef const element_t* src = &col[0]
    cdef element_t* dst = &image[0]
    # Each task owns whole image rows (no races); both ways sum each pixel in the same
    # order, so the result does not depend on the thread count or the choice.
    if batch * g.channels >= 4 * num_threads:  # enough planes: one task per plane
        for task in prange(batch * g.channels, nogil=True, num_threads=num_threads,
                           schedule="static"):
            memset(dst + task * plane, 0, plane * sizeof(element_t))
            col2im_nchw_plane(src + task * channel_col, dst + task * plane, &g)
        return
    for task in prange(batch * g.channels * g.height, nogil=True, num_threads=num_threads,
                       schedule="static"):
        memset(dst + task * g.width, 0, g.width * sizeof(element_t))
        col2im_nchw_row(src + (task // g.height) * channel_col, dst + task * g.width, &g,
                        task % g.height, 0, g.out_h)


def col2im_nhwc(const element_t[::1] col, element_t[::1] image, Geometry g,
                Py_ssize_t batch, int num_threads):
    """image[n, h, w, c] = sum of the col entries im2col_nhwc took from (h, w, c), in fixed
    order."""
    cdef Py_ssize_t col_image = g.out_h * g.out_w * g.kernel_h * g.kernel_w * g.channels
    cdef Py_ssize_t row_size = g.width * g.channels
    cdef Py_ssize_t task
    cdef const element_t* src = &col[0]
    cdef element_t* dst = &image[0]
    for task in prange(batch * g.height, nogil=True, num_threads=num_threads, schedule="static"):
        memset(dst + task * row_size, 0, row_size * sizeof(element_t))
        col2im_nhwc_row(src + (task // g.height) * col_image, dst + task * row_size, &g,
                        task % g.height, 0, g.channels, 0, g.out_h)


def fold_padded(const element_t[::1] padded, element_t[::1] image, const Py_ssize_t[::1] rows,
                const Py_ssize_t[::1] cols, Py_ssize_t planes, Py_ssize_t height,
                Py_ssize_t width, Py_ssize_t channels, Py_ssize_t left, int num_threads):
    """Padding modes (docs/spec.md §6): image = what each coordinate of the padded image
    `padded` received, added onto the pixel the tables name (rows[p], cols[q]; −1: none),
    the adjoint of reading through the tables. NCHW: `planes` = N·C planes of one channel;
    NHWC: `planes` = N images of `channels` channels. Each pixel sums in a fixed order
    (ascending padded row; in a row, its own column, then the padding's in ascending order),
    whatever the thread count."""
    cdef Py_ssize_t padded_h = rows.shape[0], padded_w = cols.shape[0]
    cdef Py_ssize_t blocks = (channels + FOLD_CHANNELS - 1) // FOLD_CHANNELS
    cdef Py_ssize_t task, plane, c0, c1, p, q, r, s, c, w_src
    cdef const element_t* src
    cdef element_t* dst
    cdef const Py_ssize_t* row_table = &rows[0]
    cdef const Py_ssize_t* col_table = &cols[0]
    cdef const element_t* padded_p = &padded[0]
    cdef element_t* image_p = &image[0]
    for task in prange(planes * blocks, nogil=True, num_threads=num_threads,
                       schedule="static"):
        plane = task // blocks
        c0 = (task % blocks) * FOLD_CHANNELS
        c1 = c0 + FOLD_CHANNELS if c0 + FOLD_CHANNELS < channels else channels
        if channels == 1:
            memset(image_p + plane * height * width, 0, height * width * sizeof(element_t))
        else:
            for s in range(height * width):
                memset(image_p + (plane * height * width + s) * channels + c0, 0,
                       (c1 - c0) * sizeof(element_t))
        for p in range(padded_h):
            r = row_table[p]
            if r < 0:
                continue
            src = padded_p + (plane * padded_h + p) * padded_w * channels
            dst = image_p + (plane * height + r) * width * channels
            if channels == 1:
                for s in range(width):
                    dst[s] += src[left + s]
                for q in range(left):  # the padding columns, before and after the image
                    w_src = col_table[q]
                    if w_src >= 0:
                        dst[w_src] += src[q]
                for q in range(left + width, padded_w):
                    w_src = col_table[q]
                    if w_src >= 0:
                        dst[w_src] += src[q]
                continue
            for s in range(width):
                for c in range(c0, c1):
                    dst[s * channels + c] += src[(left + s) * channels + c]
            for q in range(left):
                w_src = col_table[q]
                if w_src >= 0:
                    for c in range(c0, c1):
                        dst[w_src * channels + c] += src[q * channels + c]
            for q in range(left + width, padded_w):
                w_src = col_table[q]
                if w_src >= 0:
                    for c in range(c0, c1):
                        dst[w_src * channels + c] += src[q * channels + c]
