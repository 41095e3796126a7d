"""A thin typed convolution layer that keeps its workspace between calls (docs/spec.md §2).

:class:`Conv2D` holds a weight, a bias and their gradients like ``torch.nn.Conv2d``, and
keeps its workspace (column tiles, weight-gradient accumulators, Winograd's transformed
weights) between calls, so a repeated call allocates only its result.
"""
from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

from fastconv import _engine, _memory, _padding_mode, _validate
from fastconv import geometry as geo
from fastconv.threads import get_num_threads

__all__ = ["Conv2D"]


class _LayerPlans(NamedTuple):
    """What a layer made once per (input shape, thread count)."""

    geometry: geo.ConvGeometry
    forward: _engine.ConvPlan
    backward: _engine.ConvPlan
    requested: str                           # the algorithm asked of the engine
    flipped: _engine.FlippedConv | None      # the input gradient as a convolution


class Conv2D:
    """2-D convolution layer on NumPy arrays, like ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (h, w)
    padding : int, (pad_h, pad_w), ((top, bottom), (left, right)), "valid" or "same"
        "same" as for :func:`fastconv.conv2d` (TensorFlow's SAME with a stride).
    groups : int
    bias : bool
    layout : {"NCHW", "NHWC"}
        NCHW keeps ``weight`` as OIHW (C_out, C_in/groups, kh, kw); NHWC as HWIO
        (kh, kw, C_in/groups, C_out).
    dtype : float32 or float64
    seed : int, optional
        Seed of the PyTorch-style initialisation: weight and bias uniform in
        ±1/√(C_in/groups·kh·kw).
    max_workspace_bytes : int, optional
        Cap on the column workspace; above it the work runs in tiles of output rows that
        fit, with the same result. A capped layer runs no Winograd.
    algorithm : {"auto", "gemm", "winograd"}
        As for :func:`fastconv.conv2d` (docs/spec.md §5). With Winograd the layer keeps
        the transformed weights between calls and makes them anew when ``weight`` changes
        (also in place, as an optimiser step ``layer.weight -= lr * layer.weight_grad``).
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads, as ``torch.nn.Conv2d``'s (docs/spec.md §6): zeros, the
        image mirrored without repeating its edge, the edge repeated, or the image wrapped
        around. "reflect" needs padding < the input's size, "circular" padding <= it
        (checked per input).

    Attributes
    ----------
    weight, bias : ndarray (bias None when ``bias=False``)
    padding : tuple or str
        ((top, bottom), (left, right)); "same" with a stride > 1, where the padding depends
        on the input's size and is resolved for each input as :func:`fastconv.conv2d` does.
    weight_grad, bias_grad : ndarray
        Gradients accumulated by :meth:`backward` (add, as PyTorch's ``.grad``);
        :meth:`zero_grad` clears them.
    workspace_bytes : int
        Bytes of workspace held between calls (with Winograd's transformed weights).
    algorithm : str
        The algorithm the last forward ran, "gemm" or "winograd" (before the first call:
        the one asked for, which may be "auto").

    Raises
    ------
    TypeError
        For a `dtype` other than float32 or float64.
    ValueError
        For a bad argument, naming it: channels not divisible by `groups`, a bad geometry
        or layout, ``algorithm="winograd"`` on a layer it cannot serve or together with
        `max_workspace_bytes`.

    Notes
    -----
    The workspace (column tiles and weight-gradient accumulators) is allocated on the first
    call and reused: a later call whose shape needs no more allocates only its result (and
    nothing with ``out=``). Calls from several Python threads are serialised by a lock;
    each call already uses all of fastconv's threads. A layer pickles (parameters,
    gradients and geometry; the workspace is rebuilt on first use).

    Examples
    --------
    >>> layer = fastconv.Conv2D(3, 16, 3, padding=1, seed=0)
    >>> y = layer(np.zeros((2, 3, 32, 32), np.float32))
    >>> y.shape
    (2, 16, 32, 32)
    >>> grad_x = layer.backward(np.ones_like(y))
    >>> grad_x.shape, layer.weight_grad.shape, layer.bias_grad.shape
    ((2, 3, 32, 32), (16, 3, 3, 3), (16,))
    >>> layer.zero_grad()
    >>> layer.workspace_bytes > 0
    True
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, *, layout="NCHW", dtype=np.float32,
                 seed=None, max_workspace_bytes=None, algorithm="auto", padding_mode="zeros"):
        fn = "Conv2D"
        self.layout = _validate.normalize_layout(layout, fn)
        self.requested_algorithm = _validate.normalize_algorithm(algorithm, fn)
        self.padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
        self.in_channels = _validate.as_int(in_channels, "in_channels", fn, 1)
        self.out_channels = _validate.as_int(out_channels, "out_channels", fn, 1)
        self.groups = _validate.as_int(groups, "groups", fn, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{fn}: groups={self.groups} must divide in_channels "
                             f"({self.in_channels}) and out_channels ({self.out_channels})")
        self.kernel_size = _validate.normalize_pair(kernel_size, "kernel_size", fn)
        self.stride = _validate.normalize_pair(stride, "stride", fn)
        self.dilation = _validate.normalize_pair(dilation, "dilation", fn)
        # Strided "same" depends on the input's size: kept as "same", resolved per shape.
        self.padding = _validate.resolve_conv_padding(padding, self.kernel_size, self.stride,
                                                      self.dilation, fn)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _validate.FLOAT_DTYPES:
            raise TypeError(f"{fn}: dtype must be float32 or float64, got {self.dtype}")
        if max_workspace_bytes is not None:
            max_workspace_bytes = _validate.as_int(max_workspace_bytes, "max_workspace_bytes",
                                                   fn, 1)
        self.max_workspace_bytes = max_workspace_bytes
        if self.requested_algorithm == _engine.WINOGRAD:
            blocker = geo.winograd_blocker(self)
            if blocker is not None:
                raise ValueError(f"{fn}: algorithm='winograd' {blocker}")
            if max_workspace_bytes is not None:
                raise ValueError(f"{fn}: algorithm='winograd' keeps transformed weights beside "
                                 f"the workspace; it takes no max_workspace_bytes (got "
                                 f"{max_workspace_bytes})")

        kh, kw = self.kernel_size
        cin_g = self.in_channels // self.groups
        shape = ((self.out_channels, cin_g, kh, kw) if self.layout == "NCHW"
                 else (kh, kw, cin_g, self.out_channels))
        bound = 1.0 / math.sqrt(cin_g * kh * kw)  # math: exact for ints beyond int64
        rng = np.random.default_rng(seed)
        self.weight = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self.bias = (rng.uniform(-bound, bound, size=self.out_channels).astype(self.dtype)
                     if bias else None)
        self.weight_grad = np.zeros_like(self.weight)
        self.bias_grad = None if self.bias is None else np.zeros_like(self.bias)

        self._reset_runtime_state()

    def _reset_runtime_state(self):
        """The lock, the workspace, the plans and the saved inputs: made afresh on creation
        and on unpickling (they are not part of a pickled layer)."""
        self._lock = threading.Lock()
        self._workspace = np.empty(0, dtype=self.dtype)
        self._partials = np.empty(0, dtype=self.dtype)
        self._plans = {}       # (input shape, threads) → _LayerPlans
        self._last_algorithm = None
        # Winograd: transformed weights by (pass, m), valid while `weight` equals the
        # snapshot taken when they were made
        self._transformed = {}
        self._weight_seen = None
        # The last forward's input, per Python thread: forward/backward pairs made in
        # different threads each get their own.
        self._saved = threading.local()

    def __getstate__(self):
        """Pickle the parameters, gradients and geometry, not the runtime state."""
        state = self.__dict__.copy()
        for name in ("_lock", "_workspace", "_partials", "_plans", "_saved", "_transformed",
                     "_weight_seen", "_last_algorithm"):
            del state[name]
        return state

    def __setstate__(self, state):
        state.setdefault("padding_mode", "zeros")  # pickled before padding modes
        self.__dict__.update(state)
        self._reset_runtime_state()

    # ------------------------------------------------------------------ internals
    @property
    def workspace_bytes(self):
        held = self._workspace.nbytes + self._partials.nbytes
        held += sum(array.nbytes for array in self._transformed.values())
        return held + (0 if self._weight_seen is None else self._weight_seen.nbytes)

    @property
    def algorithm(self):
        return self._last_algorithm or self.requested_algorithm

    def _plan_for(self, x4, x_shape):
        """Geometry and plans for this input shape and thread count, made once; grows the
        workspace when they need more than is held."""
        key = (x4.shape, get_num_threads())
        cached = self._plans.get(key)
        if cached is None:
            geom = geo.conv2d_geometry("Conv2D", x4, self.weight, self.stride, self.padding,
                                       self.dilation, self.groups, self.layout, x_shape,
                                       self.padding_mode)
            _validate.check_blas_range("Conv2D", geom)
            itemsize = self.dtype.itemsize
            cap = self.max_workspace_bytes
            # A capped layer keeps to GEMM: its transformed weights would sit beside the cap.
            requested = _engine.GEMM if cap is not None else self.requested_algorithm
            # The layer keeps its transformed weights: "auto" does not count making them.
            algorithm = _engine.choose_algorithm(geom, itemsize, requested, fn="Conv2D",
                                                 weight_cached=True)
            # The backward plan is sized first, with room for the weight-gradient
            # accumulators; the forward one within what the cap leaves beside them, so the
            # workspace held (the larger column space plus the accumulators) stays under it.
            backward = _engine.choose_plan(geom, itemsize, _engine.BACKWARD,
                                           max_workspace_bytes=cap, fn="Conv2D")
            forward_cap = None if cap is None else cap - backward.partials * itemsize
            forward = _engine.choose_plan(geom, itemsize, _engine.FORWARD,
                                          max_workspace_bytes=forward_cap, fn="Conv2D",
                                          algorithm=algorithm, weight_cached=True)
            # The input gradient as a convolution: within the cap only in the workspace
            # held (run_backward checks), else sized into it here.
            flipped = (None if geom.reads_padding  # run_backward folds the padded gradient
                       else _engine.input_grad_plan(geom, itemsize, requested,
                                                    weight_cached=True))
            cached = _LayerPlans(geom, forward, backward, requested, flipped)
            if len(self._plans) >= 8:  # a bounded cache of recent shapes
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = cached
        columns = max(cached.forward.workspace, cached.backward.workspace)
        if cached.flipped is not None and self.max_workspace_bytes is None:
            columns = max(columns, cached.flipped.plan.workspace)
        if self._workspace.size < columns:
            self._workspace = _memory.empty(columns, self.dtype)
        if self._partials.size < cached.backward.partials:
            self._partials = _memory.empty(cached.backward.partials, self.dtype)
        return cached

    def _transformed_weight(self, plan, input_grad_of=None):
        """The transformed weight of a WINOGRAD plan (with `input_grad_of`, the layer's
        geometry: of the flipped weight, for the input gradient), made once per value of
        `weight`: the bytes of `weight` are compared with a snapshot first, so an in-place
        update is never served stale."""
        weight = np.ascontiguousarray(self.weight)
        if self._weight_seen is None or self._weight_seen.shape != weight.shape:
            self._weight_seen = weight.copy()
            self._transformed.clear()
        elif not _engine.same_values(weight, self._weight_seen):
            np.copyto(self._weight_seen, weight)
            self._transformed.clear()
        key = ("forward" if input_grad_of is None else "input_grad", plan.winograd_m)
        transformed = self._transformed.get(key)
        if transformed is None or transformed.size != plan.transformed:
            source = (weight if input_grad_of is None
                      else _engine.flipped_weight(weight, input_grad_of))
            transformed = _engine.winograd_weight(source, plan)
            self._transformed[key] = transformed
        return transformed

    def _check_input(self, x, fn):
        x = _validate.as_array(x, "input", fn)
        _validate.check_float_dtype(x, "input", fn)
        _validate.check_same_dtype(fn, input=x, weight=self.weight)
        x4, batched = _validate.split_batch(x, "input", fn, self.layout)
        return x, x4, batched

    # ------------------------------------------------------------------ API
    def forward(self, x, out=None):
        """y = conv2d(x, weight, bias). Keeps `x` for :meth:`backward`; ``layer(x)`` is
        ``layer.forward(x)``.

        Parameters
        ----------
        x : ndarray
            (N, C, H, W) / (C, H, W) for NCHW, (N, H, W, C) / (H, W, C) for NHWC, in the
            layer's dtype.
        out : ndarray, optional
            C-contiguous buffer of the result's shape and dtype, not overlapping an input:
            the call then allocates nothing.

        Returns
        -------
        ndarray
            NCHW: (N, C_out, OH, OW); NHWC: (N, OH, OW, C_out); no N for a 3-D `x`.

        Raises
        ------
        TypeError
            For an input whose dtype is not the layer's.
        ValueError
            For a wrong shape or channel count, or an unusable `out`.

        Examples
        --------
        >>> layer = fastconv.Conv2D(3, 8, 3, stride=2, seed=0, layout="NHWC")
        >>> layer.forward(np.ones((9, 9, 3), np.float32)).shape
        (4, 4, 8)
        """
        fn = "Conv2D.forward"
        x, x4, batched = self._check_input(x, fn)
        with self._lock:
            plans = self._plan_for(x4, x.shape)
            geom, plan = plans.geometry, plans.forward
            shape = geom.output_shape if batched else geom.output_shape[1:]
            out = _validate.check_out(out, shape, self.dtype, [x, self.weight, self.bias], fn)
            out4 = _memory.result(out, geom.output_shape, self.dtype)
            x4 = np.ascontiguousarray(x4)
            transformed = (self._transformed_weight(plan)
                           if plan.strategy == _engine.WINOGRAD else None)
            bias = None if self.bias is None else np.ascontiguousarray(self.bias)
            _engine.run_forward(x4, np.ascontiguousarray(self.weight), bias, out4, plan,
                                self._workspace, transformed)
            self._last_algorithm = (_engine.WINOGRAD if plan.strategy == _engine.WINOGRAD
                                    else _engine.GEMM)
            self._saved.input = (x4, batched)
        if out is not None:
            return out
        return out4 if batched else out4[0]

    __call__ = forward

    def backward(self, grad_output):
        """Gradient w.r.t. the input of the last forward made in this Python thread; adds
        into ``weight_grad`` / ``bias_grad``.

        Parameters
        ----------
        grad_output : ndarray
            Gradient of the loss w.r.t. the last forward's result, of its shape and dtype.

        Returns
        -------
        ndarray
            The gradient w.r.t. that forward's input, of the input's shape.

        Raises
        ------
        RuntimeError
            When no forward was made in this Python thread.
        TypeError
            For a `grad_output` whose dtype is not the layer's.
        ValueError
            For a `grad_output` not of the forward result's shape.

        Examples
        --------
        >>> layer = fastconv.Conv2D(2, 4, 3, padding="same", seed=0)
        >>> y = layer(np.ones((1, 2, 5, 5), np.float32))
        >>> layer.backward(np.ones_like(y)).shape
        (1, 2, 5, 5)
        >>> float(layer.bias_grad[0])                  # 1·5·5 summed
        25.0
        """
        fn = "Conv2D.backward"
        with self._lock:
            saved = getattr(self._saved, "input", None)
            if saved is None:
                raise RuntimeError(f"{fn}: call forward before backward")
            x4, batched = saved
            plans = self._plan_for(x4, x4.shape)
            geom, plan, flipped = plans.geometry, plans.backward, plans.flipped
            grad_output = _validate.as_array(grad_output, "grad_output", fn)
            _validate.check_float_dtype(grad_output, "grad_output", fn)
            _validate.check_same_dtype(fn, grad_output=grad_output, weight=self.weight)
            expected = geom.output_shape if batched else geom.output_shape[1:]
            if grad_output.shape != expected:
                raise ValueError(f"{fn}: expected grad_output of shape {expected}, got "
                                 f"{grad_output.shape}")
            grad_out4 = np.ascontiguousarray(grad_output).reshape(geom.output_shape)
            grad_x4 = _memory.empty(x4.shape, self.dtype)
            transformed = None
            if flipped is not None and flipped.plan.strategy == _engine.WINOGRAD:
                transformed = self._transformed_weight(flipped.plan, geom)
            _engine.run_backward(grad_out4, x4, np.ascontiguousarray(self.weight), grad_x4,
                                 self.weight_grad, plan, self._workspace, self._partials,
                                 capped=self.max_workspace_bytes is not None,
                                 algorithm=plans.requested, transformed=transformed,
                                 flipped=flipped)
            if self.bias is not None:
                _engine.bias_grad(grad_out4, self.layout, out=self.bias_grad)
        return grad_x4 if batched else grad_x4[0]

    def zero_grad(self):
        """Set ``weight_grad`` and ``bias_grad`` to zero (as ``torch.nn.Module.zero_grad``).

        Returns
        -------
        None

        Raises
        ------
        None
            It never raises.

        Examples
        --------
        >>> layer = fastconv.Conv2D(1, 1, 1, seed=0)
        >>> _ = layer.backward(layer(np.ones((1, 1, 2, 2), np.float32)))
        >>> layer.zero_grad()
        >>> float(abs(layer.weight_grad).sum())
        0.0
        """
        self.weight_grad.fill(0)
        if self.bias_grad is not None:
            self.bias_grad.fill(0)

    def __repr__(self):
        return (f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, layout={self.layout!r}, "
                f"dtype={self.dtype.name}"
                + ("" if self.padding_mode == "zeros"
                   else f", padding_mode={self.padding_mode!r}") + ")")
