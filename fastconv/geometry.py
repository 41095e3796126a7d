"""Convolution geometry (docs/spec.md §0 and §2): output sizes, the sliding window the
kernels take, and :class:`ConvGeometry`, which answers shapes and costs before any work.

Geometry is immutable: a ConvGeometry or Window, once built, describes one convolution.
Arguments are normalised and checked by :mod:`fastconv._validate` as they are built.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from fastconv import _padding_mode, _validate

__all__ = ["ConvGeometry", "conv_output_size"]


def conv_output_size(size, pad_before, pad_after, kernel, stride, dilation):
    """Output size of a convolution along one axis (docs/spec.md §0).

    ``(size + pad_before + pad_after - dilation*(kernel-1) - 1)//stride + 1``; the result
    may be < 1 (no check here).

    Parameters
    ----------
    size, pad_before, pad_after : int
        The input size and the padding on either side.
    kernel, stride, dilation : int

    Returns
    -------
    int

    Raises
    ------
    ZeroDivisionError
        For ``stride == 0``.

    Examples
    --------
    >>> from fastconv.geometry import conv_output_size
    >>> conv_output_size(224, 3, 3, 7, 2, 1)           # ResNet's stem
    112
    """
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


# The longest padded axis a padding mode other than "zeros" takes: its source-index table
# holds one entry per padded coordinate (only "replicate" allows padding beyond the image).
MAX_TABLE = _validate.BLAS_INT_MAX


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
    padding_mode: str = "zeros"  # the effective mode (_padding_mode.effective_mode)

    @functools.cached_property
    def source_tables(self):
        """(rows, cols): the source-index tables of a padding mode other than "zeros"
        (fastconv._padding_mode.source_index), kept as long as the window; None for
        "zeros"."""
        if self.padding_mode == "zeros":
            return None
        return tuple(_padding_mode.source_index(size, before, after, self.padding_mode)
                     for size, (before, after) in zip((self.height, self.width),
                                                       self.padding))

    @functools.cached_property
    def table_addresses(self):
        """(row table, column table) addresses for the kernels' structs, (0, 0) for
        "zeros" (taken once: ``ndarray.ctypes`` costs microseconds per call)."""
        tables = self.source_tables
        if tables is None:
            return (0, 0)
        return (tables[0].ctypes.data, tables[1].ctypes.data)

    @functools.cached_property
    def _struct(self):
        row_src, col_src = self.table_addresses
        return {
            "channels": self.channels, "height": self.height, "width": self.width,
            "kernel_h": self.kernel_size[0], "kernel_w": self.kernel_size[1],
            "stride_h": self.stride[0], "stride_w": self.stride[1],
            "pad_top": self.padding[0][0], "pad_left": self.padding[1][0],
            "dilation_h": self.dilation[0], "dilation_w": self.dilation[1],
            "out_h": self.out_h, "out_w": self.out_w, "row_src": row_src, "col_src": col_src,
        }

    def padded_window(self):
        """The window of the same convolution on the padded image, unpadded: its columns
        are this window's, read from the padded image (the adjoint of a padding mode runs
        on it, then folds the padding back)."""
        (top, bottom), (left, right) = self.padding
        return Window(self.channels, self.height + top + bottom, self.width + left + right,
                      self.kernel_size, self.stride, ((0, 0), (0, 0)), self.dilation,
                      self.out_h, self.out_w)

    @property
    def is_pointwise(self):
        """1×1, stride 1, no padding, and as many outputs as pixels: each output position
        reads exactly its own pixel, so the image is its own column matrix. (A transposed
        convolution's output_padding makes its image larger than that: not pointwise.)"""
        return (self.kernel_size == (1, 1) and self.stride == (1, 1)
                and self.padding == ((0, 0), (0, 0))
                and (self.out_h, self.out_w) == (self.height, self.width))

    def kernel_struct(self):
        """The dict that Cython converts to its `Geometry` struct (with a padding mode, the
        addresses of source_tables, which this window keeps alive); a copy of the one
        made on first use."""
        return dict(self._struct)


def check_mode(padding_mode, pads, sizes, fn, axis_names, input_desc="input"):
    """A normalised padding mode against the padding (one (before, after) per axis) and
    the input's sizes: _padding_mode.check_fits, and a padded axis of at most MAX_TABLE
    coordinates for a mode's table. ValueError naming the axis."""
    _padding_mode.check_fits(padding_mode, pads, sizes, fn, axis_names)
    if _padding_mode.effective_mode(padding_mode, pads) == "zeros":
        return
    for axis, size, (before, after) in zip(axis_names, sizes, pads):
        if size + before + after > MAX_TABLE:
            raise ValueError(
                f"{fn}: padding_mode={padding_mode!r} reads the padding through a table per "
                f"axis: the padded {input_desc} {axis} {size} + {before} + {after} = "
                f"{size + before + after} must be at most 2**31 - 1")


def make_window(channels, height, width, kernel_size, stride, padding, dilation, fn,
                input_desc="input", padding_mode="zeros"):
    """Validate geometry and compute the output size; the window must fit the padded input.
    `padding_mode` (normalised) must fit the image (_padding_mode.check_fits); the window
    keeps the effective mode."""
    kernel_size = _validate.normalize_pair(kernel_size, "kernel_size", fn)
    stride = _validate.normalize_pair(stride, "stride", fn)
    dilation = _validate.normalize_pair(dilation, "dilation", fn)
    padding = _validate.normalize_padding(padding, fn)  # idempotent on the normalised form
    for name, value in (("kernel_size", kernel_size), ("stride", stride),
                        ("dilation", dilation)):
        if max(value) > _validate.MAX_WINDOW_VALUE:
            raise ValueError(f"{fn}: {name}={value} exceeds the largest supported value "
                             f"2**62 = {_validate.MAX_WINDOW_VALUE}")
    out = []
    for axis, size, (before, after), k, s, d in zip(
            ("height", "width"), (height, width), padding, kernel_size, stride, dilation):
        if size + before + after > _validate.MAX_WINDOW_VALUE:
            raise ValueError(
                f"{fn}: padding={padding} makes the padded {input_desc} {axis} "
                f"{size} + {before} + {after} = {size + before + after}, larger than the "
                f"largest supported size 2**62 = {_validate.MAX_WINDOW_VALUE}")
        extent = d * (k - 1) + 1
        if size + before + after < extent:
            raise ValueError(
                f"{fn}: kernel_size={kernel_size} with dilation={dilation} spans {extent} "
                f"pixels in {axis}, larger than the padded {input_desc} {axis} "
                f"{size} + {before} + {after} = {size + before + after}")
        out.append(conv_output_size(size, before, after, k, s, d))
    check_mode(padding_mode, padding, (height, width), fn, ("height", "width"), input_desc)
    return Window(channels, height, width, kernel_size, stride, padding, dilation, out[0], out[1],
                  _padding_mode.effective_mode(padding_mode, padding))


class ConvGeometry:
    """Shapes and costs of a convolution, answered before any work (docs/spec.md §2).

    Parameters
    ----------
    input_shape : tuple of int
        (N, C, H, W) or (C, H, W) for NCHW; (N, H, W, C) or (H, W, C) for NHWC.
    out_channels, kernel_size, stride, padding, dilation, groups, layout, padding_mode
        As for :func:`fastconv.conv2d` (a mode must fit the input's size).
    fn : str, optional
        The name error messages start with (fastconv's functions pass their own).

    Attributes
    ----------
    output_shape : tuple
        Shape of the convolution's result (batch axis dropped for 3-D input).
    gemm_shape : (M, K, N)
        One GEMM per image and group: M = C_out/groups, K = C_in/groups·kh·kw, N = OH·OW.
    flops : int
        2 × multiply-adds over the whole batch (bias excluded).
    weight_shape : tuple
        The weight conv2d takes: OIHW for NCHW, HWIO for NHWC.
    padding_mode : str
        The padding mode asked for, lower case.

    Raises
    ------
    ValueError
        For a bad shape or geometry argument, channels not divisible by `groups`, or a
        window larger than the padded input, naming it.

    Notes
    -----
    A ConvGeometry is immutable (assigning an attribute is an AttributeError).

    Examples
    --------
    >>> g = fastconv.ConvGeometry((8, 64, 56, 56), 128, 3, padding=1)
    >>> g.output_shape, g.weight_shape, g.gemm_shape
    ((8, 128, 56, 56), (128, 64, 3, 3), (128, 576, 3136))
    >>> g.flops, g.column_bytes(np.float32)
    (3699376128, 57802752)
    >>> fastconv.ConvGeometry((1, 28, 28, 16), 16, 3, stride=2, layout="NHWC").output_shape
    (1, 13, 13, 16)
    """

    __slots__ = ("layout", "input_shape", "batched", "batch", "in_channels", "height",
                 "width", "out_channels", "groups", "kernel_size", "stride", "dilation",
                 "padding", "window", "out_h", "out_w", "padding_mode")

    def __init__(self, input_shape, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, *, layout="NCHW", padding_mode="zeros",
                 fn="ConvGeometry"):
        layout = _validate.normalize_layout(layout, fn)
        shape = _validate.normalize_shape(input_shape, "input_shape", fn)
        shape4 = shape if len(shape) == 4 else (1,) + shape
        batch, in_channels, height, width = _validate.image_dims(shape4, layout)
        out_channels = _validate.as_int(out_channels, "out_channels", fn, 1)
        groups = _validate.as_int(groups, "groups", fn, 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{fn}: groups={groups} must divide in_channels ({in_channels}) and "
                f"out_channels ({out_channels})")
        if in_channels == 0:
            raise ValueError(f"{fn}: input has 0 channels, shape {shape}")
        kernel_size = _validate.normalize_pair(kernel_size, "kernel_size", fn)
        stride = _validate.normalize_pair(stride, "stride", fn)
        dilation = _validate.normalize_pair(dilation, "dilation", fn)
        padding = _validate.resolve_conv_padding(padding, kernel_size, stride, dilation, fn,
                                                 (height, width))
        mode = _padding_mode.normalize_padding_mode(padding_mode, fn)
        window = make_window(in_channels, height, width, kernel_size, stride, padding,
                             dilation, fn, padding_mode=mode)
        self._fill(layout, shape, batch, in_channels, height, width, out_channels, groups,
                   window, mode)

    def _fill(self, layout, input_shape, batch, in_channels, height, width, out_channels,
              groups, window, padding_mode="zeros"):
        """Set every attribute once (the constructors' common end); `padding_mode` is the
        mode asked for (the window keeps the effective one)."""
        fields = dict(layout=layout, input_shape=input_shape,
                      batched=len(input_shape) == 4, batch=batch, in_channels=in_channels,
                      height=height, width=width, out_channels=out_channels, groups=groups,
                      kernel_size=window.kernel_size, stride=window.stride,
                      dilation=window.dilation, padding=window.padding, window=window,
                      out_h=window.out_h, out_w=window.out_w, padding_mode=padding_mode)
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"ConvGeometry is immutable: cannot set {name!r}")

    @property
    def reads_padding(self):
        """Whether the kernels read the padding through source tables (a padding mode other
        than "zeros" with some padding): only the column-building strategies serve it."""
        return self.window.padding_mode != "zeros"

    def padded_geometry(self):
        """This convolution on the padded input, unpadded, mode "zeros": the input gradient
        of a padding mode is its input gradient with the padding folded back."""
        (top, bottom), (left, right) = self.padding
        h, w = self.height + top + bottom, self.width + left + right
        shape = ((self.batch, self.in_channels, h, w) if self.layout == "NCHW"
                 else (self.batch, h, w, self.in_channels))
        return ConvGeometry(shape, self.out_channels, self.kernel_size, self.stride, 0,
                            self.dilation, self.groups, layout=self.layout)

    @property
    def output_shape(self):
        """Shape of the convolution's result (batch axis dropped for 3-D input)."""
        if self.layout == "NCHW":
            shape = (self.batch, self.out_channels, self.out_h, self.out_w)
        else:
            shape = (self.batch, self.out_h, self.out_w, self.out_channels)
        return shape if self.batched else shape[1:]

    @property
    def weight_shape(self):
        """Shape of conv2d's weight: OIHW for NCHW, HWIO for NHWC."""
        kh, kw = self.kernel_size
        cin = self.in_channels // self.groups
        if self.layout == "NCHW":
            return (self.out_channels, cin, kh, kw)
        return (kh, kw, cin, self.out_channels)

    @property
    def gemm_shape(self):
        """(M, K, N) of one GEMM per image and group."""
        kh, kw = self.kernel_size
        return (self.out_channels // self.groups, self.in_channels // self.groups * kh * kw,
                self.out_h * self.out_w)

    @property
    def flops(self):
        """2 × multiply-adds over the whole batch (bias excluded)."""
        m, k, n = self.gemm_shape
        return 2 * self.batch * self.groups * m * k * n

    def column_bytes(self, dtype=np.float32):
        """Bytes of the full column buffer (im2col of the whole batch) in `dtype`.

        Parameters
        ----------
        dtype : dtype, default float32

        Returns
        -------
        int

        Raises
        ------
        TypeError
            For something that is not a dtype.

        Examples
        --------
        >>> fastconv.ConvGeometry((1, 3, 8, 8), 4, 3).column_bytes(np.float64)
        7776
        """
        kh, kw = self.kernel_size
        return (self.batch * self.in_channels * kh * kw * self.out_h * self.out_w
                * np.dtype(dtype).itemsize)

    def algorithm(self, dtype=np.float32, requested="auto"):
        """The algorithm conv2d(..., algorithm=requested) runs for this geometry and dtype:
        'gemm' or 'winograd' (docs/spec.md §5). 'auto' decides by a rule over the shapes,
        the dtype and the CPU, never by the thread count.

        Parameters
        ----------
        dtype : float32 or float64
        requested : {"auto", "gemm", "winograd"}

        Returns
        -------
        str
            "gemm" or "winograd".

        Raises
        ------
        TypeError
            For a dtype other than float32 / float64.
        ValueError
            Requesting 'winograd' where it cannot serve: the ValueError conv2d would raise.

        Examples
        --------
        >>> fastconv.ConvGeometry((1, 16, 8, 8), 16, 5).algorithm()
        'gemm'
        >>> fastconv.ConvGeometry((8, 64, 56, 56), 64, 3, padding=1).algorithm("float32",
        ...                                                                  "winograd")
        'winograd'
        """
        from fastconv import _engine  # the engine builds on this module

        requested = _validate.normalize_algorithm(requested, "ConvGeometry.algorithm")
        dtype = np.dtype(dtype).newbyteorder("=")
        if dtype not in _validate.FLOAT_DTYPES:
            raise TypeError(f"ConvGeometry.algorithm: dtype must be float32 or float64, "
                            f"got {dtype}")
        return _engine.choose_algorithm(self, dtype.itemsize, requested,
                                        fn="ConvGeometry.algorithm")

    def __repr__(self):
        return (f"ConvGeometry(input_shape={self.input_shape}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, layout={self.layout!r}"
                + ("" if self.padding_mode == "zeros"
                   else f", padding_mode={self.padding_mode!r}") + ")")


