"""``python -m fastconv bench --compare``: the performance targets, side by side.

One row per (layer, batch, layout) of the layer suite, float32 by default, timing in one
process run:

* ``fwd``: ``fastconv.conv2d`` (with bias, ``out=``) against ``torch.nn.functional.conv2d``;
* ``GEMM eff``: the bare ``sgemm`` calls of the same (M, K, N) per image and group
  (:func:`fastconv.bench.ceiling.gemm_ceiling`) ÷ fastconv's forward time;
* ``bwd``: ``fastconv.conv2d_backward`` (input, weight and bias gradients) against torch's
  ``convolution_backward`` (the kernel autograd runs);
* ``1→N thr``: fastconv's forward time on one thread ÷ its time on the configured threads.

fastconv runs as users call it, ``algorithm="auto"``. On the Winograd-eligible rows (3×3,
stride 1, dilation 1, not depthwise; :mod:`fastconv.bench.algorithms`) the forward and the
backward pass are also timed with ``algorithm="gemm"`` and ``algorithm="winograd"`` forced,
in the same round-robin, and shown in a second table: each against the peer, and Winograd
against the GEMM path. They are information; the targets judge ``"auto"``.

Without torch the peer is the NumPy baseline of :mod:`fastconv.bench.baselines`
(``as_strided`` im2col + matmul; it is slow, so a call over a second is timed once) and the
ratios say ``vs NumPy``. Below the table, each target of the performance issue is checked:

* forward: geometric mean ≥ 1.0× the peer, no layer below 0.7×;
* GEMM efficiency ≥ 0.85 on every layer without groups;
* backward: geometric mean ≥ 1.0×;
* depthwise / grouped layers ≥ 1.0× forward and backward;
* 1 → N threads: geometric-mean speed-up ≥ 1.7× (for N = 2).

Used from Python::

    from fastconv.bench import compare
    configs = compare.make_compare_config(layers=["resnet50.*"], batches=[1])
    rows = compare.run(configs)
    print(compare.format_report(rows, configs))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

import fastconv
from fastconv.bench.algorithms import (
    ALGORITHMS,
    eligible_algorithms,
    forward_algorithm,
    input_grad_algorithm,
)
from fastconv.bench.baselines import (
    as_nchw,
    numpy_conv2d,
    numpy_conv2d_backward,
    torch_conv2d_backward,
)
from fastconv.bench.ceiling import gemm_ceiling
from fastconv.bench.config import make_config
from fastconv.bench.progress import Progress
from fastconv.bench.report import format_ms, format_ratio, geometric_mean, plural, table_lines
from fastconv.bench.sections import conv_inputs
from fastconv.bench.timing import best_time, best_times, settle, thread_limits, timed_call

__all__ = ["CompareRow", "TARGETS", "make_compare_config", "measure_case", "measure", "run",
           "check_targets", "algorithm_summary", "format_report", "to_json"]

# The two passes of a row, as the algorithm= table and the JSON name them.
PASSES = ("forward", "backward")


@dataclass(frozen=True)
class Targets:
    """The thresholds the report checks (ratios: peer time ÷ fastconv time)."""

    forward_mean: float = 1.0
    forward_min: float = 0.7
    gemm_efficiency_min: float = 0.85
    backward_mean: float = 1.0
    grouped_min: float = 1.0
    thread_speedup_mean: float = 1.7


TARGETS = Targets()


@dataclass
class CompareRow:
    """Times in seconds of one (layer, batch, layout); None where not measured."""

    layer: str
    batch: int
    layout: str
    groups: int
    flops: int
    forward_s: float
    backward_s: float
    forward_1thread_s: float
    peer_forward_s: float | None
    peer_backward_s: float | None
    gemm_s: float | None
    # algorithm= forced on Winograd-eligible rows, {"gemm": s, "winograd": s} (else empty);
    # gemm_s above is the bare-GEMM ceiling, not algorithm="gemm"
    algorithm_forward_s: dict = field(default_factory=dict)
    algorithm_backward_s: dict = field(default_factory=dict)
    auto_forward: str | None = None   # what forward_s ran, "gemm" or "winograd"
    auto_backward: str | None = None  # what backward_s ran the input gradient on

    def pass_times(self, pass_):
        """(fastconv "auto", peer, {algorithm: forced}) seconds of "forward" or "backward"."""
        if pass_ == "forward":
            return self.forward_s, self.peer_forward_s, self.algorithm_forward_s
        return self.backward_s, self.peer_backward_s, self.algorithm_backward_s

    def algorithm_ratio(self, algorithm, pass_="forward"):
        """Peer time ÷ fastconv's time with `algorithm` forced (None: not measured)."""
        _, peer, forced = self.pass_times(pass_)
        return _ratio(peer, forced.get(algorithm))

    def winograd_vs_gemm(self, pass_="forward"):
        """``algorithm="gemm"`` time ÷ ``algorithm="winograd"`` time (> 1: Winograd
        faster; None: not Winograd-eligible)."""
        _, _, forced = self.pass_times(pass_)
        return _ratio(forced.get("gemm"), forced.get("winograd"))

    @property
    def forward_ratio(self):
        """Peer forward time ÷ fastconv forward time (> 1: fastconv is faster)."""
        return _ratio(self.peer_forward_s, self.forward_s)

    @property
    def backward_ratio(self):
        return _ratio(self.peer_backward_s, self.backward_s)

    @property
    def gemm_efficiency(self):
        """Bare-GEMM time ÷ fastconv forward time (1.0: nothing but the GEMM costs time)."""
        return _ratio(self.gemm_s, self.forward_s)

    @property
    def thread_speedup(self):
        return _ratio(self.forward_1thread_s, self.forward_s)

    @property
    def gflops(self):
        return self.flops / self.forward_s / 1e9

    def as_dict(self):
        def ms(seconds):
            return None if seconds is None else seconds * 1e3
        return {"layer": self.layer, "batch": self.batch, "layout": self.layout,
                "groups": self.groups, "flops": self.flops, "forward_ms": ms(self.forward_s),
                "backward_ms": ms(self.backward_s),
                "forward_1thread_ms": ms(self.forward_1thread_s),
                "peer_forward_ms": ms(self.peer_forward_s),
                "peer_backward_ms": ms(self.peer_backward_s), "gemm_ms": ms(self.gemm_s),
                "forward_ratio": self.forward_ratio, "backward_ratio": self.backward_ratio,
                "gemm_efficiency": self.gemm_efficiency,
                "thread_speedup": self.thread_speedup,
                "auto_forward_algorithm": self.auto_forward,
                "auto_backward_algorithm": self.auto_backward,
                **self._algorithm_dict(ms)}

    def _algorithm_dict(self, ms):
        """The algorithm= keys of :meth:`as_dict` (None where not Winograd-eligible)."""
        result = {}
        for pass_ in PASSES:
            _, _, forced = self.pass_times(pass_)
            for name in ALGORITHMS:
                result[f"algorithm_{name}_{pass_}_ms"] = ms(forced.get(name))
                result[f"algorithm_{name}_{pass_}_ratio"] = self.algorithm_ratio(name, pass_)
            result[f"winograd_vs_gemm_{pass_}"] = self.winograd_vs_gemm(pass_)
        return result


