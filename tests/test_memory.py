"""The allocation helper and its poisoned test mode (issue 19).

``FASTCONV_POISON=1`` fills every buffer fastconv allocates (and every ``out=``) before the
kernels run, so an element they leave unwritten shows up as NaN / 0xA5 bytes. CI runs the
whole suite and the fuzz run in that mode once; these tests check the mode itself, and
that no module allocates a result around it.
"""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import fastconv
from fastconv import _memory


@pytest.fixture
def poisoned(monkeypatch):
    monkeypatch.setattr(_memory, "POISON", True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisoned_float_buffers_are_nan(poisoned, dtype):
    array = _memory.empty((3, 4), dtype)
    assert array.shape == (3, 4) and array.dtype == dtype
    assert np.isnan(array).all()


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.bool_])
def test_poisoned_other_buffers_hold_the_poison_byte(poisoned, dtype):
    array = _memory.empty((2, 5), dtype)
    assert (array.view(np.uint8) == _memory.POISON_BYTE).all()


def test_poisoned_out_is_filled_and_returned_as_is(poisoned):
    out = np.zeros((2, 3))
    assert _memory.result(out, (2, 3), out.dtype) is out
    assert np.isnan(out).all()
    flat = np.zeros(6)
    view = _memory.result(flat, (2, 3), flat.dtype)
    assert view.base is flat and np.isnan(flat).all()


def test_plain_mode_leaves_out_alone(monkeypatch):
    monkeypatch.setattr(_memory, "POISON", False)
    out = np.arange(6.0)
    assert _memory.result(out, (6,), out.dtype) is out
    np.testing.assert_array_equal(out, np.arange(6.0))


def test_poisoned_results_are_still_fully_written(poisoned, rng):
    """Every public operator through the poisoned buffers: nothing NaN comes back."""
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=1)
    grads = fastconv.conv2d_backward(y, x, w, padding=1)
    results = [y, *grads, fastconv.im2col(x, 3),
               fastconv.col2im(fastconv.im2col(x, 2), (6, 5), 2),
               fastconv.conv_transpose2d(y, w, stride=2,
                                         output_padding=1),
               fastconv.space_to_batch(x, 2, padding=((0, 0), (1, 0))),
               fastconv.rmac(x), fastconv.rmac_regions(x.shape)]
    for result in results:
        assert not np.isnan(result).any()


# Modules whose np.empty calls are not results: the oracles, the benchmark and probes
# (a module's file, or a package's folder).
NOT_RESULTS = {"reference.py", "bench"}


def test_no_module_allocates_around_the_helper():
    """A result allocated with np.empty directly would escape the poisoned run."""
    package = pathlib.Path(fastconv.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] in NOT_RESULTS or path.name == "_memory.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"np\.empty(_like)?\((?!\(0,\)|0,|probe_shape)", line):
                offenders.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert not offenders, "allocate results with fastconv._memory:\n" + "\n".join(offenders)


def test_scratch_is_reused_per_slot_and_thread():
    """A call's scratch (workspaces, partial sums) is the same memory on the next call in
    this thread: no fresh pages to fault in. Slots never share memory; other threads have
    their own."""
    import threading

    first = _memory.scratch("test-a", 1000, np.float32)
    again = _memory.scratch("test-a", 600, np.float32)
    assert first.shape == (1000,) and again.shape == (600,)
    assert np.shares_memory(first, again)
    other = _memory.scratch("test-b", 1000, np.float32)
    wide = _memory.scratch("test-a", 1000, np.float64)
    assert not np.shares_memory(first, other) and not np.shares_memory(first, wide)
    grown = _memory.scratch("test-a", 5000, np.float32)
    assert grown.shape == (5000,) and _memory.scratch("test-a", 10, np.float32).base is (
        grown.base)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(
        _memory.scratch("test-a", 1000, np.float32)))
    worker.start()
    worker.join()
    assert not np.shares_memory(seen[0], grown)


def test_poisoned_scratch_is_filled_on_every_call(poisoned):
    buffer = _memory.scratch("test-poison", 16, np.float64)
    buffer[:] = 1.0
    assert np.isnan(_memory.scratch("test-poison", 16, np.float64)).all()


def test_results_are_never_scratch(rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=1)
    grads = fastconv.conv2d_backward(y, x, w, padding=1)
    z = fastconv.conv_transpose2d(y, w, padding=1)
    buffers = list(_memory._scratch.buffers.values())
    assert buffers
    for result in (y, z, *grads):
        assert not any(np.shares_memory(result, buffer) for buffer in buffers)


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5, 2), (2, 0, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
def test_buffers_start_on_a_cache_line(shape, dtype):
    """Results and scratch buffers start at a multiple of _memory.ALIGNMENT bytes (a cache
    line), with the shape and dtype asked for, C-contiguous and writeable (an empty array
    has no data to align)."""
    array = _memory.empty(shape, dtype)
    assert array.size == 0 or array.ctypes.data % _memory.ALIGNMENT == 0
    assert array.shape == shape and array.dtype == dtype
    assert array.flags.c_contiguous and array.flags.writeable
    flat = _memory.scratch("alignment-test", 13, dtype)
    assert flat.ctypes.data % _memory.ALIGNMENT == 0 and flat.shape == (13,)


def test_results_are_aligned(rng):
    x = rng.standard_normal((2, 9, 9, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 16)).astype(np.float32)
    for _ in range(4):
        y = fastconv.conv2d(x, w, layout="NHWC")
        assert y.ctypes.data % _memory.ALIGNMENT == 0


@pytest.mark.parametrize("shape", [(2**62, 8), (-1, 3)])
def test_impossible_buffers_raise_value_error(shape):
    with pytest.raises(ValueError):
        _memory.empty(shape, np.float32)
