"""asv: 1-D convolution (issue 17), time and torch ratio, on the bench's 1-D layers.

``fastconv.bench.suite.SIGNALS``: 64 → 64 channels over 16 000 samples with kernels 3 and
9 (stride 1, "same"-sized padding) and the audio front end 1 → 64, kernel 400, stride 160
over 160 000 samples; batch 8, float32, two threads, both layouts. ``time_forward`` /
``time_backward`` time fastconv alone (conv1d with bias into ``out=``; conv1d_backward with
the three gradients); ``track_forward_ratio`` / ``track_backward_ratio`` return torch time
÷ fastconv time from one round-robin measurement (``NotImplementedError``, asv's skip,
without torch; torch runs NCL). ``time_layer_forward`` is the Conv1D layer's steady state.
"""
import importlib.util

import numpy as np

import fastconv
from fastconv.bench.suite import SIGNALS, SignalCase

from ._common import best_times, random

NAMES = [signal.name for signal in SIGNALS]
LAYOUTS = ["NCL", "NLC"]
BATCH = 8
THREADS = 2


class _Conv1D:
    params = [NAMES, LAYOUTS]
    param_names = ["layer", "layout"]

    def setup(self, name, layout):
        signal = {s.name: s for s in SIGNALS}[name]
        case = SignalCase(signal, BATCH)
        self.signal, self.layout = signal, layout
        self.kwargs = dict(case.conv_args(), layout=layout)
        self.x = random(case.image_shape(layout), "float32")
        self.weight = random(case.weight_shape(layout), "float32", seed=1)
        self.bias = random(signal.out_channels, "float32", seed=2)
        self.grad = random(case.output_shape(layout), "float32", seed=3)
        self.out = np.empty(case.output_shape(layout), np.float32)
        self._threads = fastconv.threads(THREADS)
        self._threads.__enter__()

    def teardown(self, *params):
        self._threads.__exit__(None, None, None)

    def _forward(self):
        fastconv.conv1d(self.x, self.weight, self.bias, out=self.out, **self.kwargs)

    def _backward(self):
        fastconv.conv1d_backward(self.grad, self.x, self.weight, **self.kwargs)

    def _torch(self):
        """torch with THREADS threads, and the inputs as NCL / OIL tensors."""
        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("torch is not installed")
        import torch
        torch.set_num_threads(THREADS)

        def ncl(array, weight=False):
            if self.layout == "NCL":
                return torch.from_numpy(array)
            axes = (2, 1, 0) if weight else (0, 2, 1)
            return torch.from_numpy(np.ascontiguousarray(array.transpose(axes)))
        return torch, ncl(self.x), ncl(self.weight, weight=True), torch.from_numpy(
            self.bias), ncl(self.grad)


class Conv1DForward(_Conv1D):
    """fastconv.conv1d with bias into a preallocated output."""

    def time_forward(self, *params):
        self._forward()

    def track_forward_ratio(self, *params):
        torch, x, w, b, _ = self._torch()
        s, p = self.signal.stride, self.signal.padding
        fast, slow = best_times([self._forward,
                            lambda: torch.nn.functional.conv1d(x, w, b, stride=s, padding=p)])
        return slow / fast


class Conv1DBackward(_Conv1D):
    """fastconv.conv1d_backward: input, weight and bias gradients."""

    def time_backward(self, *params):
        self._backward()

    def track_backward_ratio(self, *params):
        torch, x, w, _, g = self._torch()
        s, p = self.signal.stride, self.signal.padding
        backward = torch.ops.aten.convolution_backward
        fast, slow = best_times([self._backward,
                            lambda: backward(g, x, w, [w.shape[0]], [s], [p], [1], False, [0],
                                             1, [True, True, True])])
        return slow / fast


class Conv1DLayer(_Conv1D):
    """Conv1D steady state (workspace built in setup): forward with out=, and backward."""

    def setup(self, name, layout):
        super().setup(name, layout)
        signal = self.signal
        self.layer = fastconv.Conv1D(signal.in_channels, signal.out_channels, signal.kernel,
                                     signal.stride, signal.padding, layout=layout, seed=0)
        self.layer.forward(self.x, out=self.out)
        self.layer.backward(self.grad)

    def time_layer_forward(self, *params):
        self.layer.forward(self.x, out=self.out)

    def time_layer_backward(self, *params):
        self.layer.backward(self.grad)