def winograd_blocker(geom):
    """Why Winograd F(m×m, 3×3) cannot compute this convolution (completing
    "algorithm='winograd' ..."), or None when it can (docs/spec.md §5). `geom` is a
    ConvGeometry, or anything with its kernel_size, stride, dilation, groups and
    in_channels (a Conv2D layer)."""
    needs = {"kernel_size": (3, 3), "stride": (1, 1), "dilation": (1, 1)}
    got = {name: getattr(geom, name) for name, value in needs.items()
           if getattr(geom, name) != value}
    if got:
        return ("needs a 3x3 kernel with stride 1 and dilation 1, got "
                + ", ".join(f"{name}={value}" for name, value in got.items()))
    if geom.groups > 1 and geom.groups == geom.in_channels:
        return (f"does not serve depthwise convolutions (groups == in_channels == "
                f"{geom.groups})")
    return None


def conv2d_geometry(fn, x4, weight, stride, padding, dilation, groups, layout, x_shape,
                    padding_mode="zeros"):
    """The ConvGeometry of a conv2d call (4-D `x4`, a 4-D `weight` in `layout`), with the
    channel checks in the words of docs/spec.md §0; `x_shape` is the shape the caller
    passed (3-D or 4-D), for the messages."""
    groups = _validate.as_int(groups, "groups", fn, 1)
    if layout == "NCHW":
        out_channels, cin_g, kh, kw = weight.shape
        channels = x4.shape[1]
    else:
        kh, kw, cin_g, out_channels = weight.shape
        channels = x4.shape[3]
    if out_channels % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the weight's {out_channels} output "
                         f"channels (weight {weight.shape})")
    if channels != cin_g * groups:
        raise ValueError(f"{fn}: expected input with {cin_g * groups} channels (weight "
                         f"{weight.shape}, groups={groups}), got {channels} channels in input "
                         f"of shape {x_shape}")
    if kh < 1 or kw < 1 or cin_g < 1 or out_channels < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    return ConvGeometry(x4.shape, out_channels, (kh, kw), stride, padding, dilation, groups,
                        layout=layout, padding_mode=padding_mode, fn=fn)


