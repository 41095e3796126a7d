"""`python -m fastconv bench --network NAME`: whole networks' convolutions against torch, the
package data fastconv/data/networks.json, and the asv benchmarks of
benchmarks/bench_network.py.

The runs here replace :func:`fastconv.bench.network.load_networks` with two tiny layers
under a real network's name, so they take a fraction of a second."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv
from fastconv.bench import network

from conftest import asv_benchmark

PACKAGE_PARENT = str(Path(fastconv.__file__).resolve().parents[1])
SHARED = Path("/work/shared/networks.json")

# Two tiny convolutions, one grouped, one Winograd-eligible and counted twice.
TINY = [network.NetworkConv(in_channels=4, out_channels=4, kernel=3, stride=2, padding=1,
                            size=9, groups=2, count=3),
        network.NetworkConv(in_channels=3, out_channels=8, kernel=3, stride=1, padding=1,
                            size=10, groups=1, count=2)]
ROW_KEYS = {"network", "batch", "layout", "conv", "in_channels", "out_channels", "kernel",
            "stride", "padding", "size", "groups", "count", "auto_algorithm", "forward_ms",
            "backward_ms", "torch_forward_ms", "torch_backward_ms", "forward_ratio",
            "backward_ratio", "matches_torch"}
SUM_KEYS = {"network", "batch", "layout", "shapes", "convs", "forward_ms", "backward_ms",
            "torch_forward_ms", "torch_backward_ms", "forward_ratio", "backward_ratio"}


def bench_main(argv):
    """``python -m fastconv`` in this process (so tests can patch it): the exit code."""
    from fastconv.__main__ import main
    return main(argv)


@pytest.fixture
def tiny_networks(monkeypatch):
    """Every network is TINY (the CLI still accepts only the real names)."""
    monkeypatch.setattr(network, "load_networks",
                        lambda: {name: list(TINY) for name in network.NETWORKS})


def hide_torch(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "torch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# ----------------------------------------------------------------------------- data

def test_data_file_has_the_three_networks():
    document = network.network_data()
    assert "Whole-network convolution time" in document["about"]
    assert tuple(document["networks"]) == network.NETWORKS
    networks = network.load_networks()
    # conv layers per network (ResNet-50 with its 4 projection shortcuts)
    assert {name: sum(conv.count for conv in convs) for name, convs in networks.items()} == {
        "resnet50": 53, "vgg16": 13, "mobilenetv2": 52}
    for convs in networks.values():
        shapes = [(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding, c.size,
                   c.groups) for c in convs]
        assert len(set(shapes)) == len(shapes)  # distinct shapes, repeats in `count`
        for conv in convs:
            conv.geometry(1, "NHWC")  # a valid convolution


def test_data_file_matches_shared_copy():
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} is not on this machine")
    assert network.network_data() == json.loads(SHARED.read_text(encoding="utf-8"))


def test_select_networks():
    assert list(network.select_networks(["all"])) == list(network.NETWORKS)
    assert list(network.select_networks(["vgg16", "resnet50", "vgg16"])) == ["vgg16",
                                                                             "resnet50"]
    with pytest.raises(network.BenchError, match="valid: resnet50, vgg16, mobilenetv2, all"):
        network.select_networks(["alexnet"])


# ----------------------------------------------------------------------------- CLI

def test_cli_without_torch_rows_and_sums(tiny_networks, tmp_path, capsys):
    path = tmp_path / "network.json"
    assert bench_main(["bench", "--network", "mobilenetv2", "--batch", "1", "--repeats", "1",
                       "--no-torch", "--layout", "NHWC", "--quiet", "--json",
                       str(path)]) == 0
    out = capsys.readouterr().out
    assert "mobilenetv2, batch 1, NHWC:" in out and "torch not used" in out
    first = next(line for line in out.splitlines() if line.startswith("4>4 3x3/2 p1 9 g2"))
    cells = first.split()[5:]  # after the label's five words
    assert cells[:2] == ["3", "gemm"] and float(cells[2]) > 0 and float(cells[5]) > 0
    assert cells[3:5] == ["-", "-"] and cells[6:] == ["-", "-"]  # torch ms and ratios
    assert any(line.startswith("whole network ") for line in out.splitlines())

    document = json.loads(path.read_text())
    assert document["networks"] == ["mobilenetv2"] and document["layouts"] == ["NHWC"]
    assert document["batches"] == [1] and document["torch"] is None
    rows, (total,) = document["rows"], document["sums"]
    assert len(rows) == 2 and set(rows[0]) == ROW_KEYS and set(total) == SUM_KEYS
    assert [row["conv"] for row in rows] == ["4>4 3x3/2 p1 9 g2", "3>8 3x3/1 p1 10"]
    assert [row["auto_algorithm"] for row in rows] == [
        conv.geometry(1, "NHWC").algorithm("float32") for conv in TINY]
    for row in rows:
        assert row["forward_ms"] > 0 and row["backward_ms"] > 0
        assert row["torch_forward_ms"] is None and row["forward_ratio"] is None
        assert row["matches_torch"] is None
    assert (total["shapes"], total["convs"]) == (2, 5)
    for key in ("forward_ms", "backward_ms"):
        assert total[key] == pytest.approx(sum(row["count"] * row[key] for row in rows))
    assert total["torch_forward_ms"] is None and total["backward_ratio"] is None


def test_cli_against_torch_both_layouts(tiny_networks, tmp_path, capsys, torch):
    path = tmp_path / "network.json"
    assert bench_main(["bench", "--network", "vgg16", "resnet50", "--batch", "2",
                       "--repeats", "1", "--quiet", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and " !" not in out
    document = json.loads(path.read_text())
    assert document["networks"] == ["vgg16", "resnet50"]
    assert document["layouts"] == ["NCHW", "NHWC"]
    assert [(t["network"], t["layout"]) for t in document["sums"]] == [
        ("vgg16", "NCHW"), ("vgg16", "NHWC"), ("resnet50", "NCHW"), ("resnet50", "NHWC")]
    assert len(document["rows"]) == 8
    for row in document["rows"]:
        assert row["matches_torch"] is True  # channels_last and HWIO weights line up
        assert row["forward_ratio"] == pytest.approx(row["torch_forward_ms"]
                                                     / row["forward_ms"])
    for total in document["sums"]:
        mine = [row for row in document["rows"]
                if (row["network"], row["layout"]) == (total["network"], total["layout"])]
        for key in ("forward_ms", "backward_ms", "torch_forward_ms", "torch_backward_ms"):
            assert total[key] == pytest.approx(sum(row["count"] * row[key] for row in mine))
        assert total["backward_ratio"] == pytest.approx(total["torch_backward_ms"]
                                                        / total["backward_ms"])
    summary = out.split("whole-network convolution time")[1]
    assert len([line for line in summary.splitlines() if line.startswith(("vgg16",
                                                                          "resnet50"))]) == 4


def test_torch_sees_the_same_convolution(torch):
    config = network.make_network_config(["mobilenetv2"], batches=[1], layouts=["NHWC"],
                                         repeats=1)
    conv = TINY[0]
    geom = conv.geometry(2, "NHWC")
    x, weight = config.random(geom.input_shape), config.random(geom.weight_shape)
    grad = config.random(geom.output_shape)
    forward, backward, as_fastconv = network.torch_functions(torch, x, weight, grad, "NHWC",
                                                             conv.conv_args())
    assert forward().is_contiguous(memory_format=torch.channels_last)
    output, (grad_x, grad_w) = as_fastconv(forward(), backward())
    expected = fastconv.conv2d_backward(grad, x, weight, layout="NHWC",
                                        needs_bias_grad=False, **conv.conv_args())
    assert output == pytest.approx(fastconv.conv2d(x, weight, layout="NHWC",
                                                   **conv.conv_args()), abs=1e-4)
    assert grad_x == pytest.approx(expected.grad_input, abs=1e-4)
    assert grad_w == pytest.approx(expected.grad_weight, abs=1e-4)


def test_real_network_end_to_end(tmp_path):
    """The packaged MobileNetV2 through ``python -m fastconv`` (about a second)."""
    path = tmp_path / "mobilenetv2.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--network", "mobilenetv2", "--batch", "1",
         "--repeats", "1", "--no-torch", "--layout", "NHWC", "--json", str(path)],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "[30/30] network mobilenetv2" in result.stderr
    assert max(map(len, result.stdout.splitlines())) <= 100
    document = json.loads(path.read_text())
    rows, (total,) = document["rows"], document["sums"]
    assert len(rows) == 30 and total["convs"] == 52
    assert total["forward_ms"] == pytest.approx(sum(r["count"] * r["forward_ms"] for r in rows))
    assert total["backward_ms"] == pytest.approx(sum(r["count"] * r["backward_ms"]
                                                     for r in rows))


def test_bad_network_name_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as stop:
        bench_main(["bench", "--network", "alexnet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --network" in err and "alexnet" in err
    for name in (*network.NETWORKS, "all"):
        assert name in err


@pytest.mark.parametrize("extra", [["--compare"], ["--ops", "conv2d"], ["--layers", "small.*"],
                                   ["--conv", "1,3,8,8,4,3,1,1"]])
def test_network_rejects_other_runs_options(extra, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_main(["bench", "--network", "vgg16", *extra])
    assert stop.value.code == 2
    assert f"it takes no {extra[0]}" in capsys.readouterr().err


def test_sums_are_none_where_a_time_is_missing():
    rows = [network.NetworkRow("n", 1, "NCHW", conv, "gemm", forward_s=0.5, backward_s=None,
                               torch_forward_s=1.0)
            for conv in TINY]
    (total,) = network.network_sums(rows)
    assert total.forward_s == pytest.approx(0.5 * 5) and total.backward_s is None
    assert total.forward_ratio == pytest.approx(2.0) and total.backward_ratio is None


# ----------------------------------------------------------------------------- asv

@pytest.fixture
def bench_network(monkeypatch):
    """benchmarks/bench_network.py, imported from the checkout."""
    return asv_benchmark(monkeypatch, "bench_network")


def test_asv_tracks_whole_network_ratios(bench_network, tiny_networks, torch):
    module = bench_network
    assert module.NETWORKS == list(network.NETWORKS)
    for cls, method in ((module.NetworkForward, "track_forward_ratio"),
                        (module.NetworkBackward, "track_backward_ratio")):
        benchmark = cls()
        benchmark.setup("mobilenetv2", 1, "NHWC")
        assert getattr(benchmark, method)("mobilenetv2", 1, "NHWC") > 0
    assert benchmark.total.forward_s is None  # the backward class times only its pass


def test_asv_skips_without_torch(bench_network, monkeypatch):
    hide_torch(monkeypatch)
    with pytest.raises(NotImplementedError, match="torch"):
        bench_network.NetworkForward().setup("vgg16", 1, "NCHW")


@pytest.fixture
def bench_depthwise(monkeypatch):
    """benchmarks/bench_depthwise.py, imported from the checkout."""
    return asv_benchmark(monkeypatch, "bench_depthwise")


def test_asv_depthwise_kernel_sizes(bench_depthwise, torch):
    """The depthwise benchmarks of issue 16: every kernel size and layout runs, the ratios
    against torch are positive, and without torch the ratio is skipped."""
    module = bench_depthwise
    assert {case.split()[1] for case in module.CASES} >= {"3x3", "5x5", "1x7", "7x1"}
    for case in ("576@14 1x7 s1", "240@28 5x5 s2"):
        for layout in module.LAYOUTS:
            for cls, timer, tracker in ((module.DepthwiseForward, "time_forward",
                                         "track_forward_ratio"),
                                        (module.DepthwiseBackward, "time_backward",
                                         "track_backward_ratio")):
                benchmark = cls()
                benchmark.setup(case, layout, 1)
                try:
                    getattr(benchmark, timer)(case, layout, 1)
                    assert getattr(benchmark, tracker)(case, layout, 1) > 0
                finally:
                    benchmark.teardown()


def test_asv_depthwise_skips_ratios_without_torch(bench_depthwise, monkeypatch):
    hide_torch(monkeypatch)
    benchmark = bench_depthwise.DepthwiseForward()
    benchmark.setup("576@14 3x3 s1", "NCHW", 1)
    try:
        benchmark.time_forward()
        with pytest.raises(NotImplementedError, match="torch"):
            benchmark.track_forward_ratio()
    finally:
        benchmark.teardown()
