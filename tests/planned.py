"""Run a convolution by a plan the test chose, instead of the one the chooser picks.

Tests reach a strategy by asking its planning function in fastconv._engine (with a
Tuning of their own where a default would not select it on small test inputs), then run
the plan through the same engine calls the public functions make. Nothing is patched.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fastconv import _engine, _tuning


def plan_with(geom, itemsize, pass_, planner=None, max_workspace_bytes=None,
              algorithm=_engine.GEMM, **tuning):
    """The plan of `planner` (e.g. _engine.plan_channel_blocks; default: the chooser's
    pick) for this pass, with the active tuning changed by `tuning`; an AssertionError
    when that strategy does not serve the geometry. `algorithm` is what the request
    carries as choose_algorithm's answer (_engine.GEMM or _engine.WINOGRAD):
    _engine.plan_winograd serves only WINOGRAD requests."""
    tuned = dataclasses.replace(_tuning.active(), **tuning)
    if planner is None:
        return _engine.choose_plan(geom, itemsize, pass_, tuning=tuned,
                                   max_workspace_bytes=max_workspace_bytes,
                                   algorithm=algorithm)
    request = _engine.plan_request(geom, itemsize, pass_, tuning=tuned,
                                   max_workspace_bytes=max_workspace_bytes,
                                   algorithm=algorithm)
    plan = planner(request)
    assert plan is not None, f"{planner.__name__} does not serve {geom}"
    return plan


def _batched(array, geom):
    return np.ascontiguousarray(array if geom.batched else array[np.newaxis])


def conv2d_by(plan, x, weight, bias=None):
    """conv2d(x, weight, bias) with the plan's geometry, run by `plan` (a WINOGRAD plan
    transforms the weight itself)."""
    geom = plan.geometry
    out = np.empty(geom.output_shape if geom.batched else (1,) + geom.output_shape, x.dtype)
    workspace = np.empty(plan.workspace, x.dtype)
    _engine.run_forward(_batched(x, geom), np.ascontiguousarray(weight), bias, out, plan,
                        workspace)
    return out if geom.batched else out[0]


def backward_by(plan, grad_output, x, weight, *, input_grad=True, weight_grad=True):
    """(grad_input, grad_weight) of conv2d_backward, run by `plan` (None where not
    asked)."""
    geom = plan.geometry
    x4 = _batched(x, geom)
    grad_x = np.empty(x4.shape, x.dtype) if input_grad else None
    grad_w = np.zeros(weight.shape, x.dtype) if weight_grad else None
    _engine.run_backward(_batched(grad_output, geom), x4, np.ascontiguousarray(weight),
                         grad_x, grad_w, plan, np.empty(plan.workspace, x.dtype),
                         np.empty(plan.partials, x.dtype))
    if grad_x is not None and not geom.batched:
        grad_x = grad_x[0]
    return grad_x, grad_w
