"""``python -m fastconv bench --network NAME``: every convolution of a whole network against
torch, forward and backward, and the whole-network sums.

The networks are the package data ``fastconv/data/networks.json`` (ResNet-50, VGG-16,
MobileNetV2 at 224x224): each as its distinct convolution shapes with their counts. For each
network, batch (default 1 and 8) and layout (default NCHW and NHWC) every shape is timed,
float32 by default, in one process:

* forward: ``fastconv.conv2d`` (``algorithm="auto"``, no bias, ``out=``) against
  ``torch.nn.functional.conv2d`` (no bias);
* backward: ``fastconv.conv2d_backward(..., needs_bias_grad=False)`` (input and weight
  gradients) against ``torch.ops.aten.convolution_backward`` with the same two gradients,
  the kernel torch's autograd runs for conv2d (called directly: no graph, nothing
  accumulated; ``torch.autograd.grad`` on a prebuilt graph where it is missing).

NHWC is fastconv's ``layout="NHWC"`` with HWIO weights against torch tensors in
``torch.channels_last`` memory format (the same buffers, no copies on either side); NCHW is
NCHW / OIHW on both. fastconv and torch are sampled round-robin
(:func:`~fastconv.bench.timing.best_times`); the first call of each is its warm-up and the
check that fastconv and torch agree. A row's times are one call; the whole-network time is
the sum over the shapes of count x time, and its ratio is torch's sum / fastconv's sum.

Used from Python::

    from fastconv.bench import network
    config = network.make_network_config(["mobilenetv2"], batches=[1], layouts=["NHWC"])
    rows = network.run(config)
    print(network.format_report(rows, config))

:func:`load_networks` is the one place the networks come from (tests replace it with
smaller ones).
"""
from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from functools import partial

import numpy as np

import fastconv
from fastconv.bench.config import LAYOUTS, make_config
from fastconv.bench.measure import close_result
from fastconv.bench.progress import Progress
from fastconv.bench.report import format_ms, format_ratio, plural, table_lines
from fastconv.bench.suite import BenchError
from fastconv.bench.timing import (
    Timing,
    best_times,
    load_average,
    settle,
    thread_limits,
    timed_call,
)

__all__ = ["NETWORKS", "ALL", "PASSES", "DEFAULT_BATCHES", "NetworkConv", "network_data",
           "load_networks", "select_networks", "NetworkConfig", "make_network_config",
           "NetworkRow", "NetworkSum", "torch_functions", "measure_conv", "measure",
           "run", "network_sums", "format_report", "to_json"]

# The networks of fastconv/data/networks.json, in its order; "all" runs them all.
NETWORKS = ("resnet50", "vgg16", "mobilenetv2")
ALL = "all"
# The two passes timed per shape, as the JSON keys name them.
PASSES = ("forward", "backward")
DEFAULT_BATCHES = (1, 8)


