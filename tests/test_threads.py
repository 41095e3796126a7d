"""Thread control (docs/spec.md §0): get_num_threads / set_num_threads / threads().

Every test leaves the process-wide setting as it found it (conftest also restores it).
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv

REPO_ROOT = pathlib.Path(fastconv.__file__).resolve().parents[1]


def _openmp_enabled():
    from fastconv._kernels import _openmp
    return _openmp.openmp_enabled()


def _openmp_default_from_environment(environ):
    """What an OpenMP runtime picks as its default team size: the first OMP_NUM_THREADS
    entry when set, else the CPUs this process may run on."""
    value = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value:
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def _run_python(code, **env_overrides):
    env = dict(os.environ)
    env.update(env_overrides)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ============================================================ default

def test_default_is_the_openmp_default():
    n = fastconv.get_num_threads()
    assert isinstance(n, int)
    assert n >= 1
    if _openmp_enabled():
        assert n == _openmp_default_from_environment(os.environ)
    else:
        assert n == 1


@pytest.mark.parametrize("omp", ["1", "3"])
def test_default_honours_omp_num_threads(omp):
    out = _run_python("""
        import fastconv
        print(fastconv.get_num_threads())
        with fastconv.threads(2):
            print(fastconv.get_num_threads())
        print(fastconv.get_num_threads())
    """, OMP_NUM_THREADS=omp)
    expected = int(omp) if _openmp_enabled() else 1
    inside = 2 if _openmp_enabled() else 1
    assert out.split() == [str(expected), str(inside), str(expected)]


# ============================================================ set / get

def test_set_get_round_trip():
    before = fastconv.get_num_threads()
    try:
        for n in (1, 2, 3, 16, 1, np.int64(4)):
            assert fastconv.set_num_threads(n) is None
            assert fastconv.get_num_threads() == int(n)
            assert type(fastconv.get_num_threads()) is int
    finally:
        fastconv.set_num_threads(before)
    assert fastconv.get_num_threads() == before


def test_changed_setting_is_used_and_results_stay_the_same(rng):
    # A quick end-to-end check that a changed setting is used without breaking results.
    x = rng.standard_normal((2, 8, 40, 40)).astype(np.float32)
    expected = fastconv.reference.im2col(x, 3, padding=1)
    before = fastconv.get_num_threads()
    try:
        for n in (1, 2, 4):
            fastconv.set_num_threads(n)
            np.testing.assert_array_equal(fastconv.im2col(x, 3, padding=1), expected)
    finally:
        fastconv.set_num_threads(before)


# ============================================================ threads() context

def test_threads_context_sets_and_restores():
    before = fastconv.get_num_threads()
    with fastconv.threads(1):
        assert fastconv.get_num_threads() == 1
    assert fastconv.get_num_threads() == before
    with fastconv.threads(5):
        assert fastconv.get_num_threads() == 5
    assert fastconv.get_num_threads() == before


def test_threads_context_restores_an_explicit_setting():
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(3)
        with fastconv.threads(2):
            assert fastconv.get_num_threads() == 2
        assert fastconv.get_num_threads() == 3
    finally:
        fastconv.set_num_threads(before)


def test_threads_context_restores_on_exception():
    before = fastconv.get_num_threads()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with fastconv.threads(1):
            assert fastconv.get_num_threads() == 1
            raise Boom
    assert fastconv.get_num_threads() == before


def test_nested_threads_contexts():
    before = fastconv.get_num_threads()
    with fastconv.threads(1):
        with fastconv.threads(2):
            assert fastconv.get_num_threads() == 2
            with fastconv.threads(3):
                assert fastconv.get_num_threads() == 3
            assert fastconv.get_num_threads() == 2
        assert fastconv.get_num_threads() == 1
        with pytest.raises(RuntimeError):
            with fastconv.threads(4):
                raise RuntimeError("inner")
        assert fastconv.get_num_threads() == 1
    assert fastconv.get_num_threads() == before


def test_set_num_threads_inside_a_context_is_undone_on_exit():
    before = fastconv.get_num_threads()
    with fastconv.threads(2):
        fastconv.set_num_threads(3)
        assert fastconv.get_num_threads() == 3
    assert fastconv.get_num_threads() == before


# ============================================================ bad n

BAD_COUNTS = [0, -1, 1.5, 2.0, True, False, "2", None, [2]]


@pytest.mark.parametrize("bad", BAD_COUNTS, ids=repr)
def test_set_num_threads_rejects_bad_counts(bad):
    before = fastconv.get_num_threads()
    with pytest.raises(ValueError, match=rf"set_num_threads: n.*{re.escape(repr(bad))}"):
        fastconv.set_num_threads(bad)
    assert fastconv.get_num_threads() == before


@pytest.mark.parametrize("bad", BAD_COUNTS, ids=repr)
def test_threads_context_rejects_bad_counts(bad):
    before = fastconv.get_num_threads()
    entered = False
    with pytest.raises(ValueError, match=rf"threads: n.*{re.escape(repr(bad))}"):
        with fastconv.threads(bad):
            entered = True
    assert not entered
    assert fastconv.get_num_threads() == before


def test_set_num_threads_inside_a_block_changes_that_block_only():
    before = fastconv.get_num_threads()
    with fastconv.threads(1):
        fastconv.set_num_threads(3)
        assert fastconv.get_num_threads() == 3
    assert fastconv.get_num_threads() == before


@pytest.mark.parametrize("fn", ["set_num_threads", "threads"])
def test_thread_counts_above_the_maximum_are_refused(fn):
    from fastconv.threads import MAX_THREADS

    with pytest.raises(ValueError, match=rf"{fn}: n must be at most {MAX_THREADS}, got 4097"):
        if fn == "threads":
            with fastconv.threads(MAX_THREADS + 1):
                pass
        else:
            fastconv.set_num_threads(MAX_THREADS + 1)


def test_blas_limit_closed_from_another_thread_restores_the_setting():
    """threadpoolctl >= 3.8 ignores OpenBLAS limits from all but one "controlling" thread;
    a region opened by a thread that is still alive must still be undone from another."""
    import threading

    from fastconv.threads import blas_info, blas_limit

    def blas_threads():
        return [info["num_threads"] for info in blas_info()]

    before = blas_threads()
    opened, done = threading.Event(), threading.Event()
    holder = {}

    def opener():
        holder["region"] = blas_limit(1)
        opened.set()
        done.wait(10)  # stays alive while the main thread closes its region

    worker = threading.Thread(target=opener)
    worker.start()
    try:
        assert opened.wait(10)
        assert set(blas_threads()) == {1}
        holder["region"].close()
        assert blas_threads() == before
    finally:
        done.set()
        worker.join(10)