def _ratio(numerator, denominator):
    return None if numerator is None or denominator is None else numerator / denominator


def make_compare_config(layers=None, batches=None, layouts=("NCHW", "NHWC"), dtype="float32",
                        threads=None, full=False, use_torch=True, repeats=None):
    """One :class:`fastconv.bench.config.Config` per layout (same layers, batches and
    timing)."""
    batches = batches or (1, 8)
    return [make_config(layers=layers, batches=batches, layout=layout, dtype=dtype,
                        threads=threads, full=full, ops=["conv2d"], use_torch=use_torch,
                        repeats=repeats)
            for layout in layouts]


def _peer_functions(case, config, x, weight, bias, grad, tensors):
    """(forward, backward) of the peer: torch when loaded, else the NumPy baseline."""
    layout, args = config.layout, case.conv_args()
    if tensors is None:
        return (lambda: numpy_conv2d(x, weight, bias, layout=layout, **args),
                lambda: numpy_conv2d_backward(grad, x, weight, layout=layout, **args))
    torch = config.torch
    x_t, weight_t, bias_t = tensors
    grad_t = torch.from_numpy(as_nchw(grad, layout))
    conv2d = torch.nn.functional.conv2d
    return (lambda: conv2d(x_t, weight_t, bias_t, **args),
            torch_conv2d_backward(torch, grad_t, *tensors, args))


