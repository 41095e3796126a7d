"""fastconv.cpu: the AVX2 / AVX-512 builds of the kernel modules and how one is chosen.

Every build present is run here whatever the CPU would pick, against the same float64
oracles as tests/test_conv.py, so a build that the dispatcher never selects on this
machine is still checked (when the CPU can execute it).
"""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _engine as conv_mod
from fastconv import cpu

from test_conv import GEOMS, random_like_output, ref_conv2d, ref_conv2d_backward, tol

DEPTHWISE = [name for name, geom in GEOMS.items()
             if geom.groups > 1 and geom.groups == geom.c and geom.n > 0]


def runnable_builds(name):
    """(isa, module) of every build of kernel module `name` that exists and this CPU can
    execute."""
    builds = [("baseline", importlib.import_module(f"fastconv._kernels.{name}"))]
    for isa in cpu.supported_isas():
        try:
            builds.append((isa, importlib.import_module(f"fastconv._kernels.{name}_{isa}")))
        except ImportError:
            pass
    return builds


BUILDS = runnable_builds("_depthwise")
CONV_BUILDS = runnable_builds("_conv")


def test_depthwise_geometries_are_covered():
    assert len(DEPTHWISE) >= 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("isa,module", BUILDS, ids=[isa for isa, _ in BUILDS])
def test_every_build_matches_reference(monkeypatch, rng, isa, module, layout, dtype):
    monkeypatch.setattr(conv_mod, "_depthwise", module)
    for name in DEPTHWISE:
        geom = GEOMS[name]
        x, w, b = geom.arrays(rng, dtype, layout)
        y = fastconv.conv2d(x, w, b, **geom.kwargs, layout=layout)
        np.testing.assert_allclose(y, ref_conv2d(x, w, b, **geom.kwargs, layout=layout),
                                   **tol(dtype), err_msg=name)
        g = random_like_output(rng, geom, layout, dtype)
        grads = fastconv.conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
        expected = ref_conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
        for got, want in zip(grads, expected):
            np.testing.assert_allclose(got, want, **tol(dtype), err_msg=name)


@pytest.mark.parametrize("isa,module", CONV_BUILDS, ids=[isa for isa, _ in CONV_BUILDS])
def test_every_conv_build_matches_reference(monkeypatch, rng, isa, module):
    """Each build of _conv, with its own paths (the AVX-512 one's direct small-GEMM blocks
    for 16 output channels in float32 NCHW)."""
    monkeypatch.setattr(conv_mod, "_conv", module)
    for name in ["basic", "pad-asym", "dil-stride-asym", "stride2-pad1", "many-tiles",
                 "groups2", "pointwise"]:
        geom = GEOMS[name]._replace(c_out=16)
        for layout in ("NCHW", "NHWC"):
            for dtype in (np.float32, np.float64):
                x, w, b = geom.arrays(rng, dtype, layout)
                y = fastconv.conv2d(x, w, b, **geom.kwargs, layout=layout)
                np.testing.assert_allclose(
                    y, ref_conv2d(x, w, b, **geom.kwargs, layout=layout), **tol(dtype),
                    err_msg=f"{name} {layout} {np.dtype(dtype)}")
                g = random_like_output(rng, geom, layout, dtype)
                grads = fastconv.conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
                expected = ref_conv2d_backward(g, x, w, **geom.kwargs, layout=layout)
                for got, want in zip(grads, expected):
                    # long float32 sums: errors scale with the largest entry, not each one
                    scale = float(np.abs(want).max()) if want.size else 0.0
                    np.testing.assert_allclose(got, want, rtol=tol(dtype)["rtol"],
                                               atol=tol(dtype)["atol"] * max(scale, 1.0),
                                               err_msg=name)


@pytest.mark.parametrize("isa,module", BUILDS[1:], ids=[isa for isa, _ in BUILDS[1:]])
def test_wider_builds_agree_with_baseline(monkeypatch, rng, isa, module):
    """Same loops, same summation order: the forward pass differs at most by fused
    multiply-add rounding."""
    geom = GEOMS["depthwise-wide-dilated"]
    x, w, b = geom.arrays(rng, np.float32, "NCHW")
    monkeypatch.setattr(conv_mod, "_depthwise", BUILDS[0][1])
    baseline = fastconv.conv2d(x, w, b, **geom.kwargs)
    monkeypatch.setattr(conv_mod, "_depthwise", module)
    np.testing.assert_allclose(fastconv.conv2d(x, w, b, **geom.kwargs), baseline,
                               rtol=1e-6, atol=1e-6)


