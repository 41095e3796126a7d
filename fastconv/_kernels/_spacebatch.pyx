"""space_to_batch / batch_to_space kernels over flat C-contiguous buffers (SPEC §3).

Both directions are one mapping between an image batch (N, C, H, W) and its blocks
(bh·bw·N, C, OH, OW), here in NCHW index order (NHWC is the same with C last):

    image[n, c, oh*bh + off_h - top, ow*bw + off_w - left]
        <->  blocks[(off_h*bw + off_w)*N + n, c, oh, ow]

space_to_batch fills the blocks (zeros where the image index falls in the padding);
batch_to_space fills the image (block entries in the padding are the crops: dropped).
Every output element is written exactly once, padding zeros directly: no memset of the
whole buffer first. A row of NHWC pixels is handled like a row of NCHW elements whose
"pixel" is C elements long, so one pair of row helpers serves both layouts.

The loops are scheduled "guided" rather than "static": the output does not depend on
which thread copies what, and when another process takes a core, guided chunks let the
running thread take over the remaining rows instead of a static half waiting for it
(docs/performance.md#guided-scheduling).

Every function trusts its arguments: fastconv.spacebatch validated shapes, block and
padding, and allocated the output with the right size.
"""
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from fastconv._kernels._types cimport element_t
from fastconv._kernels._im2col_helpers cimport valid_range


ctypedef struct BlockGeometry:
    Py_ssize_t batch      # N, images
    Py_ssize_t channels   # C
    Py_ssize_t height     # H, the image (space_to_batch's input, batch_to_space's output)
    Py_ssize_t width      # W
    Py_ssize_t block_h    # bh
    Py_ssize_t block_w    # bw
    Py_ssize_t pad_top    # padding (space_to_batch) or crops (batch_to_space); the bottom
    Py_ssize_t pad_left   # and right ones only decide out_h / out_w
    Py_ssize_t out_h      # OH = (H + top + bottom) / bh
    Py_ssize_t out_w      # OW = (W + left + right) / bw


cdef inline void gather_pixels(element_t* dst, const element_t* src, Py_ssize_t count,
                               Py_ssize_t step, Py_ssize_t pixel) noexcept nogil:
    """dst[k*pixel + c] = src[k*step*pixel + c] for k < count, c < pixel."""
    cdef Py_ssize_t k, c
    if step == 1:  # neighbouring pixels: one run
        memcpy(dst, src, count * pixel * sizeof(element_t))
    elif pixel == 1:  # NCHW (bw = 2 has its own one-pass loop, deinterleave_row)
        for k in range(count):
            dst[k] = src[k * step]
    elif pixel < 16:  # NHWC, few channels: element loops beat a call per pixel
        for k in range(count):
            for c in range(pixel):
                dst[k * pixel + c] = src[k * step * pixel + c]
    else:  # NHWC: one contiguous run of C elements per pixel
        for k in range(count):
            memcpy(dst + k * pixel, src + k * step * pixel, pixel * sizeof(element_t))


cdef inline void scatter_pixels(element_t* dst, const element_t* src, Py_ssize_t count,
                                Py_ssize_t step, Py_ssize_t pixel) noexcept nogil:
    """dst[k*step*pixel + c] = src[k*pixel + c] for k < count, c < pixel."""
    cdef Py_ssize_t k, c
    if step == 1:
        memcpy(dst, src, count * pixel * sizeof(element_t))
    elif pixel == 1:  # NCHW (bw = 2 has its own one-pass loop, interleave_row)
        for k in range(count):
            dst[k * step] = src[k]
    elif pixel < 16:
        for k in range(count):
            for c in range(pixel):
                dst[k * step * pixel + c] = src[k * pixel + c]
    else:
        for k in range(count):
            memcpy(dst + k * step * pixel, src + k * pixel, pixel * sizeof(element_t))


cdef inline void interleave_row(element_t* dst, const element_t* even, const element_t* odd,
                                Py_ssize_t left, Py_ssize_t width) noexcept nogil:
    """dst[w] = (even if (w + left) % 2 == 0 else odd)[(w + left) // 2] for w < width."""
    cdef Py_ssize_t w = 0
    cdef Py_ssize_t k, pairs
    cdef Py_ssize_t ow = left // 2
    # Whole pairs in one pass, so the row is written front to back in full vectors
    # (two strided passes would each write every other element).
    if left % 2 and width > 0:
        dst[0] = odd[ow]
        w = 1
        ow += 1
    pairs = (width - w) // 2
    for k in range(pairs):
        dst[w + 2 * k] = even[ow + k]
        dst[w + 2 * k + 1] = odd[ow + k]
    if w + 2 * pairs < width:
        dst[width - 1] = even[ow + pairs]


