"""Region max-pooling kernels for R-MAC (SPEC §4) over flat C-contiguous buffers.

Maxima follow np.max: a NaN anywhere in a box makes the box's maximum NaN. A NaN-keeping
select costs twice a plain ``maxps``, and feature maps almost never hold NaN, so every task
first reduces its input with plain maxima while watching for NaN (one compare and or), and
only when it saw one redoes the work with NaN-keeping selects (see NanRule).

Every maximum is one comparison chain over the same elements whatever the thread count, so
results are bit-identical for any number of threads. Everything here trusts fastconv.rmac,
which validated boxes, shapes and workspace sizes.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport NAN
from libc.string cimport memcpy

from fastconv._kernels._openmp cimport omp_get_thread_num


# ---------------------------------------------------------------- maxima
cdef enum NanRule:
    SKIP_NAN = 0   # plain max (a NaN never wins a comparison): for NaN-free data
    FIND_NAN = 1   # plain max, and report whether a NaN went past
    KEEP_NAN = 2   # a NaN, once taken, is never replaced (np.max's rule)


cdef inline bint max_into(floating* best, const floating* values, Py_ssize_t count,
                          NanRule rule) noexcept nogil:
    """best[k] = max(best[k], values[k]) for k < count under `rule`; True when FIND_NAN saw
    a NaN in values."""
    cdef Py_ssize_t k
    cdef int nan_float = 0  # NaN flags as wide as the elements, so the loops vectorise
    cdef long long nan_double = 0
    # Selects rather than conditional stores, so each loop vectorises.
    if rule == KEEP_NAN:
        for k in range(count):
            best[k] = values[k] if (values[k] > best[k]) | (values[k] != values[k]) else best[k]
    elif rule == FIND_NAN:
        for k in range(count):
            best[k] = values[k] if values[k] > best[k] else best[k]
            if floating is float:
                nan_float = nan_float | (values[k] != values[k])
            else:
                nan_double = nan_double | (values[k] != values[k])
    else:
        for k in range(count):
            best[k] = values[k] if values[k] > best[k] else best[k]
    return (nan_float | nan_double) != 0


cdef inline bint copy_into(floating* best, const floating* values, Py_ssize_t count,
                           NanRule rule) noexcept nogil:
    """best[k] = values[k] for k < count; True when FIND_NAN saw a NaN in values."""
    cdef Py_ssize_t k
    cdef int nan_float = 0  # as in max_into
    cdef long long nan_double = 0
    if rule != FIND_NAN:
        memcpy(best, values, count * sizeof(floating))
        return False
    for k in range(count):
        best[k] = values[k]
        if floating is float:
            nan_float = nan_float | (values[k] != values[k])
        else:
            nan_double = nan_double | (values[k] != values[k])
    return (nan_float | nan_double) != 0


cdef inline floating run_max(const floating* values, Py_ssize_t length, Py_ssize_t stride,
                             NanRule rule, bint* seen_nan) noexcept nogil:
    """max over i < length of values[i*stride] (length >= 1) under `rule`; FIND_NAN sets
    seen_nan[0] when it saw a NaN."""
    cdef floating best = values[0]
    cdef floating value
    cdef bint nan_here = best != best
    cdef Py_ssize_t i
    for i in range(1, length):
        # maxss and an or: no branch to mispredict, as a NaN-aware comparison would have.
        value = values[i * stride]
        best = value if value > best else best
        nan_here = nan_here | (value != value)
    if rule == FIND_NAN and nan_here:
        seen_nan[0] = True
    return NAN if rule == KEEP_NAN and nan_here else best


cdef inline bint vectors_max(floating* best, const floating* first, Py_ssize_t vectors,
                             Py_ssize_t stride, Py_ssize_t count, NanRule rule) noexcept nogil:
    """best[k] = max over i < vectors of first[i*stride + k], for k < count (vectors >= 1),
    under `rule`; True when FIND_NAN saw a NaN."""
    cdef Py_ssize_t i
    cdef bint seen_nan = False
    if count == 1:
        best[0] = run_max(first, vectors, stride, rule, &seen_nan)
        return seen_nan
    seen_nan = copy_into(best, first, count, rule)
    for i in range(1, vectors):
        seen_nan = max_into(best, first + i * stride, count, rule) | seen_nan
    return seen_nan


# ---------------------------------------------------------------- roi_max_pool
cdef bint box_max(const floating* corner, floating* out, Py_ssize_t box_height,
                  Py_ssize_t box_width, Py_ssize_t row_stride, Py_ssize_t pixel_stride,
                  Py_ssize_t count, floating* columns, NanRule rule) noexcept nogil:
    """out[k] = max over the box_height × box_width pixels from `corner` (row_stride and
    pixel_stride apart) of their element k, under `rule`. Adjacent pixels (one channel of
    contiguous rows): the rows fold elementwise into `columns` (box_width), then one run."""
    cdef Py_ssize_t y, x
    cdef bint seen_nan
    if pixel_stride == 1:
        seen_nan = vectors_max(columns, corner, box_height, row_stride, box_width, rule)
        out[0] = run_max(columns, box_width, 1, rule, &seen_nan)
        return seen_nan
    seen_nan = vectors_max(out, corner, box_width, pixel_stride, count, rule)
    for y in range(1, box_height):
        for x in range(box_width):
            seen_nan = max_into(out, corner + y * row_stride + x * pixel_stride, count,
                                rule) | seen_nan
    return seen_nan


cdef void roi_box_max(const floating* corner, floating* out, Py_ssize_t box_height,
                      Py_ssize_t box_width, Py_ssize_t row_stride, Py_ssize_t pixel_stride,
                      Py_ssize_t count, floating* columns) noexcept nogil:
    """box_max with np.max's NaN rule: plain maxima first, NaN-keeping ones if a NaN showed."""
    if box_max(corner, out, box_height, box_width, row_stride, pixel_stride, count, columns,
               FIND_NAN):
        box_max(corner, out, box_height, box_width, row_stride, pixel_stride, count, columns,
                KEEP_NAN)


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
            roi_box_max(src + box[0] * image_size + (box[2] * width + box[1]) * channels + c0,
                        dst + r * channels + c0, box[4] - box[2] + 1, box[3] - box[1] + 1,
                        width * channels, channels, min(channel_block, channels - c0),
                        scratch + omp_get_thread_num() * width)
    else:
        for task in prange(count * channels, nogil=True, num_threads=num_threads,
                           schedule="static"):
            r = task // channels
            c = task % channels
            box = &rois[0] + 5 * r
            roi_box_max(src + (box[0] * channels + c) * height * width + box[2] * width + box[1],
                        dst + task, box[4] - box[2] + 1, box[3] - box[1] + 1, width, 1, 1,
                        scratch + omp_get_thread_num() * width)


