"""ConvGeometry (docs/spec.md §2, last paragraph) and the output-size rule of docs/spec.md §0."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import ConvGeometry, reference

from conftest import out_hw, pair

# ============================================================ a hand-computed example

# N=2, C_in=6, H=10, W=12; C_out=8, kernel (3, 5), stride (2, 1), padding ((1, 2), (0, 3)),
# dilation (1, 2), groups 2:
#   OH = (10 + 1 + 2 - 1·2 - 1)//2 + 1 = 6,   OW = (12 + 0 + 3 - 2·4 - 1)//1 + 1 = 7
#   M = 8/2 = 4,  K = 6/2·3·5 = 45,  N = 6·7 = 42
#   flops = 2·batch·groups·M·K·N = 2·2·2·4·45·42 = 60480
#   column buffer = batch·C_in·kh·kw·OH·OW = 2·6·15·42 = 7560 elements
EXAMPLE = dict(out_channels=8, kernel_size=(3, 5), stride=(2, 1), padding=((1, 2), (0, 3)),
               dilation=(1, 2), groups=2)


@pytest.mark.parametrize("input_shape, layout, expected", [
    ((2, 6, 10, 12), "NCHW", (2, 8, 6, 7)),
    ((2, 10, 12, 6), "NHWC", (2, 6, 7, 8)),
    ((6, 10, 12), "NCHW", (8, 6, 7)),
    ((10, 12, 6), "NHWC", (6, 7, 8)),
    ((2, 6, 10, 12), "nchw", (2, 8, 6, 7)),
    ((10, 12, 6), "nhwc", (6, 7, 8)),
])
def test_output_shape_hand_example(input_shape, layout, expected):
    geometry = ConvGeometry(input_shape, layout=layout, **EXAMPLE)
    assert tuple(geometry.output_shape) == expected


@pytest.mark.parametrize("input_shape, layout", [((2, 6, 10, 12), "NCHW"),
                                                 ((2, 10, 12, 6), "NHWC")])
def test_gemm_shape_flops_and_column_bytes_hand_example(input_shape, layout):
    geometry = ConvGeometry(input_shape, layout=layout, **EXAMPLE)
    assert tuple(geometry.gemm_shape) == (4, 45, 42)
    assert geometry.flops == 60480
    assert geometry.column_bytes(np.float32) == 7560 * 4
    assert geometry.column_bytes(np.float64) == 7560 * 8
    assert geometry.column_bytes(np.dtype("float64")) == 7560 * 8


def test_unbatched_geometry_counts_one_image():
    geometry = ConvGeometry((6, 10, 12), **EXAMPLE)
    assert tuple(geometry.gemm_shape) == (4, 45, 42)
    assert geometry.flops == 60480 // 2
    assert geometry.column_bytes(np.float32) == 7560 * 4 // 2


def test_small_geometry_by_hand():
    # 1×1×3×3 input, 1 output channel, k=2: four 2×2 windows, 4 multiply-adds each.
    geometry = ConvGeometry((1, 1, 3, 3), 1, 2)
    assert tuple(geometry.output_shape) == (1, 1, 2, 2)
    assert tuple(geometry.gemm_shape) == (1, 4, 4)
    assert geometry.flops == 2 * 16
    assert geometry.column_bytes(np.float64) == 16 * 8


def test_empty_batch_and_empty_image():
    geometry = ConvGeometry((0, 3, 5, 5), 4, 3, padding=1)
    assert tuple(geometry.output_shape) == (0, 4, 5, 5)
    assert geometry.flops == 0
    assert geometry.column_bytes(np.float32) == 0
    geometry = ConvGeometry((2, 3, 0, 4), 4, 2, padding=1)  # H = 0, padded to 2
    assert tuple(geometry.output_shape) == (2, 4, 1, 5)


# ============================================================ 'same' and 'valid'

@pytest.mark.parametrize("kernel_size, dilation, expected", [
    (3, 1, ((1, 1), (1, 1))),
    (4, 1, ((1, 2), (1, 2))),            # odd total: the extra pixel goes bottom / right
    ((2, 5), 1, ((0, 1), (2, 2))),
    ((4, 3), (1, 2), ((1, 2), (2, 2))),
    (2, 3, ((1, 2), (1, 2))),            # total 3 from dilation
    (1, 1, ((0, 0), (0, 0))),
])
def test_same_padding_split(kernel_size, dilation, expected):
    geometry = ConvGeometry((1, 2, 9, 10), 3, kernel_size, padding="same", dilation=dilation)
    assert tuple(geometry.output_shape) == (1, 3, 9, 10)
    assert tuple(tuple(p) for p in geometry.padding) == expected


def test_valid_padding_is_no_padding():
    geometry = ConvGeometry((1, 2, 9, 10), 3, (4, 3), padding="valid", dilation=(1, 2))
    assert tuple(geometry.output_shape) == (1, 3, 6, 6)
    assert tuple(tuple(p) for p in geometry.padding) == ((0, 0), (0, 0))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (4, 1), ((2, 5), 1), ((4, 3), (1, 2)),
                                                   (2, 3)])
def test_same_padding_matches_torch(torch, kernel_size, dilation):
    """torch's padding='same' equals an explicit F.pad with ConvGeometry's padding."""
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 9, 10, generator=gen, dtype=torch.float64)
    kh, kw = pair(kernel_size)
    w = torch.randn(3, 2, kh, kw, generator=gen, dtype=torch.float64)
    geometry = ConvGeometry(tuple(x.shape), 3, kernel_size, padding="same", dilation=dilation)
    (top, bottom), (left, right) = geometry.padding
    same = F.conv2d(x, w, padding="same", dilation=dilation)
    explicit = F.conv2d(F.pad(x, (left, right, top, bottom)), w, dilation=dilation)
    assert tuple(same.shape) == tuple(geometry.output_shape)
    torch.testing.assert_close(explicit, same)


# ============================================================ against torch conv2d shapes

TORCH_CASES = [
    # input_shape (NCHW), out_channels, kernel, stride, padding, dilation, groups
    ((2, 3, 8, 8), 4, 3, 1, 0, 1, 1),
    ((2, 3, 8, 8), 4, 3, 2, 1, 1, 1),
    ((1, 4, 9, 11), 6, (2, 3), (2, 1), (1, 0), (2, 1), 2),
    ((3, 6, 7, 7), 6, 3, 3, 2, 1, 3),
    ((1, 2, 5, 5), 2, 5, 1, 0, 1, 1),           # kernel = input
    ((1, 2, 1, 1), 3, 3, 2, 2, 1, 1),           # 1×1 image
    ((2, 4, 10, 9), 8, 3, 1, "same", 2, 4),
    ((2, 4, 10, 9), 8, (4, 2), 1, "same", 1, 1),
    ((2, 4, 10, 9), 8, (4, 2), 2, "valid", (1, 3), 1),
]


@pytest.mark.parametrize("case", TORCH_CASES)
def test_output_shape_matches_torch_conv2d(torch, case):
    shape, cout, kernel, stride, padding, dilation, groups = case
    kh, kw = pair(kernel)
    x = torch.zeros(shape)
    w = torch.zeros((cout, shape[1] // groups, kh, kw))
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding, dilation=dilation,
                                   groups=groups)
    args = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                groups=groups)
    assert tuple(ConvGeometry(shape, cout, **args).output_shape) == tuple(y.shape)
    n, c, h, w_ = shape
    nhwc = ConvGeometry((n, h, w_, c), cout, layout="NHWC", **args)
    assert tuple(nhwc.output_shape) == tuple(y.permute(0, 2, 3, 1).shape)
    assert tuple(ConvGeometry(shape[1:], cout, **args).output_shape) == tuple(y.shape[1:])


def test_asymmetric_padding_matches_torch_pad_then_conv(torch):
    F = torch.nn.functional
    x = torch.zeros(2, 4, 9, 8)
    w = torch.zeros(6, 2, 3, 2)
    y = F.conv2d(F.pad(x, (2, 0, 1, 3)), w, stride=(2, 3), dilation=(2, 1), groups=2)
    geometry = ConvGeometry((2, 4, 9, 8), 6, (3, 2), stride=(2, 3), padding=((1, 3), (2, 0)),
                            dilation=(2, 1), groups=2)
    assert tuple(geometry.output_shape) == tuple(y.shape)


# ============================================================ errors

GEOMETRY_ERRORS = {
    # name: (input_shape, out_channels, kwargs, match)
    "groups-not-dividing-in": ((1, 3, 8, 8), 4, dict(kernel_size=3, groups=2),
                               r"ConvGeometry: groups.*2.*3"),
    "groups-not-dividing-out": ((1, 4, 8, 8), 3, dict(kernel_size=3, groups=2),
                                r"ConvGeometry: groups.*2"),
    "groups-0": ((1, 4, 8, 8), 4, dict(kernel_size=3, groups=0), r"ConvGeometry: groups.*0"),
    "groups-neg": ((1, 4, 8, 8), 4, dict(kernel_size=3, groups=-2), r"ConvGeometry: groups"),
    "groups-float": ((1, 4, 8, 8), 4, dict(kernel_size=3, groups=2.0), r"ConvGeometry: groups"),
    "groups-bool": ((1, 4, 8, 8), 4, dict(kernel_size=3, groups=True), r"ConvGeometry: groups"),
    "out_channels-0": ((1, 4, 8, 8), 0, dict(kernel_size=3), r"ConvGeometry: out_channels.*0"),
    "out_channels-neg": ((1, 4, 8, 8), -4, dict(kernel_size=3), r"ConvGeometry: out_channels"),
    "out_channels-float": ((1, 4, 8, 8), 4.0, dict(kernel_size=3),
                           r"ConvGeometry: out_channels"),
    "layout": ((1, 4, 8, 8), 4, dict(kernel_size=3, layout="CHWN"),
               r"ConvGeometry: layout.*'NCHW'.*'NHWC'.*CHWN"),
    "input-2d": ((8, 8), 4, dict(kernel_size=3), r"ConvGeometry: input_shape.*\(8, 8\)"),
    "input-5d": ((1, 1, 4, 8, 8), 4, dict(kernel_size=3), r"ConvGeometry: input_shape"),
    "input-negative": ((1, 4, -8, 8), 4, dict(kernel_size=3), r"ConvGeometry: input_shape"),
    "input-float": ((1, 4, 8.0, 8), 4, dict(kernel_size=3), r"ConvGeometry: input_shape"),
    "input-0-channels": ((1, 0, 8, 8), 4, dict(kernel_size=3), r"ConvGeometry: .*channels"),
    "kernel-0": ((1, 4, 8, 8), 4, dict(kernel_size=0), r"ConvGeometry: kernel_size.*0"),
    "kernel-len3": ((1, 4, 8, 8), 4, dict(kernel_size=(3, 3, 3)), r"ConvGeometry: kernel_size"),
    "stride-0": ((1, 4, 8, 8), 4, dict(kernel_size=3, stride=0), r"ConvGeometry: stride.*0"),
    "dilation-neg": ((1, 4, 8, 8), 4, dict(kernel_size=3, dilation=-1),
                     r"ConvGeometry: dilation.*-1"),
    "padding-neg": ((1, 4, 8, 8), 4, dict(kernel_size=3, padding=-1),
                    r"ConvGeometry: padding.*-1"),
    "padding-word": ((1, 4, 8, 8), 4, dict(kernel_size=3, padding="full"),
                     r"ConvGeometry: padding.*full"),
    "padding-malformed": ((1, 4, 8, 8), 4, dict(kernel_size=3, padding=((1, 2, 3), (0, 0))),
                          r"ConvGeometry: padding"),
    "kernel>input": ((1, 4, 8, 8), 4, dict(kernel_size=9), r"ConvGeometry: kernel_size.*9"),
    "kernel>input-nhwc": ((1, 8, 4, 8), 4, dict(kernel_size=(3, 5), layout="NHWC"),
                          r"ConvGeometry: kernel_size"),
}


@pytest.mark.parametrize("name", list(GEOMETRY_ERRORS))
def test_geometry_value_errors(name):
    input_shape, out_channels, kwargs, match = GEOMETRY_ERRORS[name]
    with pytest.raises(ValueError, match=match):
        ConvGeometry(input_shape, out_channels, **kwargs)


# ============================================================ property tests

@st.composite
def conv_geometries(draw):
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    n = draw(st.integers(0, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    top, bottom, left, right = (draw(st.integers(0, 3)) for _ in range(4))
    h = draw(st.integers(max(0, dh * (kh - 1) + 1 - top - bottom), 12))
    w = draw(st.integers(max(0, dw * (kw - 1) + 1 - left - right), 12))
    return dict(n=n, c_in=c_in, c_out=c_out, h=h, w=w, kernel_size=(kh, kw), stride=(sh, sw),
                padding=((top, bottom), (left, right)), dilation=(dh, dw), groups=groups)


@settings(max_examples=200, deadline=None)
@given(conv_geometries(), st.sampled_from(["NCHW", "NHWC"]), st.booleans())
def test_property_output_shape_gemm_and_flops(g, layout, batched):
    (kh, kw), (sh, sw), (dh, dw) = g["kernel_size"], g["stride"], g["dilation"]
    (top, bottom), (left, right) = g["padding"]
    n, c_in, c_out, h, w, groups = g["n"], g["c_in"], g["c_out"], g["h"], g["w"], g["groups"]
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    if layout == "NCHW":
        shape, expected = (n, c_in, h, w), (n, c_out, oh, ow)
    else:
        shape, expected = (n, h, w, c_in), (n, oh, ow, c_out)
    if not batched:
        shape, expected, n = shape[1:], expected[1:], 1
    geometry = ConvGeometry(shape, c_out, g["kernel_size"], stride=g["stride"],
                            padding=g["padding"], dilation=g["dilation"], groups=groups,
                            layout=layout)
    assert tuple(geometry.output_shape) == expected
    assert tuple(geometry.gemm_shape) == (c_out // groups, c_in // groups * kh * kw, oh * ow)
    # flops: two per multiply-add of the seven-loop convolution.
    assert geometry.flops == 2 * n * oh * ow * c_out * (c_in // groups) * kh * kw
    assert geometry.column_bytes(np.float32) == n * c_in * kh * kw * oh * ow * 4


@settings(max_examples=60, deadline=None)
@given(conv_geometries(), st.sampled_from(["NCHW", "NHWC"]))
def test_property_column_bytes_is_the_im2col_buffer(g, layout):
    n, c, h, w = g["n"], g["c_in"], g["h"], g["w"]
    shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    args = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"])
    geometry = ConvGeometry(shape, g["c_out"], g["kernel_size"], groups=g["groups"],
                            layout=layout, **args)
    cols = reference.im2col(np.zeros(shape), g["kernel_size"], layout=layout, **args)
    assert geometry.column_bytes(np.float64) == cols.nbytes
    m, k, n_cols = geometry.gemm_shape
    rows = cols.shape[1] if layout == "NCHW" else cols.shape[2]
    positions = cols.shape[2] if layout == "NCHW" else cols.shape[1]
    assert k * g["groups"] == rows
    assert n_cols == positions
    # and fastconv.im2col agrees on the shape
    fast = fastconv.im2col(np.zeros(shape, np.float32), g["kernel_size"], layout=layout, **args)
    assert fast.shape == cols.shape
    assert geometry.column_bytes(np.float32) == fast.nbytes


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 40), st.integers(0, 5), st.integers(0, 5), st.integers(1, 6),
       st.integers(1, 5), st.integers(1, 4))
def test_property_output_size_formula(size, before, after, k, s, d):
    """Output size = number of window positions that fit, counted by brute force."""
    padded = size + before + after
    extent = d * (k - 1) + 1
    if padded < extent:
        with pytest.raises(ValueError, match="kernel_size"):
            ConvGeometry((1, 1, size, 1), 1, (k, 1), stride=(s, 1), padding=((before, after),
                                                                          (0, 0)),
                         dilation=(d, 1))
        return
    positions = len([start for start in range(0, padded, s) if start + extent <= padded])
    geometry = ConvGeometry((1, 1, size, 1), 1, (k, 1), stride=(s, 1),
                            padding=((before, after), (0, 0)), dilation=(d, 1))
    assert geometry.output_shape[2] == positions
    cols = fastconv.im2col(np.zeros((1, 1, size, 1)), (k, 1), stride=(s, 1),
                           padding=((before, after), (0, 0)), dilation=(d, 1))
    assert cols.shape == (1, k, positions)
    # the helper the other tests use agrees too
    assert out_hw(size, 1, (k, 1), (s, 1), ((before, after), (0, 0)), (d, 1))[0] == positions
