"""Argument checks of the 1-D operators (docs/spec.md §6), in 1-D words.

A 1-D convolution runs as a 2-D one of height 1 on views of its arrays: (N, C, L) is
(N, C, 1, L) for "NCL" (NCHW) and (N, L, C) is (N, 1, L, C) for "NLC" (NHWC). Everything a
caller can get wrong is checked here first, so the 2-D code, which runs next, never raises
in 2-D words. Names here are this package's internals, not public.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastconv import _validate

LAYOUTS = ("NCL", "NLC")
# The 2-D layout that serves each 1-D one, and the axis of the height-1 view.
LAYOUT_2D = {"NCL": "NCHW", "NLC": "NHWC"}


def normalize_layout(layout, fn):
    """'ncl' / 'NLC' → 'NCL' / 'NLC'; anything else is a ValueError listing both."""
    return _validate.normalize_layout(layout, fn, LAYOUTS)


def is_one_d_kernel(kernel_size):
    """A kernel_size given as a sequence of one value: im2col/col2im work on 1-D images."""
    return isinstance(kernel_size, (tuple, list, np.ndarray)) and np.ndim(kernel_size) == 1 \
        and len(kernel_size) == 1


def normalize_single(value, name, fn, minimum=1):
    """int or a 1-tuple (l,) → int >= minimum, else ValueError."""
    if type(value) is int and value >= minimum:  # the common case, first
        return value
    if isinstance(value, (tuple, list, np.ndarray)):
        if np.ndim(value) != 1 or len(value) != 1:
            raise ValueError(f"{fn}: {name} must be an int or a 1-tuple (l,), got {value!r}")
        value = value[0]
    return _validate.as_int(value, name, fn, minimum)


def normalize_padding(value, fn, name="padding"):
    """int p → (p, p); (before, after) → itself; ints >= 0, else ValueError."""
    if type(value) is int and value >= 0:
        return (value, value)
    expected = "an int or a pair (before, after) of ints >= 0"
    if isinstance(value, (tuple, list, np.ndarray)):
        if np.ndim(value) != 1 or len(value) not in (1, 2):
            raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
        try:
            pads = tuple(_validate.as_int(v, name, fn, 0) for v in value)
        except ValueError:
            raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}") from None
        return pads * 2 if len(pads) == 1 else pads
    try:
        number = _validate.as_int(value, name, fn, 0)
    except ValueError:
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}") from None
    return (number, number)


def resolve_padding(padding, kernel, stride, dilation, fn, length=None):
    """Numeric padding, or 'valid' / 'same' (TensorFlow's SAME; PyTorch's "same" at stride
    1). Without `length`, a strided 'same' stays the string 'same' (a layer resolves it per
    input)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0)
        if mode == "same":
            if length is None:
                if stride != 1:
                    return "same"
                length = 0  # at stride 1 the total is dilation·(kernel − 1) for any length
            return _validate.same_padding(length, kernel, stride, dilation)
        raise ValueError(f"{fn}: padding must be 'valid', 'same' or a number, got {padding!r}")
    return normalize_padding(padding, fn)


def output_length(fn, length, kernel, stride, padding, dilation, input_desc="input"):
    """(length + before + after − dilation·(kernel − 1) − 1)//stride + 1 after the checks
    make_window does in 2-D: values within 2**62, the window inside the padded length."""
    for name, value in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if value > _validate.MAX_WINDOW_VALUE:
            raise ValueError(f"{fn}: {name}={value} exceeds the largest supported value "
                             f"2**62 = {_validate.MAX_WINDOW_VALUE}")
    before, after = padding
    padded = length + before + after
    if padded > _validate.MAX_WINDOW_VALUE:
        raise ValueError(f"{fn}: padding={padding} makes the padded {input_desc} length "
                         f"{length} + {before} + {after} = {padded}, larger than the largest "
                         f"supported size 2**62 = {_validate.MAX_WINDOW_VALUE}")
    extent = dilation * (kernel - 1) + 1
    if padded < extent:
        raise ValueError(f"{fn}: kernel_size={kernel} with dilation={dilation} spans {extent} "
                         f"samples, larger than the padded {input_desc} length "
                         f"{length} + {before} + {after} = {padded}")
    return (padded - extent) // stride + 1


