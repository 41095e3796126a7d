# Matrix transposes between channels-first and channels-last blocks (transpose.h: 16×16
# register blocks for float32 in AVX-512 builds, the plain loop otherwise).
from cython cimport floating


cdef extern from "transpose.h" nogil:
    void fastconv_transpose_f32(const float* src, long src_stride, float* dst,
                                long dst_stride, long rows, long cols)
    void fastconv_transpose_f64(const double* src, long src_stride, double* dst,
                                long dst_stride, long rows, long cols)


cdef inline void transpose(const floating* src, Py_ssize_t src_stride, floating* dst,
                           Py_ssize_t dst_stride, Py_ssize_t rows,
                           Py_ssize_t cols) noexcept nogil:
    """dst[j·dst_stride + i] = src[i·src_stride + j] for i < rows, j < cols."""
    if floating is float:
        fastconv_transpose_f32(src, src_stride, dst, dst_stride, rows, cols)
    else:
        fastconv_transpose_f64(src, src_stride, dst, dst_stride, rows, cols)
