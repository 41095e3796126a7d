"""What the benchmark measures: the layer suite, the user's ``--conv`` layers, the 1-D
signals (:data:`SIGNALS` and the user's ``--conv1d`` ones), the 3-D volumes
(:data:`VOLUMES` and the user's ``--conv3d`` ones) and R-MAC's feature maps.

The suite is the package data ``fastconv/data/layers.json`` (ResNet-50, VGG-16, MobileNet
layers); a :class:`Case` is one layer at one batch size, the unit every section times.
"""
from __future__ import annotations

import fnmatch
import importlib.resources
import json
from dataclasses import dataclass

import fastconv

__all__ = ["BenchError", "DEFAULT_BATCHES", "Layer", "load_layers", "select_layers",
           "CONV_FIELDS", "parse_conv", "Case", "FeatureMap", "RMAC_MAPS", "RMAC_BATCHES",
           "MapCase", "Signal", "SIGNALS", "CONV1D_FIELDS", "parse_conv1d", "SignalCase",
           "Volume", "VOLUMES", "CONV3D_FIELDS", "parse_conv3d", "VolumeCase"]

DEFAULT_BATCHES = (1, 8)


class BenchError(ValueError):
    """A bad benchmark request (unknown layer, bad batch...), reported as one line."""


@dataclass(frozen=True)
class Layer:
    """One convolution layer of the suite (square kernels, symmetric padding).

    Images are `size` × `size`, or `size` (height) × `width` when `width` is given: the
    suite's layers are square, a user's ``--conv`` layer need not be.
    """

    name: str
    in_channels: int
    size: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    batches: tuple = DEFAULT_BATCHES
    width: int | None = None  # None: square, `size` wide

    @classmethod
    def from_dict(cls, entry):
        """A Layer from one entry of layers.json (an optional "width" makes it non-square)."""
        return cls(
            name=entry["name"], in_channels=int(entry["in_channels"]), size=int(entry["size"]),
            out_channels=int(entry["out_channels"]), kernel=int(entry["kernel"]),
            stride=int(entry.get("stride", 1)), padding=int(entry.get("padding", 0)),
            groups=int(entry.get("groups", 1)),
            batches=tuple(int(b) for b in entry.get("batches", DEFAULT_BATCHES)),
            width=int(entry["width"]) if entry.get("width") is not None else None)

    @property
    def image_size(self):
        """(height, width) of the input image."""
        return (self.size, self.size if self.width is None else self.width)

    @property
    def out_image_size(self):
        """(height, width) of the output: the sliding window's positions on each axis."""
        return tuple((extent + 2 * self.padding - self.kernel) // self.stride + 1
                     for extent in self.image_size)

    @property
    def out_size(self):
        """Output height (= width for a square layer) of the sliding window."""
        return self.out_image_size[0]


def load_layers():
    """All layers of ``fastconv/data/layers.json``, in file order."""
    text = importlib.resources.files("fastconv").joinpath("data", "layers.json").read_text(
        encoding="utf-8")
    return [Layer.from_dict(entry) for entry in json.loads(text)["layers"]]


def select_layers(layers, patterns):
    """Layers whose name equals, or matches as a shell glob, one of `patterns` (all if None).

    An unknown pattern raises :class:`BenchError` listing the valid names.
    """
    if not patterns:
        return list(layers)
    names = [layer.name for layer in layers]
    unknown = [p for p in patterns if not fnmatch.filter(names, p)]
    if unknown:
        raise BenchError(f"unknown layer {', '.join(map(repr, unknown))}; "
                         f"valid names: {', '.join(names)}")
    return [layer for layer in layers if any(fnmatch.fnmatchcase(layer.name, p)
                                             for p in patterns)]


# The fields of ``--conv N,C,H,W,O,k,s,p``: (letter, meaning, smallest value).
CONV_FIELDS = (("N", "batch", 1), ("C", "in_channels", 1), ("H", "height", 1),
               ("W", "width", 1), ("O", "out_channels", 1), ("k", "kernel", 1),
               ("s", "stride", 1), ("p", "padding", 0))


