"""Winograd convolution F(m×m, 3×3) for 3×3 kernels at stride 1 (docs/spec.md §5).

The output is cut into m×m tiles, numbered t = (n·tile_rows + ty)·tile_cols + tx over the
whole batch; tile t reads the alpha×alpha input tile d (alpha = m + 2) whose corner is
(ty·m − top, tx·m − left), zero outside the image. With U = G g Gᵀ of every filter g and
V = Bᵀ d B of every input tile (winograd.h), each of the alpha² points p of the transform
domain is one GEMM per group over a block of tiles:

  NCHW:  M[p] (C_out/g × tiles) = U[p] (C_out/g × C_in/g) · V[p] (C_in/g × tiles)
  NHWC:  M[p] (tiles × C_out/g) = V[p] (tiles × C_in/g) · U[p] (C_in/g × C_out/g)

and the output tile is Aᵀ M A (+ bias); an output that comes out NaN or ±Inf is summed
again directly over its window, so non-finite values reach exactly the outputs whose
windows read them, as in direct convolution. Blocks of block_tiles tiles (fixed by the plan,
never by the thread count) run one per thread, each in the thread's own slice of the
workspace; when the plan says so (large transformed weights) or there are fewer blocks
than threads, the threads share each block instead (its transforms split by channels or
tiles, its GEMMs by point). Every value is computed
by the same operations either way, so results do not depend on the thread count. The
caller holds BLAS at one thread. Everything here trusts fastconv._engine, which validated
the geometry and sized the workspace with workspace_size().
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcmp, memset

from fastconv._kernels._blas cimport gemm
from fastconv._kernels._openmp cimport omp_get_thread_num


cdef extern from "winograd.h" nogil:
    const double* fastconv_winograd_bt(long m)
    const double* fastconv_winograd_g(long m)
    const double* fastconv_winograd_at(long m)


ctypedef struct WinogradPlan:
    Py_ssize_t batch
    Py_ssize_t channels       # C_in
    Py_ssize_t height
    Py_ssize_t width
    Py_ssize_t out_channels
    Py_ssize_t groups
    Py_ssize_t pad_top
    Py_ssize_t pad_left
    Py_ssize_t out_h
    Py_ssize_t out_w
    Py_ssize_t m              # output tile side: 2 or 4
    Py_ssize_t block_tiles    # tiles per block
    bint nhwc
    # The threads work on each block together (its transforms split by channels or tiles,
    # its GEMMs by point) instead of one block each: for transformed weights larger than a
    # core's cache, which one block per thread would stream once per block
    bint shared


ctypedef struct Tiling:
    Py_ssize_t alpha          # input tile side, m + 2
    Py_ssize_t points         # alpha²
    Py_ssize_t cols           # tiles per output row of tiles
    Py_ssize_t per_image
    Py_ssize_t total
    Py_ssize_t blocks


cdef inline Tiling tiling_of(const WinogradPlan* p) noexcept nogil:
    cdef Tiling t
    t.alpha = p.m + 2
    t.points = t.alpha * t.alpha
    t.cols = (p.out_w + p.m - 1) // p.m
    t.per_image = (p.out_h + p.m - 1) // p.m * t.cols
    t.total = p.batch * t.per_image
    t.blocks = (t.total + p.block_tiles - 1) // p.block_tiles
    return t


cdef inline Py_ssize_t v_size(const WinogradPlan* p, const Tiling* t) noexcept nogil:
    """Elements of one block's transformed input V: alpha²·C_in·block_tiles."""
    return t.points * p.channels * p.block_tiles


cdef inline Py_ssize_t m_size(const WinogradPlan* p, const Tiling* t) noexcept nogil:
    """Elements of one block's transform-domain products M: alpha²·C_out·block_tiles."""
    return t.points * p.out_channels * p.block_tiles


