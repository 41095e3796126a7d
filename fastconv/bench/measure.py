"""One case timed: fastconv against its peers, checked against NumPy once, as a :class:`Row`.

Calls slower than ``Timing.once_s`` (the NumPy conv baselines on the big layers can take
seconds) are timed once, by their first call, instead of sampled. In the convolution
sections NumPy's matmuls and the GEMM ceiling run multithreaded BLAS, whose idle workers
spin for ~0.1 s after each call and would steal cores from the next timing: there fastconv
and torch are sampled round-robin first, then NumPy, then the ceiling, each phase once the
previous one's threads are idle. On Winograd-eligible layers the conv sections also pass
fastconv with each ``algorithm=`` forced (:mod:`fastconv.bench.algorithms`): those calls
join fastconv and torch's round-robin and are checked against NumPy like fastconv.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastconv.bench.algorithms import ALGORITHMS
from fastconv.bench.timing import best_times, settle, timed_call

__all__ = ["Row", "close_result", "measure_row"]


@dataclass
class Row:
    """One line of the table: one operator on one case, times in seconds (None: not run).

    A row's rate is GFLOP/s when it has `flops` (the convolution sections), else GB/s of
    `nbytes` (the data-movement sections); the other rate is None. `fastconv_s` is
    fastconv as users call it (``algorithm="auto"`` in the convolution sections);
    `algorithm_s` holds its times with each algorithm forced, on Winograd-eligible layers.
    """

    op: str
    layer: str
    batch: int
    shape: tuple          # the image shape, in the configured layout
    nbytes: int           # bytes of the column matrix (what GB/s is measured against)
    fastconv_s: float
    numpy_s: float | None = None
    torch_s: float | None = None
    matches_numpy: bool | None = None
    flops: int | None = None       # floating-point operations of one call (GFLOP/s)
    gemm_s: float | None = None    # the bare-GEMM ceiling of the same work
    extra: dict = field(default_factory=dict)  # section-specific JSON fields
    # {"gemm": s, "winograd": s}: algorithm= forced (empty: not Winograd-eligible, or not a
    # convolution); not to be confused with gemm_s, the bare-GEMM ceiling
    algorithm_s: dict = field(default_factory=dict)
    auto_algorithm: str | None = None  # what fastconv_s ran, "gemm" or "winograd"

    @property
    def unit(self):
        """"GFLOP/s" or "GB/s": what this row's rate is measured in."""
        return "GB/s" if self.flops is None else "GFLOP/s"

    @property
    def gbps(self):
        return self.nbytes / self.fastconv_s / 1e9 if self.flops is None else None

    @property
    def gflops(self):
        return None if self.flops is None else self.flops / self.fastconv_s / 1e9

    @property
    def gemm_efficiency(self):
        """Ceiling time / fastconv time: 1.0 means fastconv runs at bare-GEMM speed."""
        return None if self.gemm_s is None else self.gemm_s / self.fastconv_s

    @property
    def speedup_numpy(self):
        return None if self.numpy_s is None else self.numpy_s / self.fastconv_s

    @property
    def speedup_torch(self):
        return None if self.torch_s is None else self.torch_s / self.fastconv_s

    def algorithm_speedup_torch(self, algorithm):
        """Torch time / fastconv's time with `algorithm` forced (None: not measured)."""
        seconds = self.algorithm_s.get(algorithm)
        return None if self.torch_s is None or seconds is None else self.torch_s / seconds

    @property
    def winograd_vs_gemm(self):
        """``algorithm="gemm"`` time / ``algorithm="winograd"`` time (> 1: Winograd faster;
        None: not Winograd-eligible)."""
        gemm, winograd = self.algorithm_s.get("gemm"), self.algorithm_s.get("winograd")
        return None if gemm is None or winograd is None else gemm / winograd

    def as_dict(self):
        """JSON-ready: times in milliseconds, None where an implementation did not run."""
        def ms(seconds):
            return None if seconds is None else seconds * 1e3
        forced = {}
        for name in ALGORITHMS:
            forced[f"algorithm_{name}_ms"] = ms(self.algorithm_s.get(name))
            forced[f"algorithm_{name}_speedup_torch"] = self.algorithm_speedup_torch(name)
        return {
            "op": self.op, "layer": self.layer, "batch": self.batch, "shape": list(self.shape),
            "column_bytes": self.nbytes, "fastconv_ms": ms(self.fastconv_s), "gbps": self.gbps,
            "flops": self.flops, "gflops": self.gflops,
            "numpy_ms": ms(self.numpy_s), "torch_ms": ms(self.torch_s),
            "gemm_ms": ms(self.gemm_s), "gemm_efficiency": self.gemm_efficiency,
            "speedup_numpy": self.speedup_numpy, "speedup_torch": self.speedup_torch,
            "matches_numpy": self.matches_numpy, "auto_algorithm": self.auto_algorithm,
            **forced, "winograd_vs_gemm": self.winograd_vs_gemm, **self.extra,
        }


def _same_result(result, expected, exact):
    """Equal (`exact`), or equal up to a fixed float tolerance: the test for data movement."""
    if exact:
        return bool(np.array_equal(result, expected))
    tolerance = 1e-5 if result.dtype == np.float32 else 1e-12
    return bool(np.allclose(result, expected, rtol=tolerance, atol=tolerance))