def transposed_conv_geometry(fn, x4, weight, stride, padding, output_padding, groups,
                             dilation, layout, x_shape):
    """The geometry of a conv_transpose2d call: the conv2d whose input gradient it is, from
    (N, C_out, OH, OW) images to `x4`'s (N, C_in, H, W), with
    ``OH = (H − 1)·stride − top − bottom + dilation·(kh − 1) + output_padding + 1``.
    Its window maps the OH×OW image onto H×W outputs, which output_padding can make fewer
    than the window fits: the rows and columns it adds are read by no output."""
    groups = _validate.as_int(groups, "groups", fn, 1)
    if layout == "NCHW":
        cin, cout_g, kh, kw = weight.shape
        n, channels, h, w = x4.shape
    else:
        kh, kw, cout_g, cin = weight.shape
        n, h, w, channels = x4.shape
    if channels != cin:
        raise ValueError(f"{fn}: expected input with {cin} channels (weight {weight.shape}), "
                         f"got {channels} channels in input of shape {x_shape}")
    if cin % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the {cin} input channels")
    if min(kh, kw, cout_g, cin) < 1:
        raise ValueError(f"{fn}: weight has an empty axis, shape {weight.shape}")
    cout = cout_g * groups
    stride = _validate.normalize_pair(stride, "stride", fn)
    dilation = _validate.normalize_pair(dilation, "dilation", fn)
    pads = _validate.normalize_padding(padding, fn)
    out_pad = _validate.normalize_pair(output_padding, "output_padding", fn, minimum=0)
    sizes = []
    for axis, size, k, s, d, (before, after), op in zip(
            ("height", "width"), (h, w), (kh, kw), stride, dilation, pads, out_pad):
        if op >= max(s, d):
            raise ValueError(f"{fn}: output_padding={out_pad} must be smaller than stride "
                             f"{stride} or dilation {dilation} in {axis}")
        full = (size - 1) * s + d * (k - 1) + op + 1
        if full - before - after < 1:
            raise ValueError(f"{fn}: padding={pads} removes the whole output {axis} "
                             f"({full} before padding)")
        sizes.append(full - before - after)
    out_h, out_w = sizes
    image_shape = (n, cout, out_h, out_w) if layout == "NCHW" else (n, out_h, out_w, cout)
    # The window on the OH×OW image, checked as conv2d checks it (an empty x can make the
    # image smaller than the kernel); it yields at least H×W outputs, of which H×W are used.
    ConvGeometry(image_shape, cin, (kh, kw), stride, pads, dilation, groups, layout=layout,
                 fn=fn)
    geom = object.__new__(ConvGeometry)
    geom._fill(layout, image_shape, n, cout, out_h, out_w, cin, groups,
               Window(cout, out_h, out_w, (kh, kw), stride, pads, dilation, h, w))
    return geom