def _integer_fields(text, fields):
    """{letter: value} of the comma-separated integers in `text`, one per (letter, meaning,
    least) of `fields`; a BenchError naming the field for a wrong count, a non-integer or
    a value below its least."""
    parts = [part.strip() for part in str(text).split(",")]
    letters = ",".join(letter for letter, _, _ in fields)
    if len(parts) != len(fields):
        raise BenchError(f"expected {len(fields)} comma-separated integers {letters}, "
                         f"got {len(parts)} in {text!r}")
    values = {}
    for part, (letter, meaning, least) in zip(parts, fields):
        try:
            value = int(part)
        except ValueError:
            value = None
        if value is None or value < least:
            raise BenchError(f"field {letter} ({meaning}) must be an integer >= {least}, "
                             f"got {part!r} in {text!r}")
        values[letter] = value
    return values


def parse_conv(text):
    """A user's layer from a ``--conv N,C,H,W,O,k,s,p`` value.

    Parameters
    ----------
    text : str
        Eight comma-separated integers: batch N, input channels C, image height H and
        width W, output channels O, square kernel k, stride s, symmetric padding p
        (p ≥ 0, the others ≥ 1).

    Returns
    -------
    Layer
        Named ``user.N4.C3.H32.W32.O16.k3.s1.p1`` (for ``4,3,32,32,16,3,1,1``), run at
        batch N unless ``--batch`` says otherwise.

    Raises
    ------
    BenchError
        Not eight fields, a field that is not an integer or is too small (the message names
        it), or a kernel larger than the padded image.
    """
    values = _integer_fields(text, CONV_FIELDS)
    kernel, padding = values["k"], values["p"]
    for letter in ("H", "W"):
        if values[letter] + 2 * padding < kernel:
            raise BenchError(f"kernel k={kernel} is larger than the padded image "
                             f"({letter}={values[letter]} + 2*p={2 * padding}) in {text!r}")
    name = "user." + ".".join(f"{letter}{values[letter]}" for letter, _, _ in CONV_FIELDS)
    return Layer(name=name, in_channels=values["C"], size=values["H"],
                 out_channels=values["O"], kernel=kernel, stride=values["s"],
                 padding=padding, batches=(values["N"],), width=values["W"])


@dataclass(frozen=True)
class Case:
    """One layer at one batch size, the unit every section times."""

    layer: Layer
    batch: int

    def image_shape(self, layout):
        n, c = self.batch, self.layer.in_channels
        h, w = self.layer.image_size
        return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)

    def column_shape(self, layout):
        k, (oh, ow) = self.layer.kernel, self.layer.out_image_size
        rows = self.layer.in_channels * k * k
        return (self.batch, rows, oh * ow) if layout == "NCHW" else (self.batch, oh * ow, rows)

    def window_args(self):
        """Keyword arguments shared by every im2col/col2im implementation."""
        layer = self.layer
        return {"kernel_size": layer.kernel, "stride": layer.stride, "padding": layer.padding}

    def conv_args(self):
        """Keyword arguments shared by every conv2d / conv2d_backward implementation."""
        layer = self.layer
        return {"stride": layer.stride, "padding": layer.padding, "groups": layer.groups}

    def geometry(self, layout):
        """The layer's :class:`fastconv.ConvGeometry` at this batch size."""
        layer = self.layer
        return fastconv.ConvGeometry(self.image_shape(layout), layer.out_channels,
                                     layer.kernel, layer.stride, layer.padding,
                                     groups=layer.groups, layout=layout)

    def __str__(self):
        return f"{self.layer.name} batch {self.batch}"


# R-MAC describes the last feature map of a network: the maps below, not the conv layers.
@dataclass(frozen=True)
class FeatureMap:
    """A CNN feature map R-MAC is computed on."""

    name: str
    channels: int
    height: int
    width: int


# ResNet-50 res5 on a 224×320 image and VGG-16 conv5 on a 480×640 one.
RMAC_MAPS = (FeatureMap("resnet50.res5", 2048, 7, 10), FeatureMap("vgg16.conv5", 512, 30, 40))
RMAC_BATCHES = (8,)


@dataclass(frozen=True)
class MapCase:
    """One feature map at one batch size (``layer`` names it in the table, like a Case)."""

    layer: FeatureMap
    batch: int

    def image_shape(self, layout):
        n, c, h, w = self.batch, self.layer.channels, self.layer.height, self.layer.width
        return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)

    def __str__(self):
        return f"{self.layer.name} batch {self.batch}"