# ---------------------------------------------------------------- R-MAC
# The regions of one image, cut so that every element is read once: rows are cut at every
# box's top and bottom edge into row segments and columns at every left and right edge into
# column segments. A band (the rows of one or more boxes) is then a run of row segments and
# a box within its band a run of column segments.
#
# A task takes `count` channels of one image. Its workspace holds vectors of `count`
# elements (one per channel, so every step after the first vectorises along the channels
# whatever the layout): the row segments' maxima (row_segments × W vectors), the current
# band's (W) and its column segments' (col_segments), then one plane row (W elements).
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


cdef bint row_segments_nhwc(const floating* image, floating* segment_rows,
                            const RegionPlan* plan, Py_ssize_t channels, Py_ssize_t count,
                            NanRule rule) noexcept nogil:
    """segment_rows[s, x, k] = max over the rows y of segment s of image[y, x, k] (image
    starts at the task's first channel) under `rule`."""
    cdef Py_ssize_t width = plan.width
    cdef Py_ssize_t row_stride = width * channels
    cdef Py_ssize_t s, y, x, first
    cdef floating* dst
    cdef bint seen_nan = False
    for s in range(plan.row_segments):
        first = plan.row_cuts[s]
        dst = segment_rows + s * width * count
        if count == channels:  # the task's rows are contiguous
            seen_nan = vectors_max(dst, image + first * row_stride,
                                   plan.row_cuts[s + 1] - first, row_stride, row_stride,
                                   rule) | seen_nan
            continue
        for x in range(width):
            seen_nan = copy_into(dst + x * count, image + first * row_stride + x * channels,
                                 count, rule) | seen_nan
        for y in range(first + 1, plan.row_cuts[s + 1]):
            for x in range(width):
                seen_nan = max_into(dst + x * count, image + y * row_stride + x * channels,
                                    count, rule) | seen_nan
    return seen_nan


