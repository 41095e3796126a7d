"""The command line (`python -m fastconv info` / `bench`) and the benchmark's NumPy baselines."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import reference
from fastconv.bench import baselines, ceiling, cli, measure, plot, report, sections, suite, timing
from fastconv.bench.config import load_torch, make_config
from fastconv.info import build_info, format_build_info

# Run the subprocesses against the same fastconv this process imported.
PACKAGE_PARENT = str(Path(fastconv.__file__).resolve().parents[1])

# The smallest layer of the suite, one timed sample: a bench run of a second or two.
TINY = ["--layers", "lecture.8to16", "--batch", "1", "--repeats", "1"]
# The sections of 1-D layers (bench.suite.SIGNALS or --conv1d), not of the 2-D suite.
ONE_D = ("conv1d", "conv1d_backward")
THREE_D = ("conv3d", "conv3d_backward")

ROW_KEYS = {"op", "layer", "batch", "shape", "column_bytes", "fastconv_ms", "gbps",
            "numpy_ms", "torch_ms", "speedup_numpy", "speedup_torch", "matches_numpy"}


def run_cli(*args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


# ----------------------------------------------------------------------------- info

def test_info_runs():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert "OpenMP" in result.stdout
    assert fastconv.__version__ in result.stdout
    assert "BLAS" in result.stdout
    assert "Traceback" not in result.stderr


def test_info_json():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["fastconv"] == fastconv.__version__
    assert isinstance(info["openmp"], bool)


def test_info_prints_the_tuning_derived_from_the_machine():
    """`info` says which caches it read and every constant derived from them, with the
    values planning uses (fastconv._tuning.DERIVED)."""
    from fastconv import _tuning, cpu

    info = build_info()["tuning"]
    assert info["l2_cache_bytes"] == cpu.l2_cache_bytes()
    assert info["l3_cache_bytes"] == cpu.l3_cache_bytes()
    assert set(info["derived"]) == set(_tuning.DERIVED)
    for name, entry in info["derived"].items():
        assert entry["value"] == getattr(_tuning.DEFAULT, name)
    text = run_cli("info").stdout
    assert "Tuning derived from this machine" in text
    assert f"depthwise_block_bytes        {_tuning.DEFAULT.depthwise_block_bytes}" in text
    assert _tuning.DEFAULT.depthwise_block_bytes == cpu.l2_cache_bytes()
    assert info["l3_share_bytes"] == cpu.l3_share_bytes() <= cpu.l3_cache_bytes()
    assert _tuning.DEFAULT.winograd_shared_block_bytes == cpu.l3_share_bytes() // 2
    assert _tuning.DEFAULT.winograd_large_weight_bytes == cpu.l3_share_bytes()
    assert f"of which {cpu.l3_share_bytes() >> 10} KiB counted" in text


def test_build_info_keys():
    info = build_info()
    for key in ("fastconv", "python", "numpy", "scipy", "torch", "openmp", "num_threads",
                "cpu_count", "blas", "build"):
        assert key in info
    assert info["num_threads"] == fastconv.get_num_threads()
    json.dumps(info)  # serialisable
    assert "OpenMP" in format_build_info(info)


def test_build_info_without_build_record(monkeypatch):
    # fastconv/_build_info.py is written by setup.py; a checkout built otherwise lacks it.
    monkeypatch.setitem(sys.modules, "fastconv._build_info", None)
    info = build_info()
    assert info["build"] is None
    assert "unknown" in format_build_info(info)


# ----------------------------------------------------------------------------- bench

def test_bench_tiny_with_json(tmp_path):
    path = tmp_path / "rows.json"
    result = run_cli("bench", *TINY, "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "lecture.8to16" in result.stdout
    assert "geometric mean speed-up im2col" in result.stdout
    assert "geometric mean speed-up col2im" in result.stdout
    document = json.loads(path.read_text())
    rows = document["rows"]
    # All sections by default; rmac times its own feature maps, not the layer suite; the
    # conv1d sections time the 1-D layers, which --layers lecture.8to16 does not name.
    two_d = [op for op in sections.SECTIONS if op not in ONE_D + THREE_D]
    assert list(dict.fromkeys(row["op"] for row in rows)) == two_d
    maps = {fmap.name for fmap in suite.RMAC_MAPS}
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["layer"] in (maps if row["op"] == "rmac" else {"lecture.8to16"})
        assert row["batch"] == 1
        assert row["fastconv_ms"] > 0 and row["numpy_ms"] > 0
        assert row["matches_numpy"] is True
    assert set(document["summary"]) == set(two_d)


def test_bench_without_torch_prints_dash():
    result = run_cli("bench", *TINY, "--ops", "im2col", "--no-torch", "--layout", "nhwc",
                     "--dtype", "float64")
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("im2col"))
    assert line.split()[-1] == "-"  # speed-up vs torch
    assert "col2im" not in result.stdout.split("geometric")[0]


@pytest.mark.parametrize("args", [
    ["bench", "--layers", "nope"],
    ["bench", "--batch", "0"],
    ["bench", "--dtype", "int8"],
    ["bench", "--layout", "NWHC"],
    ["bench", "--ops", "conv9d"],
    ["bench", "--threads", "-1"],
    ["bench", "--frobnicate"],
    ["bench", "--json", "/nonexistent-dir/rows.json"],
    ["frobnicate"],
    [],
])
def test_bad_options_clean_error(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert result.stdout == ""


def test_runs_without_torch(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def hide_torch(name, *args, **kwargs):
        return None if name == "torch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hide_torch)
    assert load_torch() is None
    info = build_info()
    assert info["torch"] is None
    assert "not installed" in format_build_info(info)
    config = make_config(layers=["lecture.8to16"], batches=[1], ops=["col2im"], repeats=1)
    assert config.torch is None
    rows = sections.run(config, progress=False)
    assert len(rows) == 1 and rows[0].torch_s is None and rows[0].matches_numpy
    table = report.format_table(rows, config)
    assert "vs torch -" in table


def test_unknown_layer_lists_valid_names():
    result = run_cli("bench", "--layers", "nope")
    assert "'nope'" in result.stderr and "resnet50.res4.3x3" in result.stderr


def test_select_layers_glob_and_errors():
    layers = suite.load_layers()
    chosen = suite.select_layers(layers, ["resnet50.res5*"])
    assert [layer.name for layer in chosen] == ["resnet50.res5.3x3", "resnet50.res5.1x1"]
    with pytest.raises(suite.BenchError, match="valid names"):
        suite.select_layers(layers, ["nope"])


def test_layer_file_is_packaged_data():
    layers = suite.load_layers()
    assert len(layers) >= 10
    by_name = {layer.name: layer for layer in layers}
    assert by_name["vgg16.conv1_2"].batches == (1,)
    assert by_name["resnet50.conv1"].batches == (1, 8)


def test_best_time_counts_calls():
    calls = []
    seconds = timing.best_time(lambda: calls.append(1),
                               timing.Timing(repeats=3, min_repeats=3, budget_s=0.0,
                                             min_sample_s=0.0))
    assert seconds >= 0 and len(calls) == 1 + 3  # warm-up + samples


def test_best_times_settles_before_each_sample():
    """Round-robin over several functions: each timed sample follows an untimed call of the
    same function, so no sample starts right after the other function's call."""
    log = []
    rules = timing.Timing(repeats=3, min_repeats=3, budget_s=0.0, min_sample_s=0.0)
    timing.best_times([lambda: log.append("a"), lambda: log.append("b")], rules)
    assert log == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warm-ups, then settle + sample


