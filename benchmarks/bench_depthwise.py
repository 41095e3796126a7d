"""asv: depthwise convolutions of several kernel sizes (issue 16), time and torch ratio.

MobileNet / EfficientNet-style depthwise layers: 3×3, 5×5 and the asymmetric 1×7 and 7×1
at 14×14 with 576 channels (deep channels, small planes), and 5×5 at 112×112 with 32
channels, stride 1 and 2, both layouts, float32, two threads. ``time_forward`` /
``time_backward`` time fastconv alone (conv2d; conv2d_backward with input and weight
gradients); ``track_forward_ratio`` / ``track_backward_ratio`` return torch time ÷ fastconv
time from one round-robin measurement (``NotImplementedError``, asv's skip, without torch).
"""
import importlib.util

import numpy as np

import fastconv

from ._common import best_times, random

# (channels, image side, kernel (kh, kw), stride)
CASES = ["576@14 3x3 s1", "576@14 5x5 s1", "576@14 1x7 s1", "576@14 7x1 s1",
         "32@112 5x5 s1", "240@28 5x5 s2"]
LAYOUTS = ["NCHW", "NHWC"]
BATCHES = [1, 8]
THREADS = 2


def _parse(case):
    channels_size, kernel, stride = case.split()
    channels, size = (int(v) for v in channels_size.split("@"))
    kh, kw = (int(v) for v in kernel.split("x"))
    return channels, size, (kh, kw), int(stride[1:])


class _Depthwise:
    params = [CASES, LAYOUTS, BATCHES]
    param_names = ["case", "layout", "batch"]

    def setup(self, case, layout, batch):
        channels, size, kernel, stride = _parse(case)
        padding = (kernel[0] // 2, kernel[1] // 2)
        shape = (batch, channels, size, size) if layout == "NCHW" else (batch, size, size,
                                                                         channels)
        geometry = fastconv.ConvGeometry(shape, channels, kernel, stride, padding,
                                         groups=channels, layout=layout)
        self.kwargs = dict(stride=stride, padding=padding, groups=channels, layout=layout)
        self.x = random(geometry.input_shape, "float32")
        self.weight = random(geometry.weight_shape, "float32", seed=1)
        self.grad = random(geometry.output_shape, "float32", seed=2)
        self.layout, self.stride, self.padding, self.channels = layout, stride, padding, channels
        self._threads = fastconv.threads(THREADS)
        self._threads.__enter__()

    def teardown(self, *params):
        self._threads.__exit__(None, None, None)

    def _forward(self):
        fastconv.conv2d(self.x, self.weight, **self.kwargs)

    def _backward(self):
        fastconv.conv2d_backward(self.grad, self.x, self.weight, needs_bias_grad=False,
                                 **self.kwargs)

    def _torch(self):
        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("torch is not installed")
        import torch
        torch.set_num_threads(THREADS)
        to_nchw = (lambda a: a) if self.layout == "NCHW" else (
            lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
        weight = self.weight if self.layout == "NCHW" else self.weight.transpose(3, 2, 0, 1)
        tensors = [torch.from_numpy(np.ascontiguousarray(a))
                   for a in (to_nchw(self.x), weight, to_nchw(self.grad))]
        if self.layout == "NHWC":
            tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
        x, w, g = tensors
        args = ((self.stride,) * 2, self.padding, (1, 1), False, (0, 0), self.channels)
        return (lambda: torch.nn.functional.conv2d(x, w, stride=self.stride,
                                                   padding=self.padding, groups=self.channels),
                lambda: torch.ops.aten.convolution_backward(g, x, w, None, *args,
                                                            (True, True, False)))


class DepthwiseForward(_Depthwise):
    def time_forward(self, *params):
        self._forward()

    def track_forward_ratio(self, *params):
        theirs, _ = self._torch()
        ours, peer = best_times([self._forward, theirs], rounds=7)
        return peer / ours

    track_forward_ratio.unit = "ratio"


class DepthwiseBackward(_Depthwise):
    def time_backward(self, *params):
        self._backward()

    def track_backward_ratio(self, *params):
        _, theirs = self._torch()
        ours, peer = best_times([self._backward, theirs], rounds=7)
        return peer / ours

    track_backward_ratio.unit = "ratio"
