"""asv: 3-D convolution (issue 17), time and torch ratio, on the bench's 3-D layer.

``fastconv.bench.suite.VOLUMES``: 32 → 32 channels over 32³ volumes, kernel 3, padding 1;
batch 2, float32, two threads, both layouts. ``time_forward`` / ``time_backward`` time
fastconv alone (conv3d with bias into ``out=``; conv3d_backward with the input and weight
gradients); ``track_forward_ratio`` / ``track_backward_ratio`` return torch time ÷
fastconv time from one round-robin measurement (``NotImplementedError``, asv's skip,
without torch; for NDHWC torch runs channels_last_3d). ``time_layer_forward`` /
``time_layer_backward`` are the Conv3D layer's steady state.
"""
import importlib.util

import numpy as np

import fastconv
from fastconv.bench.suite import VOLUMES, VolumeCase

from ._common import best_times, random

NAMES = [volume.name for volume in VOLUMES]
LAYOUTS = ["NCDHW", "NDHWC"]
BATCH = 2
THREADS = 2


class _Conv3D:
    params = [NAMES, LAYOUTS]
    param_names = ["layer", "layout"]

    def setup(self, name, layout):
        volume = {v.name: v for v in VOLUMES}[name]
        case = VolumeCase(volume, BATCH)
        self.volume, self.layout = volume, layout
        self.kwargs = dict(case.conv_args(), layout=layout)
        self.x = random(case.image_shape(layout), "float32")
        self.weight = random(case.weight_shape(layout), "float32", seed=1)
        self.bias = random(volume.out_channels, "float32", seed=2)
        self.grad = random(case.output_shape(layout), "float32", seed=3)
        self.out = np.empty(case.output_shape(layout), np.float32)
        self._threads = fastconv.threads(THREADS)
        self._threads.__enter__()

    def teardown(self, *params):
        self._threads.__exit__(None, None, None)

    def _forward(self):
        fastconv.conv3d(self.x, self.weight, self.bias, out=self.out, **self.kwargs)

    def _backward(self):
        fastconv.conv3d_backward(self.grad, self.x, self.weight, needs_bias_grad=False,
                                 **self.kwargs)

    def _torch(self):
        """torch with THREADS threads, and the inputs as NCDHW / OIDHW tensors
        (channels_last_3d views of the same memory for NDHWC)."""
        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("torch is not installed")
        import torch
        torch.set_num_threads(THREADS)
        if self.layout == "NCDHW":
            return torch, *(torch.from_numpy(a) for a in (self.x, self.weight, self.bias,
                                                           self.grad))
        w = np.ascontiguousarray(self.weight.transpose(4, 0, 1, 2, 3))
        return (torch, torch.from_numpy(self.x).permute(0, 4, 1, 2, 3),
                torch.from_numpy(w).permute(0, 4, 1, 2, 3), torch.from_numpy(self.bias),
                torch.from_numpy(self.grad).permute(0, 4, 1, 2, 3))


class Conv3DForward(_Conv3D):
    """fastconv.conv3d with bias into a preallocated output."""

    def time_forward(self, *params):
        self._forward()

    def track_forward_ratio(self, *params):
        torch, x, w, b, _ = self._torch()
        s, p = self.volume.stride, self.volume.padding
        fast, slow = best_times([self._forward,
                            lambda: torch.nn.functional.conv3d(x, w, b, stride=s, padding=p)])
        return slow / fast


class Conv3DBackward(_Conv3D):
    """fastconv.conv3d_backward: input and weight gradients."""

    def time_backward(self, *params):
        self._backward()

    def track_backward_ratio(self, *params):
        torch, x, w, _, g = self._torch()
        s, p = self.volume.stride, self.volume.padding
        backward = torch.ops.aten.convolution_backward
        fast, slow = best_times([self._backward,
                            lambda: backward(g, x, w, None, [s] * 3, [p] * 3, [1] * 3, False,
                                             [0] * 3, 1, [True, True, False])])
        return slow / fast


class Conv3DLayer(_Conv3D):
    """Conv3D steady state (workspace built in setup): forward with out=, and backward."""

    def setup(self, name, layout):
        super().setup(name, layout)
        volume = self.volume
        self.layer = fastconv.Conv3D(volume.in_channels, volume.out_channels, volume.kernel,
                                     volume.stride, volume.padding, layout=layout, seed=0)
        self.layer.forward(self.x, out=self.out)
        self.layer.backward(self.grad)

    def time_layer_forward(self, *params):
        self.layer.forward(self.x, out=self.out)

    def time_layer_backward(self, *params):
        self.layer.backward(self.grad)
