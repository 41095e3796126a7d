# The region-maximum kernels of _rmac.pyx compiled for avx2 (setup.py's ISA_FLAGS): the
# channel loops run with wider vectors. fastconv.cpu imports it instead of _rmac when the
# CPU has those instructions.
include "_rmac.pyx"
