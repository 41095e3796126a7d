"""space_to_batch / batch_to_space kernels over flat C-contiguous buffers (SPEC §3).

Both directions are one mapping between an image batch (N, C, H, W) and its blocks
(bh·bw·N, C, OH, OW), here in NCHW index order (NHWC is the same with C last):

    image[n, c, oh*bh + off_h - top, ow*bw + off_w - left]  <->  blocks[(off_h*bw + off_w)*N + n, c, oh, ow]

space_to_batch fills the blocks (zeros where the image index falls in the padding);
batch_to_space fills the image (block entries in the padding are the crops: dropped).
Every output element is written exactly once, padding zeros directly: no memset of the
whole buffer first. A row of NHWC pixels is handled like a row of NCHW elements whose
"pixel" is C elements long, so one pair of row helpers serves both layouts.

The loops are scheduled "guided" rather than "static": the output does not depend on
which thread copies what, and when another process takes a core, a static half of the
rows waits for it (measured here: a 1 ms copy taking 12 ms), while guided chunks let the
running thread take over the remaining rows.

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


cdef inline void space_to_batch_row(const element_t* image_rows, Py_ssize_t h_padded,
                                    element_t* dst_rows, Py_ssize_t block_batch_size,
                                    const BlockGeometry* g, Py_ssize_t n,
                                    Py_ssize_t pixel) noexcept nogil:
    """blocks[(off_h*bw + off_w)*N + n, h_padded//bh, ow, c] = image[h_padded - top, ow*bw + off_w - left, c]
    for every off_w, with off_h = h_padded % bh; 0 in the padding.

    `image_rows` is one image (NHWC, pixel = C) or one channel plane (NCHW, pixel = 1);
    `dst_rows` points at block row h_padded//bh of block batch 0 (and channel c for NCHW),
    block batch b's row is `block_batch_size` elements further per b."""
    cdef Py_ssize_t h_in = h_padded - g.pad_top
    cdef Py_ssize_t off_h = h_padded % g.block_h
    cdef Py_ssize_t row_size = g.out_w * pixel
    cdef Py_ssize_t off_w, w_offset, ow_lo, ow_hi
    # Block row of offset (off_h, off_w) is dst_rows + (off_h*bw + off_w)*N + n batches.
    cdef element_t* dst = dst_rows + (off_h * g.block_w * g.batch + n) * block_batch_size
    cdef Py_ssize_t offset_stride = g.batch * block_batch_size
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


cdef inline void batch_to_space_row(const element_t* src_rows, Py_ssize_t block_batch_size,
                                    element_t* dst_row, const BlockGeometry* g, Py_ssize_t n,
                                    Py_ssize_t h, Py_ssize_t pixel) noexcept nogil:
    """dst_row[w*pixel + c] = blocks[(off_h*bw + off_w)*N + n, (h + top)//bh, (w + left)//bw, c]
    with off_h = (h + top) % bh, off_w = (w + left) % bw.

    `src_rows` points at block row (h + top)//bh of block batch 0 (and channel c for NCHW);
    block batch b's row is `block_batch_size` elements further per b."""
    cdef Py_ssize_t h_padded = h + g.pad_top
    cdef Py_ssize_t off_h = h_padded % g.block_h
    cdef Py_ssize_t off_w, w_offset, ow_lo, ow_hi, block_batch
    if pixel == 1 and g.block_w == 2:
        block_batch = off_h * 2 * g.batch + n
        interleave_row(dst_row, src_rows + block_batch * block_batch_size,
                       src_rows + (block_batch + g.batch) * block_batch_size, g.pad_left,
                       g.width)
        return
    # One pass per block column offset: its source row is contiguous, its pixels land
    # every bw pixels of the image row, and together the passes cover the row once.
    for off_w in range(g.block_w):
        w_offset = off_w - g.pad_left
        valid_range(w_offset, g.block_w, g.width, g.out_w, &ow_lo, &ow_hi)
        block_batch = (off_h * g.block_w + off_w) * g.batch + n
        scatter_pixels(dst_row + (ow_lo * g.block_w + w_offset) * pixel,
                       src_rows + block_batch * block_batch_size + ow_lo * pixel,
                       ow_hi - ow_lo, g.block_w, pixel)


def space_to_batch_nchw(const element_t[::1] image, element_t[::1] blocks, BlockGeometry g,
                        int num_threads):
    """blocks[(off_h*bw + off_w)*N + n, c, oh, ow] = image[n, c, oh*bh + off_h - top, ow*bw + off_w - left]."""
    cdef Py_ssize_t plane_size = g.height * g.width
    cdef Py_ssize_t block_plane_size = g.out_h * g.out_w
    cdef Py_ssize_t block_batch_size = g.channels * block_plane_size
    cdef Py_ssize_t padded_h = g.out_h * g.block_h
    cdef Py_ssize_t task, plane, n, c, h_padded
    cdef const element_t* src = &image[0]
    cdef element_t* dst = &blocks[0]
    # One task per padded image row (n, c, h_padded): it reads its image row once and
    # writes the bw block rows made from it.
    for task in prange(g.batch * g.channels * padded_h, nogil=True, num_threads=num_threads,
                       schedule="guided"):
        plane = task // padded_h
        h_padded = task - plane * padded_h
        n = plane // g.channels
        c = plane - n * g.channels
        space_to_batch_row(src + plane * plane_size, h_padded,
                           dst + c * block_plane_size + (h_padded // g.block_h) * g.out_w,
                           block_batch_size, &g, n, 1)


def space_to_batch_nhwc(const element_t[::1] image, element_t[::1] blocks, BlockGeometry g,
                        int num_threads):
    """blocks[(off_h*bw + off_w)*N + n, oh, ow, c] = image[n, oh*bh + off_h - top, ow*bw + off_w - left, c]."""
    cdef Py_ssize_t image_size = g.height * g.width * g.channels
    cdef Py_ssize_t block_row_size = g.out_w * g.channels
    cdef Py_ssize_t block_batch_size = g.out_h * block_row_size
    cdef Py_ssize_t padded_h = g.out_h * g.block_h
    cdef Py_ssize_t task, n, h_padded
    cdef const element_t* src = &image[0]
    cdef element_t* dst = &blocks[0]
    # One task per padded image row (n, h_padded).
    for task in prange(g.batch * padded_h, nogil=True, num_threads=num_threads,
                       schedule="guided"):
        n = task // padded_h
        h_padded = task - n * padded_h
        space_to_batch_row(src + n * image_size, h_padded,
                           dst + (h_padded // g.block_h) * block_row_size,
                           block_batch_size, &g, n, g.channels)


def batch_to_space_nchw(const element_t[::1] blocks, element_t[::1] image, BlockGeometry g,
                        int num_threads):
    """image[n, c, h, w] = blocks[(off_h*bw + off_w)*N + n, c, (h + top)//bh, (w + left)//bw],
    off_h = (h + top) % bh, off_w = (w + left) % bw."""
    cdef Py_ssize_t block_plane_size = g.out_h * g.out_w
    cdef Py_ssize_t block_batch_size = g.channels * block_plane_size
    cdef Py_ssize_t rows = g.batch * g.channels * g.height
    cdef Py_ssize_t task, plane, n, c, h
    cdef const element_t* src = &blocks[0]
    cdef element_t* dst = &image[0]
    # One task per output row (n, c, h).
    for task in prange(rows, nogil=True, num_threads=num_threads, schedule="guided"):
        plane = task // g.height
        h = task - plane * g.height
        n = plane // g.channels
        c = plane - n * g.channels
        batch_to_space_row(
            src + c * block_plane_size + ((h + g.pad_top) // g.block_h) * g.out_w,
            block_batch_size, dst + task * g.width, &g, n, h, 1)


def batch_to_space_nhwc(const element_t[::1] blocks, element_t[::1] image, BlockGeometry g,
                        int num_threads):
    """image[n, h, w, c] = blocks[(off_h*bw + off_w)*N + n, (h + top)//bh, (w + left)//bw, c],
    off_h = (h + top) % bh, off_w = (w + left) % bw."""
    cdef Py_ssize_t block_row_size = g.out_w * g.channels
    cdef Py_ssize_t block_batch_size = g.out_h * block_row_size
    cdef Py_ssize_t row_size = g.width * g.channels
    cdef Py_ssize_t rows = g.batch * g.height
    cdef Py_ssize_t task, n, h
    cdef const element_t* src = &blocks[0]
    cdef element_t* dst = &image[0]
    # One task per output row (n, h).
    for task in prange(rows, nogil=True, num_threads=num_threads, schedule="guided"):
        n = task // g.height
        h = task - n * g.height
        batch_to_space_row(src + ((h + g.pad_top) // g.block_h) * block_row_size,
                           block_batch_size, dst + task * row_size, &g, n, h, g.channels)
