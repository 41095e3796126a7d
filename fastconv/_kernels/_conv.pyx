"""Convolution on GEMM: im2col tiles into a workspace, then BLAS ?gemm (SPEC §2).

Per image and group, with P = OH·OW, Mg = C_out/groups, Kg = C_in/groups·kh·kw:

  NCHW:  out[g] (Mg×P)    = W[g] (Mg×Kg)   · col[g] (Kg×P)
  NHWC:  out[:, g] (P×Mg) = col[g] (P×Kg)  · W[:, g] (Kg×Mg)   (W is HWIO, leading dim C_out)

Work is split into items (image, tile of output rows [oh0, oh1)) run by an OpenMP loop;
each thread builds its tile's columns in its own slice of the workspace and calls a
single-threaded GEMM on it (the caller holds BLAS at one thread), so OpenMP and BLAS
threads never compete for the cores. A 1×1, stride-1, unpadded convolution uses the
image itself as its column matrix. Everything here trusts fastconv.conv, which validated
shapes, sizes, workspace lengths and the BLAS int range.

Column tiles in the workspace: NCHW (C·kh·kw × tile), i.e. [group][Kg][tile];
NHWC [group][tile][Kg].
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memset

from fastconv._kernels._blas cimport gemm
from fastconv._kernels._geometry cimport Geometry
from fastconv._kernels._im2col_helpers cimport (
    col2im_nchw_row, col2im_nhwc_row, im2col_nchw_rows, im2col_nhwc_row)
from fastconv._kernels._openmp cimport omp_get_thread_num


ctypedef struct Plan:
    # How one convolution is cut into work items; shared by forward and backward.
    Py_ssize_t batch
    Py_ssize_t out_channels
    Py_ssize_t groups
    bint nhwc
    bint pointwise        # 1×1, stride 1, no padding: the image is its own column matrix
    Py_ssize_t tile_rows  # output rows per work item


ctypedef struct Dims:
    # GEMM sizes of one convolution (BLAS takes C int; the range was checked in Python).
    int P    # OH·OW
    int O    # C_out
    int C    # C_in
    int Mg   # C_out / groups
    int Cg   # C_in / groups
    int Kg   # Cg·kh·kw


cdef inline Dims dims_of(const Geometry* g, const Plan* plan) noexcept nogil:
    cdef Dims d
    d.P = <int> (g.out_h * g.out_w)
    d.O = <int> plan.out_channels
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
cdef void forward_tile(const floating* image, const floating* weight, const floating* bias,
                       floating* out, floating* col, const Geometry* g, const Plan* plan,
                       Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """Output rows [oh0, oh1) of one image: conv(image, weight) (+ bias)."""
    cdef Dims d = dims_of(g, plan)
    cdef int tile = <int> ((oh1 - oh0) * g.out_w)
    cdef Py_ssize_t start = oh0 * g.out_w
    cdef Py_ssize_t grp, o, p
    cdef floating beta = 0
    if bias != NULL:  # start from the bias so the GEMMs accumulate onto it (beta = 1)
        beta = 1
        if plan.nhwc:
            for p in range(start, start + tile):
                for o in range(d.O):
                    out[p * d.O + o] = bias[o]
        else:
            for o in range(d.O):
                for p in range(start, start + tile):
                    out[o * d.P + p] = bias[o]
    if not plan.pointwise and not plan.nhwc:
        image_to_columns(image, col, g, plan, 0, oh0, oh1)
    for grp in range(plan.groups):
        if plan.nhwc:
            if plan.pointwise:
                gemm(False, False, tile, d.Mg, d.Cg, 1, image + start * d.C + grp * d.Cg, d.C,
                     weight + grp * d.Mg, d.O, beta, out + start * d.O + grp * d.Mg, d.O)
            else:
                image_to_columns(image, col, g, plan, grp, oh0, oh1)
                gemm(False, False, tile, d.Mg, d.Kg, 1, col, d.Kg, weight + grp * d.Mg, d.O,
                     beta, out + start * d.O + grp * d.Mg, d.O)
        else:
            if plan.pointwise:
                gemm(False, False, d.Mg, tile, d.Cg, 1, weight + grp * d.Mg * d.Cg, d.Cg,
                     image + grp * d.Cg * d.P + start, d.P, beta,
                     out + grp * d.Mg * d.P + start, d.P)
            else:
                gemm(False, False, d.Mg, tile, d.Kg, 1, weight + grp * d.Mg * d.Kg, d.Kg,
                     col + grp * d.Kg * tile, tile, beta, out + grp * d.Mg * d.P + start, d.P)


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
                     grad_out + start * d.O + grp * d.Mg, d.O, 1, grad_weight + grp * d.Mg, d.O)
            else:
                image_to_columns(image, col, g, plan, grp, oh0, oh1)
                gemm(True, False, d.Kg, d.Mg, tile, 1, col, d.Kg,
                     grad_out + start * d.O + grp * d.Mg, d.O, 1, grad_weight + grp * d.Mg, d.O)
        else:
            if plan.pointwise:
                gemm(False, True, d.Mg, d.Cg, tile, 1, grad_out + grp * d.Mg * d.P + start, d.P,
                     image + grp * d.Cg * d.P + start, d.P, 1, grad_weight + grp * d.Mg * d.Cg,
                     d.Cg)
            else:
                gemm(False, True, d.Mg, d.Kg, tile, 1, grad_out + grp * d.Mg * d.P + start, d.P,
                     col + grp * d.Kg * tile, tile, 1, grad_weight + grp * d.Mg * d.Kg, d.Kg)


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
                gemm(False, True, tile, d.Cg, d.Mg, 1, grad_out + start * d.O + grp * d.Mg, d.O,
                     weight + grp * d.Mg, d.O, 0, col + start * d.C + grp * d.Cg, d.C)
            else:
                gemm(False, True, tile, d.Kg, d.Mg, 1, grad_out + start * d.O + grp * d.Mg, d.O,
                     weight + grp * d.Mg, d.O, 0,
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


# ---------------------------------------------------------------- whole batch
def conv2d_forward(const floating[::1] x, const floating[::1] weight, const floating[::1] bias,
                   floating[::1] out, floating[::1] workspace, Geometry g, Plan plan,
                   Py_ssize_t col_size, int num_threads):
    """out[n] = conv(x[n]) (+ bias) for every image, one (image, row tile) item at a time
    per thread. `bias` is empty when there is none; `workspace` holds num_threads column
    tiles of col_size elements (empty for pointwise convolutions)."""
    cdef Py_ssize_t tiles = tiles_per_image(&g, &plan)
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_size = plan.out_channels * g.out_h * g.out_w
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* ws = &workspace[0] if workspace.shape[0] > 0 else NULL
    cdef const floating* xp = &x[0]
    cdef floating* outp = &out[0]
    cdef Py_ssize_t item, n, oh0
    for item in prange(plan.batch * tiles, nogil=True, num_threads=num_threads,
                       schedule="static"):
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
    cdef floating* acc = &partials[0]
    cdef floating* gw = &grad_weight[0]
    cdef Py_ssize_t item, n, oh0, k, t
    for item in prange(plan.batch * tiles, nogil=True, num_threads=num_threads,
                       schedule="static"):
        n = item // tiles
        oh0 = (item % tiles) * plan.tile_rows
        weight_grad_tile(&grad_out[0] + n * out_size, &x[0] + n * image_size,
                         acc + omp_get_thread_num() * weight_size,
                         ws + omp_get_thread_num() * col_size if ws != NULL else NULL,
                         &g, &plan, oh0, tile_end(oh0, &g, &plan))
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
    if plan.pointwise:  # every input pixel comes from one output pixel: tiles are independent
        for item in prange(plan.batch * tiles, nogil=True, num_threads=num_threads,
                           schedule="static"):
            n = item // tiles
            oh0 = (item % tiles) * plan.tile_rows
            input_grad_columns(gop + n * out_size, wp, gxp + n * image_size, 0, 0, &g, &plan,
                               oh0, tile_end(oh0, &g, &plan))
        return
    memset(gxp, 0, plan.batch * image_size * sizeof(floating))
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