def measure_case(case, config):
    """Time one (layer, batch) in `config`'s layout; returns a :class:`CompareRow`."""
    layout, args, timing = config.layout, case.conv_args(), config.timing
    geom = case.geometry(layout)
    x, weight, bias, tensors = conv_inputs(config, geom)
    grad = config.random(geom.output_shape)
    out = np.empty(geom.output_shape, dtype=config.dtype)

    def forward():
        return fastconv.conv2d(x, weight, bias, layout=layout, out=out, **args)

    def backward():
        return fastconv.conv2d_backward(grad, x, weight, layout=layout, **args)

    def forward_1thread():
        with fastconv.threads(1):
            return forward()

    peer_forward, peer_backward = _peer_functions(case, config, x, weight, bias, grad,
                                                  tensors)
    # algorithm= forced, each forward into its own buffer (Winograd-eligible rows only).
    algorithms = eligible_algorithms(geom)
    forced = ([partial(fastconv.conv2d, x, weight, bias, layout=layout,
                       out=np.empty_like(out), algorithm=name, **args) for name in algorithms]
              + [partial(fastconv.conv2d_backward, grad, x, weight, layout=layout,
                         algorithm=name, **args) for name in algorithms])
    if tensors is not None:
        # fastconv and torch round-robin: a burst of load hits both alike.
        forward_s, peer_forward_s, backward_s, peer_backward_s, *forced_s = best_times(
            [forward, peer_forward, backward, peer_backward, *forced], timing)
    else:
        forward_s, backward_s, *forced_s = best_times([forward, backward, *forced], timing)
        peer_forward_s = _time_numpy(peer_forward, timing)
        peer_backward_s = _time_numpy(peer_backward, timing)
    forward_1thread_s = best_time(forward_1thread, timing)
    settle()
    gemm_s = best_time(gemm_ceiling(geom, config.dtype, config.threads, config.seed), timing)
    settle()
    return CompareRow(layer=case.layer.name, batch=case.batch, layout=layout,
                      groups=case.layer.groups, flops=geom.flops, forward_s=forward_s,
                      backward_s=backward_s, forward_1thread_s=forward_1thread_s,
                      peer_forward_s=peer_forward_s, peer_backward_s=peer_backward_s,
                      gemm_s=gemm_s,
                      algorithm_forward_s=dict(zip(algorithms, forced_s[:len(algorithms)])),
                      algorithm_backward_s=dict(zip(algorithms, forced_s[len(algorithms):])),
                      auto_forward=forward_algorithm(geom, config.dtype),
                      auto_backward=input_grad_algorithm(geom, config.dtype))


def _time_numpy(fn, timing):
    """The NumPy baseline: one call when it is slow (its multithreaded matmuls then idle)."""
    _, first = timed_call(fn)
    seconds = first
    if timing.once_s is None or first <= timing.once_s:
        seconds = best_times([fn], timing, [first])[0]
    settle()
    return seconds


def measure(case, config):
    """:func:`measure_case` with fastconv, BLAS and torch at ``config.threads`` threads (the
    previous settings restored afterwards)."""
    with thread_limits(config.threads, config.torch):
        return measure_case(case, config)


