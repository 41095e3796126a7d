"""Winograd convolution F(m×m, 3×3) for 3×3 kernels at stride 1 (docs/spec.md §5).

The output is cut into m×m tiles, numbered t = (n·tile_rows + ty)·tile_cols + tx over the
whole batch; tile t reads the alpha×alpha input tile d (alpha = m + 2) whose corner is
(ty·m − top, tx·m − left), zero outside the image. With U = G g Gᵀ of every filter g and
V = Bᵀ d B of every input tile, each of the alpha² points p of the transform domain is
one GEMM per group over a block of tiles, channels innermost:

  M[p] (tiles × C_out/g) = V[p] (tiles × C_in/g) · U[p] (C_in/g × C_out/g)

and the output tile is Aᵀ M A + bias. The tile transforms (winograd_transforms.h, written
by scripts/gen_winograd.py) run across 64 bytes of channels at a time, so the kernel works
on channels-last images: an NCHW image is transposed into the workspace first and its
result transposed back. An output that comes out NaN or ±Inf is summed again directly over
its window, so non-finite values reach exactly the outputs whose windows read them, as in
direct convolution.

Blocks of block_tiles tiles (fixed by the plan, never by the thread count) run one per
thread, each in the thread's own slice of the workspace; when the plan says so (large
transformed weights) or there are fewer blocks than threads, the threads share each block
instead (its transforms split by tiles, its GEMMs by point). Every value is computed by the
same operations either way, so results do not depend on the thread count. The caller holds
BLAS at one thread. Everything here trusts fastconv._engine, which validated the geometry
and sized the workspace with workspace_size().
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcmp

from fastconv._kernels._blas cimport gemm
from fastconv._kernels._layout cimport transpose
from fastconv._kernels._openmp cimport omp_get_thread_num


cdef extern from "winograd_transforms.h" nogil:
    void fastconv_wino2_weight_f32(const float* taps, long tap_stride, float* out,
                                   long point_stride, long filters)
    void fastconv_wino4_weight_f32(const float* taps, long tap_stride, float* out,
                                   long point_stride, long filters)
    void fastconv_wino2_weight_f64(const double* taps, long tap_stride, double* out,
                                   long point_stride, long filters)
    void fastconv_wino4_weight_f64(const double* taps, long tap_stride, double* out,
                                   long point_stride, long filters)
    void fastconv_wino2_input_f32(const float* const* pixels, float* out, long point_stride,
                                  long channels)
    void fastconv_wino4_input_f32(const float* const* pixels, float* out, long point_stride,
                                  long channels)
    void fastconv_wino2_input_f64(const double* const* pixels, double* out,
                                  long point_stride, long channels)
    void fastconv_wino4_input_f64(const double* const* pixels, double* out,
                                  long point_stride, long channels)
    void fastconv_wino2_output_f32(const float* src, long point_stride, float* const* outputs,
                                   const float* bias, long channels)
    void fastconv_wino4_output_f32(const float* src, long point_stride, float* const* outputs,
                                   const float* bias, long channels)
    void fastconv_wino2_output_f64(const double* src, long point_stride,
                                   double* const* outputs, const double* bias, long channels)
    void fastconv_wino4_output_f64(const double* src, long point_stride,
                                   double* const* outputs, const double* bias, long channels)


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
    bint nhwc                 # the caller's layout (the kernel itself runs channels-last)
    # The threads work on each block together (its transforms split by tiles, its GEMMs
    # by point) instead of one block each: for transformed weights larger than a core's
    # cache, which one block per thread would stream once per block
    bint shared
    # A padding mode other than "zeros" (docs/spec.md §6): the addresses of the source-index
    # tables of rows and columns (fastconv.geometry.Window.source_tables, indexed by
    # padded coordinate h_im + pad_top, of length H + top + bottom = out_h + 2), 0 for zeros
    Py_ssize_t row_src
    Py_ssize_t col_src


ctypedef struct Tiling:
    Py_ssize_t alpha          # input tile side, m + 2
    Py_ssize_t points         # alpha²
    Py_ssize_t cols           # tiles per output row of tiles
    Py_ssize_t per_image
    Py_ssize_t total
    Py_ssize_t blocks


cdef enum:
    MAX_POINTS = 36           # alpha² of F(4×4, 3×3), the largest tile
    FILTER_CHUNK = 64         # filters transformed together (vectorised across filters)


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
    """Elements of one block's transformed input V: alpha²·block_tiles·C_in."""
    return t.points * p.block_tiles * p.channels


