"""asv benchmarks: conv2d, conv2d_backward and the Conv2D layer with each ``algorithm=``.

bench_conv.py times ``algorithm="auto"``, what users get; here the ``algorithm`` parameter
forces "gemm" (im2col or direct loops and GEMMs) or "winograd" on the suite's 3x3 stride-1
layers, so ``asv continuous`` tracks both paths whatever "auto" picks. Otherwise as
bench_conv.py: parametrised over layout, dtype, layer, batch and threads, inputs and
``out=`` buffers made in ``setup``.

``setup`` raises NotImplementedError (asv's skip) where the algorithm cannot run: Winograd
on a layer it does not serve, and either algorithm on a fastconv without the ``algorithm=``
keyword (an older commit under ``asv continuous``).
"""
import inspect

import fastconv

from ._common import BATCHES, DTYPES, LAYOUTS, THREADS, suite_case
from .bench_conv import _Conv

ALGORITHMS = ["gemm", "winograd"]
# ResNet-50's 3x3 stride-1 layers, from a large image with few channels to a small one with
# many (Winograd's gain over GEMM differs along the way), and a 16-channel layer, which
# 'gemm' runs on the direct loops; all cheap enough for `asv run --quick` over the grid.
LAYERS = ["resnet50.res2.3x3", "resnet50.res4.3x3", "resnet50.res5.3x3", "small.16ch"]


def algorithm_blocker(geometry, algorithm):
    """Why fastconv cannot run `geometry` with `algorithm` forced, or None when it can."""
    if "algorithm" not in inspect.signature(fastconv.conv2d).parameters:
        return "this fastconv has no algorithm= keyword"
    if algorithm == "winograd":
        from fastconv.geometry import winograd_blocker  # absent before the keyword

        return winograd_blocker(geometry)
    return None


class _Algorithm(_Conv):
    params = [LAYOUTS, DTYPES, LAYERS, ALGORITHMS, BATCHES, THREADS]
    param_names = ["layout", "dtype", "layer", "algorithm", "batch", "threads"]

    def setup(self, layout, dtype, layer, algorithm, batch, threads):
        # Checked before _arrays sets the threads: asv runs no teardown after a skip.
        blocker = algorithm_blocker(suite_case(layer, batch).geometry(layout), algorithm)
        if blocker is not None:
            raise NotImplementedError(f"algorithm={algorithm!r}: {blocker}")
        self._arrays(layout, dtype, layer, batch, threads)
        self.algorithm = algorithm


class Conv2DForwardAlgorithm(_Algorithm):
    """fastconv.conv2d with bias into a preallocated output, the algorithm forced."""

    def time_conv2d(self, *params):
        fastconv.conv2d(self.x, self.weight, self.bias, out=self.out,
                        algorithm=self.algorithm, **self.kwargs)


class Conv2DBackwardAlgorithm(_Algorithm):
    """fastconv.conv2d_backward, all three gradients; the algorithm decides how the input
    gradient runs (the weight gradient is GEMM either way)."""

    def time_conv2d_backward(self, *params):
        fastconv.conv2d_backward(self.grad, self.x, self.weight, algorithm=self.algorithm,
                                 **self.kwargs)


class Conv2DLayerAlgorithm(_Algorithm):
    """Conv2D made with the algorithm, steady-state forward with out= (the warm-up call in
    setup plans, allocates the workspace and, for Winograd, transforms the weight, which
    the layer keeps)."""

    def setup(self, *params):
        super().setup(*params)
        spec = self.layer_spec
        self.layer = fastconv.Conv2D(spec.in_channels, spec.out_channels, spec.kernel,
                                     stride=spec.stride, padding=spec.padding,
                                     groups=spec.groups, layout=self.layout, dtype=self.dtype,
                                     seed=0, algorithm=self.algorithm)
        self.layer.forward(self.x, out=self.out)

    def time_forward(self, *params):
        self.layer.forward(self.x, out=self.out)