# ----------------------------------------------------------------------------- baselines

GEOMETRIES = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=1, stride=1, padding=0),
    dict(kernel_size=1, stride=2, padding=0),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2)),
    dict(kernel_size=7, stride=2, padding=3),
    dict(kernel_size=2, stride=3, padding=0, dilation=2),
]


def _image(layout, dtype, shape=(2, 3, 9, 11)):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_numpy_im2col_equals_reference(layout, dtype, geometry):
    x = _image(layout, dtype)
    expected = reference.im2col(x, layout=layout, **geometry)
    result = baselines.numpy_im2col(x, layout=layout, **geometry)
    assert result.dtype == x.dtype and result.flags.c_contiguous
    np.testing.assert_array_equal(result, expected)
    assert not np.shares_memory(result, x)  # a real copy, like fastconv's out=


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_numpy_col2im_equals_reference(layout, dtype, geometry):
    x = _image(layout, dtype)
    cols = reference.im2col(x, layout=layout, **geometry)
    cols = np.random.default_rng(2).standard_normal(cols.shape).astype(dtype)
    output_size = x.shape[2:] if layout == "NCHW" else x.shape[1:3]
    expected = reference.col2im(cols, output_size, layout=layout, **geometry)
    result = baselines.numpy_col2im(cols, output_size, layout=layout, **geometry)
    assert result.shape == x.shape and result.dtype == x.dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(result, expected, rtol=rtol, atol=rtol)


def test_numpy_baselines_accept_non_contiguous_input():
    x = _image("NCHW", np.float64, shape=(2, 3, 10, 12))[:, :, ::2, ::-1]
    expected = reference.im2col(x, 3, padding=1)
    np.testing.assert_array_equal(baselines.numpy_im2col(x, 3, padding=1), expected)


# ----------------------------------------------------------------------------- conv baselines