def test_supported_isas_from_features():
    skx = {"AVX": True, "AVX2": True, "FMA3": True, "F16C": True, "AVX512F": True,
           "AVX512CD": True, "AVX512BW": True, "AVX512DQ": True, "AVX512VL": True}
    assert cpu.supported_isas(skx) == ["avx512", "avx2"]
    assert cpu.supported_isas({**skx, "AVX512VL": False}) == ["avx2"]
    assert cpu.supported_isas({**skx, "FMA3": False}) == []
    assert cpu.supported_isas({}) == []


def test_load_kernel_honours_the_cap_and_the_cpu():
    everything = {flag: True for _, needs in cpu.ISAS for flag in needs}
    base = importlib.import_module("fastconv._kernels._depthwise")
    assert cpu.load_kernel("_depthwise", features={}, environ={}) is base
    assert cpu.load_kernel("_depthwise", features=everything,
                           environ={"FASTCONV_SIMD": "baseline"}) is base
    assert cpu.loaded_kernels()["_depthwise"] == "baseline"
    built = [isa for isa, _ in BUILDS[1:]]
    if "avx2" in built:
        module = cpu.load_kernel("_depthwise", features=everything,
                                 environ={"FASTCONV_SIMD": "AVX2"})
        assert module.__name__ == "fastconv._kernels._depthwise_avx2"
    cpu.load_kernel("_depthwise")  # leave the record as the import made it


@pytest.mark.parametrize("value", ["sse", "avx", "native"])
def test_unknown_simd_setting_is_rejected(value):
    with pytest.raises(ValueError, match=f"FASTCONV_SIMD must be one of auto, baseline, avx2, "
                                         f"avx512; got '{value}'"):
        cpu.requested_isa({"FASTCONV_SIMD": value})
    assert cpu.requested_isa({"FASTCONV_SIMD": " Auto "}) is None
    assert cpu.requested_isa({}) is None


def test_environment_variable_selects_the_build_at_import():
    code = ("import fastconv._engine as c, fastconv.cpu as cpu; "
            "print(c._depthwise.__name__, cpu.loaded_kernels()['_depthwise'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "FASTCONV_SIMD": "baseline"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fastconv._kernels._depthwise", "baseline"]


def test_info_reports_the_builds():
    from fastconv.info import build_info, format_build_info

    info = build_info()
    assert info["simd"]["kernels"]["_depthwise"] in ("baseline", "avx2", "avx512")
    assert "SIMD" in format_build_info(info)


RMAC_BUILDS = runnable_builds("_rmac")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("isa,module", RMAC_BUILDS, ids=[isa for isa, _ in RMAC_BUILDS])
def test_every_rmac_build_agrees(monkeypatch, rng, isa, module, layout):
    """Region maxima are exact in every build; the descriptor's norms agree to rounding."""
    rmac_mod = importlib.import_module("fastconv.rmac")
    x = rng.standard_normal((2, 37, 9, 14)).astype(np.float32)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    rois = fastconv.rmac_regions(x, scales=3, layout=layout)
    monkeypatch.setattr(rmac_mod, "_rmac", RMAC_BUILDS[0][1])
    pooled, descriptor = (fastconv.roi_max_pool(x, rois, layout=layout),
                          fastconv.rmac(x, layout=layout))
    monkeypatch.setattr(rmac_mod, "_rmac", module)
    np.testing.assert_array_equal(fastconv.roi_max_pool(x, rois, layout=layout), pooled)
    np.testing.assert_allclose(fastconv.rmac(x, layout=layout), descriptor, rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("l3,sharers,expected", [
    (300 << 20, 2, 32 << 20),    # a VM shown its host's whole L3 (the Xeon seen here)
    (32 << 20, 2, 32 << 20),     # an AMD Zen 4 CCD's L3 shown to two vCPUs: all of it
    (32 << 20, 8, 32 << 20),     # the same CCD on bare metal
    (16 << 20, 0, 16 << 20),     # sysfs silent on sharing: os.cpu_count() CPUs
])
def test_the_l3_counted_is_at_most_a_share_per_cpu(monkeypatch, l3, sharers, expected):
    """l3_share_bytes: the L3 read, capped at L3_MAX_BYTES_PER_CPU per CPU sharing it
    (docs/performance.md#l3-share)."""
    monkeypatch.setattr(cpu, "l3_cache_bytes", lambda default=16 << 20: l3)
    monkeypatch.setattr(cpu, "_cache_sharers", lambda level: sharers)
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 2)
    assert cpu.l3_share_bytes() == expected


def test_linux_cpu_lists_are_counted():
    assert cpu._count_cpus("0") == 1
    assert cpu._count_cpus("0-1\n") == 2
    assert cpu._count_cpus("0-3,8,10-11") == 7
