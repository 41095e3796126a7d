"""What a benchmark run measures: :class:`Config` and its validating constructor
:func:`make_config`."""
from __future__ import annotations

import fnmatch
import importlib.util
from dataclasses import dataclass

import numpy as np

import fastconv
from fastconv.bench.sections import SECTIONS
from fastconv.bench.suite import (
    SIGNALS,
    VOLUMES,
    BenchError,
    Case,
    SignalCase,
    VolumeCase,
    load_layers,
)
from fastconv.bench.timing import FAST, FULL, Timing

__all__ = ["LAYOUTS", "DTYPES", "PADDING_MODES", "Config", "load_torch", "make_config"]

LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float64")
PADDING_MODES = ("reflect", "replicate", "circular")  # the padding_mode section's choices


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
    signals: list = ()    # the 1-D layers of the conv1d sections
    padding_mode: str = "reflect"  # the padding_mode section's mode (vs "zeros")
    volumes: list = ()    # the 3-D layers of the conv3d sections

    def layer_cases(self):
        """(layer, batch) cases in suite order."""
        return [Case(layer, batch) for layer in self.layers
                for batch in (self.batches or layer.batches)]

    def signal_cases(self):
        """(1-D layer, batch) cases, :data:`~fastconv.bench.suite.SIGNALS` order first."""
        return [SignalCase(signal, batch) for signal in self.signals
                for batch in (self.batches or signal.batches)]

    def volume_cases(self):
        """(3-D layer, batch) cases, :data:`~fastconv.bench.suite.VOLUMES` order first."""
        return [VolumeCase(volume, batch) for volume in self.volumes
                for batch in (self.batches or volume.batches)]

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


def _select(patterns, user_given):
    """(2-D layers, 1-D signals, 3-D volumes) of the suite named by `patterns` (names or
    globs over all three); every layer without patterns unless the user gave layers of
    their own (then none). A pattern that names nothing is a BenchError listing the
    names."""
    layers = load_layers()
    if not patterns:
        return ([], [], []) if user_given else (layers, list(SIGNALS), list(VOLUMES))
    names = ([layer.name for layer in layers] + [signal.name for signal in SIGNALS]
             + [volume.name for volume in VOLUMES])
    unknown = [p for p in patterns if not fnmatch.filter(names, p)]
    if unknown:
        raise BenchError(f"unknown layer {', '.join(map(repr, unknown))}; "
                         f"valid names: {', '.join(names)}")

    def chosen(items):
        return [item for item in items
                if any(fnmatch.fnmatchcase(item.name, p) for p in patterns)]
    return chosen(layers), chosen(SIGNALS), chosen(VOLUMES)


def make_config(layers=None, batches=None, layout="NCHW", dtype="float32", threads=None,
                full=False, ops=None, use_torch=True, repeats=None, user_layers=None,
                user_signals=None, padding_mode="reflect", user_volumes=None):
    """A validated :class:`Config`; bad values raise :class:`BenchError` (one-line message).

    `layers` selects the suite's 2-D layers and 1-D signals by name or glob.
    `user_layers` (:class:`~fastconv.bench.suite.Layer` objects, e.g. from
    :func:`~fastconv.bench.suite.parse_conv`) and `user_signals`
    (:class:`~fastconv.bench.suite.Signal`, from
    :func:`~fastconv.bench.suite.parse_conv1d`) and `user_volumes`
    (:class:`~fastconv.bench.suite.Volume`, from :func:`~fastconv.bench.suite.parse_conv3d`)
    run after the suite's; with user layers and no `layers`, only the user's run.
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
    if padding_mode not in PADDING_MODES:
        raise BenchError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got "
                         f"{padding_mode!r}")
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
    chosen, signals, volumes = _select(layers,
                                       bool(user_layers or user_signals or user_volumes))
    chosen += list({layer.name: layer for layer in user_layers or ()}.values())
    signals += list({signal.name: signal for signal in user_signals or ()}.values())
    volumes += list({volume.name: volume for volume in user_volumes or ()}.values())
    return Config(
        layers=chosen,
        batches=tuple(int(b) for b in batches) if batches else None,
        layout=layout, dtype=np.dtype(dtype),
        threads=int(threads) if threads is not None else fastconv.get_num_threads(),
        timing=timing, ops=ops, torch=load_torch(use_torch), signals=signals,
        padding_mode=padding_mode, volumes=volumes)
