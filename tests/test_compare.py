"""`python -m fastconv bench --compare`: the performance-target table and its checks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv
from fastconv.bench import compare

PACKAGE_PARENT = str(Path(fastconv.__file__).resolve().parents[1])
TINY = ["--layers", "lecture.8to16", "--batch", "1", "--repeats", "1"]


def run_cli(*args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def row(layer="a", groups=1, forward=1.0, backward=2.0, one_thread=1.8, peer_forward=1.0,
        peer_backward=2.0, gemm=0.9, layout="NCHW", batch=1):
    return compare.CompareRow(layer=layer, batch=batch, layout=layout, groups=groups,
                              flops=10**9, forward_s=forward, backward_s=backward,
                              forward_1thread_s=one_thread, peer_forward_s=peer_forward,
                              peer_backward_s=peer_backward, gemm_s=gemm)


def test_compare_without_torch_reports_numpy_and_targets(tmp_path):
    path = tmp_path / "compare.json"
    result = run_cli("bench", "--compare", "--no-torch", "--quiet", "--json", str(path), *TINY)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "peer: NumPy" in out and "targets:" in out
    for layout in ("NCHW", "NHWC"):
        assert f"lecture.8to16      1    {layout}" in out
    document = json.loads(path.read_text())
    assert document["torch"] is None and document["layouts"] == ["NCHW", "NHWC"]
    assert len(document["rows"]) == 2
    for entry in document["rows"]:
        assert entry["forward_ms"] > 0 and entry["backward_ms"] > 0
        assert entry["peer_forward_ms"] > 0 and entry["gemm_ms"] > 0
        assert entry["forward_ratio"] == pytest.approx(
            entry["peer_forward_ms"] / entry["forward_ms"])
    names = [target["name"] for target in document["targets"]]
    assert "forward geometric mean" in names and "backward geometric mean" in names


def test_compare_one_layout_and_torch(torch):
    result = run_cli("bench", "--compare", "--layout", "nhwc", "--quiet", *TINY)
    assert result.returncode == 0, result.stderr
    assert f"torch {torch.__version__}" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("lecture.8to16")]
    assert len(rows) == 1 and "NHWC" in rows[0]


def test_compare_rejects_ops():
    result = run_cli("bench", "--compare", "--ops", "conv2d", *TINY)
    assert result.returncode == 2
    assert "--compare" in result.stderr and "Traceback" not in result.stderr


def test_checks_hold_and_miss():
    rows = [row("fast", forward=0.5, peer_forward=1.0, gemm=0.45),
            row("slow", forward=2.0, peer_forward=1.0, gemm=1.0),
            row("dw", groups=4, forward=1.0, peer_forward=1.5, backward=1.0,
                peer_backward=0.9, gemm=None)]
    checks = {check.name: check for check in compare.check_targets(rows, threads=2)}
    mean = checks["forward geometric mean"]
    assert mean.value == pytest.approx((2.0 * 0.5 * 1.5) ** (1 / 3)) and mean.holds
    slowest = checks["forward slowest layer"]
    assert slowest.value == pytest.approx(0.5) and not slowest.holds
    assert "slow batch 1 NCHW" in slowest.detail
    gemm = checks["GEMM efficiency, lowest dense layer"]
    assert gemm.value == pytest.approx(0.5) and not gemm.holds  # the grouped row is left out
    grouped = checks["depthwise/grouped, slowest of fwd and bwd"]
    assert grouped.value == pytest.approx(0.9) and not grouped.holds
    threads = checks["1 -> 2 threads speed-up, geometric mean"]
    assert threads.value == pytest.approx((3.6 * 0.9 * 1.8) ** (1 / 3))


def test_checks_without_peer_are_missing_not_passing():
    rows = [row(peer_forward=None, peer_backward=None)]
    checks = {check.name: check for check in compare.check_targets(rows, threads=1)}
    assert checks["forward geometric mean"].value is None
    assert not checks["forward geometric mean"].holds
    assert not any("threads" in name for name in checks)  # one thread: nothing to scale


def test_report_marks_targets():
    rows = [row(forward=0.5, peer_forward=1.0, gemm=0.5, backward=1.0, peer_backward=2.0)]
    configs = compare.make_compare_config(layers=["lecture.8to16"], batches=[1],
                                          layouts=("NCHW",), use_torch=False, threads=2)
    text = compare.format_report(rows, configs)
    assert "ok    forward geometric mean: 2.00 (target >= 1)" in text
    assert "ok    GEMM efficiency, lowest dense layer: 1.00" in text
