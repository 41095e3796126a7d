"""Misaligned arrays (a float32 view at an odd byte offset): inputs work through an aligned
copy, an `out=` buffer is refused; kernels never load a misaligned element (UBSan checks
this in scripts/sanitize.sh)."""
import numpy as np
import pytest

import fastconv


def misaligned(array):
    """A copy of `array` whose data starts one byte past an element boundary."""
    raw = bytearray(array.nbytes + 1)
    view = np.frombuffer(raw, dtype=array.dtype, count=array.size, offset=1).reshape(array.shape)
    view[...] = array
    assert not view.flags.aligned
    return view


CALLS = {
    "im2col": lambda x: fastconv.im2col(x, 3, padding=1),
    "col2im": lambda x: fastconv.col2im(x.reshape(2, 3 * 4, 15), (4, 6), (2, 2)),
    "conv2d": lambda x: fastconv.conv2d(x, np.ones((4, 3, 3, 3), np.float32), padding=1),
    "conv2d-direct": lambda x: fastconv.conv2d(x, np.ones((16, 3, 3, 3), np.float32),
                                               padding=1),
    "depthwise": lambda x: fastconv.conv2d(x, np.ones((3, 1, 3, 3), np.float32), groups=3),
    "space_to_batch": lambda x: fastconv.space_to_batch(x, 2),
    "rmac": lambda x: fastconv.rmac(x),
    "roi_max_pool": lambda x: fastconv.roi_max_pool(x, fastconv.rmac_regions(x)),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_misaligned_input_gives_the_aligned_result(rng, name):
    x = rng.standard_normal((2, 3, 6, 10)).astype(np.float32)
    np.testing.assert_array_equal(CALLS[name](misaligned(x)), CALLS[name](x))


def test_misaligned_weight_and_gradients(rng):
    x = rng.standard_normal((2, 3, 6, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 4, 6, 10)).astype(np.float32)
    expected = fastconv.conv2d_backward(g, x, w, padding=1)
    got = fastconv.conv2d_backward(misaligned(g), misaligned(x), misaligned(w), padding=1)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_misaligned_out_is_refused():
    x = np.ones((1, 3, 4, 4), np.float32)
    out = misaligned(np.zeros((1, 27, 16), np.float32))
    with pytest.raises(ValueError, match=r"im2col: out must be aligned to its 4-byte elements"):
        fastconv.im2col(x, 3, padding=1, out=out)


def test_inputs_reach_the_kernels_aligned(rng):
    """Without a sanitizer a misaligned load goes unnoticed on x86: check the validated
    array the kernels receive instead."""
    from fastconv import _validate

    x = misaligned(rng.standard_normal((2, 3, 6, 10)).astype(np.float32))
    checked = _validate.as_array(x, "input", "conv2d")
    assert checked.flags.aligned
    np.testing.assert_array_equal(checked, x)
    aligned = np.ones(4, np.float32)
    assert _validate.as_array(aligned, "input", "conv2d") is aligned  # no needless copy
