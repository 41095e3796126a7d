"""asv benchmarks: padding modes (docs/spec.md §6) on the Conv2D layer and conv2d_backward.

Parametrised over the padding mode ("zeros" is the baseline the others are compared with:
issue 17 wants "reflect" within 10% of it), layout, layer and batch, float32 and fastconv's
default threads. The layers cover each way a mode is read: Winograd's input tiles (3x3),
im2col columns (the 7x7 stride-2 stem), and the depthwise channel-block tiles.
"""
import numpy as np

import fastconv

from ._common import LAYOUTS, random, suite_case

MODES = ["zeros", "reflect", "replicate", "circular"]
LAYERS = ["resnet50.conv1", "resnet50.res4.3x3", "vgg16.conv4_2", "mobilenet.dw112"]
BATCHES = [1, 8]


class _Padded:
    params = [MODES, LAYOUTS, LAYERS, BATCHES]
    param_names = ["padding_mode", "layout", "layer", "batch"]

    def setup(self, padding_mode, layout, layer, batch):
        case = suite_case(layer, batch)
        spec = case.layer
        geometry = case.geometry(layout)
        self.layer = fastconv.Conv2D(spec.in_channels, spec.out_channels, spec.kernel,
                                     stride=spec.stride, padding=spec.padding,
                                     groups=spec.groups, layout=layout, seed=0,
                                     padding_mode=padding_mode)
        self.kwargs = {**case.conv_args(), "layout": layout, "padding_mode": padding_mode}
        self.x = random(geometry.input_shape, np.float32)
        self.out = np.empty(geometry.output_shape, np.float32)
        self.grad = random(geometry.output_shape, np.float32, seed=3)
        self.layer.forward(self.x, out=self.out)  # plans and allocates the workspace


class LayerForward(_Padded):
    """Conv2D forward (steady state, out=) with each padding mode."""

    def time_forward(self, *params):
        self.layer.forward(self.x, out=self.out)


class Conv2DBackward(_Padded):
    """conv2d_backward (input, weight and bias gradients) with each padding mode: a mode's
    input gradient runs on the padded image and is folded back."""

    def time_backward(self, *params):
        fastconv.conv2d_backward(self.grad, self.x, self.layer.weight, **self.kwargs)
