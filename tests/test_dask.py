"""fastconv.dask: the operators over dask arrays equal the NumPy operators on the whole array,
with the threaded scheduler and on a LocalCluster of two worker processes; every block has
the shape its declared chunks promise; weights are one graph key; unsupported chunkings
are errors that say what to rechunk."""
from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import fastconv  # noqa: E402
import fastconv.dask as fdask  # noqa: E402
from fastconv import reference  # noqa: E402

from conftest import naive_im2col_nchw, to_nhwc  # noqa: E402

# --------------------------------------------------------------------------- helpers

def compute(y):
    return y.compute(scheduler="threads")


def check_blocks(y):
    """Every block, computed alone, has the shape y.chunks declares; returns the whole."""
    blocks = dask.compute(*y.to_delayed().ravel(), scheduler="threads")
    for block, shape in zip(blocks, itertools.product(*y.chunks)):
        assert block.shape == shape
        assert block.dtype == y.dtype
    return compute(y)


def ref_conv_nchw(x, w, b, stride, padding, dilation, groups):
    """float64 reference.conv2d_strided (NHWC/HWIO) for a batched NCHW x and OIHW w."""
    y = reference.conv2d_strided(x.transpose(0, 2, 3, 1).astype(np.float64),
                                 w.transpose(2, 3, 1, 0).astype(np.float64), stride=stride,
                                 padding=padding, dilation=dilation, groups=groups)
    if b is not None:
        y = y + b
    return y.transpose(0, 3, 1, 2)


