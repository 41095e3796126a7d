"""asv benchmarks: fastconv.conv2d, conv2d_backward and the Conv2D layer on suite layers.

Parametrised over layout, layer and batch (float32); the shapes are read from
``fastconv/data/layers.json`` in the installed fastconv, the suite that
``python -m fastconv bench`` runs. ``setup`` allocates the inputs (and the ``out=`` buffer
of the forward benchmarks), so only the convolution and its argument checks are timed.

The ``peakmem_`` benchmarks build and warm up a Conv2D layer in ``setup`` and then run
its forward pass with ``out=``: one call and many calls have the same peak memory because
the layer reuses its workspace instead of allocating one per call.
"""
import numpy as np

import fastconv
from fastconv.bench import load_layers

LAYOUTS = ["NCHW", "NHWC"]
LAYERS = ["resnet50.res2.3x3", "resnet50.res4.3x3", "resnet50.res5.1x1", "mobilenet.dw112"]
BATCHES = [1, 8]
DTYPE = np.float32
# Steady-state forward calls made by peakmem_forward_repeated.
REPEATED_CALLS = 10


def layer_geometry(name, batch, layout):
    """(Conv2D arguments, input shape, output shape) of one layer at one batch size."""
    layer = {entry.name: entry for entry in load_layers()}[name]
    c, size, k = layer.in_channels, layer.size, layer.kernel
    out_channels = layer.out_channels
    stride, padding, groups = layer.stride, layer.padding, layer.groups
    out = layer.out_size
    if layout == "NCHW":
        image, output = (batch, c, size, size), (batch, out_channels, out, out)
    else:
        image, output = (batch, size, size, c), (batch, out, out, out_channels)
    args = {"in_channels": c, "out_channels": out_channels, "kernel_size": k,
            "stride": stride, "padding": padding, "groups": groups}
    return args, image, output


class _Conv:
    params = [LAYOUTS, LAYERS, BATCHES]
    param_names = ["layout", "layer", "batch"]

    def _arrays(self, layout, layer, batch, grad=False):
        """Input, weight, bias, output buffer (and with `grad` an output gradient) of the
        case, standard normal."""
        args, image, output = layer_geometry(layer, batch, layout)
        rng = np.random.default_rng(0)
        k, cin_g = args["kernel_size"], args["in_channels"] // args["groups"]
        weight_shape = ((args["out_channels"], cin_g, k, k) if layout == "NCHW"
                        else (k, k, cin_g, args["out_channels"]))
        self.args = args
        self.kwargs = {"stride": args["stride"], "padding": args["padding"],
                       "groups": args["groups"], "layout": layout}
        self.x = rng.standard_normal(image, dtype=DTYPE)
        self.weight = rng.standard_normal(weight_shape, dtype=DTYPE)
        self.bias = rng.standard_normal(args["out_channels"], dtype=DTYPE)
        self.out = np.empty(output, dtype=DTYPE)
        self.grad = rng.standard_normal(output, dtype=DTYPE) if grad else None


class Conv2DForward(_Conv):
    """fastconv.conv2d with bias into a preallocated output."""

    def setup(self, layout, layer, batch):
        self._arrays(layout, layer, batch)

    def time_conv2d(self, layout, layer, batch):
        fastconv.conv2d(self.x, self.weight, self.bias, out=self.out, **self.kwargs)


class Conv2DBackward(_Conv):
    """fastconv.conv2d_backward: input, weight and bias gradients."""

    def setup(self, layout, layer, batch):
        self._arrays(layout, layer, batch, grad=True)

    def time_conv2d_backward(self, layout, layer, batch):
        fastconv.conv2d_backward(self.grad, self.x, self.weight, **self.kwargs)


def _make_layer(args, layout):
    return fastconv.Conv2D(args["in_channels"], args["out_channels"], args["kernel_size"],
                           stride=args["stride"], padding=args["padding"],
                           groups=args["groups"], layout=layout, dtype=DTYPE, seed=0)


class Conv2DLayer(_Conv):
    """A Conv2D training step: forward (out=) then backward, workspace already built."""

    def setup(self, layout, layer, batch):
        self._arrays(layout, layer, batch, grad=True)
        self.layer = _make_layer(self.args, layout)
        self.layer.forward(self.x, out=self.out)  # warm-up: plan and workspace
        self.layer.backward(self.grad)

    def time_forward_backward(self, layout, layer, batch):
        self.layer.forward(self.x, out=self.out)
        self.layer.backward(self.grad)


class Conv2DLayerMemory(_Conv):
    """Peak memory of Conv2D's steady-state forward with out=: the workspace is made by the
    warm-up call in setup, so one call and REPEATED_CALLS calls peak alike."""

    def setup(self, layout, layer, batch):
        self._arrays(layout, layer, batch)
        self.layer = _make_layer(self.args, layout)
        self.layer.forward(self.x, out=self.out)  # warm-up: plan and workspace

    def peakmem_forward(self, layout, layer, batch):
        self.layer.forward(self.x, out=self.out)

    def peakmem_forward_repeated(self, layout, layer, batch):
        for _ in range(REPEATED_CALLS):
            self.layer.forward(self.x, out=self.out)
