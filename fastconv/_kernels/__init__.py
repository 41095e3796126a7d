"""Private Cython kernels. Call them only through the validating public API in `fastconv`."""
