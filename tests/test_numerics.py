"""Numerics (docs/spec.md §0 dtypes, §2): float64 to 1e-12, float32 to 1e-5, NaN/Inf as PyTorch.

Error measure. A convolution output is a sum of products, y = Σ w·x, and the rounding
error of any summation order is bounded by a multiple of Σ |w|·|x| (the same convolution
on absolute values), not of |y|, which cancellation can make arbitrarily small. So
"relative error" here is, per output element,

    |y − y_ref| / (|w| ⋆ |x|)      (⋆ the same convolution, on absolute values)

and its maximum over the output must stay below 1e-12 for float64 and below 1e-5 for
float32 (whose reference is the same float32 data convolved in float64). Gradients use
the same bound with their own operands.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import fastconv
from fastconv import reference

LAYERS = json.loads((pathlib.Path(fastconv.__file__).parent / "data" / "layers.json")
                    .read_text())["layers"]
SPATIAL_CAP = 20  # the layer suite's images are cropped to this (K, the summed length, is kept)


def ref_conv(x, w, stride=1, padding=0, dilation=1, groups=1):
    """float64 reference.conv2d_strided on NCHW / OIHW arrays."""
    y = reference.conv2d_strided(x.astype(np.float64).transpose(0, 2, 3, 1),
                                 w.astype(np.float64).transpose(2, 3, 1, 0),
                                 stride, padding, dilation, groups)
    return y.transpose(0, 3, 1, 2)


def ref_backward(g, x, w, stride=1, padding=0, dilation=1, groups=1):
    """float64 reference.conv2d_backward on NCHW / OIHW arrays: (grad_x, grad_w)."""
    gx, gw, _ = reference.conv2d_backward(
        g.astype(np.float64).transpose(0, 2, 3, 1), x.astype(np.float64).transpose(0, 2, 3, 1),
        w.astype(np.float64).transpose(2, 3, 1, 0), stride, padding, dilation, groups)
    return gx.transpose(0, 3, 1, 2), gw.transpose(3, 2, 0, 1)


def relative_error(value, exact, scale):
    """max |value − exact| / scale over the elements (scale = the sum of |terms|)."""
    value = np.asarray(value, dtype=np.float64)
    scale = np.where(scale > 0, scale, 1.0)
    return float(np.max(np.abs(value - exact) / scale, initial=0.0))


def conv_errors(x, w, layouts=("NCHW",), **geometry):
    """Relative errors of conv2d and both gradients against the float64 reference, per
    layout: {layout: {forward, grad_input, grad_weight}}."""
    rng = np.random.default_rng(0)
    exact = ref_conv(x, w, **geometry)
    bound = ref_conv(np.abs(x), np.abs(w), **geometry)
    g = rng.standard_normal(exact.shape).astype(x.dtype)
    exact_gx, exact_gw = ref_backward(g, x, w, **geometry)
    bound_gx, bound_gw = ref_backward(np.abs(g), np.abs(x), np.abs(w), **geometry)
    errors = {}
    for layout in layouts:
        if layout == "NHWC":
            to_nhwc = (0, 2, 3, 1)
            y = fastconv.conv2d(x.transpose(to_nhwc), w.transpose(2, 3, 1, 0), layout="NHWC",
                                **geometry).transpose(0, 3, 1, 2)
            grads = fastconv.conv2d_backward(g.transpose(to_nhwc), x.transpose(to_nhwc),
                                             w.transpose(2, 3, 1, 0), layout="NHWC",
                                             needs_bias_grad=False, **geometry)
            grad_x = grads.grad_input.transpose(0, 3, 1, 2)
            grad_w = grads.grad_weight.transpose(3, 2, 0, 1)
        else:
            y = fastconv.conv2d(x, w, **geometry)
            grads = fastconv.conv2d_backward(g, x, w, needs_bias_grad=False, **geometry)
            grad_x, grad_w = grads.grad_input, grads.grad_weight
        errors[layout] = {"forward": relative_error(y, exact, bound),
                          "grad_input": relative_error(grad_x, exact_gx, bound_gx),
                          "grad_weight": relative_error(grad_w, exact_gw, bound_gw)}
    return errors


GEOMETRIES = {
    "3x3": dict(x=(2, 16, 12, 12), w=(24, 16, 3, 3), padding=1),
    "strided-dilated": dict(x=(2, 8, 17, 15), w=(8, 8, 3, 5), stride=2, padding=(2, 1),
                            dilation=2),
    "groups": dict(x=(2, 12, 10, 10), w=(18, 4, 3, 3), padding=1, groups=3),
    "depthwise": dict(x=(2, 16, 14, 14), w=(32, 1, 5, 5), padding=2, groups=16),
    "pointwise": dict(x=(3, 64, 7, 7), w=(32, 64, 1, 1)),
    "long-K": dict(x=(1, 512, 7, 7), w=(64, 512, 3, 3), padding=1),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_float64_matches_the_reference_to_1e_12(name):
    spec = dict(GEOMETRIES[name])
    rng = np.random.default_rng(1)
    x = rng.standard_normal(spec.pop("x"))
    w = rng.standard_normal(spec.pop("w"))
    errors = conv_errors(x, w, ("NCHW", "NHWC"), **spec)
    assert max(max(e.values()) for e in errors.values()) < 1e-12, errors


def test_float64_transposed_convolution_matches_the_reference_to_1e_12():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 24, 9, 9))
    w = rng.standard_normal((24, 8, 4, 4))  # (C_in, C_out, kh, kw)
    y = fastconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    # conv_transpose2d is the input gradient of conv2d from (8, 19, 19) images.
    image = np.zeros((2, 8) + y.shape[2:])
    exact, _ = ref_backward(x, image, w, stride=2, padding=1)
    bound, _ = ref_backward(np.abs(x), image, np.abs(w), stride=2, padding=1)
    assert relative_error(y, exact, bound) < 1e-12


def test_the_error_measure_is_not_trivially_small():
    # The same data rounded to float32 before a float64 convolution: errors around 1e-8,
    # far above the float64 bound and below the float32 one.
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 16, 8, 8)), rng.standard_normal((8, 16, 3, 3))
    rounded = ref_conv(x.astype(np.float32), w.astype(np.float32))
    error = relative_error(rounded, ref_conv(x, w), ref_conv(np.abs(x), np.abs(w)))
    assert 1e-12 < error < 1e-5


def layer_case(layer, rng):
    """Batch-1 float32 input and weight of a layer-suite entry, cropped to SPATIAL_CAP."""
    size = min(layer["size"], SPATIAL_CAP)
    groups = layer.get("groups", 1)
    x = rng.standard_normal((1, layer["in_channels"], size, size)).astype(np.float32)
    w = rng.standard_normal((layer["out_channels"], layer["in_channels"] // groups,
                             layer["kernel"], layer["kernel"])).astype(np.float32)
    geometry = dict(stride=layer["stride"], padding=layer["padding"], groups=groups)
    return x, w, geometry


def test_float32_stays_within_1e_5_of_float64_on_the_layer_suite():
    rng = np.random.default_rng(4)
    worst = {}
    print("\nfloat32 vs float64 (batch 1, images cropped to "
          f"{SPATIAL_CAP}), worst relative error per layer:")
    for layer in LAYERS:
        x, w, geometry = layer_case(layer, rng)
        errors = conv_errors(x, w, ("NCHW", "NHWC"), **geometry)
        worst[layer["name"]] = max(max(e.values()) for e in errors.values())
        print(f"  {layer['name']:22s} " + "  ".join(
            f"{key} {max(e[key] for e in errors.values()):.2e}"
            for key in ("forward", "grad_input", "grad_weight")))
    assert max(worst.values()) < 1e-5, worst


# ============================================================ NaN and Inf

def torch_conv(torch, x, w, b, **geometry):
    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                      None if b is None else torch.from_numpy(b),
                                      **geometry).numpy()


def assert_same_specials(ours, theirs):
    """Same NaN positions, same ±Inf positions, the finite rest close."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs))
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-5, atol=1e-5)


