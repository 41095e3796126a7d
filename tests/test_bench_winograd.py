"""The bench's algorithm= comparison: "gemm", "winograd" and torch beside "auto" on the
Winograd-eligible layers, in the default bench, ``--compare``, their JSON and the asv
benchmarks of benchmarks/bench_algorithm.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv.bench import algorithms, compare, measure, report
from fastconv.bench.config import make_config
from fastconv.bench.suite import Case, Layer, load_layers

from conftest import asv_benchmark

PACKAGE_PARENT = str(Path(fastconv.__file__).resolve().parents[1])

CONV_OPS = ["conv2d", "conv2d_backward", "layer"]
# --conv layers: 3x3 stride 1 (Winograd-eligible) and the same at stride 2 (not).
ELIGIBLE = "user.N1.C8.H12.W12.O8.k3.s1.p1"
STRIDED = "user.N1.C8.H12.W12.O8.k3.s2.p1"
ALGORITHM_KEYS = ["algorithm_gemm_ms", "algorithm_winograd_ms", "algorithm_gemm_speedup_torch",
                  "algorithm_winograd_speedup_torch", "winograd_vs_gemm"]


def run_cli(*args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def suite_geometry(name, batch=1, layout="NCHW"):
    return Case({layer.name: layer for layer in load_layers()}[name], batch).geometry(layout)


# ----------------------------------------------------------------------------- eligibility

@pytest.mark.parametrize("name, eligible", [
    ("resnet50.res4.3x3", True), ("lecture.8to16", True), ("vgg16.conv1_1", True),
    ("mobilenet.dw112", False),       # depthwise
    ("resnet50.res3.3x3s2", False),   # stride 2
    ("resnet50.res5.1x1", False),     # 1x1
])
def test_eligible_algorithms_follow_winograd_blocker(name, eligible):
    geom = suite_geometry(name)
    assert algorithms.winograd_eligible(geom) is eligible
    assert algorithms.eligible_algorithms(geom) == (("gemm", "winograd") if eligible else ())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_auto_choice_is_reported(dtype):
    # The input gradient's choice comes from the engine's private planner: None here means
    # its interface changed and the tables print "-".
    for name in ("resnet50.res4.3x3", "resnet50.res5.1x1"):
        for batch in (1, 8):
            geom = suite_geometry(name, batch)
            assert algorithms.forward_algorithm(geom, dtype) == geom.algorithm(dtype)
            assert algorithms.input_grad_algorithm(geom, dtype) in ("gemm", "winograd")
    assert algorithms.input_grad_algorithm(suite_geometry("resnet50.res5.1x1"),
                                           "float32") == "gemm"


# ----------------------------------------------------------------------------- measure_row

def _measure(algorithm_results):
    """measure_row on constant results: NumPy gives ones, fastconv ("auto") ones, each
    forced algorithm its given array."""
    config = make_config(layers=["lecture.8to16"], batches=[1], repeats=1, use_torch=False)
    (case,) = config.layer_cases()
    ones = np.ones(4)
    fns = {name: (lambda value=value: value) for name, value in algorithm_results.items()}
    return measure.measure_row("conv2d", case, config, 32, lambda: ones, lambda: ones, None,
                               same=measure.close_result, flops=100, blas=True,
                               algorithm_fns=fns)


def test_measure_row_times_and_checks_forced_algorithms():
    row = _measure({"gemm": np.ones(4), "winograd": np.ones(4)})
    assert set(row.algorithm_s) == {"gemm", "winograd"}
    assert all(seconds > 0 for seconds in row.algorithm_s.values())
    assert row.matches_numpy is True
    # A wrong result from a forced algorithm flags the row like a wrong "auto" result.
    assert _measure({"gemm": np.ones(4), "winograd": np.zeros(4)}).matches_numpy is False
    assert _measure({}).algorithm_s == {}


def _row(op="conv2d", layer="a", algorithm_s=None, torch_s=2.0, auto="gemm"):
    return measure.Row(op, layer, 1, (1, 8, 12, 12), 100, fastconv_s=1.0, numpy_s=3.0,
                       torch_s=torch_s, matches_numpy=True, flops=10 ** 9,
                       algorithm_s=algorithm_s or {}, auto_algorithm=auto)


def test_row_ratios_and_json_keys():
    row = _row(algorithm_s={"gemm": 1.0, "winograd": 0.5})
    assert row.winograd_vs_gemm == pytest.approx(2.0)
    assert row.algorithm_speedup_torch("gemm") == pytest.approx(2.0)
    assert row.algorithm_speedup_torch("winograd") == pytest.approx(4.0)
    entry = row.as_dict()
    assert entry["auto_algorithm"] == "gemm"
    assert entry["algorithm_gemm_ms"] == pytest.approx(1000.0)
    assert entry["algorithm_winograd_ms"] == pytest.approx(500.0)
    assert entry["algorithm_winograd_speedup_torch"] == pytest.approx(4.0)
    assert entry["winograd_vs_gemm"] == pytest.approx(2.0)
    plain = _row(auto=None).as_dict()
    assert all(plain[key] is None for key in ALGORITHM_KEYS)
    assert _row(algorithm_s={"gemm": 1.0, "winograd": 0.5}, torch_s=None).as_dict()[
        "algorithm_gemm_speedup_torch"] is None


def test_algorithm_table_lists_only_eligible_rows():
    rows = [_row(layer="eligible", algorithm_s={"gemm": 1.0, "winograd": 0.5}),
            _row(layer="strided")]
    lines = report.algorithm_lines(rows)
    table = [line for line in lines if line.startswith("  ")]
    assert table[0].split()[:4] == ["operator", "layer", "batch", "auto"]
    assert len(table) == 3 and "eligible" in table[2] and "strided" not in "\n".join(lines)
    assert table[2].split()[-3:] == ["2.00x", "4.00x", "2.00x"]
    assert "geometric mean winograd vs gemm conv2d: 2.00x; vs torch: gemm 2.00x, " \
           "winograd 4.00x" in lines
    assert report.algorithm_lines(rows[1:]) == []
    means = report.summary(rows)["conv2d"]
    assert means["winograd_vs_gemm"] == pytest.approx(2.0)
    assert means["algorithm_winograd_vs_torch"] == pytest.approx(4.0)


# ----------------------------------------------------------------------------- the CLI

def test_bench_shows_algorithms_on_eligible_layers_only(tmp_path):
    path = tmp_path / "rows.json"
    result = run_cli("bench", "--conv", "1,8,12,12,8,3,1,1", "--conv", "1,8,12,12,8,3,2,1",
                     "--ops", *CONV_OPS, "--repeats", "1", "--no-torch", "--quiet",
                     "--json", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The main table: one line per row, "vs torch" still last.
    main = [line for line in out.splitlines() if line.startswith(tuple(CONV_OPS))]
    assert len(main) == 6 and all(line.split()[-1] == "-" for line in main)
    assert "algorithm= on the Winograd-eligible layers" in out
    table = [line.split() for line in out.split("algorithm= on the")[1].splitlines()
             if line.startswith("  ") and "user." in line]
    assert [(cells[0], cells[1]) for cells in table] == [(op, ELIGIBLE) for op in CONV_OPS]
    for cells in table:
        assert cells[3] in ("gemm", "winograd")                 # what auto ran
        assert float(cells[5]) > 0 and float(cells[6]) > 0      # gemm ms, winograd ms
        assert cells[7] == "-" and cells[-1].endswith("x")      # no torch; winograd vs gemm
    for op in CONV_OPS:
        assert f"geometric mean winograd vs gemm {op}:" in out
    document = json.loads(path.read_text())
    rows = {(row["op"], row["layer"]): row for row in document["rows"]}
    assert len(rows) == 6
    for op in CONV_OPS:
        eligible, strided = rows[op, ELIGIBLE], rows[op, STRIDED]
        assert eligible["matches_numpy"] is True
        assert eligible["auto_algorithm"] in ("gemm", "winograd")
        assert eligible["algorithm_gemm_ms"] > 0 and eligible["algorithm_winograd_ms"] > 0
        assert eligible["winograd_vs_gemm"] == pytest.approx(
            eligible["algorithm_gemm_ms"] / eligible["algorithm_winograd_ms"])
        assert eligible["algorithm_winograd_speedup_torch"] is None  # --no-torch
        assert strided["auto_algorithm"] == "gemm"
        assert all(strided[key] is None for key in ALGORITHM_KEYS)
        assert document["summary"][op]["winograd_vs_gemm"] > 0


def test_bench_without_eligible_layers_has_no_algorithm_table():
    result = run_cli("bench", "--conv", "1,8,12,12,8,3,2,1", "--ops", "conv2d",
                     "--repeats", "1", "--no-torch", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "algorithm= on the" not in result.stdout
    assert "winograd vs gemm" not in result.stdout


def test_compare_shows_algorithms_on_eligible_rows(tmp_path):
    path = tmp_path / "compare.json"
    result = run_cli("bench", "--compare", "--layers", "lecture.8to16", "mobilenet.stem",
                     "--batch", "1", "--layout", "NCHW", "--repeats", "1", "--no-torch",
                     "--quiet", "--json", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The target table keeps one line per row; the algorithm= table is indented.
    assert len([line for line in out.splitlines() if line.startswith("lecture.8to16")]) == 1
    assert out.index("algorithm= on the") < out.index("targets:")
    section = out.split("algorithm= on the")[1].split("targets:")[0]
    table = [line.split() for line in section.splitlines()
             if line.startswith("  ") and ("lecture.8to16" in line or "stem" in line)]
    assert [(cells[0], cells[3]) for cells in table] == [("lecture.8to16", "fwd"),
                                                         ("lecture.8to16", "bwd")]
    for cells in table:
        assert cells[4] in ("gemm", "winograd") and float(cells[6]) > 0
        assert float(cells[7]) > 0 and float(cells[-1]) > 0
    assert "algorithm= geometric means: fwd gemm ratio" in section
    document = json.loads(path.read_text())
    rows = {row["layer"]: row for row in document["rows"]}
    lecture, stem = rows["lecture.8to16"], rows["mobilenet.stem"]
    for pass_ in ("forward", "backward"):
        assert lecture[f"algorithm_gemm_{pass_}_ms"] > 0
        assert lecture[f"algorithm_winograd_{pass_}_ms"] > 0
        assert lecture[f"algorithm_winograd_{pass_}_ratio"] == pytest.approx(
            lecture[f"peer_{pass_}_ms"] / lecture[f"algorithm_winograd_{pass_}_ms"])
        assert lecture[f"winograd_vs_gemm_{pass_}"] > 0
        assert stem[f"algorithm_winograd_{pass_}_ms"] is None
        assert stem[f"winograd_vs_gemm_{pass_}"] is None
        assert document["algorithm_summary"][pass_]["winograd_vs_gemm"] > 0
    assert lecture["auto_forward_algorithm"] in ("gemm", "winograd")
    assert stem["auto_forward_algorithm"] == stem["auto_backward_algorithm"] == "gemm"


def test_compare_report_without_eligible_rows():
    row = compare.CompareRow(layer="a", batch=1, layout="NCHW", groups=1, flops=10 ** 9,
                             forward_s=1.0, backward_s=2.0, forward_1thread_s=1.8,
                             peer_forward_s=1.0, peer_backward_s=2.0, gemm_s=0.9)
    configs = compare.make_compare_config(layers=["lecture.8to16"], batches=[1],
                                          layouts=("NCHW",), use_torch=False, threads=1)
    assert "algorithm=" not in compare.format_report([row], configs)
    assert compare.to_json([row], configs)["algorithm_summary"] is None
    row.algorithm_forward_s = {"gemm": 1.0, "winograd": 0.25}
    row.algorithm_backward_s = {"gemm": 2.0, "winograd": 1.0}
    assert row.winograd_vs_gemm("forward") == pytest.approx(4.0)
    assert row.algorithm_ratio("winograd", "backward") == pytest.approx(2.0)
    means = compare.to_json([row], configs)["algorithm_summary"]
    assert means["forward"] == pytest.approx({"gemm_ratio": 1.0, "winograd_ratio": 4.0,
                                              "winograd_vs_gemm": 4.0})


# ----------------------------------------------------------------------------- asv

@pytest.fixture
def bench_algorithm(monkeypatch):
    """benchmarks/bench_algorithm.py, imported from the checkout."""
    return asv_benchmark(monkeypatch, "bench_algorithm")


def test_asv_benchmarks_run_both_algorithms_on_eligible_layers(bench_algorithm):
    module = bench_algorithm
    assert module.ALGORITHMS == ["gemm", "winograd"]
    for name in module.LAYERS:
        assert algorithms.winograd_eligible(suite_geometry(name)), name
    classes = [module.Conv2DForwardAlgorithm, module.Conv2DBackwardAlgorithm,
               module.Conv2DLayerAlgorithm]
    for cls in classes:
        assert "algorithm" in cls.param_names
        assert cls.params[cls.param_names.index("algorithm")] == module.ALGORITHMS
        (method,) = [name for name in dir(cls) if name.startswith("time_")]
        for algorithm in module.ALGORITHMS:
            params = ("NHWC", "float32", "resnet50.res5.3x3", algorithm, 1, 1)
            benchmark = cls()
            benchmark.setup(*params)
            try:
                getattr(benchmark, method)(*params)
            finally:
                benchmark.teardown(*params)
    layer = module.Conv2DLayerAlgorithm()
    layer.setup("NCHW", "float32", "resnet50.res5.3x3", "winograd", 1, 1)
    layer.teardown()
    assert layer.layer.algorithm == "winograd"


def test_asv_benchmarks_skip_what_cannot_run(bench_algorithm, monkeypatch):
    module = bench_algorithm
    with pytest.raises(NotImplementedError, match="depthwise"):
        module.Conv2DForwardAlgorithm().setup("NCHW", "float32", "mobilenet.dw112",
                                              "winograd", 1, 1)

    def conv2d_without_algorithm(x, weight, bias=None, stride=1, padding=0, dilation=1,
                                 groups=1, *, layout="NCHW", out=None):
        raise AssertionError("not to be called")

    # An older fastconv under `asv continuous`: both algorithms skip.
    monkeypatch.setattr(fastconv, "conv2d", conv2d_without_algorithm)
    for algorithm in module.ALGORITHMS:
        with pytest.raises(NotImplementedError, match="no algorithm= keyword"):
            module.Conv2DBackwardAlgorithm().setup("NCHW", "float32", "resnet50.res4.3x3",
                                                   algorithm, 1, 1)


def test_user_layer_eligibility_matches_fastconv():
    # The --conv layers of the CLI tests above: one each side of the rule.
    eligible = Layer("e", 8, 12, 8, 3, 1, 1, batches=(1,))
    strided = Layer("s", 8, 12, 8, 3, 2, 1, batches=(1,))
    assert algorithms.winograd_eligible(Case(eligible, 1).geometry("NCHW"))
    assert not algorithms.winograd_eligible(Case(strided, 1).geometry("NHWC"))