def run(configs, progress=True):
    """Measure every case of every config (one per layout); rows in table order."""
    work = [(config, case) for config in configs for case in config.layer_cases()]
    reporter = Progress(len(work)) if progress else None
    rows = []
    try:
        for config, case in work:
            if reporter:
                reporter.show(f"compare {config.layout} {case}")
            rows.append(measure(case, config))
    finally:
        if reporter:
            reporter.close()
    return rows


@dataclass(frozen=True)
class Check:
    """One target: its name, the measured value, the threshold and whether it holds."""

    name: str
    value: float | None
    threshold: float
    detail: str = ""

    @property
    def holds(self):
        return self.value is not None and self.value >= self.threshold


def check_targets(rows, threads, targets=TARGETS):
    """The targets of the performance issue, evaluated on `rows`."""
    dense = [row for row in rows if row.groups == 1]
    grouped = [row for row in rows if row.groups > 1]
    forward = [row.forward_ratio for row in rows]
    slowest = min((row for row in rows if row.forward_ratio is not None),
                  key=lambda row: row.forward_ratio, default=None)
    least_efficient = min((row for row in dense if row.gemm_efficiency is not None),
                          key=lambda row: row.gemm_efficiency, default=None)
    checks = [
        Check("forward geometric mean", geometric_mean(forward), targets.forward_mean),
        Check("forward slowest layer", slowest and slowest.forward_ratio,
              targets.forward_min, _where(slowest)),
        Check("GEMM efficiency, lowest dense layer",
              least_efficient and least_efficient.gemm_efficiency,
              targets.gemm_efficiency_min, _where(least_efficient)),
        Check("backward geometric mean",
              geometric_mean([row.backward_ratio for row in rows]),
              targets.backward_mean),
    ]
    if grouped:
        grouped_ratios = [r for row in grouped for r in (row.forward_ratio, row.backward_ratio)
                          if r is not None]
        checks.append(Check("depthwise/grouped, slowest of fwd and bwd",
                            min(grouped_ratios, default=None), targets.grouped_min))
    if threads > 1:
        checks.append(Check(f"1 -> {threads} threads speed-up, geometric mean",
                            geometric_mean([row.thread_speedup for row in rows]),
                            targets.thread_speedup_mean))
    return checks


def _where(row):
    return "" if row is None else f"{row.layer} batch {row.batch} {row.layout}"


COLUMNS = ("layer", "batch", "layout", "fwd ms", "GFLOP/s", "peer fwd ms", "fwd ratio",
           "GEMM ms", "GEMM eff", "bwd ms", "peer bwd ms", "bwd ratio", "1 thr ms",
           "1->N thr")


def _cells(row):
    ms, ratio = format_ms, format_ratio
    return (row.layer, str(row.batch), row.layout, ms(row.forward_s), f"{row.gflops:.1f}",
            ms(row.peer_forward_s), ratio(row.forward_ratio), ms(row.gemm_s),
            ratio(row.gemm_efficiency), ms(row.backward_s), ms(row.peer_backward_s),
            ratio(row.backward_ratio), ms(row.forward_1thread_s), ratio(row.thread_speedup))


# The algorithm= table: two lines (fwd, bwd) per Winograd-eligible row, indented so that
# the lines of the table above stay the only ones that start with a layer name.
ALGORITHM_COLUMNS = ("layer", "batch", "layout", "pass", "auto", "auto ms", "gemm ms",
                     "winograd ms", "peer ms", "gemm ratio", "winograd ratio",
                     "winograd vs gemm")
_PASS_LABELS = {"forward": "fwd", "backward": "bwd"}


def _algorithm_cells(row, pass_):
    ms, ratio = format_ms, format_ratio
    auto_s, peer_s, forced = row.pass_times(pass_)
    auto = row.auto_forward if pass_ == "forward" else row.auto_backward
    return (row.layer, str(row.batch), row.layout, _PASS_LABELS[pass_], auto or "-",
            ms(auto_s), ms(forced.get("gemm")), ms(forced.get("winograd")), ms(peer_s),
            ratio(row.algorithm_ratio("gemm", pass_)),
            ratio(row.algorithm_ratio("winograd", pass_)), ratio(row.winograd_vs_gemm(pass_)))


