"""Padding modes (docs/spec.md §6): which image pixel each padded coordinate reads.

PyTorch's ``padding_mode``: "zeros" (the default), "reflect" (mirror without repeating the
edge: ``[c b | a b c d | c b]``), "replicate" (repeat the edge: ``[a a | a b c d | d d]``)
and "circular" (wrap around: ``[c d | a b c d | a b]``). No padded copy of an image is ever
made: along each spatial axis the kernels read through a *source index* table, one entry
per padded coordinate ``p`` in ``[0, before + size + after)``, holding the image index that
coordinate reads, or -1 where it reads a zero. For "zeros" the table is the identity inside
the image and -1 in the padding, so one kernel serves every mode; the adjoints (col2im, the
input gradients) add what a padded coordinate received onto the pixel its entry names.

Names here are this package's internals, not public.
"""
from __future__ import annotations

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def normalize_padding_mode(padding_mode, fn, *, transposed=False):
    """'zeros' / 'Reflect' / ... → lower case; anything else a ValueError listing the modes.
    A transposed convolution takes "zeros" only, as PyTorch's ConvTranspose."""
    if type(padding_mode) is str and padding_mode in PADDING_MODES:  # the common case first
        mode = padding_mode
    elif isinstance(padding_mode, str) and padding_mode.lower() in PADDING_MODES:
        mode = padding_mode.lower()
    else:
        raise ValueError(f"{fn}: padding_mode must be one of "
                         f"{', '.join(map(repr, PADDING_MODES))} (case-insensitive), "
                         f"got {padding_mode!r}")
    if transposed and mode != "zeros":
        raise ValueError(f"{fn}: padding_mode must be 'zeros' for a transposed convolution "
                         f"(as PyTorch's ConvTranspose), got {padding_mode!r}")
    return mode


def effective_mode(mode, pads):
    """The mode the kernels need: with no padding on any axis every mode reads the same
    pixels as "zeros", so the fast zero-padding paths serve it. `pads` is one
    (before, after) pair per spatial axis."""
    if mode == "zeros" or not any(before or after for before, after in pads):
        return "zeros"
    return mode


def check_fits(mode, pads, sizes, fn, axis_names):
    """ValueError unless every axis's padding can be read from the image: "reflect" needs
    padding < the axis size, "circular" padding <= the axis size, as PyTorch. "zeros" and
    "replicate" fit any size ("replicate" of an empty axis has no edge to repeat: that is
    refused too)."""
    if mode == "zeros":
        return
    for (before, after), size, axis in zip(pads, sizes, axis_names):
        pad = max(before, after)
        if pad == 0:
            continue
        if mode == "reflect" and pad >= size:
            raise ValueError(f"{fn}: padding_mode='reflect' needs padding < the input's "
                             f"{axis} ({size}), got padding {pad} on that axis")
        if mode == "circular" and pad > size:
            raise ValueError(f"{fn}: padding_mode='circular' needs padding <= the input's "
                             f"{axis} ({size}), got padding {pad} on that axis")
        if mode == "replicate" and size == 0:
            raise ValueError(f"{fn}: padding_mode='replicate' needs a non-empty {axis} to "
                             f"repeat, got {axis} 0 with padding {pad}")


def source_index(size, before, after, mode):
    """The table of one axis: for each padded coordinate p in [0, before + size + after),
    the image index it reads (p − before inside the image), or -1 for a zero.
    Assumes check_fits passed. Returns a C-contiguous numpy.intp array.

    >>> source_index(4, 2, 2, "reflect").tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    >>> source_index(4, 2, 2, "replicate").tolist()
    [0, 0, 0, 1, 2, 3, 3, 3]
    >>> source_index(4, 2, 2, "circular").tolist()
    [2, 3, 0, 1, 2, 3, 0, 1]
    >>> source_index(4, 1, 1, "zeros").tolist()
    [-1, 0, 1, 2, 3, -1]
    """
    coords = np.arange(-before, size + after, dtype=np.intp)
    if mode == "zeros" or size == 0:  # an empty axis has only zeros to read
        return np.where((coords >= 0) & (coords < size), coords, -1)
    if mode == "replicate":
        return np.clip(coords, 0, size - 1)
    if mode == "circular":
        return coords % size
    if size == 1:  # reflect with padding 0 only (check_fits); nothing to mirror
        return np.zeros_like(coords)
    period = 2 * (size - 1)  # reflect: a triangle wave 0, 1, .., size-1, size-2, .., 1
    folded = coords % period
    return np.where(folded < size, folded, period - folded)
