"""Argument normalisation, validation and convolution geometry (SPEC §0 and §2).

Every public function validates here, in Python, before any kernel runs: a kernel only
ever sees shapes and indices that were checked. Errors name the function, the argument,
the value received and what was expected.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

__all__ = ["ConvGeometry", "conv_output_size"]

LAYOUTS = ("NCHW", "NHWC")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# BLAS takes its dimensions and leading dimensions as C int.
BLAS_INT_MAX = 2**31 - 1
# The kernels add a few window numbers in Py_ssize_t (e.g. oh·stride − top + i·dilation,
# −offset + stride − 1): bounding each of them, and every padded size, by 2**62 keeps all
# such sums inside int64. No image that fits in memory comes near it.
MAX_WINDOW_VALUE = 2**62


def conv_output_size(size, pad_before, pad_after, kernel, stride, dilation):
    """(size + pad_before + pad_after - dilation*(kernel-1) - 1)//stride + 1, may be < 1."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def normalize_layout(layout, fn):
    """'nchw' / 'NHWC' → 'NCHW' / 'NHWC'; anything else is a ValueError listing both."""
    if isinstance(layout, str) and layout.upper() in LAYOUTS:
        return layout.upper()
    raise ValueError(f"{fn}: layout must be one of {', '.join(map(repr, LAYOUTS))} "
                     f"(case-insensitive), got {layout!r}")


def _as_int(value, name, fn, minimum):
    """An int >= minimum (bools and floats rejected), else ValueError."""
    if type(value) is int and value >= minimum:  # the common case, first (per-call cost)
        return value
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return number


def _is_sequence(value):
    return isinstance(value, (tuple, list, np.ndarray))


def normalize_pair(value, name, fn, minimum=1):
    """int or (h, w) → (h, w), each an int >= minimum."""
    if type(value) is int and value >= minimum:  # the common cases, first (per-call cost)
        return (value, value)
    if (type(value) is tuple and len(value) == 2 and type(value[0]) is int
            and type(value[1]) is int and min(value) >= minimum):
        return value
    if _is_sequence(value):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {value!r}")
        return tuple(_as_int(v, name, fn, minimum) for v in value)
    number = _as_int(value, name, fn, minimum)
    return (number, number)


def normalize_padding(value, fn, name="padding"):
    """int, (pad_h, pad_w) or ((top, bottom), (left, right)) → ((top, bottom), (left, right))."""
    if type(value) is int and value >= 0:  # the common cases, first (per-call cost)
        return ((value, value), (value, value))
    if (type(value) is tuple and len(value) == 2
            and all(type(axis) is tuple and len(axis) == 2 and type(axis[0]) is int
                    and type(axis[1]) is int and min(axis) >= 0 for axis in value)):
        return value
    expected = "an int, (pad_h, pad_w) or ((top, bottom), (left, right)) of ints >= 0"
    if not _is_sequence(value):
        try:
            number = _as_int(value, name, fn, 0)
        except ValueError:
            raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}") from None
        return ((number, number), (number, number))
    if len(value) != 2:
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    pairs = []
    for axis in value:
        if _is_sequence(axis):
            if len(axis) != 2:
                raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
            pairs.append(tuple(_as_int(v, name, fn, 0) for v in axis))
        else:
            number = _as_int(axis, name, fn, 0)
            pairs.append((number, number))
    if any(_is_sequence(a) for a in value) and not all(_is_sequence(a) for a in value):
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    return tuple(pairs)