cdef inline Py_ssize_t m_size(const WinogradPlan* p, const Tiling* t) noexcept nogil:
    """Elements of one block's transform-domain products M: alpha²·block_tiles·C_out."""
    return t.points * p.block_tiles * p.out_channels


cdef inline Py_ssize_t layout_size(const WinogradPlan* p) noexcept nogil:
    """Elements of the channels-last copies of an NCHW input and output (0 for NHWC)."""
    if p.nhwc:
        return 0
    return p.batch * (p.height * p.width * p.channels + p.out_h * p.out_w * p.out_channels)


cdef inline bint shares_blocks(const WinogradPlan* p, const Tiling* t,
                               int num_threads) noexcept nogil:
    """The threads work on each block together: as the plan says, or with fewer blocks
    than threads."""
    return p.shared or t.blocks < num_threads


def workspace_size(WinogradPlan plan, int num_threads):
    """Elements of workspace winograd_forward needs with `num_threads` threads."""
    cdef Tiling t = tiling_of(&plan)
    cdef Py_ssize_t blocks = v_size(&plan, &t) + m_size(&plan, &t)
    if not shares_blocks(&plan, &t, num_threads):
        blocks = num_threads * blocks
    return layout_size(&plan) + blocks


def transformed_weight_size(WinogradPlan plan):
    """Elements of U: alpha²·C_in/groups·C_out."""
    cdef Tiling t = tiling_of(&plan)
    return t.points * plan.out_channels * (plan.channels // plan.groups)


# ---------------------------------------------------------------- weight transform
def weight_transform(const floating[::1] weight, floating[::1] transformed, WinogradPlan plan,
                     int num_threads):
    """U[p·F + f] = (G g_f Gᵀ)[p] for each of the F = C_in/groups·C_out 3×3 filters g_f,
    f = c·C_out + o (the channels-last GEMM's order), from an OIHW weight (plan.nhwc
    false) or an HWIO one."""
    cdef Py_ssize_t filters = plan.out_channels * (plan.channels // plan.groups)
    cdef Py_ssize_t chunks = (filters + FILTER_CHUNK - 1) // FILTER_CHUNK
    cdef Py_ssize_t chunk
    for chunk in prange(chunks, nogil=True, num_threads=num_threads, schedule="static"):
        weight_chunk(&weight[0], &transformed[0], filters, plan.out_channels,
                     chunk * FILTER_CHUNK, min(filters, (chunk + 1) * FILTER_CHUNK), plan.m,
                     plan.nhwc)


cdef void weight_chunk(const floating* weight, floating* transformed, Py_ssize_t filters,
                       Py_ssize_t out_channels, Py_ssize_t f0, Py_ssize_t f1, Py_ssize_t m,
                       bint hwio) noexcept nogil:
    """Filters [f0, f1): their taps gathered filter-innermost into a small buffer, then the
    unrolled G g Gᵀ across them. (An HWIO weight is gathered too: read in place, its nine
    tap rows lie C_in/g·C_out elements apart and fight over the same cache sets.)"""
    cdef floating taps[9 * FILTER_CHUNK]
    cdef Py_ssize_t cin_g = filters // out_channels
    cdef Py_ssize_t count = f1 - f0, f, k, o, c
    for f in range(count):
        c = (f0 + f) // out_channels
        o = (f0 + f) % out_channels
        for k in range(9):
            taps[k * FILTER_CHUNK + f] = (weight[k * filters + f0 + f] if hwio
                                          else weight[(o * cin_g + c) * 9 + k])
    if floating is float:
        if m == 2:
            fastconv_wino2_weight_f32(taps, FILTER_CHUNK, transformed + f0, filters, count)
        else:
            fastconv_wino4_weight_f32(taps, FILTER_CHUNK, transformed + f0, filters, count)
    else:
        if m == 2:
            fastconv_wino2_weight_f64(taps, FILTER_CHUNK, transformed + f0, filters, count)
        else:
            fastconv_wino4_weight_f64(taps, FILTER_CHUNK, transformed + f0, filters, count)


# ---------------------------------------------------------------- layouts
cdef void change_layout(const floating* src, floating* dst, Py_ssize_t batch,
                        Py_ssize_t channels, Py_ssize_t pixels, bint to_channels_last,
                        int num_threads) noexcept nogil:
    """dst[n, q, c] = src[n, c, q] (to_channels_last) or dst[n, c, q] = src[n, q, c], for
    the `pixels` positions q of each image."""
    # By runs of 64 positions: a run's channels-last block (64·C values) stays in cache
    # while its C rows of 64 are read or written
    cdef Py_ssize_t runs = (pixels + 63) // 64
    cdef Py_ssize_t row, n, q0, first, last
    for row in prange(batch * runs, num_threads=num_threads, schedule="static"):
        n = row // runs
        q0 = row % runs * 64
        first = n * channels * pixels + q0      # the run in the channels-first image
        last = (n * pixels + q0) * channels     # the run in the channels-last image
        if to_channels_last:
            transpose(src + first, pixels, dst + last, channels, channels,
                      min(64, pixels - q0))
        else:
            transpose(src + last, channels, dst + first, pixels, min(64, pixels - q0),
                      channels)


# ---------------------------------------------------------------- tile transforms
cdef inline Py_ssize_t source_index(Py_ssize_t index, Py_ssize_t size, Py_ssize_t pad,
                                    Py_ssize_t padded, Py_ssize_t table) noexcept nogil:
    """The image index that coordinate `index` (pad before it, `padded` coordinates in all)
    reads: itself inside [0, size), else the table's entry (−1: a zero; also past the
    padded image, where only outputs that are not stored read)."""
    if 0 <= index < size:
        return index
    if table == 0 or index + pad < 0 or index + pad >= padded:
        return -1
    return (<const Py_ssize_t*> table)[index + pad]


cdef inline void input_tile(const floating* image, floating* dst, Py_ssize_t point_stride,
                            const WinogradPlan* p, const Tiling* t, Py_ssize_t ty,
                            Py_ssize_t tx) noexcept nogil:
    """V of tile (ty, tx) of one channels-last image over all its channels, into
    dst[p·point_stride + c]."""
    cdef const floating* pixels[MAX_POINTS]
    cdef Py_ssize_t i, j, h_im, w_im
    for i in range(t.alpha):
        h_im = source_index(ty * p.m - p.pad_top + i, p.height, p.pad_top, p.out_h + 2,
                            p.row_src)
        for j in range(t.alpha):
            w_im = source_index(tx * p.m - p.pad_left + j, p.width, p.pad_left, p.out_w + 2,
                                p.col_src)
            pixels[i * t.alpha + j] = (image + (h_im * p.width + w_im) * p.channels
                                       if h_im >= 0 and w_im >= 0 else NULL)
    if floating is float:
        if p.m == 2:
            fastconv_wino2_input_f32(pixels, dst, point_stride, p.channels)
        else:
            fastconv_wino4_input_f32(pixels, dst, point_stride, p.channels)
    else:
        if p.m == 2:
            fastconv_wino2_input_f64(pixels, dst, point_stride, p.channels)
        else:
            fastconv_wino4_input_f64(pixels, dst, point_stride, p.channels)


cdef inline bint is_finite(floating value) noexcept nogil:
    """Neither NaN nor ±Inf (v − v is 0 only then)."""
    return value - value == 0


cdef floating direct_output(const floating* image, const floating* weight, floating bias,
                            const WinogradPlan* p, Py_ssize_t o, Py_ssize_t oh,
                            Py_ssize_t ow) noexcept nogil:
    """Output (o, oh, ow) of one channels-last image summed directly over its 3×3 window
    (weight OIHW, or HWIO when plan.nhwc), for the outputs Winograd leaves non-finite: a
    NaN or ±Inf reaches every output of a tile through the transforms (and large values
    can overflow there), while the exact result is non-finite only where the window reads
    it. Taps in the padding multiply 0, as in GEMM (a NaN or ±Inf tap then gives NaN)."""
    cdef Py_ssize_t cin_g = p.channels // p.groups
    cdef Py_ssize_t c0 = o // (p.out_channels // p.groups) * cin_g
    cdef Py_ssize_t c, i, j, h_im, w_im
    cdef floating total = bias
    cdef floating tap, pixel
    for c in range(cin_g):
        for i in range(3):
            h_im = source_index(oh - p.pad_top + i, p.height, p.pad_top, p.out_h + 2,
                                p.row_src)
            for j in range(3):
                w_im = source_index(ow - p.pad_left + j, p.width, p.pad_left, p.out_w + 2,
                                    p.col_src)
                tap = (weight[((i * 3 + j) * cin_g + c) * p.out_channels + o] if p.nhwc
                       else weight[((o * cin_g + c) * 3 + i) * 3 + j])
                pixel = 0
                if h_im >= 0 and w_im >= 0:
                    pixel = image[(h_im * p.width + w_im) * p.channels + c0 + c]
                total = total + tap * pixel
    return total


cdef void output_tile(const floating* src, Py_ssize_t point_stride, floating* result,
                      const floating* bias, const floating* image, const floating* weight,
                      const WinogradPlan* p, const Tiling* t, Py_ssize_t ty,
                      Py_ssize_t tx) noexcept nogil:
    """Output tile (ty, tx) of one channels-last image over all channels from
    M = src[p·point_stride + o]: Aᵀ M A + bias; then any non-finite value summed directly."""
    cdef floating* outputs[16]
    cdef Py_ssize_t i, j, o, oh, ow
    cdef floating* out
    for i in range(p.m):
        oh = ty * p.m + i
        for j in range(p.m):
            ow = tx * p.m + j
            outputs[i * p.m + j] = (result + (oh * p.out_w + ow) * p.out_channels
                                    if oh < p.out_h and ow < p.out_w else NULL)
    if floating is float:
        if p.m == 2:
            fastconv_wino2_output_f32(src, point_stride, outputs, bias, p.out_channels)
        else:
            fastconv_wino4_output_f32(src, point_stride, outputs, bias, p.out_channels)
    else:
        if p.m == 2:
            fastconv_wino2_output_f64(src, point_stride, outputs, bias, p.out_channels)
        else:
            fastconv_wino4_output_f64(src, point_stride, outputs, bias, p.out_channels)
    for i in range(p.m * p.m):
        out = outputs[i]
        if out == NULL:
            continue
        for o in range(p.out_channels):
            if not is_finite(out[o]):
                out[o] = direct_output(image, weight, bias[o] if bias != NULL else 0, p, o,
                                       ty * p.m + i // p.m, tx * p.m + i % p.m)


cdef void transform_tiles(const floating* x, floating* v, const WinogradPlan* p,
                          const Tiling* t, Py_ssize_t t0, Py_ssize_t t_lo,
                          Py_ssize_t t_hi) noexcept nogil:
    """V of tiles [t_lo, t_hi) of the block starting at tile t0."""
    cdef Py_ssize_t image_size = p.height * p.width * p.channels
    cdef Py_ssize_t tile, r
    for tile in range(t_lo, t_hi):
        r = tile % t.per_image
        input_tile(x + tile // t.per_image * image_size, v + (tile - t0) * p.channels,
                   p.block_tiles * p.channels, p, t, r // t.cols, r % t.cols)


cdef void output_tiles(const floating* mm, floating* out, const floating* bias,
                       const floating* x, const floating* weight, const WinogradPlan* p,
                       const Tiling* t, Py_ssize_t t0, Py_ssize_t t_lo,
                       Py_ssize_t t_hi) noexcept nogil:
    """Outputs of tiles [t_lo, t_hi) of the block starting at tile t0."""
    cdef Py_ssize_t image_size = p.height * p.width * p.channels
    cdef Py_ssize_t out_size = p.out_h * p.out_w * p.out_channels
    cdef Py_ssize_t tile, n, r
    for tile in range(t_lo, t_hi):
        n = tile // t.per_image
        r = tile % t.per_image
        output_tile(mm + (tile - t0) * p.out_channels, p.block_tiles * p.out_channels,
                    out + n * out_size, bias, x + n * image_size, weight, p, t, r // t.cols,
                    r % t.cols)


# ---------------------------------------------------------------- products
cdef void point_gemm(const floating* u, const floating* v, floating* mm, const WinogradPlan* p,
                     Py_ssize_t task, Py_ssize_t tiles) noexcept nogil:
    """Task = point·groups + group: that point's product of one group over `tiles`."""
    cdef Py_ssize_t point = task // p.groups, grp = task % p.groups
    cdef int cin_g = <int> (p.channels // p.groups)
    cdef int cout_g = <int> (p.out_channels // p.groups)
    cdef const floating* u_p = u + point * cin_g * p.out_channels
    cdef const floating* v_p = v + point * p.block_tiles * p.channels
    cdef floating* m_p = mm + point * p.block_tiles * p.out_channels
    gemm(False, False, <int> tiles, cout_g, cin_g, 1, v_p + grp * cin_g, <int> p.channels,
         u_p + grp * cout_g, <int> p.out_channels, 0, m_p + grp * cout_g,
         <int> p.out_channels)


cdef void block_alone(const floating* x, const floating* u, const floating* weight,
                      const floating* bias, floating* out, floating* ws, const WinogradPlan* p,
                      const Tiling* t, Py_ssize_t b) noexcept nogil:
    """Block b on this thread alone: ws holds its V and M."""
    cdef floating* v = ws
    cdef floating* mm = ws + v_size(p, t)
    cdef Py_ssize_t t0 = b * p.block_tiles
    cdef Py_ssize_t t1 = t0 + p.block_tiles if t0 + p.block_tiles < t.total else t.total
    cdef Py_ssize_t task
    transform_tiles(x, v, p, t, t0, t0, t1)
    for task in range(t.points * p.groups):
        point_gemm(u, v, mm, p, task, t1 - t0)
    output_tiles(mm, out, bias, x, weight, p, t, t0, t0, t1)


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
    cdef Py_ssize_t in_pixels = plan.height * plan.width
    cdef Py_ssize_t out_pixels = plan.out_h * plan.out_w
    cdef Py_ssize_t per_thread = v_size(&plan, &t) + m_size(&plan, &t)
    cdef Py_ssize_t b, t0, t1, task
    cdef floating* result = outp
    cdef floating* v
    cdef floating* mm
    if not plan.nhwc:  # run channels-last on copies at the front of the workspace
        with nogil:
            change_layout(xp, ws, plan.batch, plan.channels, in_pixels, True, num_threads)
        xp = ws
        result = ws + plan.batch * in_pixels * plan.channels
        ws = ws + layout_size(&plan)
    if not shares_blocks(&plan, &t, num_threads):
        for b in prange(t.blocks, nogil=True, num_threads=num_threads, schedule="static"):
            block_alone(xp, u, wp, bias_ptr, result, ws + omp_get_thread_num() * per_thread,
                        &plan, &t, b)
    else:
        v = ws
        mm = ws + v_size(&plan, &t)
        with nogil:
            for b in range(t.blocks):
                t0 = b * plan.block_tiles
                t1 = t0 + plan.block_tiles if t0 + plan.block_tiles < t.total else t.total
                for task in prange(t0, t1, num_threads=num_threads, schedule="static"):
                    transform_tiles(xp, v, &plan, &t, t0, task, task + 1)
                for task in prange(t.points * plan.groups, num_threads=num_threads,
                                   schedule="static"):
                    point_gemm(u, v, mm, &plan, task, t1 - t0)
                for task in prange(t0, t1, num_threads=num_threads, schedule="static"):
                    output_tiles(mm, result, bias_ptr, xp, wp, &plan, &t, t0, task, task + 1)
    if not plan.nhwc:
        with nogil:
            change_layout(result, outp, plan.batch, plan.out_channels, out_pixels, False,
                          num_threads)


def flip_hwio(const floating[::1] weight, floating[::1] flipped, Py_ssize_t kh,
              Py_ssize_t kw, Py_ssize_t groups, Py_ssize_t cin_g, Py_ssize_t cout_g):
    """flipped[kh−1−i, kw−1−j, o, k·cin_g + c] = weight[i, j, c, k·cout_g + o]: an HWIO
    weight (kh, kw, C_in/g, C_out) with both spatial axes reversed and, per group k, its
    channel axes swapped, (kh, kw, C_out/g, C_in); a blocked transpose per tap and group
    (numpy's strided copy of the same runs several times slower)."""
    cdef Py_ssize_t i, j, k, taps_in = cin_g * cout_g * groups
    with nogil:
        for i in range(kh):
            for j in range(kw):
                for k in range(groups):
                    transpose(&weight[0] + (i * kw + j) * taps_in + k * cout_g,
                              cout_g * groups,
                              &flipped[0] + ((kh - 1 - i) * kw + kw - 1 - j) * taps_in
                              + k * cin_g, cin_g * groups, cin_g, cout_g)


def same_bytes(const unsigned char[::1] a, const unsigned char[::1] b):
    """Whether two byte buffers are equally long and hold the same bytes (memcmp)."""
    cdef int differ = 0
    if a.shape[0] != b.shape[0]:
        return False
    if a.shape[0]:
        with nogil:
            differ = memcmp(&a[0], &b[0], a.shape[0])
    return differ == 0
