"""Argument checks and geometry of the 3-D operators (docs/spec.md §6), in 3-D words.

Everything a caller can get wrong is checked here first, so the kernels of
fastconv/_kernels/_vol2col.pyx, which run next, only ever see checked shapes and
source-index tables. Names here are this package's internals, not public.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastconv import _padding_mode, _validate

LAYOUTS = ("NCDHW", "NDHWC")
AXES = ("depth", "height", "width")


def normalize_layout(layout, fn):
    """'ncdhw' / 'NDHWC' → 'NCDHW' / 'NDHWC'; anything else is a ValueError listing both."""
    return _validate.normalize_layout(layout, fn, LAYOUTS)


def is_three_d_kernel(kernel_size):
    """A kernel_size given as a sequence of three values: im2col/col2im work on volumes."""
    return isinstance(kernel_size, (tuple, list, np.ndarray)) and np.ndim(kernel_size) == 1 \
        and len(kernel_size) == 3


def _is_sequence(value):
    return isinstance(value, (tuple, list, np.ndarray))


def normalize_triple(value, name, fn, minimum=1):
    """int or (d, h, w) → (d, h, w), each an int >= minimum, else ValueError."""
    if type(value) is int and value >= minimum:
        return (value,) * 3
    if _is_sequence(value):
        if np.ndim(value) != 1 or len(value) != 3:
            raise ValueError(f"{fn}: {name} must be an int or a 3-tuple (d, h, w), got "
                             f"{value!r}")
        return tuple(_validate.as_int(v, name, fn, minimum) for v in value)
    number = _validate.as_int(value, name, fn, minimum)
    return (number,) * 3


def normalize_padding(value, fn, name="padding"):
    """int p, or three entries each an int or a (before, after) pair → three pairs."""
    if type(value) is int and value >= 0:
        return ((value, value),) * 3
    expected = ("an int or a 3-tuple of ints or (before, after) pairs, all >= 0 (one per "
                "axis d, h, w)")
    if not _is_sequence(value):
        try:
            number = _validate.as_int(value, name, fn, 0)
        except ValueError:
            raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}") from None
        return ((number, number),) * 3
    if len(value) != 3:
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    pairs = []
    try:
        for axis in value:
            if _is_sequence(axis):
                if np.ndim(axis) != 1 or len(axis) != 2:
                    raise ValueError
                pairs.append(tuple(_validate.as_int(v, name, fn, 0) for v in axis))
            else:
                number = _validate.as_int(axis, name, fn, 0)
                pairs.append((number, number))
    except ValueError:
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}") from None
    return tuple(pairs)


def resolve_padding(padding, kernel, stride, dilation, fn, sizes=None):
    """Numeric padding, or 'valid' / 'same' (TensorFlow's SAME; PyTorch's "same" at stride
    1). Without `sizes`, a strided 'same' stays the string 'same' (a layer resolves it per
    input)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * 3
        if mode == "same":
            if sizes is None:
                if any(s != 1 for s in stride):
                    return "same"
                sizes = (0, 0, 0)  # at stride 1 the total is dilation·(kernel − 1)
            return tuple(_validate.same_padding(size, k, s, d)
                         for size, k, s, d in zip(sizes, kernel, stride, dilation))
        raise ValueError(f"{fn}: padding must be 'valid', 'same' or a number, got {padding!r}")
    return normalize_padding(padding, fn)


