"""asv benchmarks: fastconv.im2col and fastconv.col2im on ResNet-50 layer shapes.

Parametrised over layout, dtype, layer and batch; ``setup`` allocates the input and the
``out=`` buffer, so only the kernel (and the argument checks) is timed. The shapes are read
from ``fastconv/data/layers.json`` in the installed fastconv, the same suite that
``python -m fastconv bench`` runs.
"""
import numpy as np

import fastconv
from fastconv.bench import Case, load_layers

LAYOUTS = ["NCHW", "NHWC"]
DTYPES = ["float32", "float64"]
LAYERS = ["resnet50.conv1", "resnet50.res3.3x3s2", "resnet50.res4.3x3"]
BATCHES = [1, 8]


def layer_geometry(name, batch, layout):
    """(image shape, column shape, keyword arguments) of one layer at one batch size."""
    case = Case({entry.name: entry for entry in load_layers()}[name], batch)
    return (case.image_shape(layout), case.column_shape(layout),
            {**case.window_args(), "layout": layout})


class _Window:
    params = [LAYOUTS, DTYPES, LAYERS, BATCHES]
    param_names = ["layout", "dtype", "layer", "batch"]

    def _geometry(self, layout, dtype, layer, batch):
        self.image_shape, self.column_shape, self.kwargs = layer_geometry(layer, batch, layout)
        self.rng = np.random.default_rng(0)
        self.dtype = np.dtype(dtype)


class Im2Col(_Window):
    """fastconv.im2col into a preallocated column buffer."""

    def setup(self, layout, dtype, layer, batch):
        self._geometry(layout, dtype, layer, batch)
        self.x = self.rng.standard_normal(self.image_shape, dtype=self.dtype)
        self.cols = np.empty(self.column_shape, dtype=self.dtype)

    def time_im2col(self, layout, dtype, layer, batch):
        fastconv.im2col(self.x, out=self.cols, **self.kwargs)


class Col2Im(_Window):
    """fastconv.col2im into a preallocated image buffer."""

    def setup(self, layout, dtype, layer, batch):
        self._geometry(layout, dtype, layer, batch)
        self.cols = self.rng.standard_normal(self.column_shape, dtype=self.dtype)
        self.image = np.empty(self.image_shape, dtype=self.dtype)
        self.size = self.image_shape[2] if layout == "NCHW" else self.image_shape[1]

    def time_col2im(self, layout, dtype, layer, batch):
        fastconv.col2im(self.cols, (self.size, self.size), out=self.image, **self.kwargs)
