"""asv benchmarks: conv2d, conv2d_backward, conv_transpose2d and the Conv2D layer.

Parametrised over layout, dtype, layer, batch and threads; ``setup`` allocates the inputs
(and the ``out=`` buffers), so only the convolution and its argument checks are timed.

The ``peakmem_`` benchmarks build and warm up a Conv2D layer in ``setup`` and then run
its forward (or backward) pass: one call and ten calls peak alike because the layer
reuses its workspace instead of allocating one per call.
"""
import numpy as np

import fastconv

from ._common import BATCHES, DTYPES, LAYOUTS, THREADS, ThreadedBenchmark, random, suite_case

# A 3x3 layer, a pointwise one (a plain GEMM) and a depthwise one (direct loops): small
# enough that `asv run --quick` over the whole grid takes minutes.
LAYERS = ["resnet50.res4.3x3", "resnet50.res5.1x1", "mobilenet.dw112"]
# Steady-state calls made by the *_repeated peak-memory benchmarks.
REPEATED_CALLS = 10


class _Conv(ThreadedBenchmark):
    params = [LAYOUTS, DTYPES, LAYERS, BATCHES, THREADS]
    param_names = ["layout", "dtype", "layer", "batch", "threads"]

    def _arrays(self, layout, dtype, layer, batch, threads):
        """Input, weight, bias, output buffer and output gradient of the case; fastconv
        set to `threads`."""
        case = suite_case(layer, batch)
        geometry = case.geometry(layout)
        self.layer_spec = case.layer
        self.layout, self.dtype = layout, np.dtype(dtype)
        self.geometry = geometry
        self.kwargs = {**case.conv_args(), "layout": layout}
        self.x = random(geometry.input_shape, dtype)
        self.weight = random(geometry.weight_shape, dtype, seed=1)
        self.bias = random(geometry.out_channels, dtype, seed=2)
        self.out = np.empty(geometry.output_shape, dtype=dtype)
        self.grad = random(geometry.output_shape, dtype, seed=3)
        self.use_threads(threads)

    def _layer(self):
        spec = self.layer_spec
        return fastconv.Conv2D(spec.in_channels, spec.out_channels, spec.kernel,
                               stride=spec.stride, padding=spec.padding, groups=spec.groups,
                               layout=self.layout, dtype=self.dtype, seed=0)


class Conv2DForward(_Conv):
    """fastconv.conv2d with bias into a preallocated output."""

    def setup(self, *params):
        self._arrays(*params)

    def time_conv2d(self, *params):
        fastconv.conv2d(self.x, self.weight, self.bias, out=self.out, **self.kwargs)


class Conv2DBackward(_Conv):
    """fastconv.conv2d_backward: input, weight and bias gradients."""

    def setup(self, *params):
        self._arrays(*params)

    def time_conv2d_backward(self, *params):
        fastconv.conv2d_backward(self.grad, self.x, self.weight, **self.kwargs)


class ConvTranspose2D(_Conv):
    """fastconv.conv_transpose2d from the layer's output shape back to its input shape
    (the input gradient of the layer, with bias and out=)."""

    def setup(self, *params):
        self._arrays(*params)
        spec = self.layer_spec
        # The conv weight (OIHW / HWIO) is already the transposed conv's weight
        # ((C_in, C_out/g, kh, kw) / (kh, kw, C_out/g, C_in) with the roles swapped).
        (out_h, _), (in_h, _) = spec.out_image_size, spec.image_size
        output_padding = in_h - ((out_h - 1) * spec.stride - 2 * spec.padding + spec.kernel)
        self.transposed_kwargs = {"stride": spec.stride, "padding": spec.padding,
                                  "output_padding": output_padding, "groups": spec.groups,
                                  "layout": self.layout}
        self.bias_in = random(spec.in_channels, self.dtype, seed=4)
        self.image = np.empty(self.geometry.input_shape, dtype=self.dtype)

    def time_conv_transpose2d(self, *params):
        fastconv.conv_transpose2d(self.grad, self.weight, self.bias_in, out=self.image,
                                  **self.transposed_kwargs)


class Conv2DLayer(_Conv):
    """Conv2D steady state (workspace built in setup): forward with out=, and backward."""

    def setup(self, *params):
        self._arrays(*params)
        self.layer = self._layer()
        self.layer.forward(self.x, out=self.out)  # warm-up: plan and workspace
        self.layer.backward(self.grad)

    def time_forward(self, *params):
        self.layer.forward(self.x, out=self.out)

    def time_backward(self, *params):
        self.layer.backward(self.grad)


class Conv2DLayerMemory(_Conv):
    """Peak memory of Conv2D's steady state: the warm-up calls in setup make the
    workspace, so one call and REPEATED_CALLS calls peak alike (nothing is reallocated).
    One layer: the point is the comparison between the three, not the layer."""

    params = [LAYOUTS, DTYPES, ["resnet50.res4.3x3"], BATCHES, THREADS]

    def setup(self, *params):
        self._arrays(*params)
        self.layer = self._layer()
        self.layer.forward(self.x, out=self.out)  # warm-up: plan and workspace
        self.layer.backward(self.grad)

    def peakmem_forward(self, *params):
        self.layer.forward(self.x, out=self.out)

    def peakmem_forward_repeated(self, *params):
        for _ in range(REPEATED_CALLS):
            self.layer.forward(self.x, out=self.out)

    def peakmem_backward_repeated(self, *params):
        for _ in range(REPEATED_CALLS):
            self.layer.backward(self.grad)
