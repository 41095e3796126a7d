"""Thread control (docs/spec.md §0): fastconv's OpenMP team size and BLAS thread limits.

fastconv never oversubscribes the cores: where its own OpenMP loop calls BLAS, BLAS is held
at one thread (through OpenBLAS's own thread-count calls, threadpoolctl's controller for
other BLAS libraries) and the user's setting is restored afterwards.

`set_num_threads` sets the process-wide count; a `threads(n)` block overrides it for the
Python thread that opened it only, so blocks in a user's thread pool do not undo each
other. BLAS limits are process-wide (BLAS has one setting): `blas_limit` regions opened
from several Python threads keep the most recent region's limit in force, and the user's
setting comes back when the last one closes.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import operator
import threading

from fastconv._kernels import _openmp

__all__ = ["get_num_threads", "set_num_threads", "threads"]

_lock = threading.Lock()
_num_threads = None  # None: OpenMP's default, read at call time
_local = threading.local()  # .num_threads / .depth: this Python thread's threads() block
_controller = None
# More threads than this is a mistake (and beyond what an OpenMP runtime can start).
MAX_THREADS = 4096


def get_num_threads():
    """Threads fastconv's kernels use: the last `set_num_threads`, else OpenMP's default
    (which honours ``OMP_NUM_THREADS``). Always 1 when built without OpenMP.

    Inside a :func:`threads` block, that block's count (in the Python thread that opened it).

    Returns
    -------
    int
        ≥ 1.

    Raises
    ------
    None
        It never raises.

    Examples
    --------
    >>> with fastconv.threads(1):
    ...     fastconv.get_num_threads()
    1
    >>> fastconv.get_num_threads() >= 1
    True
    """
    if not _openmp.openmp_enabled():
        return 1
    override = getattr(_local, "num_threads", None)
    if override is not None:
        return override
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
    if count > MAX_THREADS:
        raise ValueError(f"{fn}: n must be at most {MAX_THREADS}, got {n!r}")
    return count


def set_num_threads(n):
    """Use `n` threads (1 to MAX_THREADS) in fastconv's kernels from now on, in every
    Python thread; inside a :func:`threads` block, for the rest of that block only.

    Parameters
    ----------
    n : int
        1 to ``fastconv.threads.MAX_THREADS`` (4096).

    Returns
    -------
    None

    Raises
    ------
    ValueError
        For `n` that is not an int (bool included) or outside 1..MAX_THREADS.

    Examples
    --------
    >>> with fastconv.threads(2):
    ...     fastconv.set_num_threads(1)       # changes this block only
    ...     fastconv.get_num_threads()
    1
    """
    global _num_threads
    count = _check_count(n, "set_num_threads")
    if getattr(_local, "depth", 0):
        _local.num_threads = count
        return
    with _lock:
        _num_threads = count


@contextlib.contextmanager
def threads(n):
    """Context manager: fastconv uses `n` threads inside the block, in this Python thread;
    the previous setting returns on exit, also on an exception. Blocks nest, and blocks
    in different Python threads are independent.

    Parameters
    ----------
    n : int
        1 to ``fastconv.threads.MAX_THREADS`` (4096).

    Yields
    ------
    int
        The count in force inside the block, `n`.

    Raises
    ------
    ValueError
        For `n` that is not an int (bool included) or outside 1..MAX_THREADS.

    Examples
    --------
    >>> x = np.ones((1, 3, 8, 8), np.float32)
    >>> with fastconv.threads(1):
    ...     cols = fastconv.im2col(x, 3)
    >>> cols.shape
    (1, 27, 36)
    """
    count = _check_count(n, "threads")
    previous = getattr(_local, "num_threads", None)
    _local.num_threads = count
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield count
    finally:
        _local.num_threads = previous
        _local.depth -= 1


def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once (it scans the process)."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS fastconv calls must be loaded)
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


_blas_lock = threading.Lock()
_blas_regions = []     # the open blas_limit regions, oldest first
_blas_original = None  # the BLAS thread counts from before the first open region


@functools.cache
def _blas_switches():
    """(get, set) of the thread count of every loaded BLAS library, found once. OpenBLAS
    through its own C functions (about 0.3 µs a call; threadpoolctl's `limit` re-reads
    every library's info, about 25 µs, and fastconv limits BLAS on every GEMM-path call);
    any other BLAS through threadpoolctl's controller."""
    return tuple(_openblas_switch(lib) or (lib.get_num_threads, lib.set_num_threads)
                 for lib in _blas_controller().lib_controllers if lib.user_api == "blas")


def _openblas_switch(lib):
    """(openblas_get_num_threads, openblas_set_num_threads) of an OpenBLAS library, with the
    symbol prefix and suffix its build uses (scipy's: scipy_ … 64_), or None."""
    if lib.internal_api != "openblas":
        return None
    dynlib = ctypes.CDLL(lib.filepath)
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        get = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
        set_ = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if get is not None and set_ is not None:
            get.restype = ctypes.c_int
            set_.argtypes = [ctypes.c_int]
            return get, set_
    return None


def _limit_blas(n):
    """Set every BLAS to `n` threads (skipping one already there); returns the counts they
    had, for _restore_blas."""
    counts = []
    for get, set_ in _blas_switches():
        counts.append(get())
        if counts[-1] != n:
            set_(n)
    return counts


def _restore_blas(counts):
    """Set every BLAS back to the counts _limit_blas returned (None: unknown, left as is)."""
    for (get, set_), count in zip(_blas_switches(), counts):
        if count is not None and get() != count:
            set_(count)


class blas_limit:
    """Context manager holding every BLAS at `n` threads while it is open (the limit applies
    when it is made, as threadpoolctl's does), restoring the user's setting after.

    Safe across Python threads: regions may overlap in any order; the most recently opened
    region still open decides the limit, and the user's setting returns when the last
    region closes (not when the first one does)."""

    def __init__(self, n):
        global _blas_original
        self.n = n
        with _blas_lock:
            if not _blas_regions:
                _blas_original = _limit_blas(n)
            elif _blas_regions[-1].n != n:
                _limit_blas(n)
            _blas_regions.append(self)
        self._open = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Close this region (idempotent)."""
        global _blas_original
        with _blas_lock:
            if not self._open:
                return
            self._open = False
            newest = _blas_regions[-1] is self
            _blas_regions.remove(self)
            if not _blas_regions:
                _restore_blas(_blas_original)
                _blas_original = None
            elif newest and _blas_regions[-1].n != self.n:
                _limit_blas(_blas_regions[-1].n)


def blas_info():
    """threadpoolctl's description of the BLAS libraries (for `python -m fastconv info`)."""
    return [info for info in _blas_controller().info() if info.get("user_api") == "blas"]
