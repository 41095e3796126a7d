"""asv benchmarks: fastconv.rmac, roi_max_pool and rmac_regions on CNN final feature maps.

The maps are the ones ``python -m fastconv bench --ops rmac`` runs
(``fastconv.bench.suite.RMAC_MAPS``: ResNet-50 res5 2048×7×10 and VGG-16 conv5 512×30×40).
``setup`` makes the feature map (and the region boxes), so only the call is timed;
descriptors per second = batch / time.
``time_numpy_rmac`` times the straightforward NumPy version (one slice and max per region,
``fastconv.bench.baselines.numpy_rmac``) on the same data, for the speed-up.
"""
import numpy as np

import fastconv
from fastconv.bench.baselines import numpy_rmac
from fastconv.bench.suite import RMAC_MAPS

LAYOUTS = ["NCHW", "NHWC"]
DTYPES = ["float32", "float64"]
MAPS = [fmap.name for fmap in RMAC_MAPS]
BATCHES = [1, 8]


def feature_map(name, batch, layout, dtype):
    """Reproducible standard-normal data of one map at one batch size."""
    fmap = {entry.name: entry for entry in RMAC_MAPS}[name]
    c, h, w = fmap.channels, fmap.height, fmap.width
    shape = (batch, c, h, w) if layout == "NCHW" else (batch, h, w, c)
    return np.random.default_rng(0).standard_normal(shape, dtype=np.dtype(dtype))


class RMAC:
    """fastconv.rmac (cirtorch's descriptor, 3 levels) and the NumPy baseline."""

    params = [LAYOUTS, DTYPES, MAPS, BATCHES]
    param_names = ["layout", "dtype", "map", "batch"]

    def setup(self, layout, dtype, name, batch):
        self.x = feature_map(name, batch, layout, dtype)
        fastconv.rmac(self.x, layout=layout)  # builds and caches the region plan

    def time_rmac(self, layout, dtype, name, batch):
        fastconv.rmac(self.x, layout=layout)

    def time_numpy_rmac(self, layout, dtype, name, batch):
        numpy_rmac(self.x, layout=layout)


class RoiMaxPool:
    """fastconv.roi_max_pool over Caffe2's R-MAC regions of the whole batch."""

    params = [LAYOUTS, MAPS, BATCHES]
    param_names = ["layout", "map", "batch"]

    def setup(self, layout, name, batch):
        self.x = feature_map(name, batch, layout, "float32")
        self.rois = fastconv.rmac_regions(self.x, layout=layout)

    def time_roi_max_pool(self, layout, name, batch):
        fastconv.roi_max_pool(self.x, self.rois, layout=layout)


class RMACRegions:
    """fastconv.rmac_regions for a batch of 64 (the per-shape grid is cached)."""

    params = [MAPS]
    param_names = ["map"]

    def setup(self, name):
        fmap = {entry.name: entry for entry in RMAC_MAPS}[name]
        self.shape = (64, fmap.channels, fmap.height, fmap.width)

    def time_rmac_regions(self, name):
        fastconv.rmac_regions(self.shape)