CONV_GEOMETRIES = [
    dict(c_in=4, c_out=6, kernel=(3, 3), stride=1, padding=1, groups=1),
    dict(c_in=6, c_out=4, kernel=(3, 3), stride=2, padding=1, groups=2),
    dict(c_in=4, c_out=4, kernel=(3, 3), stride=1, padding=1, groups=4),   # depthwise
    dict(c_in=4, c_out=8, kernel=(1, 1), stride=1, padding=0, groups=1),   # pointwise
    dict(c_in=6, c_out=6, kernel=(3, 2), stride=(2, 1), padding=((1, 0), (2, 1)),
         dilation=(1, 2), groups=3),
]


def _conv_case(layout, dtype, geometry, seed=3):
    """x, weight, bias, the conv2d keyword arguments and the lecture-layout (NHWC/HWIO)
    copies of x and weight, for one small geometry."""
    rng = np.random.default_rng(seed)
    kh, kw = geometry["kernel"]
    groups = geometry["groups"]
    z = rng.standard_normal((2, 9, 11, geometry["c_in"])).astype(dtype)             # NHWC
    w = rng.standard_normal((kh, kw, geometry["c_in"] // groups,
                             geometry["c_out"])).astype(dtype)                      # HWIO
    bias = rng.standard_normal(geometry["c_out"]).astype(dtype)
    args = {key: geometry[key] for key in ("stride", "padding", "groups")}
    args["dilation"] = geometry.get("dilation", 1)
    if layout == "NHWC":
        x, weight = z, w
    else:
        x = np.ascontiguousarray(z.transpose(0, 3, 1, 2))
        weight = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    return x, weight, bias, args, z, w