# ------------------------------------------------------------------ 1-D signals (§6)
@dataclass(frozen=True)
class Signal:
    """One 1-D convolution layer: `in_channels` signals of `length` samples, `out_channels`
    filters of `kernel` taps, symmetric `padding`."""

    name: str
    in_channels: int
    length: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    batches: tuple = (8,)

    @property
    def out_length(self):
        return (self.length + 2 * self.padding - self.kernel) // self.stride + 1


# Issue 17's 1-D targets: 64 → 64 channels over 1 s of 16 kHz audio features, kernels 3 and
# 9; and an audio front end, 25 ms windows (400 taps) every 10 ms (stride 160) over 10 s.
SIGNALS = (
    Signal("conv1d.64to64.k3", 64, 16000, 64, 3, 1, 1),
    Signal("conv1d.64to64.k9", 64, 16000, 64, 9, 1, 4),
    Signal("audio.frontend", 1, 160000, 64, 400, 160, 0),
)

# The fields of ``--conv1d N,C,L,O,k,s,p``: (letter, meaning, smallest value).
CONV1D_FIELDS = (("N", "batch", 1), ("C", "in_channels", 1), ("L", "length", 1),
                 ("O", "out_channels", 1), ("k", "kernel", 1), ("s", "stride", 1),
                 ("p", "padding", 0))


def parse_conv1d(text):
    """A user's 1-D layer from a ``--conv1d N,C,L,O,k,s,p`` value.

    Parameters
    ----------
    text : str
        Seven comma-separated integers: batch N, input channels C, length L, output
        channels O, kernel k, stride s, symmetric padding p (p ≥ 0, the others ≥ 1).

    Returns
    -------
    Signal
        Named ``user1d.N8.C64.L16000.O64.k3.s1.p1`` (for ``8,64,16000,64,3,1,1``), run at
        batch N unless ``--batch`` says otherwise.

    Raises
    ------
    BenchError
        Not seven fields, a field that is not an integer or is too small (the message
        names it), or a kernel longer than the padded signal.
    """
    values = _integer_fields(text, CONV1D_FIELDS)
    if values["L"] + 2 * values["p"] < values["k"]:
        raise BenchError(f"kernel k={values['k']} is longer than the padded signal "
                         f"(L={values['L']} + 2*p={2 * values['p']}) in {text!r}")
    name = "user1d." + ".".join(f"{letter}{values[letter]}" for letter, _, _ in CONV1D_FIELDS)
    return Signal(name=name, in_channels=values["C"], length=values["L"],
                  out_channels=values["O"], kernel=values["k"], stride=values["s"],
                  padding=values["p"], batches=(values["N"],))


def layout_1d(layout):
    """The 1-D layout of a bench layout: NCHW (channels first) → NCL, NHWC → NLC."""
    return "NCL" if layout.upper() in ("NCHW", "NCL") else "NLC"


@dataclass(frozen=True)
class SignalCase:
    """One 1-D layer at one batch size (``layer`` names it in the table, like a Case)."""

    layer: Signal
    batch: int

    def image_shape(self, layout):
        """The input (N, C, L) channels-first or (N, L, C) channels-last."""
        n, c, length = self.batch, self.layer.in_channels, self.layer.length
        return (n, c, length) if layout_1d(layout) == "NCL" else (n, length, c)

    def output_shape(self, layout):
        n, o, length = self.batch, self.layer.out_channels, self.layer.out_length
        return (n, o, length) if layout_1d(layout) == "NCL" else (n, length, o)

    def weight_shape(self, layout):
        """OIL (C_out, C_in, k) or LIO (k, C_in, C_out)."""
        layer = self.layer
        if layout_1d(layout) == "NCL":
            return (layer.out_channels, layer.in_channels, layer.kernel)
        return (layer.kernel, layer.in_channels, layer.out_channels)

    def conv_args(self):
        return {"stride": self.layer.stride, "padding": self.layer.padding}

    @property
    def flops(self):
        """2 × multiply-adds (bias excluded)."""
        layer = self.layer
        return (2 * self.batch * layer.out_channels * layer.in_channels * layer.kernel
                * layer.out_length)

    def column_elements(self):
        """Elements of the whole batch's column matrix (C·k × L_out per signal)."""
        layer = self.layer
        return self.batch * layer.in_channels * layer.kernel * layer.out_length

    def __str__(self):
        return f"{self.layer.name} batch {self.batch}"


