cdef extern from "simd.h" nogil:
    int FASTCONV_LANES  # floats in one vector of the register-blocked kernels (AVX-512)
