"""What a benchmark run measures: :class:`Config` and its validating constructor
:func:`make_config`."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

import fastconv
from fastconv.bench.sections import SECTIONS
from fastconv.bench.suite import BenchError, Case, load_layers, select_layers
from fastconv.bench.timing import FAST, FULL, Timing

__all__ = ["LAYOUTS", "DTYPES", "Config", "load_torch", "make_config"]

LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float64")


@dataclass
class Config:
    """What to run. `batches` None means each layer's own batches from layers.json."""

    layers: list
    batches: tuple | None = None
    layout: str = "NCHW"
    dtype: np.dtype = np.dtype(np.float32)
    threads: int = 1
    timing: Timing = FAST
    ops: tuple = ()
    torch: object = None  # the torch module, or None to skip the torch baseline
    seed: int = 0

    def layer_cases(self):
        """(layer, batch) cases in suite order."""
        return [Case(layer, batch) for layer in self.layers
                for batch in (self.batches or layer.batches)]

    def random(self, shape):
        """Reproducible standard-normal data of the configured dtype."""
        return np.random.default_rng(self.seed).standard_normal(shape, dtype=self.dtype)


def load_torch(enabled=True):
    """The torch module when wanted and installed, else None (never raises)."""
    if not enabled or importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:  # a broken torch install must not stop the benchmark
        return None
    return torch


def make_config(layers=None, batches=None, layout="NCHW", dtype="float32", threads=None,
                full=False, ops=None, use_torch=True, repeats=None, user_layers=None):
    """A validated :class:`Config`; bad values raise :class:`BenchError` (one-line message).

    `user_layers` (:class:`~fastconv.bench.suite.Layer` objects, e.g. from
    :func:`~fastconv.bench.suite.parse_conv`) run after the suite's `layers`; with user
    layers and no `layers`, only the user layers run.
    """
    layout = str(layout).upper()
    if layout not in LAYOUTS:
        raise BenchError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if str(dtype) not in DTYPES:
        raise BenchError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batches is not None and any(int(b) < 1 for b in batches):
        raise BenchError(f"batch sizes must be >= 1, got {list(batches)}")
    if threads is not None and int(threads) < 1:
        raise BenchError(f"threads must be >= 1, got {threads}")
    ops = tuple(ops or SECTIONS)
    unknown = [op for op in ops if op not in SECTIONS]
    if unknown:
        raise BenchError(f"unknown section {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(SECTIONS)}")
    timing = FULL if full else FAST
    if repeats is not None:
        if int(repeats) < 1:
            raise BenchError(f"repeats must be >= 1, got {repeats}")
        timing = Timing(repeats=int(repeats), min_repeats=int(repeats), budget_s=0.0,
                        min_sample_s=timing.min_sample_s, once_s=timing.once_s)
    chosen = select_layers(load_layers(), layers) if layers or not user_layers else []
    chosen += list({layer.name: layer for layer in user_layers or ()}.values())
    return Config(
        layers=chosen,
        batches=tuple(int(b) for b in batches) if batches else None,
        layout=layout, dtype=np.dtype(dtype),
        threads=int(threads) if threads is not None else fastconv.get_num_threads(),
        timing=timing, ops=ops, torch=load_torch(use_torch))
