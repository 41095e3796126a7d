"""The plan cache of the functional calls (fastconv._plan_cache): repeated signatures skip
geometry and planning, everything else is checked on every call, and an entry never
outlives the thread count or tuning it was planned for."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _plan_cache, _tuning, conv2d, conv2d_backward, conv_transpose2d
from fastconv import geometry as geo


@pytest.fixture(autouse=True)
def empty_cache():
    _plan_cache.clear()
    yield
    _plan_cache.clear()


@pytest.fixture
def geometries(monkeypatch):
    """Counts of the geometries built by the functional calls."""
    counts = {"conv": 0, "transposed": 0}

    def counted(name, make):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return make(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(geo, "conv2d_geometry", counted("conv", geo.conv2d_geometry))
    monkeypatch.setattr(geo, "transposed_conv_geometry",
                        counted("transposed", geo.transposed_conv_geometry))
    return counts


def arrays(rng, dtype=np.float32):
    x = rng.standard_normal((2, 4, 6, 5)).astype(dtype)
    w = rng.standard_normal((6, 4, 3, 3)).astype(dtype)
    return x, w


def test_a_repeated_signature_is_planned_once(rng, geometries):
    x, w = arrays(rng)
    first = conv2d(x, w, padding=1)
    assert geometries["conv"] == 1
    again = conv2d(x + 1, w, padding=1, stride=1)  # same signature: other values
    assert geometries["conv"] == 1
    nhwc = fastconv.reference.conv2d_strided((x + 1).transpose(0, 2, 3, 1),
                                             w.transpose(2, 3, 1, 0), padding=1)
    np.testing.assert_allclose(again, nhwc.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
    assert np.array_equal(conv2d(x, w, padding=1), first)
    conv2d(x, w, padding=(1, 1))  # another spelling: another entry
    conv2d(x[0], w, padding=1)    # one image
    conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)
    assert geometries["conv"] == 4
    g = np.ones_like(first)
    for _ in range(2):
        conv2d_backward(g, x, w, padding=1)
        conv2d_backward(g, x, w, padding=1, needs_weight_grad=False)
        conv_transpose2d(g, w, padding=1)
    assert geometries["conv"] == 6
    assert geometries["transposed"] == 1


@pytest.mark.parametrize("argument", [
    dict(padding=[1, 1]), dict(padding=np.int64(1)), dict(stride=(np.int32(1), 1)),
    dict(padding=1, groups=np.int64(1))])
def test_signatures_that_are_not_plain_are_planned_every_time(rng, geometries, argument):
    x, w = arrays(rng)
    expected = conv2d(x, w, padding=1)
    for _ in range(2):
        assert np.array_equal(conv2d(x, w, **({"padding": 1} | argument)), expected)
    assert geometries["conv"] == 3


def test_bool_is_never_taken_for_an_int(rng):
    x, w = arrays(rng)
    conv2d(x, w, groups=1)
    for _ in range(2):
        with pytest.raises((TypeError, ValueError), match="groups"):
            conv2d(x, w, groups=True)


def test_threads_and_tuning_have_their_own_plans(rng, geometries):
    x, w = arrays(rng)
    with fastconv.threads(1):
        one = conv2d(x, w, padding=1)
    with fastconv.threads(2):
        two = conv2d(x, w, padding=1)
    assert geometries["conv"] == 2 and np.array_equal(one, two)
    with _tuning.tuned(parallel_min_flops=0):
        conv2d(x, w, padding=1)
        conv2d(x, w, padding=1)
    with _tuning.tuned(parallel_min_flops=0):  # a new tuning: planned again
        conv2d(x, w, padding=1)
    assert geometries["conv"] == 4
    with fastconv.threads(2):
        conv2d(x, w, padding=1)  # back to the default tuning: the entry stands
    assert geometries["conv"] == 4


def test_checks_of_other_arguments_run_on_every_call(rng):
    x, w = arrays(rng)
    y = conv2d(x, w, np.zeros(6, np.float32), padding=1)
    with pytest.raises(ValueError, match=r"conv2d: expected bias of shape \(6,\)"):
        conv2d(x, w, np.zeros(5, np.float32), padding=1)
    with pytest.raises(ValueError, match="conv2d: out "):
        conv2d(x, w, padding=1, out=np.empty((2, 6, 6, 4), np.float32))
    with pytest.raises(ValueError, match="expected grad_output of shape"):
        conv2d_backward(y[:, :, :5], x, w, padding=1)
    conv2d_backward(y, x, w, padding=1)
    with pytest.raises(ValueError, match="expected grad_output of shape"):
        conv2d_backward(y[:, :, :5], x, w, padding=1)
    wt = w
    conv_transpose2d(y, wt, padding=1)
    with pytest.raises(ValueError, match=r"conv_transpose2d: expected bias of shape \(4,\)"):
        conv_transpose2d(y, wt, np.zeros(6, np.float32), padding=1)


def test_failed_calls_store_nothing(rng, geometries):
    x, w = arrays(rng)
    for _ in range(2):
        with pytest.raises(ValueError, match="winograd"):
            conv2d(x, w, stride=2, algorithm="winograd")
    assert geometries["conv"] == 2
    conv2d(np.empty((0, 4, 6, 5), np.float32), w)
    conv_transpose2d(np.empty((0, 6, 4, 3), np.float32), w)


def test_the_cache_is_bounded(rng, monkeypatch):
    monkeypatch.setattr(_plan_cache, "MAX_ENTRIES", 3)
    x, w = arrays(rng)
    for pad in range(5):
        conv2d(x, w, padding=pad)
    assert 1 <= len(_plan_cache._entries) <= 3
