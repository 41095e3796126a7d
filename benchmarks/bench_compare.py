"""asv: the performance targets of ``python -m fastconv bench --compare`` as tracked ratios.

Each ``track_`` benchmark measures one (layer, batch, layout) of the suite with
:func:`fastconv.bench.compare.measure_case` and returns one ratio, so ``asv continuous`` flags a
regression of fastconv *relative to* its peers and the bare GEMM rather than of raw time
(which moves with the machine):

* ``track_forward_ratio``: peer forward time / fastconv forward time (the peer is torch's
  conv2d when installed, else the NumPy baseline);
* ``track_backward_ratio``: the same for the three gradients;
* ``track_gemm_efficiency``: bare sgemm time / fastconv forward time;
* ``track_thread_speedup``: fastconv forward on one thread / on two.

A case is measured once per parameter set (in ``setup``) and the four tracks read it.
"""
from fastconv.bench import compare

LAYOUTS = ["NCHW", "NHWC"]
LAYERS = ["resnet50.res2.3x3", "resnet50.res4.3x3", "resnet50.res5.1x1", "vgg16.conv1_1",
          "small.16ch", "mobilenet.dw112"]
BATCHES = [1, 8]
THREADS = 2


class CompareTargets:
    params = [LAYOUTS, LAYERS, BATCHES]
    param_names = ["layout", "layer", "batch"]
    timeout = 300
    unit = "ratio"

    def setup(self, layout, layer, batch):
        configs = compare.make_compare_config(layers=[layer], batches=[batch],
                                              layouts=(layout,), threads=THREADS)
        (config,) = configs
        (case,) = config.layer_cases()
        self.row = compare.measure(case, config)

    def track_forward_ratio(self, layout, layer, batch):
        return self.row.forward_ratio

    def track_backward_ratio(self, layout, layer, batch):
        return self.row.backward_ratio

    def track_gemm_efficiency(self, layout, layer, batch):
        return self.row.gemm_efficiency

    def track_thread_speedup(self, layout, layer, batch):
        return self.row.thread_speedup