cdef inline Py_ssize_t scratch_size(const WinogradPlan* p, const Tiling* t) noexcept nogil:
    """Elements of one thread's scratch for the transforms."""
    cdef Py_ssize_t inputs, outputs
    if p.nhwc:  # Bᵀ d of one tile over all channels; Aᵀ M of one tile over all outputs
        inputs = t.points * p.channels
        outputs = t.alpha * p.m * p.out_channels
    else:  # one row of tiles, phase by phase (two buffers); M A and the output rows
        inputs = 2 * t.alpha * p.m * (t.cols + 1)
        outputs = (t.alpha + 1) * p.m * t.cols
    return inputs if inputs > outputs else outputs


cdef inline bint shares_blocks(const WinogradPlan* p, const Tiling* t,
                               int num_threads) noexcept nogil:
    """The threads work on each block together: as the plan says, or with fewer blocks
    than threads."""
    return p.shared or t.blocks < num_threads


def workspace_size(WinogradPlan plan, int num_threads):
    """Elements of workspace winograd_forward needs with `num_threads` threads."""
    cdef Tiling t = tiling_of(&plan)
    cdef Py_ssize_t scratch = scratch_size(&plan, &t)
    if shares_blocks(&plan, &t, num_threads):
        return v_size(&plan, &t) + m_size(&plan, &t) + num_threads * scratch
    return num_threads * (v_size(&plan, &t) + m_size(&plan, &t) + scratch)


