"""From seven loops to fastconv: the CMU Deep Learning Systems convolution lecture, timed.

The lecture computes a convolution four ways on an NHWC batch ``Z`` and an HWIO weight
``W``; this script times each on the lecture's layer (``lecture.8to16`` of the benchmark
suite: 100 images of 32×32 with 8 channels, 3×3 kernel, 16 output channels, no padding)
and checks that they agree:

1. ``fastconv.reference.conv2d_naive``: the seven nested Python loops;
2. ``fastconv.reference.conv2d_matmul``: one matmul per kernel offset (9 here);
3. ``fastconv.reference.conv2d_strided``: an ``as_strided`` im2col view, copied, and a
   single matmul;
4. ``fastconv.conv2d(..., layout="NHWC")``: the same im2col + GEMM in Cython tiles, on
   all of fastconv's threads.

The naive loops take seconds per image, so they run on ``--naive-batch`` images (1 by
default) and every method is also reported per image::

    python examples/lecture.py
    python examples/lecture.py --batch 8 --size 12         # smaller and quicker
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastconv
from fastconv import reference
from fastconv.bench.suite import load_layers

LAYER = "lecture.8to16"


def best_seconds(fn, repeats):
    """(result of the first call, best seconds over `repeats` calls of `fn()`)."""
    best, result = float("inf"), None
    for repeat in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
        if repeat == 0:
            result = value
    return result, best


def build_parser():
    layer = {entry.name: entry for entry in load_layers()}[LAYER]
    parser = argparse.ArgumentParser(
        prog="lecture.py",
        description="Time the lecture's naive, matmul and strided convolutions against "
                    f"fastconv.conv2d on the {LAYER} layer (NHWC).")
    parser.add_argument("--batch", type=int, default=layer.batches[0],
                        help=f"images for all but the naive loops (default {layer.batches[0]})")
    parser.add_argument("--naive-batch", type=int, default=1,
                        help="images for the naive loops (default 1)")
    parser.add_argument("--size", type=int, default=layer.size,
                        help=f"image height and width (default {layer.size})")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per method, best kept (the naive loops run once)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None,
                        help="fastconv threads (default: fastconv.get_num_threads())")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    """Run the comparison, print the table; returns its rows as a list of dicts
    (``method``, ``batch``, ``seconds``, ``ms_per_image``, ``max_error``)."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.naive_batch <= args.batch:
        raise SystemExit(f"lecture.py: --naive-batch must be in 1..--batch ({args.batch}), "
                         f"got {args.naive_batch}")
    layer = {entry.name: entry for entry in load_layers()}[LAYER]
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    # The lecture's layout: Z is (N, H, W, C_in), W is (kh, kw, C_in, C_out).
    Z = rng.standard_normal((args.batch, args.size, args.size, layer.in_channels), dtype=dtype)
    W = rng.standard_normal((layer.kernel, layer.kernel, layer.in_channels,
                             layer.out_channels), dtype=dtype)
    geometry = {"stride": layer.stride, "padding": layer.padding}
    threads = args.threads or fastconv.get_num_threads()

    methods = [
        ("naive (7 loops)", args.naive_batch, 1,
         lambda z: reference.conv2d_naive(z, W, **geometry)),
        ("matmul per offset", args.batch, args.repeats,
         lambda z: reference.conv2d_matmul(z, W, **geometry)),
        ("as_strided + matmul", args.batch, args.repeats,
         lambda z: reference.conv2d_strided(z, W, **geometry)),
        (f"fastconv.conv2d ({threads} thr)", args.batch, args.repeats,
         lambda z: fastconv.conv2d(z, W, layout="NHWC", **geometry)),
    ]
    with fastconv.threads(threads):
        expected = fastconv.conv2d(Z, W, layout="NHWC", **geometry)
        scale = float(np.abs(expected).max()) or 1.0
        rows = []
        for name, batch, repeats, fn in methods:
            result, seconds = best_seconds(lambda fn=fn, batch=batch: fn(Z[:batch]), repeats)
            error = float(np.abs(result - expected[:batch]).max()) / scale
            rows.append({"method": name, "batch": batch, "seconds": seconds,
                         "ms_per_image": 1e3 * seconds / batch, "max_error": error})

    print(f"{LAYER}: Z ({args.batch}, {args.size}, {args.size}, {layer.in_channels}) NHWC, "
          f"W {W.shape} HWIO, {dtype.name}, output {expected.shape}")
    naive_ms = rows[0]["ms_per_image"]
    header = (f"{'method':<28} {'images':>6} {'time ms':>10} {'ms/image':>10} "
              f"{'vs naive':>9} {'vs previous':>11} {'max rel err':>11}")
    print(header)
    print("-" * len(header))
    previous_ms = None
    for row in rows:
        vs_previous = "-" if previous_ms is None else f"{previous_ms / row['ms_per_image']:.1f}x"
        print(f"{row['method']:<28} {row['batch']:>6} {1e3 * row['seconds']:>10.3f} "
              f"{row['ms_per_image']:>10.4f} {naive_ms / row['ms_per_image']:>8.0f}x "
              f"{vs_previous:>11} {row['max_error']:>11.1e}")
        previous_ms = row["ms_per_image"]
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    worst = max(row["max_error"] for row in rows)
    if worst > tolerance:
        raise SystemExit(f"lecture.py: results disagree (max relative error {worst:.1e})")
    print(f"all four agree (max error {worst:.1e} of the largest output)")
    return rows


if __name__ == "__main__":
    main()
