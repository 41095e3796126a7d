"""Convolution on GEMM: im2col tiles into a workspace, then BLAS ?gemm (SPEC §2).

Per image and group, with P = OH·OW, Mg = C_out/groups, Kg = C_in/groups·kh·kw:

  NCHW:  out[g] (Mg×P)    = W[g] (Mg×Kg)   · col[g] (Kg×P)
  NHWC:  out[:, g] (P×Mg) = col[g] (P×Kg)  · W[:, g] (Kg×Mg)   (W is HWIO, leading dim C_out)

Work is split into items (image, tile of output rows [oh0, oh1)) run by an OpenMP loop;
each thread builds its tile's columns in its own slice of the workspace and calls a
single-threaded GEMM on it (the caller holds BLAS at one thread), so OpenMP and BLAS
threads never compete for the cores. A 1×1, stride-1, unpadded convolution uses the
image itself as its column matrix. Small NHWC images are grouped so one GEMM spans
several (plan.images). Float32 layers whose weight fits L2 skip im2col and BLAS in the
forward pass: the direct small-GEMM blocks of small_gemm.h read the image in place
(plan.direct). Everything here trusts fastconv.conv, which validated shapes, sizes,
workspace lengths and the BLAS int range.

Column tiles in the workspace: NCHW (C·kh·kw × tile), i.e. [group][Kg][tile];
NHWC [group][tile][Kg].
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from fastconv._kernels._blas cimport (
    FASTCONV_F32_GEMM, fastconv_f32_gemm, fastconv_f32_gemm_gathered, fastconv_f32_gemm_nt,
    fastconv_f32_gemm_pays, gemm)
from fastconv._kernels._geometry cimport (
    Geometry, input_col, input_row, source_col, source_row)
from fastconv._kernels._im2col_helpers cimport (
    col2im_nchw_row, col2im_nhwc_row, im2col_nchw_row, im2col_nchw_rows, im2col_nhwc_row,
    inside_cols)
from fastconv._kernels._openmp cimport omp_get_thread_num
from fastconv._kernels._simd cimport FASTCONV_LANES
from fastconv._kernels._small_gemm cimport (
    FASTCONV_PANEL_ROWS, FASTCONV_SMALL_GEMM, FASTCONV_SMALL_GEMM_COLS,
    fastconv_small_gemm_block, fastconv_small_gemm_block_rows)

# Whether this build has fastconv's own float32 GEMM (used where fastconv_f32_gemm_pays).
OWN_GEMM = bool(FASTCONV_F32_GEMM)

# Whether this build has the direct small-GEMM forward path (plan.direct), and its block:
# packed panels of PANEL_ROWS rows, up to SMALL_GEMM_COLS columns, columns at most
# DIRECT_MAX_DEPTH deep. A block reads its right-hand rows SMALL_GEMM_LANES floats at a
# time, so NHWC, whose right-hand rows are the weight's, needs C_out a multiple of it.
SMALL_GEMM = bool(FASTCONV_SMALL_GEMM)
PANEL_ROWS = FASTCONV_PANEL_ROWS
SMALL_GEMM_COLS = FASTCONV_SMALL_GEMM_COLS
SMALL_GEMM_LANES = FASTCONV_LANES

cdef enum:
    DIRECT_MAX_DEPTH = 2048  # C·kh·kw of the direct path: its row pointers live on the stack
    # Fewest output positions per row for windows read in place (windows_are_image_runs):
    # the strided 1×1 layers of ResNet (28 or 14 per row, weights of 0.5–2 MB) keep their
    # columns and one GEMM per tile of rows.
    IN_PLACE_MIN_POSITIONS = 128
DIRECT_DEPTH_LIMIT = DIRECT_MAX_DEPTH


ctypedef struct Plan:
    # How one convolution is cut into work items; shared by forward and backward.
    Py_ssize_t batch
    Py_ssize_t out_channels
    Py_ssize_t groups
    bint nhwc
    bint pointwise        # 1×1, stride 1, no padding: the image is its own column matrix
    Py_ssize_t tile_rows  # output rows per work item
    # Few images: each image's whole column matrix is built once and the GEMMs are split
    # between threads by blocks of m_block output channels (forward, weight gradient) or
    # of k_block column-matrix rows (input gradient).
    bint shared
    Py_ssize_t m_block
    Py_ssize_t k_block
    # Shared NHWC forward: images whose columns are built together, so each block's GEMM
    # spans all their positions (small images); with weight_grad_images, the images whose
    # columns one weight-gradient product spans.
    Py_ssize_t images
    # Forward, float32, a weight that fits L2: small-GEMM blocks read the image in place
    # (no im2col, no BLAS).
    bint direct
    # Backward, images of few positions: the weight gradient by weight_grad_images (blocks
    # of k_block column-matrix rows × m_block output channels; `partials` its scratch).
    bint weight_grad_images


ctypedef struct Dims:
    # GEMM sizes of one convolution (BLAS takes C int; the range was checked in Python).
    int P             # OH·OW
    int out_channels  # C_out
    int C             # C_in
    int Mg            # C_out / groups
    int Cg            # C_in / groups
    int Kg            # Cg·kh·kw


cdef inline Dims dims_of(const Geometry* g, const Plan* plan) noexcept nogil:
    cdef Dims d
    d.P = <int> (g.out_h * g.out_w)
    d.out_channels = <int> plan.out_channels
    d.C = <int> g.channels
    d.Mg = <int> (plan.out_channels // plan.groups)
    d.Cg = <int> (g.channels // plan.groups)
    d.Kg = <int> (d.Cg * g.kernel_h * g.kernel_w)
    return d


cdef inline Py_ssize_t tiles_per_image(const Geometry* g, const Plan* plan) noexcept nogil:
    """ceil(OH / tile_rows)."""
    return (g.out_h + plan.tile_rows - 1) // plan.tile_rows


cdef inline Py_ssize_t tile_end(Py_ssize_t oh0, const Geometry* g, const Plan* plan) noexcept nogil:
    """End of the tile of output rows that starts at oh0."""
    return oh0 + plan.tile_rows if oh0 + plan.tile_rows < g.out_h else g.out_h


# ---------------------------------------------------------------- column tiles
cdef void image_to_columns(const floating* image, floating* col, const Geometry* g,
                           const Plan* plan, Py_ssize_t grp, Py_ssize_t oh0,
                           Py_ssize_t oh1) noexcept nogil:
    """Columns of one image for output rows [oh0, oh1): NCHW all groups (C·kh·kw × tile);
    NHWC group `grp` only (tile × Kg)."""
    cdef Py_ssize_t task, tile = (oh1 - oh0) * g.out_w
    cdef Py_ssize_t c_count = g.channels // plan.groups
    cdef Py_ssize_t nhwc_rows = g.out_w * g.kernel_h * g.kernel_w * c_count
    if plan.nhwc:
        for task in range(oh1 - oh0):
            im2col_nhwc_row(image, col + task * nhwc_rows, g, oh0 + task, grp * c_count, c_count)
    else:
        for task in range(g.channels * g.kernel_h):
            im2col_nchw_rows(image + (task // g.kernel_h) * g.height * g.width,
                             col + task * g.kernel_w * tile, g, task % g.kernel_h, oh0, oh1)


cdef void columns_to_image_rows(const floating* col, floating* image, const Geometry* g,
                                const Plan* plan, Py_ssize_t oh0, Py_ssize_t oh1,
                                Py_ssize_t row_begin, Py_ssize_t row_end) noexcept nogil:
    """image rows [row_begin, row_end) += the column tile of output rows [oh0, oh1), all
    groups (NCHW: C·kh·kw × tile; NHWC: [group][tile][Kg]). NCHW rows count (c, h) pairs."""
    cdef Py_ssize_t row, grp, tile = (oh1 - oh0) * g.out_w
    cdef Py_ssize_t c_count = g.channels // plan.groups
    cdef Py_ssize_t group_size = tile * g.kernel_h * g.kernel_w * c_count
    for row in range(row_begin, row_end):
        if plan.nhwc:
            for grp in range(plan.groups):
                col2im_nhwc_row(col + grp * group_size, image + row * g.width * g.channels, g,
                                row, grp * c_count, c_count, oh0, oh1)
        else:
            col2im_nchw_row(col + (row // g.height) * g.kernel_h * g.kernel_w * tile,
                            image + row * g.width, g, row % g.height, oh0, oh1)


# ---------------------------------------------------------------- one tile
cdef void output_block(const floating* cols, int ld_cols, const floating* weight,
                       const floating* bias, floating* out, const Geometry* g, const Plan* plan,
                       Py_ssize_t grp, Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t m0,
                       Py_ssize_t m1) noexcept nogil:
    """One image's out[channels grp·Mg + m0 .. grp·Mg + m1, positions p0 .. p1] =
    W[those channels] · cols (+ bias), where `cols` is group grp's column block for those
    positions: NCHW (Kg × positions), NHWC (positions × Kg), leading dimension ld_cols."""
    cdef Dims d = dims_of(g, plan)
    cdef int positions = <int> (p1 - p0)
    cdef int channels = <int> (m1 - m0)
    cdef Py_ssize_t first = grp * d.Mg + m0  # first output channel of the block
    cdef Py_ssize_t o, p
    cdef floating beta = 0
    if bias != NULL:  # start from the bias so the GEMM accumulates onto it (beta = 1)
        beta = 1
        if plan.nhwc:
            for p in range(p0, p1):
                for o in range(first, first + channels):
                    out[p * d.out_channels + o] = bias[o]
        else:
            for o in range(first, first + channels):
                for p in range(p0, p1):
                    out[o * d.P + p] = bias[o]
    if plan.nhwc:
        gemm(False, False, positions, channels, d.Kg, 1, cols, ld_cols,
             weight + first, d.out_channels,
             beta, out + p0 * d.out_channels + first, d.out_channels)
    else:
        gemm(False, False, channels, positions, d.Kg, 1, weight + first * d.Kg, d.Kg, cols,
             ld_cols, beta, out + first * d.P + p0, d.P)


cdef inline const floating* pointwise_columns(const floating* image, const Dims* d, bint nhwc,
                                              Py_ssize_t grp, Py_ssize_t p0) noexcept nogil:
    """Group grp's columns of a pointwise convolution, from position p0: the image itself."""
    return image + p0 * d.C + grp * d.Cg if nhwc else image + grp * d.Cg * d.P + p0


