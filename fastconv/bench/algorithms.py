"""The ``algorithm=`` comparison: where Winograd can serve a layer, the convolution sections
and ``--compare`` also time fastconv with ``algorithm="gemm"`` and ``algorithm="winograd"``
forced, beside ``"auto"`` (their fastconv column: what users get) and torch.

A layer is *Winograd-eligible* when ``algorithm="winograd"`` can run it (3×3 kernel, stride
1, dilation 1, not depthwise): fastconv's own rule,
:func:`fastconv.geometry.winograd_blocker`, is asked rather than restated here. What
``"auto"`` picks is the engine's business; :func:`forward_algorithm` and
:func:`input_grad_algorithm` only report it.
"""
from __future__ import annotations

import numpy as np

from fastconv import _engine
from fastconv.geometry import winograd_blocker

__all__ = ["ALGORITHMS", "winograd_eligible", "eligible_algorithms", "forward_algorithm",
           "input_grad_algorithm"]

# The algorithms forced on a Winograd-eligible layer, in table order.
ALGORITHMS = ("gemm", "winograd")


def winograd_eligible(geom):
    """True when ``algorithm="winograd"`` can run `geom` (a :class:`fastconv.ConvGeometry`)."""
    return winograd_blocker(geom) is None


def eligible_algorithms(geom):
    """The algorithms to force on `geom`: :data:`ALGORITHMS` where it is Winograd-eligible,
    else none (only ``"auto"`` is timed there, as before)."""
    return ALGORITHMS if winograd_eligible(geom) else ()


def forward_algorithm(geom, dtype):
    """``"gemm"`` or ``"winograd"``: what ``conv2d(..., algorithm="auto")`` runs on `geom`."""
    return geom.algorithm(dtype)


def input_grad_algorithm(geom, dtype):
    """``"gemm"`` or ``"winograd"``: what ``conv2d_backward(..., algorithm="auto")`` runs the
    input gradient on (its weight gradient is always GEMM). None when the engine's private
    planner no longer answers this question (its signature changed): the table then shows
    "-" rather than failing the whole run."""
    try:
        flipped = _engine.input_grad_plan(geom, np.dtype(dtype).itemsize, "auto")
    except (AttributeError, TypeError):
        return None
    if flipped is not None and flipped.plan.strategy == _engine.WINOGRAD:
        return "winograd"
    return "gemm"