def _reference_conv(z, w, args, layout):
    """fastconv.reference.conv2d_strided (NHWC/HWIO) answered in `layout`."""
    y = reference.conv2d_strided(z, w, **args)
    return y if layout == "NHWC" else y.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_numpy_conv2d_equals_reference(layout, dtype, geometry):
    x, weight, bias, args, z, w = _conv_case(layout, dtype, geometry)
    result = baselines.numpy_conv2d(x, weight, bias, layout=layout, **args)
    expected = _reference_conv(z, w, args, layout) + (
        bias if layout == "NHWC" else bias[:, None, None])
    assert result.dtype == dtype and result.flags.c_contiguous
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result, expected, rtol=rtol, atol=rtol)
    no_bias = baselines.numpy_conv2d(x, weight, layout=layout, **args)
    np.testing.assert_allclose(no_bias, _reference_conv(z, w, args, layout), rtol=rtol,
                               atol=rtol)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_numpy_conv2d_backward_equals_fastconv(layout, geometry):
    x, weight, _, args, _, _ = _conv_case(layout, np.float64, geometry)
    grad = np.random.default_rng(4).standard_normal(
        baselines.numpy_conv2d(x, weight, layout=layout, **args).shape)
    result = baselines.numpy_conv2d_backward(grad, x, weight, layout=layout, **args)
    expected = fastconv.conv2d_backward(grad, x, weight, layout=layout, **args)
    assert len(result) == 3
    for mine, theirs in zip(result, expected):
        assert mine.shape == theirs.shape and mine.dtype == np.float64
        np.testing.assert_allclose(mine, theirs, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_numpy_conv2d_backward_against_reference(layout, geometry):
    # conv2d is linear in x and in the weight, so its gradients are exactly the adjoints of
    # the reference convolution: <grad_x, v> = <g, conv(v, w)> and <grad_w, u> =
    # <g, conv(x, u)> for any directions v, u; grad_bias = g summed over all but channels.
    x, weight, _, args, z, w = _conv_case(layout, np.float64, geometry)
    grad = np.random.default_rng(5).standard_normal(_reference_conv(z, w, args, layout).shape)
    grad_x, grad_w, grad_b = baselines.numpy_conv2d_backward(grad, x, weight, layout=layout,
                                                             **args)
    rng = np.random.default_rng(6)

    def lecture(array, kind):  # configured layout → NHWC / HWIO
        if layout == "NHWC":
            return array
        return array.transpose(0, 2, 3, 1) if kind == "x" else array.transpose(2, 3, 1, 0)

    for _ in range(3):
        v = rng.standard_normal(x.shape)
        u = rng.standard_normal(weight.shape)
        np.testing.assert_allclose(
            np.vdot(grad_x, v), np.vdot(grad, _reference_conv(lecture(v, "x"), w, args, layout)),
            rtol=1e-10)
        np.testing.assert_allclose(
            np.vdot(grad_w, u), np.vdot(grad, _reference_conv(z, lecture(u, "w"), args, layout)),
            rtol=1e-10)
    channel_axis = 1 if layout == "NCHW" else 3
    np.testing.assert_allclose(
        grad_b, np.moveaxis(grad, channel_axis, -1).reshape(-1, grad_b.size).sum(0),
        rtol=1e-12)


def test_numpy_conv2d_backward_float32_close_to_float64():
    geometry = CONV_GEOMETRIES[1]
    for layout in ("NCHW", "NHWC"):
        x, weight, _, args, _, _ = _conv_case(layout, np.float64, geometry)
        grad = np.random.default_rng(7).standard_normal(
            baselines.numpy_conv2d(x, weight, layout=layout, **args).shape)
        exact = baselines.numpy_conv2d_backward(grad, x, weight, layout=layout, **args)
        single = baselines.numpy_conv2d_backward(grad.astype(np.float32),
                                                 x.astype(np.float32), weight.astype(np.float32),
                                                 layout=layout, **args)
        for mine, theirs in zip(single, exact):
            assert mine.dtype == np.float32
            np.testing.assert_allclose(mine, theirs, rtol=1e-4,
                                       atol=1e-4 * np.abs(theirs).max())


def test_gemm_ceiling_runs_the_gemm_shape():
    geometry = fastconv.ConvGeometry((3, 4, 9, 9), 6, 3, padding=1, groups=2)
    gemm = ceiling.gemm_ceiling(geometry, np.float32, threads=1)
    c = gemm()
    m, k, n = geometry.gemm_shape
    assert c.shape == (m, n) and c.dtype == np.float32 and c.flags.f_contiguous
    assert gemm() is c  # preallocated, reused


@pytest.mark.parametrize("once_s, calls", [(0.0, 1), (None, 1 + 3)])
def test_slow_numpy_baseline_is_timed_once(monkeypatch, once_s, calls):
    counted = []
    real = baselines.numpy_conv2d

    def counting(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sections, "numpy_conv2d", counting)  # as bench_conv2d calls it
    config = make_config(layers=["lecture.8to16"], batches=[2], ops=["conv2d"],
                         use_torch=False)
    config.timing = timing.Timing(repeats=3, min_repeats=3, budget_s=0.0, min_sample_s=0.0,
                                  once_s=once_s)
    (row,) = sections.run(config, progress=False)
    assert len(counted) == calls  # the checking call (+ 3 samples when sampled)
    assert row.numpy_s > 0 and row.matches_numpy


# ----------------------------------------------------------------------------- conv sections

CONV_OPS = ["conv2d", "conv2d_backward", "layer"]


def test_bench_conv_sections_json(tmp_path):
    path = tmp_path / "conv.json"
    result = run_cli("bench", "--ops", *CONV_OPS, "--layers", "resnet50.res4.3x3",
                     "--batch", "1", "--repeats", "1", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "GFLOP/s" in result.stdout and "GEMM eff" in result.stdout
    assert "geometric mean speed-up conv2d:" in result.stdout
    assert "GEMM efficiency" in result.stdout
    document = json.loads(path.read_text())
    rows = document["rows"]
    assert [row["op"] for row in rows] == CONV_OPS
    for row in rows:
        assert ROW_KEYS | {"flops", "gflops", "gemm_ms", "gemm_efficiency"} <= set(row)
        assert row["layer"] == "resnet50.res4.3x3" and row["batch"] == 1
        assert row["gflops"] > 0 and row["gbps"] is None
        assert row["matches_numpy"] is True
        assert row["fastconv_ms"] > 0
    geometry = fastconv.ConvGeometry((1, 256, 14, 14), 256, 3, padding=1)
    conv, backward, layer = rows
    assert conv["flops"] == layer["flops"] == geometry.flops
    assert backward["flops"] == 2 * geometry.flops
    assert conv["gemm_ms"] > 0 and conv["gemm_efficiency"] > 0
    assert conv["numpy_ms"] > 0 and backward["numpy_ms"] > 0
    assert backward["gemm_ms"] is None and layer["gemm_ms"] is None
    summary = document["summary"]
    assert set(summary) == set(CONV_OPS)
    assert summary["conv2d"]["gemm_efficiency"] > 0
    assert summary["layer"]["gemm_efficiency"] is None
    assert summary["layer"]["vs_numpy"] > 0


def test_conv_sections_without_torch(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def hide_torch(name, *args, **kwargs):
        return None if name == "torch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hide_torch)
    for layout in ("NCHW", "NHWC"):
        config = make_config(layers=["mobilenet.dw112", "lecture.8to16"], batches=[1],
                             layout=layout, ops=CONV_OPS, repeats=1, use_torch=False)
        assert config.torch is None
        rows = sections.run(config, progress=False)
        assert [row.op for row in rows] == ["conv2d"] * 2 + ["conv2d_backward"] * 2 + \
            ["layer"] * 2
        for row in rows:
            assert row.torch_s is None and row.matches_numpy, (layout, row)
            assert row.gflops > 0 and row.gbps is None and row.unit == "GFLOP/s"
        table = report.format_table(rows, config)
        assert "vs torch -" in table and "torch: not used" in table


def test_table_rate_columns():
    config = make_config(layers=["lecture.8to16"], batches=[1],
                         ops=["im2col", "conv2d"], repeats=1, use_torch=False)
    rows = sections.run(config, progress=False)
    lines = report.format_table(rows, config).splitlines()
    header = next(line for line in lines if line.startswith("operator")).split()
    assert header[:5] == ["operator", "layer", "batch", "shape", "fastconv"]
    gb = header.index("GB/s") - 1        # "fastconv ms" is two words
    gflop = header.index("GFLOP/s") - 1
    cells = {line.split()[0]: line.split() for line in lines
             if line.startswith(("im2col ", "conv2d "))}
    assert cells["im2col"][gb] != "-" and cells["im2col"][gflop] == "-"
    assert cells["conv2d"][gb] == "-" and float(cells["conv2d"][gflop]) > 0
    assert rows[0].unit == "GB/s" and rows[0].gflops is None and rows[0].gemm_s is None


# ----------------------------------------------------------------------------- --conv, --plot

def _bench_main(argv):
    """``python -m fastconv`` in this process (so tests can patch it): the exit code."""
    from fastconv.__main__ import main
    return main(argv)


def test_parse_conv_user_layer():
    layer = suite.parse_conv("4,3,32,20,16,3,2,1")
    assert layer.name == "user.N4.C3.H32.W20.O16.k3.s2.p1"
    assert (layer.in_channels, layer.out_channels, layer.kernel) == (3, 16, 3)
    assert (layer.stride, layer.padding, layer.groups, layer.batches) == (2, 1, 1, (4,))
    assert layer.image_size == (32, 20)
    assert layer.out_image_size == (16, 10)  # (32 + 2 - 3)//2 + 1, (20 + 2 - 3)//2 + 1
    assert suite.parse_conv(" 1, 2,5,5 ,3,5,1,0").name == "user.N1.C2.H5.W5.O3.k5.s1.p0"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_square_case_shapes_match_fastconv(layout):
    case = suite.Case(suite.parse_conv("2,3,11,6,5,3,2,1"), 2)
    x = np.zeros(case.image_shape(layout), np.float32)
    assert x.shape == ((2, 3, 11, 6) if layout == "NCHW" else (2, 11, 6, 3))
    cols = fastconv.im2col(x, layout=layout, **case.window_args())
    assert cols.shape == case.column_shape(layout)
    geometry = case.geometry(layout)
    assert geometry.input_shape == x.shape
    assert geometry.output_shape == ((2, 5, 6, 3) if layout == "NCHW" else (2, 6, 3, 5))


def test_square_layers_keep_their_shapes():
    layer = {entry.name: entry for entry in suite.load_layers()}["resnet50.conv1"]
    assert layer.width is None and layer.image_size == (224, 224)
    assert layer.out_size == 112 and layer.out_image_size == (112, 112)
    case = suite.Case(layer, 2)
    assert case.image_shape("NHWC") == (2, 224, 224, 3)
    assert case.column_shape("NCHW") == (2, 3 * 7 * 7, 112 * 112)
    wide = suite.Layer.from_dict({"name": "wide", "in_channels": 1, "size": 4, "width": 9,
                                  "out_channels": 1, "kernel": 3})
    assert wide.image_size == (4, 9) and wide.out_image_size == (2, 7)


@pytest.mark.parametrize("text, message", [
    ("4,3,32,32,16,3,1", r"expected 8 comma-separated integers N,C,H,W,O,k,s,p, got 7"),
    ("4,3,32,32,16,3,1,1,1", r"got 9 in"),
    ("0,3,32,32,16,3,1,1", r"field N \(batch\) must be an integer >= 1, got '0'"),
    ("4,x,32,32,16,3,1,1", r"field C \(in_channels\) must be an integer >= 1, got 'x'"),
    ("4,3,-2,32,16,3,1,1", r"field H \(height\) must be an integer >= 1, got '-2'"),
    ("4,3,32,2.5,16,3,1,1", r"field W \(width\) must be an integer >= 1, got '2.5'"),
    ("4,3,32,32,0,3,1,1", r"field O \(out_channels\) must be an integer >= 1"),
    ("4,3,32,32,16,0,1,1", r"field k \(kernel\) must be an integer >= 1"),
    ("4,3,32,32,16,3,0,1", r"field s \(stride\) must be an integer >= 1"),
    ("4,3,32,32,16,3,1,-1", r"field p \(padding\) must be an integer >= 0, got '-1'"),
    ("4,3,32,32,16,3,1,", r"field p \(padding\) must be an integer >= 0, got ''"),
    ("4,3,2,32,16,5,1,1", r"kernel k=5 is larger than the padded image \(H=2 \+ 2\*p=2\)"),
    ("4,3,32,1,16,5,1,1", r"kernel k=5 is larger than the padded image \(W=1 \+ 2\*p=2\)"),
])
def test_parse_conv_errors_name_the_field(text, message):
    with pytest.raises(suite.BenchError, match=message):
        suite.parse_conv(text)


def test_bad_conv_option_is_a_clean_error():
    result = run_cli("bench", "--conv", "4,3,32,32,16,0,1,1")
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == ["python -m fastconv bench: error: argument --conv: field k (kernel) "
                      "must be an integer >= 1, got '0' in '4,3,32,32,16,0,1,1'"]


def test_conv_alone_runs_only_user_layers_and_layers_adds_the_suite():
    first, second = suite.parse_conv("2,3,8,8,4,3,1,1"), suite.parse_conv("1,2,5,7,2,1,1,0")
    config = make_config(user_layers=[first, second, first], use_torch=False)
    assert config.layers == [first, second]  # duplicates once, in order
    assert [case.batch for case in config.layer_cases()] == [2, 1]
    config = make_config(layers=["lecture.8to16"], user_layers=[second],
                         batches=[3], use_torch=False)
    assert [layer.name for layer in config.layers] == ["lecture.8to16", second.name]
    assert [case.batch for case in config.layer_cases()] == [3, 3]
    assert len(make_config(use_torch=False).layers) == len(suite.load_layers())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_square_user_layer_runs_every_section(layout):
    layer = suite.parse_conv("2,3,9,5,4,3,2,1")
    config = make_config(user_layers=[layer], layout=layout, dtype="float64",
                         repeats=1, use_torch=False)
    # rmac times its own ResNet/VGG feature maps, not the layers
    rows = [row for row in sections.run(config, progress=False) if row.op != "rmac"]
    assert [row.op for row in rows] == [op for op in sections.SECTIONS
                                        if op != "rmac" and op not in ONE_D + THREE_D]
    for row in rows:
        assert row.layer == layer.name and row.batch == 2
        assert row.shape == ((2, 3, 9, 5) if layout == "NCHW" else (2, 9, 5, 3))
        assert row.matches_numpy is True, row.op
        assert row.fastconv_s > 0


def test_bench_conv_cli_json(tmp_path):
    path = tmp_path / "user.json"
    result = run_cli("bench", "--conv", "2,3,10,7,4,3,2,1", "--conv", "1,4,6,6,2,1,1,0",
                     "--ops", "im2col", "conv2d", "--repeats", "1", "--no-torch",
                     "--json", str(path))
    assert result.returncode == 0, result.stderr
    rows = json.loads(path.read_text())["rows"]
    assert [(row["op"], row["layer"], row["shape"]) for row in rows] == [
        ("im2col", "user.N2.C3.H10.W7.O4.k3.s2.p1", [2, 3, 10, 7]),
        ("im2col", "user.N1.C4.H6.W6.O2.k1.s1.p0", [1, 4, 6, 6]),
        ("conv2d", "user.N2.C3.H10.W7.O4.k3.s2.p1", [2, 3, 10, 7]),
        ("conv2d", "user.N1.C4.H6.W6.O2.k1.s1.p0", [1, 4, 6, 6]),
    ]
    assert all(row["matches_numpy"] for row in rows)
    geometry = fastconv.ConvGeometry((2, 3, 10, 7), 4, 3, stride=2, padding=1)
    assert rows[2]["flops"] == geometry.flops


def test_parse_conv1d_user_layer():
    signal = suite.parse_conv1d(" 8, 64,16000,64,3,1,1")
    assert signal == suite.Signal("user1d.N8.C64.L16000.O64.k3.s1.p1", 64, 16000, 64, 3, 1, 1,
                                  (8,))
    assert signal.out_length == 16000
    assert suite.parse_conv1d("8,1,160000,64,400,160,0").out_length == 998


@pytest.mark.parametrize("text, message", [
    ("8,64,16000,64,3,1", r"expected 7 comma-separated integers N,C,L,O,k,s,p, got 6"),
    ("8,64,16000,64,3,0,1", r"field s \(stride\) must be an integer >= 1, got '0'"),
    ("8,x,16000,64,3,1,1", r"field C \(in_channels\) must be an integer >= 1, got 'x'"),
    ("8,64,-1,64,3,1,1", r"field L \(length\)"),
    ("1,2,3,4,9,1,2", r"kernel k=9 is longer than the padded signal \(L=3 \+ 2\*p=4\)"),
])
def test_parse_conv1d_errors_name_the_field(text, message):
    with pytest.raises(suite.BenchError, match=message):
        suite.parse_conv1d(text)


def test_bad_conv1d_option_is_a_clean_error():
    result = run_cli("bench", "--conv1d", "1,2,3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--conv1d" in result.stderr and "expected 7" in result.stderr
    result = run_cli("bench", "--compare", "--conv1d", "1,2,30,4,3,1,1")
    assert result.returncode == 2 and "takes no --conv1d" in result.stderr


def test_conv1d_selection():
    """The 1-D layers run by default, by --layers name or glob, alone with --conv1d; --conv
    alone runs no 1-D layer."""
    names = [signal.name for signal in suite.SIGNALS]
    assert names == ["conv1d.64to64.k3", "conv1d.64to64.k9", "audio.frontend"]
    config = make_config(use_torch=False)
    assert [s.name for s in config.signals] == names
    assert [case.batch for case in config.signal_cases()] == [8, 8, 8]
    config = make_config(layers=["audio.*", "lecture.8to16"], use_torch=False)
    assert [s.name for s in config.signals] == ["audio.frontend"]
    assert [layer.name for layer in config.layers] == ["lecture.8to16"]
    user = suite.parse_conv1d("2,3,20,4,3,1,1")
    config = make_config(user_signals=[user, user], use_torch=False)
    assert config.signals == [user] and config.layers == []
    config = make_config(user_layers=[suite.parse_conv("1,2,5,7,2,1,1,0")], use_torch=False)
    assert config.signals == []
    with pytest.raises(suite.BenchError, match="valid names: .*audio.frontend"):
        make_config(layers=["nope"], use_torch=False)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv1d_sections_match_numpy(layout):
    signal = suite.parse_conv1d("2,3,40,4,5,2,2")
    config = make_config(user_signals=[signal], layout=layout, dtype="float64", repeats=1,
                         ops=list(ONE_D), use_torch=False)
    rows = sections.run(config, progress=False)
    assert [row.op for row in rows] == list(ONE_D)
    case = suite.SignalCase(signal, 2)
    for row in rows:
        assert row.layer == signal.name and row.batch == 2 and row.matches_numpy is True
        assert row.shape == ((2, 3, 40) if layout == "NCHW" else (2, 40, 3))
        assert row.fastconv_s > 0
    assert rows[0].flops == case.flops == 2 * 2 * 4 * 3 * 5 * 20
    assert rows[1].flops == 2 * case.flops
    assert "conv1d: " + ("NCL" if layout == "NCHW" else "NLC") in report.format_table(rows,
                                                                                      config)


def test_bench_conv1d_cli_json(tmp_path, torch):
    path = tmp_path / "user1d.json"
    result = run_cli("bench", "--conv1d", "2,3,30,4,3,1,1", "--repeats", "1", "--ops",
                     *ONE_D, "--json", str(path))
    assert result.returncode == 0, result.stderr
    rows = json.loads(path.read_text())["rows"]
    assert [(row["op"], row["layer"]) for row in rows] == [
        ("conv1d", "user1d.N2.C3.L30.O4.k3.s1.p1"),
        ("conv1d_backward", "user1d.N2.C3.L30.O4.k3.s1.p1")]
    for row in rows:
        assert row["matches_numpy"] and row["torch_ms"] > 0


def test_bad_conv3d_option_is_a_clean_error():
    result = run_cli("bench", "--conv3d", "1,2,3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--conv3d" in result.stderr and "expected 9" in result.stderr
    result = run_cli("bench", "--conv3d", "1,2,3,3,3,4,5,1,0")
    assert result.returncode == 2 and "kernel k=5 is larger than the padded axis" in \
        result.stderr
    result = run_cli("bench", "--compare", "--conv3d", "1,2,4,4,4,4,3,1,1")
    assert result.returncode == 2 and "takes no --conv3d" in result.stderr


def test_conv3d_selection():
    """The issue's 3-D layer runs by default (batch 2), by --layers name, alone with
    --conv3d; --conv alone runs no 3-D layer."""
    assert [v.name for v in suite.VOLUMES] == ["conv3d.32to32.k3"]
    config = make_config(use_torch=False)
    assert [(case.layer.name, case.batch) for case in config.volume_cases()] == [
        ("conv3d.32to32.k3", 2)]
    layer = suite.VOLUMES[0]
    assert (layer.in_channels, layer.size, layer.out_channels, layer.kernel,
            layer.padding) == (32, (32, 32, 32), 32, 3, 1)
    config = make_config(layers=["conv3d.*"], use_torch=False)
    assert config.layers == [] and config.signals == [] and len(config.volumes) == 1
    user = suite.parse_conv3d("2,3,4,5,6,4,3,1,1")
    assert user.name == "user3d.N2.C3.D4.H5.W6.O4.k3.s1.p1"
    config = make_config(user_volumes=[user, user], use_torch=False)
    assert config.volumes == [user] and config.layers == [] and config.signals == []
    config = make_config(user_layers=[suite.parse_conv("1,2,5,7,2,1,1,0")], use_torch=False)
    assert config.volumes == []


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv3d_sections_match_numpy(layout, torch):
    volume = suite.parse_conv3d("2,3,5,6,7,4,3,2,1")
    config = make_config(user_volumes=[volume], layout=layout, dtype="float64", repeats=1,
                         ops=list(THREE_D))
    rows = sections.run(config, progress=False)
    assert [row.op for row in rows] == list(THREE_D)
    case = suite.VolumeCase(volume, 2)
    for row in rows:
        assert row.layer == volume.name and row.batch == 2 and row.matches_numpy is True
        assert row.shape == ((2, 3, 5, 6, 7) if layout == "NCHW" else (2, 5, 6, 7, 3))
        assert row.fastconv_s > 0 and row.torch_s > 0
    assert rows[0].flops == case.flops == 2 * 2 * 4 * 3 * 27 * 3 * 3 * 4
    assert rows[1].flops == 2 * case.flops
    assert "conv3d: " + ("NCDHW" if layout == "NCHW" else "NDHWC") in report.format_table(
        rows, config)


def _fake_rows():
    """Two conv rows and one data-movement row with round numbers."""
    return [
        measure.Row("conv2d", "a", 1, (1, 3, 8, 8), 100, fastconv_s=0.5, numpy_s=1.0,
                    torch_s=None, flops=10 ** 9, gemm_s=0.25),
        measure.Row("conv2d", "b", 8, (8, 3, 8, 8), 100, fastconv_s=2.0, numpy_s=4.0,
                    torch_s=1.0, flops=10 ** 9),
        measure.Row("im2col", "a", 1, (1, 3, 8, 8), 4 * 10 ** 9, fastconv_s=2.0,
                    numpy_s=4.0),
    ]


def test_plot_series_rates():
    assert plot.plot_series(_fake_rows()[:2]) == {"fastconv": [2.0, 0.5], "NumPy": [1.0, 0.25],
                                                  "torch": [None, 1.0],
                                                  "GEMM ceiling": [4.0, None]}
    assert plot.plot_series(_fake_rows()[2:]) == {"fastconv": [2.0], "NumPy": [1.0]}


def test_plot_rows_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    config = make_config(layers=["lecture.8to16"], use_torch=False)
    for name in ("chart.png", "chart.svg"):
        plot.plot_rows(_fake_rows(), config, tmp_path / name)
    image = imread(tmp_path / "chart.png")
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    svg = (tmp_path / "chart.svg").read_text()
    for text in ("conv2d: GFLOP/s", "im2col: GB/s", "GEMM ceiling", "b8"):
        assert text in svg


def test_bench_cli_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    result = run_cli("bench", "--conv", "1,2,6,5,3,3,1,1", "--ops", "im2col", "layer",
                     "--repeats", "1", "--no-torch", "--quiet", "--plot", str(path))
    assert result.returncode == 0, result.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("target, message", [
    ("/nonexistent-dir/chart.png", r"--plot: directory '/nonexistent-dir' does not exist"),
    ("chart.xyz", r"--plot: cannot tell the image format of 'chart.xyz'; end it in one of "
                  r".*\.png"),
    ("chart", r"cannot tell the image format of 'chart'"),
])
def test_bad_plot_target(capsys, target, message):
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as stop:
        _bench_main(["bench", "--ops", "im2col", "--plot", target])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), captured.err


def test_plot_without_matplotlib_is_a_clean_error(monkeypatch, capsys, tmp_path):
    real_find_spec = importlib.util.find_spec

    def hide_matplotlib(name, *args, **kwargs):
        return None if name == "matplotlib" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hide_matplotlib)
    ran = []
    monkeypatch.setattr(cli, "run", lambda *args, **kwargs: ran.append(1))
    with pytest.raises(SystemExit) as stop:
        _bench_main(["bench", "--plot", str(tmp_path / "chart.png")])
    assert stop.value.code == 2 and not ran  # refused before any timing
    err = capsys.readouterr().err
    assert ('error: --plot needs matplotlib, which is not installed: '
            'pip install "fastconv[plot]" (or pip install matplotlib)') in err
    assert "Traceback" not in err


def test_out_of_memory_is_a_clean_error(monkeypatch, capsys):
    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.86 TiB")

    monkeypatch.setattr(cli, "run", too_big)
    assert _bench_main(["bench", "--conv", "1000,512,1000,1000,512,3,1,1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert ("python -m fastconv bench: error: out of memory (Unable to allocate 1.86 TiB); "
            "try smaller layers or batches") in captured.err
