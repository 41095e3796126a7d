"""Convolution on GEMM: im2col tiles into a workspace, then BLAS ?gemm (SPEC §2).

Per image and group, with P = OH·OW, Mg = C_out/groups, Kg = C_in/groups·kh·kw:

  NCHW:  out[g] (Mg×P)  = W[g] (Mg×Kg)   · col[g] (Kg×P)
  NHWC:  out[:, g] (P×Mg) = col[g] (P×Kg) · W[:, g] (Kg×Mg)     (W is HWIO, leading dim C_out)

The columns are built for a tile of output rows [oh0, oh1) at a time, so the workspace can
be bounded. A 1×1, stride-1, unpadded convolution uses the image itself as its columns.
Everything here trusts fastconv.conv, which validated shapes, sizes and BLAS int ranges.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._kernels._blas cimport gemm
from fastconv._kernels._geometry cimport Geometry
from fastconv._kernels._im2col_helpers cimport (
    col2im_nchw_row, col2im_nhwc_row, im2col_nchw_rows, im2col_nhwc_row)
from fastconv._kernels._openmp cimport omp_get_thread_num


ctypedef struct Plan:
    # How one convolution is laid out, shared by forward and backward.
    Py_ssize_t batch
    Py_ssize_t out_channels
    Py_ssize_t groups
    bint nhwc
    bint pointwise      # 1×1, stride 1, no padding: the image is its own column matrix
    Py_ssize_t tile_rows  # output rows per column tile


# ---------------------------------------------------------------- column tiles
cdef void image_to_columns(const floating* image, floating* col, const Geometry* g,
                           const Plan* plan, Py_ssize_t c_begin, Py_ssize_t c_count,
                           Py_ssize_t oh0, Py_ssize_t oh1, int num_threads) noexcept nogil:
    """Columns of one image for output rows [oh0, oh1): NCHW (C·kh·kw × tile), all channels;
    NHWC (tile × kh·kw·Cg), channels [c_begin, c_begin + c_count)."""
    cdef Py_ssize_t task, tile = (oh1 - oh0) * g.out_w
    cdef Py_ssize_t nhwc_rows = g.out_w * g.kernel_h * g.kernel_w * c_count
    if plan.nhwc:
        for task in prange(oh1 - oh0, num_threads=num_threads, schedule="static"):
            im2col_nhwc_row(image, col + task * nhwc_rows, g, oh0 + task, c_begin, c_count)
    else:
        for task in prange(g.channels * g.kernel_h, num_threads=num_threads, schedule="static"):
            im2col_nchw_rows(image + (task // g.kernel_h) * g.height * g.width,
                             col + task * g.kernel_w * tile, g, task % g.kernel_h, oh0, oh1)


cdef void columns_to_image(const floating* col, floating* image, const Geometry* g,
                           const Plan* plan, Py_ssize_t c_begin, Py_ssize_t c_count,
                           Py_ssize_t oh0, Py_ssize_t oh1, int num_threads) noexcept nogil:
    """image += the column tile for output rows [oh0, oh1) (the adjoint of image_to_columns);
    one task per image row, so no two threads write the same pixel."""
    cdef Py_ssize_t task, tile = (oh1 - oh0) * g.out_w
    cdef Py_ssize_t channel_rows = g.kernel_h * g.kernel_w * tile
    if plan.nhwc:
        for task in prange(g.height, num_threads=num_threads, schedule="static"):
            col2im_nhwc_row(col, image + task * g.width * g.channels, g, task, c_begin,
                            c_count, oh0, oh1)
    else:
        for task in prange(g.channels * g.height, num_threads=num_threads, schedule="static"):
            col2im_nchw_row(col + (task // g.height) * channel_rows, image + task * g.width, g,
                            task % g.height, oh0, oh1)


cdef inline Py_ssize_t tile_end(Py_ssize_t oh0, const Geometry* g, const Plan* plan) noexcept nogil:
    """End of the tile of output rows that starts at oh0."""
    return oh0 + plan.tile_rows if oh0 + plan.tile_rows < g.out_h else g.out_h


cdef void fill_bias(floating* out, const floating* bias, const Geometry* g,
                    const Plan* plan) noexcept nogil:
    """out = bias broadcast over one image's output (so the GEMMs can accumulate, beta=1)."""
    cdef Py_ssize_t p, o, size = g.out_h * g.out_w
    if plan.nhwc:
        for p in range(size):
            for o in range(plan.out_channels):
                out[p * plan.out_channels + o] = bias[o]
    else:
        for o in range(plan.out_channels):
            for p in range(size):
                out[o * size + p] = bias[o]