cdef inline element_t element_or_zero(const element_t* row, Py_ssize_t w,
                                      Py_ssize_t width) noexcept nogil:
    """row[w] if 0 <= w < width, else 0 (the padding)."""
    if w < 0 or w >= width:
        return 0
    return row[w]


cdef inline void deinterleave_row(element_t* even, element_t* odd, const element_t* src,
                                  Py_ssize_t left, Py_ssize_t width,
                                  Py_ssize_t out_w) noexcept nogil:
    """even[ow] = src[2*ow - left], odd[ow] = src[2*ow + 1 - left]; 0 outside [0, width)."""
    # [lo, hi): the ow whose two pixels are both inside the row; the few others (the
    # padding at either end) go element by element.
    cdef Py_ssize_t hi = min(out_w, (width + left) // 2)
    cdef Py_ssize_t lo = min((left + 1) // 2, hi)
    cdef Py_ssize_t ow
    cdef const element_t* src_pairs = src - left
    for ow in range(lo):
        even[ow] = element_or_zero(src, 2 * ow - left, width)
        odd[ow] = element_or_zero(src, 2 * ow + 1 - left, width)
    # One pass over the image row, reading it once, in full vectors.
    for ow in range(lo, hi):
        even[ow] = src_pairs[2 * ow]
        odd[ow] = src_pairs[2 * ow + 1]
    for ow in range(hi, out_w):
        even[ow] = element_or_zero(src, 2 * ow - left, width)
        odd[ow] = element_or_zero(src, 2 * ow + 1 - left, width)


cdef inline void space_to_batch_row(const element_t* image_rows, Py_ssize_t h_in,
                                    element_t* dst, Py_ssize_t offset_stride,
                                    const BlockGeometry* g, Py_ssize_t pixel) noexcept nogil:
    """dst[off_w*offset_stride + ow*pixel + c] = image_rows[h_in, ow*bw + off_w - left, c]
    for every off_w < bw; 0 in the padding.

    `image_rows` is one image (NHWC, pixel = C) or one channel plane (NCHW, pixel = 1);
    `dst` is the block row of column offset 0 that image row h_in feeds, and the row of
    offset off_w is off_w*offset_stride further (N block batches, N*C block planes)."""
    cdef Py_ssize_t row_size = g.out_w * pixel
    cdef Py_ssize_t off_w, w_offset, ow_lo, ow_hi
    if h_in < 0 or h_in >= g.height:  # a padding row: bw block rows of zeros
        for off_w in range(g.block_w):
            memset(dst + off_w * offset_stride, 0, row_size * sizeof(element_t))
        return
    if pixel == 1 and g.block_w == 2:
        deinterleave_row(dst, dst + offset_stride, image_rows + h_in * g.width, g.pad_left,
                         g.width, g.out_w)
        return
    # One pass per block column offset: the image row's pixels every bw apart fill one
    # block row, and together the passes write each of the bw block rows once.
    for off_w in range(g.block_w):
        w_offset = off_w - g.pad_left
        valid_range(w_offset, g.block_w, g.width, g.out_w, &ow_lo, &ow_hi)
        memset(dst, 0, ow_lo * pixel * sizeof(element_t))
        gather_pixels(dst + ow_lo * pixel,
                      image_rows + (h_in * g.width + ow_lo * g.block_w + w_offset) * pixel,
                      ow_hi - ow_lo, g.block_w, pixel)
        memset(dst + ow_hi * pixel, 0, (row_size - ow_hi * pixel) * sizeof(element_t))
        dst += offset_stride


cdef inline void batch_to_space_row(const element_t* src, Py_ssize_t offset_stride,
                                    element_t* dst_row, const BlockGeometry* g,
                                    Py_ssize_t pixel) noexcept nogil:
    """dst_row[w*pixel + c] = src[off_w*offset_stride + ((w + left)//bw)*pixel + c]
    with off_w = (w + left) % bw.

    `src` is the block row of column offset 0 that feeds this image row; the row of
    offset off_w is off_w*offset_stride further (N block batches, N*C block planes)."""
    cdef Py_ssize_t off_w, w_offset, ow_lo, ow_hi
    if pixel == 1 and g.block_w == 2:
        interleave_row(dst_row, src, src + offset_stride, g.pad_left, g.width)
        return
    # One pass per block column offset: its source row is contiguous, its pixels land
    # every bw pixels of the image row, and together the passes cover the row once.
    for off_w in range(g.block_w):
        w_offset = off_w - g.pad_left
        valid_range(w_offset, g.block_w, g.width, g.out_w, &ow_lo, &ow_hi)
        scatter_pixels(dst_row + (ow_lo * g.block_w + w_offset) * pixel,
                       src + off_w * offset_stride + ow_lo * pixel,
                       ow_hi - ow_lo, g.block_w, pixel)


cdef inline void space_to_batch_plane(const element_t* plane, element_t* dst_plane,
                                      const BlockGeometry* g) noexcept nogil:
    """Every block row made from one NCHW channel plane; `dst_plane` is the block plane of
    offset (0, 0) (block batch n, channel c)."""
    cdef Py_ssize_t offset_stride = g.batch * g.channels * g.out_h * g.out_w
    cdef Py_ssize_t oh, off_h
    # Nested loops instead of h_padded // bh: no integer division per row.
    for oh in range(g.out_h):
        for off_h in range(g.block_h):
            space_to_batch_row(plane, oh * g.block_h + off_h - g.pad_top,
                               dst_plane + off_h * g.block_w * offset_stride + oh * g.out_w,
                               offset_stride, g, 1)


cdef inline void batch_to_space_plane(const element_t* src_plane, element_t* plane,
                                      const BlockGeometry* g) noexcept nogil:
    """One NCHW channel plane of the image; `src_plane` is the block plane of offset (0, 0)
    (block batch n, channel c)."""
    cdef Py_ssize_t offset_stride = g.batch * g.channels * g.out_h * g.out_w
    cdef Py_ssize_t h
    cdef Py_ssize_t oh = g.pad_top // g.block_h
    cdef Py_ssize_t off_h = g.pad_top % g.block_h
    for h in range(g.height):
        batch_to_space_row(src_plane + off_h * g.block_w * offset_stride + oh * g.out_w,
                           offset_stride, plane + h * g.width, g, 1)
        off_h += 1  # (oh, off_h) = divmod(h + top, bh), without a division per row
        if off_h == g.block_h:
            off_h = 0
            oh += 1


def space_to_batch_nchw(const element_t[::1] image, element_t[::1] blocks, BlockGeometry g,
                        int num_threads):
    """blocks[(off_h*bw + off_w)*N + n, c, oh, ow]
    = image[n, c, oh*bh + off_h - top, ow*bw + off_w - left]."""
    cdef Py_ssize_t planes = g.batch * g.channels
    cdef Py_ssize_t plane_size = g.height * g.width
    cdef Py_ssize_t block_plane_size = g.out_h * g.out_w
    cdef Py_ssize_t offset_stride = planes * block_plane_size
    cdef Py_ssize_t padded_h = g.out_h * g.block_h
    cdef Py_ssize_t task, plane, h_padded, oh
    cdef const element_t* src = &image[0]
    cdef element_t* dst = &blocks[0]
    # Plane (n, c) of the image feeds plane c of block batches (off_h*bw + off_w)*N + n,
    # which is plane n*C + c of offset (0, 0) plus (off_h*bw + off_w)*offset_stride.
    if planes >= 4 * num_threads:  # enough planes: one task per plane
        for plane in prange(planes, nogil=True, num_threads=num_threads, schedule="guided"):
            space_to_batch_plane(src + plane * plane_size, dst + plane * block_plane_size, &g)
        return
    # Few planes: one task per padded image row, so every thread gets work.
    for task in prange(planes * padded_h, nogil=True, num_threads=num_threads,
                       schedule="guided"):
        plane = task // padded_h
        h_padded = task - plane * padded_h
        oh = h_padded // g.block_h
        space_to_batch_row(
            src + plane * plane_size, h_padded - g.pad_top,
            dst + plane * block_plane_size
            + (h_padded - oh * g.block_h) * g.block_w * offset_stride + oh * g.out_w,
            offset_stride, &g, 1)


def space_to_batch_nhwc(const element_t[::1] image, element_t[::1] blocks, BlockGeometry g,
                        int num_threads):
    """blocks[(off_h*bw + off_w)*N + n, oh, ow, c]
    = image[n, oh*bh + off_h - top, ow*bw + off_w - left, c]."""
    cdef Py_ssize_t image_size = g.height * g.width * g.channels
    cdef Py_ssize_t block_row_size = g.out_w * g.channels
    cdef Py_ssize_t block_batch_size = g.out_h * block_row_size
    cdef Py_ssize_t offset_stride = g.batch * block_batch_size
    cdef Py_ssize_t padded_h = g.out_h * g.block_h
    cdef Py_ssize_t task, n, h_padded, oh
    cdef const element_t* src = &image[0]
    cdef element_t* dst = &blocks[0]
    # One task per padded image row (n, h_padded): it reads its image row once and writes
    # the bw block rows made from it (rows are long: C elements per pixel).
    for task in prange(g.batch * padded_h, nogil=True, num_threads=num_threads,
                       schedule="guided"):
        n = task // padded_h
        h_padded = task - n * padded_h
        oh = h_padded // g.block_h
        space_to_batch_row(
            src + n * image_size, h_padded - g.pad_top,
            dst + n * block_batch_size
            + (h_padded - oh * g.block_h) * g.block_w * offset_stride + oh * block_row_size,
            offset_stride, &g, g.channels)


def batch_to_space_nchw(const element_t[::1] blocks, element_t[::1] image, BlockGeometry g,
                        int num_threads):
    """image[n, c, h, w] = blocks[(off_h*bw + off_w)*N + n, c, (h + top)//bh, (w + left)//bw],
    off_h = (h + top) % bh, off_w = (w + left) % bw."""
    cdef Py_ssize_t planes = g.batch * g.channels
    cdef Py_ssize_t plane_size = g.height * g.width
    cdef Py_ssize_t block_plane_size = g.out_h * g.out_w
    cdef Py_ssize_t offset_stride = planes * block_plane_size
    cdef Py_ssize_t task, plane, h, h_padded, oh
    cdef const element_t* src = &blocks[0]
    cdef element_t* dst = &image[0]
    if planes >= 4 * num_threads:  # enough planes: one task per plane
        for plane in prange(planes, nogil=True, num_threads=num_threads, schedule="guided"):
            batch_to_space_plane(src + plane * block_plane_size, dst + plane * plane_size, &g)
        return
    # Few planes: one task per image row.
    for task in prange(planes * g.height, nogil=True, num_threads=num_threads,
                       schedule="guided"):
        plane = task // g.height
        h = task - plane * g.height
        h_padded = h + g.pad_top
        oh = h_padded // g.block_h
        batch_to_space_row(
            src + plane * block_plane_size
            + (h_padded - oh * g.block_h) * g.block_w * offset_stride + oh * g.out_w,
            offset_stride, dst + task * g.width, &g, 1)


def batch_to_space_nhwc(const element_t[::1] blocks, element_t[::1] image, BlockGeometry g,
                        int num_threads):
    """image[n, h, w, c] = blocks[(off_h*bw + off_w)*N + n, (h + top)//bh, (w + left)//bw, c],
    off_h = (h + top) % bh, off_w = (w + left) % bw."""
    cdef Py_ssize_t block_row_size = g.out_w * g.channels
    cdef Py_ssize_t block_batch_size = g.out_h * block_row_size
    cdef Py_ssize_t offset_stride = g.batch * block_batch_size
    cdef Py_ssize_t row_size = g.width * g.channels
    cdef Py_ssize_t task, n, h_padded, oh
    cdef const element_t* src = &blocks[0]
    cdef element_t* dst = &image[0]
    # One task per image row (n, h).
    for task in prange(g.batch * g.height, nogil=True, num_threads=num_threads,
                       schedule="guided"):
        n = task // g.height
        h_padded = task - n * g.height + g.pad_top
        oh = h_padded // g.block_h
        batch_to_space_row(
            src + n * block_batch_size
            + (h_padded - oh * g.block_h) * g.block_w * offset_stride + oh * block_row_size,
            offset_stride, dst + task * row_size, &g, g.channels)
