"""Fingerprints of fastconv's results, to show that a refactor changed no bit.

    python scripts/bitcheck.py save before.json      # on the old code
    python scripts/bitcheck.py compare before.json   # on the new code: lists what differs

Every convolution entry point (conv2d, the three gradients of conv2d_backward,
conv_transpose2d, the Conv2D layer with and without a workspace cap, im2col, col2im) runs
on the layer suite (fastconv/data/layers.json, batches 1 and 3, or 8 for images of 14×14
and less) and on a list of odd test geometries, in both layouts, float32 and float64
(float64 on the test geometries only), with 1 and 2 threads. Each result is reduced to a
SHA-256 of its bytes. Only the public API is used, so the script runs on any version.
"""
from __future__ import annotations

import hashlib
import json
import sys
from importlib import resources

import numpy as np

import fastconv

# (batch, C_in, H, W, C_out, kernel, stride, padding, dilation, groups)
GEOMETRIES = {
    "basic": (2, 3, 8, 8, 4, 3, 1, 0, 1, 1),
    "pad-asym": (2, 3, 6, 7, 4, (3, 2), 1, ((0, 2), (1, 0)), 1, 1),
    "stride2-pad1": (2, 3, 9, 9, 4, 3, 2, 1, 1, 1),
    "dil-stride-asym": (1, 3, 11, 12, 4, (2, 3), (2, 1), ((1, 3), (2, 0)), (3, 2), 1),
    "groups3-strided": (1, 6, 8, 9, 9, (3, 2), 2, 1, 1, 3),
    "depthwise": (2, 5, 8, 8, 5, 3, 1, 1, 1, 5),
    "depthwise-wide-s2": (1, 16, 10, 25, 16, 3, 2, 1, 1, 16),
    "depthwise-wide-dil": (2, 32, 9, 23, 32, 3, 1, ((1, 2), (2, 1)), (1, 2), 32),
    "depthwise-k5-mult2": (1, 2, 8, 20, 4, 5, 1, 2, 1, 2),
    "pointwise": (2, 8, 6, 7, 5, 1, 1, 0, 1, 1),
    "pointwise-groups": (2, 6, 5, 5, 4, 1, 1, 0, 1, 2),
    "1x1-strided": (2, 4, 7, 8, 3, 1, 2, 0, 1, 1),
    "1x1-padded": (1, 3, 4, 4, 2, 1, 1, 1, 1, 1),
    "stride>kernel": (1, 2, 10, 10, 3, (1, 2), (4, 5), ((2, 1), (0, 3)), 1, 1),
    "kernel=padded-input": (2, 2, 3, 4, 3, (5, 6), 1, 1, 1, 1),
    "1x1-image-pad": (2, 2, 1, 1, 3, 3, 1, 1, 1, 1),
    "batch0": (0, 3, 5, 5, 4, 3, 1, 1, 1, 1),
    "many-tiles": (3, 8, 37, 21, 16, 3, 1, 1, 1, 1),
    "wide-k5": (2, 3, 20, 9, 4, 5, (1, 2), 2, 1, 1),
    "direct-16": (2, 16, 20, 30, 32, 3, 1, 1, 1, 1),
    "direct-48-s2": (1, 8, 21, 33, 48, 3, 2, 1, 1, 1),
    "channel-blocks": (1, 64, 9, 9, 300, 3, 1, 1, 1, 1),
    "column-blocks": (1, 300, 6, 6, 20, 3, 1, 1, 1, 1),
    "grouped-small": (8, 40, 5, 5, 272, 3, 1, 1, 1, 1),
    "grouped-small-1x1": (8, 64, 7, 7, 288, 1, 1, 0, 1, 1),
}


def layer_suite():
    with resources.files("fastconv").joinpath("data/layers.json").open() as handle:
        layers = json.load(handle)["layers"]
    cases = {}
    for layer in layers:
        size = layer["size"]
        batches = layer.get("batches", [1, 8 if size <= 14 else 3])
        for batch in batches:
            cases[f"{layer['name']}@{batch}"] = (
                batch, layer["in_channels"], size, size, layer["out_channels"], layer["kernel"],
                layer["stride"], layer["padding"], 1, layer.get("groups", 1))
    return cases


def digest(array):
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()[:20]


