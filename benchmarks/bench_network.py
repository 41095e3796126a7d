"""asv: whole networks' convolution time, fastconv against torch, as tracked ratios.

The measurement of ``python -m fastconv bench --network NAME``: every convolution of
ResNet-50, VGG-16 and MobileNetV2 (``fastconv/data/networks.json``), timed round-robin with
torch, summed over the network as count x time of one call
(:func:`fastconv.bench.network.measure`). Each ``track_`` benchmark returns one
whole-network ratio, torch time / fastconv time (> 1: fastconv faster), so ``asv
continuous`` flags a regression of fastconv *relative to* torch rather than of raw time:

* ``NetworkForward.track_forward_ratio``: ``conv2d`` (algorithm="auto", no bias) against
  ``F.conv2d``;
* ``NetworkBackward.track_backward_ratio``: ``conv2d_backward`` (input and weight
  gradients) against torch's ``convolution_backward`` with the same gradients.

Per network, batch and layout (NHWC: torch's channels_last), float32, two threads. Each
class times only its own pass, once per parameter set (in ``setup``). ``setup`` raises
NotImplementedError (asv's skip) without torch, and on a fastconv without the
``--network`` benchmark (an older commit under ``asv continuous``).
"""
try:
    from fastconv.bench import network
except ImportError:  # a fastconv older than the --network benchmark
    network = None

NETWORKS = ["resnet50", "vgg16", "mobilenetv2"]
BATCHES = [1, 8]
LAYOUTS = ["NCHW", "NHWC"]
THREADS = 2


class _Network:
    params = [NETWORKS, BATCHES, LAYOUTS]
    param_names = ["network", "batch", "layout"]
    timeout = 600  # VGG-16 at batch 8: ~10 s forward, ~25 s backward on two cores
    unit = "ratio"
    passes = ()

    def setup(self, name, batch, layout):
        if network is None:
            raise NotImplementedError("this fastconv has no fastconv.bench.network")
        config = network.make_network_config(networks=[name], batches=[batch],
                                             layouts=[layout], threads=THREADS)
        if config.torch is None:
            raise NotImplementedError("torch is not installed")
        self.total = network.measure(name, batch, layout, config, passes=self.passes)[1]


class NetworkForward(_Network):
    """Whole-network forward: torch F.conv2d time / fastconv conv2d time."""

    passes = ("forward",)

    def track_forward_ratio(self, name, batch, layout):
        return self.total.forward_ratio


class NetworkBackward(_Network):
    """Whole-network backward (input and weight gradients): torch / fastconv."""

    passes = ("backward",)

    def track_backward_ratio(self, name, batch, layout):
        return self.total.backward_ratio