def algorithm_summary(rows):
    """Geometric means over the Winograd-eligible rows, per pass:
    {"forward": {"gemm_ratio": x, "winograd_ratio": x, "winograd_vs_gemm": x},
    "backward": {...}}; None when no row is eligible."""
    eligible = [row for row in rows if row.algorithm_forward_s]
    if not eligible:
        return None
    return {pass_: {**{f"{name}_ratio": geometric_mean([row.algorithm_ratio(name, pass_)
                                                         for row in eligible])
                       for name in ALGORITHMS},
                    "winograd_vs_gemm": geometric_mean([row.winograd_vs_gemm(pass_)
                                                        for row in eligible])}
            for pass_ in PASSES}


def _algorithm_lines(rows):
    """The algorithm= table and its geometric means (none without eligible rows)."""
    means = algorithm_summary(rows)
    if means is None:
        return []
    lines = ["", "algorithm= on the Winograd-eligible rows (3x3, stride 1, dilation 1, not "
             "depthwise), timed round-robin with the rows above: auto = what fwd ms / bwd ms "
             "(algorithm='auto') ran, for bwd its input gradient; gemm / winograd = that "
             "algorithm forced; ratios = peer ms / its ms; winograd vs gemm = gemm ms / "
             "winograd ms."]
    cells = [_algorithm_cells(row, pass_) for row in rows if row.algorithm_forward_s
             for pass_ in PASSES]
    lines += ["  " + line for line in table_lines(ALGORITHM_COLUMNS, cells,
                                                   {"layer", "pass", "auto"})]
    lines.append("")
    lines.append("algorithm= geometric means: " + "; ".join(
        f"{_PASS_LABELS[pass_]} gemm ratio {format_ratio(pass_means['gemm_ratio'])}, winograd "
        f"ratio {format_ratio(pass_means['winograd_ratio'])}, winograd vs gemm "
        f"{format_ratio(pass_means['winograd_vs_gemm'])}"
        for pass_, pass_means in means.items()))
    return lines


def format_report(rows, configs):
    """The table, the algorithm= table of the Winograd-eligible rows, then one line per
    target with its measured value and ok / MISS."""
    config = configs[0]
    torch = config.torch
    peer = (f"torch {torch.__version__} conv2d / convolution_backward, NCHW"
            if torch is not None else "NumPy as_strided im2col + matmul (torch not installed)")
    header = [
        f"fastconv {fastconv.__version__} --compare: {config.dtype}, "
        f"{plural(config.threads, 'thread')}; peer: {peer}, same threads.",
        "ratios are peer time / fastconv time (> 1: fastconv faster); GEMM eff = bare "
        "sgemm/dgemm of the same M, K, N / fastconv forward; 1->N thr = fastconv forward on "
        "1 thread / on N.",
    ]
    lines = header + [""] + table_lines(COLUMNS, [_cells(row) for row in rows], {"layer"})
    lines += _algorithm_lines(rows)
    lines += ["", "targets:"]
    for check in check_targets(rows, config.threads):
        value = "-" if check.value is None else f"{check.value:.2f}"
        verdict = "ok" if check.holds else "MISS"
        detail = f" ({check.detail})" if check.detail else ""
        lines.append(f"  {verdict:4}  {check.name}: {value} (target >= {check.threshold:g})"
                     f"{detail}")
    return "\n".join(lines)


def to_json(rows, configs):
    """The ``--json`` document: settings, rows, the algorithm= geometric means (None
    without Winograd-eligible rows) and the targets."""
    config = configs[0]
    return {
        "threads": config.threads, "dtype": str(config.dtype),
        "layouts": [c.layout for c in configs],
        "torch": None if config.torch is None else config.torch.__version__,
        "rows": [row.as_dict() for row in rows],
        "algorithm_summary": algorithm_summary(rows),
        "targets": [{"name": c.name, "value": c.value, "threshold": c.threshold,
                     "holds": c.holds, "detail": c.detail}
                    for c in check_targets(rows, config.threads)],
    }