def output_sizes(fn, sizes, kernel, stride, padding, dilation, input_desc="input"):
    """(OD, OH, OW) after the checks make_window does in 2-D: values within 2**62, the
    dilated window inside each padded axis."""
    result = []
    for axis, size, k, s, (before, after), d in zip(AXES, sizes, kernel, stride, padding,
                                                     dilation):
        for name, value in (("kernel_size", k), ("stride", s), ("dilation", d)):
            if value > _validate.MAX_WINDOW_VALUE:
                raise ValueError(f"{fn}: {name}={value} exceeds the largest supported value "
                                 f"2**62 = {_validate.MAX_WINDOW_VALUE}")
        padded = size + before + after
        if padded > _validate.MAX_WINDOW_VALUE:
            raise ValueError(f"{fn}: padding={padding} makes the padded {input_desc} {axis} "
                             f"{size} + {before} + {after} = {padded}, larger than the "
                             f"largest supported size 2**62 = {_validate.MAX_WINDOW_VALUE}")
        extent = d * (k - 1) + 1
        if padded < extent:
            raise ValueError(f"{fn}: kernel_size={tuple(kernel)} with dilation="
                             f"{tuple(dilation)} spans {extent} along the {axis}, larger than "
                             f"the padded {input_desc} {axis} {size} + {before} + {after} = "
                             f"{padded}")
        result.append((padded - extent) // s + 1)
    return tuple(result)


split_batch = _validate.split_batch  # the layout names its shapes


def dims(shape5, layout):
    """(N, C, (D, H, W)) of a 5-D shape in the given layout."""
    if layout == "NCDHW":
        return shape5[0], shape5[1], tuple(shape5[2:])
    return shape5[0], shape5[4], tuple(shape5[1:4])


def image_shape(n, c, sizes, layout):
    return (n, c, *sizes) if layout == "NCDHW" else (n, *sizes, c)


def weight_dims(weight, layout):
    """(first, second, (kd, kh, kw)) of a 5-D weight: (O, I) for OIDHW, read from DHWIO as
    (O, I) too."""
    if layout == "NCDHW":
        return weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
    return weight.shape[4], weight.shape[3], tuple(weight.shape[:3])


class Geometry(NamedTuple):
    """A validated 3-D convolution: one volume's channels and sizes, and the window."""

    batch: int
    in_channels: int
    sizes: tuple          # (D, H, W)
    out_channels: int
    groups: int
    kernel: tuple         # (kd, kh, kw)
    stride: tuple
    padding: tuple        # ((before, after),) * 3
    dilation: tuple
    out_sizes: tuple      # (OD, OH, OW)
    layout: str
    padding_mode: str = "zeros"

    @property
    def output_shape(self):
        """The batched result shape in the layout."""
        return image_shape(self.batch, self.out_channels, self.out_sizes, self.layout)

    @property
    def input_shape(self):
        return image_shape(self.batch, self.in_channels, self.sizes, self.layout)

    @property
    def positions(self):
        return self.out_sizes[0] * self.out_sizes[1] * self.out_sizes[2]

    @property
    def pointwise(self):
        """1×1×1, stride 1, no padding: the columns are the image itself."""
        return (self.kernel == (1, 1, 1) and self.stride == (1, 1, 1)
                and all(p == (0, 0) for p in self.padding))

    @property
    def mode(self):
        """The padding mode the kernels need (zeros where nothing is padded)."""
        return _padding_mode.effective_mode(self.padding_mode, self.padding)

    def flops(self):
        """2 · N · C_out · (C_in/g · kd·kh·kw) · OD·OH·OW."""
        k = self.kernel[0] * self.kernel[1] * self.kernel[2]
        return 2 * self.batch * self.out_channels * (self.in_channels // self.groups) * k \
            * self.positions


def check_conv_arrays(fn, x, weight, bias, x_name="input"):
    """ndarrays of float32/float64 sharing one dtype; weight 5-D; bias 1-D or None."""
    return _validate.check_conv_arrays(fn, x, weight, bias, x_name, weight_ndim=5)


def conv_geometry(fn, x5, weight, stride, padding, dilation, groups, layout, x_shape,
                  padding_mode="zeros"):
    """The Geometry of a conv3d call (5-D `x5`, a 5-D `weight` in `layout`), with the
    channel checks worded as conv2d's; `x_shape` is the shape the caller passed."""
    groups = _validate.as_int(groups, "groups", fn, 1)
    n, channels, sizes = dims(x5.shape, layout)
    out_channels, cin_g, kernel = weight_dims(weight, layout)
    if out_channels % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the weight's {out_channels} output "
                         f"channels (weight {weight.shape})")
    if channels != cin_g * groups:
        raise ValueError(f"{fn}: expected input with {cin_g * groups} channels (weight "
                         f"{weight.shape}, groups={groups}), got {channels} channels in input "
                         f"of shape {x_shape}")
    if min(kernel) < 1 or cin_g < 1 or out_channels < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    return make_geometry(fn, n, channels, sizes, out_channels, groups, kernel, stride,
                         padding, dilation, layout, padding_mode)


def make_geometry(fn, n, channels, sizes, out_channels, groups, kernel, stride, padding,
                  dilation, layout, padding_mode="zeros"):
    """Geometry from normalised channels; checks the geometry arguments, the window and
    the padding mode."""
    stride = normalize_triple(stride, "stride", fn)
    dilation = normalize_triple(dilation, "dilation", fn)
    padding = resolve_padding(padding, kernel, stride, dilation, fn, sizes)
    out_sizes = output_sizes(fn, sizes, kernel, stride, padding, dilation)
    _padding_mode.check_fits(padding_mode, padding, sizes, fn, AXES)
    return Geometry(n, channels, tuple(sizes), out_channels, groups, tuple(kernel), stride,
                    padding, dilation, out_sizes, layout, padding_mode)


def check_blas_range(fn, geom):
    """Every GEMM dimension and leading dimension must fit BLAS's C int."""
    cin_g = geom.in_channels // geom.groups
    k = geom.kernel[0] * geom.kernel[1] * geom.kernel[2]
    d, h, w = geom.sizes
    dims_ = {"C_out": geom.out_channels, "C_in": geom.in_channels, "K": cin_g * k,
             "M": geom.out_channels // geom.groups, "OD*OH*OW": geom.positions,
             "D*H*W": d * h * w}
    for name, value in dims_.items():
        if value > _validate.BLAS_INT_MAX:
            raise ValueError(f"{fn}: {name} = {value} exceeds the BLAS int range "
                             f"({_validate.BLAS_INT_MAX}); split the input")


def tables(geom):
    """The three source-index tables of a convolution: entry q of an axis is the image
    index padded coordinate q reads (-1: a zero), for q up to the last one the window
    reaches."""
    result = []
    mode = geom.mode
    for size, (before, after), k, s, d, out in zip(geom.sizes, geom.padding, geom.kernel,
                                                    geom.stride, geom.dilation,
                                                    geom.out_sizes):
        reach = (out - 1) * s + d * (k - 1) + 1 if out else 1
        result.append(shifted_table(size, before, after, mode, reach))
    return result


def shifted_table(size, before, after, mode, reach):
    """A source-index table of `reach` entries; `before` may be negative (the table starts
    inside the image) in "zeros" mode."""
    if mode == "zeros":
        coords = np.arange(reach, dtype=np.intp) - before
        return np.where((coords >= 0) & (coords < size), coords, -1).astype(np.intp)
    table = _padding_mode.source_index(size, before, after, mode)
    return np.ascontiguousarray(table[:reach], dtype=np.intp)
