"""Concurrency (docs/spec.md §0 "Threads", §2 Conv2D): the GIL is released by every kernel, a shared
Conv2D stays correct across Python threads, fastconv inside a user's thread pool gives
exact results and never leaves BLAS or fastconv's own thread setting changed.

Data are small integers stored as floats, so every sum is exact and results can be
compared bit for bit whatever the summation order.
"""
from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import threadpoolctl

import fastconv
from fastconv import _engine as conv_mod
from fastconv import reference
from fastconv.threads import blas_limit


def small_ints(rng, shape, dtype=np.float32):
    return rng.integers(-3, 4, shape).astype(dtype)


def blas_threads():
    """Thread counts of the BLAS libraries loaded (scipy's among them), per library."""
    return [info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"]


def set_blas_threads(counts):
    """Set the BLAS libraries' thread counts (one per library, as blas_threads lists them)
    from this thread, leaving no thread in control of OpenBLAS (threadpoolctl >= 3.8 lets
    only the controlling thread change it)."""
    libraries = [lib for lib in threadpoolctl.ThreadpoolController().lib_controllers
                 if lib.user_api == "blas"]
    for lib, count in zip(libraries, counts):
        lib.set_num_threads(count)
        clear = getattr(type(lib), "clear_controlling_thread", None)
        if clear is not None:
            clear()


@pytest.fixture(autouse=True)
def user_blas_setting():
    """Each test starts with the user's BLAS setting at 2 threads (which fastconv must keep
    and restore); the process gets its own setting back afterwards."""
    saved = blas_threads()
    set_blas_threads([2] * len(saved))
    yield
    set_blas_threads(saved)


# ============================================================ the GIL

def longest_main_thread_pause(call):
    """Run `call` on another thread and spin in this one meanwhile; return the longest time
    this thread made no progress during the call, as a fraction of the call's duration.
    A call holding the GIL stops this thread for (nearly) all of it; one that releases
    it lets the loop run on the other core, pausing only for scheduling."""
    span = []

    def worker():
        with fastconv.threads(1):  # one core for the kernel, one for this thread
            start = time.perf_counter()
            call()
            span.extend((start, time.perf_counter()))

    thread = threading.Thread(target=worker)
    gaps = []  # (from, to) of every pause longer than 0.5 ms
    previous = time.perf_counter()
    thread.start()
    while thread.is_alive():
        now = time.perf_counter()
        if now - previous > 5e-4:
            gaps.append((previous, now))
        previous = now
    thread.join()
    start, end = span
    longest = max((min(b, end) - max(a, start) for a, b in gaps), default=0.0)
    return max(longest, 0.0) / (end - start)


def releases_the_gil(call, tries=3):
    """Whether the spinning thread never paused for more than 60% of the call; a few tries,
    as a loaded machine can stall it now and then (a GIL-holding call stalls it every
    time: ~98%)."""
    return any(longest_main_thread_pause(call) < 0.6 for _ in range(tries))


RNG = np.random.default_rng(8)
X = small_ints(RNG, (4, 128, 56, 56))
W = small_ints(RNG, (128, 128, 3, 3))
X_DEPTHWISE = small_ints(RNG, (8, 64, 112, 112))
W_DEPTHWISE = small_ints(RNG, (64, 1, 13, 13))
X_IMAGE = small_ints(RNG, (1, 512, 512, 1))


@functools.cache
def image_columns():
    return fastconv.im2col(X_IMAGE, 7, dilation=2, layout="NHWC")


def _layer_forward_backward():
    layer = fastconv.Conv2D(128, 128, 3, padding=1, seed=0)
    layer.backward(np.ones_like(layer(X)))


# Each call takes ~30-150 ms on one thread.
KERNELS = {
    "im2col": lambda: fastconv.im2col(X_IMAGE, 7, dilation=2, layout="NHWC"),
    "col2im": lambda: fastconv.col2im(image_columns(), (512, 512), 7, dilation=2,
                                      layout="NHWC"),
    "conv2d": lambda: fastconv.conv2d(X, W, padding=1),
    "conv2d-nhwc": lambda: fastconv.conv2d(X.transpose(0, 2, 3, 1), W.transpose(2, 3, 1, 0),
                                           padding=1, layout="NHWC"),
    "conv2d_backward": lambda: fastconv.conv2d_backward(X, X, W, padding=1),
    "conv_transpose2d": lambda: fastconv.conv_transpose2d(X, W, padding=1),
    "depthwise": lambda: fastconv.conv2d(X_DEPTHWISE, W_DEPTHWISE, padding=6, groups=64),
    "depthwise_backward": lambda: fastconv.conv2d_backward(
        X_DEPTHWISE[:2], X_DEPTHWISE[:2], W_DEPTHWISE, padding=6, groups=64),
    "Conv2D": _layer_forward_backward,
}


def test_the_measure_sees_a_call_that_holds_the_gil():
    # sum over a range runs in C without ever offering the GIL: the spinning thread stops.
    assert longest_main_thread_pause(lambda: sum(range(10_000_000))) > 0.75


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernels_release_the_gil(name):
    KERNELS[name]()  # warm up (first-call allocations and plans)
    assert releases_the_gil(KERNELS[name])


# ============================================================ Conv2D shared by threads

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_layer_shared_by_threads_gives_each_its_own_result(layout):
    # Four threads call one layer with inputs of different shapes (so the workspace grows
    # and the plan cache changes under them); every result must be that input's.
    rng = np.random.default_rng(1)
    layer = fastconv.Conv2D(8, 16, 3, padding=1, layout=layout, seed=0)
    layer.weight[...] = small_ints(rng, layer.weight.shape)
    layer.bias[...] = small_ints(rng, layer.bias.shape)
    shapes = [(2, 8, 20, 20), (1, 8, 33, 17), (3, 8, 9, 40), (8, 5, 5)]
    inputs = [small_ints(rng, s if layout == "NCHW" else
                         (s[:-3] + (s[-2], s[-1], s[-3]))) for s in shapes]
    expected = [fastconv.conv2d(x, layer.weight, layer.bias, padding=1, layout=layout)
                for x in inputs]
    errors = []

    def worker(index):
        for _ in range(15):
            y = layer(inputs[index])
            if not np.array_equal(y, expected[index]):
                errors.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_conv2d_layer_gradients_from_threads_add_up():
    # Threads pair their own forward and backward under a lock of their own (the layer
    # keeps the last forward's input); the weight gradient is the exact sum of all pairs.
    rng = np.random.default_rng(2)
    layer = fastconv.Conv2D(4, 6, 3, padding=1, seed=0)
    layer.weight[...] = small_ints(rng, layer.weight.shape)
    xs = [small_ints(rng, (2, 4, 12, 12)) for _ in range(4)]
    grads = [small_ints(rng, (2, 6, 12, 12)) for _ in range(4)]
    pair_lock = threading.Lock()

    def worker(index):
        for _ in range(5):
            with pair_lock:
                layer(xs[index])
                layer.backward(grads[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected_w = sum(reference.conv2d_backward(
        g.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1), layer.weight.transpose(2, 3, 1, 0),
        padding=1)[1] for x, g in zip(xs, grads))
    np.testing.assert_array_equal(layer.weight_grad, 5 * expected_w.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(layer.bias_grad, 5 * sum(g.sum(axis=(0, 2, 3)) for g in grads))


# ============================================================ a user's thread pool

def _conv_jobs(rng):
    """(call, expected) pairs: conv2d, its gradients and im2col on different shapes."""
    jobs = []
    for index in range(12):
        n, c, size = 1 + index % 3, 4 + index % 5, 10 + index
        x = small_ints(rng, (n, c, size, size))
        w = small_ints(rng, (8, c, 3, 3))
        expected = reference.conv2d_strided(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0),
                                            padding=1).transpose(0, 3, 1, 2)
        jobs.append((lambda x=x, w=w: fastconv.conv2d(x, w, padding=1), expected))
        g = small_ints(rng, expected.shape)
        _, grad_w, _ = reference.conv2d_backward(g.transpose(0, 2, 3, 1),
                                                 x.transpose(0, 2, 3, 1),
                                                 w.transpose(2, 3, 1, 0), padding=1)
        jobs.append((lambda x=x, w=w, g=g: fastconv.conv2d_backward(
            g, x, w, padding=1, needs_input_grad=False, needs_bias_grad=False).grad_weight,
            grad_w.transpose(3, 2, 0, 1)))
        jobs.append((lambda x=x: fastconv.im2col(x, 3, padding=1),
                     reference.im2col(x, 3, padding=1)))
    return jobs


def _run_in_pool(jobs, per_worker_threads=None, rounds=4):
    def run(job):
        call, expected = job
        if per_worker_threads is None:
            return np.array_equal(call(), expected)
        with fastconv.threads(per_worker_threads):
            return np.array_equal(call(), expected)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(run, jobs * rounds))


def test_thread_pool_results_are_exact(rng):
    assert all(_run_in_pool(_conv_jobs(rng)))
    # (That overlapping calls keep BLAS single-threaded and restore the user's setting is
    # test_overlapping_calls_keep_blas_single_threaded_and_restore_it.)


def test_thread_pool_with_one_fastconv_thread_per_worker_is_exact(rng):
    # The way to share the cores between 4 workers: fastconv.threads(1) in each.
    assert all(_run_in_pool(_conv_jobs(rng), per_worker_threads=1))


@pytest.fixture
def blas_probe(monkeypatch):
    """Records, inside fastconv's BLAS region (where its OpenMP loops call sgemm), the BLAS
    thread counts threadpoolctl reports and fastconv's OpenMP team size, as the region is
    entered and as it is left."""
    samples = []

    class Probe:
        def __init__(self, n):
            self.limit = blas_limit(n)

        def __enter__(self):
            self.limit.__enter__()
            samples.append(("enter", blas_threads(), fastconv.get_num_threads()))
            return self

        def __exit__(self, *exc):
            samples.append(("exit", blas_threads(), fastconv.get_num_threads()))
            return self.limit.__exit__(*exc)

    monkeypatch.setattr(conv_mod, "blas_limit", Probe)
    return samples


def test_blas_is_single_threaded_inside_fastconv(rng, blas_probe):
    # One caller: BLAS at one thread all through fastconv's parallel region, the user's
    # setting back afterwards.
    before = blas_threads()
    assert set(before) == {2}
    x, w = small_ints(rng, (2, 8, 16, 16)), small_ints(rng, (8, 8, 3, 3))
    fastconv.conv2d(x, w, padding=1)
    fastconv.conv2d_backward(np.ones((2, 8, 16, 16), np.float32), x, w, padding=1)
    assert blas_probe and all(counts and set(counts) == {1} for _, counts, _ in blas_probe)
    assert blas_threads() == before


def test_overlapping_calls_keep_blas_single_threaded_and_restore_it(rng, blas_probe):
    # Two threads' BLAS regions overlap in a fixed order: A enters, B enters, A leaves,
    # B leaves (B's limit waits for A to be inside, A's exit waits for B to be inside,
    # B's exit waits for A to be out).
    before = blas_threads()
    assert set(before) == {2}
    a_inside, b_inside, a_out = threading.Event(), threading.Event(), threading.Event()
    real_probe = conv_mod.blas_limit

    class Ordered(real_probe):
        def __init__(self, n):
            # blas_limit(n) sets the limit as it is made, not on __enter__: B waits here.
            if threading.current_thread().name == "B":
                assert a_inside.wait(10)
            super().__init__(n)

        def __enter__(self):
            name = threading.current_thread().name
            result = super().__enter__()
            (a_inside if name == "A" else b_inside).set()
            return result

        def __exit__(self, *exc):
            name = threading.current_thread().name
            if name == "A":
                assert b_inside.wait(10)
            else:
                assert a_out.wait(10)
            result = super().__exit__(*exc)
            if name == "A":
                a_out.set()
            return result

    conv_mod.blas_limit = Ordered
    x, w = small_ints(rng, (2, 8, 16, 16)), small_ints(rng, (8, 8, 3, 3))
    expected = fastconv.reference.conv2d_strided(
        x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), padding=1).transpose(0, 3, 1, 2)
    results = {}

    def run():
        results[threading.current_thread().name] = fastconv.conv2d(x, w, padding=1)

    threads = [threading.Thread(target=run, name=name) for name in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for name in "AB":
        np.testing.assert_array_equal(results[name], expected)
    assert all(set(counts) == {1} for _, counts, _ in blas_probe), blas_probe
    assert blas_threads() == before


# ============================================================ threads() contexts

def test_threads_contexts_in_two_python_threads_do_not_interfere():
    before = fastconv.get_num_threads()
    a_inside, b_inside, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with fastconv.threads(1):
            a_inside.set()
            assert b_inside.wait(10)
            seen["A"] = fastconv.get_num_threads()
        a_out.set()

    def b():
        assert a_inside.wait(10)
        with fastconv.threads(3):
            b_inside.set()
            assert a_out.wait(10)
            seen["B"] = fastconv.get_num_threads()  # after A left its block

    threads = [threading.Thread(target=f) for f in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {"A": 1, "B": 3}
    assert fastconv.get_num_threads() == before


def test_nested_threads_contexts_restore_after_fastconv_errors():
    before = fastconv.get_num_threads()
    blas_before = blas_threads()
    x = np.ones((1, 3, 8, 8), np.float32)
    with fastconv.threads(2):
        with pytest.raises(ValueError, match="conv2d: expected input with 4 channels"):
            with fastconv.threads(1):
                assert fastconv.get_num_threads() == 1
                fastconv.conv2d(x, np.ones((2, 4, 3, 3), np.float32))
        assert fastconv.get_num_threads() == 2
        with pytest.raises(TypeError, match="conv2d: input has dtype float32 but weight"):
            with fastconv.threads(3):
                fastconv.conv2d(x, np.ones((2, 3, 3, 3)))
        assert fastconv.get_num_threads() == 2
        with pytest.raises(KeyboardInterrupt):
            with fastconv.threads(1):
                fastconv.conv2d(x, np.ones((2, 3, 3, 3), np.float32))
                raise KeyboardInterrupt
        assert fastconv.get_num_threads() == 2
    assert fastconv.get_num_threads() == before
    assert blas_threads() == blas_before


@pytest.mark.parametrize("n", [2**31, 2**70])
def test_absurd_thread_counts_are_refused(n):
    before = fastconv.get_num_threads()
    try:
        with pytest.raises(ValueError, match="set_num_threads: n"):
            fastconv.set_num_threads(n)
    finally:
        fastconv.set_num_threads(before)  # never run a kernel with such a count
