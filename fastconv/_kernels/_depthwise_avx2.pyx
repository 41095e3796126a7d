# The depthwise kernels of _depthwise.pyx compiled for avx2 (setup.py's ISA_FLAGS):
# the same loops, vectorised by the compiler with wider registers and fused multiply-adds.
# fastconv.cpu imports it instead of _depthwise when the CPU has those instructions.
include "_depthwise.pyx"