cdef bint row_segments_nchw(const floating* planes, floating* segment_rows,
                            const RegionPlan* plan, Py_ssize_t height, Py_ssize_t count,
                            floating* line, NanRule rule) noexcept nogil:
    """segment_rows[s, x, k] = max over the rows y of segment s of plane k at (y, x) under
    `rule`: each plane's rows fold elementwise into `line` (W), which is then spread into
    the channel-interleaved vectors."""
    cdef Py_ssize_t width = plan.width
    cdef Py_ssize_t k, s, x, first
    cdef const floating* plane
    cdef floating* dst
    cdef bint seen_nan = False
    for k in range(count):
        plane = planes + k * height * width
        for s in range(plan.row_segments):
            first = plan.row_cuts[s]
            seen_nan = vectors_max(line, plane + first * width, plan.row_cuts[s + 1] - first,
                                   width, width, rule) | seen_nan
            dst = segment_rows + s * width * count + k
            for x in range(width):
                dst[x * count] = line[x]
    return seen_nan


cdef void regions_from_segments(floating* out, Py_ssize_t out_stride, const RegionPlan* plan,
                                Py_ssize_t count, floating* work, NanRule rule) noexcept nogil:
    """out[region_index[r]*out_stride + k] = maximum of region r under `rule`, from the row
    segments' maxima at the start of `work`, band by band."""
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
            vectors_max(band_row, segment_rows + first * line, end - first, line, line, rule)
            band = band_row
        # Its column segments, then each region as a run of them.
        for s in range(plan.col_segments):
            first = plan.col_cuts[s]
            vectors_max(segment_cols + s * count, band + first * count,
                        plan.col_cuts[s + 1] - first, count, count, rule)
        for r in range(plan.band_regions[b], plan.band_regions[b + 1]):
            first = plan.region_segments[2 * r]
            end = plan.region_segments[2 * r + 1]
            vectors_max(out + plan.region_index[r] * out_stride,
                        segment_cols + first * count, end - first, count, count, rule)


cdef void block_region_max(const floating* x, floating* out, Py_ssize_t out_stride,
                           const RegionPlan* plan, Py_ssize_t channels, Py_ssize_t height,
                           Py_ssize_t count, bint nhwc, floating* work) noexcept nogil:
    """The regions' maxima of `count` channels of one image (x at its first channel) with
    np.max's NaN rule: the row segments with plain maxima, and everything again with
    NaN-keeping ones if a NaN went past."""
    cdef floating* line = work + ((plan.row_segments + 1) * plan.width + plan.col_segments) * count
    cdef bint seen_nan
    cdef NanRule rule = FIND_NAN
    while True:
        if nhwc:
            seen_nan = row_segments_nhwc(x, work, plan, channels, count, rule)
        else:
            seen_nan = row_segments_nchw(x, work, plan, height, count, line, rule)
        if not seen_nan:
            break
        rule = KEEP_NAN
    regions_from_segments(out, out_stride, plan, count, work,
                          KEEP_NAN if rule == KEEP_NAN else SKIP_NAN)


def rmac_region_max(const floating[::1] x, floating[::1] out, floating[::1] work,
                    const Py_ssize_t[::1] row_cuts, const Py_ssize_t[::1] col_cuts,
                    const Py_ssize_t[::1] band_segments, const Py_ssize_t[::1] band_regions,
                    const Py_ssize_t[::1] region_index, const Py_ssize_t[::1] region_segments,
                    Py_ssize_t batch, Py_ssize_t channels, Py_ssize_t height,
                    Py_ssize_t width, bint nhwc, Py_ssize_t channel_block, int num_threads):
    """out[n, r, c] = max of x's image n, channel c over region r of the plan; out is
    (N, R, C). One task per (image, block of channel_block channels). work:
    num_threads × (((row_segments + 1)·W + col_segments)·channel_block + W) elements."""
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
    cdef Py_ssize_t per_thread = (
        ((plan.row_segments + 1) * width + plan.col_segments) * channel_block + width)
    cdef Py_ssize_t regions = region_index.shape[0]
    cdef Py_ssize_t image_size = channels * height * width
    cdef Py_ssize_t blocks = (channels + channel_block - 1) // channel_block
    cdef Py_ssize_t task, n, c0
    cdef const floating* src = &x[0]
    cdef floating* dst = &out[0]
    for task in prange(batch * blocks, nogil=True, num_threads=num_threads, schedule="static"):
        n = task // blocks
        c0 = (task % blocks) * channel_block
        block_region_max(src + n * image_size + (c0 if nhwc else c0 * height * width),
                         dst + n * regions * channels + c0, channels, &plan, channels, height,
                         min(channel_block, channels - c0), nhwc,
                         &work[0] + omp_get_thread_num() * per_thread)
