"""1-D convolution (docs/spec.md §6): conv1d, conv1d_backward, conv_transpose1d, Conv1D.

A 1-D convolution is a 2-D one of height 1. Each function here checks its arguments in
1-D words, then runs the 2-D code on views of the same memory: an "NCL" signal (N, C, L)
is the NCHW image (N, C, 1, L) with the OIL weight (C_out, C_in/groups, k) as OIHW
(C_out, C_in/groups, 1, k); an "NLC" signal (N, L, C) is the NHWC image (N, 1, L, C) with
the LIO weight (k, C_in/groups, C_out) as HWIO (1, k, C_in/groups, C_out). No data is
copied on the way in or out (a non-contiguous input is made contiguous once, as in 2-D).
"""
from __future__ import annotations

import threading

import numpy as np

from fastconv import _memory, _one_d, _padding_mode, _tuning, _validate, cpu
from fastconv import geometry as geo
from fastconv.conv import Gradients, conv2d, conv2d_backward, conv_transpose2d
from fastconv.layers import Conv2D

# The blocked layout change (16×16 register transposes, OpenMP) the 3-D code uses.
_vol2col = cpu.load_kernel("_vol2col")

__all__ = ["conv1d", "conv1d_backward", "conv_transpose1d", "Conv1D"]

# A one-channel NCL signal (N, 1, L) is also the NLC signal (N, L, 1): same memory. With a
# long strided kernel (an audio front end: 25 ms windows every 10 ms) the channels-last
# kernels, which read each window in place as one contiguous run, beat the channels-first
# ones even after transposing the result back to NCL. Measured, forward, float32, one
# thread, N=8, 64 filters: k=400 s=160 L=160000 6.4 → 4.7 ms (torch 4.2-6.3), k=80 s=4
# 3.0 → 2.5 ms; k=64 s=16 even, k=64 s=1 14.5 → 25.5 ms and k ≤ 32 slower: hence both
# conditions.
CHANNELS_LAST_MIN_KERNEL = 128
CHANNELS_LAST_MIN_STRIDE = 2


def _nlc_to_ncl(y_nlc, y):
    """y (N, C, L) = y_nlc (N, L, C), both C-contiguous, by the blocked transpose kernel
    (numpy.copyto of the transposed view ran on one thread, element by element)."""
    n, length, channels = y_nlc.shape
    if y.size:
        _vol2col.change_layout(y_nlc.reshape(-1), y.reshape(-1), n, channels, length, False,
                               _tuning.threads_for_elements(y.size))


