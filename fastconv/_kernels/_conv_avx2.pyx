# The convolution kernels of _conv.pyx compiled for avx2 (setup.py's ISA_FLAGS); the
# AVX-512 build adds the direct small-GEMM forward path (small_gemm.h).
# fastconv.cpu imports it instead of _conv when the CPU has those instructions.
include "_conv.pyx"
