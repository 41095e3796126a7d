"""asv benchmarks: space_to_batch / batch_to_space, and atrous_conv2d against conv2d(dilation).

SpaceToBatch / BatchToSpace move a DeepLab-sized activation (8 images, 256 channels, 64×64,
or 65×65 padded by one pixel bottom/right to fit the block) into a preallocated ``out=``
buffer, next to ``numpy.copyto`` of the same bytes: the memory-copy bandwidth that a pure
data-movement kernel is measured against. Atrous times the two routes to a dilated 3×3
convolution, 256 → 256 channels on 65×65 ("same" padding), at rates 2 and 4.
"""
import numpy as np

import fastconv

LAYOUTS = ["NCHW", "NHWC"]
DTYPES = ["float32", "float64"]
SIZES = [64, 65]
BLOCKS = [2, 4]


def image_shape(batch, channels, size, layout):
    return (batch, channels, size, size) if layout == "NCHW" else (batch, size, size, channels)


def fitting_padding(size, block):
    """Bottom/right padding that makes `size` divisible by `block`."""
    extra = -size % block
    return ((0, extra), (0, extra))


class _Blocks:
    params = [LAYOUTS, DTYPES, SIZES, BLOCKS]
    param_names = ["layout", "dtype", "size", "block"]

    def _setup(self, layout, dtype, size, block):
        rng = np.random.default_rng(0)
        self.padding = fitting_padding(size, block)
        self.image = rng.standard_normal(image_shape(8, 256, size, layout)).astype(dtype)
        self.blocks = fastconv.space_to_batch(self.image, block, self.padding, layout=layout)


class SpaceToBatch(_Blocks):
    """fastconv.space_to_batch into a preallocated buffer, and its peer: numpy.copyto of
    the same bytes."""

    def setup(self, layout, dtype, size, block):
        self._setup(layout, dtype, size, block)
        self.out = np.empty_like(self.blocks)
        self.source = np.ones_like(self.blocks)

    def time_space_to_batch(self, layout, dtype, size, block):
        fastconv.space_to_batch(self.image, block, self.padding, layout=layout, out=self.out)

    def time_copyto_same_bytes(self, layout, dtype, size, block):
        np.copyto(self.out, self.source)


class BatchToSpace(_Blocks):
    """fastconv.batch_to_space (crops = the padding) into a preallocated buffer."""

    def setup(self, layout, dtype, size, block):
        self._setup(layout, dtype, size, block)
        self.out = np.empty_like(self.image)

    def time_batch_to_space(self, layout, dtype, size, block):
        fastconv.batch_to_space(self.blocks, block, self.padding, layout=layout, out=self.out)


class Atrous:
    """A DeepLab-style dilated 3×3 layer: atrous_conv2d (space_to_batch → conv2d →
    batch_to_space) vs conv2d(dilation=rate) (dilated im2col + GEMM)."""

    params = [LAYOUTS, [2, 4], [1, 4]]
    param_names = ["layout", "rate", "batch"]
    timeout = 120

    def setup(self, layout, rate, batch):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(image_shape(batch, 256, 65, layout), dtype=np.float32)
        shape = (256, 256, 3, 3) if layout == "NCHW" else (3, 3, 256, 256)
        self.weight = (rng.standard_normal(shape, dtype=np.float32) / 48).astype(np.float32)

    def time_atrous_conv2d(self, layout, rate, batch):
        fastconv.atrous_conv2d(self.x, self.weight, rate, padding="same", layout=layout)

    def time_conv2d_dilated(self, layout, rate, batch):
        fastconv.conv2d(self.x, self.weight, padding="same", dilation=rate, layout=layout)