def transformed_weight_size(WinogradPlan plan):
    """Elements of U: alpha²·C_out·C_in/groups."""
    cdef Tiling t = tiling_of(&plan)
    return t.points * plan.out_channels * (plan.channels // plan.groups)


# ---------------------------------------------------------------- weight transform
cdef enum:
    FILTER_CHUNK = 64  # filters transformed together (vectorised across filters)


def weight_transform(const floating[::1] weight, floating[::1] transformed, WinogradPlan plan,
                     int num_threads):
    """U[p·F + f] = (G g_f Gᵀ)[p] for each of the F = C_out·C_in/groups 3×3 filters g_f, in
    the weight's own filter order (OIHW: f = o·C_in/g + c, taps contiguous; HWIO:
    f = c·C_out + o, tap k at k·F + f)."""
    cdef Tiling t = tiling_of(&plan)
    cdef Py_ssize_t filters = plan.out_channels * (plan.channels // plan.groups)
    cdef Py_ssize_t chunks = (filters + FILTER_CHUNK - 1) // FILTER_CHUNK
    cdef Py_ssize_t chunk
    for chunk in prange(chunks, nogil=True, num_threads=num_threads, schedule="static"):
        weight_chunk(&weight[0], &transformed[0], filters, chunk * FILTER_CHUNK,
                     min(filters, (chunk + 1) * FILTER_CHUNK), plan.m, t.alpha, plan.nhwc)


cdef void weight_chunk(const floating* weight, floating* transformed, Py_ssize_t filters,
                       Py_ssize_t f0, Py_ssize_t f1, Py_ssize_t m, Py_ssize_t alpha,
                       bint hwio) noexcept nogil:
    """Filters [f0, f1): taps gathered filter-innermost, then G·g and (G·g)·Gᵀ across them."""
    cdef floating taps[9 * FILTER_CHUNK]
    cdef floating half[6 * 3 * FILTER_CHUNK]  # (G·g)[xi][j] per filter
    cdef const double* g = fastconv_winograd_g(m)
    cdef Py_ssize_t count = f1 - f0, f, k, xi, nu, i, j
    cdef floating coef
    cdef floating* out
    for k in range(9):
        for f in range(count):
            taps[k * FILTER_CHUNK + f] = (weight[k * filters + f0 + f] if hwio
                                          else weight[(f0 + f) * 9 + k])
    for xi in range(alpha):
        for j in range(3):
            out = half + (xi * 3 + j) * FILTER_CHUNK
            for f in range(count):
                out[f] = 0
            for i in range(3):
                coef = <floating> g[xi * 3 + i]
                if coef != 0:
                    for f in range(count):
                        out[f] += coef * taps[(i * 3 + j) * FILTER_CHUNK + f]
    for xi in range(alpha):
        for nu in range(alpha):
            out = transformed + (xi * alpha + nu) * filters + f0
            for f in range(count):
                out[f] = 0
            for j in range(3):
                coef = <floating> g[nu * 3 + j]
                if coef != 0:
                    for f in range(count):
                        out[f] += coef * half[(xi * 3 + j) * FILTER_CHUNK + f]


# ---------------------------------------------------------------- input transform
cdef void input_row_nchw(const floating* plane, floating* dst, Py_ssize_t point_stride,
                         const WinogradPlan* p, const Tiling* t, Py_ssize_t ty,
                         Py_ssize_t tx0, Py_ssize_t count, floating* scratch) noexcept nogil:
    """V of tiles (ty, tx0 .. tx0 + count) of one channel plane, into
    dst[p·point_stride + k]. The tiles' alpha input rows are gathered phase by phase
    (column w0 + k·m + phase at [row][phase][k]), so Bᵀ·d runs along whole rows and d·B
    reads tile k's column j at [j % m][k + j // m]: both vectorise across tiles."""
    cdef const double* bt = fastconv_winograd_bt(p.m)
    cdef Py_ssize_t m = p.m, alpha = t.alpha, width = count + 1, phase_len = m * width
    cdef Py_ssize_t w0 = tx0 * m - p.pad_left
    cdef floating* rows = scratch
    cdef floating* rt = scratch + alpha * phase_len
    cdef Py_ssize_t i, ph, k, q, xi, nu, j, h_im, first, k_lo, k_hi
    cdef const floating* row
    cdef const floating* src
    cdef floating* out
    cdef floating coef
    for i in range(alpha):
        h_im = ty * m - p.pad_top + i
        out = rows + i * phase_len
        if h_im < 0 or h_im >= p.height:
            memset(out, 0, phase_len * sizeof(floating))
            continue
        row = plane + h_im * p.width
        for ph in range(m):  # columns first + k·m: zero left and right of [k_lo, k_hi)
            first = w0 + ph
            k_lo = 0 if first >= 0 else (m - 1 - first) // m
            k_hi = (p.width - first + m - 1) // m
            if k_hi > width:
                k_hi = width
            if k_hi < k_lo:
                k_hi = k_lo
            for k in range(k_lo):
                out[ph * width + k] = 0
            for k in range(k_lo, k_hi):
                out[ph * width + k] = row[first + k * m]
            for k in range(k_hi, width):
                out[ph * width + k] = 0
    for xi in range(alpha):  # rt[xi] = Σ_i Bᵀ[xi][i]·rows[i]
        out = rt + xi * phase_len
        memset(out, 0, phase_len * sizeof(floating))
        for i in range(alpha):
            coef = <floating> bt[xi * alpha + i]
            if coef != 0:
                src = rows + i * phase_len
                for q in range(phase_len):
                    out[q] += coef * src[q]
    for xi in range(alpha):  # V[xi][nu][k] = Σ_j Bᵀ[nu][j]·rt[xi][column k·m + j]
        for nu in range(alpha):
            out = dst + (xi * alpha + nu) * point_stride
            for k in range(count):
                out[k] = 0
            for j in range(alpha):
                coef = <floating> bt[nu * alpha + j]
                if coef != 0:
                    src = rt + xi * phase_len + (j % m) * width + j // m
                    for k in range(count):
                        out[k] += coef * src[k]


cdef void input_tile_nhwc(const floating* image, floating* dst, Py_ssize_t point_stride,
                          const WinogradPlan* p, const Tiling* t, Py_ssize_t ty,
                          Py_ssize_t tx, floating* scratch) noexcept nogil:
    """V of tile (ty, tx) of one NHWC image over all channels, into
    dst[p·point_stride + c] (vectorised across channels; pixels outside the image are 0)."""
    cdef const double* bt = fastconv_winograd_bt(p.m)
    cdef Py_ssize_t alpha = t.alpha, channels = p.channels
    cdef Py_ssize_t i, j, xi, nu, c, h_im, w_im
    cdef const floating* pixel
    cdef const floating* src
    cdef floating* out
    cdef floating coef
    memset(scratch, 0, t.points * channels * sizeof(floating))
    for i in range(alpha):  # scratch[xi][j] = Σ_i Bᵀ[xi][i]·d[i][j]
        h_im = ty * p.m - p.pad_top + i
        if h_im < 0 or h_im >= p.height:
            continue
        for j in range(alpha):
            w_im = tx * p.m - p.pad_left + j
            if w_im < 0 or w_im >= p.width:
                continue
            pixel = image + (h_im * p.width + w_im) * channels
            for xi in range(alpha):
                coef = <floating> bt[xi * alpha + i]
                if coef != 0:
                    out = scratch + (xi * alpha + j) * channels
                    for c in range(channels):
                        out[c] += coef * pixel[c]
    for xi in range(alpha):  # V[xi][nu] = Σ_j Bᵀ[nu][j]·scratch[xi][j]
        for nu in range(alpha):
            out = dst + (xi * alpha + nu) * point_stride
            memset(out, 0, channels * sizeof(floating))
            for j in range(alpha):
                coef = <floating> bt[nu * alpha + j]
                if coef != 0:
                    src = scratch + (xi * alpha + j) * channels
                    for c in range(channels):
                        out[c] += coef * src[c]


cdef void input_block(const floating* x, floating* v, floating* scratch, const WinogradPlan* p,
                      const Tiling* t, Py_ssize_t t0, Py_ssize_t t_lo, Py_ssize_t t_hi,
                      Py_ssize_t c_lo, Py_ssize_t c_hi) noexcept nogil:
    """V of tiles [t_lo, t_hi) of the block starting at tile t0 (NCHW: channels
    [c_lo, c_hi); NHWC: all channels)."""
    cdef Py_ssize_t image_size = p.channels * p.height * p.width
    cdef Py_ssize_t tile, n, ty, tx, end, c
    tile = t_lo
    while tile < t_hi:
        n = tile // t.per_image
        ty = tile % t.per_image // t.cols
        tx = tile % t.cols
        if p.nhwc:
            input_tile_nhwc(x + n * image_size, v + (tile - t0) * p.channels,
                            p.block_tiles * p.channels, p, t, ty, tx, scratch)
            tile = tile + 1
            continue
        end = tile - tx + t.cols  # the rest of this row of tiles, within the range
        if end > t_hi:
            end = t_hi
        for c in range(c_lo, c_hi):
            input_row_nchw(x + n * image_size + c * p.height * p.width,
                           v + c * p.block_tiles + (tile - t0), p.channels * p.block_tiles,
                           p, t, ty, tx, end - tile, scratch)
        tile = end


# ---------------------------------------------------------------- output transform
cdef inline bint is_finite(floating value) noexcept nogil:
    """Neither NaN nor ±Inf (v − v is 0 only then)."""
    return value - value == 0


cdef floating direct_output(const floating* image, const floating* weight, floating bias,
                            const WinogradPlan* p, Py_ssize_t o, Py_ssize_t oh,
                            Py_ssize_t ow) noexcept nogil:
    """Output (o, oh, ow) of one image summed directly over its 3×3 window, for the outputs
    Winograd leaves non-finite: a NaN or ±Inf reaches every output of a tile through the
    transforms (and large values can overflow there), while the exact result is
    non-finite only where the window reads it."""
    cdef Py_ssize_t cin_g = p.channels // p.groups
    cdef Py_ssize_t c0 = o // (p.out_channels // p.groups) * cin_g
    cdef Py_ssize_t c, i, j, h_im, w_im
    cdef floating total = bias
    cdef floating tap, pixel
    for c in range(cin_g):
        for i in range(3):
            h_im = oh - p.pad_top + i
            for j in range(3):
                w_im = ow - p.pad_left + j
                if p.nhwc:  # HWIO weight
                    tap = weight[((i * 3 + j) * cin_g + c) * p.out_channels + o]
                else:  # OIHW weight
                    tap = weight[((o * cin_g + c) * 3 + i) * 3 + j]
                pixel = 0  # padding: a NaN or ±Inf tap still makes NaN, as in GEMM
                if 0 <= h_im < p.height and 0 <= w_im < p.width:
                    pixel = (image[(h_im * p.width + w_im) * p.channels + c0 + c] if p.nhwc
                             else image[((c0 + c) * p.height + h_im) * p.width + w_im])
                total = total + tap * pixel
    return total


cdef void output_row_nchw(const floating* src, Py_ssize_t point_stride, floating* plane,
                          floating bias, const floating* image, const floating* weight,
                          Py_ssize_t o, const WinogradPlan* p, const Tiling* t,
                          Py_ssize_t ty, Py_ssize_t tx0, Py_ssize_t count,
                          floating* scratch) noexcept nogil:
    """Output tiles (ty, tx0 .. tx0 + count) of channel o's plane from
    M = src[p·point_stride + k]: Aᵀ M A + bias, across tiles, then written out row by row
    (the columns past the output's edge are dropped; non-finite values are summed
    directly from `image` and `weight` instead)."""
    cdef const double* at = fastconv_winograd_at(p.m)
    cdef Py_ssize_t m = p.m, alpha = t.alpha
    cdef floating* ma = scratch                    # [xi][j][k]: Σ_nu M[xi][nu]·A[nu][j]
    cdef floating* y = scratch + alpha * m * count  # [j][k]: one output row of the tiles
    cdef Py_ssize_t xi, nu, i, j, k, oh, ow
    cdef const floating* row
    cdef floating* out
    cdef floating* dst
    cdef floating coef
    for xi in range(alpha):
        for j in range(m):
            out = ma + (xi * m + j) * count
            for k in range(count):
                out[k] = 0
            for nu in range(alpha):
                coef = <floating> at[j * alpha + nu]
                if coef != 0:
                    row = src + (xi * alpha + nu) * point_stride
                    for k in range(count):
                        out[k] += coef * row[k]
    for i in range(m):
        oh = ty * m + i
        if oh >= p.out_h:
            break
        for j in range(m):
            out = y + j * count
            for k in range(count):
                out[k] = bias
            for xi in range(alpha):
                coef = <floating> at[i * alpha + xi]
                if coef != 0:
                    row = ma + (xi * m + j) * count
                    for k in range(count):
                        out[k] += coef * row[k]
        dst = plane + oh * p.out_w
        for k in range(count):
            for j in range(m):
                ow = (tx0 + k) * m + j
                if ow < p.out_w:
                    dst[ow] = y[j * count + k]
                    if not is_finite(dst[ow]):
                        dst[ow] = direct_output(image, weight, bias, p, o, oh, ow)


cdef void output_tile_nhwc(const floating* src, Py_ssize_t point_stride, floating* result,
                           const floating* bias, const floating* image,
                           const floating* weight, const WinogradPlan* p, const Tiling* t,
                           Py_ssize_t ty, Py_ssize_t tx, floating* scratch) noexcept nogil:
    """Output tile (ty, tx) of one NHWC image over all channels from
    M = src[p·point_stride + o]: Aᵀ M A + bias (vectorised across channels; non-finite
    values are summed directly from `image` and `weight` instead)."""
    cdef const double* at = fastconv_winograd_at(p.m)
    cdef Py_ssize_t m = p.m, alpha = t.alpha, channels = p.out_channels
    cdef Py_ssize_t xi, nu, i, j, o, oh, ow
    cdef const floating* row
    cdef floating* out
    cdef floating coef
    for xi in range(alpha):  # scratch[xi][j] = Σ_nu M[xi][nu]·A[nu][j]
        for j in range(m):
            out = scratch + (xi * m + j) * channels
            memset(out, 0, channels * sizeof(floating))
            for nu in range(alpha):
                coef = <floating> at[j * alpha + nu]
                if coef != 0:
                    row = src + (xi * alpha + nu) * point_stride
                    for o in range(channels):
                        out[o] += coef * row[o]
    for i in range(m):
        oh = ty * m + i
        if oh >= p.out_h:
            break
        for j in range(m):
            ow = tx * m + j
            if ow >= p.out_w:
                break
            out = result + (oh * p.out_w + ow) * channels
            for o in range(channels):
                out[o] = bias[o] if bias != NULL else 0
            for xi in range(alpha):
                coef = <floating> at[i * alpha + xi]
                if coef != 0:
                    row = scratch + (xi * m + j) * channels
                    for o in range(channels):
                        out[o] += coef * row[o]
            for o in range(channels):
                if not is_finite(out[o]):
                    out[o] = direct_output(image, weight, bias[o] if bias != NULL else 0, p,
                                           o, oh, ow)


cdef void output_block(const floating* mm, floating* out, const floating* bias,
                       const floating* x, const floating* weight, floating* scratch,
                       const WinogradPlan* p, const Tiling* t, Py_ssize_t t0,
                       Py_ssize_t t_lo, Py_ssize_t t_hi, Py_ssize_t o_lo,
                       Py_ssize_t o_hi) noexcept nogil:
    """Outputs of tiles [t_lo, t_hi) of the block starting at tile t0 (NCHW: channels
    [o_lo, o_hi); NHWC: all channels)."""
    cdef Py_ssize_t out_size = p.out_channels * p.out_h * p.out_w
    cdef Py_ssize_t image_size = p.channels * p.height * p.width
    cdef Py_ssize_t tile, n, ty, tx, end, o
    tile = t_lo
    while tile < t_hi:
        n = tile // t.per_image
        ty = tile % t.per_image // t.cols
        tx = tile % t.cols
        if p.nhwc:
            output_tile_nhwc(mm + (tile - t0) * p.out_channels,
                             p.block_tiles * p.out_channels, out + n * out_size, bias,
                             x + n * image_size, weight, p, t, ty, tx, scratch)
            tile = tile + 1
            continue
        end = tile - tx + t.cols
        if end > t_hi:
            end = t_hi
        for o in range(o_lo, o_hi):
            output_row_nchw(mm + o * p.block_tiles + (tile - t0), p.out_channels * p.block_tiles,
                            out + n * out_size + o * p.out_h * p.out_w,
                            bias[o] if bias != NULL else 0, x + n * image_size, weight, o, p,
                            t, ty, tx, end - tile, scratch)
        tile = end


# ---------------------------------------------------------------- products
cdef void point_gemm(const floating* u, const floating* v, floating* mm, const WinogradPlan* p,
                     const Tiling* t, Py_ssize_t task, Py_ssize_t tiles) noexcept nogil:
    """Task = point·groups + group: that point's product of one group, over `tiles`."""
    cdef Py_ssize_t point = task // p.groups, grp = task % p.groups
    cdef int cin_g = <int> (p.channels // p.groups)
    cdef int cout_g = <int> (p.out_channels // p.groups)
    cdef int block = <int> p.block_tiles
    cdef Py_ssize_t filters = p.out_channels * cin_g
    cdef const floating* u_p = u + point * filters
    cdef const floating* v_p = v + point * p.channels * p.block_tiles
    cdef floating* m_p = mm + point * p.out_channels * p.block_tiles
    if p.nhwc:
        gemm(False, False, <int> tiles, cout_g, cin_g, 1, v_p + grp * cin_g, <int> p.channels,
             u_p + grp * cout_g, <int> p.out_channels, 0, m_p + grp * cout_g,
             <int> p.out_channels)
    else:
        gemm(False, False, cout_g, <int> tiles, cin_g, 1, u_p + grp * cout_g * cin_g, cin_g,
             v_p + grp * cin_g * block, block, 0, m_p + grp * cout_g * block, block)


cdef void block_alone(const floating* x, const floating* u, const floating* weight,
                      const floating* bias, floating* out, floating* ws, const WinogradPlan* p,
                      const Tiling* t, Py_ssize_t b) noexcept nogil:
    """Block b on this thread alone: ws holds its V, M and scratch."""
    cdef floating* v = ws
    cdef floating* mm = ws + v_size(p, t)
    cdef floating* scratch = mm + m_size(p, t)
    cdef Py_ssize_t t0 = b * p.block_tiles
    cdef Py_ssize_t t1 = t0 + p.block_tiles if t0 + p.block_tiles < t.total else t.total
    cdef Py_ssize_t task
    input_block(x, v, scratch, p, t, t0, t0, t1, 0, p.channels)
    for task in range(t.points * p.groups):
        point_gemm(u, v, mm, p, t, task, t1 - t0)
    output_block(mm, out, bias, x, weight, scratch, p, t, t0, t0, t1, 0, p.out_channels)


def winograd_forward(const floating[::1] x, const floating[::1] weight,
                     const floating[::1] transformed, const floating[::1] bias,
                     floating[::1] out, floating[::1] workspace, WinogradPlan plan,
                     int num_threads):
    """out = conv2d(x, weight) + bias for a 3×3 kernel at stride 1, from the transformed
    weight U (weight_transform of `weight`, which also serves the direct sums of outputs
    Winograd leaves non-finite); `bias` is empty when there is none; the workspace has
    workspace_size(plan, num_threads) elements."""
    cdef Tiling t = tiling_of(&plan)
    cdef const floating* xp = &x[0]
    cdef const floating* u = &transformed[0]
    cdef const floating* wp = &weight[0]
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* outp = &out[0]
    cdef floating* ws = &workspace[0]
    cdef Py_ssize_t per_thread = v_size(&plan, &t) + m_size(&plan, &t) + scratch_size(&plan, &t)
    cdef Py_ssize_t b, t0, t1, task, c
    cdef floating* v
    cdef floating* mm
    cdef floating* scratch
    if not shares_blocks(&plan, &t, num_threads):
        for b in prange(t.blocks, nogil=True, num_threads=num_threads, schedule="static"):
            block_alone(xp, u, wp, bias_ptr, outp, ws + omp_get_thread_num() * per_thread,
                        &plan, &t, b)
        return
    v = ws
    mm = ws + v_size(&plan, &t)
    scratch = mm + m_size(&plan, &t)
    with nogil:
        for b in range(t.blocks):
            t0 = b * plan.block_tiles
            t1 = t0 + plan.block_tiles if t0 + plan.block_tiles < t.total else t.total
            if plan.nhwc:
                for task in prange(t0, t1, num_threads=num_threads, schedule="static"):
                    input_block(xp, v, scratch + omp_get_thread_num() * scratch_size(&plan, &t),
                                &plan, &t, t0, task, task + 1, 0, plan.channels)
            else:
                for c in prange(plan.channels, num_threads=num_threads, schedule="static"):
                    input_block(xp, v, scratch + omp_get_thread_num() * scratch_size(&plan, &t),
                                &plan, &t, t0, t0, t1, c, c + 1)
            for task in prange(t.points * plan.groups, num_threads=num_threads,
                               schedule="static"):
                point_gemm(u, v, mm, &plan, &t, task, t1 - t0)
            if plan.nhwc:
                for task in prange(t0, t1, num_threads=num_threads, schedule="static"):
                    output_block(mm, outp, bias_ptr, xp, wp,
                                 scratch + omp_get_thread_num() * scratch_size(&plan, &t),
                                 &plan, &t, t0, task, task + 1, 0, plan.out_channels)
            else:
                for c in prange(plan.out_channels, num_threads=num_threads, schedule="static"):
                    output_block(mm, outp, bias_ptr, xp, wp,
                                 scratch + omp_get_thread_num() * scratch_size(&plan, &t),
                                 &plan, &t, t0, t0, t1, c, c + 1)


def same_bytes(const unsigned char[::1] a, const unsigned char[::1] b):
    """Whether two byte buffers are equally long and hold the same bytes (memcmp)."""
    cdef int differ = 0
    if a.shape[0] != b.shape[0]:
        return False
    if a.shape[0]:
        with nogil:
            differ = memcmp(&a[0], &b[0], a.shape[0])
    return differ == 0
