from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

# Element types the data-movement kernels work on. Integer (and bool) arrays are viewed
# as the unsigned type of the same width: copying keeps every bit, and unsigned sums wrap
# exactly as NumPy's signed ones do (signed overflow would be undefined behaviour in C).
ctypedef fused element_t:
    float
    double
    uint8_t
    uint16_t
    uint32_t
    uint64_t
