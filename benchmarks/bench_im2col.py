"""asv benchmarks: im2col, col2im and their gradients im2col_backward, col2im_backward.

Parametrised over layout, dtype, layer (ResNet-50 shapes), batch and threads; ``setup``
allocates the input and the ``out=`` buffer, so only the kernel (and the argument checks)
is timed.
"""
import numpy as np

import fastconv

from ._common import BATCHES, DTYPES, LAYOUTS, THREADS, ThreadedBenchmark, random, suite_case

# The 7x7 stride-2 stem (large columns) and a 3x3 layer with many channels.
LAYERS = ["resnet50.conv1", "resnet50.res4.3x3"]


class _Window(ThreadedBenchmark):
    params = [LAYOUTS, DTYPES, LAYERS, BATCHES, THREADS]
    param_names = ["layout", "dtype", "layer", "batch", "threads"]

    def _geometry(self, layout, dtype, layer, batch, threads):
        """Image and column shapes, window keywords; fastconv set to `threads`."""
        case = suite_case(layer, batch)
        self.image_shape = case.image_shape(layout)
        self.column_shape = case.column_shape(layout)
        self.size = case.layer.image_size
        self.kwargs = {**case.window_args(), "layout": layout}
        self.dtype = np.dtype(dtype)
        self.use_threads(threads)


class Im2Col(_Window):
    """fastconv.im2col into a preallocated column buffer."""

    def setup(self, *params):
        self._geometry(*params)
        self.x = random(self.image_shape, self.dtype)
        self.cols = np.empty(self.column_shape, dtype=self.dtype)

    def time_im2col(self, *params):
        fastconv.im2col(self.x, out=self.cols, **self.kwargs)


class Col2Im(_Window):
    """fastconv.col2im into a preallocated image buffer."""

    def setup(self, *params):
        self._geometry(*params)
        self.cols = random(self.column_shape, self.dtype)
        self.image = np.empty(self.image_shape, dtype=self.dtype)

    def time_col2im(self, *params):
        fastconv.col2im(self.cols, self.size, out=self.image, **self.kwargs)


class Im2ColBackward(_Window):
    """fastconv.im2col_backward (the column gradient folded back onto the image)."""

    def setup(self, *params):
        self._geometry(*params)
        self.grad_cols = random(self.column_shape, self.dtype)
        self.grad_image = np.empty(self.image_shape, dtype=self.dtype)

    def time_im2col_backward(self, *params):
        fastconv.im2col_backward(self.grad_cols, self.image_shape, out=self.grad_image,
                                 **self.kwargs)


class Col2ImBackward(_Window):
    """fastconv.col2im_backward (the image gradient unfolded into columns)."""

    def setup(self, *params):
        self._geometry(*params)
        self.grad_image = random(self.image_shape, self.dtype)
        self.grad_cols = np.empty(self.column_shape, dtype=self.dtype)

    def time_col2im_backward(self, *params):
        fastconv.col2im_backward(self.grad_image, out=self.grad_cols, **self.kwargs)