def _one_channel_as_nlc(geom, layout):
    """Whether conv1d runs an NCL call on the NLC view of its one input channel."""
    return (layout == "NCL" and geom.in_channels == 1 and geom.groups == 1
            and geom.kernel >= CHANNELS_LAST_MIN_KERNEL
            and geom.stride >= CHANNELS_LAST_MIN_STRIDE)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCL",
           out=None, padding_mode="zeros"):
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : ndarray
        NCL: (N, C_in, L) or (C_in, L). NLC: (N, L, C_in) or (L, C_in). float32 or float64.
    weight : ndarray
        NCL: OIL (C_out, C_in/groups, k). NLC: LIO (k, C_in/groups, C_out). Same dtype as
        `x`.
    bias : ndarray (C_out,), optional
    stride, dilation : int or (s,)
    padding : int, (before, after), "valid" or "same"
        "same" is TensorFlow's SAME: ``ceil(L/stride)`` outputs, the odd pixel of padding
        at the end (PyTorch's "same" at stride 1).
    groups : int
        Divides C_in and C_out; groups == C_in is a depthwise convolution.
    layout : {"NCL", "NLC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads, as ``torch.nn.Conv1d``'s (docs/spec.md §6); "reflect"
        needs padding < L, "circular" padding <= L.

    Returns
    -------
    ndarray
        NCL: (N, C_out, L_out); NLC: (N, L_out, C_out); no N for a 2-D `x`, where
        ``L_out = (L + before + after - dilation*(k-1) - 1)//stride + 1``.

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or `x`, `weight` and `bias` of different
        dtypes (no casting).
    ValueError
        Before any work, naming the argument: mismatched channels or groups, a bad
        geometry, layout or `out`, or a GEMM dimension beyond BLAS's int.

    See Also
    --------
    conv1d_backward, conv_transpose1d, Conv1D, conv2d
    fastconv.reference.conv1d_naive : the NumPy oracle (NLC / LIO).

    Notes
    -----
    Runs :func:`conv2d` on the height-1 views of `x`, `weight` and the result. A
    one-channel NCL signal with a long strided kernel (k ≥ 128, stride ≥ 2: an audio
    front end) runs as the NLC signal it also is, and the result is transposed back.

    Examples
    --------
    >>> x = np.ones((2, 3, 10), np.float32); w = np.ones((8, 3, 5), np.float32)
    >>> fastconv.conv1d(x, w, padding=2).shape
    (2, 8, 10)
    >>> fastconv.conv1d(x, w, padding=2)[0, 0, :4]       # 3 channels × 3, 4, 5 taps
    array([ 9., 12., 15., 15.], dtype=float32)
    >>> fastconv.conv1d(x, w, stride=4, padding="same").shape   # ceil(10 / 4)
    (2, 8, 3)
    >>> xl = np.ones((16000, 1), np.float32)          # NLC, one signal
    >>> fastconv.conv1d(xl, np.ones((400, 1, 64), np.float32), stride=160,
    ...                 layout="NLC").shape
    (98, 64)
    """
    fn = "conv1d"
    layout = _one_d.normalize_layout(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    x, weight, bias = _one_d.check_conv_arrays(fn, x, weight, bias)
    x3, batched = _one_d.split_batch(x, "input", fn, layout)
    geom = _one_d.conv_geometry(fn, x3, weight, stride, padding, dilation, groups, layout,
                                x.shape)
    geo.check_mode(padding_mode, (geom.padding,), (geom.length,), fn, ("length",))
    _validate.check_bias(fn, bias, geom.out_channels)
    _one_d.check_blas_range(fn, geom)
    shape = geom.output_shape
    out = _validate.check_out(out, shape if batched else shape[1:], x.dtype,
                              [x, weight, bias], fn)
    stride2, padding2, dilation2 = geom.args_2d()
    if _one_channel_as_nlc(geom, layout):
        # (N, 1, L) read as (N, L, 1), the OIL weight as LIO; the result, NLC in scratch,
        # transposed into the NCL one.
        n, cout, out_length = shape
        y_nlc = _memory.scratch("conv1d_nlc", n * out_length * cout, x.dtype).reshape(
            n, out_length, cout)
        conv2d(_one_d.as_2d(x3.reshape(n, geom.length, 1), "NLC"),
               _one_d.weight_view(weight.transpose(2, 1, 0), "NLC"), bias, stride2, padding2,
               dilation2, 1, layout="NHWC", out=_one_d.as_2d(y_nlc, "NLC"),
               padding_mode=padding_mode)
        y = _memory.result(None if out is None else out.reshape(shape), shape, x.dtype)
        _nlc_to_ncl(y_nlc, y)
    else:
        out4 = None if out is None else _one_d.as_2d(out.reshape(shape), layout)
        y4 = conv2d(_one_d.as_2d(x3, layout), _one_d.weight_view(weight, layout), bias,
                    stride2, padding2, dilation2, geom.groups,
                    layout=_one_d.LAYOUT_2D[layout], out=out4, padding_mode=padding_mode)
        y = y4.reshape(shape)
    if out is not None:
        return out
    return y if batched else y[0]


def conv1d_backward(grad_output, x, weight, *, stride=1, padding=0, dilation=1, groups=1,
                    layout="NCL", needs_input_grad=True, needs_weight_grad=True,
                    needs_bias_grad=True, padding_mode="zeros"):
    """Gradients of :func:`conv1d` (as PyTorch autograd computes them).

    Parameters
    ----------
    grad_output : ndarray
        Gradient of the loss w.r.t. conv1d's output, shape ``conv1d(x, weight, ...).shape``.
    x, weight, stride, padding, dilation, groups, layout
        The forward call's arguments.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        The forward call's; the input gradient adds what each padded sample received onto
        the sample it copies.
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Which gradients to compute; the others are returned as None.

    Returns
    -------
    Gradients(grad_input, grad_weight, grad_bias)
        grad_input shaped like `x`, grad_weight like `weight`, grad_bias (C_out,).

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or mixed dtypes.
    ValueError
        For `grad_output` not of conv1d's result shape, or any argument conv1d would
        refuse.

    See Also
    --------
    conv1d, conv2d_backward
    fastconv.reference.conv1d_backward : the NumPy oracle.

    Examples
    --------
    >>> x = np.ones((2, 3, 10), np.float32); w = np.ones((4, 3, 3), np.float32)
    >>> y = fastconv.conv1d(x, w, padding="same")
    >>> g = fastconv.conv1d_backward(np.ones_like(y), x, w, padding="same")
    >>> g.grad_input.shape, g.grad_weight.shape, g.grad_bias.shape
    ((2, 3, 10), (4, 3, 3), (4,))
    >>> g.grad_input[0, 0, :3]                  # 4 output channels × 2, 3, 3 taps
    array([ 8., 12., 12.], dtype=float32)
    """
    fn = "conv1d_backward"
    layout = _one_d.normalize_layout(layout, fn)
    padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
    x, weight, _ = _one_d.check_conv_arrays(fn, x, weight, None)
    grad_output = _validate.as_array(grad_output, "grad_output", fn)
    _validate.check_float_dtype(grad_output, "grad_output", fn)
    _validate.check_same_dtype(fn, input=x, grad_output=grad_output)
    x3, batched = _one_d.split_batch(x, "input", fn, layout)
    geom = _one_d.conv_geometry(fn, x3, weight, stride, padding, dilation, groups, layout,
                                x.shape)
    geo.check_mode(padding_mode, (geom.padding,), (geom.length,), fn, ("length",))
    _one_d.check_blas_range(fn, geom)
    expected = geom.output_shape if batched else geom.output_shape[1:]
    if grad_output.shape != expected:
        raise ValueError(f"{fn}: expected grad_output of shape {expected} (the conv1d output "
                         f"for input {x.shape} and weight {weight.shape}), got "
                         f"{grad_output.shape}")
    grad3 = grad_output if batched else grad_output[np.newaxis]
    stride2, padding2, dilation2 = geom.args_2d()
    grads = conv2d_backward(
        _one_d.as_2d(grad3, layout), _one_d.as_2d(x3, layout),
        _one_d.weight_view(weight, layout), stride=stride2, padding=padding2,
        dilation=dilation2, groups=geom.groups, layout=_one_d.LAYOUT_2D[layout],
        needs_input_grad=needs_input_grad, needs_weight_grad=needs_weight_grad,
        needs_bias_grad=needs_bias_grad, padding_mode=padding_mode)
    grad_x = None
    if grads.grad_input is not None:
        grad_x = grads.grad_input.reshape(x3.shape)
        grad_x = grad_x if batched else grad_x[0]
    grad_w = None if grads.grad_weight is None else grads.grad_weight.reshape(weight.shape)
    return Gradients(grad_x, grad_w, grads.grad_bias)


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCL", out=None, padding_mode="zeros"):
    """Transposed 1-D convolution, as ``torch.nn.functional.conv_transpose1d``: the gradient
    of conv1d with respect to its input.

    Parameters
    ----------
    x : ndarray, NCL (N, C_in, L) or NLC (N, L, C_in); 2-D for one signal
    weight : ndarray
        NCL: (C_in, C_out/groups, k); NLC: (k, C_out/groups, C_in).
    bias : ndarray (C_out,), optional
    stride, dilation : int or (s,)
    padding : int or (before, after)
        Removed from the full output, as PyTorch's ``padding``.
    output_padding : int or (p,)
        Extra samples at the end; < max(stride, dilation).
    groups : int
    layout : {"NCL", "NLC"}
    out : ndarray, optional
        C-contiguous buffer of the result's shape and dtype, not overlapping an input.
    padding_mode : {"zeros"}
        Only "zeros", as PyTorch's ``ConvTranspose1d``; anything else is a ValueError.

    Returns
    -------
    ndarray
        NCL (N, C_out, L_out) or NLC (N, L_out, C_out), where
        ``L_out = (L - 1)*stride - before - after + dilation*(k - 1) + output_padding + 1``.

    Raises
    ------
    TypeError
        For a dtype other than float32 / float64, or mixed dtypes.
    ValueError
        For mismatched channels or groups, ``output_padding >= max(stride, dilation)``,
        a padding that removes the whole output, a bad layout or `out`, naming it.

    See Also
    --------
    conv1d, conv_transpose2d
    fastconv.reference.conv_transpose1d : the NumPy oracle.

    Examples
    --------
    >>> y = np.ones((2, 8, 7), np.float32)
    >>> w = np.ones((8, 4, 4), np.float32)          # (C_in, C_out/groups, k)
    >>> fastconv.conv_transpose1d(y, w, stride=2, padding=1).shape
    (2, 4, 14)
    """
    fn = "conv_transpose1d"
    _padding_mode.normalize_padding_mode(padding_mode, fn, transposed=True)
    layout = _one_d.normalize_layout(layout, fn)
    x, weight, bias = _one_d.check_conv_arrays(fn, x, weight, bias)
    x3, batched = _one_d.split_batch(x, "input", fn, layout)
    groups = _validate.as_int(groups, "groups", fn, 1)
    n, channels, length = _one_d.dims(x3.shape, layout)
    if layout == "NCL":
        cin, cout_g, kernel = weight.shape
    else:
        kernel, cout_g, cin = weight.shape
    if channels != cin:
        raise ValueError(f"{fn}: expected input with {cin} channels (weight {weight.shape}), "
                         f"got {channels} channels in input of shape {x.shape}")
    if cin % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the {cin} input channels")
    if min(kernel, cout_g, cin) < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    cout = cout_g * groups
    stride = _one_d.normalize_single(stride, "stride", fn)
    dilation = _one_d.normalize_single(dilation, "dilation", fn)
    pads = _one_d.normalize_padding(padding, fn)
    out_pad = _one_d.normalize_single(output_padding, "output_padding", fn, minimum=0)
    if out_pad >= max(stride, dilation):
        raise ValueError(f"{fn}: output_padding={out_pad} must be smaller than stride "
                         f"{stride} or dilation {dilation}")
    full = (length - 1) * stride + dilation * (kernel - 1) + out_pad + 1
    out_length = full - pads[0] - pads[1]
    if out_length < 1:
        raise ValueError(f"{fn}: padding={pads} removes the whole output length ({full} "
                         f"before padding)")
    # The convolution whose input gradient this is must fit its window, as in conv1d (an
    # empty x can make its input shorter than the kernel).
    _one_d.output_length(fn, out_length, kernel, stride, pads, dilation, "output")
    _validate.check_bias(fn, bias, cout)
    _one_d.check_blas_range(fn, _one_d.Geometry(n, cout, out_length, cin, groups, kernel,
                                                stride, pads, dilation, length, layout))
    shape = _one_d.image_shape(n, cout, out_length, layout)
    out = _validate.check_out(out, shape if batched else shape[1:], x.dtype,
                              [x, weight, bias], fn)
    out4 = None if out is None else _one_d.as_2d(out.reshape(shape), layout)
    y4 = conv_transpose2d(_one_d.as_2d(x3, layout), _one_d.weight_view(weight, layout), bias,
                          (1, stride), ((0, 0), pads), (0, out_pad), groups, (1, dilation),
                          layout=_one_d.LAYOUT_2D[layout], out=out4)
    if out is not None:
        return out
    y = y4.reshape(shape)
    return y if batched else y[0]


class Conv1D:
    """1-D convolution layer on NumPy arrays, like ``torch.nn.Conv1d``.

    A :class:`Conv2D` of height 1 inside, on views: the same workspace contract (kept
    between calls; a repeated call with the same input shape allocates only its result,
    nothing with ``out=``), the same workspace cap, lock and gradient accumulation.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (k,)
    padding : int, (before, after), "valid" or "same"
        "same" as for :func:`fastconv.conv1d` (TensorFlow's SAME with a stride).
    groups : int
    bias : bool
    layout : {"NCL", "NLC"}
        NCL keeps ``weight`` as OIL (C_out, C_in/groups, k); NLC as LIO
        (k, C_in/groups, C_out).
    dtype : float32 or float64
    seed : int, optional
        Seed of the PyTorch-style initialisation: weight and bias uniform in
        ±1/√(C_in/groups·k).
    max_workspace_bytes : int, optional
        Cap on the column workspace; above it fewer threads run, with the same result. A
        signal is one row of the 2-D code's tiling, so the cap cannot go below one
        signal's columns (C_in·k·L_out values) and, for backward, one weight-gradient
        accumulator: below that a call is a ValueError.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        What the padding reads, as ``torch.nn.Conv1d``'s (docs/spec.md §6); "reflect" needs
        padding < the signal's length, "circular" padding <= it (checked per input).

    Attributes
    ----------
    weight, bias : ndarray (bias None when ``bias=False``)
    weight_grad, bias_grad : ndarray
        Gradients accumulated by :meth:`backward`; :meth:`zero_grad` clears them.
    kernel_size, stride, dilation : (int,)
    padding : (before, after) or "same"
        "same" with a stride > 1 (resolved for each input length).
    workspace_bytes : int
        Bytes of workspace held between calls.

    Raises
    ------
    TypeError
        For a `dtype` other than float32 or float64.
    ValueError
        For a bad argument, naming it: channels not divisible by `groups`, a bad geometry
        or layout.

    Examples
    --------
    >>> layer = fastconv.Conv1D(1, 64, 400, stride=160, seed=0)
    >>> y = layer(np.zeros((2, 1, 16000), np.float32))
    >>> y.shape
    (2, 64, 98)
    >>> grad_x = layer.backward(np.ones_like(y))
    >>> grad_x.shape, layer.weight_grad.shape, layer.bias_grad.shape
    ((2, 1, 16000), (64, 1, 400), (64,))
    >>> layer.zero_grad()
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, *, layout="NCL", dtype=np.float32,
                 seed=None, max_workspace_bytes=None, padding_mode="zeros"):
        fn = "Conv1D"
        self.layout = _one_d.normalize_layout(layout, fn)
        padding_mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
        self.in_channels = _validate.as_int(in_channels, "in_channels", fn, 1)
        self.out_channels = _validate.as_int(out_channels, "out_channels", fn, 1)
        self.groups = _validate.as_int(groups, "groups", fn, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{fn}: groups={self.groups} must divide in_channels "
                             f"({self.in_channels}) and out_channels ({self.out_channels})")
        kernel = _one_d.normalize_single(kernel_size, "kernel_size", fn)
        stride = _one_d.normalize_single(stride, "stride", fn)
        dilation = _one_d.normalize_single(dilation, "dilation", fn)
        for name, value in (("kernel_size", kernel), ("stride", stride),
                            ("dilation", dilation)):
            if value > _validate.MAX_WINDOW_VALUE:
                raise ValueError(f"{fn}: {name}={value} exceeds the largest supported value "
                                 f"2**62 = {_validate.MAX_WINDOW_VALUE}")
        self.kernel_size, self.stride, self.dilation = (kernel,), (stride,), (dilation,)
        # Strided "same" depends on the input's length: kept as "same", resolved per input.
        self.padding = _one_d.resolve_padding(padding, kernel, stride, dilation, fn)
        dtype = np.dtype(dtype)
        if dtype not in _validate.FLOAT_DTYPES:
            raise TypeError(f"{fn}: dtype must be float32 or float64, got {dtype}")
        if max_workspace_bytes is not None:
            max_workspace_bytes = _validate.as_int(max_workspace_bytes, "max_workspace_bytes",
                                                   fn, 1)
        padding2 = "same" if self.padding == "same" else ((0, 0), self.padding)
        # One input channel and a long strided kernel: an NCL layer runs on the NLC view of
        # its input, as conv1d does (CHANNELS_LAST_MIN_KERNEL), with an NHWC layer inside.
        self._channels_last = (self.layout == "NCL" and self.in_channels == 1
                               and self.groups == 1 and kernel >= CHANNELS_LAST_MIN_KERNEL
                               and stride >= CHANNELS_LAST_MIN_STRIDE)
        # Conv2D draws its weight in memory order: (C_out, C_in/g, 1, k) and (1, k, C_in/g,
        # C_out) hold the numbers an OIL / LIO weight of the same seed would.
        self._conv = Conv2D(self.in_channels, self.out_channels, (1, kernel), (1, stride),
                            padding2, (1, dilation), self.groups, bias,
                            layout="NHWC" if self._channels_last
                            else _one_d.LAYOUT_2D[self.layout], dtype=dtype, seed=seed,
                            max_workspace_bytes=max_workspace_bytes, algorithm="gemm",
                            padding_mode=padding_mode)
        if self._channels_last:  # the numbers an NCL layer of this seed draws, in OIL order
            rng = np.random.default_rng(seed)
            bound = 1.0 / np.sqrt(kernel)
            self.weight[...] = rng.uniform(-bound, bound, size=self.weight.shape).astype(dtype)
        self._saved = threading.local()

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_saved"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._saved = threading.local()

    # ------------------------------------------------------------------ parameters
    def _as_1d(self, array4):
        """The 3-D view of the inner layer's 4-D weight-shaped array (OIL of the HWIO one
        when the layer runs channels-last)."""
        if self._channels_last:
            return array4[0].transpose(2, 1, 0)
        return array4[:, :, 0, :] if self.layout == "NCL" else array4[0]

    def _set_4d(self, name, value):
        """Assign a weight-shaped 3-D array to the inner layer, as a view of it."""
        value = np.asarray(value)
        current = getattr(self._conv, name)
        expected = self._as_1d(current).shape
        if value.shape != expected:
            raise ValueError(f"Conv1D: {name} must have shape {expected}, got {value.shape}")
        if value.dtype != current.dtype:
            raise TypeError(f"Conv1D: {name} must have dtype {current.dtype}, got "
                            f"{value.dtype}")
        if name == "weight_grad":  # backward adds into the inner layer's own array
            np.copyto(self._as_1d(current), value)
        elif self._channels_last:
            setattr(self._conv, name, value.transpose(2, 1, 0)[np.newaxis])
        else:
            setattr(self._conv, name, _one_d.weight_view(value, self.layout))

    weight = property(lambda self: self._as_1d(self._conv.weight),
                      lambda self, value: self._set_4d("weight", value),
                      doc="OIL (C_out, C_in/groups, k) or LIO (k, C_in/groups, C_out).")
    weight_grad = property(lambda self: self._as_1d(self._conv.weight_grad),
                           lambda self, value: self._set_4d("weight_grad", value),
                           doc="The accumulated weight gradient, shaped like weight.")

    @property
    def bias(self):
        """(C_out,) or None."""
        return self._conv.bias

    @bias.setter
    def bias(self, value):
        self._conv.bias = value

    @property
    def bias_grad(self):
        """The accumulated bias gradient, (C_out,) or None."""
        return self._conv.bias_grad

    @bias_grad.setter
    def bias_grad(self, value):
        self._conv.bias_grad = value

    @property
    def dtype(self):
        return self._conv.dtype

    @property
    def max_workspace_bytes(self):
        return self._conv.max_workspace_bytes

    @property
    def padding_mode(self):
        return self._conv.padding_mode

    @property
    def workspace_bytes(self):
        return self._conv.workspace_bytes

    # ------------------------------------------------------------------ API
    def _inner(self, call, *args, **kwargs):
        """Run a Conv2D method; its only errors left after the 1-D checks (a workspace cap
        too small) are reported under this layer's name."""
        try:
            return call(*args, **kwargs)
        except ValueError as error:
            raise ValueError(str(error).replace("Conv2D", "Conv1D")) from None

    def forward(self, x, out=None):
        """y = conv1d(x, weight, bias). Keeps `x` for :meth:`backward`; ``layer(x)`` is
        ``layer.forward(x)``.

        Parameters
        ----------
        x : ndarray
            (N, C, L) / (C, L) for NCL, (N, L, C) / (L, C) for NLC, in the layer's dtype.
        out : ndarray, optional
            C-contiguous buffer of the result's shape and dtype, not overlapping an input:
            the call then allocates nothing.

        Returns
        -------
        ndarray
            NCL: (N, C_out, L_out); NLC: (N, L_out, C_out); no N for a 2-D `x`.

        Raises
        ------
        TypeError
            For an input whose dtype is not the layer's.
        ValueError
            For a wrong shape or channel count, a signal shorter than the window, or an
            unusable `out`.

        Examples
        --------
        >>> layer = fastconv.Conv1D(3, 8, 3, padding="same", seed=0, layout="NLC")
        >>> layer.forward(np.ones((50, 3), np.float32)).shape
        (50, 8)
        """
        fn = "Conv1D.forward"
        x = _validate.as_array(x, "input", fn)
        _validate.check_float_dtype(x, "input", fn)
        _validate.check_same_dtype(fn, input=x, weight=self._conv.weight)
        x3, batched = _one_d.split_batch(x, "input", fn, self.layout)
        n, channels, length = _one_d.dims(x3.shape, self.layout)
        if channels != self.in_channels:
            raise ValueError(f"{fn}: expected input with {self.in_channels} channels (weight "
                             f"{self.weight.shape}, groups={self.groups}), got {channels} "
                             f"channels in input of shape {x.shape}")
        geom = _one_d.make_geometry(fn, n, channels, length, self.out_channels, self.groups,
                                    self.kernel_size[0], self.stride[0], self.padding,
                                    self.dilation[0], self.layout)
        geo.check_mode(self.padding_mode, (geom.padding,), (length,), fn, ("length",))
        _one_d.check_blas_range(fn, geom)
        shape = geom.output_shape
        out = _validate.check_out(out, shape if batched else shape[1:], self.dtype,
                                  [x, self._conv.weight, self.bias], fn)
        if self._channels_last:
            # (N, 1, L) as (N, 1, L, 1) NHWC; the NHWC result in this thread's scratch,
            # transposed into the NCL one.
            n, cout, out_length = shape
            y_nlc = _memory.scratch("conv1d_layer_nlc", n * out_length * cout,
                                    self.dtype).reshape(n, 1, out_length, cout)
            self._inner(self._conv.forward, x3.reshape(n, 1, length, 1), out=y_nlc)
            y = _memory.result(None if out is None else out.reshape(shape), shape,
                               self.dtype)
            _nlc_to_ncl(y_nlc[:, 0], y)
        else:
            out4 = None if out is None else _one_d.as_2d(out.reshape(shape), self.layout)
            y4 = self._inner(self._conv.forward, _one_d.as_2d(x3, self.layout), out=out4)
            y = y4.reshape(shape)
        self._saved.forward = (geom, batched)
        if out is not None:
            return out
        return y if batched else y[0]

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
        >>> layer = fastconv.Conv1D(2, 4, 3, padding=1, seed=0)
        >>> y = layer(np.ones((1, 2, 6), np.float32))
        >>> layer.backward(np.ones_like(y)).shape
        (1, 2, 6)
        >>> float(layer.bias_grad[0])                  # 1·6 summed
        6.0
        """
        fn = "Conv1D.backward"
        saved = getattr(self._saved, "forward", None)
        if saved is None:
            raise RuntimeError(f"{fn}: call forward before backward")
        geom, batched = saved
        grad_output = _validate.as_array(grad_output, "grad_output", fn)
        _validate.check_float_dtype(grad_output, "grad_output", fn)
        _validate.check_same_dtype(fn, grad_output=grad_output, weight=self._conv.weight)
        expected = geom.output_shape if batched else geom.output_shape[1:]
        if grad_output.shape != expected:
            raise ValueError(f"{fn}: expected grad_output of shape {expected}, got "
                             f"{grad_output.shape}")
        grad3 = grad_output if batched else grad_output[np.newaxis]
        if self._channels_last:  # the NCL gradient as the inner layer's NHWC one
            n, cout, out_length = grad3.shape
            grad4 = _memory.scratch("conv1d_layer_grad", n * out_length * cout,
                                    self.dtype).reshape(n, 1, out_length, cout)
            np.copyto(grad4[:, 0], grad3.transpose(0, 2, 1))
        else:
            grad4 = _one_d.as_2d(grad3, self.layout)
        grad_x4 = self._inner(self._conv.backward, grad4)
        grad_x = grad_x4.reshape(_one_d.image_shape(geom.batch, geom.in_channels,
                                                    geom.length, self.layout))
        return grad_x if batched else grad_x[0]

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
        >>> layer = fastconv.Conv1D(1, 1, 1, seed=0)
        >>> _ = layer.backward(layer(np.ones((1, 1, 4), np.float32)))
        >>> layer.zero_grad()
        >>> float(abs(layer.weight_grad).sum())
        0.0
        """
        self._conv.zero_grad()

    def __repr__(self):
        return (f"Conv1D({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, layout={self.layout!r}, "
                f"dtype={self.dtype.name}"
                + ("" if self.padding_mode == "zeros"
                   else f", padding_mode={self.padding_mode!r}") + ")")
