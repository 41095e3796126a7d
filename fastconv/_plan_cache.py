"""The geometry and plans of functional calls, kept by argument signature.

conv2d, conv2d_backward and conv_transpose2d validate their geometry and plan the work on
every call: about 20 µs of Python, as much as the kernels of a small layer take. Calls that
repeat a signature (every layer of a network, every step) find both here instead
(docs/performance.md#plan-cache). A signature is kept only when it is built of exact ints,
strings and tuples of them (``True`` or ``numpy.int64(1)`` for an int, or a list, are
validated on every call as before), together with the thread count and the tuning in force,
so an entry stands for exactly the calls that would plan the same. Entries are stored only
after every check of the call succeeded; the checks that read other arguments (bias, out,
grad_output) run on every call, in their usual order.
"""
from __future__ import annotations

from fastconv import _tuning
from fastconv.threads import get_num_threads

__all__ = ["signature", "get", "put", "clear"]

MAX_ENTRIES = 4096  # far more than the distinct layers of a network; beyond, start again

_entries = {}
_PLAIN = (int, str)


def _plain(value):
    """Whether `value` is an int or str (exactly those types) or a tuple of such values."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    return kind is tuple and all(_plain(item) for item in value)


def signature(shapes, *parts):
    """The cache key of a call whose planning depends only on `shapes` (a tuple of array
    shapes and dtype characters, plain by construction) and `parts` (geometry arguments,
    names), the thread count and the active tuning; None when a part is not plain (such
    calls are not cached)."""
    for part in parts:
        if type(part) not in _PLAIN and not _plain(part):
            return None
    return (shapes, parts, get_num_threads(), _tuning.generation())


def get(key):
    """The entry stored for `key`, or None (also for key None)."""
    return None if key is None else _entries.get(key)


def put(key, entry):
    """Store `entry` for `key` (nothing for key None)."""
    if key is None:
        return
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[key] = entry


def clear():
    """Forget every entry."""
    _entries.clear()