# ------------------------------------------------------------------ 3-D volumes (§6)
@dataclass(frozen=True)
class Volume:
    """One 3-D convolution layer: `in_channels` volumes of `size` (D, H, W), `out_channels`
    filters of kernel³ taps, symmetric `padding` on every axis."""

    name: str
    in_channels: int
    size: tuple
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    batches: tuple = (2,)

    @property
    def out_size(self):
        return tuple((n + 2 * self.padding - self.kernel) // self.stride + 1
                     for n in self.size)


# Issue 17's 3-D target: 32 → 32 channels over 32³ volumes, kernel 3, padding 1, batch 2.
VOLUMES = (
    Volume("conv3d.32to32.k3", 32, (32, 32, 32), 32, 3, 1, 1),
)

# The fields of ``--conv3d N,C,D,H,W,O,k,s,p``: (letter, meaning, smallest value).
CONV3D_FIELDS = (("N", "batch", 1), ("C", "in_channels", 1), ("D", "depth", 1),
                 ("H", "height", 1), ("W", "width", 1), ("O", "out_channels", 1),
                 ("k", "kernel", 1), ("s", "stride", 1), ("p", "padding", 0))


def parse_conv3d(text):
    """A user's 3-D layer from a ``--conv3d N,C,D,H,W,O,k,s,p`` value.

    Parameters
    ----------
    text : str
        Nine comma-separated integers: batch N, input channels C, depth D, height H,
        width W, output channels O, kernel k (k×k×k), stride s, symmetric padding p
        (p ≥ 0, the others ≥ 1).

    Returns
    -------
    Volume
        Named ``user3d.N2.C32.D32.H32.W32.O32.k3.s1.p1`` (for ``2,32,32,32,32,32,3,1,1``),
        run at batch N unless ``--batch`` says otherwise.

    Raises
    ------
    BenchError
        Not nine fields, a field that is not an integer or is too small (the message names
        it), or a kernel larger than a padded axis.
    """
    values = _integer_fields(text, CONV3D_FIELDS)
    for letter in "DHW":
        if values[letter] + 2 * values["p"] < values["k"]:
            raise BenchError(f"kernel k={values['k']} is larger than the padded axis "
                             f"({letter}={values[letter]} + 2*p={2 * values['p']}) in "
                             f"{text!r}")
    name = "user3d." + ".".join(f"{letter}{values[letter]}" for letter, _, _ in CONV3D_FIELDS)
    return Volume(name=name, in_channels=values["C"],
                  size=(values["D"], values["H"], values["W"]), out_channels=values["O"],
                  kernel=values["k"], stride=values["s"], padding=values["p"],
                  batches=(values["N"],))


def layout_3d(layout):
    """The 3-D layout of a bench layout: NCHW (channels first) → NCDHW, NHWC → NDHWC."""
    return "NCDHW" if layout.upper() in ("NCHW", "NCDHW") else "NDHWC"


@dataclass(frozen=True)
class VolumeCase:
    """One 3-D layer at one batch size (``layer`` names it in the table, like a Case)."""

    layer: Volume
    batch: int

    def image_shape(self, layout):
        n, c, size = self.batch, self.layer.in_channels, self.layer.size
        return (n, c, *size) if layout_3d(layout) == "NCDHW" else (n, *size, c)

    def output_shape(self, layout):
        n, o, size = self.batch, self.layer.out_channels, self.layer.out_size
        return (n, o, *size) if layout_3d(layout) == "NCDHW" else (n, *size, o)

    def weight_shape(self, layout):
        """OIDHW or DHWIO."""
        layer, k = self.layer, self.layer.kernel
        if layout_3d(layout) == "NCDHW":
            return (layer.out_channels, layer.in_channels, k, k, k)
        return (k, k, k, layer.in_channels, layer.out_channels)

    def conv_args(self):
        return {"stride": self.layer.stride, "padding": self.layer.padding}

    @property
    def flops(self):
        """2 × multiply-adds (bias excluded)."""
        layer = self.layer
        od, oh, ow = layer.out_size
        return (2 * self.batch * layer.out_channels * layer.in_channels * layer.kernel ** 3
                * od * oh * ow)

    def column_elements(self):
        """Elements of the whole batch's column matrix (C·k³ × OD·OH·OW per volume)."""
        layer = self.layer
        od, oh, ow = layer.out_size
        return self.batch * layer.in_channels * layer.kernel ** 3 * od * oh * ow

    def __str__(self):
        return f"{self.layer.name} batch {self.batch}"
