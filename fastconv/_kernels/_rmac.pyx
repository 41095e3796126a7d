"""Region max-pooling kernels for R-MAC (SPEC §4) over flat C-contiguous buffers.

A *block* is what one task reads: one channel plane (NCHW) or a run of `count` channels
of one image (NHWC). Element (y, x, k) of a block sits at
``base + y*row_stride + x*pixel_stride + k``; NCHW has pixel_stride = count = 1.

Maxima follow np.max: a NaN anywhere in a box makes the box's maximum NaN. Every maximum
is one comparison chain over the same elements whatever the thread count, so results are
bit-identical for any number of threads. Everything here trusts fastconv.rmac, which
validated boxes, shapes and workspace sizes.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport NAN
from libc.string cimport memcpy

from fastconv._kernels._openmp cimport omp_get_thread_num


# ---------------------------------------------------------------- helpers
cdef inline bint beats(floating value, floating best) noexcept nogil:
    """value > best, or value is NaN: a NaN, once taken, is never replaced (np.max's rule)."""
    return (value > best) | (value != value)


cdef inline void max_into(floating* best, const floating* values,
                          Py_ssize_t count) noexcept nogil:
    """best[k] = max(best[k], values[k]) for k < count."""
    cdef Py_ssize_t k
    for k in range(count):
        # A select rather than a conditional store, so the loop vectorises.
        best[k] = values[k] if beats(values[k], best[k]) else best[k]


cdef inline floating run_max(const floating* values, Py_ssize_t length,
                             Py_ssize_t stride) noexcept nogil:
    """max over i < length of values[i*stride] (length >= 1), NaN if any is NaN."""
    cdef floating best = values[0]
    cdef floating value
    cdef bint seen_nan = best != best
    cdef Py_ssize_t i
    for i in range(1, length):
        # maxss and an or: no branch to mispredict, unlike a NaN-aware comparison.
        value = values[i * stride]
        best = value if value > best else best
        seen_nan = seen_nan | (value != value)
    return NAN if seen_nan else best


cdef inline void vectors_max(floating* best, const floating* first, Py_ssize_t vectors,
                             Py_ssize_t stride, Py_ssize_t count) noexcept nogil:
    """best[k] = max over i < vectors of first[i*stride + k], for k < count (vectors >= 1)."""
    cdef Py_ssize_t i
    if count == 1:
        best[0] = run_max(first, vectors, stride)
        return
    memcpy(best, first, count * sizeof(floating))
    for i in range(1, vectors):
        max_into(best, first + i * stride, count)


cdef void box_max(const floating* base, floating* out, Py_ssize_t x1, Py_ssize_t y1,
                  Py_ssize_t x2, Py_ssize_t y2, Py_ssize_t row_stride, Py_ssize_t pixel_stride,
                  Py_ssize_t count, floating* columns) noexcept nogil:
    """out[k] = max over y1 <= y <= y2, x1 <= x <= x2 of block element (y, x, k).
    NCHW (count 1): rows fold into `columns` (box width elements) elementwise, then one
    short scalar run; NHWC: pixel vectors fold straight into out."""
    cdef Py_ssize_t y, x
    cdef Py_ssize_t box_width = x2 - x1 + 1
    cdef const floating* corner = base + y1 * row_stride + x1 * pixel_stride
    if count == 1:
        vectors_max(columns, corner, y2 - y1 + 1, row_stride, box_width)
        out[0] = run_max(columns, box_width, 1)
        return
    memcpy(out, corner, count * sizeof(floating))
    for y in range(y2 - y1 + 1):
        for x in range(box_width):
            max_into(out, corner + y * row_stride + x * pixel_stride, count)


# ---------------------------------------------------------------- R-MAC plan
# The regions of one image, cut so that every element is read once: rows are cut at every
# box's top and bottom edge into row segments and columns at every left and right edge into
# column segments. A band (the rows of one or more boxes) is then a run of row segments and
# a box within its band a run of column segments.
#
# A task takes `count` channels of one image. Its workspace holds vectors of `count`
# elements (one per channel, so every later step vectorises along the channels whatever
# the layout): the row segments' maxima (row_segments × W vectors), the current band's
# (W) and its column segments' (col_segments), then one plane row of scratch (W elements).
cdef struct RegionPlan:
    const Py_ssize_t* row_cuts      # row_segments + 1 ascending rows, 0 .. H
    Py_ssize_t row_segments
    const Py_ssize_t* col_cuts      # col_segments + 1 ascending columns, 0 .. W
    Py_ssize_t col_segments
    const Py_ssize_t* band_segments  # bands × 2: [first, end) row segments
    const Py_ssize_t* band_regions   # bands + 1: band b owns regions [band_regions[b], [b+1])
    Py_ssize_t bands
    const Py_ssize_t* region_index   # output row of each region, in band order
    const Py_ssize_t* region_segments  # regions × 2: [first, end) column segments
    Py_ssize_t width


cdef void row_segments_nhwc(const floating* image, floating* segment_rows,
                            const RegionPlan* plan, Py_ssize_t channels,
                            Py_ssize_t count) noexcept nogil:
    """segment_rows[s, x, k] = max over the rows y of segment s of image[y, x, k] (image
    starts at the task's first channel)."""
    cdef Py_ssize_t width = plan.width
    cdef Py_ssize_t row_stride = width * channels
    cdef Py_ssize_t s, y, x, first
    cdef floating* dst
    for s in range(plan.row_segments):
        first = plan.row_cuts[s]
        dst = segment_rows + s * width * count
        if count == channels:  # the task's rows are contiguous
            vectors_max(dst, image + first * row_stride, plan.row_cuts[s + 1] - first,
                        row_stride, row_stride)
            continue
        for x in range(width):
            memcpy(dst + x * count, image + first * row_stride + x * channels,
                   count * sizeof(floating))
        for y in range(first + 1, plan.row_cuts[s + 1]):
            for x in range(width):
                max_into(dst + x * count, image + y * row_stride + x * channels, count)


cdef void row_segments_nchw(const floating* planes, floating* segment_rows,
                            const RegionPlan* plan, Py_ssize_t height, Py_ssize_t count,
                            floating* line) noexcept nogil:
    """segment_rows[s, x, k] = max over the rows y of segment s of plane k at (y, x): each
    plane's rows fold elementwise into `line` (W), which is then spread into the
    channel-interleaved vectors."""
    cdef Py_ssize_t width = plan.width
    cdef Py_ssize_t k, s, x, first
    cdef const floating* plane
    cdef floating* dst
    for k in range(count):
        plane = planes + k * height * width
        for s in range(plan.row_segments):
            first = plan.row_cuts[s]
            vectors_max(line, plane + first * width, plan.row_cuts[s + 1] - first, width,
                        width)
            dst = segment_rows + s * width * count + k
            for x in range(width):
                dst[x * count] = line[x]


cdef void regions_from_segments(floating* out, Py_ssize_t out_stride, const RegionPlan* plan,
                                Py_ssize_t count, floating* work) noexcept nogil:
    """out[region_index[r]*out_stride + k] = maximum of region r, from the row segments'
    maxima at the start of `work`, band by band."""
    cdef Py_ssize_t line = plan.width * count  # one row of vectors
    cdef floating* segment_rows = work
    cdef floating* band_row = work + plan.row_segments * line
    cdef floating* segment_cols = band_row + line
    cdef const floating* band
    cdef Py_ssize_t s, b, r, first, end
    for b in range(plan.bands):
        # The band's row: its row segments folded together (one segment: that row).
        first = plan.band_segments[2 * b]
        end = plan.band_segments[2 * b + 1]
        if end - first == 1:
            band = segment_rows + first * line
        else:
            vectors_max(band_row, segment_rows + first * line, end - first, line, line)
            band = band_row
        # Its column segments, then each region as a run of them.
        for s in range(plan.col_segments):
            first = plan.col_cuts[s]
            vectors_max(segment_cols + s * count, band + first * count,
                        plan.col_cuts[s + 1] - first, count, count)
        for r in range(plan.band_regions[b], plan.band_regions[b + 1]):
            first = plan.region_segments[2 * r]
            end = plan.region_segments[2 * r + 1]
            vectors_max(out + plan.region_index[r] * out_stride,
                        segment_cols + first * count, end - first, count, count)


def rmac_region_max(const floating[::1] x, floating[::1] out, floating[::1] work,
                    const Py_ssize_t[::1] row_cuts, const Py_ssize_t[::1] col_cuts,
                    const Py_ssize_t[::1] band_segments, const Py_ssize_t[::1] band_regions,
                    const Py_ssize_t[::1] region_index, const Py_ssize_t[::1] region_segments,
                    Py_ssize_t batch, Py_ssize_t channels, Py_ssize_t height,
                    Py_ssize_t width, bint nhwc, Py_ssize_t channel_block, int num_threads):
    """out[n, r, c] = max of x's image n, channel c over region r of the plan; out is
    (N, R, C). One task per (image, block of channel_block channels). work:
    num_threads × ((row_segments + 1)·W + col_segments)·channel_block + W) elements."""
    cdef RegionPlan plan
    plan.row_cuts = &row_cuts[0]
    plan.row_segments = row_cuts.shape[0] - 1
    plan.col_cuts = &col_cuts[0]
    plan.col_segments = col_cuts.shape[0] - 1
    plan.band_segments = &band_segments[0]
    plan.bands = band_regions.shape[0] - 1
    plan.band_regions = &band_regions[0]
    plan.region_index = &region_index[0]
    plan.region_segments = &region_segments[0]
    plan.width = width
    cdef Py_ssize_t vectors = (plan.row_segments + 1) * width + plan.col_segments
    cdef Py_ssize_t per_thread = vectors * channel_block + width
    cdef Py_ssize_t regions = region_index.shape[0]
    cdef Py_ssize_t image_size = channels * height * width
    cdef Py_ssize_t blocks = (channels + channel_block - 1) // channel_block
    cdef Py_ssize_t task, n, c0, count
    cdef const floating* src = &x[0]
    cdef floating* dst = &out[0]
    cdef floating* scratch
    for task in prange(batch * blocks, nogil=True, num_threads=num_threads, schedule="static"):
        n = task // blocks
        c0 = (task % blocks) * channel_block
        count = min(channel_block, channels - c0)
        scratch = &work[0] + omp_get_thread_num() * per_thread
        if nhwc:
            row_segments_nhwc(src + n * image_size + c0, scratch, &plan, channels, count)
        else:
            row_segments_nchw(src + n * image_size + c0 * height * width, scratch, &plan,
                              height, count, scratch + vectors * count)
        regions_from_segments(dst + n * regions * channels + c0, channels, &plan, count,
                              scratch)


# ---------------------------------------------------------------- roi_max_pool
def roi_max_pool(const floating[::1] x, const Py_ssize_t[::1] rois, floating[::1] out,
                 floating[::1] work, Py_ssize_t channels, Py_ssize_t height, Py_ssize_t width,
                 bint nhwc, Py_ssize_t channel_block, int num_threads):
    """out[r, c] = max of x[rois[r, 0], c] over the inclusive box rois[r, 1:5] =
    (x1, y1, x2, y2); out is (R, C). NCHW: one task per (roi, channel), its rows folded in
    `work` (num_threads × W, also for NHWC with one channel); NHWC: one task per
    (roi, channel block)."""
    cdef Py_ssize_t count = rois.shape[0] // 5
    cdef Py_ssize_t image_size = channels * height * width
    cdef Py_ssize_t blocks = (channels + channel_block - 1) // channel_block
    cdef Py_ssize_t task, r, c, c0
    cdef const Py_ssize_t* box
    cdef const floating* src = &x[0]
    cdef floating* dst = &out[0]
    cdef floating* scratch = &work[0]
    if nhwc:
        for task in prange(count * blocks, nogil=True, num_threads=num_threads,
                           schedule="static"):
            r = task // blocks
            c0 = (task % blocks) * channel_block
            box = &rois[0] + 5 * r
            box_max(src + box[0] * image_size + c0, dst + r * channels + c0,
                    box[1], box[2], box[3], box[4], width * channels, channels,
                    min(channel_block, channels - c0),
                    scratch + omp_get_thread_num() * width)
    else:
        for task in prange(count * channels, nogil=True, num_threads=num_threads,
                           schedule="static"):
            r = task // channels
            c = task % channels
            box = &rois[0] + 5 * r
            box_max(src + (box[0] * channels + c) * height * width, dst + task,
                    box[1], box[2], box[3], box[4], width, 1, 1,
                    scratch + omp_get_thread_num() * width)