cdef inline bint windows_are_image_runs(const Geometry* g, const Plan* plan) noexcept nogil:
    """Whether every window of an output row is one contiguous run of the NHWC image
    (kw·C values, sw·C apart from the next): one kernel row, no dilation across it, one
    group, and no window reaching into padding (a 1-D signal's convolution; the audio front
    end's 400-tap windows every 160 samples). The own GEMM then reads them in place, as
    the rows of its left operand (docs/performance.md#image-run-windows). Only where the
    windows overlap (columns would copy each value several times) and a row has
    IN_PLACE_MIN_POSITIONS of them: each output row is one GEMM, which reads all of B."""
    return (FASTCONV_F32_GEMM and plan.nhwc and not plan.pointwise and plan.groups == 1
            and g.kernel_h == 1 and g.dilation_w == 1 and g.pad_top == 0
            and g.kernel_w > g.stride_w and g.out_w >= IN_PLACE_MIN_POSITIONS
            and g.pad_left == 0 and (g.out_h - 1) * g.stride_h < g.height
            and (g.out_w - 1) * g.stride_w + g.kernel_w <= g.width
            and fastconv_f32_gemm_pays(<int> g.out_w, <int> plan.out_channels,
                                       <int> (g.kernel_w * g.channels),
                                       plan.out_channels, False))