SPECIALS = {
    "nan-pixel": ("x", (0, 1, 3, 4), np.nan),
    "inf-pixel": ("x", (0, 0, 0, 0), np.inf),
    "-inf-pixel": ("x", (1, 2, 7, 7), -np.inf),
    "nan-weight": ("w", (2, 1, 1, 0), np.nan),
    "nan-bias": ("b", (3,), np.nan),
    "inf-bias": ("b", (0,), np.inf),
}


def interior(shape, size, kernel, stride=1, padding=0, dilation=1):
    """Mask of the outputs whose window lies wholly inside the image (reads no padding)."""
    positions = np.arange(shape[-1]) * stride - padding
    inside = (positions >= 0) & (positions + dilation * (kernel - 1) < size)
    return np.broadcast_to(inside[:, None] & inside[None, :], shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("name", list(SPECIALS))
def test_nan_and_inf_propagate_as_in_pytorch(torch, name, groups, dtype):
    # Positive data, so an Inf pixel gives +Inf (never Inf − Inf) wherever it is read.
    # A NaN weight meets the padding's zeros at the border, where 0·NaN is NaN for a
    # GEMM on im2col columns (fastconv's GEMM path, PyTorch's float64 path) and absent for
    # direct loops that skip the padding (fastconv's depthwise path, PyTorch's float32
    # oneDNN path): PyTorch itself differs between dtypes there, so for weights only the
    # outputs that read no padding are compared.
    rng = np.random.default_rng(5)
    arrays = {"x": rng.uniform(0.5, 1, (2, 3, 8, 8)).astype(dtype),
              "w": rng.uniform(0.5, 1, (6, 3 // groups, 3, 3)).astype(dtype),
              "b": rng.uniform(0.5, 1, 6).astype(dtype)}
    which, index, value = SPECIALS[name]
    arrays[which][index if which != "w" or groups == 1 else index[:1] + (0,) + index[2:]] = value
    x, w, b = arrays["x"], arrays["w"], arrays["b"]
    for geometry in (dict(padding=0), dict(padding=1, stride=2), dict(padding=2, dilation=2)):
        expected = torch_conv(torch, x, w, b, groups=groups, **geometry)
        ours = fastconv.conv2d(x, w, b, groups=groups, **geometry)
        nhwc = fastconv.conv2d(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), b,
                               groups=groups, layout="NHWC", **geometry).transpose(0, 3, 1, 2)
        compared = (interior(expected.shape, 8, 3, **geometry) if which == "w"
                    else np.ones(expected.shape, bool))
        assert compared.any()
        assert_same_specials(ours[compared], expected[compared])
        assert_same_specials(nhwc[compared], expected[compared])
        if which == "w":  # at the border: NaN (0·NaN) or the value without the NaN tap
            skipped = torch_conv(torch, x, np.nan_to_num(w, nan=0.0), b, groups=groups,
                                 **geometry)
            for result in (ours, nhwc):
                border = result[~compared]
                assert np.all(np.isnan(border) | np.isclose(border, skipped[~compared],
                                                            rtol=1e-5))


@pytest.mark.parametrize("name", ["nan-pixel", "inf-pixel"])
def test_nan_and_inf_in_gradients_as_in_pytorch(torch, name):
    rng = np.random.default_rng(6)
    x = rng.uniform(0.5, 1, (2, 3, 8, 8))
    w = rng.uniform(0.5, 1, (4, 3, 3, 3))
    g = rng.uniform(0.5, 1, (2, 4, 8, 8))
    g[0, 1, 2, 3] = np.nan if name == "nan-pixel" else np.inf
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    torch.nn.functional.conv2d(tx, tw, padding=1).backward(torch.from_numpy(g))
    grads = fastconv.conv2d_backward(g, x, w, padding=1)
    assert_same_specials(grads.grad_input, tx.grad.numpy())
    assert_same_specials(grads.grad_weight, tw.grad.numpy())
    assert_same_specials(grads.grad_bias, g.sum(axis=(0, 2, 3)))


def test_nan_moves_through_im2col_and_col2im_unchanged():
    x = np.arange(2 * 2 * 5 * 5, dtype=np.float64).reshape(2, 2, 5, 5)
    x[1, 0, 2, 2] = np.nan
    x[0, 1, 0, 4] = -np.inf
    cols = fastconv.im2col(x, 3, padding=1)
    np.testing.assert_array_equal(cols, reference.im2col(x, 3, padding=1))  # NaN == NaN here
    np.testing.assert_array_equal(fastconv.col2im(cols, (5, 5), 3, padding=1),
                                  reference.col2im(cols, (5, 5), 3, padding=1))