split_batch = _validate.split_batch  # the layout names its shapes


def normalize_shape(shape, name, fn):
    """A 1-D image shape (N, C, L) / (C, L) (either layout) → tuple of ints."""
    return _validate.normalize_shape(shape, name, fn, ndims=(2, 3))


def dims(shape3, layout):
    """(N, C, L) of a 3-D shape in the given layout."""
    if layout == "NCL":
        return tuple(shape3)
    n, length, c = shape3
    return (n, c, length)


def image_shape(n, c, length, layout):
    return (n, c, length) if layout == "NCL" else (n, length, c)


def as_2d(array3, layout):
    """The height-1 view of a 3-D image (or column-less) array: (N, C, 1, L) / (N, 1, L, C)."""
    return array3[:, :, np.newaxis, :] if layout == "NCL" else array3[:, np.newaxis, :, :]


def weight_view(weight, layout):
    """The 2-D weight of a 1-D one, a view: OIL → (O, I, 1, k); LIO → (1, k, I, O)."""
    return weight[:, :, np.newaxis, :] if layout == "NCL" else weight[np.newaxis]


class Geometry(NamedTuple):
    """A validated 1-D convolution: one image's channels and length, and the window."""

    batch: int
    in_channels: int
    length: int
    out_channels: int
    groups: int
    kernel: int
    stride: int
    padding: tuple   # (before, after)
    dilation: int
    out_length: int
    layout: str

    @property
    def output_shape(self):
        """The batched result shape in the layout."""
        return image_shape(self.batch, self.out_channels, self.out_length, self.layout)

    def args_2d(self):
        """(stride, padding, dilation) of the height-1 2-D convolution."""
        return ((1, self.stride), ((0, 0), self.padding), (1, self.dilation))


def check_conv_arrays(fn, x, weight, bias, x_name="input"):
    """ndarrays of float32/float64 sharing one dtype; weight 3-D; bias 1-D or None."""
    return _validate.check_conv_arrays(fn, x, weight, bias, x_name, weight_ndim=3)


def conv_geometry(fn, x3, weight, stride, padding, dilation, groups, layout, x_shape):
    """The Geometry of a conv1d call (3-D `x3`, a 3-D `weight` in `layout`), with the
    channel checks worded as conv2d's; `x_shape` is the shape the caller passed."""
    groups = _validate.as_int(groups, "groups", fn, 1)
    n, channels, length = dims(x3.shape, layout)
    if layout == "NCL":
        out_channels, cin_g, kernel = weight.shape
    else:
        kernel, cin_g, out_channels = weight.shape
    if out_channels % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the weight's {out_channels} output "
                         f"channels (weight {weight.shape})")
    if channels != cin_g * groups:
        raise ValueError(f"{fn}: expected input with {cin_g * groups} channels (weight "
                         f"{weight.shape}, groups={groups}), got {channels} channels in input "
                         f"of shape {x_shape}")
    if kernel < 1 or cin_g < 1 or out_channels < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    return make_geometry(fn, n, channels, length, out_channels, groups, kernel, stride,
                         padding, dilation, layout)


def make_geometry(fn, n, channels, length, out_channels, groups, kernel, stride, padding,
                  dilation, layout):
    """Geometry from normalised channels; checks the geometry arguments and the window."""
    stride = normalize_single(stride, "stride", fn)
    dilation = normalize_single(dilation, "dilation", fn)
    padding = resolve_padding(padding, kernel, stride, dilation, fn, length)
    out_length = output_length(fn, length, kernel, stride, padding, dilation)
    return Geometry(n, channels, length, out_channels, groups, kernel, stride, padding,
                    dilation, out_length, layout)


def check_blas_range(fn, geom):
    """Every GEMM dimension must fit BLAS's C int (in 1-D words)."""
    cin_g = geom.in_channels // geom.groups
    dims_ = {"C_out": geom.out_channels, "C_in": geom.in_channels,
             "K": cin_g * geom.kernel, "M": geom.out_channels // geom.groups,
             "L_out": geom.out_length, "L": geom.length}
    for name, value in dims_.items():
        if value > _validate.BLAS_INT_MAX:
            raise ValueError(f"{fn}: {name} = {value} exceeds the BLAS int range "
                             f"({_validate.BLAS_INT_MAX}); split the input")

