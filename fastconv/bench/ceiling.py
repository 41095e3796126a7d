"""The GEMM ceiling: a convolution's bare BLAS calls, with no im2col, as a speed limit.

``GEMM eff`` in the tables = ceiling time / fastconv time: 1.0 means fastconv runs at
bare-GEMM speed.
"""
from __future__ import annotations

import numpy as np

from fastconv.threads import blas_limit

__all__ = ["gemm_ceiling"]


def gemm_ceiling(geometry, dtype, threads, seed=0):
    """A function timing the bare BLAS of a convolution: ``sgemm``/``dgemm`` of
    ``geometry.gemm_shape`` (M, K, N), once per image and group, with BLAS at `threads`.

    The operands are preallocated Fortran-ordered arrays (no copies in scipy's wrapper) and
    reused by every call, so they stay cache-warm: a ceiling, not a model of the real
    convolution's memory traffic.
    """
    from scipy.linalg import blas

    dtype = np.dtype(dtype)
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    m, k, n = geometry.gemm_shape
    rng = np.random.default_rng(seed)
    a = np.asfortranarray(rng.standard_normal((m, k), dtype=dtype))
    b = np.asfortranarray(rng.standard_normal((k, n), dtype=dtype))
    c = np.zeros((m, n), dtype=dtype, order="F")
    count = geometry.batch * geometry.groups

    def ceiling():
        with blas_limit(threads):
            for _ in range(count):
                gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1)
        return c

    return ceiling