cdef void forward_rows_in_place(const float* image, const float* weight, const float* bias,
                                float* out, const Geometry* g, const Plan* plan,
                                Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """Output rows [oh0, oh1) of one NHWC image whose windows are image runs
    (windows_are_image_runs): per row, out = runs · W (+ bias), no columns built."""
    cdef Py_ssize_t oh, p, o
    cdef float* row
    for oh in range(oh0, oh1):
        row = out + oh * g.out_w * plan.out_channels
        if bias != NULL:
            for p in range(g.out_w):
                for o in range(plan.out_channels):
                    row[p * plan.out_channels + o] = bias[o]
        fastconv_f32_gemm(<int> g.out_w, <int> plan.out_channels,
                          <int> (g.kernel_w * g.channels),
                          image + oh * g.stride_h * g.width * g.channels,
                          g.stride_w * g.channels, 1, weight, plan.out_channels, row,
                          plan.out_channels, bias != NULL)


cdef void forward_tile(const floating* image, const floating* weight, const floating* bias,
                       floating* out, floating* col, const Geometry* g, const Plan* plan,
                       Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """Output rows [oh0, oh1) of one image, every channel: columns of the tile, then GEMMs
    (or the GEMMs alone, reading windows that are image runs in place)."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t p0 = oh0 * g.out_w, p1 = oh1 * g.out_w
    cdef int tile = <int> (p1 - p0)
    cdef Py_ssize_t grp
    if floating is float:
        if windows_are_image_runs(g, plan):
            forward_rows_in_place(image, weight, bias, out, g, plan, oh0, oh1)
            return
    if not plan.pointwise and not plan.nhwc:
        image_to_columns(image, col, g, plan, 0, oh0, oh1)
    for grp in range(plan.groups):
        if plan.pointwise:
            output_block(pointwise_columns(image, &d, plan.nhwc, grp, p0),
                         d.C if plan.nhwc else d.P, weight, bias, out, g, plan, grp, p0, p1,
                         0, d.Mg)
        elif plan.nhwc:
            image_to_columns(image, col, g, plan, grp, oh0, oh1)
            output_block(col, d.Kg, weight, bias, out, g, plan, grp, p0, p1, 0, d.Mg)
        else:
            output_block(col + grp * d.Kg * tile, tile, weight, bias, out, g, plan, grp, p0, p1,
                         0, d.Mg)


# ---------------------------------------------------------------- direct small-GEMM path
cdef void column_block_rows(const float* image, const float** b_rows, float* gathered,
                            const float* zeros, const Geometry* g, Py_ssize_t oh,
                            Py_ssize_t ow0, int cols) noexcept nogil:
    """b_rows[k] → row k = (c·kh + i)·kw + j of the column matrix at output positions
    (oh, ow0 .. ow0 + cols − 1), COLS values from the pointer on (those past `cols` are
    read but not used): a pointer into the image where those positions read a run of an
    image row (stride 1, inside the row, COLS values inside the image's buffer), `zeros`
    where the input row is padding, else gathered[k·COLS ...] filled with the values
    (0 in the padding, or with a padding mode the pixels the tables name)."""
    cdef Py_ssize_t c, i, j, k = 0, t, h_im, w_first, w_at
    cdef Py_ssize_t plane = g.height * g.width
    cdef const float* image_end = image + g.channels * plane
    cdef const float* row
    cdef float* dst
    for c in range(g.channels):
        for i in range(g.kernel_h):
            h_im = source_row(g, input_row(g, oh, i))
            # a pointer is formed only to a row inside the image
            row = image + c * plane + h_im * g.width if h_im >= 0 else NULL
            for j in range(g.kernel_w):
                w_first = input_col(g, ow0, j)
                if h_im < 0:
                    b_rows[k] = zeros
                elif (g.stride_w == 1 and w_first >= 0 and w_first + cols <= g.width
                      and row + w_first + FASTCONV_SMALL_GEMM_COLS <= image_end):
                    b_rows[k] = row + w_first
                else:
                    dst = gathered + k * FASTCONV_SMALL_GEMM_COLS
                    for t in range(FASTCONV_SMALL_GEMM_COLS):
                        w_at = source_col(g, w_first + t * g.stride_w) if t < cols else -1
                        dst[t] = row[w_at] if w_at >= 0 else 0
                    b_rows[k] = dst
                k = k + 1


cdef inline bint block_reads_row_runs(const Geometry* g, Py_ssize_t ow0,
                                      int cols) noexcept nogil:
    """Every tap j of the `cols` positions from ow0 reads consecutive values inside the
    image row (stride 1): the block can read the image through row pointers."""
    return (g.stride_w == 1 and input_col(g, ow0, 0) >= 0
            and input_col(g, ow0, g.kernel_w - 1) + cols <= g.width)


cdef void pack_panels(const float* weight, Py_ssize_t rows, Py_ssize_t depth,
                      float* panels) noexcept nogil:
    """panels[p·depth·PANEL_ROWS + k·PANEL_ROWS + r] = weight[(p·PANEL_ROWS + r)·depth + k]:
    the weight's rows (rows × depth) in panels of PANEL_ROWS, each stored column by column,
    zero past `rows`."""
    cdef Py_ssize_t p, k, r, row
    for p in range((rows + FASTCONV_PANEL_ROWS - 1) // FASTCONV_PANEL_ROWS):
        for k in range(depth):
            for r in range(FASTCONV_PANEL_ROWS):
                row = p * FASTCONV_PANEL_ROWS + r
                panels[(p * depth + k) * FASTCONV_PANEL_ROWS + r] = (
                    weight[row * depth + k] if row < rows else 0)


cdef inline Py_ssize_t packed_size(Py_ssize_t rows, Py_ssize_t depth) noexcept nogil:
    """Floats of pack_panels' result."""
    return (rows + FASTCONV_PANEL_ROWS - 1) // FASTCONV_PANEL_ROWS * FASTCONV_PANEL_ROWS * depth


cdef void forward_tile_direct(const float* image, const float* panels, const float* bias,
                              float* out, float* scratch, const Geometry* g, const Plan* plan,
                              Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """Output rows [oh0, oh1) of one image by small-GEMM blocks: up to COLS positions of a
    row at a time, all output channels PANEL_ROWS at a time (`panels`: the weight packed by
    pack_panels).

    Stride 1: one table of pointers per output row, to where each tap's run starts in its
    image row (all inside the image), shifted by each block's first input column; blocks
    at the image's left and right edges gather their columns.
    Stride > 1: the output row's columns are built first (im2col of one row, Kg × OW) and
    the blocks point into them. `scratch` holds Kg·max(COLS, OW) + COLS values (gathered or
    built columns), then OW + COLS zeros."""
    cdef Dims d = dims_of(g, plan)
    cdef const float* row_starts[DIRECT_MAX_DEPTH]
    cdef const float* b_rows[DIRECT_MAX_DEPTH]
    cdef Py_ssize_t column_values = d.Kg * (g.out_w if g.out_w > FASTCONV_SMALL_GEMM_COLS
                                            else FASTCONV_SMALL_GEMM_COLS)
    cdef float* zeros = scratch + column_values + FASTCONV_SMALL_GEMM_COLS
    cdef const float* image_end = image + g.channels * g.height * g.width
    cdef const float* last_start
    cdef Py_ssize_t oh, ow0, m0, t, p0, c, i, j, k, h_im, offset
    cdef Py_ssize_t plane = g.height * g.width
    cdef bint strided = g.stride_w != 1
    # Stride 1 and a kernel narrower than the image: blocks may read the image directly.
    cdef bint row_path = not strided and (g.kernel_w - 1) * g.dilation_w < g.width
    cdef int cols
    cdef const float** table
    for t in range(g.out_w + FASTCONV_SMALL_GEMM_COLS):
        zeros[t] = 0
    for oh in range(oh0, oh1):
        # strided: row_starts[k] + ow0 → tap k's values for the positions from ow0;
        # row path: row_starts[k] + ow0 − left → the same, read from the image
        last_start = image
        if strided:
            for k in range(d.C * g.kernel_h):
                im2col_nchw_rows(image + (k // g.kernel_h) * plane,
                                 scratch + k * g.kernel_w * g.out_w, g, k % g.kernel_h,
                                 oh, oh + 1)
            for k in range(d.Kg):
                row_starts[k] = scratch + k * g.out_w
        elif row_path:
            k = 0
            for c in range(g.channels):
                for i in range(g.kernel_h):
                    h_im = source_row(g, input_row(g, oh, i))
                    for j in range(g.kernel_w):
                        if h_im >= 0:
                            row_starts[k] = image + c * plane + h_im * g.width + j * g.dilation_w
                            if row_starts[k] > last_start:
                                last_start = row_starts[k]
                        else:
                            row_starts[k] = zeros
                        k = k + 1
        ow0 = 0
        while ow0 < g.out_w:
            cols = <int> (g.out_w - ow0 if g.out_w - ow0 < FASTCONV_SMALL_GEMM_COLS
                          else FASTCONV_SMALL_GEMM_COLS)
            # A block reads up to COLS values from each pointer, past `cols` too: inside the
            # image's (or scratch's) buffer, the extra values are not stored.
            if strided:
                table, offset = row_starts, ow0
            elif (row_path and block_reads_row_runs(g, ow0, cols)
                  and last_start + input_col(g, ow0, 0) + FASTCONV_SMALL_GEMM_COLS
                  <= image_end):
                table, offset = row_starts, input_col(g, ow0, 0)
            else:
                column_block_rows(image, b_rows, scratch, zeros, g, oh, ow0, cols)
                table, offset = b_rows, 0
            p0 = oh * g.out_w + ow0
            m0 = 0
            while m0 < d.out_channels:
                fastconv_small_gemm_block(d.Kg, panels + m0 * d.Kg,
                                          <int> (d.out_channels - m0
                                                 if d.out_channels - m0 < FASTCONV_PANEL_ROWS
                                                 else FASTCONV_PANEL_ROWS),
                                          table, offset, bias + m0 if bias != NULL else NULL,
                                          NULL, out + m0 * d.P + p0, d.P, cols)
                m0 = m0 + FASTCONV_PANEL_ROWS
            ow0 = ow0 + cols


cdef void nhwc_positions_panel(const float* image, float* panel, const Geometry* g,
                               Py_ssize_t p_first, int rows) noexcept nogil:
    """panel[k·PANEL_ROWS + r] = NHWC column k = (i·kw + j)·C + c of output position
    p_first + r for r < rows (im2col straight into the packed layout), 0 in the padding
    (a padding mode: the pixel the tables name).
    Rows r ≥ rows keep what they held (zeros, or an earlier block's values): the block
    computes them and does not store them."""
    cdef Py_ssize_t r, i, j, c, k, oh, ow, h_im, w_im
    cdef const float* pixel
    for r in range(rows):
        oh = (p_first + r) // g.out_w
        ow = (p_first + r) % g.out_w
        k = 0
        for i in range(g.kernel_h):
            h_im = source_row(g, input_row(g, oh, i))
            for j in range(g.kernel_w):
                w_im = source_col(g, input_col(g, ow, j))
                if h_im >= 0 and w_im >= 0:
                    pixel = image + (h_im * g.width + w_im) * g.channels
                    for c in range(g.channels):
                        panel[(k + c) * FASTCONV_PANEL_ROWS + r] = pixel[c]
                else:
                    for c in range(g.channels):
                        panel[(k + c) * FASTCONV_PANEL_ROWS + r] = 0
                k = k + g.channels


cdef void forward_tile_direct_nhwc(const float* image, const float* weight, const float* bias,
                                   float* out, float* panel, const Geometry* g,
                                   const Plan* plan, Py_ssize_t oh0,
                                   Py_ssize_t oh1) noexcept nogil:
    """NHWC output rows [oh0, oh1) of one image by small-GEMM blocks of PANEL_ROWS positions
    of a row × up to COLS output channels (C_out a multiple of 16), reading the HWIO weight
    rows in place and adding the bias per channel.

    A full block whose windows lie inside the image reads it in place: tap k = (i, j, c) of
    its position r is at tap_starts[k] + (w_first + r·sw)·C, tap_starts[k] pointing at
    (row h_first + i·dh, column j·dw, channel c). In-place blocks start at the first column
    [inside_lo, inside_hi) whose window is inside; the columns before it, those after the
    last full block and rows reaching into the padding pack their columns first (into
    `panel`, PANEL_ROWS·Kg floats)."""
    cdef Dims d = dims_of(g, plan)
    cdef const float* weight_rows[DIRECT_MAX_DEPTH]
    cdef const float* tap_starts[DIRECT_MAX_DEPTH]
    cdef Py_ssize_t oh, ow0, o0, i, j, c, k, p, w_first, end
    cdef Py_ssize_t inside_lo, inside_hi
    cdef int rows, cols
    cdef bint rows_inside, in_place
    inside_cols(g, &inside_lo, &inside_hi)
    for k in range(d.Kg):
        weight_rows[k] = weight + k * d.out_channels
    for k in range(FASTCONV_PANEL_ROWS * d.Kg):  # finite values in the rows never written
        panel[k] = 0
    for oh in range(oh0, oh1):
        rows_inside = input_row(g, oh, 0) >= 0 and input_row(g, oh, g.kernel_h - 1) < g.height
        if rows_inside:
            k = 0
            for i in range(g.kernel_h):
                for j in range(g.kernel_w):
                    for c in range(g.channels):
                        tap_starts[k] = image + ((input_row(g, oh, i) * g.width
                                                 + j * g.dilation_w) * g.channels + c)
                        k = k + 1
        ow0 = 0
        while ow0 < g.out_w:
            in_place = (rows_inside and inside_lo <= ow0
                        and ow0 + FASTCONV_PANEL_ROWS <= inside_hi)
            if in_place:
                rows = FASTCONV_PANEL_ROWS
            else:  # packed up to where the in-place blocks start, or to the row's end
                end = inside_lo if rows_inside and ow0 < inside_lo else g.out_w
                rows = <int> (end - ow0 if end - ow0 < FASTCONV_PANEL_ROWS
                              else FASTCONV_PANEL_ROWS)
            w_first = input_col(g, ow0, 0)
            p = oh * g.out_w + ow0
            if not in_place:
                nhwc_positions_panel(image, panel, g, p, rows)
            o0 = 0
            while o0 < d.out_channels:
                cols = <int> (d.out_channels - o0 if d.out_channels - o0 < FASTCONV_SMALL_GEMM_COLS
                              else FASTCONV_SMALL_GEMM_COLS)
                if in_place:
                    fastconv_small_gemm_block_rows(
                        d.Kg, tap_starts, w_first * g.channels, g.stride_w * g.channels, rows,
                        weight_rows, o0, NULL, bias + o0 if bias != NULL else NULL,
                        out + p * d.out_channels + o0, d.out_channels, cols)
                else:
                    fastconv_small_gemm_block(d.Kg, panel, rows, weight_rows, o0, NULL,
                                              bias + o0 if bias != NULL else NULL,
                                              out + p * d.out_channels + o0, d.out_channels, cols)
                o0 = o0 + cols
            ow0 = ow0 + rows


cdef void image_columns_parallel(const floating* images, floating* col, const Geometry* g,
                                 const Plan* plan, Py_ssize_t count,
                                 int num_threads) noexcept nogil:
    """The whole column matrix of `count` consecutive images (several only in NHWC), built
    in parallel, over all their positions Pn = count·P (image b's at b·P): NCHW
    (C·kh·kw × P), NHWC [group][Pn][Kg]."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t positions = count * d.P
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t task, grp, b, oh
    if plan.nhwc:
        for task in prange(plan.groups * count * g.out_h, num_threads=num_threads,
                           schedule="static"):
            grp = task // (count * g.out_h)
            b = task // g.out_h % count
            oh = task % g.out_h
            im2col_nhwc_row(images + b * image_size,
                            col + (grp * positions + b * d.P + oh * g.out_w) * d.Kg, g, oh,
                            grp * d.Cg, d.Cg)
    else:
        for task in prange(g.channels * g.kernel_h, num_threads=num_threads, schedule="static"):
            im2col_nchw_rows(images + (task // g.kernel_h) * g.height * g.width,
                             col + task * g.kernel_w * d.P, g, task % g.kernel_h, 0, g.out_h)


cdef inline const floating* group_columns(const floating* image, const floating* col,
                                          const Dims* d, const Plan* plan, Py_ssize_t grp,
                                          Py_ssize_t positions) noexcept nogil:
    """Group grp's block of a column matrix over `positions` (pointwise: of the image)."""
    if plan.pointwise:
        return pointwise_columns(image, d, plan.nhwc, grp, 0)
    return col + grp * positions * d.Kg


cdef inline int group_columns_ld(const Dims* d, const Plan* plan,
                                 Py_ssize_t positions) noexcept nogil:
    """Leading dimension of group_columns."""
    if plan.pointwise:
        return d.C if plan.nhwc else d.P
    return d.Kg if plan.nhwc else <int> positions


cdef inline Py_ssize_t block_end(Py_ssize_t start, Py_ssize_t block,
                                 Py_ssize_t limit) noexcept nogil:
    return start + block if start + block < limit else limit


cdef void forward_shared_columns(const floating* images, const floating* weight,
                                 const floating* bias, floating* out, floating* col,
                                 const Geometry* g, const Plan* plan, Py_ssize_t count,
                                 int num_threads) noexcept nogil:
    """`count` images in shared mode (several only in NHWC, where their outputs form one
    matrix): their columns once, then GEMMs over all their positions by blocks of m_block
    output channels."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t blocks = (d.Mg + plan.m_block - 1) // plan.m_block
    cdef Py_ssize_t positions = count * d.P
    cdef Py_ssize_t task, grp, m0
    if not plan.pointwise:
        image_columns_parallel(images, col, g, plan, count, num_threads)
    for task in prange(plan.groups * blocks, num_threads=num_threads, schedule="dynamic"):
        grp = task // blocks
        m0 = (task % blocks) * plan.m_block
        output_block(group_columns(images, col, &d, plan, grp, positions),
                     group_columns_ld(&d, plan, positions), weight, bias, out, g, plan, grp, 0,
                     positions, m0, block_end(m0, plan.m_block, d.Mg))


cdef void weight_grad_shared_columns(const floating* grad_out, const floating* image,
                                     floating* grad_weight, floating* col, const Geometry* g,
                                     const Plan* plan, int num_threads) noexcept nogil:
    """One image in shared mode: grad_weight += grad_out ⋆ columnsᵀ, each thread adding
    into its own block of m_block output channels, or, when that is all of them, of k_block
    column-matrix rows (no accumulators to reduce; every element is one GEMM's sum over the
    positions)."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t m_blocks = (d.Mg + plan.m_block - 1) // plan.m_block
    cdef Py_ssize_t k_blocks = 1 if m_blocks > 1 else (d.Kg + plan.k_block - 1) // plan.k_block
    cdef Py_ssize_t task, grp, m0, k0, first
    cdef int channels, rows
    cdef const floating* cols
    cdef int ld
    if not plan.pointwise:
        image_columns_parallel(image, col, g, plan, 1, num_threads)
    for task in prange(plan.groups * m_blocks * k_blocks, num_threads=num_threads,
                       schedule="static"):
        grp = task // (m_blocks * k_blocks)
        m0 = (task // k_blocks % m_blocks) * plan.m_block
        k0 = (task % k_blocks) * plan.k_block
        channels = <int> (block_end(m0, plan.m_block, d.Mg) - m0)
        rows = <int> (d.Kg - k0 if k_blocks == 1 else block_end(k0, plan.k_block, d.Kg) - k0)
        first = grp * d.Mg + m0
        cols = group_columns(image, col, &d, plan, grp, d.P)
        ld = group_columns_ld(&d, plan, d.P)
        if plan.nhwc:
            gemm(True, False, rows, channels, d.P, 1, cols + k0, ld, grad_out + first,
                 d.out_channels, 1, grad_weight + k0 * d.out_channels + first, d.out_channels)
        else:
            gemm(False, True, channels, rows, d.P, 1, grad_out + first * d.P, d.P,
                 cols + k0 * ld, ld, 1, grad_weight + first * d.Kg + k0, d.Kg)


cdef void input_grad_shared_columns(const floating* grad_out, const floating* weight,
                                    floating* grad_image, floating* col, const Geometry* g,
                                    const Plan* plan, int num_threads) noexcept nogil:
    """One image in shared mode: the columns Wᵀ·grad_out by blocks of k_block column-matrix
    rows in parallel, then folded into the image in parallel over its rows (pointwise: the
    blocks are the image's channels, written in place)."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t blocks = (d.Kg + plan.k_block - 1) // plan.k_block
    cdef Py_ssize_t rows = g.height if plan.nhwc else g.channels * g.height
    cdef Py_ssize_t task, grp, k0, row
    cdef int count
    cdef floating* target
    cdef int ld
    for task in prange(plan.groups * blocks, num_threads=num_threads, schedule="dynamic"):
        grp = task // blocks
        k0 = (task % blocks) * plan.k_block
        count = <int> (block_end(k0, plan.k_block, d.Kg) - k0)
        target = <floating*> group_columns(grad_image, col, &d, plan, grp, d.P)
        ld = group_columns_ld(&d, plan, d.P)
        if plan.nhwc:
            gemm(False, True, d.P, count, d.Mg, 1, grad_out + grp * d.Mg, d.out_channels,
                 weight + k0 * d.out_channels + grp * d.Mg, d.out_channels, 0, target + k0, ld)
        else:
            gemm(True, False, count, d.P, d.Mg, 1, weight + grp * d.Mg * d.Kg + k0, d.Kg,
                 grad_out + grp * d.Mg * d.P, d.P, 0, target + k0 * ld, ld)
    if plan.pointwise:
        return
    memset(grad_image, 0, g.channels * g.height * g.width * sizeof(floating))
    for row in prange(rows, num_threads=num_threads, schedule="static"):
        columns_to_image_rows(col, grad_image, g, plan, 0, g.out_h, row, row + 1)


cdef void weight_grad_tile(const floating* grad_out, const floating* image,
                           floating* grad_weight, floating* col, const Geometry* g,
                           const Plan* plan, Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """grad_weight += grad_out[rows oh0..oh1) ⋆ columns(image)ᵀ for one image."""
    cdef Dims d = dims_of(g, plan)
    cdef int tile = <int> ((oh1 - oh0) * g.out_w)
    cdef Py_ssize_t start = oh0 * g.out_w
    cdef Py_ssize_t grp
    if not plan.pointwise and not plan.nhwc:
        image_to_columns(image, col, g, plan, 0, oh0, oh1)
    for grp in range(plan.groups):
        if plan.nhwc:
            if plan.pointwise:
                gemm(True, False, d.Cg, d.Mg, tile, 1, image + start * d.C + grp * d.Cg, d.C,
                     grad_out + start * d.out_channels + grp * d.Mg, d.out_channels,
                     1, grad_weight + grp * d.Mg, d.out_channels)
            else:
                image_to_columns(image, col, g, plan, grp, oh0, oh1)
                gemm(True, False, d.Kg, d.Mg, tile, 1, col, d.Kg,
                     grad_out + start * d.out_channels + grp * d.Mg, d.out_channels,
                     1, grad_weight + grp * d.Mg, d.out_channels)
        else:
            if plan.pointwise:
                gemm(False, True, d.Mg, d.Cg, tile, 1, grad_out + grp * d.Mg * d.P + start, d.P,
                     image + grp * d.Cg * d.P + start, d.P, 1, grad_weight + grp * d.Mg * d.Cg,
                     d.Cg)
            else:
                gemm(False, True, d.Mg, d.Kg, tile, 1, grad_out + grp * d.Mg * d.P + start, d.P,
                     col + grp * d.Kg * tile, tile, 1, grad_weight + grp * d.Mg * d.Kg, d.Kg)


cdef void weight_grad_images(const floating* grad_out, const floating* images,
                             floating* grad_weight, floating* scratch, const Geometry* g,
                             const Plan* plan, int num_threads) noexcept nogil:
    """One group, images of few positions: grad_weight += Σ_n grad_out[n] ⋆ columns(x[n]),
    plan.images images at a time, one product of depth count·P per block of k_block
    column-matrix rows × m_block output channels, each block a task adding straight into
    grad_weight. NCHW: the images' columns side by side (C·kh·kw × count·P, image b's at
    b·P) and their output gradients side by side (C_out × count·P) in `scratch`,
    grad_weight += dy·colsᵀ. NHWC: their columns one under another (count·P × kh·kw·C; 1×1:
    the images themselves) against their output gradients as they lie (count·P × C_out),
    grad_weight += colsᵀ·dy. No per-thread accumulators to clear and reduce, and each
    element is summed by one product, image after image, for any thread count
    (docs/performance.md#weight-grad-images)."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_size = plan.out_channels * d.P
    cdef Py_ssize_t k_blocks = (d.Kg + plan.k_block - 1) // plan.k_block
    cdef Py_ssize_t m_blocks = (d.Mg + plan.m_block - 1) // plan.m_block
    cdef Py_ssize_t groups = (plan.batch + plan.images - 1) // plan.images
    cdef Py_ssize_t grp, n0, count, task, b, c, i, j, k0, m0
    cdef int ld, ld_col, rows, channels
    cdef const floating* col = scratch
    cdef const floating* dy
    for grp in range(groups):
        n0 = grp * plan.images
        count = plan.images if plan.images < plan.batch - n0 else plan.batch - n0
        ld = <int> (count * d.P)
        if plan.nhwc:
            col = group_columns(images + n0 * image_size, scratch, &d, plan, 0, ld)
            ld_col = group_columns_ld(&d, plan, ld)
            dy = grad_out + n0 * out_size
            if not plan.pointwise:
                image_columns_parallel(images + n0 * image_size, scratch, g, plan, count,
                                       num_threads)
        else:
            ld_col = ld
            dy = scratch + <Py_ssize_t> d.Kg * ld
            for task in prange(g.channels * g.kernel_h * count, num_threads=num_threads,
                               schedule="static"):
                b = task % count
                c = task // count // g.kernel_h
                i = task // count % g.kernel_h
                for j in range(g.kernel_w):
                    im2col_nchw_row(images + (n0 + b) * image_size + c * g.height * g.width,
                                    scratch + ((c * g.kernel_h + i) * g.kernel_w + j) * ld
                                    + b * d.P, g, i, j, 0, g.out_h)
            for task in prange(plan.out_channels * count, num_threads=num_threads,
                               schedule="static"):
                b = task % count
                c = task // count
                memcpy(<floating*> dy + c * ld + b * d.P,
                       grad_out + (n0 + b) * out_size + c * d.P, d.P * sizeof(floating))
        for task in prange(k_blocks * m_blocks, num_threads=num_threads, schedule="static"):
            k0 = task // m_blocks * plan.k_block
            m0 = task % m_blocks * plan.m_block
            rows = <int> (block_end(k0, plan.k_block, d.Kg) - k0)
            channels = <int> (block_end(m0, plan.m_block, d.Mg) - m0)
            if plan.nhwc:
                gemm(True, False, rows, channels, ld, 1, col + k0, ld_col, dy + m0,
                     d.out_channels, 1, grad_weight + k0 * d.out_channels + m0,
                     d.out_channels)
            else:
                gemm(False, True, channels, rows, ld, 1, dy + m0 * ld, ld, col + k0 * ld_col,
                     ld_col, 1, grad_weight + m0 * d.Kg + k0, d.Kg)


cdef void pointwise_nhwc_weight_grad_transposed(const floating* grad_out,
                                                const floating* image, floating* grad_weight_t,
                                                const Geometry* g, const Plan* plan,
                                                Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """grad_weight_t (C_out × C_in) += grad_out[rows oh0..oh1)ᵀ · image rows, for one image of
    an NHWC 1×1 convolution of one group: the transpose of weight_grad_tile's product."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t start = oh0 * g.out_w
    gemm(True, False, d.out_channels, d.C, <int> ((oh1 - oh0) * g.out_w), 1,
         grad_out + start * d.out_channels, d.out_channels, image + start * d.C, d.C, 1,
         grad_weight_t, d.C)


cdef void input_grad_columns(const floating* grad_out, const floating* weight, floating* col,
                             Py_ssize_t col_tile, Py_ssize_t col_offset, const Geometry* g,
                             const Plan* plan, Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """Columns of the input gradient, Wᵀ · grad_out, for output rows [oh0, oh1), written
    into a column buffer that holds `col_tile` positions starting `col_offset` positions
    before oh0 (so several tiles can fill one wider buffer). Pointwise: `col` is the image
    gradient itself."""
    cdef Dims d = dims_of(g, plan)
    cdef int tile = <int> ((oh1 - oh0) * g.out_w)
    cdef int ld = <int> col_tile
    cdef Py_ssize_t start = oh0 * g.out_w
    cdef Py_ssize_t grp
    for grp in range(plan.groups):
        if plan.nhwc:
            if plan.pointwise:
                gemm(False, True, tile, d.Cg, d.Mg, 1,
                     grad_out + start * d.out_channels + grp * d.Mg, d.out_channels,
                     weight + grp * d.Mg, d.out_channels, 0, col + start * d.C + grp * d.Cg, d.C)
            else:
                gemm(False, True, tile, d.Kg, d.Mg, 1,
                     grad_out + start * d.out_channels + grp * d.Mg, d.out_channels,
                     weight + grp * d.Mg, d.out_channels, 0,
                     col + grp * col_tile * d.Kg + col_offset * d.Kg, d.Kg)
        else:
            if plan.pointwise:
                gemm(True, False, d.Cg, tile, d.Mg, 1, weight + grp * d.Mg * d.Cg, d.Cg,
                     grad_out + grp * d.Mg * d.P + start, d.P, 0,
                     col + grp * d.Cg * d.P + start, d.P)
            else:
                gemm(True, False, d.Kg, tile, d.Mg, 1, weight + grp * d.Mg * d.Kg, d.Kg,
                     grad_out + grp * d.Mg * d.P + start, d.P, 0,
                     col + grp * d.Kg * col_tile + col_offset, ld)


cdef void input_grad_image(const floating* grad_out, const floating* weight,
                           floating* grad_image, floating* col, const Geometry* g,
                           const Plan* plan) noexcept nogil:
    """grad_image += col2im(Wᵀ · grad_out) for one image, tile by tile, on one thread."""
    cdef Py_ssize_t oh0 = 0, oh1
    cdef Py_ssize_t rows = g.height if plan.nhwc else g.channels * g.height
    cdef Py_ssize_t tile
    while oh0 < g.out_h:
        oh1 = tile_end(oh0, g, plan)
        tile = (oh1 - oh0) * g.out_w
        input_grad_columns(grad_out, weight, col, tile, 0, g, plan, oh0, oh1)
        columns_to_image_rows(col, grad_image, g, plan, oh0, oh1, 0, rows)
        oh0 = oh1


cdef enum:
    # Blocks of the pointwise input gradient over the batch: fixed sizes, never cut by the
    # thread count (the GEMM a block gets, and so the bits, must not depend on it).
    POINTWISE_GRAD_ROWS = 1024
    POINTWISE_GRAD_COLS = 128
    # ... used for batches of images of at most this many positions (their own GEMMs are
    # thin) and C_in a multiple of 2·POINTWISE_GRAD_COLS (an even count of equal blocks);
    # larger images, or one, keep one GEMM per (image, tile), which measured faster.
    POINTWISE_GRAD_MAX_POSITIONS = 64


cdef void pointwise_input_grad_block(const floating* grad_out, const floating* weight,
                                     floating* grad_x, const Geometry* g, const Plan* plan,
                                     Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0,
                                     Py_ssize_t c1) noexcept nogil:
    """Rows [r0, r1) (image, position) × input channels [c0, c1) of a 1×1, stride-1,
    unpadded input gradient of one group over the whole batch. NHWC: rows of consecutive
    images are contiguous, one grad_out · Wᵀ product. NCHW (float32, own-GEMM builds): the
    transposed product grad_xᵀ = grad_outᵀ · W, its rows gathered across images through
    pointers on this thread's stack and written back transposed."""
    cdef Dims d = dims_of(g, plan)
    cdef const float* a_rows[POINTWISE_GRAD_ROWS]
    cdef float* c_rows[POINTWISE_GRAD_ROWS]
    cdef Py_ssize_t i, n, p
    if plan.nhwc:
        gemm(False, True, <int> (r1 - r0), <int> (c1 - c0), d.out_channels, 1,
             grad_out + r0 * d.out_channels, d.out_channels, weight + c0 * d.out_channels,
             d.out_channels, 0, grad_x + r0 * d.C + c0, d.C)
        return
    if floating is float:
        for i in range(r1 - r0):
            n = (r0 + i) // d.P
            p = (r0 + i) % d.P
            a_rows[i] = grad_out + n * d.out_channels * d.P + p
            c_rows[i] = grad_x + (n * d.C + c0) * d.P + p
        fastconv_f32_gemm_gathered(<int> (r1 - r0), <int> (c1 - c0), d.out_channels, a_rows,
                                   d.P, weight + c0, d.C, c_rows, d.P)


cdef void pointwise_input_grad_over_batch(const floating* grad_out, const floating* weight,
                                          floating* grad_x, const Geometry* g,
                                          const Plan* plan, int num_threads) noexcept nogil:
    """The input gradient of a 1×1, stride-1, unpadded convolution of one group whose
    images are small: each image's own product would be thin, so the batch's positions
    become the rows of one product, cut into blocks of POINTWISE_GRAD_ROWS rows and
    POINTWISE_GRAD_COLS input channels (pointwise_input_grad_block;
    docs/performance.md#pointwise-nhwc-input-grad)."""
    cdef Dims d = dims_of(g, plan)
    cdef Py_ssize_t rows = plan.batch * d.P
    cdef Py_ssize_t row_blocks = (rows + POINTWISE_GRAD_ROWS - 1) // POINTWISE_GRAD_ROWS
    cdef Py_ssize_t col_blocks = (d.C + POINTWISE_GRAD_COLS - 1) // POINTWISE_GRAD_COLS
    cdef Py_ssize_t item, r0, c0
    for item in prange(row_blocks * col_blocks, num_threads=num_threads, schedule="dynamic"):
        r0 = (item // col_blocks) * POINTWISE_GRAD_ROWS
        c0 = (item % col_blocks) * POINTWISE_GRAD_COLS
        pointwise_input_grad_block(grad_out, weight, grad_x, g, plan, r0,
                                   min(r0 + POINTWISE_GRAD_ROWS, rows), c0,
                                   min(c0 + POINTWISE_GRAD_COLS, d.C))


# ---------------------------------------------------------------- whole batch
def conv2d_forward(const floating[::1] x, const floating[::1] weight, const floating[::1] bias,
                   floating[::1] out, floating[::1] workspace, Geometry g, Plan plan,
                   Py_ssize_t col_size, int num_threads):
    """out[n] = conv(x[n]) (+ bias) for every image, one (image, row tile) item at a time
    per thread; or, when plan.m_block splits the output channels, image by image with
    columns shared by all threads. `bias` is empty when there is none; `workspace` holds
    num_threads column tiles of col_size elements (shared mode: one image's columns; empty
    for pointwise convolutions; the direct path: after the packed weight,
    PANEL_ROWS·ceil(C_out / PANEL_ROWS)·C_in·kh·kw floats)."""
    cdef Py_ssize_t tiles = tiles_per_image(&g, &plan)
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_size = plan.out_channels * g.out_h * g.out_w
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* ws = &workspace[0] if workspace.shape[0] > 0 else NULL
    cdef const floating* xp = &x[0]
    cdef floating* outp = &out[0]
    cdef Py_ssize_t item, n, oh0
    cdef Py_ssize_t count
    if plan.shared:
        with nogil:
            n = 0
            while n < plan.batch:
                count = plan.images if plan.images < plan.batch - n else plan.batch - n
                forward_shared_columns(xp + n * image_size, &weight[0], bias_ptr,
                                       outp + n * out_size, ws, &g, &plan, count, num_threads)
                n = n + count
        return
    cdef Py_ssize_t depth = g.channels * g.kernel_h * g.kernel_w
    cdef const float* panels = NULL
    if floating is float:
        # Windows that are image runs go to forward_tile's in-place GEMMs, even where the
        # direct path was planned (its panels copy the windows).
        if plan.direct and not windows_are_image_runs(&g, &plan):
            if not plan.nhwc:  # NCHW: the weight packed once, ahead of the threads' scratch
                with nogil:
                    pack_panels(&weight[0], plan.out_channels, depth, ws)
                panels = ws
                ws = ws + packed_size(plan.out_channels, depth)
            for item in prange(plan.batch * tiles, nogil=True, num_threads=num_threads,
                               schedule="dynamic"):
                n = item // tiles
                oh0 = (item % tiles) * plan.tile_rows
                if plan.nhwc:
                    forward_tile_direct_nhwc(xp + n * image_size, &weight[0], bias_ptr,
                                             outp + n * out_size,
                                             ws + omp_get_thread_num() * col_size, &g, &plan,
                                             oh0, tile_end(oh0, &g, &plan))
                else:
                    forward_tile_direct(xp + n * image_size, panels, bias_ptr,
                                        outp + n * out_size,
                                        ws + omp_get_thread_num() * col_size, &g, &plan, oh0,
                                        tile_end(oh0, &g, &plan))
            return
    # "dynamic" wherever items are whole GEMMs that write their own part of the result: a
    # thread that finishes takes the next, so a core another process keeps busy does not
    # hold the rest back, and the bits stay the same (docs/performance.md
    # #dynamic-scheduling).
    for item in prange(plan.batch * tiles, nogil=True, num_threads=num_threads,
                       schedule="dynamic"):
        n = item // tiles
        oh0 = (item % tiles) * plan.tile_rows
        forward_tile(xp + n * image_size, &weight[0], bias_ptr, outp + n * out_size,
                     ws + omp_get_thread_num() * col_size if ws != NULL else NULL,
                     &g, &plan, oh0, tile_end(oh0, &g, &plan))


def conv2d_weight_grad(const floating[::1] grad_out, const floating[::1] x,
                       floating[::1] grad_weight, floating[::1] workspace,
                       floating[::1] partials, Geometry g, Plan plan, Py_ssize_t col_size,
                       int num_threads):
    """grad_weight += Σ_n grad_out[n] ⋆ columns(x[n])ᵀ. Each thread accumulates its items into
    its own slice of `partials` (num_threads × weight size, arriving zeroed); the slices
    are then added into grad_weight in thread order."""
    cdef Py_ssize_t tiles = tiles_per_image(&g, &plan)
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_size = plan.out_channels * g.out_h * g.out_w
    cdef Py_ssize_t weight_size = grad_weight.shape[0]
    cdef floating* ws = &workspace[0] if workspace.shape[0] > 0 else NULL
    cdef floating* acc = &partials[0] if partials.shape[0] > 0 else NULL
    cdef floating* gw = &grad_weight[0]
    cdef Py_ssize_t item, n, oh0, k, t
    if plan.shared:
        with nogil:
            for n in range(plan.batch):
                weight_grad_shared_columns(&grad_out[0] + n * out_size, &x[0] + n * image_size,
                                           gw, ws, &g, &plan, num_threads)
        return
    if plan.weight_grad_images:
        with nogil:
            weight_grad_images(&grad_out[0], &x[0], gw, acc, &g, &plan, num_threads)
        return
    cdef bint transposed = False
    if floating is float:
        # NHWC 1×1 of one group whose C_out the own GEMM cannot take as columns (not a
        # multiple of 16) but whose C_in it can: each thread accumulates the transposed
        # gradient, grad_outᵀ·x (C_out × C_in), added back transposed
        # (docs/performance.md#weight-grad-transposed).
        transposed = (plan.nhwc and plan.pointwise and plan.groups == 1
                      and not fastconv_f32_gemm_pays(g.channels, <int> plan.out_channels,
                                                     <int> (g.out_h * g.out_w),
                                                     plan.out_channels, False)
                      and fastconv_f32_gemm_pays(<int> plan.out_channels, g.channels,
                                                 <int> (g.out_h * g.out_w), g.channels,
                                                 False))
    for item in prange(plan.batch * tiles, nogil=True, num_threads=num_threads,
                       schedule="static"):
        n = item // tiles
        oh0 = (item % tiles) * plan.tile_rows
        if transposed:
            pointwise_nhwc_weight_grad_transposed(
                &grad_out[0] + n * out_size, &x[0] + n * image_size,
                acc + omp_get_thread_num() * weight_size, &g, &plan, oh0,
                tile_end(oh0, &g, &plan))
        else:
            weight_grad_tile(&grad_out[0] + n * out_size, &x[0] + n * image_size,
                             acc + omp_get_thread_num() * weight_size,
                             ws + omp_get_thread_num() * col_size if ws != NULL else NULL,
                             &g, &plan, oh0, tile_end(oh0, &g, &plan))
    if transposed:  # acc holds (C_out × C_in) blocks; grad_weight is (C_in × C_out)
        for k in prange(weight_size, nogil=True, num_threads=num_threads, schedule="static"):
            for t in range(num_threads):
                gw[k] += acc[t * weight_size + (k % plan.out_channels) * g.channels
                             + k // plan.out_channels]
        return
    for k in prange(weight_size, nogil=True, num_threads=num_threads, schedule="static"):
        for t in range(num_threads):
            gw[k] += acc[t * weight_size + k]


def conv2d_input_grad(const floating[::1] grad_out, const floating[::1] weight,
                      floating[::1] grad_x, floating[::1] workspace, Geometry g, Plan plan,
                      Py_ssize_t col_size, int num_threads):
    """grad_x[n] = col2im(Wᵀ · grad_out[n]) for every image (also conv_transpose2d).

    Neighbouring tiles of one image add into the same input rows, so the work runs in
    rounds: each thread fills one tile of a round's shared column buffer (the workspace,
    num_threads tiles wide) with its GEMM, then the round's columns are folded into the
    image in parallel over image rows. Each pixel is summed by one thread in a fixed order,
    so the result does not depend on the thread count."""
    cdef Py_ssize_t tiles = tiles_per_image(&g, &plan)
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_size = plan.out_channels * g.out_h * g.out_w
    cdef Py_ssize_t rows = g.height if plan.nhwc else g.channels * g.height
    cdef Py_ssize_t round_rows = plan.tile_rows * num_threads
    cdef const floating* gop = &grad_out[0]
    cdef const floating* wp = &weight[0]
    cdef floating* gxp = &grad_x[0]
    cdef floating* ws = &workspace[0] if workspace.shape[0] > 0 else NULL
    cdef Py_ssize_t item, n, oh0, oh1, round_start, round_end, row, t
    if plan.shared:
        with nogil:
            for n in range(plan.batch):
                input_grad_shared_columns(gop + n * out_size, wp, gxp + n * image_size, ws, &g,
                                          &plan, num_threads)
        return
    cdef bint over_batch = plan.nhwc  # NCHW: the gathered product of the own GEMM
    if floating is float:
        over_batch = over_batch or FASTCONV_F32_GEMM
    if (over_batch and plan.pointwise and plan.groups == 1 and plan.batch > 1
            and g.out_h * g.out_w <= POINTWISE_GRAD_MAX_POSITIONS
            and g.channels % (2 * POINTWISE_GRAD_COLS) == 0):
        pointwise_input_grad_over_batch(gop, wp, gxp, &g, &plan, num_threads)
        return
    if plan.pointwise:  # every input pixel comes from one output pixel: tiles are independent
        for item in prange(plan.batch * tiles, nogil=True, num_threads=num_threads,
                           schedule="dynamic"):
            n = item // tiles
            oh0 = (item % tiles) * plan.tile_rows
            input_grad_columns(gop + n * out_size, wp, gxp + n * image_size, 0, 0, &g, &plan,
                               oh0, tile_end(oh0, &g, &plan))
        return
    memset(gxp, 0, plan.batch * image_size * sizeof(floating))
    if plan.batch >= num_threads:
        # Enough images: one per thread, its tiles in turn. Each pixel still sums its
        # contributions in ascending oh, so the result equals the round-based one below.
        for n in prange(plan.batch, nogil=True, num_threads=num_threads, schedule="dynamic"):
            input_grad_image(gop + n * out_size, wp, gxp + n * image_size,
                             ws + omp_get_thread_num() * col_size, &g, &plan)
        return
    with nogil:
        for n in range(plan.batch):
            round_start = 0
            while round_start < g.out_h:
                round_end = round_start + round_rows
                if round_end > g.out_h:
                    round_end = g.out_h
                for t in prange(num_threads, num_threads=num_threads, schedule="static"):
                    oh0 = round_start + t * plan.tile_rows
                    if oh0 < round_end:
                        oh1 = oh0 + plan.tile_rows
                        if oh1 > round_end:
                            oh1 = round_end
                        input_grad_columns(gop + n * out_size, wp, ws,
                                           (round_end - round_start) * g.out_w,
                                           (oh0 - round_start) * g.out_w, &g, &plan, oh0, oh1)
                for row in prange(rows, num_threads=num_threads, schedule="static"):
                    columns_to_image_rows(ws, gxp + n * image_size, &g, &plan, round_start,
                                          round_end, row, row + 1)
                round_start = round_end


cdef enum:
    BIAS_LANES = 16        # independent partial sums of a channel (one AVX-512 vector)
# cpdef: also the module constant BIAS_ROW_BLOCKS, by which fastconv.conv sizes `partials`
cpdef enum:
    BIAS_ROW_BLOCKS = 64   # row blocks of an NHWC gradient, summed separately (fixed count)


cdef floating channel_sum(const floating* src, Py_ssize_t batch, Py_ssize_t stride,
                          Py_ssize_t positions) noexcept nogil:
    """Σ_n Σ_p src[n·stride + p]: BIAS_LANES partial sums, each lane taking the positions
    p ≡ lane (mod BIAS_LANES) of the whole blocks (elementwise, so it vectorises), the last
    positions and then the lanes added in order."""
    cdef floating lanes[BIAS_LANES]
    cdef floating total = 0
    cdef Py_ssize_t n, p, lane, whole = positions - positions % BIAS_LANES
    cdef const floating* row
    for lane in range(BIAS_LANES):
        lanes[lane] = 0
    for n in range(batch):
        row = src + n * stride
        p = 0
        while p < whole:
            for lane in range(BIAS_LANES):
                lanes[lane] += row[p + lane]
            p += BIAS_LANES
        for p in range(whole, positions):
            total += row[p]
    for lane in range(BIAS_LANES):
        total += lanes[lane]
    return total


def bias_grad(const floating[::1] grad_out, floating[::1] grad_bias, floating[::1] partials,
              Py_ssize_t batch, Py_ssize_t channels, Py_ssize_t positions, bint nhwc,
              int num_threads):
    """grad_bias[o] = Σ over images and positions of grad_out. The summation order is fixed
    (never dependent on the thread count): NCHW, one task per channel, in BIAS_LANES
    partial sums (channel_sum); NHWC, BIAS_ROW_BLOCKS blocks of rows summed into
    `partials` (BIAS_ROW_BLOCKS × channels), then added in block order."""
    cdef Py_ssize_t o, p, block, rows = batch * positions
    cdef Py_ssize_t block_rows = (rows + BIAS_ROW_BLOCKS - 1) // BIAS_ROW_BLOCKS
    cdef floating total
    cdef const floating* src = &grad_out[0]
    cdef floating* acc = &partials[0] if partials.shape[0] > 0 else NULL
    if not nhwc:
        for o in prange(channels, nogil=True, num_threads=num_threads, schedule="static"):
            grad_bias[o] = channel_sum(src + o * positions, batch, channels * positions,
                                       positions)
        return
    for block in prange(BIAS_ROW_BLOCKS, nogil=True, num_threads=num_threads, schedule="static"):
        for o in range(channels):
            acc[block * channels + o] = 0
        for p in range(block * block_rows, min(rows, (block + 1) * block_rows)):
            for o in range(channels):
                acc[block * channels + o] += src[p * channels + o]
    for o in range(channels):
        total = 0
        for block in range(BIAS_ROW_BLOCKS):
            total = total + acc[block * channels + o]
        grad_bias[o] = total


# ---------------------------------------------------------------- GEMM, for the tests
def gemm_f32(bint trans_a, bint trans_b, int m, int n, int k, const float[:, ::1] a,
             const float[:, ::1] b, float[:, ::1] c, float beta, bint own):
    """c[:m, :n] = op(a)·op(b) + beta·c[:m, :n] (beta 0 or 1; op(a) m×k, op(b) k×n, read
    from the top-left of a and b; every leading dimension is its buffer's width) by the
    `gemm` every kernel uses (own: 0), or by fastconv's own GEMM whatever
    fastconv_f32_gemm_pays says (own: 1; OWN_GEMM builds). The tests check the sizes."""
    cdef int lda = <int> a.shape[1], ldb = <int> b.shape[1], ldc = <int> c.shape[1]
    if not own:
        gemm(trans_a, trans_b, m, n, k, 1, &a[0, 0], lda, &b[0, 0], ldb, beta, &c[0, 0], ldc)
    elif trans_b:
        fastconv_f32_gemm_nt(m, n, k, &a[0, 0], 1 if trans_a else lda, lda if trans_a else 1,
                             &b[0, 0], ldb, &c[0, 0], ldc, beta == 1)
    else:
        fastconv_f32_gemm(m, n, k, &a[0, 0], 1 if trans_a else lda, lda if trans_a else 1,
                          &b[0, 0], ldb, &c[0, 0], ldc, beta == 1)


def own_gemm_pays(int m, int n, int k, bint trans_b, long ldb=0):
    """fastconv_f32_gemm_pays: whether `gemm` takes fastconv's own GEMM for an m×n product
    of depth k, B's rows ldb apart (default: n, or k when trans_b)."""
    if ldb == 0:
        ldb = k if trans_b else n
    return bool(fastconv_f32_gemm_pays(m, n, k, ldb, trans_b))
