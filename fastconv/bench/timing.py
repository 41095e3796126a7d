"""The timing API of the benchmark: best-of timing sampled round-robin, waiting for other
threads to idle, and the thread limits a run holds.

Times are the best of a few repeats with ``time.perf_counter`` after a warm-up call. With
several functions the samples are taken round-robin, so a burst of load from another
process hits every implementation alike, and each sample follows one untimed call of its
own function (see :func:`best_times`).
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

import fastconv
from fastconv.threads import blas_limit

__all__ = ["Timing", "FAST", "FULL", "timed_call", "best_times", "best_time", "settle",
           "thread_limits", "load_average", "warn_if_busy"]


@dataclass(frozen=True)
class Timing:
    """How long to measure each implementation of each case.

    One warm-up call, then up to `repeats` samples, stopping early once `budget_s` seconds
    per implementation were spent (after at least `min_repeats` samples). Calls faster than
    `min_sample_s` are looped inside one sample so the clock resolution does not matter.
    The result is the best sample. An implementation whose first call took longer than
    `once_s` seconds (in practice the NumPy conv baselines on the big layers) is not
    sampled: that one call is its time (None: always sample).
    """

    repeats: int = 5
    min_repeats: int = 2
    budget_s: float = 0.25
    min_sample_s: float = 1e-3
    once_s: float | None = 1.0


FAST = Timing()
FULL = Timing(repeats=25, min_repeats=5, budget_s=1.0, min_sample_s=5e-3, once_s=10.0)


def timed_call(fn):
    """(result, seconds) of one call of `fn`."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _calls_per_sample(fn, timing, first=None):
    """Warm `fn` up with one call (unless `first`, the seconds of a call already made, is
    given) and return how many calls make one sample."""
    if first is None:
        first = timed_call(fn)[1]
    first = max(first, 1e-9)
    return min(1000, max(1, math.ceil(timing.min_sample_s / first)))


def _sample(fn, number):
    """Seconds taken by `number` back-to-back calls of `fn`."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - start


def best_times(fns, timing=FAST, first=None):
    """Seconds per call of each function in `fns`: the best sample after a warm-up call.

    The samples are taken round-robin (one of each function per repeat), so a burst of load
    from another process slows every implementation alike instead of one of them. With
    several functions, each sample follows one untimed call of its function: the previous
    function's OpenMP threads (torch and fastconv each have their own) spin for a while
    after its call, and would otherwise share the cores with the timed call (measured: the
    NHWC mobilenet stem at batch 8, 0.64 ms alone, 0.84 ms right after torch). The garbage
    collector is off while sampling. See :class:`Timing` for the repeat rules.
    `first`, when given, holds per function the seconds of a call already made (that call
    was its warm-up) or None (warm it up here).
    """
    first = list(first) if first is not None else [None] * len(fns)
    numbers = [_calls_per_sample(fn, timing, seconds) for fn, seconds in zip(fns, first)]
    best = [math.inf] * len(fns)
    spent = 0.0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for repeat in range(timing.repeats):
            for k, (fn, number) in enumerate(zip(fns, numbers)):
                if len(fns) > 1:
                    spent += timed_call(fn)[1]  # settles the cores (see above)
                elapsed = _sample(fn, number)
                best[k] = min(best[k], elapsed / number)
                spent += elapsed
            if repeat + 1 >= timing.min_repeats and spent >= timing.budget_s * len(fns):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


def best_time(fn, timing=FAST):
    """Seconds per call of `fn()`: the best sample after a warm-up call."""
    return best_times([fn], timing)[0]


# OpenBLAS worker threads spin for 2**28 cycles (~0.1 s) after each multithreaded call
# before they sleep; on a machine with few cores they steal a core from whatever is timed
# next (measured here: fastconv 2-3x and torch up to 30x slower on small layers).
_BLAS_SPIN_S = 0.11
_SETTLE_TIMEOUT_S = 0.5


def _other_threads_running(task_dir, me):
    """True when a thread of this process other than `me` is running (Linux /proc)."""
    for tid in os.listdir(task_dir):
        if int(tid) == me:
            continue
        try:
            with open(os.path.join(task_dir, tid, "stat"), "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread just ended
        if state == b"R":
            return True
    return False


def settle(blas=True):
    """Wait until this process's other threads (BLAS workers still spinning after the last
    call, OpenMP teams) are idle, so they do not compete with the next timing. Polls
    ``/proc/self/task`` for at most half a second; where there is no /proc, sleeps past
    OpenBLAS's spin when `blas` threads may be spinning."""
    task_dir = "/proc/self/task"
    if not os.path.isdir(task_dir):
        if blas:
            time.sleep(_BLAS_SPIN_S)
        return
    me = threading.get_native_id()
    deadline = time.perf_counter() + _SETTLE_TIMEOUT_S
    while _other_threads_running(task_dir, me) and time.perf_counter() < deadline:
        time.sleep(0.002)


@contextlib.contextmanager
def thread_limits(threads, torch=None):
    """fastconv, BLAS (the NumPy baselines' matmuls, the GEMM ceiling) and, when given, the
    `torch` module all at `threads` threads inside the block; the previous settings are
    restored afterwards."""
    previous_torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None:
            torch.set_num_threads(threads)
        with fastconv.threads(threads), blas_limit(threads):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(previous_torch_threads)


def load_average():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def warn_if_busy(stream=None):
    """Warn on stderr when the load average says other processes compete for the CPUs."""
    load = load_average()
    if load is None:
        return
    cpus = os.cpu_count() or 1
    if load > 0.75 * cpus:
        print(f"warning: load average {load:.2f} on {cpus} CPUs: other processes may "
              f"distort the timings", file=stream or sys.stderr)