# ---------------------------------------------------------------- one image
cdef void forward_image(const floating* image, const floating* weight, const floating* bias,
                        floating* out, floating* col, const Geometry* g, const Plan* plan,
                        int num_threads) noexcept nogil:
    """out = conv(image, weight) (+ bias) for one image."""
    cdef int P = <int> (g.out_h * g.out_w)
    cdef int O = <int> plan.out_channels
    cdef int C = <int> g.channels
    cdef int Mg = <int> (plan.out_channels // plan.groups)
    cdef int Cg = <int> (g.channels // plan.groups)
    cdef int Kg = <int> (Cg * g.kernel_h * g.kernel_w)
    cdef int tile
    cdef Py_ssize_t grp, oh0, oh1
    cdef floating beta = 0
    if bias != NULL:
        fill_bias(out, bias, g, plan)
        beta = 1
    if plan.pointwise:
        for grp in range(plan.groups):
            if plan.nhwc:
                gemm(False, False, P, Mg, Cg, 1, image + grp * Cg, C, weight + grp * Mg, O,
                     beta, out + grp * Mg, O)
            else:
                gemm(False, False, Mg, P, Cg, 1, weight + grp * Mg * Cg, Cg,
                     image + grp * Cg * P, P, beta, out + grp * Mg * P, P)
        return
    oh0 = 0
    while oh0 < g.out_h:
        oh1 = tile_end(oh0, g, plan)
        tile = <int> ((oh1 - oh0) * g.out_w)
        if plan.nhwc:
            for grp in range(plan.groups):
                image_to_columns(image, col, g, plan, grp * Cg, Cg, oh0, oh1, num_threads)
                gemm(False, False, tile, Mg, Kg, 1, col, Kg, weight + grp * Mg, O,
                     beta, out + oh0 * g.out_w * O + grp * Mg, O)
        else:
            image_to_columns(image, col, g, plan, 0, C, oh0, oh1, num_threads)
            for grp in range(plan.groups):
                gemm(False, False, Mg, tile, Kg, 1, weight + grp * Mg * Kg, Kg,
                     col + grp * Kg * tile, tile, beta, out + grp * Mg * P + oh0 * g.out_w, P)
        oh0 = oh1


cdef void backward_image(const floating* grad_out, const floating* image, const floating* weight,
                         floating* grad_image, floating* grad_weight, floating* col,
                         const Geometry* g, const Plan* plan, int num_threads) noexcept nogil:
    """For one image: grad_weight += grad_out ⋆ columns(image) (if grad_weight != NULL);
    grad_image = col2im(Wᵀ · grad_out) (if grad_image != NULL)."""
    cdef int P = <int> (g.out_h * g.out_w)
    cdef int O = <int> plan.out_channels
    cdef int C = <int> g.channels
    cdef int Mg = <int> (plan.out_channels // plan.groups)
    cdef int Cg = <int> (g.channels // plan.groups)
    cdef int Kg = <int> (Cg * g.kernel_h * g.kernel_w)
    cdef int tile
    cdef Py_ssize_t grp, oh0, oh1
    cdef const floating* gout_tile
    if plan.pointwise:
        for grp in range(plan.groups):
            if plan.nhwc:
                if grad_weight != NULL:
                    gemm(True, False, Cg, Mg, P, 1, image + grp * Cg, C, grad_out + grp * Mg, O,
                         1, grad_weight + grp * Mg, O)
                if grad_image != NULL:
                    gemm(False, True, P, Cg, Mg, 1, grad_out + grp * Mg, O, weight + grp * Mg, O,
                         0, grad_image + grp * Cg, C)
            else:
                if grad_weight != NULL:
                    gemm(False, True, Mg, Cg, P, 1, grad_out + grp * Mg * P, P,
                         image + grp * Cg * P, P, 1, grad_weight + grp * Mg * Cg, Cg)
                if grad_image != NULL:
                    gemm(True, False, Cg, P, Mg, 1, weight + grp * Mg * Cg, Cg,
                         grad_out + grp * Mg * P, P, 0, grad_image + grp * Cg * P, P)
        return
    if grad_image != NULL:
        memset(grad_image, 0, g.channels * g.height * g.width * sizeof(floating))
    oh0 = 0
    while oh0 < g.out_h:
        oh1 = tile_end(oh0, g, plan)
        tile = <int> ((oh1 - oh0) * g.out_w)
        if plan.nhwc:
            for grp in range(plan.groups):
                gout_tile = grad_out + oh0 * g.out_w * O + grp * Mg
                if grad_weight != NULL:
                    image_to_columns(image, col, g, plan, grp * Cg, Cg, oh0, oh1, num_threads)
                    gemm(True, False, Kg, Mg, tile, 1, col, Kg, gout_tile, O,
                         1, grad_weight + grp * Mg, O)
                if grad_image != NULL:
                    gemm(False, True, tile, Kg, Mg, 1, gout_tile, O, weight + grp * Mg, O,
                         0, col, Kg)
                    columns_to_image(col, grad_image, g, plan, grp * Cg, Cg, oh0, oh1,
                                     num_threads)
        else:
            if grad_weight != NULL:
                image_to_columns(image, col, g, plan, 0, C, oh0, oh1, num_threads)
                for grp in range(plan.groups):
                    gemm(False, True, Mg, Kg, tile, 1, grad_out + grp * Mg * P + oh0 * g.out_w, P,
                         col + grp * Kg * tile, tile, 1, grad_weight + grp * Mg * Kg, Kg)
            if grad_image != NULL:
                for grp in range(plan.groups):
                    gemm(True, False, Kg, tile, Mg, 1, weight + grp * Mg * Kg, Kg,
                         grad_out + grp * Mg * P + oh0 * g.out_w, P, 0, col + grp * Kg * tile,
                         tile)
                columns_to_image(col, grad_image, g, plan, 0, C, oh0, oh1, num_threads)
        oh0 = oh1


# ---------------------------------------------------------------- whole batch
def conv2d_forward(const floating[::1] x, const floating[::1] weight, const floating[::1] bias,
                   floating[::1] out, floating[::1] workspace, Geometry g, Plan plan,
                   Py_ssize_t col_size, int num_threads, bint batch_parallel):
    """out[n] = conv(x[n]) for every image. `bias` is empty when there is none. With
    batch_parallel, one image per OpenMP thread (the caller holds BLAS at one thread) and
    `workspace` holds num_threads column tiles of col_size; else images in turn, im2col
    parallel inside and BLAS threaded."""
    cdef Py_ssize_t n
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_size = plan.out_channels * g.out_h * g.out_w
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* ws = &workspace[0] if workspace.shape[0] > 0 else NULL
    with nogil:
        if batch_parallel:
            for n in prange(plan.batch, num_threads=num_threads, schedule="static"):
                forward_image(&x[0] + n * image_size, &weight[0], bias_ptr, &out[0] + n * out_size,
                              ws + omp_get_thread_num() * col_size if ws != NULL else NULL,
                              &g, &plan, 1)
        else:
            for n in range(plan.batch):
                forward_image(&x[0] + n * image_size, &weight[0], bias_ptr, &out[0] + n * out_size,
                              ws, &g, &plan, num_threads)


def conv2d_backward(const floating[::1] grad_out, const floating[::1] x,
                    const floating[::1] weight, floating[::1] grad_x, floating[::1] grad_weight,
                    floating[::1] workspace, floating[::1] weight_partials, Geometry g, Plan plan,
                    Py_ssize_t col_size, int num_threads, bint batch_parallel):
    """grad_x[n] = col2im(Wᵀ·grad_out[n]) and grad_weight += Σ_n grad_out[n]·col(x[n])ᵀ.

    An empty grad_x / grad_weight means "not needed" (and x may then be empty). The weight
    gradient is added to what grad_weight holds. With batch_parallel each thread accumulates
    into its own slice of `weight_partials` (num_threads × weight size, arriving zeroed),
    added into grad_weight at the end."""
    cdef Py_ssize_t n, k, t
    cdef Py_ssize_t image_size = g.channels * g.height * g.width
    cdef Py_ssize_t out_size = plan.out_channels * g.out_h * g.out_w
    cdef Py_ssize_t weight_size = weight.shape[0]
    cdef int tid
    cdef const floating* xp = &x[0] if x.shape[0] > 0 else NULL
    cdef floating* gx = &grad_x[0] if grad_x.shape[0] > 0 else NULL
    cdef floating* gw = &grad_weight[0] if grad_weight.shape[0] > 0 else NULL
    cdef floating* ws = &workspace[0] if workspace.shape[0] > 0 else NULL
    cdef floating* partials = &weight_partials[0] if weight_partials.shape[0] > 0 else NULL
    with nogil:
        if batch_parallel:
            for n in prange(plan.batch, num_threads=num_threads, schedule="static"):
                tid = omp_get_thread_num()
                backward_image(&grad_out[0] + n * out_size, xp + n * image_size if xp != NULL else NULL,
                               &weight[0], gx + n * image_size if gx != NULL else NULL,
                               partials + tid * weight_size if gw != NULL else NULL,
                               ws + tid * col_size if ws != NULL else NULL, &g, &plan, 1)
            if gw != NULL:
                for k in prange(weight_size, num_threads=num_threads, schedule="static"):
                    for t in range(num_threads):
                        gw[k] += partials[t * weight_size + k]
        else:
            for n in range(plan.batch):
                backward_image(&grad_out[0] + n * out_size, xp + n * image_size if xp != NULL else NULL,
                               &weight[0], gx + n * image_size if gx != NULL else NULL, gw, ws,
                               &g, &plan, num_threads)