@dataclass(frozen=True)
class NetworkConv:
    """One distinct convolution shape of a network: square `size` x `size` input, square
    kernel, symmetric padding, no bias; `count` times in the network."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    size: int
    groups: int = 1
    count: int = 1

    @classmethod
    def from_dict(cls, entry):
        """A NetworkConv from one entry of networks.json."""
        return cls(in_channels=int(entry["in_channels"]),
                   out_channels=int(entry["out_channels"]), kernel=int(entry["kernel"]),
                   stride=int(entry.get("stride", 1)), padding=int(entry.get("padding", 0)),
                   size=int(entry["size"]), groups=int(entry.get("groups", 1)),
                   count=int(entry.get("count", 1)))

    @property
    def label(self):
        """Short description: ``"64>256 1x1/1 p0 56"`` = 64 -> 256 channels, 1x1 kernel at
        stride 1, padding 0, 56x56 input; ``" g32"`` when grouped."""
        k = self.kernel
        text = (f"{self.in_channels}>{self.out_channels} {k}x{k}/{self.stride} "
                f"p{self.padding} {self.size}")
        return text + (f" g{self.groups}" if self.groups > 1 else "")

    def conv_args(self):
        """Keyword arguments shared by fastconv's and torch's calls."""
        return {"stride": self.stride, "padding": self.padding, "groups": self.groups}

    def geometry(self, batch, layout):
        """The :class:`fastconv.ConvGeometry` of this shape at `batch` in `layout`."""
        n, c, s = batch, self.in_channels, self.size
        shape = (n, c, s, s) if layout == "NCHW" else (n, s, s, c)
        return fastconv.ConvGeometry(shape, self.out_channels, self.kernel,
                                     stride=self.stride, padding=self.padding,
                                     groups=self.groups, layout=layout)


def network_data():
    """The document ``fastconv/data/networks.json`` (its "about" text and "networks")."""
    text = importlib.resources.files("fastconv").joinpath("data", "networks.json").read_text(
        encoding="utf-8")
    return json.loads(text)


def load_networks():
    """{name: [NetworkConv, ...]} of ``fastconv/data/networks.json``, in file order.

    Everything below reads the networks through this function, so replacing it (e.g.
    ``monkeypatch.setattr(network, "load_networks", ...)``) runs other, smaller networks.
    """
    return {name: [NetworkConv.from_dict(entry) for entry in body["convs"]]
            for name, body in network_data()["networks"].items()}


def select_networks(names, networks=None):
    """{name: convs} of the requested `names` ("all": every network), in request order
    without repeats; an unknown name raises :class:`BenchError` listing the valid ones."""
    networks = load_networks() if networks is None else networks
    chosen = []
    for name in names or (ALL,):
        for one in (list(networks) if name == ALL else [name]):
            if one not in networks:
                raise BenchError(f"unknown network {one!r}; valid: "
                                 f"{', '.join([*networks, ALL])}")
            if one not in chosen:
                chosen.append(one)
    return {name: networks[name] for name in chosen}


@dataclass
class NetworkConfig:
    """What a ``--network`` run measures."""

    networks: dict     # {name: [NetworkConv, ...]}
    batches: tuple
    layouts: tuple
    dtype: np.dtype
    threads: int
    timing: Timing
    torch: object = None  # the torch module, or None: fastconv alone
    seed: int = 0

    def cases(self):
        """(network, batch, layout, conv) in report order."""
        return [(name, batch, layout, conv) for name, convs in self.networks.items()
                for batch in self.batches for layout in self.layouts for conv in convs]

    def random(self, shape):
        """Reproducible standard-normal data of the configured dtype."""
        return np.random.default_rng(self.seed).standard_normal(shape, dtype=self.dtype)


def make_network_config(networks=(ALL,), batches=None, layouts=LAYOUTS, dtype="float32",
                        threads=None, full=False, use_torch=True, repeats=None):
    """A validated :class:`NetworkConfig`; bad values raise :class:`BenchError`. Timing,
    threads, dtype and torch are validated and chosen as for the other runs
    (:func:`fastconv.bench.config.make_config`)."""
    layouts = tuple(dict.fromkeys(str(layout).upper() for layout in layouts))
    if not layouts:
        raise BenchError(f"layouts must be some of {', '.join(LAYOUTS)}, got none")
    batches = tuple(batches or DEFAULT_BATCHES)
    for layout in layouts:  # each layout checked, with the other settings
        base = make_config(layers=[], batches=batches, layout=layout, dtype=dtype,
                           threads=threads, full=full, ops=["conv2d"], use_torch=use_torch,
                           repeats=repeats, user_layers=[])
    return NetworkConfig(networks=select_networks(networks), batches=base.batches,
                         layouts=layouts, dtype=base.dtype, threads=base.threads,
                         timing=base.timing, torch=base.torch, seed=base.seed)


def _ratio(numerator, denominator):
    return None if numerator is None or denominator is None else numerator / denominator


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


class _Times:
    """What NetworkRow and NetworkSum share: fastconv and torch forward and backward
    seconds (None where not measured), their ratios and their JSON fields."""

    @property
    def forward_ratio(self):
        """torch forward time / fastconv forward time (> 1: fastconv is faster)."""
        return _ratio(self.torch_forward_s, self.forward_s)

    @property
    def backward_ratio(self):
        return _ratio(self.torch_backward_s, self.backward_s)

    def _times_dict(self):
        return {"forward_ms": _ms(self.forward_s), "backward_ms": _ms(self.backward_s),
                "torch_forward_ms": _ms(self.torch_forward_s),
                "torch_backward_ms": _ms(self.torch_backward_s),
                "forward_ratio": self.forward_ratio, "backward_ratio": self.backward_ratio}


@dataclass
class NetworkRow(_Times):
    """One shape of one network at one batch and layout: seconds of one call (None: not
    measured)."""

    network: str
    batch: int
    layout: str
    conv: NetworkConv
    auto_algorithm: str    # what conv2d(algorithm="auto") runs: "gemm" or "winograd"
    forward_s: float | None
    backward_s: float | None
    torch_forward_s: float | None = None
    torch_backward_s: float | None = None
    matches_torch: bool | None = None  # None: torch not run

    def as_dict(self):
        return {"network": self.network, "batch": self.batch, "layout": self.layout,
                "conv": self.conv.label, **vars(self.conv),
                "auto_algorithm": self.auto_algorithm, **self._times_dict(),
                "matches_torch": self.matches_torch}


@dataclass
class NetworkSum(_Times):
    """A whole network at one batch and layout: sum over its shapes of count x seconds of
    one call (None when a shape lacks that time)."""

    network: str
    batch: int
    layout: str
    shapes: int
    convs: int            # sum of the counts
    forward_s: float | None
    backward_s: float | None
    torch_forward_s: float | None
    torch_backward_s: float | None

    def as_dict(self):
        return {"network": self.network, "batch": self.batch, "layout": self.layout,
                "shapes": self.shapes, "convs": self.convs, **self._times_dict()}


def _torch_backward(torch, grad_t, x_t, weight_t, args):
    """torch's input and weight gradients of conv2d without bias: the kernel autograd runs
    (``aten.convolution_backward``), else ``torch.autograd.grad`` on a prebuilt graph."""
    stride, padding, groups = ([args["stride"]] * 2, [args["padding"]] * 2, args["groups"])
    try:
        kernel = torch.ops.aten.convolution_backward
    except (AttributeError, RuntimeError):
        kernel = None
    if kernel is not None:
        return partial(kernel, grad_t, x_t, weight_t, None, stride, padding, [1, 1], False,
                       [0, 0], groups, [True, True, False])
    leaves = [t.detach().requires_grad_() for t in (x_t, weight_t)]
    y = torch.nn.functional.conv2d(*leaves, None, **args)
    return lambda: torch.autograd.grad(y, leaves, grad_t, retain_graph=True)


def torch_functions(torch, x, weight, grad, layout, args):
    """torch's (forward, backward) on the same values as fastconv's `x`, `weight` and
    `grad` (in `layout`; backward None when `grad` is), and a function turning their
    results into fastconv's layouts.

    NHWC arrays become NCHW-shaped tensors in ``torch.channels_last`` memory format sharing
    the arrays' memory; HWIO weights are copied once into channels_last OIHW (torch's
    weight format for channels_last models). NCHW arrays and OIHW weights are used as they
    are."""
    if layout == "NCHW":
        x_t, weight_t = torch.from_numpy(x), torch.from_numpy(weight)
        grad_t = None if grad is None else torch.from_numpy(grad)
    else:
        x_t = torch.from_numpy(x).permute(0, 3, 1, 2)
        grad_t = None if grad is None else torch.from_numpy(grad).permute(0, 3, 1, 2)
        weight_t = torch.from_numpy(weight).permute(3, 2, 0, 1).contiguous(
            memory_format=torch.channels_last)

    def as_fastconv(forward_result, backward_result):
        """(output, (input gradient, weight gradient)) as fastconv lays them out."""
        image = (lambda t: t) if layout == "NCHW" else (lambda t: t.permute(0, 2, 3, 1))
        filters = (lambda t: t) if layout == "NCHW" else (lambda t: t.permute(2, 3, 1, 0))
        output = None if forward_result is None else image(forward_result).numpy()
        grads = None
        if backward_result is not None:
            grads = (image(backward_result[0]).numpy(), filters(backward_result[1]).numpy())
        return output, grads

    conv2d = torch.nn.functional.conv2d
    backward = None if grad_t is None else _torch_backward(torch, grad_t, x_t, weight_t, args)
    return partial(conv2d, x_t, weight_t, None, **args), backward, as_fastconv


def measure_conv(name, batch, layout, conv, config, passes=PASSES):
    """Time one shape of network `name` at `batch` in `layout`: fastconv and (when
    configured) torch, round-robin, the `passes` asked for; returns a :class:`NetworkRow`.

    Each function's first call is its warm-up; fastconv's and torch's first results are
    compared (``matches_torch``) before the samples."""
    geom = conv.geometry(batch, layout)
    args = conv.conv_args()
    x, weight = config.random(geom.input_shape), config.random(geom.weight_shape)
    grad = config.random(geom.output_shape) if "backward" in passes else None
    out = np.empty(geom.output_shape, dtype=config.dtype)
    fns = {}
    if "forward" in passes:
        fns["forward"] = partial(fastconv.conv2d, x, weight, None, layout=layout, out=out,
                                 **args)
    if "backward" in passes:
        fns["backward"] = partial(fastconv.conv2d_backward, grad, x, weight, layout=layout,
                                  needs_bias_grad=False, **args)
    as_fastconv = None
    if config.torch is not None:
        torch_forward, torch_backward, as_fastconv = torch_functions(
            config.torch, x, weight, grad, layout, args)
        if "forward" in passes:
            fns["torch_forward"] = torch_forward
        if "backward" in passes:
            fns["torch_backward"] = torch_backward
    # fastconv and torch alternate: a burst of load hits both alike.
    order = [key for pass_ in PASSES for key in (pass_, f"torch_{pass_}") if key in fns]
    settle()  # the previous shape's threads
    results, first = {}, {}
    for key in order:
        results[key], first[key] = timed_call(fns[key])
    matches = None
    if as_fastconv is not None:
        output, grads = as_fastconv(results.get("torch_forward"),
                                    results.get("torch_backward"))
        checks = []
        if output is not None:
            checks.append(close_result(results["forward"], output))
        if grads is not None:
            checks.append(close_result(tuple(results["backward"][:2]), grads))
        matches = all(checks)
    del results
    seconds = dict(zip(order, best_times([fns[key] for key in order], config.timing,
                                         [first[key] for key in order])))
    return NetworkRow(network=name, batch=batch, layout=layout, conv=conv,
                      auto_algorithm=geom.algorithm(config.dtype),
                      forward_s=seconds.get("forward"), backward_s=seconds.get("backward"),
                      torch_forward_s=seconds.get("torch_forward"),
                      torch_backward_s=seconds.get("torch_backward"), matches_torch=matches)


def measure(name, batch, layout, config, passes=PASSES, progress=None):
    """Every shape of network `name` at `batch` in `layout`, with fastconv, BLAS and torch
    at ``config.threads`` threads; returns (rows, :class:`NetworkSum`). `progress`, a
    :class:`~fastconv.bench.progress.Progress`, is told about each shape."""
    rows = []
    with thread_limits(config.threads, config.torch):
        for conv in config.networks[name]:
            if progress is not None:
                progress.show(f"network {name} batch {batch} {layout} {conv.label}")
            rows.append(measure_conv(name, batch, layout, conv, config, passes))
    (total,) = network_sums(rows)
    return rows, total


def run(config, progress=True):
    """Measure every case of `config`; rows in report order."""
    reporter = Progress(len(config.cases())) if progress else None
    rows = []
    try:
        for name in config.networks:
            for batch in config.batches:
                for layout in config.layouts:
                    rows += measure(name, batch, layout, config, progress=reporter)[0]
    finally:
        if reporter:
            reporter.close()
    return rows


def _weighted_sum(rows, attribute):
    """Sum of count x seconds, None when any row lacks the time."""
    times = [getattr(row, attribute) for row in rows]
    if any(seconds is None for seconds in times):
        return None
    return sum(row.conv.count * seconds for row, seconds in zip(rows, times))


def network_sums(rows):
    """One :class:`NetworkSum` per (network, batch, layout) of `rows`, in their order."""
    groups = {}
    for row in rows:
        groups.setdefault((row.network, row.batch, row.layout), []).append(row)
    return [NetworkSum(network=name, batch=batch, layout=layout, shapes=len(mine),
                       convs=sum(row.conv.count for row in mine),
                       **{attribute: _weighted_sum(mine, attribute)
                          for attribute in ("forward_s", "backward_s", "torch_forward_s",
                                            "torch_backward_s")})
            for (name, batch, layout), mine in groups.items()]


COLUMNS = ("conv", "count", "auto", "fwd ms", "torch ms", "fwd ratio", "bwd ms", "torch ms",
           "bwd ratio")
SUM_COLUMNS = ("network", "batch", "layout", "convs", "fwd ms", "torch ms", "fwd ratio",
               "bwd ms", "torch ms", "bwd ratio")


def _time_cells(item):
    """The six time and ratio cells of a row or a sum."""
    return (format_ms(item.forward_s), format_ms(item.torch_forward_s),
            format_ratio(item.forward_ratio), format_ms(item.backward_s),
            format_ms(item.torch_backward_s), format_ratio(item.backward_ratio))


def _row_cells(row):
    flag = " !" if row.matches_torch is False else ""
    return (row.conv.label + flag, str(row.conv.count), row.auto_algorithm,
            *_time_cells(row))


def format_report(rows, config):
    """Per network, batch and layout: one line per shape and the whole-network line; then
    the whole-network sums side by side."""
    torch = config.torch
    threads = plural(config.threads, "thread")
    peer = (f"torch {torch.__version__}, same threads" if torch is not None
            else "torch not used (ratios -)")
    lines = [
        f"fastconv {fastconv.__version__} --network: {config.dtype}, {threads}; {peer}.",
        "forward: fastconv conv2d(algorithm='auto', no bias, out=) vs torch F.conv2d (no bias);",
        "backward: conv2d_backward(needs_bias_grad=False) vs aten.convolution_backward "
        "(autograd's",
        "  kernel), input and weight gradients. NHWC: HWIO weights vs torch channels_last "
        "tensors.",
        "conv = in>out channels kxk/stride, padding, input size (H = W), groups; count: in "
        "the network;",
        "auto = what algorithm='auto' runs; ms = one call, fastconv and torch timed "
        "round-robin;",
        "ratio = torch ms / fastconv ms (> 1: fastconv faster); whole network = sum of count "
        "x ms.",
    ]
    sums = network_sums(rows)
    for total in sums:
        mine = [row for row in rows if (row.network, row.batch, row.layout)
                == (total.network, total.batch, total.layout)]
        cells = [_row_cells(row) for row in mine]
        cells.append(("whole network", str(total.convs), "",
                      *_time_cells(total)))
        table = table_lines(COLUMNS, cells, {"conv", "auto"})
        lines += ["", f"{total.network}, batch {total.batch}, {total.layout}:"]
        lines += table[:-1] + [table[1], table[-1]]  # a rule above the whole-network line
    lines += ["", "whole-network convolution time (sum of count x ms):"]
    lines += table_lines(SUM_COLUMNS, [(total.network, str(total.batch), total.layout,
                                        str(total.convs), *_time_cells(total))
                                       for total in sums], {"network", "layout"})
    if any(row.matches_torch is False for row in rows):
        lines.append("! fastconv's result differs from torch's on these shapes")
    return "\n".join(lines)


def to_json(rows, config):
    """The ``--json`` document: settings, one entry per shape ("rows") and per whole
    network ("sums"); times in ms of one call, sums = sum of count x ms."""
    return {
        "networks": list(config.networks), "batches": list(config.batches),
        "layouts": list(config.layouts), "dtype": str(config.dtype),
        "threads": config.threads,
        "torch": None if config.torch is None else config.torch.__version__,
        "timing": vars(config.timing).copy(), "load_average": load_average(),
        "rows": [row.as_dict() for row in rows],
        "sums": [total.as_dict() for total in network_sums(rows)],
    }