def resolve_conv_padding(padding, kernel_size, stride, dilation, fn):
    """Numeric padding, or 'valid' (none) / 'same' (stride 1 only, extra pixel bottom/right)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(f"{fn}: padding='same' needs stride 1, got stride={stride}")
            pads = []
            for k, d in zip(kernel_size, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"{fn}: padding must be 'valid', 'same' or a number, got {padding!r}")
    return normalize_padding(padding, fn)


def as_array(x, name, fn):
    """x as an ndarray (array-likes are converted) in native byte order and aligned to its
    element size (a copy when not: kernels load whole elements); object arrays are a
    TypeError."""
    array = np.asarray(x)
    if array.dtype == object:
        raise TypeError(f"{fn}: {name} has unsupported dtype object")
    if not array.dtype.isnative:  # kernels compute in the machine's byte order
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.aligned:
        array = array.copy()
    return array


def normalize_shape(shape, name, fn, ndims=(3, 4)):
    """A shape given as a sequence of ints >= 0 with an allowed length → tuple of ints."""
    try:
        dims = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise ValueError(f"{fn}: {name} must be a tuple of ints, got {shape!r}") from None
    if len(dims) not in ndims:
        raise ValueError(f"{fn}: {name} must have {' or '.join(map(str, ndims))} dimensions, "
                         f"got {dims}")
    if any(d < 0 for d in dims):
        raise ValueError(f"{fn}: {name} must not have negative sizes, got {dims}")
    return dims


def check_float_dtype(array, name, fn):
    """float32 / float64 only, for arithmetic operators."""
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {array.dtype}")


def check_same_dtype(fn, **arrays):
    """All given arrays share one dtype, else a TypeError naming each."""
    named = [(name, a) for name, a in arrays.items() if a is not None]
    first_name, first = named[0]
    for name, array in named[1:]:
        if array.dtype != first.dtype:
            raise TypeError(f"{fn}: {first_name} has dtype {first.dtype} but {name} has dtype "
                            f"{array.dtype}; convert one (no implicit casting)")


def split_batch(x, name, fn, layout):
    """4-D → (x, True); 3-D one image → (x[None], False); other ndim is a ValueError."""
    axes = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
    single = "(C, H, W)" if layout == "NCHW" else "(H, W, C)"
    if x.ndim == 4:
        return x, True
    if x.ndim == 3:
        return x[np.newaxis], False
    raise ValueError(f"{fn}: expected {name} of shape {axes} or {single} for layout "
                     f"{layout!r}, got shape {x.shape} ({x.ndim}-D)")


def image_dims(shape4, layout):
    """(N, C, H, W) of a 4-D shape in the given layout."""
    if layout == "NCHW":
        return shape4
    n, h, w, c = shape4
    return (n, c, h, w)


def check_out(out, shape, dtype, inputs, fn):
    """`out` must be a C-contiguous writable ndarray of exact shape and dtype, sharing no memory
    with any input; returns it (or None)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{fn}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: out must have shape {tuple(shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"{fn}: out must have dtype {dtype}, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{fn}: out must be C-contiguous")
    if not out.flags.aligned:
        raise ValueError(f"{fn}: out must be aligned to its {out.dtype.itemsize}-byte elements")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    for array in inputs:
        if array is not None and np.may_share_memory(out, array):
            raise ValueError(f"{fn}: out overlaps an input; pass a separate buffer")
    return out


@dataclass(frozen=True)
class Window:
    """Validated sliding-window geometry for one image, as the kernels take it."""

    channels: int
    height: int
    width: int
    kernel_size: tuple
    stride: tuple
    padding: tuple  # ((top, bottom), (left, right))
    dilation: tuple
    out_h: int
    out_w: int

    @property
    def is_pointwise(self):
        """1×1, stride 1, no padding, and as many outputs as pixels: each output position
        reads exactly its own pixel, so the image is its own column matrix. (A transposed
        convolution's output_padding makes its image larger than that: not pointwise.)"""
        return (self.kernel_size == (1, 1) and self.stride == (1, 1)
                and self.padding == ((0, 0), (0, 0))
                and (self.out_h, self.out_w) == (self.height, self.width))

    def kernel_struct(self):
        """The dict that Cython converts to its `Geometry` struct."""
        return {
            "channels": self.channels, "height": self.height, "width": self.width,
            "kernel_h": self.kernel_size[0], "kernel_w": self.kernel_size[1],
            "stride_h": self.stride[0], "stride_w": self.stride[1],
            "pad_top": self.padding[0][0], "pad_left": self.padding[1][0],
            "dilation_h": self.dilation[0], "dilation_w": self.dilation[1],
            "out_h": self.out_h, "out_w": self.out_w,
        }


def make_window(channels, height, width, kernel_size, stride, padding, dilation, fn,
                input_desc="input"):
    """Validate geometry and compute the output size; the window must fit the padded input."""
    kernel_size = normalize_pair(kernel_size, "kernel_size", fn)
    stride = normalize_pair(stride, "stride", fn)
    dilation = normalize_pair(dilation, "dilation", fn)
    padding = normalize_padding(padding, fn)  # idempotent on the normalised form
    for name, value in (("kernel_size", kernel_size), ("stride", stride),
                        ("dilation", dilation)):
        if max(value) > MAX_WINDOW_VALUE:
            raise ValueError(f"{fn}: {name}={value} exceeds the largest supported value "
                             f"2**62 = {MAX_WINDOW_VALUE}")
    out = []
    for axis, size, (before, after), k, s, d in zip(
            ("height", "width"), (height, width), padding, kernel_size, stride, dilation):
        if size + before + after > MAX_WINDOW_VALUE:
            raise ValueError(
                f"{fn}: padding={padding} makes the padded {input_desc} {axis} "
                f"{size} + {before} + {after} = {size + before + after}, larger than the "
                f"largest supported size 2**62 = {MAX_WINDOW_VALUE}")
        extent = d * (k - 1) + 1
        if size + before + after < extent:
            raise ValueError(
                f"{fn}: kernel_size={kernel_size} with dilation={dilation} spans {extent} "
                f"pixels in {axis}, larger than the padded {input_desc} {axis} "
                f"{size} + {before} + {after} = {size + before + after}")
        out.append(conv_output_size(size, before, after, k, s, d))
    return Window(channels, height, width, kernel_size, stride, padding, dilation, out[0], out[1])


class ConvGeometry:
    """Shapes and costs of a convolution, answered before any work (SPEC §2).

    Parameters
    ----------
    input_shape : tuple of int
        (N, C, H, W) or (C, H, W) for NCHW; (N, H, W, C) or (H, W, C) for NHWC.
    out_channels, kernel_size, stride, padding, dilation, groups, layout
        As for :func:`fastconv.conv2d`.

    Attributes
    ----------
    output_shape : tuple
        Shape of the convolution's result (batch axis dropped for 3-D input).
    gemm_shape : (M, K, N)
        One GEMM per image and group: M = C_out/groups, K = C_in/groups·kh·kw, N = OH·OW.
    flops : int
        2 × multiply-adds over the whole batch (bias excluded).
    """

    def __init__(self, input_shape, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, *, layout="NCHW", fn="ConvGeometry"):
        self.layout = normalize_layout(layout, fn)
        shape = normalize_shape(input_shape, "input_shape", fn)
        self.input_shape = shape
        self.batched = len(shape) == 4
        shape4 = shape if self.batched else (1,) + shape
        self.batch, self.in_channels, self.height, self.width = image_dims(shape4, self.layout)
        self.out_channels = _as_int(out_channels, "out_channels", fn, 1)
        self.groups = _as_int(groups, "groups", fn, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{fn}: groups={self.groups} must divide in_channels ({self.in_channels}) and "
                f"out_channels ({self.out_channels})")
        if self.in_channels == 0:
            raise ValueError(f"{fn}: input has 0 channels, shape {shape}")
        self.kernel_size = normalize_pair(kernel_size, "kernel_size", fn)
        self.stride = normalize_pair(stride, "stride", fn)
        self.dilation = normalize_pair(dilation, "dilation", fn)
        self.padding = resolve_conv_padding(padding, self.kernel_size, self.stride,
                                            self.dilation, fn)
        self.window = make_window(self.in_channels, self.height, self.width, self.kernel_size,
                                  self.stride, self.padding, self.dilation, fn)
        self.out_h, self.out_w = self.window.out_h, self.window.out_w

    @property
    def output_shape(self):
        if self.layout == "NCHW":
            shape = (self.batch, self.out_channels, self.out_h, self.out_w)
        else:
            shape = (self.batch, self.out_h, self.out_w, self.out_channels)
        return shape if self.batched else shape[1:]

    @property
    def weight_shape(self):
        kh, kw = self.kernel_size
        cin = self.in_channels // self.groups
        if self.layout == "NCHW":
            return (self.out_channels, cin, kh, kw)
        return (kh, kw, cin, self.out_channels)

    @property
    def gemm_shape(self):
        kh, kw = self.kernel_size
        return (self.out_channels // self.groups, self.in_channels // self.groups * kh * kw,
                self.out_h * self.out_w)

    @property
    def flops(self):
        m, k, n = self.gemm_shape
        return 2 * self.batch * self.groups * m * k * n

    def column_bytes(self, dtype=np.float32):
        """Bytes of the full column buffer (im2col of the whole batch) in `dtype`."""
        kh, kw = self.kernel_size
        return (self.batch * self.in_channels * kh * kw * self.out_h * self.out_w
                * np.dtype(dtype).itemsize)

    def __repr__(self):
        return (f"ConvGeometry(input_shape={self.input_shape}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, layout={self.layout!r})")
