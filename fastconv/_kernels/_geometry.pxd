# One image's convolution geometry, already validated by fastconv.geometry.
# Bottom/right padding never appears: it only decides out_h/out_w.
# row_src / col_src: padding modes other than "zeros" (docs/spec.md §6), the addresses of
# the per-axis source-index tables (numpy.intp, one entry per padded coordinate
# p = h_im + pad_top, resp. w_im + pad_left: the image index it reads, −1 for a zero);
# 0 for "zeros", where every coordinate outside the image reads a zero. The owner of the
# tables (fastconv.geometry.Window) outlives every kernel call that reads them.
ctypedef struct Geometry:
    Py_ssize_t channels
    Py_ssize_t height
    Py_ssize_t width
    Py_ssize_t kernel_h
    Py_ssize_t kernel_w
    Py_ssize_t stride_h
    Py_ssize_t stride_w
    Py_ssize_t pad_top
    Py_ssize_t pad_left
    Py_ssize_t dilation_h
    Py_ssize_t dilation_w
    Py_ssize_t out_h
    Py_ssize_t out_w
    Py_ssize_t row_src
    Py_ssize_t col_src


cdef inline const Py_ssize_t* row_sources(const Geometry* g) noexcept nogil:
    """The row table (NULL for "zeros")."""
    return <const Py_ssize_t*> g.row_src


cdef inline const Py_ssize_t* col_sources(const Geometry* g) noexcept nogil:
    """The column table (NULL for "zeros")."""
    return <const Py_ssize_t*> g.col_src


cdef inline Py_ssize_t source_row(const Geometry* g, Py_ssize_t h_im) noexcept nogil:
    """The image row that padded row h_im (possibly outside [0, H)) reads, or −1 for a zero."""
    if 0 <= h_im < g.height:
        return h_im
    if g.row_src == 0:
        return -1
    return row_sources(g)[h_im + g.pad_top]


cdef inline Py_ssize_t source_col(const Geometry* g, Py_ssize_t w_im) noexcept nogil:
    """The image column that padded column w_im reads, or −1 for a zero."""
    if 0 <= w_im < g.width:
        return w_im
    if g.col_src == 0:
        return -1
    return col_sources(g)[w_im + g.pad_left]


# The window's index maps (ATen's h_im / w_im): output (oh, ow) reads image pixel
# (input_row(oh, i), input_col(ow, j)) at tap (i, j); output_row / output_col invert them.
cdef inline Py_ssize_t input_row(const Geometry* g, Py_ssize_t oh, Py_ssize_t i) noexcept nogil:
    """h_im = oh·sh − top + i·dh."""
    return oh * g.stride_h - g.pad_top + i * g.dilation_h


cdef inline Py_ssize_t input_col(const Geometry* g, Py_ssize_t ow, Py_ssize_t j) noexcept nogil:
    """w_im = ow·sw − left + j·dw."""
    return ow * g.stride_w - g.pad_left + j * g.dilation_w


cdef inline Py_ssize_t whole_quotient(Py_ssize_t t, Py_ssize_t step,
                                      Py_ssize_t count) noexcept nogil:
    """t / step when it is a whole number in [0, count), else −1."""
    if t < 0 or (step != 1 and t % step != 0):
        return -1
    t = t if step == 1 else t // step  # no division at step 1 (tens of cycles)
    return t if t < count else -1


cdef inline Py_ssize_t output_row(const Geometry* g, Py_ssize_t h_im, Py_ssize_t i) noexcept nogil:
    """The oh with input_row(g, oh, i) == h_im, or −1 when there is none."""
    return whole_quotient(h_im + g.pad_top - i * g.dilation_h, g.stride_h, g.out_h)


cdef inline Py_ssize_t output_col(const Geometry* g, Py_ssize_t w_im, Py_ssize_t j) noexcept nogil:
    """The ow with input_col(g, ow, j) == w_im, or −1 when there is none."""
    return whole_quotient(w_im + g.pad_left - j * g.dilation_w, g.stride_w, g.out_w)