def close_result(result, expected):
    """Equal up to float rounding, relative to the magnitude: the test for convolutions,
    whose long sums round differently in every implementation. Tuples (gradients) are
    compared item by item."""
    if isinstance(expected, tuple):
        return len(result) == len(expected) and all(
            close_result(r, e) for r, e in zip(result, expected))
    if result.shape != expected.shape:
        return False
    tolerance = 1e-3 if result.dtype == np.float32 else 1e-9
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    return bool(np.allclose(result, expected, rtol=tolerance, atol=tolerance * scale))


def _copy(result):
    """A private copy of a result (array or tuple of arrays) whose buffer is reused."""
    if isinstance(result, tuple):
        return tuple(_copy(item) for item in result)
    return None if result is None else np.array(result, copy=True)


def measure_row(op, case, config, nbytes, fastconv_fn, numpy_fn, torch_fn, exact=False, *,
                same=None, flops=None, gemm_fn=None, blas=False, algorithm_fns=None,
                peer_fns=None):
    """Time the implementations of one case and check fastconv against NumPy once.

    The checking calls are the warm-up calls of fastconv and NumPy. `same(result, expected)`
    compares the results (default: :func:`_same_result` with `exact`). `gemm_fn`, when
    given, is the GEMM ceiling. An implementation whose first call took longer than
    ``config.timing.once_s`` is timed by that call alone.

    Without `blas`, fastconv, NumPy and torch are sampled round-robin. With `blas` (the
    NumPy baseline and the ceiling run multithreaded BLAS, whose idle workers keep spinning
    for ~0.1 s) they are timed in phases: fastconv and torch round-robin, then NumPy, then
    the ceiling, each phase once the threads of the previous one are idle
    (:func:`~fastconv.bench.timing.settle`).

    `algorithm_fns` ({"gemm": fn, "winograd": fn} on Winograd-eligible layers) are fastconv
    with each algorithm forced: sampled round-robin with fastconv and torch, each first
    call checked against NumPy too (``matches_numpy`` holds only if every fastconv call
    matched), their times in the row's ``algorithm_s``.

    `peer_fns` ({name: fn}) are other fastconv calls to compare fastconv with (the same
    layer with zero padding in the padding_mode section): sampled round-robin with
    fastconv and torch, not checked, their times in the row's ``extra[f"{name}_s"]``.
    """
    timing = config.timing
    fns = {"fastconv": fastconv_fn, "numpy": numpy_fn}
    for name, fn in (("torch", torch_fn), ("gemm", gemm_fn)):
        if fn is not None:
            fns[name] = fn
    # Keyed apart from "gemm", the ceiling.
    forced = {f"algorithm={name}": fn for name, fn in (algorithm_fns or {}).items()}
    fns.update(forced)
    peers = {f"peer={name}": fn for name, fn in (peer_fns or {}).items()}
    fns.update(peers)
    first, seconds = {}, {}

    def warm_up(names):
        for name in names:
            if name not in first:
                first[name] = timed_call(fns[name])[1]

    def sample(names):
        once_s = timing.once_s
        seconds.update({name: first[name] for name in names
                        if once_s is not None and first[name] > once_s})
        rest = [name for name in names if name not in seconds]
        if rest:
            seconds.update(zip(rest, best_times([fns[name] for name in rest], timing,
                                                [first[name] for name in rest])))

    own = [name for name in ("fastconv", "torch", *forced, *peers) if name in fns]
    result, first["fastconv"] = timed_call(fastconv_fn)
    if blas:
        result = _copy(result)  # the samples reuse fastconv's out= buffer
    results = [result]
    for name in forced:  # their checking calls, kept until NumPy's result is there
        forced_result, first[name] = timed_call(fns[name])
        results.append(_copy(forced_result))
    if blas:
        warm_up(own)
        settle(blas)  # the previous case's BLAS threads, spinning through the warm-ups
        sample(own)
    expected, first["numpy"] = timed_call(numpy_fn)
    matches = all(same(got, expected) if same is not None
                  else _same_result(got, expected, exact) for got in results)
    del result, results, expected
    if not blas:
        names = ["fastconv", "numpy"] + own[1:]
        warm_up(names)
        settle(blas)
        sample(names)
    else:
        sample(["numpy"])  # straight after its checking call: its BLAS threads are its own
        if "gemm" in fns:
            settle(blas)  # NumPy's BLAS threads, before another BLAS library runs
            warm_up(["gemm"])
            sample(["gemm"])
    return Row(
        op=op, layer=case.layer.name, batch=case.batch, shape=case.image_shape(config.layout),
        nbytes=nbytes, fastconv_s=seconds["fastconv"], numpy_s=seconds.get("numpy"),
        torch_s=seconds.get("torch"), matches_numpy=matches, flops=flops,
        gemm_s=seconds.get("gemm"),
        algorithm_s={name: seconds[f"algorithm={name}"] for name in algorithm_fns or {}},
        extra={f"{name}_s": seconds[f"peer={name}"] for name in peer_fns or {}})