def arrays(spec, layout, dtype, rng):
    n, c, h, w, cout, k, s, p, d, g = spec
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((cout, c // g, kh, kw)) / np.sqrt(c // g * kh * kw)
    bias = rng.standard_normal(cout)
    if layout == "NHWC":
        x, weight = x.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0)
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in (x, weight, bias))


def fingerprints(spec, layout, dtype, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w, cout, k, s, p, d, g = spec
    kh, kw = (k, k) if isinstance(k, int) else k
    x, weight, bias = arrays(spec, layout, dtype, rng)
    geom = dict(stride=s, padding=p, dilation=d, groups=g, layout=layout)
    y = fastconv.conv2d(x, weight, bias, **geom)
    grad = np.ascontiguousarray(rng.standard_normal(y.shape), dtype=dtype)
    grads = fastconv.conv2d_backward(grad, x, weight, **geom)
    result = {"conv2d": digest(y), "grad_input": digest(grads.grad_input),
              "grad_weight": digest(grads.grad_weight), "grad_bias": digest(grads.grad_bias)}
    # conv_transpose2d of the output gradient with the same weight (its layout is the
    # transposed convolution's): the input gradient again, through its own entry point
    if g == 1 and n > 0:
        pads = [(v, v) if isinstance(v, int) else tuple(v)
                for v in ((p, p) if isinstance(p, int) else p)]
        strides = (s, s) if isinstance(s, int) else s
        dilations = (d, d) if isinstance(d, int) else d
        outs = y.shape[2:] if layout == "NCHW" else y.shape[1:3]
        extra = [size + a + b - (o - 1) * st - dl * (kk - 1) - 1
                 for size, (a, b), o, st, dl, kk in zip((h, w), pads, outs, strides, dilations,
                                                          (kh, kw))]
        if all(e < max(st, dl) for e, st, dl in zip(extra, strides, dilations)):
            t = fastconv.conv_transpose2d(grad, weight, stride=s, padding=tuple(pads),
                                          output_padding=tuple(extra), dilation=d,
                                          layout=layout)
            result["conv_transpose2d"] = digest(t)
    for cap in (None, 1 << 16):
        try:
            layer = fastconv.Conv2D(c, cout, (kh, kw), s, p, d, g, layout=layout, dtype=dtype,
                                    max_workspace_bytes=cap)
        except ValueError:
            continue
        layer.weight[...] = weight
        layer.bias[...] = bias
        try:
            out = layer(x)
            back = layer.backward(grad)
        except ValueError:  # the cap is below one output row
            result[f"Conv2D[{cap}]"] = "ValueError"
            continue
        result[f"Conv2D[{cap}]"] = [digest(out), digest(back), digest(layer.weight_grad),
                                    digest(layer.bias_grad)]
    if n > 0 and h > 0 and w > 0:
        cols = fastconv.im2col(x, (kh, kw), stride=s, padding=p, dilation=d, layout=layout)
        result["im2col"] = digest(cols)
        result["col2im"] = digest(fastconv.col2im(cols, (h, w), (kh, kw), stride=s, padding=p,
                                                  dilation=d, layout=layout))
    return result


def run():
    results = {}
    suites = [(GEOMETRIES, (np.float32, np.float64)), (layer_suite(), (np.float32,))]
    seed = 0
    for cases, dtypes in suites:
        for name, spec in cases.items():
            for layout in ("NCHW", "NHWC"):
                for dtype in dtypes:
                    seed += 1
                    for threads in (1, 2):
                        with fastconv.threads(threads):
                            key = f"{name}/{layout}/{np.dtype(dtype).name}/t{threads}"
                            results[key] = fingerprints(spec, layout, dtype, seed)
    return results


def main(argv):
    if len(argv) != 3 or argv[1] not in ("save", "compare"):
        print(__doc__)
        return 2
    results = run()
    if argv[1] == "save":
        with open(argv[2], "w") as handle:
            json.dump(results, handle, indent=0, sort_keys=True)
        print(f"saved {len(results)} cases to {argv[2]}")
        return 0
    with open(argv[2]) as handle:
        before = json.load(handle)
    differ = [key for key in sorted(set(before) | set(results))
              if before.get(key) != results.get(key)]
    for key in differ:
        old, new = before.get(key) or {}, results.get(key) or {}
        fields = [f for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f)]
        print(f"DIFFERS {key}: {', '.join(fields)}")
    values = sum(len(v) for v in results.values())
    print(f"{len(results)} cases, {values} results: {len(differ)} cases differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