def space_to_batch_standin(x, block_size, padding=0, *, layout="NCHW"):
    """docs/spec.md §3 literally: zero-pad, then y[(off_h·bw + off_w)·N + n, c, oh, ow] =
    x_padded[n, c, oh·bh + off_h, ow·bw + off_w] (NHWC: the same with C last)."""
    bh, bw = (block_size, block_size) if np.isscalar(block_size) else block_size
    (top, bottom), (left, right) = ((padding,) * 2,) * 2 if np.isscalar(padding) else \
        tuple((p, p) if np.isscalar(p) else tuple(p) for p in padding)
    nchw = x if layout == "NCHW" else np.moveaxis(x, 3, 1)
    padded = np.pad(nchw, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n_, c_, hp, wp = padded.shape
    y = np.empty((bh * bw * n_, c_, hp // bh, wp // bw), dtype=x.dtype)
    for off_h, off_w, n in itertools.product(range(bh), range(bw), range(n_)):
        y[(off_h * bw + off_w) * n_ + n] = padded[n, :, off_h::bh, off_w::bw]
    return y if layout == "NCHW" else np.ascontiguousarray(np.moveaxis(y, 1, 3))


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setattr(fastconv, "space_to_batch", space_to_batch_standin, raising=False)
    return space_to_batch_standin


real_space_to_batch = pytest.mark.skipif(
    not hasattr(fastconv, "space_to_batch"), reason="fastconv has no space_to_batch yet")


# --------------------------------------------------------------------------- import

def test_import_fastconv_does_not_import_dask():
    code = ("import sys, fastconv; assert 'dask' not in sys.modules, 'dask imported'; "
            "import fastconv.dask as f; import dask.array; assert f.da is dask.array; "
            "assert f.dask is sys.modules['dask']")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ),
                   cwd=os.path.dirname(os.path.dirname(fastconv.__file__)))


# --------------------------------------------------------------------------- conv2d

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_batch_chunks(rng, layout, dtype):
    x = rng.standard_normal((7, 6, 9, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    if layout == "NHWC":
        x, w = to_nhwc(x), np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    kwargs = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2,
                  layout=layout)
    y = fdask.conv2d(da.from_array(x, chunks=(3, -1, -1, -1)), w, b, **kwargs)
    expected = fastconv.conv2d(x, w, b, **kwargs)
    assert y.shape == expected.shape and y.dtype == dtype
    assert y.chunks[0] == (3, 3, 1)
    np.testing.assert_allclose(check_blocks(y), expected, rtol=1e-5, atol=1e-5)
    if layout == "NCHW":  # and an oracle that shares no code with fastconv
        ref = ref_conv_nchw(x, w, b, (2, 1), ((1, 0), (2, 1)), (1, 2), 2)
        np.testing.assert_allclose(compute(y), ref, rtol=1e-4, atol=1e-4)


# Spatial chunks: (x shape NCHW, chunks, kernel, padding, dilation, stride)
SPATIAL_CASES = [
    ((2, 3, 11, 13), (1, -1, 4, 5), 3, 1, 1, 1),
    ((2, 3, 11, 13), (2, -1, 4, 5), 3, 0, 1, 1),                  # valid: output shrinks
    ((2, 3, 11, 13), (2, -1, 3, (2, 3, 8)), (3, 5), "same", (2, 1), 1),
    ((1, 3, 12, 10), (1, -1, 5, 4), 3, ((2, 0), (0, 3)), 1, 1),  # asymmetric padding
    ((1, 3, 12, 10), (1, -1, 5, 4), (1, 2), 4, 1, 1),            # padding wider than the window
    ((1, 2, 9, 9), (1, -1, 1, 2), 3, 1, 2, 1),                    # chunks smaller than the halo
    ((1, 2, 9, 9), (1, -1, 2, -1), 1, 0, 1, (1, 2)),              # 1×1; stride 2 on whole W
    ((2, 2, 10, 7), (1, -1, 3, -1), 3, 1, 1, (1, 3)),
    ((1, 2, 6, 6), (1, -1, 5, 6), 3, "valid", 2, 1),              # merged into one chunk
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shape, chunks, kernel, padding, dilation, stride", SPATIAL_CASES)
def test_conv2d_spatial_chunks(rng, layout, shape, chunks, kernel, padding, dilation, stride):
    kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
    x = rng.standard_normal(shape).astype(np.float64)
    w = rng.standard_normal((3, shape[1], kh, kw))
    b = rng.standard_normal(3)
    if layout == "NHWC":
        x, w = to_nhwc(x), np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        chunks = (chunks[0], chunks[2], chunks[3], chunks[1])
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, layout=layout)
    y = fdask.conv2d(da.from_array(x, chunks=chunks), w, b, **kwargs)
    expected = fastconv.conv2d(x, w, b, **kwargs)
    assert y.shape == expected.shape
    np.testing.assert_allclose(check_blocks(y), expected, rtol=1e-12, atol=1e-12)


def test_conv2d_spatial_chunks_use_overlap_not_one_block(rng):
    x = rng.standard_normal((1, 2, 40, 40)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    y = fdask.conv2d(da.from_array(x, chunks=(1, 2, 10, 20)), w, padding=1)
    assert y.chunks == ((1,), (2,), (10, 10, 10, 10), (20, 20))
    y = fdask.conv2d(da.from_array(x, chunks=(1, 2, 10, 20)), w)   # valid: 38×38
    assert y.chunks == ((1,), (2,), (10, 10, 10, 8), (20, 18))
    np.testing.assert_allclose(compute(y), fastconv.conv2d(x, w), rtol=1e-5, atol=1e-5)


def test_conv2d_weight_is_one_graph_key(rng):
    x = da.from_array(rng.standard_normal((40, 3, 6, 6)).astype(np.float32),
                      chunks=(4, 3, 6, 6))
    w = rng.standard_normal((64, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    y = fdask.conv2d(x, w, b, padding=1)
    graph = dict(y.__dask_graph__())
    input_keys = set(dict(x.__dask_graph__()))
    output_keys = set(dask.core.flatten(y.__dask_keys__()))
    others = set(graph) - input_keys - output_keys
    assert len(output_keys) == 10 and len(others) == 2    # the weight and the bias, once
    for key in output_keys:
        assert others <= dask.core.get_dependencies(graph, key)
    # Each task refers to those keys: no task carries the weight's bytes itself.
    sizes = [len(pickle.dumps(graph[key])) for key in output_keys]
    assert max(sizes) < w.nbytes


def test_conv2d_empty_batch(rng):
    x = da.zeros((0, 3, 5, 5), dtype=np.float32, chunks=(1, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fdask.conv2d(x, w, padding=1)
    assert y.shape == (0, 4, 5, 5)
    assert check_blocks(y).shape == (0, 4, 5, 5)


def test_conv2d_errors(rng):
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    dx = da.from_array(x, chunks=(2, -1, -1, -1))
    with pytest.raises(TypeError, match=r"fastconv.dask.conv2d: input must be a "
                                        r"dask.array.Array, got ndarray; use fastconv.conv2d"):
        fdask.conv2d(x, w)
    with pytest.raises(ValueError, match=r"expected a batched 4-D input, got shape \(3, 8, 8\)"):
        fdask.conv2d(dx[0], w)
    with pytest.raises(ValueError, match=r"input must be one chunk along C \(axis 1\) because "
                                         r"every output channel.*got chunks \(1, 2\); rechunk "
                                         r"with input.rechunk\(\{1: -1\}\)"):
        fdask.conv2d(dx.rechunk((2, (1, 2), 8, 8)), w)
    with pytest.raises(ValueError, match=r"input must be one chunk along C \(axis 3\)"):
        fdask.conv2d(da.from_array(to_nhwc(x), chunks=(2, 8, 8, 1)),
                     np.ascontiguousarray(w.transpose(2, 3, 1, 0)), layout="nhwc")
    with pytest.raises(ValueError, match=r"input is split along W \(chunks \(4, 4\)\), which "
                                         r"needs stride 1 along W, got stride=\(1, 2\); "
                                         r"rechunk with input.rechunk\(\{3: -1\}\)"):
        fdask.conv2d(dx.rechunk((2, 3, 8, 4)), w, stride=(1, 2))
    with pytest.raises(ValueError, match=r"fastconv.dask.conv2d: expected input with 3 "
                                         r"channels \(weight \(5, 3, 3, 3\), groups=1\), got 4 "
                                         r"channels in input of shape \(4, 4, 8, 8\)"):
        fdask.conv2d(da.zeros((4, 4, 8, 8), dtype=np.float32), w)
    with pytest.raises(TypeError, match=r"input has dtype float32 but weight has dtype float64"):
        fdask.conv2d(dx, w.astype(np.float64))
    with pytest.raises(TypeError, match=r"input must be float32 or float64, got dtype float16"):
        fdask.conv2d(dx.astype(np.float16), w)
    with pytest.raises(ValueError, match=r"expected bias of shape \(5,\), got \(4,\)"):
        fdask.conv2d(dx, w, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"kernel_size=\(3, 3\) with dilation=\(1, 1\) spans 3"):
        fdask.conv2d(da.zeros((1, 3, 2, 2), dtype=np.float32), w)
    with pytest.raises(ValueError, match=r"layout must be one of 'NCHW', 'NHWC'"):
        fdask.conv2d(dx, w, layout="CHWN")
    unknown = dx[dx[:, 0, 0, 0] > 0]
    with pytest.raises(ValueError, match=r"input has unknown chunk sizes.*compute_chunk_sizes"):
        fdask.conv2d(unknown, w)


# --------------------------------------------------------------------------- layer_forward

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layer_forward(rng, layout):
    layer = fastconv.Conv2D(4, 6, 3, stride=1, padding="same", dilation=2, groups=2,
                            layout=layout, seed=3)
    shape = (5, 4, 10, 9) if layout == "NCHW" else (5, 10, 9, 4)
    x = rng.standard_normal(shape).astype(np.float32)
    chunks = (2, -1, 5, -1) if layout == "NCHW" else (2, 5, -1, -1)  # batch and H split
    y = fdask.layer_forward(layer, da.from_array(x, chunks=chunks))
    expected = layer(x)
    layer.weight *= 2                          # the graph holds the weight as it was
    np.testing.assert_allclose(check_blocks(y), expected, rtol=1e-5, atol=1e-5)
    pickle.loads(pickle.dumps(dict(y.__dask_graph__())))  # what workers receive pickles


def test_layer_forward_errors(rng):
    layer = fastconv.Conv2D(3, 4, 3, seed=0)
    with pytest.raises(TypeError, match=r"fastconv.dask.layer_forward: layer must be a "
                                        r"fastconv.Conv2D, got str"):
        fdask.layer_forward("conv", da.zeros((1, 3, 5, 5), dtype=np.float32))
    with pytest.raises(TypeError, match=r"fastconv.dask.layer_forward: input has dtype float64 "
                                        r"but weight has dtype float32"):
        fdask.layer_forward(layer, da.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"layer_forward: input is split along H.*stride 1"):
        fdask.layer_forward(fastconv.Conv2D(3, 4, 3, stride=2),
                            da.zeros((1, 3, 8, 8), dtype=np.float32, chunks=(1, 3, 4, 8)))


# --------------------------------------------------------------------------- im2col

@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.bool_])
def test_im2col_nchw_batch_and_channel_chunks(rng, dtype):
    x = (rng.standard_normal((5, 4, 7, 6)) * 100).astype(dtype)
    kwargs = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2))
    y = fdask.im2col(da.from_array(x, chunks=(2, (1, 3), -1, -1)), (3, 2), **kwargs)
    assert y.chunks[:2] == ((2, 2, 1), (6, 18))
    result = check_blocks(y)
    np.testing.assert_array_equal(result, fastconv.im2col(x, (3, 2), **kwargs))
    np.testing.assert_array_equal(result, naive_im2col_nchw(x, (3, 2), **kwargs))


def test_im2col_nhwc(rng):
    x = rng.standard_normal((5, 7, 6, 3))
    y = fdask.im2col(da.from_array(x, chunks=(3, -1, -1, -1)), 3, padding=1, layout="NHWC")
    result = check_blocks(y)
    np.testing.assert_array_equal(result, fastconv.im2col(x, 3, padding=1, layout="NHWC"))
    np.testing.assert_array_equal(result, reference.im2col(x, 3, padding=1, layout="NHWC"))


def test_im2col_errors():
    x = da.zeros((4, 3, 8, 8), dtype=np.float32, chunks=(2, 3, 4, 8))
    with pytest.raises(ValueError, match=r"fastconv.dask.im2col: x must be one chunk along H "
                                         r"\(axis 2\) because each column holds a window"):
        fdask.im2col(x, 3)
    with pytest.raises(ValueError, match=r"x must be one chunk along C \(axis 3\) because an "
                                         r"NHWC column interleaves the channels"):
        fdask.im2col(da.zeros((4, 8, 8, 3), chunks=(2, 8, 8, 1)), 3, layout="NHWC")
    with pytest.raises(TypeError, match=r"im2col: x must be float32, float64, integer or bool, "
                                        r"got dtype complex128"):
        fdask.im2col(da.zeros((1, 1, 3, 3), dtype=complex), 3)
    with pytest.raises(ValueError, match=r"fastconv.dask.im2col: stride must be >= 1, got 0"):
        fdask.im2col(da.zeros((1, 1, 3, 3)), 3, stride=0)
    with pytest.raises(TypeError, match=r"x must be a dask.array.Array, got list"):
        fdask.im2col([[[[1.0]]]], 1)


# --------------------------------------------------------------------------- space_to_batch

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_space_to_batch_regroups_chunks(rng, standin, layout):
    x = rng.integers(0, 1000, (7, 3, 5, 4)).astype(np.int32)
    if layout == "NHWC":
        x = to_nhwc(x)
    chunks = (3, 2, -1, -1) if layout == "NCHW" else (3, -1, -1, 2)  # images and channels
    kwargs = dict(padding=((1, 0), (1, 1)), layout=layout)
    y = fdask.space_to_batch(da.from_array(x, chunks=((3, 0, 3, 1),) + chunks[1:]), (2, 3),
                             **kwargs)
    expected = standin(x, (2, 3), **kwargs)
    assert y.shape == expected.shape
    assert y.chunks[0] == (3, 0, 3, 1) * 6          # bh·bw runs of the batch chunks
    np.testing.assert_array_equal(check_blocks(y), expected)
    # The order is the specification's: offsets outer, images inner.
    np.testing.assert_array_equal(compute(y)[1 * 7 + 4], expected[7 + 4])


def test_space_to_batch_standin_follows_spec():
    """The stand-in itself, on pinned values: 1 image 1 channel 2×2, block 2."""
    x = np.arange(4).reshape(1, 1, 2, 2)
    y = space_to_batch_standin(x, 2)
    assert y.shape == (4, 1, 1, 1) and list(y.ravel()) == [0, 1, 2, 3]
    y = space_to_batch_standin(np.arange(8).reshape(2, 1, 2, 2), 2)
    assert list(y.ravel()) == [0, 4, 1, 5, 2, 6, 3, 7]   # ob = off·N + n


def test_space_to_batch_errors(standin, monkeypatch):
    x = da.zeros((4, 3, 8, 8), dtype=np.float32, chunks=(2, 3, 4, 8))
    with pytest.raises(ValueError, match=r"space_to_batch: x must be one chunk along H"):
        fdask.space_to_batch(x, 2)
    with pytest.raises(ValueError, match=r"fastconv.dask.space_to_batch: padded size 9×10 \(x "
                                         r"8×8 with padding=\(\(1, 0\), \(1, 1\)\)\) is not "
                                         r"divisible by block_size=\(2, 2\)"):
        fdask.space_to_batch(x.rechunk(-1), 2, ((1, 0), (1, 1)))
    with pytest.raises(ValueError, match=r"block_size must be >= 1, got 0"):
        fdask.space_to_batch(x.rechunk(-1), 0)
    with pytest.raises(TypeError, match=r"x must be float32, float64, integer or bool, got "
                                        r"dtype complex64"):
        fdask.space_to_batch(x.rechunk(-1).astype(np.complex64), 2)
    monkeypatch.delattr(fastconv, "space_to_batch")
    with pytest.raises(NotImplementedError, match=r"this fastconv has no space_to_batch"):
        fdask.space_to_batch(x.rechunk(-1), 2)


@real_space_to_batch
def test_space_to_batch_matches_fastconv(rng):
    x = rng.standard_normal((5, 2, 6, 4)).astype(np.float32)
    y = fdask.space_to_batch(da.from_array(x, chunks=(2, 1, -1, -1)), (3, 2), padding=(0, 1))
    np.testing.assert_array_equal(check_blocks(y),
                                  fastconv.space_to_batch(x, (3, 2), padding=(0, 1)))
    np.testing.assert_array_equal(compute(y),
                                  space_to_batch_standin(x, (3, 2), padding=(0, 1)))


# --------------------------------------------------------------------------- rmac

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmac(rng, layout, dtype):
    x = rng.standard_normal((9, 16, 12, 17)).astype(dtype)
    if layout == "NHWC":
        x = to_nhwc(x)
    dx = da.from_array(x, chunks=((4, 4, 1),) + x.shape[1:])
    y = fdask.rmac(dx, levels=2, layout=layout)
    assert y.chunks == ((4, 4, 1), (16,))
    result = check_blocks(y)
    np.testing.assert_array_equal(result, fastconv.rmac(x, levels=2, layout=layout))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result, reference.rmac(x, levels=2, layout=layout), rtol=tol,
                               atol=tol)


def test_rmac_whiten_and_options(rng):
    x = rng.standard_normal((6, 8, 9, 7)).astype(np.float32)
    mean = rng.standard_normal(8).astype(np.float32)
    projection = rng.standard_normal((5, 8)).astype(np.float32)
    dx = da.from_array(x, chunks=(4, -1, -1, -1))
    y = fdask.rmac(dx, 3, 0.3, 1e-3, whiten=(mean, projection), normalize=False)
    assert y.shape == (6, 5) and y.chunks == ((4, 2), (5,))
    expected = fastconv.rmac(x, 3, 0.3, 1e-3, whiten=(mean, projection), normalize=False)
    np.testing.assert_allclose(check_blocks(y), expected, rtol=1e-5, atol=1e-5)
    graph = dict(y.__dask_graph__())
    assert len(graph) == 2 * 2 + 2                # input, output, mean and P once each


def test_rmac_empty_batch():
    y = fdask.rmac(da.zeros((0, 4, 3, 3), chunks=(1, 4, 3, 3)))
    assert y.shape == (0, 4) and check_blocks(y).shape == (0, 4)


def test_rmac_errors():
    x = da.zeros((4, 8, 6, 6), dtype=np.float32, chunks=(2, 8, 6, 6))
    with pytest.raises(ValueError, match=r"fastconv.dask.rmac: x must be one chunk along C "
                                         r"\(axis 1\) because each descriptor reads the whole "
                                         r"feature map"):
        fdask.rmac(x.rechunk((2, 4, 6, 6)))
    with pytest.raises(ValueError, match=r"x must be one chunk along W \(axis 2\)"):
        fdask.rmac(da.zeros((4, 6, 6, 8), chunks=(2, 6, 3, 8)), layout="NHWC")
    with pytest.raises(ValueError, match=r"x has an empty 0×6 feature map \(shape "
                                         r"\(4, 8, 0, 6\)\)"):
        fdask.rmac(da.zeros((4, 8, 0, 6)))
    with pytest.raises(ValueError, match=r"rmac: levels must be >= 1, got 0"):
        fdask.rmac(x, levels=0)
    with pytest.raises(ValueError, match=r"rmac: overlap must be a number with 0 < overlap < 1"):
        fdask.rmac(x, overlap=1.5)
    with pytest.raises(ValueError, match=r"whiten P must have shape \(D, 8\)"):
        fdask.rmac(x, whiten=(np.zeros(8, np.float32), np.zeros((3, 7), np.float32)))
    with pytest.raises(TypeError, match=r"x must be float32 or float64, got dtype int64"):
        fdask.rmac(x.astype(np.int64))


# --------------------------------------------------------------------------- rmac_regions

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_rmac_regions(layout):
    shape = (10, 5, 12, 70) if layout == "NCHW" else (10, 12, 70, 5)

    def not_computed(block):
        raise AssertionError("rmac_regions computed its input")

    x = da.zeros(shape, chunks=((3, 0, 6, 1),) + shape[1:]).map_blocks(not_computed,
                                                                    dtype=float)
    y = fdask.rmac_regions(x, scales=2, layout=layout)
    expected = fastconv.rmac_regions(shape, scales=2, layout=layout)
    regions = len(expected) // 10
    assert y.dtype == np.float32 and y.chunks == ((3 * regions, 0, 6 * regions, regions), (5,))
    np.testing.assert_array_equal(check_blocks(y), expected)
    assert compute(y)[-1, 0] == 9


def test_rmac_regions_empty_and_errors():
    assert compute(fdask.rmac_regions(da.zeros((0, 3, 5, 5)))).shape == (0, 5)
    assert compute(fdask.rmac_regions(da.zeros((2, 3, 0, 5)))).shape == (0, 5)
    with pytest.raises(ValueError, match=r"rmac_regions: scales must be >= 1, got 0"):
        fdask.rmac_regions(da.zeros((2, 3, 5, 5)), scales=0)
    with pytest.raises(TypeError, match=r"fastconv.dask.rmac_regions: x must be a "
                                        r"dask.array.Array, got tuple"):
        fdask.rmac_regions((2, 3, 5, 5))


# --------------------------------------------------------------------------- LocalCluster

@pytest.fixture(scope="module")
def client():
    """Two worker processes with one thread each, on the loopback interface only."""
    distributed = pytest.importorskip("distributed")
    reason = os.environ.get("FASTCONV_SKIP_CLUSTER")
    if reason:  # scripts/sanitize.sh: its worker processes die under the ASan runtime
        pytest.skip(f"LocalCluster tests skipped: {reason}")
    # The nanny leaves OMP_NUM_THREADS=1 and friends in this process's environment (its
    # pre-spawn settings for the workers): put it back for the tests that follow.
    environment = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                yield client
    finally:
        os.environ.clear()
        os.environ.update(environment)


def test_cluster_is_two_processes(client):
    pids = client.run(os.getpid)
    assert len(pids) == 2 and os.getpid() not in pids.values()
    assert all(address.startswith("tcp://127.0.0.1:") for address in pids)


def test_cluster_conv2d_and_layer(client, rng):
    x = rng.standard_normal((6, 4, 12, 10)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    y = fdask.conv2d(da.from_array(x, chunks=(2, 4, -1, -1)), w, b, stride=2, padding=1)
    np.testing.assert_allclose(client.compute(y).result(),
                               fastconv.conv2d(x, w, b, stride=2, padding=1),
                               rtol=1e-5, atol=1e-5)
    y = fdask.conv2d(da.from_array(x, chunks=(3, 4, 5, 4)), w, b, padding="same", dilation=2)
    np.testing.assert_allclose(client.compute(y).result(),
                               fastconv.conv2d(x, w, b, padding="same", dilation=2),
                               rtol=1e-5, atol=1e-5)
    layer = fastconv.Conv2D(4, 3, 3, padding=1, seed=1)
    y = fdask.layer_forward(layer, da.from_array(x, chunks=(2, 4, 6, -1)))
    np.testing.assert_allclose(client.compute(y).result(), layer(x), rtol=1e-5, atol=1e-5)


def test_cluster_im2col_rmac_regions(client, rng):
    x = rng.standard_normal((7, 8, 9, 11)).astype(np.float32)
    dx = da.from_array(x, chunks=(3, -1, -1, -1))
    mean = rng.standard_normal(8).astype(np.float32)
    projection = rng.standard_normal((4, 8)).astype(np.float32)
    cols, descriptors, whitened, rois = client.compute([
        fdask.im2col(dx, 3, padding=1), fdask.rmac(dx),
        fdask.rmac(dx, whiten=(mean, projection)), fdask.rmac_regions(dx)], sync=True)
    np.testing.assert_array_equal(cols, fastconv.im2col(x, 3, padding=1))
    np.testing.assert_array_equal(descriptors, fastconv.rmac(x))
    np.testing.assert_allclose(whitened, fastconv.rmac(x, whiten=(mean, projection)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rois, fastconv.rmac_regions(x))


@real_space_to_batch
def test_cluster_space_to_batch(client, rng):
    x = rng.standard_normal((5, 2, 6, 4)).astype(np.float32)
    y = fdask.space_to_batch(da.from_array(x, chunks=(2, -1, -1, -1)), 2, padding=(1, 0))
    np.testing.assert_array_equal(client.compute(y).result(),
                                  fastconv.space_to_batch(x, 2, padding=(1, 0)))
