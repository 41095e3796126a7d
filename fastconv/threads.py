"""Thread control (SPEC §0): fastconv's OpenMP team size and BLAS thread limits.

fastconv never oversubscribes the cores: where its own OpenMP loop calls BLAS, BLAS is held
at one thread (threadpoolctl) and the user's setting is restored afterwards.
"""
from __future__ import annotations

import contextlib
import operator
import threading

from fastconv._kernels import _openmp

__all__ = ["get_num_threads", "set_num_threads", "threads"]

_lock = threading.Lock()
_num_threads = None  # None: OpenMP's default, read at call time
_controller = None


def get_num_threads():
    """Threads fastconv's kernels use: the last `set_num_threads`, else OpenMP's default
    (which honours ``OMP_NUM_THREADS``). Always 1 when built without OpenMP."""
    if not _openmp.openmp_enabled():
        return 1
    if _num_threads is not None:
        return _num_threads
    return max(1, _openmp.default_num_threads())


def _check_count(n, fn):
    if isinstance(n, bool):
        raise ValueError(f"{fn}: n must be an int >= 1, got {n!r}")
    try:
        count = operator.index(n)
    except TypeError:
        raise ValueError(f"{fn}: n must be an int >= 1, got {n!r}") from None
    if count < 1:
        raise ValueError(f"{fn}: n must be an int >= 1, got {n!r}")
    return count


def set_num_threads(n):
    """Use `n` threads (>= 1) in fastconv's kernels from now on, in every Python thread."""
    global _num_threads
    count = _check_count(n, "set_num_threads")
    with _lock:
        _num_threads = count


@contextlib.contextmanager
def threads(n):
    """Context manager: fastconv uses `n` threads inside the block; the previous setting
    returns on exit, also on an exception.

    >>> with fastconv.threads(1):
    ...     cols = fastconv.im2col(x, 3)
    """
    global _num_threads
    count = _check_count(n, "threads")
    with _lock:
        previous = _num_threads
        _num_threads = count
    try:
        yield count
    finally:
        with _lock:
            _num_threads = previous


def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once (it scans the process)."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS fastconv calls must be loaded)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


def blas_limit(n):
    """Context manager holding every BLAS at `n` threads, restoring the user's setting after."""
    return _blas_controller().limit(limits=n, user_api="blas")


def blas_info():
    """threadpoolctl's description of the BLAS libraries (for `python -m fastconv info`)."""
    return [info for info in _blas_controller().info() if info.get("user_api") == "blas"]
