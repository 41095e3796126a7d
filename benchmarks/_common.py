"""Parameters and helpers shared by the asv benchmarks (no benchmarks here).

Every benchmark is parametrised over the image layout, the dtype, a few layers of
``fastconv/data/layers.json`` (the suite ``python -m fastconv bench`` runs), the batch
size and fastconv's thread count, and its ``setup`` allocates every input and ``out=``
buffer, so only the operator (and its argument checks) is measured.
"""
import time

import numpy as np

import fastconv
from fastconv.bench.suite import Case, load_layers

LAYOUTS = ["NCHW", "NHWC"]
DTYPES = ["float32", "float64"]
BATCHES = [1, 8]
THREADS = [1, 2]


def suite_case(name, batch):
    """The :class:`fastconv.bench.suite.Case` of suite layer `name` at `batch`."""
    return Case({layer.name: layer for layer in load_layers()}[name], batch)


def random(shape, dtype, seed=0):
    """Standard-normal data of `shape` and `dtype`, the same on every run."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.dtype(dtype))


def best_times(functions, rounds=5):
    """Best time of each function over `rounds` round-robin samples (after a warm call),
    for the ``track_`` ratios against torch."""
    best = [float("inf")] * len(functions)
    for function in functions:
        function()
    for _ in range(rounds):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


class ThreadedBenchmark:
    """Runs the benchmark with fastconv at the ``threads`` parameter (the last one).

    Subclasses call :meth:`use_threads` in ``setup``; ``teardown`` restores the previous
    setting.
    """

    def use_threads(self, threads):
        self._threads = fastconv.threads(threads)
        self._threads.__enter__()

    def teardown(self, *params):
        threads = getattr(self, "_threads", None)
        if threads is not None:
            threads.__exit__(None, None, None)
            self._threads = None
