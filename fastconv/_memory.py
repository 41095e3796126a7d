"""Every result and workspace buffer fastconv allocates comes from here, and the flat
views of them that the kernels take.

With ``FASTCONV_POISON=1`` in the environment (a test mode; CI runs the suite and the fuzz
run in it once) each such buffer, and each ``out=`` buffer a caller passes, is filled with
a value no kernel writes before the kernel runs: NaN for floating-point arrays, the byte
0xA5 for others. An element that a kernel forgets to write then shows up in the result
instead of whatever the allocator left there, which is often zero and so invisible to an
oracle, and always invisible to AddressSanitizer.
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np

# Read once at import; tests switch it with monkeypatch.setattr(_memory, "POISON", True).
POISON = os.environ.get("FASTCONV_POISON", "").strip().lower() in ("1", "true", "yes", "on")
POISON_BYTE = 0xA5
# Byte alignment of every buffer allocated here: one cache line, so that the kernels' rows
# of a multiple of 16 floats start on a line (NumPy's allocator gives 16;
# docs/performance.md#aligned-buffers).
ALIGNMENT = 64


def poison(array):
    """Fill a C-contiguous array with NaN (floats) or POISON_BYTE bytes (other dtypes)."""
    if array.dtype.kind in "fc":
        array.fill(np.nan)
    else:
        array.reshape(-1).view(np.uint8).fill(POISON_BYTE)
    return array


def aligned_empty(shape, dtype):
    """np.empty(shape, dtype) whose data starts at a multiple of ALIGNMENT bytes (a view of
    a slightly larger byte buffer)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(int(size) < 0 for size in shape):
        raise ValueError("negative dimensions are not allowed")
    nbytes = math.prod(int(size) for size in shape) * dtype.itemsize
    if nbytes > np.iinfo(np.intp).max - ALIGNMENT:  # as np.empty(shape, dtype) would
        raise ValueError("array is too big; `arr.size * arr.dtype.itemsize` is larger than "
                         "the maximum possible size.")
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def empty(shape, dtype):
    """np.empty(shape, dtype), ALIGNMENT-aligned, poisoned in the test mode."""
    array = aligned_empty(shape, dtype)
    if POISON:
        poison(array)
    return array


_scratch = threading.local()  # per Python thread: {(slot, dtype): its buffer}


def scratch(slot, size, dtype):
    """A flat buffer of `size` elements for one call's scratch work (workspaces, partial
    sums, transformed weights), reused by the next call in this Python thread that asks for
    the same `slot`: a fresh allocation of megabytes costs its page faults on every call
    (docs/performance.md#scratch-reuse). Each slot grows to the largest size asked for and is
    kept until the thread ends; results are never scratch. Poisoned in the test mode, on
    every call."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    key = (slot, np.dtype(dtype).char)
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = aligned_empty(size, dtype)
    view = buffer[:size]
    if POISON:
        poison(view)
    return view


def result(out, shape, dtype):
    """The buffer a result is written into: a validated `out` reshaped to `shape`, or a new
    one; poisoned in the test mode either way."""
    if out is None:
        return empty(shape, dtype)
    buffer = out if out.shape == tuple(shape) else out.reshape(shape)
    if POISON:
        poison(buffer)
    return buffer


_UNSIGNED_BY_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def kernel_view(array):
    """The flat C-contiguous buffer a kernel takes: floats as they are, integers and bools
    as the unsigned integer of the same width (copies keep every bit; sums wrap as NumPy's)."""
    flat = array.reshape(-1)
    if array.dtype.kind == "f":
        return flat
    return flat.view(_UNSIGNED_BY_SIZE[array.dtype.itemsize])
