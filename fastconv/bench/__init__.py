"""The benchmark behind ``python -m fastconv bench``: fastconv timed against NumPy and torch.

Shapes come from the layer suite ``fastconv/data/layers.json`` (ResNet-50, VGG-16,
MobileNet layers) or the user's ``--conv`` layers, the 1-D layers of issue 17 or the
user's ``--conv1d`` ones, and its 3-D layer or the user's ``--conv3d`` ones. For each case
fastconv (with a preallocated ``out=`` where it has one) is timed against a plain NumPy
baseline and, when torch is installed, against torch; ``--compare`` instead checks the
performance targets. fastconv runs with ``algorithm="auto"``; on Winograd-eligible layers
(3×3, stride 1, dilation 1, not depthwise) the convolutions are also timed with
``algorithm="gemm"`` and ``algorithm="winograd"`` forced, shown side by side in a second
table. ``--network NAME`` instead times every convolution of ResNet-50, VGG-16 or
MobileNetV2 against torch and sums them over the network.

Modules, from the bottom up:

* :mod:`~fastconv.bench.suite` — the layer suite, the ``--conv`` parser, layer selection;
* :mod:`~fastconv.bench.timing` — best-of timing sampled round-robin, settling other
  threads, the thread limits of a run;
* :mod:`~fastconv.bench.baselines` — the NumPy and torch peers;
  :mod:`~fastconv.bench.ceiling` — the bare-GEMM ceiling;
  :mod:`~fastconv.bench.algorithms` — which ``algorithm=`` values a layer is timed with;
* :mod:`~fastconv.bench.measure` — one case timed and checked, as a table row;
* :mod:`~fastconv.bench.sections` — the sections and the run over them;
  :mod:`~fastconv.bench.config` — what a run measures;
* :mod:`~fastconv.bench.report` — the table and the JSON document;
  :mod:`~fastconv.bench.plot` — the ``--plot`` chart;
* :mod:`~fastconv.bench.compare` — ``--compare``'s targets;
  :mod:`~fastconv.bench.network` — ``--network``'s whole networks
  (``fastconv/data/networks.json``) against torch;
  :mod:`~fastconv.bench.cli` — the ``bench`` options and runs.

Used from Python::

    from fastconv import bench
    config = bench.make_config(layers=["resnet50.res4.3x3"], batches=[1])
    rows = bench.run(config)
    print(bench.format_table(rows, config))
"""
from fastconv.bench.baselines import (
                                      numpy_col2im,
                                      numpy_conv2d,
                                      numpy_conv2d_backward,
                                      numpy_conv3d,
                                      numpy_conv3d_backward,
                                      numpy_im2col,
                                      numpy_rmac,
                                      numpy_space_to_batch,
                                      torch_conv1d_backward,
                                      torch_conv2d_backward,
                                      torch_conv3d_backward,
                                      torch_rmac,
                                      torch_space_to_batch,
)
from fastconv.bench.ceiling import gemm_ceiling
from fastconv.bench.config import Config, make_config
from fastconv.bench.measure import Row
from fastconv.bench.plot import plot_rows, plot_series
from fastconv.bench.report import format_table, summary, to_json
from fastconv.bench.sections import SECTIONS, Section, run
from fastconv.bench.suite import (
                                      RMAC_MAPS,
                                      BenchError,
                                      Case,
                                      FeatureMap,
                                      Layer,
                                      MapCase,
                                      Signal,
                                      SignalCase,
                                      Volume,
                                      VolumeCase,
                                      load_layers,
                                      parse_conv,
                                      parse_conv1d,
                                      parse_conv3d,
                                      select_layers,
)
from fastconv.bench.timing import Timing, best_time, best_times

__all__ = [
    "Layer", "Case", "FeatureMap", "MapCase", "RMAC_MAPS", "BenchError", "load_layers",
    "select_layers", "parse_conv", "Signal", "SignalCase", "parse_conv1d", "Volume",
    "VolumeCase", "parse_conv3d", "Timing",
    "best_time", "best_times", "Config",
    "make_config", "Row", "Section", "SECTIONS", "run", "format_table", "summary", "to_json",
    "plot_rows", "plot_series", "gemm_ceiling", "numpy_im2col", "numpy_col2im",
    "numpy_conv2d", "numpy_conv2d_backward", "numpy_space_to_batch", "numpy_rmac",
    "torch_conv2d_backward", "torch_conv1d_backward", "torch_space_to_batch", "torch_rmac",
    "numpy_conv3d", "numpy_conv3d_backward", "torch_conv3d_backward",
]
