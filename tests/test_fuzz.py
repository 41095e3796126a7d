"""Differential fuzzing of every public function (docs/spec.md §0–§4), valid calls and invalid ones.

Each drawn call (random geometry, dtypes, memory orders, `out=` buffers, and on purpose
zero/negative sizes, kernels larger than the padded input, mismatched channels and groups,
wrong ndim, huge values, weird dtypes, zero-size and broadcast arrays) goes through a model
of the specification (docs/spec.md) written here, independently of fastconv's validation
code. The model says what must happen:

- a valid call returns exactly what ``fastconv.reference`` computes. The data are small
  integers (floats included), so every sum is exact and any summation order gives the
  same bits: the comparison is bit-exact. R-MAC descriptors divide by norms: they are
  compared with a float64 oracle to a rounding-error bound (``descriptor_check``).
  Convolutions that may run Winograd (``algorithm=`` "winograd", or "auto" where
  Winograd can serve; docs/spec.md §5) are compared within its bound instead
  (``winograd_check``): F(4×4, 3×3)'s transforms hold fractions such as 1/6, so small
  integers no longer give exact sums;
- an invalid call raises one of the errors the model found: the documented type, with a
  message that starts with the function's name and names the argument at fault (when a
  call has several faults, any of them may be reported);
- a call whose buffers cannot exist (2**47 bytes and more) raises MemoryError or
  ValueError. Calls whose buffers would be between 64 MiB and that are never drawn: they
  would be allocated for real.

Whatever happens, the inputs are left unchanged.

Profiles: the normal suite runs a quick pass (``EXAMPLES_QUICK`` calls per function). With
``FASTCONV_FUZZ=1`` (``scripts/fuzz.sh``, a CI step) each function gets
``FASTCONV_FUZZ_EXAMPLES`` calls (default 2000), derandomized (a fixed seed per test), no
example database.

The 1-D operators of docs/spec.md §6 (conv1d, conv1d_backward, conv_transpose1d, Conv1D,
and im2col / col2im / col2im_backward with a 1-tuple kernel_size) have their own
strategies and model (section "1-D") against fastconv.reference's 1-D loops; the 3-D ones
(conv3d, conv3d_backward, conv_transpose3d, Conv3D, and im2col / col2im / col2im_backward
with a 3-tuple kernel_size, with padding_mode) likewise (section "3-D").

Adding a function: write a strategy that draws a ``Case`` (the call, its model's errors
and oracle) and add a row to ``TARGETS``. The geometry, dtype, array and ``out=`` helpers
below are meant to be reused; e.g. space_to_batch draws ``image_array`` + ``pair_value`` +
``fitted_padding`` and checks ``reference.space_to_batch``.

Known deviations: where fastconv contradicts the specification, the model does not bend. It
``reject()``s that one kind of call (marked "KNOWN DEVIATION" with the test's name) and a
strict xfail at the end of this file pins a reproducer; once fixed, the xfail passes, the
suite fails, and the reject() and the xfail go.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, reject, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

# ================================================================== settings
FUZZ = os.environ.get("FASTCONV_FUZZ", "").strip().lower() in ("1", "true", "yes", "on")
EXAMPLES_QUICK = 30
EXAMPLES_FUZZ = int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "2000"))

settings.register_profile(
    "fastconv-quick", max_examples=EXAMPLES_QUICK, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    # A fixed seed per test, no database: the same calls on every run. The deadline is a
    # generous per-call limit (a slow call is a finding); scripts/fuzz.sh bounds the whole.
    "fastconv-fuzz", max_examples=EXAMPLES_FUZZ, derandomize=True, database=None,
    deadline=10_000, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = settings.get_profile("fastconv-fuzz" if FUZZ else "fastconv-quick")

# ================================================================== limits
INT_MAX = 2**31 - 1          # BLAS's int
LIMIT = 2**62                # largest window number or padded size (geometry.py)
SMALL_BYTES = 1 << 26        # a valid drawn call allocates less than this
HUGE_BYTES = 1 << 47         # a call needing this much must fail cleanly
HUGE_VALUES = (2**48, 2**61, LIMIT, LIMIT + 1, 2**63, 2**64 + 3)
SMALL_PAD = 64               # reference pads with np.pad: beyond this use the gather oracle
SMALL_STEP = 2**20           # ... and builds as_strided views: beyond this stride/dilation too
HUGE_ERRORS = [(MemoryError, ""),
               (ValueError, r"array is too big|Maximum allowed|larger than|exceeds")]


# ================================================================== the case and its check
@dataclass
class Case:
    """One drawn call. `errors`: acceptable (exception type, message regex) pairs.
    `expected`: the oracle, or None when one of `errors` is required."""

    text: str
    call: Callable
    errors: list = field(default_factory=list)
    expected: Callable | None = None
    compare: Callable | None = None
    inputs: tuple = ()


def run_case(case):
    note(case.text)
    snapshots = [(a, np.array(a, copy=True)) for a in case.inputs
                 if isinstance(a, np.ndarray) and a.nbytes < SMALL_BYTES]
    try:
        result = case.call()
    except Exception as error:  # noqa: BLE001 (the model decides what was acceptable)
        message = str(error)
        matched = [pattern for kind, pattern in case.errors
                   if isinstance(error, kind) and re.search(pattern, message)]
        if not matched:
            raise AssertionError(f"{type(error).__name__}: {message}\nis not among the "
                                 f"expected {case.errors}") from error
        # Numbers in a pattern (sizes, rows) would split the statistics: one label each.
        label = re.sub(r"(?<![A-Za-z_\d])\d+", "#", matched[0])
        event(f"raised {type(error).__name__} {label[:40]}")
    else:
        event("returned")
        assert case.expected is not None, f"returned, but the model expected {case.errors}"
        (case.compare or assert_same)(result, case.expected())
    for array, snapshot in snapshots:
        np.testing.assert_array_equal(array, snapshot, err_msg="an input was modified")


def assert_same(result, expected):
    """Bit-exact equality of value, shape and dtype (byte order aside)."""
    assert isinstance(result, np.ndarray), type(result)
    assert result.shape == expected.shape, (result.shape, expected.shape)
    assert result.dtype == expected.dtype.newbyteorder("="), (result.dtype, expected.dtype)
    np.testing.assert_array_equal(result, expected)


def assert_into(out):
    """Comparison for calls given `out=`: the result is `out` itself, holding the value."""
    def compare(result, expected):
        assert result is out
        assert_same(result, expected)
    return compare


class Problems(list):
    """What the model found wrong with a call, as (exception type, regex) pairs."""

    def add(self, kind, pattern):
        self.append((kind, pattern))


# ================================================================== argument strategies
def weighted(*options):
    """One of several strategies, picked with integer weights (shrinks to the first)."""
    pool = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


BAD_SCALARS = st.sampled_from([0, -1, -3, True, False, 1.0, 2.5, "2", None, np.float64(2.0),
                               np.bool_(True), 1j])


def int_value(lo, hi, huge=True):
    """A small int (sometimes a NumPy integer), or now and then a huge one."""
    small = st.integers(lo, hi)
    options = [(30, small), (3, small.map(np.int64)), (1, small.map(np.uint8))]
    if huge:
        options.append((1, st.sampled_from(HUGE_VALUES)))
    return weighted(*options)


def pair_value(lo, hi, minimum=1, huge=True, clean=False):
    """kernel_size / stride / dilation: int or (h, w) (tuple, list or array), sometimes bad
    (never when `clean`)."""
    if clean:
        small = st.integers(lo, hi)
        return weighted((2, small), (1, st.tuples(small, small)))
    scalar = int_value(lo, hi, huge)
    bad = weighted(
        (3, BAD_SCALARS.filter(lambda v: not (is_int(v) and v >= minimum))),
        (1, st.tuples(scalar, scalar, scalar)), (1, st.tuples(scalar)),
        (1, st.tuples(scalar, BAD_SCALARS)), (1, st.just(())),
        (1, st.just(np.ones((2, 2), np.int64))))
    return weighted((20, scalar), (10, st.tuples(scalar, scalar)),
                    (1, st.lists(scalar, min_size=2, max_size=2)),
                    (1, st.tuples(scalar, scalar).map(np.array)), (1, bad))


def padding_value(hi=3, strings=False, clean=False):
    """int, (pad_h, pad_w), ((top, bottom), (left, right)); sometimes bad; for convolutions
    also 'valid' / 'same' (any case) and unknown strings."""
    if clean:
        small = st.integers(0, hi)
        options = [(4, small), (2, st.tuples(small, small)),
                   (2, st.tuples(st.tuples(small, small), st.tuples(small, small)))]
        if strings:
            options.append((2, st.sampled_from(["same", "valid"])))
        return weighted(*options)
    scalar = int_value(0, hi)
    options = [(16, scalar), (8, st.tuples(scalar, scalar)),
               (8, st.tuples(st.tuples(scalar, scalar), st.tuples(scalar, scalar))),
               (1, st.tuples(scalar, st.tuples(scalar, scalar))),
               (1, st.tuples(scalar, scalar, scalar)),
               (1, st.tuples(st.tuples(scalar,), st.tuples(scalar, scalar))),
               (1, BAD_SCALARS.filter(lambda v: not (is_int(v) and v >= 0)))]
    if strings:
        options.append((8, st.sampled_from(["same", "valid", "SAME", "Valid", "full", ""])))
    return weighted(*options)


def layout_args(clean=False):
    return LAYOUTS_CLEAN if clean else LAYOUT_ARGS


LAYOUTS_CLEAN = st.sampled_from(["NCHW", "NHWC"])
LAYOUT_ARGS = weighted((30, st.sampled_from(["NCHW", "NHWC"])),
                       (3, st.sampled_from(["nchw", "nhwc", "Nhwc"])),
                       (1, st.sampled_from(["NWHC", "CHW", "", None, 0, b"NCHW"])))

FLOATS = [np.dtype(np.float32), np.dtype(np.float64)]
INTEGERS = [np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64,
                                  np.uint8, np.uint16, np.uint32, np.uint64)]
SWAPPED = [np.dtype(">f4"), np.dtype(">f8"), np.dtype(">i4"), np.dtype(">u2")]
WEIRD = [np.dtype(np.float16), np.dtype(np.complex64), np.dtype(np.complex128),
         np.dtype(object), np.dtype("datetime64[s]"), np.dtype("<U1"), np.dtype(np.longdouble)]


def dtype_values(movable=False, clean=False):
    """Mostly float32/float64; integers and bool when the function moves data; non-native
    byte orders; dtypes no function takes."""
    if clean:
        return weighted((3, st.sampled_from(FLOATS)),
                        (1 if movable else 0, st.sampled_from(INTEGERS + [np.dtype(bool)])))
    options = [(40, st.sampled_from(FLOATS)), (2, st.sampled_from(SWAPPED)),
               (1, st.sampled_from(WEIRD))]
    options.append((16 if movable else 1, st.sampled_from(INTEGERS + [np.dtype(bool)])))
    return weighted(*options)


MEMORY_ORDERS = ["C", "C", "C", "F", "strided", "negative", "readonly", "broadcast", "list"]


def fill(rng, shape, dtype):
    """Random values of any dtype; floats are small integers so that sums are exact."""
    native = dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype
    kind = dtype.kind
    if kind == "f":
        values = rng.integers(-4, 5, shape).astype(native)
    elif kind in "iu":
        info = np.iinfo(native)
        values = rng.integers(info.min, info.max, shape, dtype=native, endpoint=True)
    elif kind == "b":
        values = rng.integers(0, 2, shape).astype(bool)
    elif kind == "c":
        values = (rng.integers(-4, 5, shape) + 1j).astype(native)
    elif kind == "O":
        values = rng.integers(-4, 5, shape).astype(object)
    elif kind == "M":
        values = rng.integers(0, 100, shape).astype(native)
    else:
        values = np.full(shape, "a", dtype=native)
    return values.astype(dtype)


@st.composite
def arrays(draw, shape, dtype, orders=MEMORY_ORDERS):
    """An array of `shape` and `dtype` in a random memory order (the values follow the order:
    a broadcast array repeats along axis 0)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    order = draw(st.sampled_from(orders))
    base = fill(rng, shape, dtype)
    if math.prod(shape) == 0 and math.prod(d for d in shape if d) > SMALL_BYTES:
        return base  # empty, but a widened or broadcast form of it would not be
    if order == "F":
        return np.asfortranarray(base)
    if order == "strided" and base.ndim:
        wide = np.zeros(shape[:-1] + (2 * shape[-1] + 1,), dtype)
        wide[..., 1::2] = base
        return wide[..., 1::2]
    if order == "negative" and base.ndim >= 2:
        return np.ascontiguousarray(base[::-1, ..., ::-1])[::-1, ..., ::-1]
    if order == "readonly":
        base.setflags(write=False)
        return base
    if order == "broadcast" and base.ndim:
        return np.broadcast_to(base[:1], shape)
    if order == "list" and dtype == np.float64 and 0 not in shape[:-1]:
        return base.tolist()  # (a zero before the last axis: [] or [[]], its shape lost)
    return base


def huge_array(rng, shape, dtype):
    """A read-only array of `shape` that holds one element (zero strides)."""
    return np.broadcast_to(fill(rng, (), dtype), shape)


@st.composite
def out_buffer(draw, shape, dtype, inputs, clean=False):
    """None mostly; else a correct buffer or one that breaks a rule of docs/spec.md §0 `out=`."""
    kind = draw(st.sampled_from(["none"] * 3 + ["ok"] if clean else ["none"] * 10 + ["ok"] * 4 + [
        "shape", "dtype", "fortran", "readonly", "list", "overlap", "strided"]))
    if kind == "list" and math.prod(max(size, 1) for size in shape) * 8 > SMALL_BYTES:
        kind = "none"  # a (2**48, 0) buffer is empty, but its list form is not
    if kind == "none" or math.prod(shape) * 8 > SMALL_BYTES:
        return None
    if sizes_allowance(tuple(shape[:-1]) + (2 * shape[-1],) if shape else shape,
                       np.dtype(np.float64)):
        return None  # empty, but NumPy cannot describe it (see sizes_allowance)
    if kind == "ok":
        return np.full(shape, 77, dtype)  # stale values must be overwritten
    if kind == "shape":
        return np.empty(tuple(shape) + (1,), dtype)
    if kind == "dtype":
        return np.empty(shape, np.float64 if dtype == np.float32 else np.float32)
    if kind == "fortran":
        return np.asfortranarray(np.empty(shape, dtype))
    if kind == "readonly":
        out = np.empty(shape, dtype)
        out.setflags(write=False)
        return out
    if kind == "list":
        return np.zeros(shape, dtype).tolist()
    if kind == "strided":
        return np.empty(tuple(shape[:-1]) + (2 * shape[-1],), dtype)[..., ::2] if shape \
            else np.empty(shape, dtype)
    # overlap: a view of an input's memory when there is one to share
    for array in inputs:
        if isinstance(array, np.ndarray) and array.size and array.flags.writeable:
            flat = array.reshape(-1) if array.flags.c_contiguous else None
            if flat is not None and flat.size >= math.prod(shape) and flat.dtype == dtype:
                return flat[:math.prod(shape)].reshape(shape)
    return np.empty(shape, dtype)


# ================================================================== the model (docs/spec.md §0)
def is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_sequence(value):
    return isinstance(value, (tuple, list, np.ndarray))


def not_one_d(kernel_size):
    """A kernel_size of one value in a sequence makes im2col/col2im work on 1-D images, of
    three values on volumes (docs/spec.md §6), modelled by the 1-D and 3-D strategies, not
    by the 2-D ones."""
    return not (is_sequence(kernel_size) and np.ndim(kernel_size) == 1
                and len(kernel_size) in (1, 3))


def parse_pair(value, minimum=1):
    """int or (h, w) of ints >= minimum → (h, w), else None."""
    if is_sequence(value):
        if len(value) == 2 and all(is_int(v) and v >= minimum for v in value):
            return tuple(int(v) for v in value)
        return None
    return (int(value), int(value)) if is_int(value) and value >= minimum else None


def parse_padding(value):
    """int, (pad_h, pad_w) or ((top, bottom), (left, right)) of ints >= 0, else None."""
    if is_int(value):
        return ((int(value),) * 2,) * 2 if value >= 0 else None
    if not is_sequence(value) or len(value) != 2:
        return None
    if all(is_int(v) and v >= 0 for v in value):
        return tuple((int(v), int(v)) for v in value)
    if all(is_sequence(v) and len(v) == 2 and all(is_int(a) and a >= 0 for a in v)
           for v in value):
        return tuple((int(v[0]), int(v[1])) for v in value)
    return None


def parse_layout(value):
    if isinstance(value, str) and value.upper() in ("NCHW", "NHWC"):
        return value.upper()
    return None


def native(dtype):
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def dtype_of(array):
    return native(np.asarray(array).dtype) if not isinstance(array, np.ndarray) \
        else native(array.dtype)


def logical_bytes(array):
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    return math.prod(array.shape) * array.dtype.itemsize


def check_layout(problems, fn, layout_arg):
    layout = parse_layout(layout_arg)
    if layout is None:
        problems.add(ValueError, rf"^{fn}: layout")
    return layout


def check_float(problems, fn, name, array):
    """float32 / float64 for arithmetic (docs/spec.md §0): a TypeError naming the dtype."""
    dtype = dtype_of(array)
    if dtype not in FLOATS:
        problems.add(TypeError, rf"^{fn}: {name}\b.*dtype {re.escape(str(dtype))}")
    return dtype


def check_movable(problems, fn, name, array, allow_bool=True):
    dtype = dtype_of(array)
    ok = dtype in FLOATS or dtype.kind in "iu" or (allow_bool and dtype.kind == "b")
    if not ok:
        problems.add(TypeError, rf"^{fn}: {name}\b.*dtype {re.escape(str(dtype))}")
    return dtype


FROM_WEIGHT = object()  # convolutions take kernel_size from the weight's shape


def check_geometry_args(problems, fn, kernel_arg, stride_arg, padding_arg, dilation_arg,
                        conv_strings=False):
    """Parse kernel_size / stride / padding / dilation; None for what does not parse."""
    parsed = {"kernel_size": None}
    for name, value in (("kernel_size", kernel_arg), ("stride", stride_arg),
                        ("dilation", dilation_arg)):
        if value is FROM_WEIGHT:
            continue
        parsed[name] = parse_pair(value)
        if parsed[name] is None:
            problems.add(ValueError, rf"^{fn}: {name}")
    padding = None
    if conv_strings and isinstance(padding_arg, str):
        mode = padding_arg.lower()
        if mode not in ("same", "valid"):
            problems.add(ValueError, rf"^{fn}: padding")
        padding = mode if mode in ("same", "valid") else None
    else:
        padding = parse_padding(padding_arg)
        if padding is None:
            problems.add(ValueError, rf"^{fn}: padding")
    return parsed["kernel_size"], parsed["stride"], padding, parsed["dilation"]


def resolve_strings(problems, fn, padding, kernel, stride, dilation, hw):
    """'valid' → no padding; 'same' → TensorFlow's SAME (docs/spec.md §6): ceil(size/stride)
    outputs, the padding that needs split with the odd pixel at the end (bottom/right); at
    stride 1 that is d·(k−1), PyTorch's "same"."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        if hw is None:
            return padding  # a layer resolves it for each input's size
        if kernel is None or dilation is None or stride is None:
            return None
        pads = []
        for size, k, s, d in zip(hw, kernel, stride, dilation):
            out = -(-size // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return padding


def window(problems, fn, hw, kernel, stride, padding, dilation):
    """docs/spec.md §0 output size, or None after adding the problems: window numbers above 2**62,
    padded sizes above 2**62, a kernel extent larger than the padded size."""
    if None in (kernel, stride, padding, dilation):
        return None
    ok = True
    for name, value in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if max(value) > LIMIT:
            problems.add(ValueError, rf"^{fn}: {name}")
            ok = False
    sizes = []
    for size, (before, after), k, s, d in zip(hw, padding, kernel, stride, dilation):
        padded = size + before + after
        if padded > LIMIT:
            problems.add(ValueError, rf"^{fn}: padding")
            ok = False
        elif padded < d * (k - 1) + 1:
            problems.add(ValueError, rf"^{fn}: kernel_size")
            ok = False
        else:
            sizes.append((padded - d * (k - 1) - 1) // s + 1)
    return tuple(sizes) if ok else None


def transposed_window(problems, fn, hw, kernel, stride, padding, dilation, output_padding_arg):
    """docs/spec.md §2 output size of conv_transpose2d and its output_padding, or None after
    adding the problems; the conv2d it is the input gradient of must fit its window too."""
    if None in (kernel, stride, padding, dilation):
        return None
    out_pad = parse_pair(output_padding_arg, minimum=0)
    if out_pad is None:
        problems.add(ValueError, rf"^{fn}: output_padding")
        return None
    sizes, ok = [], True
    for size, k, s, d, (before, after), op in zip(hw, kernel, stride, dilation, padding,
                                                  out_pad):
        if op >= max(s, d):
            problems.add(ValueError, rf"^{fn}: output_padding=.* must be smaller")
            ok = False
        full = (size - 1) * s + d * (k - 1) + op + 1
        if full - before - after < 1:
            problems.add(ValueError, rf"^{fn}: padding=.* removes the whole output")
            ok = False
        sizes.append(full - before - after)
    if not ok:
        return None
    # The conv2d whose input gradient this is: image (C_out, OH, OW) → (C_in, H, W).
    if window(problems, fn, sizes, kernel, stride, padding, dilation) is None:
        return None
    return tuple(sizes), out_pad


def check_sizes(problems, shape, dtype, inputs=()):
    """A result that cannot exist (2**47 bytes and more, or an axis beyond int64) must fail
    with MemoryError / ValueError. Calls with a result or input between 64 MiB and that are
    rejected: they would be allocated for real."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes >= HUGE_BYTES or max(shape, default=0) > 2**63 - 1:
        problems.extend(HUGE_ERRORS)
        return False
    if nbytes >= SMALL_BYTES or any(a is not None and SMALL_BYTES <= logical_bytes(a) < HUGE_BYTES
                                    for a in inputs):
        reject()
    return True


def is_huge(array):
    return array is not None and logical_bytes(array) >= HUGE_BYTES


def settle(problems, inputs, result_shape, allowed=()):
    """(errors, may_return) of a case. An input of 2**47 bytes and more (a zero-stride view)
    cannot be copied: a call that needs it fails cleanly, only one whose result is empty
    may return."""
    errors = list(problems) + list(allowed)
    may_return = not problems
    if any(is_huge(a) for a in inputs):
        errors += HUGE_ERRORS
        if result_shape is None or math.prod(result_shape) != 0:
            may_return = False
    return errors, may_return


def workspace_allowance(out_w, columns_per_position, dtype):
    """Convolutions allocate a column workspace of at least one output row before they look
    at the batch: when even that cannot exist, MemoryError / ValueError is acceptable."""
    return HUGE_ERRORS if out_w * columns_per_position * dtype.itemsize >= HUGE_BYTES else []


def check_out(problems, fn, out, shape, dtype, inputs):
    """docs/spec.md §0 `out=`: an ndarray, exact shape and dtype, C-contiguous, writable, sharing no
    memory with an input."""
    if out is None:
        return
    bad = (not isinstance(out, np.ndarray) or out.shape != tuple(shape) or out.dtype != dtype
           or not out.flags.c_contiguous or not out.flags.writeable
           or any(isinstance(a, np.ndarray) and np.shares_memory(out, a) for a in inputs))
    if bad:
        problems.add(ValueError, rf"^{fn}: out")


def batched_shape(ndim_choice, layout, n, c, h, w):
    """An image shape: 4-D, 3-D (one image), or a wrong ndim."""
    dims = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    if ndim_choice == 4:
        return dims
    if ndim_choice == 3:
        return dims[1:]
    return {2: dims[2:], 5: (1,) + dims, 1: (h,)}[ndim_choice]


NDIMS = weighted((12, st.just(4)), (6, st.just(3)), (1, st.sampled_from([1, 2, 5])))


def ndims(clean=False):
    return st.sampled_from([4, 4, 3]) if clean else NDIMS


@st.composite
def image_array(draw, layout, n, c, h, w, dtype, ndim, clean=False):
    """The image in `layout`, or (rarely) a zero-stride view with one axis of 2**48."""
    shape = batched_shape(ndim, layout, n, c, h, w)
    if not clean and draw(st.integers(0, 30)) == 0 and shape:
        axis = draw(st.integers(0, len(shape) - 1))
        huge_shape = shape[:axis] + (2**48,) + shape[axis + 1:]
        return huge_array(np.random.default_rng(0), huge_shape, dtype)
    return draw(arrays(shape, dtype))


# ================================================================== algorithm= (docs/spec.md §5)
ABSENT = object()  # a keyword argument left out
ALGORITHMS = ("auto", "gemm", "winograd")
BAD_ALGORITHMS = ["fast", "", "winograd ", "F(4x4)", "gemm2", 3, None, 1.0, b"gemm", ["auto"]]


def random_case(name):
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper)))


def algorithm_args(clean=False):
    """algorithm=: absent, 'auto' / 'gemm' / 'winograd' (sometimes in random case), and
    (not clean) now and then a value no function takes."""
    names = st.sampled_from(ALGORITHMS)
    return weighted((3, st.just(ABSENT)), (2, st.just("auto")), (2, st.just("gemm")),
                    (4, st.just("winograd")), (3, names.flatmap(random_case)),
                    (0 if clean else 1, st.sampled_from(BAD_ALGORITHMS)))


def with_algorithm(kwargs, algorithm_arg):
    if algorithm_arg is not ABSENT:
        kwargs["algorithm"] = algorithm_arg
    return kwargs


def check_algorithm(problems, fn, algorithm_arg):
    """The algorithm asked for, lower case ('auto' when absent), or None after adding the
    ValueError of an unknown value."""
    if algorithm_arg is ABSENT:
        return "auto"
    if isinstance(algorithm_arg, str) and algorithm_arg.lower() in ALGORITHMS:
        return algorithm_arg.lower()
    problems.add(ValueError, rf"^{fn}: algorithm must be one of 'auto', 'gemm', 'winograd' "
                             rf"\(case-insensitive\), got {re.escape(repr(algorithm_arg))}$")
    return None


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
BAD_PADDING_MODES = ["symmetric", "edge", "wrap", "", "reflect ", None, 3, b"reflect",
                     ["zeros"]]


def padding_mode_args(clean=False):
    """padding_mode=: absent, a mode (sometimes in random case), and (not clean) now and
    then a value no function takes (docs/spec.md §6)."""
    names = st.sampled_from(PADDING_MODES)
    return weighted((6, st.just(ABSENT)), (2, st.just("zeros")),
                    (6, st.sampled_from(PADDING_MODES[1:])), (1, names.flatmap(random_case)),
                    (0 if clean else 1, st.sampled_from(BAD_PADDING_MODES)))


def with_padding_mode(kwargs, mode_arg):
    if mode_arg is not ABSENT:
        kwargs["padding_mode"] = mode_arg
    return kwargs


def check_padding_mode(problems, fn, mode_arg, transposed=False):
    """The padding mode asked for, lower case ('zeros' when absent), or None after adding
    the ValueError of an unknown value (a transposed convolution: of any but 'zeros')."""
    if mode_arg is ABSENT:
        return "zeros"
    if isinstance(mode_arg, str) and mode_arg.lower() in PADDING_MODES:
        if transposed and mode_arg.lower() != "zeros":
            problems.add(ValueError, rf"^{fn}: padding_mode must be 'zeros' for a transposed "
                                     rf"convolution")
            return None
        return mode_arg.lower()
    problems.add(ValueError, rf"^{fn}: padding_mode must be one of 'zeros', 'reflect', "
                             rf"'replicate', 'circular' \(case-insensitive\), got "
                             rf"{re.escape(repr(mode_arg))}$")
    return None


def check_mode_fits(problems, fn, mode, padding, sizes, axes=("height", "width")):
    """docs/spec.md §6: 'reflect' needs padding < the axis size, 'circular' padding <= it,
    'replicate' a non-empty axis; a mode reads the padding through a table per axis of at
    most 2**31 − 1 padded coordinates. True when the mode fits (or is 'zeros')."""
    if mode in (None, "zeros") or padding is None:
        return True
    fits = True
    for (before, after), size, axis in zip(padding, sizes, axes):
        pad = max(before, after)
        if pad == 0:
            continue
        if (mode == "reflect" and pad >= size or mode == "circular" and pad > size
                or mode == "replicate" and size == 0):
            problems.add(ValueError, rf"^{fn}: padding_mode='{mode}' needs .*{axis}")
            fits = False
        elif size + before + after > INT_MAX:
            problems.add(ValueError, rf"^{fn}: padding_mode='{mode}' reads the padding "
                                     rf"through a table")
            fits = False
    return fits


def mode_name(mode):
    """The mode for the oracles: 'zeros' where the model stopped before knowing it."""
    return mode or "zeros"


@st.composite
def winograd_aim(draw, algorithm_arg):
    """Whether this call draws a geometry Winograd can serve (3×3 kernel, stride and
    dilation 1) on purpose: usually when it asks for 'winograd' or 'auto'."""
    asked = algorithm_arg is ABSENT or (isinstance(algorithm_arg, str)
                                        and algorithm_arg.lower() in ("auto", "winograd"))
    return asked and draw(st.integers(0, 3)) > 0


UNIT_PAIRS = st.sampled_from([1, (1, 1), [1, 1], np.int64(1)])


def winograd_blockers(fn, kernel, stride, dilation, groups, in_channels):
    """docs/spec.md §5: why F(4×4, 3×3) cannot serve a conv2d (kernel, stride, dilation
    (h, w) pairs or None where unknown; its groups and input channels), as the
    ValueErrors algorithm='winograd' gives; [] when it can serve (or nothing is known)."""
    prefix = rf"^{fn}: algorithm='winograd' "
    found = []
    wrong = [(name, value) for name, value in (("kernel_size", kernel), ("stride", stride),
                                               ("dilation", dilation))
             if value is not None and tuple(value) != ((3, 3) if name == "kernel_size"
                                                       else (1, 1))]
    if wrong:
        listed = ", ".join(rf"{name}=\({value[0]}, {value[1]}\)" for name, value in wrong)
        if None in (kernel, stride, dilation):  # the others may be wrong too
            listed = ".*" + listed.replace(", ", ".*")
        found.append((ValueError, prefix + "needs a 3x3 kernel with stride 1 and dilation "
                                           "1, got " + listed))
    if is_int(groups) and groups > 1 and in_channels == groups:
        found.append((ValueError, prefix + rf"does not serve depthwise convolutions \(groups"
                                           rf" == in_channels == {groups}\)$"))
    return found


def conv2d_known(x, weight, groups, stride_arg, dilation_arg, layout_arg):
    """(kernel, stride, dilation, groups, input channels) of the conv2d a call computes
    (conv_transpose2d: of the conv2d whose input gradient it is, whose OIHW / HWIO weight
    its weight is), each None where the arguments do not say."""
    layout = parse_layout(layout_arg)
    wshape = np.shape(weight)
    groups = groups if is_int(groups) and groups >= 1 else None
    kernel = in_channels = None
    if layout and len(wshape) == 4:
        cin_g, kh, kw = ((wshape[1], wshape[2], wshape[3]) if layout == "NCHW"
                         else (wshape[2], wshape[0], wshape[1]))
        kernel = (kh, kw)
        in_channels = None if groups is None else cin_g * groups
    return kernel, parse_pair(stride_arg), parse_pair(dilation_arg), groups, in_channels


def may_run_winograd(algorithm, kernel, stride, dilation, groups, in_channels):
    """Whether the call may run Winograd: asked for, or 'auto' where it can serve."""
    return (algorithm in ("auto", "winograd")
            and not winograd_blockers("", kernel, stride, dilation, groups, in_channels))


def winograd_bound(x4, weight, padding, out_hw, groups, layout, m=None):
    """docs/spec.md §5's S of a 3×3 stride-1 conv2d (x4 batched, weight OIHW / HWIO, in
    `layout`), per output element in the output's layout: Σ_c of the largest |x_c| in the
    (m+2)×(m+2) input patch of the element's m×m tile (tiles from (0, 0); tile (ty, tx)
    reads rows m·ty − top … m·ty − top + m + 1, columns likewise, zero outside the image)
    times Σ_taps |w[o, c]|, c over the group of o. m None: the larger S of F(2×2)'s and
    F(4×4)'s tiles, either of which the engine may choose."""
    if m is None:
        return np.maximum(winograd_bound(x4, weight, padding, out_hw, groups, layout, 2),
                          winograd_bound(x4, weight, padding, out_hw, groups, layout, 4))
    x = np.abs(np.asarray(x4, np.float64))
    w = np.abs(np.asarray(weight, np.float64))
    if layout == "NHWC":
        x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    (top, _), (left, _) = padding
    out_h, out_w = out_hw
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    maxima = np.zeros(x.shape[:2] + (tiles_h, tiles_w))
    for ty, tx in np.ndindex(tiles_h, tiles_w):
        rows = slice(max(m * ty - top, 0), max(m * ty - top + m + 2, 0))
        cols = slice(max(m * tx - left, 0), max(m * tx - left + m + 2, 0))
        maxima[:, :, ty, tx] = x[:, :, rows, cols].max(axis=(2, 3), initial=0)
    taps = w.sum(axis=(2, 3))                                   # (C_out, C_in/g)
    mg, cin_g = taps.shape[0] // groups, taps.shape[1]
    bound = np.zeros((x.shape[0], taps.shape[0], tiles_h, tiles_w))
    for g in range(groups):
        bound[:, g * mg:(g + 1) * mg] = np.einsum(
            "nctu,oc->notu", maxima[:, g * cin_g:(g + 1) * cin_g], taps[g * mg:(g + 1) * mg])
    bound = bound.repeat(m, axis=2).repeat(m, axis=3)[:, :, :out_h, :out_w]
    return bound if layout == "NCHW" else bound.transpose(0, 2, 3, 1)


def winograd_input_grad_bound(grad4, weight, padding, hw, groups, layout):
    """S of the input gradient of a 3×3 stride-1 conv2d, the conv2d of grad_output with
    the weight flipped and its channels swapped per group (the same S: Σ_taps |w| does
    not change), padded by 2 − p per side or, where p > 2, cropped by p − 2."""
    g = np.asarray(grad4, np.float64)
    axes = (1, 2) if layout == "NHWC" else (2, 3)
    index = [slice(None)] * 4
    pads = []
    for axis, (before, after) in zip(axes, padding):
        index[axis] = slice(max(before - 2, 0), g.shape[axis] - max(after - 2, 0))
        pads.append((max(2 - before, 0), max(2 - after, 0)))
    w = np.asarray(weight, np.float64)
    if layout == "NHWC":  # HWIO (3, 3, C_in/g, C_out) → (3, 3, C_out/g, C_in)
        cin_g, cout = w.shape[2:]
        flipped = np.concatenate([w[..., k * (cout // groups):(k + 1) * (cout // groups)]
                                  .transpose(0, 1, 3, 2) for k in range(groups)], axis=3)
    else:  # OIHW (C_out, C_in/g, 3, 3) → (C_in, C_out/g, 3, 3)
        cout = w.shape[0]
        flipped = np.concatenate([w[k * (cout // groups):(k + 1) * (cout // groups)]
                                  .transpose(1, 0, 2, 3) for k in range(groups)], axis=0)
    return winograd_bound(g[tuple(index)], flipped, tuple(pads), hw, groups, layout)


def mode_input_grad_bound(grad4, weight, padding, hw, groups, layout, mode):
    """winograd_input_grad_bound for a padding mode: the input gradient of the padded image
    (unpadded geometry) is what Winograd computes, then each padded pixel's share is added
    onto the pixel it reads, so their bounds add up the same way (reference.unpad)."""
    if mode == "zeros":
        return winograd_input_grad_bound(grad4, weight, padding, hw, groups, layout)
    padded_hw = tuple(size + before + after for size, (before, after) in zip(hw, padding))
    bound = winograd_input_grad_bound(grad4, weight, ((0, 0), (0, 0)), padded_hw, groups,
                                      layout)
    pads = ([(0, 0), (0, 0)] + list(padding) if layout == "NCHW"
            else [(0, 0)] + list(padding) + [(0, 0)])
    return reference.unpad(bound, pads, mode)


def winograd_check(bound, dtype, bias=None, layout="NCHW", batched=True, out=None):
    """Comparison within docs/spec.md §5's bound: |result − exact| ≤ rel · (S + |bias|),
    rel 1e-5 (float32) or 1e-12 (float64), S = bound() (batched); exact where that is 0.
    Shape and dtype exact; with `out`, the result is `out`."""
    def compare(result, expected):
        if out is not None:
            assert result is out
        event("compared within the Winograd bound")
        rel = 1e-5 if dtype == np.float32 else 1e-12
        tolerance = bound()
        if bias is not None:
            tolerance = tolerance + np.abs(np.asarray(bias, np.float64))[
                (slice(None), None, None) if layout == "NCHW" else slice(None)]
        tolerance = rel * (tolerance if batched else tolerance[0])
        assert isinstance(result, np.ndarray), type(result)
        assert result.shape == expected.shape, (result.shape, expected.shape)
        assert result.dtype == expected.dtype.newbyteorder("="), (result.dtype, expected.dtype)
        error = np.abs(result.astype(np.float64) - expected.astype(np.float64))
        worst = np.unravel_index(np.argmax(error - tolerance), error.shape) if error.size \
            else None
        assert np.all(error <= tolerance), (
            f"outside the Winograd bound at {worst}: {result[worst]!r} vs {expected[worst]!r}"
            f", tolerance {tolerance[worst]!r}")
    return compare


# ================================================================== oracles
def gather_nchw(x4, kernel, stride, padding, dilation, out_hw):
    """patches[n, c, i, j, oh, ow] = x4[n, c, oh·sh − top + i·dh, ow·sw − left + j·dw], zero
    outside the image, without building the padded image: the oracle for paddings too
    large for reference's np.pad (its index arithmetic stays below 2**63 by the limit)."""
    n, c, h, w = x4.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    (top, _), (left, _) = padding
    oh_count, ow_count = out_hw
    rows = np.arange(oh_count, dtype=np.int64)[None, :] * sh - top + \
        np.arange(kh, dtype=np.int64)[:, None] * dh                      # (kh, OH)
    cols = np.arange(ow_count, dtype=np.int64)[None, :] * sw - left + \
        np.arange(kw, dtype=np.int64)[:, None] * dw                      # (kw, OW)
    inside = ((rows >= 0) & (rows < h))[:, None, :, None] & \
        ((cols >= 0) & (cols < w))[None, :, None, :]                     # (kh, kw, OH, OW)
    patches = np.zeros((n, c, kh, kw, oh_count, ow_count), dtype=x4.dtype)
    if h and w:
        taken = x4[:, :, np.clip(rows, 0, h - 1)[:, None, :, None],
                   np.clip(cols, 0, w - 1)[None, :, None, :]]
        patches[...] = np.where(inside, taken, patches)
    return patches, (rows, cols, inside)


def near(padding, stride, dilation):
    """Whether reference's np.pad and as_strided can take this geometry."""
    return max(max(p) for p in padding) <= SMALL_PAD and max(stride + dilation) <= SMALL_STEP


def oracle_im2col(x4, kernel, stride, padding, dilation, layout, out_hw, mode="zeros"):
    """Batched columns: reference.im2col, or the gather oracle for far paddings (zeros
    only: a padding mode's padding is small, or refused)."""
    if near(padding, stride, dilation) or mode != "zeros":
        return reference.im2col(x4, kernel, stride, padding, dilation, layout,
                                padding_mode=mode)
    nchw = x4 if layout == "NCHW" else x4.transpose(0, 3, 1, 2)
    patches, _ = gather_nchw(nchw, kernel, stride, padding, dilation, out_hw)
    n, c = nchw.shape[:2]
    if layout == "NCHW":
        return patches.reshape(n, -1, out_hw[0] * out_hw[1])
    return patches.transpose(0, 4, 5, 2, 3, 1).reshape(n, out_hw[0] * out_hw[1], -1)


def scatter_nchw(patches, hw, kernel, stride, padding, dilation):
    """The adjoint of gather_nchw: add every patch entry into its pixel, drop the padding."""
    n, c, kh, kw, oh_count, ow_count = patches.shape
    image = np.zeros((n, c) + tuple(hw), dtype=patches.dtype)
    rows = (np.arange(oh_count)[None, :] * stride[0] - padding[0][0]
            + np.arange(kh)[:, None] * dilation[0])
    cols = (np.arange(ow_count)[None, :] * stride[1] - padding[1][0]
            + np.arange(kw)[:, None] * dilation[1])
    for i, j, oh, ow in np.ndindex(kh, kw, oh_count, ow_count):
        if 0 <= rows[i, oh] < hw[0] and 0 <= cols[j, ow] < hw[1]:
            image[:, :, rows[i, oh], cols[j, ow]] += patches[:, :, i, j, oh, ow]
    return image


def oracle_col2im(cols3, hw, kernel, stride, padding, dilation, layout, out_hw, mode="zeros"):
    if near(padding, stride, dilation) or mode != "zeros":
        return reference.col2im(cols3, hw, kernel, stride, padding, dilation, layout,
                                padding_mode=mode)
    n = cols3.shape[0]
    (kh, kw), (oh_count, ow_count) = kernel, out_hw
    if layout == "NCHW":
        patches = cols3.reshape(n, -1, kh, kw, oh_count, ow_count)
    else:
        patches = cols3.reshape(n, oh_count, ow_count, kh, kw, -1).transpose(0, 5, 3, 4, 1, 2)
    image = scatter_nchw(patches, hw, kernel, stride, padding, dilation)
    return image if layout == "NCHW" else image.transpose(0, 2, 3, 1)


def to_nhwc_hwio(x4, weight, layout):
    if layout == "NCHW":
        return x4.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0)
    return x4, weight


def from_nhwc(y, layout):
    return y.transpose(0, 3, 1, 2) if layout == "NCHW" else y


def oracle_conv2d(x4, weight, bias, stride, padding, dilation, groups, layout, out_hw,
                  mode="zeros"):
    """reference.conv2d_strided (or columns by the gather oracle times the weight)."""
    z, w_hwio = to_nhwc_hwio(x4, weight, layout)
    if near(padding, stride, dilation) or mode != "zeros":
        y = reference.conv2d_strided(z, w_hwio, stride, padding, dilation, groups,
                                     padding_mode=mode)
    else:
        patches, _ = gather_nchw(z.transpose(0, 3, 1, 2), w_hwio.shape[:2], stride, padding,
                                 dilation, out_hw)
        n, c = patches.shape[:2]
        cin_g, cout = w_hwio.shape[2], w_hwio.shape[3]
        y = np.zeros((n,) + tuple(out_hw) + (cout,), dtype=x4.dtype)
        for g in range(groups):
            p = patches[:, g * cin_g:(g + 1) * cin_g]          # (n, cin_g, kh, kw, OH, OW)
            wg = w_hwio[..., g * (cout // groups):(g + 1) * (cout // groups)]
            y[..., g * (cout // groups):(g + 1) * (cout // groups)] = np.einsum(
                "ncijhw,ijco->nhwo", p, wg)
    if bias is not None:
        y = y + bias
    return from_nhwc(y.astype(x4.dtype), layout)


def oracle_conv2d_backward(grad4, x4, weight, stride, padding, dilation, groups, layout,
                           mode="zeros"):
    """reference.conv2d_backward in the given layout: (grad_input, grad_weight, grad_bias)."""
    z, w_hwio = to_nhwc_hwio(x4, weight, layout)
    g = grad4.transpose(0, 2, 3, 1) if layout == "NCHW" else grad4
    if near(padding, stride, dilation) or mode != "zeros":
        gz, gw, gb = reference.conv2d_backward(g, z, w_hwio, stride, padding, dilation, groups,
                                               padding_mode=mode)
    else:
        gz, gw, gb = gather_backward(g, z, w_hwio, stride, padding, dilation, groups)
    gw = gw.transpose(3, 2, 0, 1) if layout == "NCHW" else gw
    return from_nhwc(gz, layout).astype(x4.dtype), gw.astype(x4.dtype), gb.astype(x4.dtype)


def gather_backward(g, z, w_hwio, stride, padding, dilation, groups):
    """conv2d's gradients from the gather oracle (NHWC / HWIO), for far paddings."""
    out_hw = g.shape[1:3]
    kh, kw, cin_g, cout = w_hwio.shape
    cout_g = cout // groups
    patches, _ = gather_nchw(z.transpose(0, 3, 1, 2), (kh, kw), stride, padding, dilation,
                             out_hw)
    grad_patches = np.zeros(patches.shape, dtype=g.dtype)
    grad_w = np.zeros(w_hwio.shape, dtype=g.dtype)
    for grp in range(groups):
        gg = g[..., grp * cout_g:(grp + 1) * cout_g]
        wg = w_hwio[..., grp * cout_g:(grp + 1) * cout_g]
        channels = slice(grp * cin_g, (grp + 1) * cin_g)
        grad_w[..., grp * cout_g:(grp + 1) * cout_g] = np.einsum(
            "ncijhw,nhwo->ijco", patches[:, channels], gg)
        grad_patches[:, channels] = np.einsum("nhwo,ijco->ncijhw", gg, wg)
    grad_z = scatter_nchw(grad_patches, z.shape[1:3], (kh, kw), stride, padding, dilation)
    return grad_z.transpose(0, 2, 3, 1), grad_w, g.sum(axis=(0, 1, 2))


# ================================================================== im2col / col2im_backward
def im2col_strategy(fn="im2col", arg="x"):
    @st.composite
    def strategy(draw):
        clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
        layout_arg = draw(layout_args(clean))
        layout = parse_layout(layout_arg) or "NCHW"
        n, c, h, w = (draw(st.integers(0, 3)), draw(st.integers(0, 4)),
                      draw(st.integers(0, 7)), draw(st.integers(0, 7)))
        dtype = draw(dtype_values(movable=True, clean=clean))
        x = draw(image_array(layout, n, c, h, w, dtype, draw(ndims(clean)), clean))
        kernel_arg = draw(pair_value(1, 3, clean=clean).filter(not_one_d))
        stride_arg = draw(pair_value(1, 3, clean=clean))
        dilation_arg = draw(pair_value(1, 3, clean=clean))
        padding_arg = draw(padding_value(clean=clean))
        mode_arg = draw(padding_mode_args(clean))

        problems = Problems()
        layout = check_layout(problems, fn, layout_arg)
        mode = check_padding_mode(problems, fn, mode_arg)
        dtype = check_movable(problems, fn, arg, x)
        shape = np.shape(x)
        if len(shape) not in (3, 4):
            problems.add(ValueError, rf"^{fn}: expected {arg} of shape")
        kernel, stride, padding, dilation = check_geometry_args(
            problems, fn, kernel_arg, stride_arg, padding_arg, dilation_arg)
        result_shape, out_hw = None, None
        if layout and len(shape) in (3, 4):
            shape4 = shape if len(shape) == 4 else (1,) + shape
            n4, c4, h4, w4 = shape4 if layout == "NCHW" else (shape4[0], shape4[3],
                                                              shape4[1], shape4[2])
            out_hw = window(problems, fn, (h4, w4), kernel, stride, padding, dilation)
            if out_hw is not None and not check_mode_fits(problems, fn, mode, padding,
                                                          (h4, w4)):
                out_hw = None
            if out_hw is not None:
                kh, kw = kernel
                positions = out_hw[0] * out_hw[1]
                result_shape = ((n4, c4 * kh * kw, positions) if layout == "NCHW"
                                else (n4, positions, kh * kw * c4))
                sizes_ok = check_sizes(problems, result_shape, dtype, [x])
                if len(shape) == 3:
                    result_shape = result_shape[1:]
                if not sizes_ok:
                    result_shape = None
        out = None
        if result_shape is not None:
            out = draw(out_buffer(result_shape, dtype, [x], clean=clean))
            check_out(problems, fn, out, result_shape, dtype, [x])

        def expected():
            if math.prod(result_shape) == 0:
                return np.zeros(result_shape, dtype)
            x4 = np.array(x) if len(shape) == 4 else np.array(x)[None]
            cols = oracle_im2col(x4, kernel, stride, padding, dilation, layout, out_hw,
                                 mode_name(mode))
            return cols if len(shape) == 4 else cols[0]

        kwargs = with_padding_mode(dict(stride=stride_arg, padding=padding_arg,
                                        dilation=dilation_arg, layout=layout_arg), mode_arg)
        if out is not None:
            kwargs["out"] = out
        function = getattr(fastconv, fn)
        allowed = sizes_allowance(result_shape, dtype) if result_shape is not None else []
        errors, may_return = settle(problems, [x], result_shape, allowed)
        return Case(f"{fn}({arg}: {np.shape(x)} {dtype_of(x)} {type(x).__name__}, "
                    f"{kernel_arg!r}, **{kwargs!r})",
                    lambda: function(x, kernel_arg, **kwargs), errors,
                    expected if may_return else None,
                    assert_into(out) if out is not None else None, (x,))
    return strategy()


# ================================================================== col2im / im2col_backward
@st.composite
def col2im_cases(draw, fn="col2im"):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    backward = fn == "im2col_backward"
    arg = "grad_cols" if backward else "cols"
    layout_arg = draw(layout_args(clean))
    layout = parse_layout(layout_arg) or "NCHW"
    n, c, h, w = (draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 7)),
                  draw(st.integers(0, 7)))
    kernel_arg = draw(pair_value(1, 3, clean=clean).filter(not_one_d))
    stride_arg = draw(pair_value(1, 3, clean=clean))
    dilation_arg = draw(pair_value(1, 3, clean=clean))
    padding_arg = draw(padding_value(clean=clean))
    mode_arg = draw(padding_mode_args(clean))
    dtype = draw(dtype_values(movable=True, clean=clean))
    batched = draw(st.booleans())
    # The columns' shape: right for the drawn geometry when it parses, else arbitrary;
    # then maybe perturbed.
    kernel_guess = parse_pair(kernel_arg) or (1, 1)
    geometry_guess = (parse_pair(stride_arg) or (1, 1), parse_padding(padding_arg)
                      or ((0, 0), (0, 0)), parse_pair(dilation_arg) or (1, 1))
    out_guess = window(Problems(), fn, (h, w), kernel_guess, *geometry_guess)
    if out_guess is None:
        out_guess = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    rows, positions = c * kernel_guess[0] * kernel_guess[1], out_guess[0] * out_guess[1]
    if max(rows, 1) * max(positions, 1) > 1 << 12:  # far geometry: small columns instead
        rows, positions = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    change = "none" if clean else draw(st.sampled_from(["none"] * 16 + ["rows", "positions",
                                                                       "ndim"]))
    if change == "rows":
        rows += draw(st.sampled_from([-1, 1, -rows]))
    if change == "positions":
        positions += draw(st.sampled_from([-1, 1, 5]))
    rows, positions = max(rows, 0), max(positions, 0)
    shape = ((n, rows, positions) if layout == "NCHW" else (n, positions, rows))
    shape = shape if batched else shape[1:]
    if change == "ndim":
        shape = draw(st.sampled_from([shape[-1:], (1,) + shape if batched else (1, 1) + shape]))
    if not clean and draw(st.integers(0, 30)) == 0:
        cols = huge_array(np.random.default_rng(0), (1, 2**48, 1) if layout == "NCHW" else
                          (1, 1, 2**48), dtype)
    else:
        cols = draw(arrays(shape, dtype))
    if backward:
        input_shape = draw(weighted(
            (10, st.just(batched_shape(4 if batched else 3, layout, n, c, h, w))),
            (1, st.sampled_from([(1, 2), (1, 2, 3, 4, 5), (1, -1, 3, 3), (2.0, 1, 3, 3),
                                 5, "abc", None]))))
        size_arg = None
    else:
        size_arg = draw(weighted((10, st.just((h, w))), (1, st.just(h)),
                                 (1, pair_value(0, 7, minimum=0)),
                                 (1, st.sampled_from([(-1, 3), (3,), 4.0, None]))))

    problems = Problems()
    layout = check_layout(problems, fn, layout_arg)
    mode = check_padding_mode(problems, fn, mode_arg)
    dtype = check_movable(problems, fn, arg, cols, allow_bool=False)
    kernel, stride, padding, dilation = check_geometry_args(
        problems, fn, kernel_arg, stride_arg, padding_arg, dilation_arg)
    cshape = np.shape(cols)
    result_shape, out_hw, hw, channels = None, None, None, None
    if backward:
        in_shape = None
        try:
            in_shape = tuple(int(v) if is_int(v) else v for v in input_shape)
        except TypeError:
            pass
        if (in_shape is None or len(in_shape) not in (3, 4) or not all(map(is_int, in_shape))
                or min(in_shape) < 0):
            problems.add(ValueError, rf"^{fn}: input_shape")
            in_shape = None
        if layout and in_shape is not None:
            shape4 = in_shape if len(in_shape) == 4 else (1,) + in_shape
            n4, c4, h4, w4 = shape4 if layout == "NCHW" else (shape4[0], shape4[3],
                                                              shape4[1], shape4[2])
            hw, channels = (h4, w4), c4
            out_hw = window(problems, fn, hw, kernel, stride, padding, dilation)
            if out_hw is not None and not check_mode_fits(problems, fn, mode, padding, hw):
                out_hw = None
            if out_hw is not None:
                kh, kw = kernel
                want = ((n4, c4 * kh * kw, out_hw[0] * out_hw[1]) if layout == "NCHW"
                        else (n4, out_hw[0] * out_hw[1], kh * kw * c4))
                want = want if len(in_shape) == 4 else want[1:]
                if cshape != want:
                    problems.add(ValueError, rf"^{fn}: grad_cols must have shape")
                else:
                    result_shape = shape4 if len(in_shape) == 4 else in_shape
    else:
        if len(cshape) not in (2, 3):
            problems.add(ValueError, rf"^{fn}: expected cols of shape")
        hw = parse_pair(size_arg, minimum=0)
        if hw is None:
            problems.add(ValueError, rf"^{fn}: output_size")
        if layout and len(cshape) in (2, 3) and kernel is not None:
            cols3 = cshape if len(cshape) == 3 else (1,) + cshape
            rows = cols3[1] if layout == "NCHW" else cols3[2]
            kh, kw = kernel
            if rows == 0 or rows % (kh * kw):
                problems.add(ValueError, rf"^{fn}: cols has \d+ (rows|columns)")
            elif hw is not None:
                channels = rows // (kh * kw)
                out_hw = window(problems, fn, hw, kernel, stride, padding, dilation)
                if out_hw is not None and not check_mode_fits(problems, fn, mode, padding,
                                                              hw):
                    out_hw = None
                if out_hw is not None:
                    positions = cols3[2] if layout == "NCHW" else cols3[1]
                    if positions != out_hw[0] * out_hw[1]:
                        problems.add(ValueError, rf"^{fn}: cols has \d+ sliding-window")
                    else:
                        image = ((cols3[0], channels) + hw if layout == "NCHW"
                                 else (cols3[0],) + hw + (channels,))
                        result_shape = image if len(cshape) == 3 else image[1:]
    if result_shape is not None and not check_sizes(problems, result_shape, dtype, [cols]):
        result_shape = None
    out = None
    if result_shape is not None:
        out = draw(out_buffer(result_shape, dtype, [cols], clean=clean))
        check_out(problems, fn, out, result_shape, dtype, [cols])

    def expected():
        if math.prod(result_shape) == 0:
            return np.zeros(result_shape, dtype)
        cols3 = np.array(cols) if len(result_shape) == 4 else np.array(cols)[None]
        if math.prod(cols3.shape) == 0:
            return np.zeros(result_shape, dtype)
        image = oracle_col2im(cols3, hw, kernel, stride, padding, dilation, layout, out_hw,
                              mode_name(mode))
        return image if len(result_shape) == 4 else image[0]

    kwargs = with_padding_mode(dict(stride=stride_arg, padding=padding_arg,
                                    dilation=dilation_arg, layout=layout_arg), mode_arg)
    if out is not None:
        kwargs["out"] = out
    second = input_shape if backward else size_arg
    function = getattr(fastconv, fn)
    allowed = sizes_allowance(result_shape, dtype) if result_shape is not None else []
    errors, may_return = settle(problems, [cols], result_shape, allowed)
    return Case(f"{fn}({arg}: {cshape} {dtype_of(cols)}, {second!r}, {kernel_arg!r}, "
                f"**{kwargs!r})",
                lambda: function(cols, second, kernel_arg, **kwargs), errors,
                expected if may_return else None,
                assert_into(out) if out is not None else None, (cols,))


# ================================================================== convolutions
@st.composite
def conv_arrays(draw, clean, transposed=False, grouped=True, giant=False, kernel3=False):
    """Input, weight and bias for conv2d (OIHW / HWIO weights) or conv_transpose2d
    ((C_in, C_out/g, kh, kw) / (kh, kw, C_out/g, C_in)), sometimes mismatched.
    `grouped=False`: groups is 1 (atrous_conv2d has none). `giant`: now and then an empty
    batch of 2**20 × 2**20 images (a zero-size array whose GEMM sizes exceed BLAS's int).
    `kernel3`: a 3×3 kernel and images of up to 13 × 13 (several Winograd tiles)."""
    layout_arg = draw(layout_args(clean))
    layout = parse_layout(layout_arg) or "NCHW"
    groups = 1 if not grouped else draw(weighted(
        (6, st.just(1)), (3, st.integers(2, 3)),
        (0 if clean else 1, BAD_SCALARS.filter(lambda v: not (is_int(v) and v >= 1)))))
    g = groups if is_int(groups) and groups >= 1 else 1
    # Now and then enough channels for the kernels' shared-columns mode (GEMMs split by
    # blocks of 128 output channels or column rows).
    cin_g = draw(weighted((12, st.integers(1, 3)), (1, st.integers(30, 33))))
    cout_g = draw(weighted((12, st.integers(1, 3)), (1, st.integers(256, 300))))
    depthwise = draw(st.booleans()) and g > 1 and not transposed
    if depthwise:
        cin_g = 1  # groups == C_in: the direct depthwise kernels
    cin, cout = cin_g * g, cout_g * g
    # 1×1 kernels often: their GEMM-only paths (no im2col) have edge cases of their own
    kh, kw = draw(weighted((3, st.tuples(st.integers(1, 3), st.integers(1, 3))),
                           (1, st.just((1, 1)))))
    side = 13 if kernel3 else 6
    n, h, w = draw(st.integers(0, 3)), draw(st.integers(0, side)), draw(st.integers(0, side))
    if kernel3:
        kh, kw = 3, 3
    huge_map = giant and not clean and draw(st.integers(0, 30)) == 0
    if huge_map:
        n, h, w = 0, 2**20, 2**20  # 4-D only: any other ndim would be non-empty
    change = "none" if clean else draw(st.sampled_from(
        ["none"] * 24 + ["channels", "cout", "empty", "wdim", "bias", "dtype"]))
    x_channels = cin + (draw(st.sampled_from([-1, 1])) if change == "channels" else 0)
    if change == "cout" and not transposed:
        cout += 1
    if change == "empty":
        kh = 0
    if transposed:
        wshape = (cin, cout_g, kh, kw) if layout == "NCHW" else (kh, kw, cout_g, cin)
    else:
        wshape = (cout, cin_g, kh, kw) if layout == "NCHW" else (kh, kw, cin_g, cout)
    if change == "wdim":
        wshape = draw(st.sampled_from([wshape[1:], wshape + (1,)]))
    dtype = draw(dtype_values(clean=clean))
    wdtype = draw(dtype_values(clean=clean)) if change == "dtype" else dtype
    ndim = 4 if huge_map else draw(ndims(clean))
    x = draw(image_array(layout, n, max(x_channels, 0), h, w, dtype, ndim, clean or huge_map))
    weight = draw(arrays(wshape, wdtype))
    bias = None
    if draw(st.booleans()):
        bshape = (cout + (1 if change == "bias" else 0),)
        bias = draw(arrays(bshape, dtype if change != "bias" else draw(dtype_values(clean=clean))))
    return layout_arg, x, weight, bias, groups


def conv_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg, dilation_arg,
               layout_arg, transposed=False, output_padding_arg=0, x_name="input",
               mode="zeros"):
    """docs/spec.md §2 checks of conv2d / conv2d_backward / conv_transpose2d; returns a dict of the
    parsed call, or None when the model found a problem that stops it."""
    layout = check_layout(problems, fn, layout_arg)
    dtypes = [check_float(problems, fn, x_name, x), check_float(problems, fn, "weight", weight)]
    if bias is not None:
        dtypes.append(check_float(problems, fn, "bias", bias))
    if len(set(dtypes)) > 1:
        problems.add(TypeError, rf"^{fn}: \w+ has dtype \S+ but \w+ has dtype")
    wshape, xshape = np.shape(weight), np.shape(x)
    if len(wshape) != 4:
        problems.add(ValueError, rf"^{fn}: expected a 4-D weight")
    if len(xshape) not in (3, 4):
        problems.add(ValueError, rf"^{fn}: expected input of shape")
    groups_ok = is_int(groups) and groups >= 1
    if not groups_ok:
        problems.add(ValueError, rf"^{fn}: groups")
    kernel, stride, padding, dilation = check_geometry_args(
        problems, fn, FROM_WEIGHT, stride_arg, padding_arg, dilation_arg,
        conv_strings=not transposed)
    if not (layout and len(wshape) == 4 and len(xshape) in (3, 4) and groups_ok):
        return None
    x4 = xshape if len(xshape) == 4 else (1,) + xshape
    n, c, h, w = x4 if layout == "NCHW" else (x4[0], x4[3], x4[1], x4[2])
    if transposed:
        cin, cout_g, kh, kw = wshape if layout == "NCHW" else (wshape[3], wshape[2],
                                                               wshape[0], wshape[1])
        cout = cout_g * groups
        if c != cin:
            problems.add(ValueError, rf"^{fn}: expected input with \d+ channels")
        if cin % groups:
            problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
        if min(kh, kw, cout_g, cin) < 1:
            problems.add(ValueError, rf"^{fn}: weight has an empty axis")
    else:
        cout, cin_g, kh, kw = wshape if layout == "NCHW" else (wshape[3], wshape[2],
                                                               wshape[0], wshape[1])
        if cout % groups:
            problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
        if c != cin_g * groups:
            problems.add(ValueError, rf"^{fn}: expected input with \d+ channels")
        if min(kh, kw, cin_g, cout) < 1:
            problems.add(ValueError, rf"^{fn}: weight has an empty axis|^{fn}: input has 0")
    if bias is not None and np.shape(bias) != (cout,):
        problems.add(ValueError, rf"^{fn}: expected bias of shape")
    kernel = (kh, kw)
    if padding in ("same", "valid"):
        padding = resolve_strings(problems, fn, padding, kernel, stride, dilation, (h, w))
    if problems:
        # The geometry is checked beside the arrays: its faults are alternatives
        if transposed:
            transposed_window(problems, fn, (h, w), kernel, stride, padding, dilation,
                              output_padding_arg)
        elif window(problems, fn, (h, w), kernel, stride, padding, dilation) is not None:
            check_mode_fits(problems, fn, mode, padding, (h, w))
        return None
    parsed = dict(layout=layout, dtype=dtypes[0], n=n, c=c, h=h, w=w, cout=cout,
                  kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                  groups=groups, batched=len(xshape) == 4)
    if transposed:
        geometry = transposed_window(problems, fn, (h, w), kernel, stride, padding, dilation,
                                     output_padding_arg)
        if geometry is None:
            return None
        sizes, out_pad = geometry
        parsed.update(out_hw=tuple(sizes), out_pad=out_pad)
        blas = {cin, cout, cout_g * kh * kw, cin // groups, h * w, sizes[0] * sizes[1]}
    else:
        out_hw = window(problems, fn, (h, w), kernel, stride, padding, dilation)
        if out_hw is None or not check_mode_fits(problems, fn, mode, padding, (h, w)):
            return None
        parsed["out_hw"] = out_hw
        blas = {cout, c, c // groups * kh * kw, cout // groups, out_hw[0] * out_hw[1], h * w}
    if max(blas) > INT_MAX:
        problems.add(ValueError, rf"^{fn}: .* exceeds the BLAS int range")
        return None
    return parsed


def output_shape(parsed, channels):
    oh, ow = parsed["out_hw"]
    shape = ((parsed["n"], channels, oh, ow) if parsed["layout"] == "NCHW"
             else (parsed["n"], oh, ow, channels))
    return shape if parsed["batched"] else shape[1:]


def four_d(array, batched):
    array = np.array(array)
    return array if batched else array[None]


def padded_by_mode(x4, padding, layout, mode):
    """x4 (batched) padded in `mode` as reference pads it, for the Winograd bound of a
    padding mode: the kernels read the padded image's values there."""
    spatial = tuple(padding)
    widths = ((0, 0), (0, 0)) + spatial if layout == "NCHW" else ((0, 0),) + spatial + ((0, 0),)
    return np.pad(np.asarray(x4), widths, mode=reference.NUMPY_PAD_MODES[mode])


def mode_bound(bound, mode):
    """`bound` for a padding mode: over the image padded in that mode, unpadded (the
    kernels read the padding through tables as if the image were padded)."""
    if mode in (None, "zeros"):
        return bound

    def padded_bound(x4, weight, padding, out_hw, groups, layout):
        return bound(padded_by_mode(x4, padding, layout, mode), weight, ((0, 0), (0, 0)),
                     out_hw, groups, layout)
    return padded_bound


def out_and_comparison(draw, problems, fn, parsed, x, weight, bias, groups, stride_arg,
                       dilation_arg, layout_arg, algorithm_arg, clean, bound):
    """For conv2d and conv_transpose2d: the out= buffer drawn (None: none), the result's
    shape and how the result is compared: within docs/spec.md §5's bound, `bound(x4,
    weight, padding, out_hw, groups, layout)` (winograd_bound or its input-gradient twin),
    where Winograd may run, else written into out= when given. Adds the problems of the
    result size, out= and algorithm=."""
    out, shape = None, None
    if parsed is not None:
        shape = output_shape(parsed, parsed["cout"])
        if check_sizes(problems, shape, parsed["dtype"], [x, weight]):
            out = draw(out_buffer(shape, parsed["dtype"], [x, weight, bias], clean=clean))
            check_out(problems, fn, out, shape, parsed["dtype"], [x, weight, bias])
    algorithm = check_algorithm(problems, fn, algorithm_arg)
    known = conv2d_known(x, weight, groups, stride_arg, dilation_arg, layout_arg)
    if algorithm == "winograd":
        problems.extend(winograd_blockers(fn, *known))
    compare = assert_into(out) if out is not None else None
    if parsed is not None and may_run_winograd(algorithm, *known):
        p = parsed
        compare = winograd_check(
            lambda: bound(four_d(x, p["batched"]), weight, p["padding"], p["out_hw"],
                          p["groups"], p["layout"]),
            p["dtype"], bias, p["layout"], p["batched"], out)
    return out, shape, compare


@st.composite
def conv2d_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    fn = "conv2d"
    algorithm_arg = draw(algorithm_args(clean))
    aim = draw(winograd_aim(algorithm_arg))
    layout_arg, x, weight, bias, groups = draw(conv_arrays(clean, kernel3=aim))
    stride_arg = draw(UNIT_PAIRS if aim else pair_value(1, 3, clean=clean))
    dilation_arg = draw(UNIT_PAIRS if aim else pair_value(1, 2, clean=clean))
    padding_arg = draw(padding_value(strings=True, clean=clean))
    mode_arg = draw(padding_mode_args(clean))
    problems = Problems()
    mode = check_padding_mode(problems, fn, mode_arg)
    parsed = conv_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                        dilation_arg, layout_arg, mode=mode)
    out, shape, compare = out_and_comparison(
        draw, problems, fn, parsed, x, weight, bias, groups, stride_arg, dilation_arg,
        layout_arg, algorithm_arg, clean, mode_bound(winograd_bound, mode))

    def expected():
        p = parsed
        if math.prod(shape) == 0:
            return np.zeros(shape, p["dtype"])
        y = oracle_conv2d(four_d(x, p["batched"]), np.array(weight),
                          None if bias is None else np.array(bias), p["stride"], p["padding"],
                          p["dilation"], p["groups"], p["layout"], p["out_hw"],
                          mode_name(mode))
        return y if p["batched"] else y[0]

    kwargs = with_padding_mode(with_algorithm(dict(
        stride=stride_arg, padding=padding_arg, dilation=dilation_arg, groups=groups,
        layout=layout_arg), algorithm_arg), mode_arg)
    if out is not None:
        kwargs["out"] = out
    errors, may_return = settle(problems, [x, weight, bias], shape)
    return Case(f"conv2d(x: {np.shape(x)} {dtype_of(x)}, weight: {np.shape(weight)} "
                f"{dtype_of(weight)}, bias: {np.shape(bias) if bias is not None else None}, "
                f"**{kwargs!r})",
                lambda: fastconv.conv2d(x, weight, bias, **kwargs), errors,
                expected if may_return else None, compare, (x, weight, bias))


@st.composite
def conv2d_backward_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    fn = "conv2d_backward"
    algorithm_arg = draw(algorithm_args(clean))
    aim = draw(winograd_aim(algorithm_arg))
    layout_arg, x, weight, _, groups = draw(conv_arrays(clean, kernel3=aim))
    stride_arg = draw(UNIT_PAIRS if aim else pair_value(1, 3, clean=clean))
    dilation_arg = draw(UNIT_PAIRS if aim else pair_value(1, 2, clean=clean))
    padding_arg = draw(padding_value(strings=True, clean=clean))
    needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    if aim and not needs[0]:  # Winograd serves the input gradient: ask for it more often
        needs = (draw(st.booleans()),) + needs[1:]
    mode_arg = draw(padding_mode_args(clean))
    problems = Problems()
    mode = check_padding_mode(problems, fn, mode_arg)
    parsed = conv_model(problems, fn, x, weight, None, groups, stride_arg, padding_arg,
                        dilation_arg, layout_arg, mode=mode)
    shape = output_shape(parsed, parsed["cout"]) if parsed is not None else \
        draw(st.sampled_from([(1, 1, 1, 1), (2, 3, 4)]))
    change = "none" if clean else draw(st.sampled_from(["none"] * 16 + ["shape", "dtype"]))
    if change == "shape":
        shape = tuple(shape[:-1]) + (shape[-1] + 1,) if shape else (1,)
    gdtype = draw(dtype_values(clean=clean)) if change == "dtype" else \
        (dtype_of(x) if dtype_of(x) in FLOATS else np.dtype(np.float64))
    grad = (huge_array(np.random.default_rng(0), shape, gdtype)
            if math.prod(shape) * 8 >= SMALL_BYTES else draw(arrays(shape, gdtype)))
    gdtype = check_float(problems, fn, "grad_output", grad)
    if gdtype in FLOATS and dtype_of(x) in FLOATS and gdtype != dtype_of(x):
        problems.add(TypeError, rf"^{fn}: input has dtype \S+ but grad_output has dtype")
    if parsed is not None and np.shape(grad) != output_shape(parsed, parsed["cout"]):
        problems.add(ValueError, rf"^{fn}: expected grad_output of shape")
    if parsed is not None:
        x_shape = np.shape(x)
        check_sizes(problems, x_shape, parsed["dtype"], [x, weight, grad])
    algorithm = check_algorithm(problems, fn, algorithm_arg)
    known = conv2d_known(x, weight, groups, stride_arg, dilation_arg, layout_arg)
    if algorithm == "winograd":
        problems.extend(winograd_blockers(fn, *known))
    # The input gradient may run Winograd; the weight and bias gradients never do.
    compare_input = assert_same
    if parsed is not None and may_run_winograd(algorithm, *known):
        p = parsed
        compare_input = winograd_check(
            lambda: mode_input_grad_bound(four_d(grad, p["batched"]), weight, p["padding"],
                                          (p["h"], p["w"]), p["groups"], p["layout"],
                                          mode_name(mode)),
            p["dtype"], None, p["layout"], p["batched"])

    def expected():
        p = parsed
        grads = oracle_conv2d_backward(four_d(grad, p["batched"]), four_d(x, p["batched"]),
                                       np.array(weight), p["stride"], p["padding"],
                                       p["dilation"], p["groups"], p["layout"],
                                       mode_name(mode))
        grad_x = grads[0] if p["batched"] else grads[0][0]
        return tuple(value if wanted else None
                     for value, wanted in zip((grad_x, grads[1], grads[2]), needs))

    def compare(result, expected_grads):
        assert isinstance(result, fastconv.Gradients)
        for got, want, check in zip(result, expected_grads,
                                    (compare_input, assert_same, assert_same)):
            if want is None:
                assert got is None
            else:
                check(got, want)

    kwargs = with_padding_mode(with_algorithm(dict(
        stride=stride_arg, padding=padding_arg, dilation=dilation_arg, groups=groups,
        layout=layout_arg, needs_input_grad=needs[0], needs_weight_grad=needs[1],
        needs_bias_grad=needs[2]), algorithm_arg), mode_arg)
    errors, may_return = settle(problems, [grad, x, weight], None)
    return Case(f"conv2d_backward(grad: {np.shape(grad)} {dtype_of(grad)}, x: {np.shape(x)} "
                f"{dtype_of(x)}, weight: {np.shape(weight)} {dtype_of(weight)}, **{kwargs!r})",
                lambda: fastconv.conv2d_backward(grad, x, weight, **kwargs), errors,
                expected if may_return else None, compare, (grad, x, weight))


@st.composite
def conv_transpose2d_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    fn = "conv_transpose2d"
    algorithm_arg = draw(algorithm_args(clean))
    aim = draw(winograd_aim(algorithm_arg))
    layout_arg, x, weight, bias, groups = draw(conv_arrays(clean, transposed=True, kernel3=aim))
    if aim:  # Winograd's geometry: stride and dilation 1 (so no output_padding)
        stride_arg, dilation_arg = draw(UNIT_PAIRS), draw(UNIT_PAIRS)
        padding_arg = draw(padding_value(hi=3, clean=clean))
    elif clean and draw(st.integers(0, 3)) == 0:
        # Stride 1, no padding, output_padding from the dilation alone: with a 1×1 kernel
        # the output is larger than the input, so no GEMM writes its last rows/columns
        stride_arg, padding_arg = 1, 0
        dilation_arg = draw(pair_value(1, 3, clean=True))
    else:
        stride_arg = draw(pair_value(1, 3, clean=clean))
        dilation_arg = draw(pair_value(1, 2, clean=clean))
        padding_arg = draw(padding_value(hi=2, clean=clean))
    output_padding_arg = draw(weighted((6, st.just(0)), (3 if not aim else 0,
                                                        pair_value(0, 2, minimum=0))))
    mode_arg = draw(padding_mode_args(clean))
    problems = Problems()
    check_padding_mode(problems, fn, mode_arg, transposed=True)
    parsed = conv_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                        dilation_arg, layout_arg, transposed=True,
                        output_padding_arg=output_padding_arg)
    out, shape, compare = out_and_comparison(
        draw, problems, fn, parsed, x, weight, bias, groups, stride_arg, dilation_arg,
        layout_arg, algorithm_arg, clean, winograd_input_grad_bound)

    def expected():
        # The input gradient of the conv2d from (C_out, OH, OW) images to x's shape, plus bias.
        p = parsed
        x4 = four_d(x, p["batched"])
        image = np.zeros((p["n"], p["cout"]) + p["out_hw"] if p["layout"] == "NCHW"
                         else (p["n"],) + p["out_hw"] + (p["cout"],), p["dtype"])
        grad_image = oracle_conv2d_backward(x4, image, np.array(weight), p["stride"],
                                            p["padding"], p["dilation"], p["groups"],
                                            p["layout"])[0]
        if bias is not None:
            grad_image = grad_image + (np.array(bias)[:, None, None] if p["layout"] == "NCHW"
                                       else np.array(bias))
        return grad_image if p["batched"] else grad_image[0]

    kwargs = with_padding_mode(with_algorithm(dict(
        stride=stride_arg, padding=padding_arg, output_padding=output_padding_arg,
        groups=groups, dilation=dilation_arg, layout=layout_arg), algorithm_arg), mode_arg)
    if out is not None:
        kwargs["out"] = out
    errors, may_return = settle(problems, [x, weight, bias], shape)
    return Case(f"conv_transpose2d(x: {np.shape(x)} {dtype_of(x)}, weight: {np.shape(weight)}"
                f" {dtype_of(weight)}, bias: {np.shape(bias) if bias is not None else None}, "
                f"**{kwargs!r})",
                lambda: fastconv.conv_transpose2d(x, weight, bias, **kwargs), errors,
                expected if may_return else None, compare, (x, weight, bias))


# ================================================================== Conv2D
@st.composite
def conv2d_layer_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    layout_arg = draw(layout_args(clean))
    layout = parse_layout(layout_arg) or "NCHW"
    g = draw(weighted((6, st.just(1)), (3, st.integers(2, 3))))
    bad = 0 if clean else 1
    in_arg = draw(weighted((10, st.integers(1, 3).map(lambda v: v * g)), (bad, BAD_SCALARS)))
    out_arg = draw(weighted((10, st.integers(1, 3).map(lambda v: v * g)),
                            (bad, st.just(g + 1) if g > 1 else BAD_SCALARS)))
    groups_arg = draw(weighted((10, st.just(g)), (bad, BAD_SCALARS)))
    algorithm_arg = draw(algorithm_args(clean))
    aim = draw(winograd_aim(algorithm_arg))
    kernel_arg = draw(st.sampled_from([3, (3, 3), [3, 3]]) if aim
                      else pair_value(1, 3, clean=clean))
    stride_arg = draw(UNIT_PAIRS if aim else pair_value(1, 2, clean=clean))
    dilation_arg = draw(UNIT_PAIRS if aim else pair_value(1, 2, clean=clean))
    padding_arg = draw(padding_value(hi=3 if aim else 2, strings=True, clean=clean))
    use_bias = draw(st.booleans())
    dtype_arg = draw(weighted((10, st.sampled_from([np.float32, np.float64, "float32"])),
                              (bad, st.sampled_from([np.float16, np.int32, "complex64"]))))
    cap = draw(weighted((8, st.none()), (2 * bad, st.integers(1, 4096)), (1, st.just(1 << 30)),
                        (bad, BAD_SCALARS.filter(lambda v: v is not None))))
    mode_arg = draw(padding_mode_args(clean))

    fn = "Conv2D"
    problems = Problems()
    layout = check_layout(problems, fn, layout_arg)
    mode = check_padding_mode(problems, fn, mode_arg)
    for name, value in (("in_channels", in_arg), ("out_channels", out_arg),
                        ("groups", groups_arg)):
        if not (is_int(value) and value >= 1):
            problems.add(ValueError, rf"^{fn}: {name}")
    if not problems and (in_arg % groups_arg or out_arg % groups_arg):
        problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
    kernel, stride, padding, dilation = check_geometry_args(
        problems, fn, kernel_arg, stride_arg, padding_arg, dilation_arg, conv_strings=True)
    padding = resolve_strings(problems, fn, padding, kernel, stride, dilation, None)
    dtype = np.dtype(dtype_arg)
    if dtype not in FLOATS:
        problems.add(TypeError, rf"^{fn}: dtype")
    if cap is not None and not (is_int(cap) and cap >= 1):
        problems.add(ValueError, rf"^{fn}: max_workspace_bytes")
    algorithm = check_algorithm(problems, fn, algorithm_arg)
    if algorithm == "winograd" and is_int(cap) and cap >= 1:
        # A capped layer runs GEMM; asking it for Winograd is an error (docs/spec.md §5).
        problems.add(ValueError, rf"^{fn}: algorithm='winograd'.*max_workspace_bytes")
        if is_int(groups_arg) and is_int(in_arg):  # the geometry is checked first
            problems.extend(winograd_blockers(fn, kernel, stride, dilation, groups_arg, in_arg))
    if not problems:
        # The weight (C_out, C_in/groups, kh, kw) is allocated by the constructor.
        weight_size = out_arg * (in_arg // groups_arg) * kernel[0] * kernel[1]
        if weight_size * dtype.itemsize >= HUGE_BYTES:
            problems.extend(HUGE_ERRORS)
            if algorithm == "winograd":  # refused before the weight is allocated
                problems.extend(winograd_blockers(fn, kernel, stride, dilation, groups_arg,
                                                  in_arg))
        elif weight_size * dtype.itemsize >= SMALL_BYTES:
            reject()
    kwargs = with_padding_mode(with_algorithm(dict(
        stride=stride_arg, padding=padding_arg, dilation=dilation_arg, groups=groups_arg,
        bias=use_bias, layout=layout_arg, dtype=dtype_arg, seed=draw(st.integers(0, 9)),
        max_workspace_bytes=cap), algorithm_arg), mode_arg)
    text = f"Conv2D({in_arg!r}, {out_arg!r}, {kernel_arg!r}, **{kwargs!r})"
    if problems:
        return Case(text, lambda: fastconv.Conv2D(in_arg, out_arg, kernel_arg, **kwargs),
                    problems)

    # A valid layer: draw inputs for a forward and two backward calls.
    # Winograd where it cannot serve: refused on construction or, at the latest, on forward
    # (with the forward's own checks as alternatives).
    refused = (winograd_blockers(r"Conv2D(\.forward)?", kernel, stride, dilation, groups_arg,
                                 in_arg) if algorithm == "winograd" else [])
    # Winograd may run (a capped layer runs GEMM): forward and input gradient within its
    # bound, the weight and bias gradients exact.
    winograd = cap is None and may_run_winograd(algorithm, kernel, stride, dilation,
                                                groups_arg, in_arg)
    side = 13 if aim else 6
    n, h, w = draw(st.integers(0, 2)), draw(st.integers(0, side)), draw(st.integers(0, side))
    channels = in_arg + draw(weighted((12, st.just(0)), (bad, st.just(1))))
    xdtype = draw(weighted((12, st.just(dtype)), (bad, dtype_values())))
    x = draw(image_array(layout, n, channels, h, w, xdtype, draw(ndims(clean)), clean))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    forward_fn = r"^Conv2D(\.forward)?: "
    xdtype = check_float(problems, "Conv2D.forward", "input", x)
    if xdtype in FLOATS and xdtype != dtype:
        problems.add(TypeError, r"^Conv2D.forward: input has dtype \S+ but weight has dtype")
    xshape = np.shape(x)
    if len(xshape) not in (3, 4):
        problems.add(ValueError, r"^Conv2D.forward: expected input of shape")
    shape = None
    allowed = []
    if cap is not None and cap < 1 << 20:
        allowed.append((ValueError, r"^Conv2D: max_workspace_bytes=\d+ is smaller"))
    if not problems:
        x4 = xshape if len(xshape) == 4 else (1,) + xshape
        n4, c4, h4, w4 = x4 if layout == "NCHW" else (x4[0], x4[3], x4[1], x4[2])
        if c4 != in_arg:
            problems.add(ValueError, rf"{forward_fn}expected input with \d+ channels")
        padding = resolve_strings(problems, fn, padding, kernel, stride, dilation, (h4, w4))
        out_hw = window(problems, fn, (h4, w4), kernel, stride, padding, dilation)
        if out_hw is not None:
            check_mode_fits(problems, fn, mode, padding, (h4, w4))
        if not problems:
            shape4 = (n4, out_arg) + out_hw if layout == "NCHW" else (n4,) + out_hw + (out_arg,)
            shape = shape4 if len(xshape) == 4 else shape4[1:]
            kh, kw = kernel
            if max(out_hw[0] * out_hw[1], in_arg // groups_arg * kh * kw) > INT_MAX:
                # Conv2D does not check the BLAS range yet (see test_limits): an empty
                # batch returns an empty result, anything else cannot be allocated.
                allowed.append((ValueError, r"exceeds the BLAS int range"))
            check_sizes(problems, shape, dtype, [x])
            allowed += workspace_allowance(out_hw[1], c4 * kh * kw, dtype)
            allowed += sizes_allowance(shape, dtype)
    out = (draw(out_buffer(shape, dtype, [x], clean=clean))
           if shape is not None and not problems else None)
    if out is not None:
        check_out(problems, "Conv2D.forward", out, shape, dtype, [x])
    grad = None
    if shape is not None and not problems:
        gshape = shape if draw(st.integers(0, 10)) else tuple(shape[:-1]) + (shape[-1] + 1,)
        # an empty result NumPy cannot describe (the forward refuses it): no gradient
        grad = None if sizes_allowance(gshape, dtype) else fill(rng, gshape, dtype)

    def call():
        layer = fastconv.Conv2D(in_arg, out_arg, kernel_arg, **kwargs)
        assert layer.weight.dtype == dtype and layer.weight_grad.dtype == dtype
        # Small integer weights keep every sum exact.
        layer.weight[...] = fill(rng, layer.weight.shape, dtype)
        if layer.bias is not None:
            layer.bias[...] = fill(rng, layer.bias.shape, dtype)
        y = layer(x) if out is None else layer.forward(x, out=out)
        if grad is None:
            return layer, y, None
        first = layer.backward(grad)
        second = layer.backward(grad)  # gradients accumulate, the input gradient does not
        np.testing.assert_array_equal(first, second)
        return layer, y, first

    def expected():
        return None  # computed from the layer's weights in compare()

    def compare(result, _):
        layer, y, grad_x = result
        p_out = out_hw
        x4 = four_d(x, len(xshape) == 4)
        bias = layer.bias
        if math.prod(shape) == 0:
            want = np.zeros(shape, dtype)
        else:
            want = oracle_conv2d(x4, layer.weight, bias, stride, padding, dilation, groups_arg,
                                 layout, p_out, mode)
            want = want if len(xshape) == 4 else want[0]
        if out is not None:
            assert y is out
        batched = len(xshape) == 4
        if winograd:
            winograd_check(lambda: mode_bound(winograd_bound, mode)(
                x4, layer.weight, padding, p_out, groups_arg, layout),
                dtype, bias, layout, batched)(y, want)
        else:
            assert_same(y, want)
        if grad is None:
            return
        grad4 = four_d(grad, batched)
        grads = oracle_conv2d_backward(grad4, x4, layer.weight, stride, padding, dilation,
                                       groups_arg, layout, mode)
        want = grads[0] if batched else grads[0][0]
        if winograd:
            winograd_check(lambda: mode_input_grad_bound(grad4, layer.weight, padding,
                                                         (h4, w4), groups_arg, layout, mode),
                           dtype, None, layout, batched)(grad_x, want)
        else:
            assert_same(grad_x, want)
        assert_same(layer.weight_grad, 2 * grads[1])
        if bias is not None:
            assert_same(layer.bias_grad, 2 * grads[2])

    if grad is not None and np.shape(grad) != shape:
        problems.add(ValueError, r"^Conv2D.backward: expected grad_output of shape")
    problems.extend(refused)
    errors, may_return = settle(problems, [x], shape, allowed)
    return Case(f"{text}; forward(x: {xshape} {dtype_of(x)}, out={out is not None}); "
                f"backward(grad: {None if grad is None else grad.shape})",
                call, errors, expected if may_return else None, compare, (x,))


# ================================================================== ConvGeometry
@st.composite
def conv_geometry_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    fn = "ConvGeometry"
    layout_arg = draw(layout_args(clean))
    dims = st.one_of(st.integers(0, 6), st.sampled_from([2**20, 2**40]))
    bad = 0 if clean else 1
    shape_arg = draw(weighted(
        (8, st.tuples(dims, dims, dims, dims)), (3, st.tuples(dims, dims, dims)),
        (bad, st.sampled_from([(1, 2), (1, 2, 3, 4, 5), (1, -1, 3, 3), (2.0, 1, 3, 3), 5,
                             "abc", None, [1, 3, 4, 4]]))))
    out_channels = draw(weighted((10, st.integers(1, 8)), (1, st.just(2**40)),
                                 (bad, BAD_SCALARS)))
    groups = draw(weighted((8, st.just(1)), (3, st.integers(2, 4)), (bad, BAD_SCALARS)))
    kernel_arg = draw(pair_value(1, 3, clean=clean))
    stride_arg = draw(pair_value(1, 3, clean=clean))
    dilation_arg = draw(pair_value(1, 2, clean=clean))
    padding_arg = draw(padding_value(strings=True, clean=clean))

    problems = Problems()
    layout = check_layout(problems, fn, layout_arg)
    shape = None
    if isinstance(shape_arg, (tuple, list)) and all(is_int(v) for v in shape_arg) \
            and len(shape_arg) in (3, 4) and min(shape_arg) >= 0:
        shape = tuple(shape_arg)
    else:
        problems.add(ValueError, rf"^{fn}: input_shape")
    for name, value in (("out_channels", out_channels), ("groups", groups)):
        if not (is_int(value) and value >= 1):
            problems.add(ValueError, rf"^{fn}: {name}")
    kernel, stride, padding, dilation = check_geometry_args(
        problems, fn, kernel_arg, stride_arg, padding_arg, dilation_arg, conv_strings=True)
    if layout and shape is not None:
        shape4 = shape if len(shape) == 4 else (1,) + shape
        n, c, h, w = shape4 if layout == "NCHW" else (shape4[0], shape4[3], shape4[1],
                                                      shape4[2])
        if is_int(groups) and groups >= 1 and is_int(out_channels) and out_channels >= 1:
            if c % groups or out_channels % groups:
                problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
        if c == 0:
            problems.add(ValueError, rf"^{fn}: input has 0 channels")
        padding = resolve_strings(problems, fn, padding, kernel, stride, dilation, (h, w))
        out_hw = window(problems, fn, (h, w), kernel, stride, padding, dilation)

    def call():
        geom = fastconv.ConvGeometry(shape_arg, out_channels, kernel_arg, stride_arg,
                                     padding_arg, dilation_arg, groups, layout=layout_arg)
        return (geom.output_shape, geom.gemm_shape, geom.flops,
                geom.column_bytes(np.float32), geom.column_bytes(np.float64))

    def expected():
        oh, ow = out_hw
        full = (n, out_channels, oh, ow) if layout == "NCHW" else (n, oh, ow, out_channels)
        kh, kw = kernel
        m, k, positions = out_channels // groups, c // groups * kh * kw, oh * ow
        columns = n * c * kh * kw * positions
        return (full if len(shape) == 4 else full[1:], (m, k, positions),
                2 * n * groups * m * k * positions, 4 * columns, 8 * columns)

    def compare(result, want):
        assert result == want, (result, want)

    return Case(f"ConvGeometry({shape_arg!r}, {out_channels!r}, {kernel_arg!r}, {stride_arg!r}, "
                f"{padding_arg!r}, {dilation_arg!r}, {groups!r}, layout={layout_arg!r})",
                call, problems, None if problems else expected, compare)


# ================================================================== space_to_batch family (§3)
def image_dims4(shape, layout):
    """(N, C, H, W) of a 3-D (N = 1) or 4-D shape in `layout`."""
    shape4 = tuple(shape) if len(shape) == 4 else (1,) + tuple(shape)
    return shape4 if layout == "NCHW" else (shape4[0], shape4[3], shape4[1], shape4[2])


BAD_BLOCKS = st.sampled_from([0, -1, (2, 0), (0, 1), (-2, 2), 2.0, (2, 2.0), (2, 2, 2), (3,),
                              True, None, "2"])


def block_value(clean):
    """block_size / rate: pair_value, and (not clean) a bad value more often than it draws
    one, for they are this section's first check."""
    return weighted((12, pair_value(1, 3, clean=clean)), (0 if clean else 1, BAD_BLOCKS))


def fitted_padding(sizes, block, hi=3):
    """Padding whose extra bottom/right rows make each padded size a multiple of the block,
    in one of the three padding forms."""
    @st.composite
    def strategy(draw):
        pads = []
        for size, step in zip(sizes, block):
            before, after = draw(st.integers(0, hi)), draw(st.integers(0, hi))
            pads.append((before, after + (-(size + before + after) % step)))
        (top, bottom), (left, right) = pads
        forms = [tuple(pads)]
        if top == bottom and left == right:
            forms.append((top, left))
            if top == left:
                forms.append(top)
        return draw(st.sampled_from(forms))
    return strategy()


def fitted_crops(expanded, clean, hi=3):
    """Crops ((top, bottom), (left, right)) that fit the expanded image's (H, W), or, not
    `clean`, now and then one pixel too many."""
    @st.composite
    def strategy(draw):
        pads = []
        for size in expanded:
            before = draw(st.integers(0, min(hi, size)))
            after = draw(st.integers(0, min(hi, size - before)))
            if not clean and draw(st.integers(0, 12)) == 0:
                after = size - before + 1
            pads.append((before, after))
        return tuple(pads) if draw(st.integers(0, 3)) else (pads[0][0], pads[1][0])
    return strategy()


def blocks_shape(problems, fn, dims, block, padding, layout):
    """space_to_batch's result (bh·bw·N, C, Hp/bh, Wp/bw) (in `layout`) for images of
    (N, C, H, W) padded by `padding`, or None after adding the divisibility problems."""
    n, c, h, w = dims
    ok = True
    sizes = []
    for axis, size, (before, after), step in zip(("height", "width"), (h, w), padding, block):
        padded = size + before + after
        if padded % step:
            problems.add(ValueError, rf"^{fn}: padded {axis} {size} \+ {before} \+ {after} = "
                                     rf"{padded} is not divisible by the block")
            ok = False
        sizes.append(padded // step)
    if not ok:
        return None
    return batched_shape(4, layout, n * block[0] * block[1], c, sizes[0], sizes[1])


def sizes_allowance(shape, dtype):
    """NumPy refuses to create even an empty array whose non-zero axes multiply to more
    than an int64 holds ("array is too big"): such an empty result may fail that way."""
    nonzero = math.prod(d for d in shape if d) * dtype.itemsize
    return HUGE_ERRORS if math.prod(shape) == 0 and nonzero > 2**63 - 1 else []


@st.composite
def movable_array(draw, shape, dtype, clean):
    """arrays(shape, dtype); a zero-stride view when it would be large; None when NumPy
    cannot even describe the shape (then the caller draws another)."""
    view = not clean and draw(st.integers(0, 30)) == 0
    nonzero = math.prod(d for d in shape if d)
    if max(shape, default=0) > 2**62 or nonzero * max(dtype.itemsize, 1) >= 2**62:
        return None
    if math.prod(shape) * dtype.itemsize >= SMALL_BYTES:
        return huge_array(np.random.default_rng(0), shape, dtype)
    if view and shape:
        axis = draw(st.integers(0, len(shape) - 1))
        wide = shape[:axis] + (2**48,) + shape[axis + 1:]
        if math.prod(d for d in wide if d) < 2**62:  # else NumPy cannot iterate it
            return huge_array(np.random.default_rng(0), wide, dtype)
    return draw(arrays(shape, dtype))


def space_to_batch_strategy(fn="space_to_batch"):
    """space_to_batch(x, block_size, padding) and batch_to_space_backward(grad_output,
    block_size, crops), which is the same map (4-D input only)."""
    backward = fn == "batch_to_space_backward"
    arg, pad_name = ("grad_output", "crops") if backward else ("x", "padding")

    @st.composite
    def strategy(draw):
        clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
        layout_arg = draw(layout_args(clean))
        layout = parse_layout(layout_arg) or "NCHW"
        n, c, h, w = (draw(st.integers(0, 3)), draw(st.integers(0, 4)),
                      draw(st.integers(0, 7)), draw(st.integers(0, 7)))
        dtype = draw(dtype_values(movable=True, clean=clean))
        ndim = draw(st.just(4) if backward and clean else ndims(clean))
        x = draw(image_array(layout, n, c, h, w, dtype, ndim, clean))
        block_arg = draw(block_value(clean))
        padding_arg = draw(weighted(
            (3, fitted_padding((h, w), parse_pair(block_arg) or (1, 1))),
            (1, padding_value(clean=clean))))

        problems = Problems()
        layout = check_layout(problems, fn, layout_arg)
        dtype = check_movable(problems, fn, arg, x)
        shape = np.shape(x)
        if len(shape) not in ((4,) if backward else (3, 4)):
            problems.add(ValueError, rf"^{fn}: expected {arg} of shape")
        block = parse_pair(block_arg)
        if block is None:
            problems.add(ValueError, rf"^{fn}: block_size")
        padding = parse_padding(padding_arg)
        if padding is None:
            problems.add(ValueError, rf"^{fn}: {pad_name}")
        result_shape, allowed = None, []
        if layout and len(shape) in (3, 4) and block and padding:
            # A 3-D x (one image) gives its bh·bw blocks: the result is 4-D all the same.
            result_shape = blocks_shape(problems, fn, image_dims4(shape, layout), block,
                                        padding, layout)
            if result_shape is not None:
                allowed = sizes_allowance(result_shape, dtype)
                if not check_sizes(problems, result_shape, dtype, [x]):
                    result_shape = None
        out = None
        if result_shape is not None:
            out = draw(out_buffer(result_shape, dtype, [x], clean=clean))
            check_out(problems, fn, out, result_shape, dtype, [x])

        def expected():
            if math.prod(result_shape) == 0:
                return np.zeros(result_shape, dtype)
            x4 = np.array(x) if len(shape) == 4 else np.array(x)[None]
            return reference.space_to_batch(x4, block, padding, layout)

        kwargs = dict(layout=layout_arg)
        if out is not None:
            kwargs["out"] = out
        function = getattr(fastconv, fn)
        errors, may_return = settle(problems, [x], result_shape, allowed)
        return Case(f"{fn}({arg}: {shape} {dtype_of(x)} {type(x).__name__}, {block_arg!r}, "
                    f"{padding_arg!r}, **{kwargs!r})",
                    lambda: function(x, block_arg, padding_arg, **kwargs), errors,
                    expected if may_return else None,
                    assert_into(out) if out is not None else None, (x,))
    return strategy()


BAD_SHAPES = [(1, 2), (1, 2, 3, 4, 5), (1, -1, 3, 3), (2.0, 1, 3, 3), 5, "abc", None]


def batch_to_space_strategy(fn="batch_to_space"):
    """batch_to_space(x, block_size, crops) and space_to_batch_backward(grad_output,
    input_shape, block_size, padding), which is the same map shaped as space_to_batch's
    input."""
    backward = fn == "space_to_batch_backward"
    arg, pad_name = ("grad_output", "padding") if backward else ("x", "crops")

    @st.composite
    def strategy(draw):
        clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
        bad = 0 if clean else 1
        layout_arg = draw(layout_args(clean))
        layout = parse_layout(layout_arg) or "NCHW"
        block_arg = draw(block_value(clean))
        guess = parse_pair(block_arg) or (1, 1)
        n, c = draw(st.integers(0, 3)), draw(st.integers(0, 4))
        dtype = draw(dtype_values(movable=True, clean=clean))
        input_shape = None
        if backward:
            h, w = draw(st.integers(0, 7)), draw(st.integers(0, 7))
            padding_arg = draw(weighted((3, fitted_padding((h, w), guess)),
                                        (1, padding_value(clean=clean))))
            input_shape = draw(weighted(
                (10, st.sampled_from([4, 3]).map(
                    lambda nd: batched_shape(nd, layout, n, c, h, w))),
                (1, st.just(batched_shape(4, layout, n, c, h, w)).map(list)),
                (bad, st.sampled_from(BAD_SHAPES))))
            pads = parse_padding(padding_arg) or ((0, 0), (0, 0))
            oh = (h + sum(pads[0])) // guess[0]
            ow = (w + sum(pads[1])) // guess[1]
        else:
            oh, ow = draw(st.integers(0, 4)), draw(st.integers(0, 4))
            padding_arg = draw(weighted((3, fitted_crops((oh * guess[0], ow * guess[1]), clean)),
                                        (1, padding_value(clean=clean))))
        m = n * guess[0] * guess[1]
        change = "none" if clean else draw(st.sampled_from(
            ["none"] * 12 + ["batch", "height", "ndim"]))
        if change == "batch":
            m += draw(st.sampled_from([-1, 1])) if m else 1
        if change == "height":
            oh += 1
        gshape = batched_shape(4, layout, m, c, oh, ow)
        if change == "ndim":
            gshape = draw(st.sampled_from([gshape[1:], (1,) + gshape]))
        x = draw(movable_array(gshape, dtype, clean))
        if x is None:  # the shape NumPy cannot describe: a small one that does not fit
            x = draw(arrays(batched_shape(4, layout, 1, c, 1, 1), dtype))

        problems = Problems()
        layout = check_layout(problems, fn, layout_arg)
        dtype = check_movable(problems, fn, arg, x)
        xshape = np.shape(x)
        block = parse_pair(block_arg)
        if block is None:
            problems.add(ValueError, rf"^{fn}: block_size")
        padding = parse_padding(padding_arg)
        if padding is None:
            problems.add(ValueError, rf"^{fn}: {pad_name}")
        result_shape, allowed = None, []
        if backward:
            shape = None
            if (isinstance(input_shape, (tuple, list)) and len(input_shape) in (3, 4)
                    and all(is_int(v) and v >= 0 for v in input_shape)):
                shape = tuple(int(v) for v in input_shape)
            else:
                problems.add(ValueError, rf"^{fn}: input_shape")
            if layout and shape and block and padding:
                want = blocks_shape(problems, fn, image_dims4(shape, layout), block, padding,
                                    layout)
                if want is not None and xshape != want:
                    problems.add(ValueError, rf"^{fn}: grad_output must have shape "
                                             rf"{re.escape(str(want))}")
                elif want is not None:
                    result_shape = shape
        else:
            if len(xshape) != 4:
                problems.add(ValueError, rf"^{fn}: expected x of shape")
            elif layout and block and padding:
                total, channels, size_h, size_w = image_dims4(xshape, layout)
                bh, bw = block
                if total % (bh * bw):
                    problems.add(ValueError, rf"^{fn}: x batch {total} \(shape .*\) is not "
                                             rf"divisible by bh·bw = {bh * bw}")
                sizes = []
                for axis, (before, after), size, step in zip(
                        ("height", "width"), padding, (size_h, size_w), block):
                    if before + after > size * step:
                        problems.add(ValueError, rf"^{fn}: crops {before} \+ {after} = "
                                                 rf"{before + after} in {axis} exceed")
                    sizes.append(size * step - before - after)
                if not problems:
                    result_shape = batched_shape(4, layout, total // (bh * bw), channels,
                                                 sizes[0], sizes[1])
        if result_shape is not None:
            allowed = sizes_allowance(result_shape, dtype)
            if not check_sizes(problems, result_shape, dtype, [x]):
                result_shape = None
        out = None
        if result_shape is not None:
            out = draw(out_buffer(result_shape, dtype, [x], clean=clean))
            check_out(problems, fn, out, result_shape, dtype, [x])

        def expected():
            if math.prod(result_shape) == 0:
                return np.zeros(result_shape, dtype)
            image = reference.batch_to_space(np.array(x), block, padding, layout)
            return image if len(result_shape) == 4 else image[0]

        kwargs = dict(layout=layout_arg)
        if out is not None:
            kwargs["out"] = out
        function = getattr(fastconv, fn)
        call_args = (x, input_shape, block_arg, padding_arg) if backward else \
            (x, block_arg, padding_arg)
        errors, may_return = settle(problems, [x], result_shape, allowed)
        return Case(f"{fn}({arg}: {xshape} {dtype_of(x)} {type(x).__name__}, "
                    f"{', '.join(map(repr, call_args[1:]))}, **{kwargs!r})",
                    lambda: function(*call_args, **kwargs), errors,
                    expected if may_return else None,
                    assert_into(out) if out is not None else None, (x,))
    return strategy()


# ================================================================== atrous_conv2d
def atrous_intermediate_bytes(p, itemsize):
    """Bytes of atrous_conv2d's documented route (space_to_batch by the rate → dense conv2d
    → batch_to_space): the larger of the phase images and the dense results, counting only
    non-zero axes (NumPy refuses shapes past int64 even when empty)."""
    (rh, rw), ((top, bottom), (left, right)) = p["dilation"], p["padding"]
    padded_h, padded_w = p["h"] + top + bottom, p["w"] + left + right
    ph, pw = -(-padded_h // rh), -(-padded_w // rw)
    if ph * rh * pw * rw > 2 * padded_h * padded_w:
        return 0  # a rate about as large as the image: atrous_conv2d runs conv2d(dilation)
    kh, kw = p["kernel"]
    phases = (p["n"] * rh * rw, p["c"], ph, pw)
    dense = (p["n"] * rh * rw, p["cout"], ph - kh + 1, pw - kw + 1)
    return max(math.prod(d for d in shape if d) for shape in (phases, dense)) * itemsize


@st.composite
def atrous_conv2d_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    fn = "atrous_conv2d"
    layout_arg, x, weight, bias, _ = draw(conv_arrays(clean, grouped=False, giant=True))
    rate_arg = draw(block_value(clean))
    padding_arg = draw(padding_value(strings=True, clean=clean))
    problems = Problems()
    # docs/spec.md §3: equal to conv2d(x, weight, bias, padding=padding, dilation=rate), so the
    # conv2d model with stride 1 and groups 1 decides; the argument is called `rate`. The
    # bias is modelled apart: conv_model stops at a bias problem before the geometry.
    parsed = conv_model(problems, fn, x, weight, None, 1, 1, padding_arg, rate_arg, layout_arg)
    problems = Problems((kind, pattern.replace(f"^{fn}: dilation", f"^{fn}: rate"))
                        for kind, pattern in problems)
    if bias is not None:
        dtypes = {check_float(problems, fn, "bias", bias), dtype_of(x), dtype_of(weight)}
        if len(dtypes) > 1:
            problems.add(TypeError, rf"^{fn}: \w+ has dtype \S+ but \w+ has dtype")
        wshape = np.shape(weight)
        if len(wshape) == 4 and parse_layout(layout_arg):
            cout = wshape[0] if parse_layout(layout_arg) == "NCHW" else wshape[3]
            if np.shape(bias) != (cout,):
                problems.add(ValueError, rf"^{fn}: expected bias of shape")
                parsed = None
    rate = parse_pair(rate_arg)
    if rate is not None and max(rate) > LIMIT:
        problems.add(ValueError, rf"^{fn}: rate")
    huge_input = any(is_huge(a) for a in (x, weight, bias))
    out, shape = None, None
    if parsed is not None:
        shape = output_shape(parsed, parsed["cout"])
        if check_sizes(problems, shape, parsed["dtype"], [x, weight]):
            if parsed["dilation"] != (1, 1) and not problems and not huge_input and \
                    atrous_intermediate_bytes(parsed, parsed["dtype"].itemsize) >= SMALL_BYTES:
                # 64 MiB or more would be allocated for real: too slow for a fuzz run
                reject()
            out = draw(out_buffer(shape, parsed["dtype"], [x, weight, bias], clean=clean))
            check_out(problems, fn, out, shape, parsed["dtype"], [x, weight, bias])

    def expected():
        p = parsed
        if math.prod(shape) == 0:
            return np.zeros(shape, p["dtype"])
        y = oracle_conv2d(four_d(x, p["batched"]), np.array(weight),
                          None if bias is None else np.array(bias), (1, 1), p["padding"],
                          p["dilation"], 1, p["layout"], p["out_hw"])
        return y if p["batched"] else y[0]

    kwargs = dict(padding=padding_arg, layout=layout_arg)
    if out is not None:
        kwargs["out"] = out
    errors, may_return = settle(problems, [x, weight, bias], shape)
    return Case(f"atrous_conv2d(x: {np.shape(x)} {dtype_of(x)}, weight: {np.shape(weight)} "
                f"{dtype_of(weight)}, rate={rate_arg!r}, bias: "
                f"{np.shape(bias) if bias is not None else None}, **{kwargs!r})",
                lambda: fastconv.atrous_conv2d(x, weight, rate_arg, bias, **kwargs), errors,
                expected if may_return else None,
                assert_into(out) if out is not None else None, (x, weight, bias))


# ================================================================== R-MAC (§4)
def is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_overlap(problems, fn, overlap):
    """0 < overlap < 1, a real number (not a bool)."""
    if is_real(overlap) and math.isfinite(float(overlap)) and 0 < float(overlap) < 1:
        return float(overlap)
    problems.add(ValueError, rf"^{fn}: overlap must be a number with 0 < overlap < 1")
    return None


def overlap_values(clean=False):
    good = weighted((10, st.floats(0.01, 0.99)), (3, st.just(0.4)),
                    (1, st.sampled_from([np.float32(0.4), np.float64(0.25), 0.5])))
    return weighted((20, good), (0 if clean else 1, st.sampled_from(
        [0, 1, 0.0, 1.0, -0.1, 1.5, float("nan"), float("inf"), "0.4", None, True, 1j])))


def region_count(height, width, scales, overlap):
    """Regions per image (docs/spec.md §4): levels l = 1..L with a side 2m//(l+1) >= 1, i.e.
    L = min(scales, 2m - 1), each with (l + step)·l positions (step along the long side)."""
    levels = min(int(scales), 2 * min(height, width) - 1)
    step = reference.rmac_step(height, width, overlap)
    return levels, sum_of_squares(levels) + step * levels * (levels + 1) // 2


def sum_of_squares(k):
    return k * (k + 1) * (2 * k + 1) // 6


@st.composite
def with_nans(draw, x):
    """Now and then a NaN in a float array: max-pooling keeps it, as np.max does."""
    if (draw(st.integers(0, 9)) == 0 and isinstance(x, np.ndarray) and x.dtype.kind == "f"
            and x.size and x.flags.writeable):
        x[tuple(draw(st.integers(0, d - 1)) for d in x.shape)] = np.nan
    return x


@st.composite
def feature_map_dims(draw, empty_maps=True):
    """(N, C, H, W): small, with many channels now and then (the NHWC kernels' blocks of 16
    channels), or large enough for the threaded kernels."""
    if draw(st.integers(0, 7)) == 0:
        return (draw(st.integers(1, 2)), draw(st.integers(16, 48)), draw(st.integers(16, 40)),
                draw(st.integers(16, 40)))
    side = weighted((10, st.integers(1, 9)), (1 if empty_maps else 0, st.just(0)))
    return (draw(st.integers(0, 3)), draw(weighted((10, st.integers(0, 5)),
                                                   (1, st.integers(15, 40)))),
            draw(side), draw(side))


def no_room_for_view(*dims):
    """Whether a 2**48 axis in place of one of `dims` could take the array's size (in bytes,
    16 at most an element) past int64: then image_array must not draw that view."""
    return math.prod(d for d in dims if d) * 16 >= 2**15


def descriptor_check(dtype, regions, channels, size, eps, normalize):
    """Compare an R-MAC descriptor with the float64 oracle (want, total): `total` the sum of
    the `regions` region vectors (each L2-normalised: entries <= 1), `want` the result.

    A sum of R such vectors computed in another order differs by at most about
    u·R·(R + C + D) (u: the dtype's epsilon; the norms and the projection add C + D), and
    the final normalisation divides that by ‖total‖ + eps. The bound is what the data
    allow: a sum that cancels to nearly nothing has no reliable digits, and then so be it."""
    def compare(result, expected):
        if isinstance(expected, np.ndarray):  # empty vectors: zeros (or NaN), exactly
            assert_same(result, expected)
            return
        want, total = expected
        assert isinstance(result, np.ndarray), type(result)
        assert result.shape == want.shape, (result.shape, want.shape)
        assert result.dtype == dtype, (result.dtype, dtype)
        u = float(np.finfo(dtype).eps)
        tol = u * regions * (regions + channels + size + 8)
        if normalize:
            norms = np.sqrt((total * total).sum(axis=-1, keepdims=True))
            tol = 2 * tol / (norms + eps) + u * (channels + size + 8)
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(result), nan, err_msg="NaN where the oracle")
        excess = np.where(nan, 0, np.abs(result.astype(np.float64) - want) - tol)
        assert (excess <= 0).all(), (f"off by more than the rounding bound by "
                                     f"{excess.max():.3g}:\n{result}\nwant\n{want}")
    return compare


@st.composite
def rmac_regions_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    bad = 0 if clean else 1
    fn = "rmac_regions"
    layout_arg = draw(layout_args(clean))
    layout = parse_layout(layout_arg) or "NCHW"
    dim = weighted((12, st.integers(1, 12)), (1, st.just(0)),
                   (1, st.sampled_from([2**20, 2**40])))
    n, c, h, w = (draw(weighted((6, st.integers(1, 3)), (1, st.just(0)), (1, st.just(2**40)))),
                  draw(dim), draw(dim), draw(dim))
    form = draw(weighted((8, st.just("hw")), (6, st.just("shape")), (2, st.just("list")),
                         (3, st.just("array")), (bad, st.just("bad"))))
    if form == "hw":
        shape_arg = (h, w) if draw(st.booleans()) else (np.int64(h), w)
    elif form in ("shape", "list"):
        shape_arg = batched_shape(draw(st.sampled_from([4, 3])), layout, n, c, h, w)
        shape_arg = list(shape_arg) if form == "list" else shape_arg
    elif form == "array":  # only its shape is read: any dtype, order, or a zero-stride view
        small = st.integers(0, 9)
        dims = batched_shape(draw(st.sampled_from([4, 3])), layout, draw(st.integers(0, 2)),
                             draw(small), draw(small), draw(small))
        dims = dims[-2:] if draw(st.integers(0, 3)) == 0 else dims
        shape_arg = draw(movable_array(dims, draw(dtype_values(movable=True)), clean))
    else:
        shape_arg = draw(st.sampled_from([(7,), (1, 2, 3, 4, 5), (7, -1), (7, 7.5), 7, None,
                                          "ab", np.zeros(5), [[1, 2], [3, 4]]]))
    scales_arg = draw(weighted((10, int_value(1, 4)), (bad, BAD_SCALARS)))
    overlap_arg = draw(overlap_values(clean))

    problems = Problems()
    layout = check_layout(problems, fn, layout_arg)
    if not (is_int(scales_arg) and scales_arg >= 1):
        problems.add(ValueError, rf"^{fn}: scales")
    check_overlap(problems, fn, overlap_arg)  # adds its problems; the value is not needed
    # Anything with a shape is an array, only its shape is used; else a shape (H, W),
    # (C, H, W) or (N, C, H, W) (layout's order), ints >= 0.
    if hasattr(shape_arg, "shape") and not isinstance(shape_arg, (tuple, list)):
        dims, name = tuple(shape_arg.shape), r"x\.shape"
    else:
        dims, name = shape_arg, "shape"
    if not (isinstance(dims, (tuple, list)) and len(dims) in (2, 3, 4)
            and all(is_int(d) and d >= 0 for d in dims)):
        problems.add(ValueError, rf"^{fn}: {name}")
        dims = None
    rows = None
    if not problems:
        if len(dims) == 2:
            batch, channels, height, width = 1, 1, int(dims[0]), int(dims[1])
        else:
            batch, channels, height, width = (int(d) for d in image_dims4(dims, layout))
        if 0 in (batch, channels, height, width):
            rows = 0  # Caffe2 returns nothing for an empty input
        else:
            levels, count = region_count(height, width, scales_arg, overlap_arg)
            rows = batch * count
            if rows * 5 * 4 >= HUGE_BYTES:
                problems.extend(HUGE_ERRORS)
            elif rows * 5 * 4 >= SMALL_BYTES or count > 20_000:
                reject()

    def expected():
        if rows == 0:
            return np.zeros((0, 5), np.float32)
        boxes = np.array(reference.rmac_regions(height, width, levels, overlap_arg),
                         dtype=np.int64).reshape(-1, 4)
        index = np.repeat(np.arange(batch, dtype=np.int64), len(boxes))[:, None]
        return np.concatenate([index, np.tile(boxes, (batch, 1))], axis=1).astype(np.float32)

    given = (f"<array {shape_arg.shape} {shape_arg.dtype}>" if hasattr(shape_arg, "shape")
             else repr(shape_arg))
    text = (f"rmac_regions({given}, scales={scales_arg!r}, overlap={overlap_arg!r}, "
            f"layout={layout_arg!r})")
    return Case(text, lambda: fastconv.rmac_regions(shape_arg, scales_arg, overlap_arg,
                                                    layout=layout_arg),
                problems, None if problems else expected)


@st.composite
def rois_value(draw, batch, height, width, clean):
    """(R, 5) rows [batch_index, x1, y1, x2, y2] inside a batch of H×W maps, in some real
    dtype or a list; not `clean`: one row broken, a wrong shape, a non-real dtype."""
    count = draw(weighted((10, st.integers(0, 6)), (1, st.integers(20, 60))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if batch and height and width:
        x1, y1 = rng.integers(0, width, count), rng.integers(0, height, count)
        rows = np.stack([rng.integers(0, batch, count), x1, y1, rng.integers(x1, width),
                         rng.integers(y1, height)], axis=1)
    else:  # no box fits in an empty map
        rows = rng.integers(0, 3, (count, 5))
    values = rows.astype(np.float64)
    bad = 0 if clean else 1
    dtype = np.dtype(draw(weighted(
        (8, st.sampled_from([np.int64, np.float32, np.float64, np.int32])),
        (2, st.sampled_from([np.uint8, np.int16, np.uint64, np.float16, ">i4", ">f8"])),
        (bad, st.sampled_from([bool, np.complex128, object])))))
    change = "none" if clean or not count else draw(st.sampled_from(
        ["none"] * 10 + ["fraction", "nan", "inf", "batch", "negative", "x_order", "y_order",
                        "x_out", "y_out", "x_negative", "shape"]))
    row = draw(st.integers(0, count - 1)) if count else 0
    column = draw(st.integers(0, 4))
    if change in ("fraction", "nan", "inf") and dtype.kind != "f":
        dtype = np.dtype(np.float64)
    if change not in ("none", "shape"):
        edits = {"fraction": (column, values[row, column] + 0.5), "nan": (column, np.nan),
                 "inf": (column, np.inf), "batch": (0, batch), "negative": (0, -1),
                 "x_order": (3, values[row, 1] - 1), "y_order": (4, values[row, 2] - 1),
                 "x_out": (3, width), "y_out": (4, height), "x_negative": (1, -1)}
        values[row, edits[change][0]] = edits[change][1]
    with np.errstate(all="ignore"):
        rois = values.astype(dtype)  # what a negative becomes in uint8 is what the model sees
    if change == "shape":
        rois = draw(st.sampled_from([rois[:, :4], rois.reshape(-1), rois[..., None],
                                     np.zeros((0,), dtype)]))
    return rois.tolist() if draw(st.integers(0, 5)) == 0 else rois


def rois_problems(problems, fn, rois, batch, height, width, batched):
    """docs/spec.md §4 boxes: whole numbers, 0 <= batch_index < N (0 for one image), x1 <= x2,
    y1 <= y2, inside the map. Every faulty row is acceptable in the message."""
    values = rois.astype(np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values).all(axis=1) & (values == np.floor(values)).all(axis=1)
    index, x1, y1, x2, y2 = values.T
    images = r"x is one image, so 0" if not batched else f"the batch of x has {batch}"
    faults = [
        (~whole, "batch index and corners must be whole numbers"),
        ((index < 0) | (index >= batch), rf"batch index \S+ out of range \({images}\)"),
        (x2 < x1, r"x2 = \S+ < x1 = \S+ \(an empty box\)"),
        (y2 < y1, r"y2 = \S+ < y1 = \S+ \(an empty box\)"),
        ((x1 < 0) | (x2 >= width) | (y1 < 0) | (y2 >= height),
         rf"box outside the {height}×{width} feature map; expected 0 <= x1 <= x2 < {width} "
         rf"and 0 <= y1 <= y2 < {height}"),
    ]
    for mask, clause in faults:
        rows = np.flatnonzero(mask)
        if rows.size:
            problems.add(ValueError, rf"^{fn}: rois row ({'|'.join(map(str, rows))}) = "
                                     rf"\[[^\]]*\]: {clause}")


@st.composite
def roi_max_pool_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    fn = "roi_max_pool"
    layout_arg = draw(layout_args(clean))
    layout = parse_layout(layout_arg) or "NCHW"
    n, c, h, w = draw(feature_map_dims())
    ndim = draw(ndims(clean))
    x = draw(with_nans(draw(image_array(layout, n, c, h, w, draw(dtype_values(clean=clean)),
                                        ndim, clean or no_room_for_view(n, c, h, w)))))
    rois = draw(rois_value(n if ndim == 4 else 1, h, w, clean))

    problems = Problems()
    layout = check_layout(problems, fn, layout_arg)
    dtype = check_float(problems, fn, "x", x)
    xshape = np.shape(x)
    if len(xshape) not in (3, 4):
        problems.add(ValueError, rf"^{fn}: expected x of shape")
    boxes = np.asarray(rois)
    rdtype = native(boxes.dtype)
    if rdtype == np.dtype(object):
        problems.add(TypeError, rf"^{fn}: rois has unsupported dtype object")
    elif rdtype.kind not in "fiu":
        problems.add(TypeError, rf"^{fn}: rois must be a float or integer array, got dtype "
                                rf"{re.escape(str(rdtype))}")
    elif boxes.ndim != 2 or boxes.shape[1] != 5:
        problems.add(ValueError, rf"^{fn}: rois must have shape \(R, 5\), rows \[batch_index, "
                                 rf"x1, y1, x2, y2\], got shape {re.escape(str(boxes.shape))}")
    result_shape = None
    if layout and len(xshape) in (3, 4) and not problems:
        batch, channels, height, width = image_dims4(xshape, layout)
        rois_problems(problems, fn, boxes, batch, height, width, len(xshape) == 4)
        result_shape = (boxes.shape[0], channels)
        if not check_sizes(problems, result_shape, dtype, [x]):
            result_shape = None

    def expected():
        if math.prod(result_shape) == 0:
            return np.zeros(result_shape, dtype)
        x4 = four_d(x, len(xshape) == 4)
        return reference.roi_max_pool(x4 if layout == "NCHW" else x4.transpose(0, 3, 1, 2),
                                      boxes)

    errors, may_return = settle(problems, [x], result_shape)
    return Case(f"roi_max_pool(x: {xshape} {dtype_of(x)}, rois: {type(rois).__name__} "
                f"{boxes.shape} {boxes.dtype} {boxes.tolist()!r:.300}, layout={layout_arg!r})",
                lambda: fastconv.roi_max_pool(x, rois, layout=layout_arg), errors,
                expected if may_return else None, None, (x, rois))


@st.composite
def whiten_value(draw, channels, dtype, clean):
    """None, or (mean (C,), P (D, C)) of x's dtype (random normal values, so no projection
    cancels exactly), or one of the specification's bad forms."""
    bad_forms = ["not_pair", "mean_shape", "p_shape", "p_1d", "dtype", "object", "list"]
    kind = draw(weighted((8, st.just("none")), (4, st.just("ok")),
                         (0 if clean else 1, st.sampled_from(bad_forms))))
    if kind == "none":
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = dtype if dtype in FLOATS else np.dtype(np.float64)
    size = draw(st.integers(1, 4))
    mean = rng.standard_normal(channels).astype(dtype)
    projection = rng.standard_normal((size, channels)).astype(dtype)
    if kind == "not_pair":
        return draw(st.sampled_from([projection, (mean,), (mean, projection, projection)]))
    if kind == "mean_shape":
        mean = np.zeros(channels + 1, dtype)
    if kind == "p_shape":
        projection = np.zeros((size, channels + 1), dtype)
    if kind == "p_1d":
        projection = np.zeros(channels, dtype)
    if kind == "dtype":
        other = FLOATS[1] if dtype == FLOATS[0] else FLOATS[0]
        if draw(st.booleans()):
            mean = mean.astype(other)
        else:
            projection = projection.astype(other)
    if kind == "object":
        mean = mean.astype(object)
    if kind == "list":
        return [mean.tolist(), projection.tolist()]
    return (mean, projection)


DEFAULT = object()  # an argument left out of the call


@st.composite
def rmac_cases(draw):
    clean = draw(st.integers(0, 3)) > 0  # 3 in 4 calls draw no deliberately bad argument
    bad = 0 if clean else 1
    fn = "rmac"
    layout_arg = draw(layout_args(clean))
    layout = parse_layout(layout_arg) or "NCHW"
    n, c, h, w = draw(feature_map_dims())
    x = draw(with_nans(draw(image_array(layout, n, c, h, w, draw(dtype_values(clean=clean)),
                                        draw(ndims(clean)),
                                        clean or no_room_for_view(n, c, h, w)))))
    levels_arg = draw(weighted((10, int_value(1, 4)), (bad, BAD_SCALARS)))
    overlap_arg = draw(overlap_values(clean))
    eps_arg = draw(weighted((6, st.just(DEFAULT)), (4, st.sampled_from(
        [0, 0.0, 1e-3, 1.0, 1e-12, np.float32(1e-6), np.float64(1e-6)])), (bad, st.sampled_from(
            [-1e-6, -1, float("inf"), float("nan"), "1e-6", None, True, 1j]))))
    whiten = draw(whiten_value(c, dtype_of(x), clean))
    normalize = draw(weighted((10, st.sampled_from([True, False, np.bool_(False)])),
                              (bad, st.sampled_from([1, 0, "yes", None]))))

    problems = Problems()
    layout = check_layout(problems, fn, layout_arg)
    if not (is_int(levels_arg) and levels_arg >= 1):
        problems.add(ValueError, rf"^{fn}: levels")
    check_overlap(problems, fn, overlap_arg)  # adds its problems; the value is not needed
    eps = 1e-6 if eps_arg is DEFAULT else eps_arg
    if not (is_real(eps) and math.isfinite(float(eps)) and float(eps) >= 0):
        problems.add(ValueError, rf"^{fn}: eps must be a finite number >= 0")
    if not isinstance(normalize, (bool, np.bool_)):
        problems.add(ValueError, rf"^{fn}: normalize must be True or False")
    dtype = check_float(problems, fn, "x", x)
    xshape = np.shape(x)
    if len(xshape) not in (3, 4):
        problems.add(ValueError, rf"^{fn}: expected x of shape")
    result_shape, mean, projection = None, None, None
    if layout and len(xshape) in (3, 4):
        batch, channels, height, width = image_dims4(xshape, layout)
        if height == 0 or width == 0:
            problems.add(ValueError, rf"^{fn}: x has an empty {height}×{width} feature map")
        size = channels
        if whiten is not None:
            if not (isinstance(whiten, (tuple, list)) and len(whiten) == 2):
                problems.add(ValueError, rf"^{fn}: whiten must be a pair \(mean, P\)")
            else:
                mean, projection = np.asarray(whiten[0]), np.asarray(whiten[1])
                for label, array in (("mean", mean), ("P", projection)):
                    if array.dtype == object:
                        problems.add(TypeError, rf"^{fn}: whiten {label} has unsupported dtype "
                                                r"object")
                    elif native(array.dtype) != dtype:
                        problems.add(TypeError, rf"^{fn}: x has dtype {dtype} but {label} has "
                                                rf"dtype {native(array.dtype)}")
                if mean.shape != (channels,):
                    problems.add(ValueError, rf"^{fn}: whiten mean must have shape "
                                             rf"\({channels},\) for x with {channels} channels")
                if projection.ndim != 2 or projection.shape[1] != channels:
                    problems.add(ValueError, rf"^{fn}: whiten P must have shape "
                                             rf"\(D, {channels}\) for x with {channels} channels")
                else:
                    size = projection.shape[0]
        if not problems:
            result_shape = (batch, size) if len(xshape) == 4 else (size,)
            if not check_sizes(problems, result_shape, dtype, [x]):
                result_shape = None
            levels, count = region_count(height, width, levels_arg, overlap_arg)
            elements = batch * (count + 1) * channels
            if elements and elements * dtype.itemsize >= HUGE_BYTES:
                problems.extend(HUGE_ERRORS)
            elif elements * dtype.itemsize >= SMALL_BYTES or count > 5000:
                reject()

    def expected():
        if batch * channels == 0:  # no region vector, or every one of them empty
            # an empty vector whitens to D zeros, whose l2n is 0 / (0 + eps): NaN for eps 0
            nan = bool(batch) and whiten is not None and float(eps) == 0
            return np.full(result_shape, np.nan if nan else 0, dtype)
        # The oracle in float64 from the same values: the exact result to well below the
        # rounding of x's dtype, and the sum of region vectors for the error bound.
        x4 = four_d(x, len(xshape) == 4).astype(np.float64)
        pair = None if whiten is None else (mean.astype(np.float64),
                                            projection.astype(np.float64))
        results = []
        with np.errstate(invalid="ignore", divide="ignore"):
            for normalized in (bool(normalize), False):
                # Levels past 2m - 1 have no regions (reference would loop through them).
                descriptor = reference.rmac(x4, levels, overlap_arg, float(eps), whiten=pair,
                                            normalize=normalized, layout=layout)
                results.append(descriptor if len(xshape) == 4 else descriptor[0])
        return tuple(results)

    kwargs = dict(whiten=whiten, normalize=normalize, layout=layout_arg)
    if eps_arg is not DEFAULT:
        kwargs["eps"] = eps_arg
    errors, may_return = settle(problems, [x], result_shape)
    return Case(f"rmac(x: {xshape} {dtype_of(x)}, levels={levels_arg!r}, "
                f"overlap={overlap_arg!r}, **{kwargs!r:.400})",
                lambda: fastconv.rmac(x, levels_arg, overlap_arg, **kwargs), errors,
                expected if may_return else None,
                None if result_shape is None else descriptor_check(
                    dtype, count + 1, channels, result_shape[-1], float(eps), bool(normalize)),
                (x,))


# ================================================================== threads
X_THREADS = np.arange(2 * 8 * 40 * 40, dtype=np.float32).reshape(2, 8, 40, 40) % 7


@st.composite
def threads_cases(draw):
    n = draw(weighted((10, st.integers(1, 6)), (1, st.integers(1, 6).map(np.int64)),
                      (2, BAD_SCALARS), (1, st.sampled_from([-5, [2], "1"]))))
    use_context = draw(st.booleans())
    fn = "threads" if use_context else "set_num_threads"
    problems = Problems()
    if not (is_int(n) and n >= 1):
        problems.add(ValueError, rf"^{fn}: n must be an int >= 1")
    from fastconv._kernels import _openmp
    enabled = _openmp.openmp_enabled()

    def call():
        before = fastconv.get_num_threads()
        try:
            if use_context:
                with fastconv.threads(n):
                    inside = fastconv.get_num_threads()
                    cols = fastconv.im2col(X_THREADS, 3, padding=1)
            else:
                fastconv.set_num_threads(n)
                inside = fastconv.get_num_threads()
                cols = fastconv.im2col(X_THREADS, 3, padding=1)
        finally:
            after = fastconv.get_num_threads()
            fastconv.set_num_threads(before)
        # threads() restores the setting on exit; set_num_threads keeps it.
        return inside, cols, after == (before if use_context else inside)

    def expected():
        return (int(n) if enabled else 1, reference.im2col(X_THREADS, 3, padding=1), True)

    def compare(result, want):
        assert result[0] == want[0] and result[2], (result[::2], want[::2])
        assert_same(result[1], want[1])

    return Case(f"{fn}({n!r})", call, problems, None if problems else expected, compare)


# ================================================================== 1-D (docs/spec.md §6)
# conv1d, conv1d_backward, conv_transpose1d, Conv1D, and im2col / col2im with a 1-tuple
# kernel_size, modelled from docs/spec.md §6 in 1-D words; the oracles are
# fastconv.reference's 1-D loops (NLC signals, LIO weights), exact on small integers.
LAYOUTS_1D = ("NCL", "NLC")
LAYOUT_1D_ARGS = weighted((30, st.sampled_from(LAYOUTS_1D)),
                          (3, st.sampled_from(["ncl", "nlc", "Nlc"])),
                          (1, st.sampled_from(["NCHW", "NLCC", "", None, 0, b"NCL"])))


def parse_layout_1d(value, two_d_names=False):
    """'NCL' / 'NLC' in any case; with `two_d_names` (im2col's 1-D mode) also 'NCHW' /
    'NHWC' as channels-first / channels-last."""
    if not isinstance(value, str):
        return None
    upper = value.upper()
    if two_d_names:
        upper = {"NCHW": "NCL", "NHWC": "NLC"}.get(upper, upper)
    return upper if upper in LAYOUTS_1D else None


def single_value(lo, hi, minimum=1, huge=True, clean=False):
    """stride / dilation / kernel_size of a 1-D call: an int or a 1-tuple; sometimes bad."""
    small = st.integers(lo, hi)
    if clean:
        return weighted((3, small), (1, st.tuples(small)))
    scalar = int_value(lo, hi, huge)
    bad = weighted((3, BAD_SCALARS.filter(lambda v: not (is_int(v) and v >= minimum))),
                   (1, st.tuples(scalar, scalar)), (1, st.just(())),
                   (1, st.tuples(BAD_SCALARS)), (1, st.just(np.ones((1, 1), np.int64))))
    return weighted((20, scalar), (6, st.tuples(scalar)), (1, st.lists(scalar, min_size=1,
                                                                          max_size=1)),
                    (1, st.tuples(scalar).map(np.array)), (1, bad))


def parse_single(value, minimum=1):
    """int or a 1-sequence of one int >= minimum → int, else None."""
    if is_sequence(value):
        if np.ndim(value) == 1 and len(value) == 1:
            value = value[0]
        else:
            return None
    return int(value) if is_int(value) and value >= minimum else None


def padding_1d_value(strings=False, clean=False):
    """int or (before, after); for the convolutions also 'valid' / 'same'; sometimes bad."""
    small = st.integers(0, 3)
    if clean:
        options = [(3, small), (2, st.tuples(small, small))]
        if strings:
            options.append((2, st.sampled_from(["same", "valid"])))
        return weighted(*options)
    scalar = int_value(0, 3, huge=False)
    options = [(16, scalar), (8, st.tuples(scalar, scalar)), (2, st.tuples(scalar)),
               (1, st.tuples(scalar, scalar, scalar)),
               (1, st.tuples(st.tuples(scalar, scalar), st.tuples(scalar, scalar))),
               (1, BAD_SCALARS.filter(lambda v: not (is_int(v) and v >= 0)))]
    if strings:
        options.append((6, st.sampled_from(["same", "valid", "SAME", "Valid", "full", ""])))
    return weighted(*options)


def parse_padding_1d(value):
    """int p → (p, p); (p,) → (p, p); (before, after) → itself; ints >= 0, else None."""
    if is_int(value):
        return (int(value), int(value)) if value >= 0 else None
    if is_sequence(value) and np.ndim(value) == 1 and len(value) in (1, 2) and all(
            is_int(v) and v >= 0 for v in value):
        pads = tuple(int(v) for v in value)
        return pads * 2 if len(pads) == 1 else pads
    return None


def same_1d(length, k, s, d):
    """TensorFlow's SAME along one axis (docs/spec.md §6)."""
    out = -(-length // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - length, 0)
    return (total // 2, total - total // 2)


def window_1d(problems, fn, length, kernel, stride, padding, dilation):
    """L_out of docs/spec.md §6, or None after adding the problems."""
    if None in (kernel, stride, padding, dilation):
        return None
    ok = True
    for name, value in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if value > LIMIT:
            problems.add(ValueError, rf"^{fn}: {name}")
            ok = False
    if not ok:
        return None
    padded = length + sum(padding)
    extent = dilation * (kernel - 1) + 1
    if padded < extent:
        problems.add(ValueError, rf"^{fn}: kernel_size={kernel} with dilation")
        return None
    return (padded - extent) // stride + 1


def dims_1d(shape3, layout):
    return tuple(shape3) if layout == "NCL" else (shape3[0], shape3[2], shape3[1])


def signal_shape(ndim, layout, n, c, length):
    dims = (n, c, length) if layout == "NCL" else (n, length, c)
    return {3: dims, 2: dims[1:], 1: (length,), 4: dims[:2] + (1,) + dims[2:]}[ndim]


SIGNAL_NDIMS = weighted((12, st.just(3)), (6, st.just(2)), (1, st.sampled_from([1, 4])))


@st.composite
def signal_array(draw, layout, n, c, length, dtype, clean=False, orders=MEMORY_ORDERS):
    """The signal in `layout` (2-D or 3-D; not clean: now and then another ndim, or a
    zero-stride view with one axis of 2**48)."""
    ndim = draw(st.sampled_from([3, 3, 2]) if clean else SIGNAL_NDIMS)
    shape = signal_shape(ndim, layout, n, c, length)
    if not clean and draw(st.integers(0, 30)) == 0:
        axis = draw(st.integers(0, len(shape) - 1))
        return huge_array(np.random.default_rng(0),
                          shape[:axis] + (2**48,) + shape[axis + 1:], dtype)
    return draw(arrays(shape, dtype, orders))


def to_nlc(array, layout):
    """A 3-D signal or column array in `layout` as NLC (C last), a copy."""
    array = np.array(array)
    return array if layout == "NLC" else np.ascontiguousarray(array.swapaxes(1, 2))


def from_nlc(array, layout):
    return array if layout == "NLC" else np.ascontiguousarray(array.swapaxes(1, 2))


def conv1d_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                 dilation_arg, layout_arg, transposed=False, output_padding_arg=0,
                 mode="zeros"):
    """docs/spec.md §6 checks of conv1d / conv1d_backward / conv_transpose1d; returns the
    parsed call, or None when a problem stops the model."""
    layout = parse_layout_1d(layout_arg)
    if layout is None:
        problems.add(ValueError, rf"^{fn}: layout")
    dtypes = [check_float(problems, fn, "input", x), check_float(problems, fn, "weight", weight)]
    if bias is not None:
        dtypes.append(check_float(problems, fn, "bias", bias))
    if len(set(dtypes)) > 1:
        problems.add(TypeError, rf"^{fn}: \w+ has dtype \S+ but \w+ has dtype")
    wshape, xshape = np.shape(weight), np.shape(x)
    if len(wshape) != 3:
        problems.add(ValueError, rf"^{fn}: expected a 3-D weight")
    if len(xshape) not in (2, 3):
        problems.add(ValueError, rf"^{fn}: expected input of shape")
    groups_ok = is_int(groups) and groups >= 1
    if not groups_ok:
        problems.add(ValueError, rf"^{fn}: groups")
    stride, dilation = parse_single(stride_arg), parse_single(dilation_arg)
    for name, value in (("stride", stride), ("dilation", dilation)):
        if value is None:
            problems.add(ValueError, rf"^{fn}: {name}")
    padding = None
    if isinstance(padding_arg, str) and not transposed:
        padding = padding_arg.lower() if padding_arg.lower() in ("same", "valid") else None
    else:
        padding = parse_padding_1d(padding_arg)
    if padding is None:
        problems.add(ValueError, rf"^{fn}: padding")
    out_pad = parse_single(output_padding_arg, minimum=0) if transposed else 0
    if out_pad is None:
        problems.add(ValueError, rf"^{fn}: output_padding")
    if not (layout and len(wshape) == 3 and len(xshape) in (2, 3) and groups_ok):
        return None
    x3 = xshape if len(xshape) == 3 else (1,) + xshape
    n, c, length = dims_1d(x3, layout)
    if transposed:
        cin, cout_g, k = wshape if layout == "NCL" else (wshape[2], wshape[1], wshape[0])
        cout = cout_g * groups
        if c != cin:
            problems.add(ValueError, rf"^{fn}: expected input with \d+ channels")
        if cin % groups:
            problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
        if min(k, cout_g, cin) < 1:
            problems.add(ValueError, rf"^{fn}: weight has an empty axis")
    else:
        cout, cin_g, k = wshape if layout == "NCL" else (wshape[2], wshape[1], wshape[0])
        if cout % groups:
            problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
        if c != cin_g * groups:
            problems.add(ValueError, rf"^{fn}: expected input with \d+ channels")
        if min(k, cin_g, cout) < 1:
            problems.add(ValueError, rf"^{fn}: weight has an empty axis")
    if bias is not None and np.shape(bias) != (cout,):
        problems.add(ValueError, rf"^{fn}: expected bias of shape")
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same" and stride is not None and dilation is not None:
        padding = same_1d(length, k, stride, dilation)
    elif padding == "same":
        padding = None
    if transposed:
        out_len = None
        if None not in (stride, dilation, padding, out_pad) and k >= 1:
            if out_pad >= max(stride, dilation):
                problems.add(ValueError, rf"^{fn}: output_padding")
            full = (length - 1) * stride + dilation * (k - 1) + out_pad + 1
            out_len = full - sum(padding)
            if out_len < 1:
                problems.add(ValueError, rf"^{fn}: padding=.* removes the whole output")
                out_len = None
            elif window_1d(problems, fn, out_len, k, stride, padding, dilation) is None:
                out_len = None
        if out_len is not None and max(out_len, length, cin // max(groups, 1) * k) > INT_MAX:
            problems.add(ValueError, r"exceeds the BLAS int range")
    else:
        out_len = window_1d(problems, fn, length, k, stride, padding, dilation) \
            if k >= 1 else None
        if out_len is not None and not check_mode_fits(problems, fn, mode, (padding,),
                                                       (length,), ("length",)):
            out_len = None
        if out_len is not None and max(out_len, length, c // groups * k) > INT_MAX:
            problems.add(ValueError, r"exceeds the BLAS int range")
    if problems or out_len is None:
        return None
    dtype = dtypes[0]
    full = (n, cout, out_len) if layout == "NCL" else (n, out_len, cout)
    shape = full if len(xshape) == 3 else full[1:]
    if not check_sizes(problems, shape, dtype, [x, weight, bias]):
        return None
    return dict(layout=layout, dtype=dtype, batched=len(xshape) == 3, stride=stride,
                padding=padding, dilation=dilation, groups=groups, out_pad=out_pad,
                shape=shape, length=length, mode=mode_name(mode))


@st.composite
def conv1d_arrays(draw, clean, transposed=False):
    """layout argument, x, weight, bias and groups of a 1-D convolution (sometimes
    mismatched when not clean)."""
    layout_arg = draw(st.sampled_from(LAYOUTS_1D) if clean else LAYOUT_1D_ARGS)
    layout = parse_layout_1d(layout_arg) or "NCL"
    groups = draw(weighted((6, st.just(1)), (2, st.integers(2, 3)),
                           (0 if clean else 1, BAD_SCALARS)))
    g = groups if is_int(groups) and groups >= 1 else 1
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n, length, k = draw(st.integers(0, 2)), draw(st.integers(0, 9)), draw(st.integers(1, 3))
    change = "none" if clean else draw(st.sampled_from(
        ["none"] * 12 + ["channels", "weight-ndim", "dtype", "empty-weight", "bias"]))
    dtype = draw(st.sampled_from(FLOATS) if clean else dtype_values())
    c = cin_g * g + (1 if change == "channels" else 0)
    x = draw(signal_array(layout, n, c, length, dtype, clean))
    if transposed:  # (C_in, C_out/g, k) / (k, C_out/g, C_in)
        wshape = (cin_g * g, cout_g, k) if layout == "NCL" else (k, cout_g, cin_g * g)
        cout = cout_g * g
    else:
        wshape = (cout_g * g, cin_g, k) if layout == "NCL" else (k, cin_g, cout_g * g)
        cout = cout_g * g
    if change == "weight-ndim":
        wshape = wshape + (1,)
    if change == "empty-weight":
        wshape = wshape[:-1] + (0,) if layout == "NCL" else (0,) + wshape[1:]
    wdtype = draw(dtype_values()) if change == "dtype" else dtype
    weight = draw(arrays(wshape, wdtype))
    bias = None
    if draw(st.booleans()):
        bias = draw(arrays((cout + (1 if change == "bias" else 0),), dtype))
    return layout_arg, x, weight, bias, groups


def conv1d_oracle(p, x, weight, bias):
    """reference.conv1d_naive in the call's layout."""
    if math.prod(p["shape"]) == 0:
        return np.zeros(p["shape"], p["dtype"])
    x3 = np.array(x) if p["batched"] else np.array(x)[None]
    w = np.array(weight)
    lio = w if p["layout"] == "NLC" else w.transpose(2, 1, 0)
    y = reference.conv1d_naive(to_nlc(x3, p["layout"]), lio, p["stride"], p["padding"],
                               p["dilation"], p["groups"],
                               padding_mode=p.get("mode", "zeros"))
    if bias is not None:
        y = y + np.array(bias)
    y = from_nlc(y.astype(p["dtype"]), p["layout"])
    return y if p["batched"] else y[0]


@st.composite
def conv1d_cases(draw):
    clean = draw(st.integers(0, 3)) > 0
    fn = "conv1d"
    layout_arg, x, weight, bias, groups = draw(conv1d_arrays(clean))
    stride_arg = draw(single_value(1, 3, clean=clean))
    dilation_arg = draw(single_value(1, 2, clean=clean))
    padding_arg = draw(padding_1d_value(strings=True, clean=clean))
    mode_arg = draw(padding_mode_args(clean))
    problems = Problems()
    mode = check_padding_mode(problems, fn, mode_arg)
    p = conv1d_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                     dilation_arg, layout_arg, mode=mode)
    out = None
    if p is not None:
        out = draw(out_buffer(p["shape"], p["dtype"], [x, weight, bias], clean=clean))
        check_out(problems, fn, out, p["shape"], p["dtype"], [x, weight, bias])
    kwargs = with_padding_mode(dict(stride=stride_arg, padding=padding_arg,
                                    dilation=dilation_arg, groups=groups, layout=layout_arg),
                               mode_arg)
    if out is not None:
        kwargs["out"] = out
    errors, may_return = settle(problems, [x, weight, bias], p and p["shape"])
    return Case(f"conv1d(x: {np.shape(x)} {dtype_of(x)}, weight: {np.shape(weight)} "
                f"{dtype_of(weight)}, bias: {None if bias is None else np.shape(bias)}, "
                f"**{kwargs!r})",
                lambda: fastconv.conv1d(x, weight, bias, **kwargs), errors,
                (lambda: conv1d_oracle(p, x, weight, bias)) if may_return else None,
                assert_into(out) if out is not None else None, (x, weight, bias))


@st.composite
def conv1d_backward_cases(draw):
    clean = draw(st.integers(0, 3)) > 0
    fn = "conv1d_backward"
    layout_arg, x, weight, _, groups = draw(conv1d_arrays(clean))
    stride_arg = draw(single_value(1, 3, clean=clean))
    dilation_arg = draw(single_value(1, 2, clean=clean))
    padding_arg = draw(padding_1d_value(strings=True, clean=clean))
    needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    mode_arg = draw(padding_mode_args(clean))
    problems = Problems()
    mode = check_padding_mode(problems, fn, mode_arg)
    p = conv1d_model(problems, fn, x, weight, None, groups, stride_arg, padding_arg,
                     dilation_arg, layout_arg, mode=mode)
    xdtype = dtype_of(x)
    gdtype = xdtype if xdtype in FLOATS else np.dtype(np.float32)
    gshape = (3,)  # stands in when the model stopped before the output's shape
    if p is not None:
        gshape = p["shape"] if clean or draw(st.integers(0, 8)) else \
            tuple(p["shape"][:-1]) + (p["shape"][-1] + 1,)
    if not clean and draw(st.integers(0, 8)) == 0:
        gdtype = draw(dtype_values())
    grad = draw(arrays(gshape, gdtype))
    gd = check_float(problems, fn, "grad_output", grad)
    if gd in FLOATS and xdtype in FLOATS and gd != xdtype:
        problems.add(TypeError, rf"^{fn}: input has dtype \S+ but grad_output has dtype")
    if p is not None and np.shape(grad) != p["shape"]:
        problems.add(ValueError, rf"^{fn}: expected grad_output of shape")
    if p is None and any(error in problems for error in HUGE_ERRORS):
        # the forward output could not exist, so no grad_output has its shape: the check
        # of grad_output's shape may come first (nothing of that size is allocated)
        problems.add(ValueError, rf"^{fn}: expected grad_output of shape")

    def expected():
        layout, batched = p["layout"], p["batched"]
        x3 = np.array(x) if batched else np.array(x)[None]
        g3 = np.array(grad) if batched else np.array(grad)[None]
        w = np.array(weight)
        lio = w if layout == "NLC" else w.transpose(2, 1, 0)
        gz, gw, gb = reference.conv1d_backward(to_nlc(g3, layout), to_nlc(x3, layout), lio,
                                               p["stride"], p["padding"], p["dilation"],
                                               p["groups"],
                                               padding_mode=p.get("mode", "zeros"))
        dtype = p["dtype"]
        gx = from_nlc(gz.astype(dtype), layout)
        gw = (gw if layout == "NLC" else gw.transpose(2, 1, 0)).astype(dtype)
        return (gx if batched else gx[0], np.ascontiguousarray(gw), gb.astype(dtype))

    def compare(result, want):
        for got, value, needed in zip(result, want, needs):
            if needed:
                assert_same(got, value)
            else:
                assert got is None

    kwargs = with_padding_mode(dict(
        stride=stride_arg, padding=padding_arg, dilation=dilation_arg, groups=groups,
        layout=layout_arg, needs_input_grad=needs[0], needs_weight_grad=needs[1],
        needs_bias_grad=needs[2]), mode_arg)
    errors, may_return = settle(problems, [x, weight, grad], p and p["shape"])
    return Case(f"conv1d_backward(grad: {np.shape(grad)} {dtype_of(grad)}, x: {np.shape(x)} "
                f"{dtype_of(x)}, weight: {np.shape(weight)} {dtype_of(weight)}, **{kwargs!r})",
                lambda: fastconv.conv1d_backward(grad, x, weight, **kwargs), errors,
                expected if may_return else None, compare, (x, weight, grad))


@st.composite
def conv_transpose1d_cases(draw):
    clean = draw(st.integers(0, 3)) > 0
    fn = "conv_transpose1d"
    layout_arg, x, weight, bias, groups = draw(conv1d_arrays(clean, transposed=True))
    stride_arg = draw(single_value(1, 3, clean=clean))
    dilation_arg = draw(single_value(1, 2, clean=clean))
    padding_arg = draw(padding_1d_value(clean=clean) if clean
                       else weighted((8, padding_1d_value()), (1, st.just("same"))))
    output_padding_arg = draw(weighted((3, st.just(0)), (2, single_value(0, 2, minimum=0,
                                                                      huge=False,
                                                                      clean=clean))))
    mode_arg = draw(padding_mode_args(clean))
    problems = Problems()
    check_padding_mode(problems, fn, mode_arg, transposed=True)
    p = conv1d_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                     dilation_arg, layout_arg, transposed=True,
                     output_padding_arg=output_padding_arg)
    out = None
    if p is not None:
        out = draw(out_buffer(p["shape"], p["dtype"], [x, weight, bias], clean=clean))
        check_out(problems, fn, out, p["shape"], p["dtype"], [x, weight, bias])

    def expected():
        if math.prod(p["shape"]) == 0:
            return np.zeros(p["shape"], p["dtype"])
        layout, batched = p["layout"], p["batched"]
        x3 = np.array(x) if batched else np.array(x)[None]
        w = np.array(weight)
        w_tf = w if layout == "NLC" else w.transpose(2, 1, 0)  # (k, C_out/g, C_in)
        y = reference.conv_transpose1d(to_nlc(x3, layout), w_tf, p["stride"], p["padding"],
                                       p["out_pad"], p["groups"], p["dilation"])
        if bias is not None:
            y = y + np.array(bias)
        y = from_nlc(y.astype(p["dtype"]), layout)
        return y if batched else y[0]

    kwargs = with_padding_mode(dict(
        stride=stride_arg, padding=padding_arg, output_padding=output_padding_arg,
        groups=groups, dilation=dilation_arg, layout=layout_arg), mode_arg)
    if out is not None:
        kwargs["out"] = out
    errors, may_return = settle(problems, [x, weight, bias], p and p["shape"])
    return Case(f"conv_transpose1d(x: {np.shape(x)} {dtype_of(x)}, weight: {np.shape(weight)}"
                f" {dtype_of(weight)}, bias: {None if bias is None else np.shape(bias)}, "
                f"**{kwargs!r})",
                lambda: fastconv.conv_transpose1d(x, weight, bias, **kwargs), errors,
                expected if may_return else None,
                assert_into(out) if out is not None else None, (x, weight, bias))


def im2col_1d_strategy(fn="im2col", arg="x"):
    """im2col / col2im_backward with a 1-tuple kernel_size (docs/spec.md §6)."""
    @st.composite
    def strategy(draw):
        clean = draw(st.integers(0, 3)) > 0
        layout_arg = draw(st.sampled_from(LAYOUTS_1D + ("NCHW", "NHWC")) if clean
                          else LAYOUT_1D_ARGS)
        layout = parse_layout_1d(layout_arg, two_d_names=True)
        n, c, length = draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 9))
        dtype = draw(dtype_values(movable=True, clean=clean))
        x = draw(signal_array(layout or "NCL", n, c, length, dtype, clean))
        k = draw(st.integers(0 if not clean else 1, 3))
        kernel_arg = draw(st.sampled_from([(k,), [k], np.array([k])]))
        stride_arg = draw(single_value(1, 3, clean=clean))
        dilation_arg = draw(single_value(1, 3, clean=clean))
        padding_arg = draw(padding_1d_value(clean=clean))

        problems = Problems()
        if layout is None:
            problems.add(ValueError, rf"^{fn}: layout")
        dtype = check_movable(problems, fn, arg, x)
        shape = np.shape(x)
        if len(shape) not in (2, 3):
            problems.add(ValueError, rf"^{fn}: kernel_size=.* means 1-D images")
        kernel, stride = parse_single(kernel_arg), parse_single(stride_arg)
        dilation, padding = parse_single(dilation_arg), parse_padding_1d(padding_arg)
        for name, value in (("kernel_size", kernel), ("stride", stride),
                            ("dilation", dilation), ("padding", padding)):
            if value is None:
                problems.add(ValueError, rf"^{fn}: {name}")
        result_shape = out_len = None
        if layout and len(shape) in (2, 3):
            shape3 = shape if len(shape) == 3 else (1,) + shape
            n3, c3, l3 = dims_1d(shape3, layout)
            out_len = window_1d(problems, fn, l3, kernel, stride, padding, dilation)
            if out_len is not None:
                full = (n3, c3 * kernel, out_len) if layout == "NCL" else \
                    (n3, out_len, kernel * c3)
                ok = check_sizes(problems, full, dtype, [x])
                result_shape = (full if len(shape) == 3 else full[1:]) if ok else None
        out = None
        if result_shape is not None and not problems:
            out = draw(out_buffer(result_shape, dtype, [x], clean=clean))
            check_out(problems, fn, out, result_shape, dtype, [x])

        def expected():
            if math.prod(result_shape) == 0:
                return np.zeros(result_shape, dtype)
            x3 = np.array(x) if len(shape) == 3 else np.array(x)[None]
            cols = reference.im2col1d(x3, kernel, stride, padding, dilation, layout)
            return cols if len(shape) == 3 else cols[0]

        kwargs = dict(stride=stride_arg, padding=padding_arg, dilation=dilation_arg,
                      layout=layout_arg)
        if out is not None:
            kwargs["out"] = out
        function = getattr(fastconv, fn)
        errors, may_return = settle(problems, [x], result_shape)
        return Case(f"{fn}({arg}: {np.shape(x)} {dtype_of(x)}, {kernel_arg!r}, **{kwargs!r})",
                    lambda: function(x, kernel_arg, **kwargs), errors,
                    expected if may_return else None,
                    assert_into(out) if out is not None else None, (x,))
    return strategy()


@st.composite
def col2im_1d_cases(draw):
    """col2im with a 1-tuple kernel_size: columns of the right shape for a drawn geometry
    (sometimes perturbed), folded back into signals of length `output_size`."""
    clean = draw(st.integers(0, 3)) > 0
    fn = "col2im"
    layout_arg = draw(st.sampled_from(LAYOUTS_1D) if clean else LAYOUT_1D_ARGS)
    layout = parse_layout_1d(layout_arg, two_d_names=True)
    n, c, length = draw(st.integers(0, 3)), draw(st.integers(1, 4)), draw(st.integers(0, 9))
    k = draw(st.integers(1, 3))
    stride_arg = draw(single_value(1, 3, huge=False, clean=clean))
    dilation_arg = draw(single_value(1, 3, huge=False, clean=clean))
    padding_arg = draw(padding_1d_value(clean=clean))
    stride_g, dilation_g = parse_single(stride_arg) or 1, parse_single(dilation_arg) or 1
    padding_g = parse_padding_1d(padding_arg) or (0, 0)
    out_guess = window_1d(Problems(), fn, length, k, stride_g, padding_g, dilation_g)
    positions = out_guess if out_guess is not None else draw(st.integers(0, 3))
    rows = c * k
    change = "none" if clean else draw(st.sampled_from(["none"] * 12 + ["rows", "positions",
                                                                       "ndim", "size"]))
    rows += draw(st.sampled_from([-1, 1])) if change == "rows" else 0
    positions += 1 if change == "positions" else 0
    batched = draw(st.booleans())
    shape = (n, rows, positions) if layout != "NLC" else (n, positions, rows)
    shape = shape if batched else shape[1:]
    if change == "ndim":
        shape = shape[-1:]
    dtype = draw(dtype_values(movable=True, clean=clean))
    cols = draw(arrays(shape, dtype))
    size_arg = length if change != "size" else draw(st.sampled_from([(length, 1), -1, None]))
    size_arg = draw(st.sampled_from([size_arg, (size_arg,)])) if is_int(size_arg) else size_arg

    problems = Problems()
    if layout is None:
        problems.add(ValueError, rf"^{fn}: layout")
    dtype = check_movable(problems, fn, "cols", cols, allow_bool=False)
    if len(shape) not in (2, 3):
        problems.add(ValueError, rf"^{fn}: expected cols of shape")
    size = parse_single(size_arg, minimum=0)
    stride, dilation = parse_single(stride_arg), parse_single(dilation_arg)
    padding = parse_padding_1d(padding_arg)
    for name, value in (("output_size", size), ("stride", stride), ("dilation", dilation),
                        ("padding", padding)):
        if value is None:
            problems.add(ValueError, rf"^{fn}: {name}")
    result_shape = None
    if layout and len(shape) in (2, 3):
        cols3 = shape if len(shape) == 3 else (1,) + shape
        rows3 = cols3[1] if layout == "NCL" else cols3[2]
        if rows3 == 0 or rows3 % k:
            problems.add(ValueError, rf"^{fn}: cols has \d+ (rows|columns)")
        elif size is not None:
            out_len = window_1d(problems, fn, size, k, stride, padding, dilation)
            if out_len is not None:
                if (cols3[2] if layout == "NCL" else cols3[1]) != out_len:
                    problems.add(ValueError, rf"^{fn}: cols has \d+ sliding-window")
                else:
                    image = ((cols3[0], rows3 // k, size) if layout == "NCL"
                             else (cols3[0], size, rows3 // k))
                    result_shape = image if len(shape) == 3 else image[1:]

    def expected():
        if math.prod(result_shape) == 0:
            return np.zeros(result_shape, dtype)
        cols3 = np.array(cols) if len(shape) == 3 else np.array(cols)[None]
        if cols3.size == 0:
            return np.zeros(result_shape, dtype)
        image = reference.col2im1d(cols3, size, k, stride, padding, dilation, layout)
        return image if len(shape) == 3 else image[0]

    kwargs = dict(stride=stride_arg, padding=padding_arg, dilation=dilation_arg,
                  layout=layout_arg)
    errors, may_return = settle(problems, [cols], result_shape)
    return Case(f"col2im(cols: {shape} {dtype_of(cols)}, {size_arg!r}, ({k},), **{kwargs!r})",
                lambda: fastconv.col2im(cols, size_arg, (k,), **kwargs), errors,
                expected if may_return else None, None, (cols,))


@st.composite
def conv1d_layer_cases(draw):
    """Conv1D: a valid layer (integer weights), forward then two backward passes, against
    the oracles; or a bad constructor argument."""
    clean = draw(st.integers(0, 3)) > 0
    layout_arg = draw(st.sampled_from(LAYOUTS_1D) if clean else LAYOUT_1D_ARGS)
    layout = parse_layout_1d(layout_arg)
    g = draw(weighted((6, st.just(1)), (2, st.integers(2, 3))))
    cin, cout = draw(st.integers(1, 3)) * g, draw(st.integers(1, 3)) * g
    k = draw(st.integers(1, 3))
    kernel_arg = draw(st.sampled_from([k, (k,)]) if clean
                      else weighted((8, st.sampled_from([k, (k,)])), (1, single_value(1, 3))))
    stride_arg = draw(single_value(1, 3, huge=False, clean=clean))
    dilation_arg = draw(single_value(1, 2, huge=False, clean=clean))
    padding_arg = draw(padding_1d_value(strings=True, clean=clean))
    dtype = draw(st.sampled_from(FLOATS))
    mode_arg = draw(padding_mode_args(clean))
    fn = "Conv1D"
    problems = Problems()
    if layout is None:
        problems.add(ValueError, rf"^{fn}: layout")
    mode = check_padding_mode(problems, fn, mode_arg)
    kernel, stride = parse_single(kernel_arg), parse_single(stride_arg)
    dilation = parse_single(dilation_arg)
    for name, value in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if value is None or value > LIMIT:
            problems.add(ValueError, rf"^{fn}: {name}")
    if isinstance(padding_arg, str):
        if padding_arg.lower() not in ("same", "valid"):
            problems.add(ValueError, rf"^{fn}: padding")
    elif parse_padding_1d(padding_arg) is None:
        problems.add(ValueError, rf"^{fn}: padding")
    if not problems:
        # The weight (C_out, C_in/groups, k) is allocated by the constructor (a huge
        # kernel_size: it cannot be).
        weight_bytes = cout * (cin // g) * kernel * np.dtype(dtype).itemsize
        if weight_bytes >= HUGE_BYTES:
            problems.extend(HUGE_ERRORS)
        elif weight_bytes >= SMALL_BYTES:
            reject()
    kwargs = with_padding_mode(dict(
        stride=stride_arg, padding=padding_arg, dilation=dilation_arg, groups=g,
        layout=layout_arg, dtype=dtype, seed=draw(st.integers(0, 9))), mode_arg)
    text = f"Conv1D({cin}, {cout}, {kernel_arg!r}, **{kwargs!r})"
    if problems:
        return Case(text, lambda: fastconv.Conv1D(cin, cout, kernel_arg, **kwargs), problems)
    n, length = draw(st.integers(0, 2)), draw(st.integers(0, 9))
    # (not as a list: an empty list loses the shape the model reads from n and length)
    x = draw(signal_array(layout, n, cin, length, dtype, clean=True,
                          orders=[o for o in MEMORY_ORDERS if o != "list"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    padding = parse_padding_1d(padding_arg) if not isinstance(padding_arg, str) else (
        (0, 0) if padding_arg.lower() == "valid" else same_1d(length, kernel, stride,
                                                              dilation))
    out_len = window_1d(problems, "Conv1D.forward", length, kernel, stride, padding,
                        dilation)
    if out_len is not None and not check_mode_fits(problems, "Conv1D.forward", mode,
                                                   (padding,), (length,), ("length",)):
        out_len = None
    shape = None
    if out_len is not None:
        full = (n, cout, out_len) if layout == "NCL" else (n, out_len, cout)
        shape = full if np.ndim(x) == 3 else full[1:]

    def call():
        layer = fastconv.Conv1D(cin, cout, kernel_arg, **kwargs)
        layer.weight[...] = fill(rng, layer.weight.shape, np.dtype(dtype))
        layer.bias[...] = fill(rng, layer.bias.shape, np.dtype(dtype))
        y = layer(x)
        grad = fill(rng, y.shape, np.dtype(dtype))
        first = layer.backward(grad)
        np.testing.assert_array_equal(first, layer.backward(grad))
        return layer, y, grad, first

    def compare(result, _):
        layer, y, grad, grad_x = result
        p = dict(layout=layout, dtype=np.dtype(dtype), batched=np.ndim(x) == 3,
                 stride=stride, padding=padding, dilation=dilation, groups=g, shape=shape,
                 mode=mode)
        assert_same(y, conv1d_oracle(p, x, layer.weight, layer.bias))
        x3 = np.array(x) if p["batched"] else np.array(x)[None]
        g3 = grad if p["batched"] else grad[None]
        lio = layer.weight if layout == "NLC" else layer.weight.transpose(2, 1, 0)
        gz, gw, gb = reference.conv1d_backward(to_nlc(g3, layout), to_nlc(x3, layout), lio,
                                               stride, padding, dilation, g,
                                               padding_mode=mode)
        gx = from_nlc(gz.astype(dtype), layout)
        assert_same(grad_x, gx if p["batched"] else gx[0])
        gw = gw if layout == "NLC" else gw.transpose(2, 1, 0)
        assert_same(layer.weight_grad, np.ascontiguousarray(2 * gw).astype(dtype))
        assert_same(layer.bias_grad, (2 * gb).astype(dtype))

    return Case(f"{text}; forward(x: {np.shape(x)})", call, problems,
                (lambda: None) if not problems else None, compare, (x,))


# ================================================================== 3-D (docs/spec.md §6)
# conv3d, conv3d_backward, conv_transpose3d, Conv3D, and im2col / col2im with a 3-tuple
# kernel_size, modelled from docs/spec.md §6 in 3-D words, with padding_mode; the oracles
# are fastconv.reference's 3-D tap loops (NDHWC volumes, DHWIO weights, np.pad copies),
# exact on small integers.
LAYOUTS_3D = ("NCDHW", "NDHWC")
LAYOUT_3D_ARGS = weighted((30, st.sampled_from(LAYOUTS_3D)),
                          (3, st.sampled_from(["ncdhw", "ndhwc", "NdHwC"])),
                          (1, st.sampled_from(["NCHW", "NCL", "", None, 0, b"NCDHW"])))
MODES_3D = ("zeros", "reflect", "replicate", "circular")
MODE_ARGS = weighted((12, st.sampled_from(MODES_3D)), (2, st.sampled_from(["Reflect", "ZEROS"])),
                     (1, st.sampled_from(["mirror", "", None, 0, "edge"])))


def parse_layout_3d(value, two_d_names=False):
    if not isinstance(value, str):
        return None
    upper = value.upper()
    if two_d_names:
        upper = {"NCHW": "NCDHW", "NHWC": "NDHWC"}.get(upper, upper)
    return upper if upper in LAYOUTS_3D else None


ALGORITHM_3D_ARGS = weighted((12, st.sampled_from(["auto", "gemm"])),
                             (2, st.sampled_from(["AUTO", "Gemm"])),
                             (1, st.sampled_from(["fft", "", None, 1])))


def check_algorithm_3d(problems, fn, value):
    """algorithm= of the 3-D convolutions: 'auto' / 'gemm' / 'winograd' in any case
    ('winograd' is not drawn: these small channel counts never take it under 'auto', and
    a forced Winograd is not exact on integers)."""
    if not (isinstance(value, str) and value.lower() in ("auto", "gemm", "winograd")):
        problems.add(ValueError, rf"^{fn}: algorithm")


def parse_mode(problems, fn, value, transposed=False):
    """padding_mode (docs/spec.md §6): the four names in any case; "zeros" only for the
    transposed convolution."""
    mode = value.lower() if isinstance(value, str) and value.lower() in MODES_3D else None
    if mode is None or (transposed and mode != "zeros"):
        problems.add(ValueError, rf"^{fn}: padding_mode")
        return None
    return mode


def triple_value(lo, hi, minimum=1, huge=True, clean=False):
    """stride / dilation / kernel_size of a 3-D call: an int or a 3-tuple; sometimes bad."""
    small = st.integers(lo, hi)
    if clean:
        return weighted((3, small), (1, st.tuples(small, small, small)))
    scalar = int_value(lo, hi, huge)
    bad = weighted((3, BAD_SCALARS.filter(lambda v: not (is_int(v) and v >= minimum))),
                   (2, st.tuples(scalar, scalar)), (1, st.just(())),
                   (1, st.tuples(scalar, scalar, BAD_SCALARS)))
    return weighted((16, scalar), (8, st.tuples(scalar, scalar, scalar)),
                    (1, st.lists(scalar, min_size=3, max_size=3)), (1, bad))


def parse_triple(value, minimum=1):
    if is_sequence(value):
        if np.ndim(value) == 1 and len(value) == 3 and all(is_int(v) and v >= minimum
                                                           for v in value):
            return tuple(int(v) for v in value)
        return None
    return (int(value),) * 3 if is_int(value) and value >= minimum else None


def padding_3d_value(strings=False, clean=False):
    """int, or three entries each an int or a (before, after) pair; for the convolutions
    also 'valid' / 'same'; sometimes bad."""
    small = st.integers(0, 2)
    entry = weighted((2, small), (1, st.tuples(small, small)))
    if clean:
        options = [(3, small), (3, st.tuples(entry, entry, entry))]
        if strings:
            options.append((2, st.sampled_from(["same", "valid"])))
        return weighted(*options)
    scalar = int_value(0, 2, huge=False)
    options = [(12, scalar), (8, st.tuples(entry, entry, entry)),
               (1, st.tuples(scalar, scalar)), (1, st.tuples(st.tuples(scalar, scalar, scalar),
                                                             scalar, scalar)),
               (1, BAD_SCALARS.filter(lambda v: not (is_int(v) and v >= 0)))]
    if strings:
        options.append((4, st.sampled_from(["same", "valid", "SAME", "full"])))
    return weighted(*options)


def parse_padding_3d(value):
    if is_int(value):
        return ((int(value),) * 2,) * 3 if value >= 0 else None
    if not (is_sequence(value) and len(value) == 3):
        return None
    pairs = []
    for entry in value:
        if is_int(entry) and entry >= 0:
            pairs.append((int(entry),) * 2)
        elif (is_sequence(entry) and np.ndim(entry) == 1 and len(entry) == 2
              and all(is_int(v) and v >= 0 for v in entry)):
            pairs.append(tuple(int(v) for v in entry))
        else:
            return None
    return tuple(pairs)


def window_3d(problems, fn, sizes, kernel, stride, pads, dilation, mode="zeros"):
    """(OD, OH, OW) of docs/spec.md §6, or None after adding the problems."""
    if None in (kernel, stride, pads, dilation):
        return None
    outs = []
    for size, k, s, (b, a), d in zip(sizes, kernel, stride, pads, dilation):
        if max(k, s, d) > LIMIT or size + b + a > LIMIT:
            problems.add(ValueError, rf"^{fn}: (kernel_size|stride|dilation|padding)")
            return None
        if size + b + a < d * (k - 1) + 1:
            problems.add(ValueError, rf"^{fn}: kernel_size=.* with dilation")
            return None
        outs.append((size + b + a - d * (k - 1) - 1) // s + 1)
    for size, (b, a) in zip(sizes, pads):
        pad = max(b, a)
        if pad and mode != "zeros" and (mode == "reflect" and pad >= size
                                        or mode == "circular" and pad > size
                                        or mode == "replicate" and size == 0):
            problems.add(ValueError, rf"^{fn}: padding_mode='{mode}' needs")
            return None
    return tuple(outs)


def dims_3d(shape5, layout):
    return (shape5[0], shape5[1], tuple(shape5[2:])) if layout == "NCDHW" else \
        (shape5[0], shape5[4], tuple(shape5[1:4]))


def volume_shape(ndim, layout, n, c, sizes):
    dims = (n, c) + tuple(sizes) if layout == "NCDHW" else (n,) + tuple(sizes) + (c,)
    return {5: dims, 4: dims[1:], 3: dims[2:], 6: dims + (1,)}[ndim]


VOLUME_NDIMS = weighted((12, st.just(5)), (5, st.just(4)), (1, st.sampled_from([3, 6])))


def to_ndhwc(array, layout):
    array = np.array(array)
    return array if layout == "NDHWC" else np.ascontiguousarray(np.moveaxis(array, 1, -1))


def from_ndhwc(array, layout):
    return array if layout == "NDHWC" else np.ascontiguousarray(np.moveaxis(array, -1, 1))


def as_dhwio(weight, layout):
    w = np.array(weight)
    return w if layout == "NDHWC" else np.ascontiguousarray(w.transpose(2, 3, 4, 1, 0))


def from_dhwio(weight, layout):
    return weight if layout == "NDHWC" else np.ascontiguousarray(weight.transpose(4, 3, 0, 1, 2))


@st.composite
def conv3d_arrays(draw, clean, transposed=False):
    """layout argument, x, weight, bias and groups of a 3-D convolution (sometimes
    mismatched when not clean)."""
    layout_arg = draw(st.sampled_from(LAYOUTS_3D) if clean else LAYOUT_3D_ARGS)
    layout = parse_layout_3d(layout_arg) or "NCDHW"
    groups = draw(weighted((6, st.just(1)), (2, st.integers(2, 3)),
                           (0 if clean else 1, BAD_SCALARS)))
    g = groups if is_int(groups) and groups >= 1 else 1
    cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    n = draw(st.integers(0, 2))
    sizes = tuple(draw(st.integers(0, 4)) for _ in range(3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(3))
    change = "none" if clean else draw(st.sampled_from(
        ["none"] * 12 + ["channels", "weight-ndim", "dtype", "empty-weight", "bias", "ndim"]))
    dtype = draw(st.sampled_from(FLOATS) if clean else dtype_values())
    c = cin_g * g + (1 if change == "channels" else 0)
    ndim = draw(st.sampled_from([5, 5, 4]) if clean or change != "ndim" else VOLUME_NDIMS)
    x = draw(arrays(volume_shape(ndim, layout, n, c, sizes), dtype,
                    [o for o in MEMORY_ORDERS if o != "list"]))
    first, second = (cin_g * g, cout_g) if transposed else (cout_g * g, cin_g)
    wshape = (first, second) + kernel if layout == "NCDHW" else kernel + (second, first)
    if change == "weight-ndim":
        wshape = wshape[1:]
    if change == "empty-weight":
        wshape = (0,) + wshape[1:] if layout == "NDHWC" else wshape[:-1] + (0,)
    weight = draw(arrays(wshape, draw(dtype_values()) if change == "dtype" else dtype))
    bias = None
    if draw(st.booleans()):
        bias = draw(arrays((cout_g * g + (1 if change == "bias" else 0),), dtype))
    return layout_arg, x, weight, bias, groups


def conv3d_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                 dilation_arg, layout_arg, mode_arg, transposed=False, output_padding_arg=0):
    """docs/spec.md §6 checks of conv3d / conv3d_backward / conv_transpose3d; the parsed
    call, or None when a problem stops the model."""
    layout = parse_layout_3d(layout_arg)
    if layout is None:
        problems.add(ValueError, rf"^{fn}: layout")
    mode = parse_mode(problems, fn, mode_arg, transposed)
    dtypes = [check_float(problems, fn, "input", x), check_float(problems, fn, "weight", weight)]
    if bias is not None:
        dtypes.append(check_float(problems, fn, "bias", bias))
    if len(set(dtypes)) > 1:
        problems.add(TypeError, rf"^{fn}: \w+ has dtype \S+ but \w+ has dtype")
    wshape, xshape = np.shape(weight), np.shape(x)
    if len(wshape) != 5:
        problems.add(ValueError, rf"^{fn}: expected a 5-D weight")
    if len(xshape) not in (4, 5):
        problems.add(ValueError, rf"^{fn}: expected input of shape")
    groups_ok = is_int(groups) and groups >= 1
    if not groups_ok:
        problems.add(ValueError, rf"^{fn}: groups")
    stride, dilation = parse_triple(stride_arg), parse_triple(dilation_arg)
    for name, value in (("stride", stride), ("dilation", dilation)):
        if value is None:
            problems.add(ValueError, rf"^{fn}: {name}")
    if isinstance(padding_arg, str) and not transposed:
        padding = padding_arg.lower() if padding_arg.lower() in ("same", "valid") else None
    else:
        padding = parse_padding_3d(padding_arg)
    if padding is None:
        problems.add(ValueError, rf"^{fn}: padding")
    out_pad = parse_triple(output_padding_arg, minimum=0) if transposed else (0, 0, 0)
    if out_pad is None:
        problems.add(ValueError, rf"^{fn}: output_padding")
    if not (layout and len(wshape) == 5 and len(xshape) in (4, 5) and groups_ok):
        return None
    x5 = xshape if len(xshape) == 5 else (1,) + xshape
    n, c, sizes = dims_3d(x5, layout)
    first, second = (wshape[0], wshape[1]) if layout == "NCDHW" else (wshape[4], wshape[3])
    kernel = tuple(wshape[2:]) if layout == "NCDHW" else tuple(wshape[:3])
    if transposed:
        cin, cout_g = first, second
        cout = cout_g * groups
        if c != cin:
            problems.add(ValueError, rf"^{fn}: expected input with \d+ channels")
        if cin % groups:
            problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
        if min(kernel + (cout_g, cin)) < 1:
            problems.add(ValueError, rf"^{fn}: weight has an empty axis")
    else:
        cout, cin_g = first, second
        if cout % groups:
            problems.add(ValueError, rf"^{fn}: groups=\d+ must divide")
        if c != cin_g * groups:
            problems.add(ValueError, rf"^{fn}: expected input with \d+ channels")
        if min(kernel + (cin_g, cout)) < 1:
            problems.add(ValueError, rf"^{fn}: weight has an empty axis")
    if bias is not None and np.shape(bias) != (cout,):
        problems.add(ValueError, rf"^{fn}: expected bias of shape")
    if padding == "valid":
        padding = ((0, 0),) * 3
    elif padding == "same":
        padding = None if None in (stride, dilation) else tuple(
            same_1d(size, k, s, d) for size, k, s, d in zip(sizes, kernel, stride, dilation))
    if min(kernel) < 1 or None in (stride, dilation, padding, out_pad, mode):
        return None
    if transposed:
        outs = []
        if any(op >= max(s, d) for op, s, d in zip(out_pad, stride, dilation)):
            problems.add(ValueError, rf"^{fn}: output_padding")
            return None
        for size, k, s, d, (b, a), op in zip(sizes, kernel, stride, dilation, padding,
                                             out_pad):
            full = (size - 1) * s + d * (k - 1) + op + 1
            if full - b - a < 1:
                problems.add(ValueError, rf"^{fn}: padding=.* removes the whole output")
                return None
            outs.append(full - b - a)
        if window_3d(problems, fn, outs, kernel, stride, padding, dilation) is None:
            return None
    else:
        outs = window_3d(problems, fn, sizes, kernel, stride, padding, dilation, mode)
        if outs is None:
            return None
    if problems:
        return None
    dtype = dtypes[0]
    full = (n, cout) + tuple(outs) if layout == "NCDHW" else (n,) + tuple(outs) + (cout,)
    shape = full if len(xshape) == 5 else full[1:]
    if not check_sizes(problems, shape, dtype, [x, weight, bias]):
        return None
    return dict(layout=layout, dtype=dtype, batched=len(xshape) == 5, stride=stride,
                padding=padding, dilation=dilation, groups=groups, out_pad=out_pad,
                shape=shape, mode=mode)


def conv3d_oracle(p, x, weight, bias):
    """reference.conv3d_naive in the call's layout."""
    if math.prod(p["shape"]) == 0:
        return np.zeros(p["shape"], p["dtype"])
    x5 = np.array(x) if p["batched"] else np.array(x)[None]
    y = reference.conv3d_naive(to_ndhwc(x5, p["layout"]), as_dhwio(weight, p["layout"]),
                               p["stride"], p["padding"], p["dilation"], p["groups"],
                               p["mode"])
    if bias is not None:
        y = y + np.array(bias)
    y = from_ndhwc(y.astype(p["dtype"]), p["layout"])
    return y if p["batched"] else y[0]


@st.composite
def conv3d_cases(draw):
    clean = draw(st.integers(0, 3)) > 0
    fn = "conv3d"
    layout_arg, x, weight, bias, groups = draw(conv3d_arrays(clean))
    stride_arg = draw(triple_value(1, 2, clean=clean))
    dilation_arg = draw(triple_value(1, 2, clean=clean))
    padding_arg = draw(padding_3d_value(strings=True, clean=clean))
    mode_arg = draw(st.sampled_from(MODES_3D) if clean else MODE_ARGS)
    algorithm_arg = draw(st.just("auto") if clean else ALGORITHM_3D_ARGS)
    problems = Problems()
    check_algorithm_3d(problems, fn, algorithm_arg)
    p = conv3d_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                     dilation_arg, layout_arg, mode_arg)
    out = None
    if p is not None:
        out = draw(out_buffer(p["shape"], p["dtype"], [x, weight, bias], clean=clean))
        check_out(problems, fn, out, p["shape"], p["dtype"], [x, weight, bias])
    kwargs = dict(stride=stride_arg, padding=padding_arg, dilation=dilation_arg,
                  groups=groups, layout=layout_arg, padding_mode=mode_arg,
                  algorithm=algorithm_arg)
    if out is not None:
        kwargs["out"] = out
    errors, may_return = settle(problems, [x, weight, bias], p and p["shape"])
    return Case(f"conv3d(x: {np.shape(x)} {dtype_of(x)}, weight: {np.shape(weight)} "
                f"{dtype_of(weight)}, bias: {None if bias is None else np.shape(bias)}, "
                f"**{kwargs!r})",
                lambda: fastconv.conv3d(x, weight, bias, **kwargs), errors,
                (lambda: conv3d_oracle(p, x, weight, bias)) if may_return else None,
                assert_into(out) if out is not None else None, (x, weight, bias))


def conv3d_backward_oracle(p, grad, x, weight):
    layout, batched, dtype = p["layout"], p["batched"], p["dtype"]
    x5 = np.array(x) if batched else np.array(x)[None]
    g5 = np.array(grad) if batched else np.array(grad)[None]
    gz, gw, gb = reference.conv3d_backward(to_ndhwc(g5, layout), to_ndhwc(x5, layout),
                                           as_dhwio(weight, layout), p["stride"],
                                           p["padding"], p["dilation"], p["groups"],
                                           p["mode"])
    gx = from_ndhwc(gz.astype(dtype), layout)
    return (gx if batched else gx[0], from_dhwio(gw, layout).astype(dtype), gb.astype(dtype))


@st.composite
def conv3d_backward_cases(draw):
    clean = draw(st.integers(0, 3)) > 0
    fn = "conv3d_backward"
    layout_arg, x, weight, _, groups = draw(conv3d_arrays(clean))
    stride_arg = draw(triple_value(1, 2, clean=clean))
    dilation_arg = draw(triple_value(1, 2, clean=clean))
    padding_arg = draw(padding_3d_value(strings=True, clean=clean))
    mode_arg = draw(st.sampled_from(MODES_3D) if clean else MODE_ARGS)
    needs = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    algorithm_arg = draw(st.just("auto") if clean else ALGORITHM_3D_ARGS)
    problems = Problems()
    check_algorithm_3d(problems, fn, algorithm_arg)
    p = conv3d_model(problems, fn, x, weight, None, groups, stride_arg, padding_arg,
                     dilation_arg, layout_arg, mode_arg)
    xdtype = dtype_of(x)
    gdtype = xdtype if xdtype in FLOATS else np.dtype(np.float32)
    gshape = (1, 1, 1, 1, 1)
    if p is not None:
        gshape = p["shape"] if clean or draw(st.integers(0, 8)) else \
            tuple(p["shape"][:-1]) + (p["shape"][-1] + 1,)
    if not clean and draw(st.integers(0, 8)) == 0:
        gdtype = draw(dtype_values())
    grad = draw(arrays(gshape, gdtype, [o for o in MEMORY_ORDERS if o != "list"]))
    gd = check_float(problems, fn, "grad_output", grad)
    if gd in FLOATS and xdtype in FLOATS and gd != xdtype:
        problems.add(TypeError, rf"^{fn}: input has dtype \S+ but grad_output has dtype")
    if p is not None and np.shape(grad) != p["shape"]:
        problems.add(ValueError, rf"^{fn}: expected grad_output of shape")
    if p is None and any(error in problems for error in HUGE_ERRORS):
        # as conv1d_backward's model: no grad_output can have an impossible output's shape
        problems.add(ValueError, rf"^{fn}: expected grad_output of shape")

    def compare(result, want):
        for got, value, needed in zip(result, want, needs):
            if needed:
                assert_same(got, value)
            else:
                assert got is None

    kwargs = dict(stride=stride_arg, padding=padding_arg, dilation=dilation_arg,
                  groups=groups, layout=layout_arg, padding_mode=mode_arg,
                  needs_input_grad=needs[0], needs_weight_grad=needs[1],
                  needs_bias_grad=needs[2], algorithm=algorithm_arg)
    errors, may_return = settle(problems, [x, weight, grad], p and p["shape"])
    return Case(f"conv3d_backward(grad: {np.shape(grad)} {dtype_of(grad)}, x: {np.shape(x)} "
                f"{dtype_of(x)}, weight: {np.shape(weight)} {dtype_of(weight)}, **{kwargs!r})",
                lambda: fastconv.conv3d_backward(grad, x, weight, **kwargs), errors,
                (lambda: conv3d_backward_oracle(p, grad, x, weight)) if may_return else None,
                compare, (x, weight, grad))


@st.composite
def conv_transpose3d_cases(draw):
    clean = draw(st.integers(0, 3)) > 0
    fn = "conv_transpose3d"
    layout_arg, x, weight, bias, groups = draw(conv3d_arrays(clean, transposed=True))
    stride_arg = draw(triple_value(1, 2, clean=clean))
    dilation_arg = draw(triple_value(1, 2, clean=clean))
    padding_arg = draw(padding_3d_value(clean=clean) if clean
                       else weighted((8, padding_3d_value()), (1, st.just("same"))))
    output_padding_arg = draw(weighted((3, st.just(0)), (2, triple_value(
        0, 1, minimum=0, huge=False, clean=clean))))
    mode_arg = draw(weighted((10, st.just("zeros")), (0 if clean else 1, MODE_ARGS)))
    problems = Problems()
    p = conv3d_model(problems, fn, x, weight, bias, groups, stride_arg, padding_arg,
                     dilation_arg, layout_arg, mode_arg, transposed=True,
                     output_padding_arg=output_padding_arg)
    out = None
    if p is not None:
        out = draw(out_buffer(p["shape"], p["dtype"], [x, weight, bias], clean=clean))
        check_out(problems, fn, out, p["shape"], p["dtype"], [x, weight, bias])

    def expected():
        if math.prod(p["shape"]) == 0:
            return np.zeros(p["shape"], p["dtype"])
        layout, batched = p["layout"], p["batched"]
        x5 = np.array(x) if batched else np.array(x)[None]
        y = reference.conv_transpose3d(to_ndhwc(x5, layout), as_dhwio(weight, layout),
                                       p["stride"], p["padding"], p["out_pad"], p["groups"],
                                       p["dilation"])
        if bias is not None:
            y = y + np.array(bias)
        y = from_ndhwc(y.astype(p["dtype"]), layout)
        return y if batched else y[0]

    kwargs = dict(stride=stride_arg, padding=padding_arg, output_padding=output_padding_arg,
                  groups=groups, dilation=dilation_arg, layout=layout_arg,
                  padding_mode=mode_arg)
    if out is not None:
        kwargs["out"] = out
    errors, may_return = settle(problems, [x, weight, bias], p and p["shape"])
    return Case(f"conv_transpose3d(x: {np.shape(x)} {dtype_of(x)}, weight: {np.shape(weight)}"
                f" {dtype_of(weight)}, bias: {None if bias is None else np.shape(bias)}, "
                f"**{kwargs!r})",
                lambda: fastconv.conv_transpose3d(x, weight, bias, **kwargs), errors,
                expected if may_return else None,
                assert_into(out) if out is not None else None, (x, weight, bias))


@st.composite
def conv3d_layer_cases(draw):
    """Conv3D: a valid layer (integer weights), forward then two backward passes, against
    the oracles; or a bad constructor argument."""
    clean = draw(st.integers(0, 3)) > 0
    layout_arg = draw(st.sampled_from(LAYOUTS_3D) if clean else LAYOUT_3D_ARGS)
    layout = parse_layout_3d(layout_arg)
    g = draw(weighted((6, st.just(1)), (2, st.integers(2, 3))))
    cin, cout = draw(st.integers(1, 2)) * g, draw(st.integers(1, 2)) * g
    kernel_arg = draw(triple_value(1, 3, huge=False, clean=True) if clean
                      else weighted((8, triple_value(1, 3, huge=False, clean=True)),
                                    (1, triple_value(1, 3))))
    stride_arg = draw(triple_value(1, 2, huge=False, clean=clean))
    dilation_arg = draw(triple_value(1, 2, huge=False, clean=clean))
    padding_arg = draw(padding_3d_value(strings=True, clean=clean))
    mode_arg = draw(st.sampled_from(MODES_3D) if clean else MODE_ARGS)
    dtype = draw(st.sampled_from(FLOATS))
    fn = "Conv3D"
    problems = Problems()
    if layout is None:
        problems.add(ValueError, rf"^{fn}: layout")
    mode = parse_mode(problems, fn, mode_arg)
    kernel, stride = parse_triple(kernel_arg), parse_triple(stride_arg)
    dilation = parse_triple(dilation_arg)
    for name, value in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        if value is None or max(value) > LIMIT:
            problems.add(ValueError, rf"^{fn}: {name}")
    if isinstance(padding_arg, str):
        if padding_arg.lower() not in ("same", "valid"):
            problems.add(ValueError, rf"^{fn}: padding")
    elif parse_padding_3d(padding_arg) is None:
        problems.add(ValueError, rf"^{fn}: padding")
    kwargs = dict(stride=stride_arg, padding=padding_arg, dilation=dilation_arg, groups=g,
                  padding_mode=mode_arg, layout=layout_arg, dtype=dtype,
                  seed=draw(st.integers(0, 9)))
    text = f"Conv3D({cin}, {cout}, {kernel_arg!r}, **{kwargs!r})"
    if problems:
        return Case(text, lambda: fastconv.Conv3D(cin, cout, kernel_arg, **kwargs), problems)
    n = draw(st.integers(0, 2))
    sizes = tuple(draw(st.integers(0, 4)) for _ in range(3))
    ndim = draw(st.sampled_from([5, 5, 4]))
    x = draw(arrays(volume_shape(ndim, layout, n, cin, sizes), np.dtype(dtype),
                    [o for o in MEMORY_ORDERS if o != "list"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if isinstance(padding_arg, str):
        padding = (((0, 0),) * 3 if padding_arg.lower() == "valid" else tuple(
            same_1d(size, k, s, d) for size, k, s, d in zip(sizes, kernel, stride, dilation)))
    else:
        padding = parse_padding_3d(padding_arg)
    outs = window_3d(problems, "Conv3D.forward", sizes, kernel, stride, padding, dilation,
                     mode)
    shape = None
    if outs is not None:
        full = (n, cout) + outs if layout == "NCDHW" else (n,) + outs + (cout,)
        shape = full if ndim == 5 else full[1:]

    def call():
        layer = fastconv.Conv3D(cin, cout, kernel_arg, **kwargs)
        layer.weight[...] = fill(rng, layer.weight.shape, np.dtype(dtype))
        layer.bias[...] = fill(rng, layer.bias.shape, np.dtype(dtype))
        y = layer(x)
        grad = fill(rng, y.shape, np.dtype(dtype))
        first = layer.backward(grad)
        np.testing.assert_array_equal(first, layer.backward(grad))
        return layer, y, grad, first

    def compare(result, _):
        layer, y, grad, grad_x = result
        p = dict(layout=layout, dtype=np.dtype(dtype), batched=ndim == 5, stride=stride,
                 padding=padding, dilation=dilation, groups=g, shape=shape, mode=mode)
        assert_same(y, conv3d_oracle(p, x, layer.weight, layer.bias))
        gx, gw, gb = conv3d_backward_oracle(p, grad, x, layer.weight)
        assert_same(grad_x, gx)
        assert_same(layer.weight_grad, 2 * gw)
        assert_same(layer.bias_grad, 2 * gb)

    return Case(f"{text}; forward(x: {np.shape(x)})", call, problems,
                (lambda: None) if not problems else None, compare, (x,))


def im2col_3d_strategy(fn="im2col", arg="x"):
    """im2col / col2im_backward with a 3-tuple kernel_size (docs/spec.md §6)."""
    @st.composite
    def strategy(draw):
        clean = draw(st.integers(0, 3)) > 0
        layout_arg = draw(st.sampled_from(LAYOUTS_3D + ("NCHW", "NHWC")) if clean
                          else LAYOUT_3D_ARGS)
        layout = parse_layout_3d(layout_arg, two_d_names=True)
        n, c = draw(st.integers(0, 2)), draw(st.integers(0, 3))
        sizes = tuple(draw(st.integers(0, 4)) for _ in range(3))
        dtype = draw(dtype_values(movable=True, clean=clean))
        ndim = draw(st.sampled_from([5, 5, 4]) if clean else VOLUME_NDIMS)
        x = draw(arrays(volume_shape(ndim, layout or "NCDHW", n, c, sizes), dtype))
        kernel = tuple(draw(st.integers(0 if not clean else 1, 3)) for _ in range(3))
        kernel_arg = draw(st.sampled_from([kernel, list(kernel), np.array(kernel)]))
        stride_arg = draw(triple_value(1, 2, clean=clean))
        dilation_arg = draw(triple_value(1, 2, clean=clean))
        padding_arg = draw(padding_3d_value(clean=clean))
        mode_arg = draw(st.sampled_from(MODES_3D) if clean else MODE_ARGS)

        problems = Problems()
        if layout is None:
            problems.add(ValueError, rf"^{fn}: layout")
        mode = parse_mode(problems, fn, mode_arg)
        dtype = check_movable(problems, fn, arg, x)
        shape = np.shape(x)
        if len(shape) not in (4, 5):
            problems.add(ValueError, rf"^{fn}: kernel_size=.* means volumes")
        kernel, stride = parse_triple(kernel_arg), parse_triple(stride_arg)
        dilation, padding = parse_triple(dilation_arg), parse_padding_3d(padding_arg)
        for name, value in (("kernel_size", kernel), ("stride", stride),
                            ("dilation", dilation), ("padding", padding)):
            if value is None:
                problems.add(ValueError, rf"^{fn}: {name}")
        result_shape = None
        if layout and len(shape) in (4, 5) and mode is not None:
            shape5 = shape if len(shape) == 5 else (1,) + shape
            n5, c5, s5 = dims_3d(shape5, layout)
            outs = window_3d(problems, fn, s5, kernel, stride, padding, dilation, mode)
            if outs is not None:
                rows, positions = c5 * math.prod(kernel), math.prod(outs)
                full = (n5, rows, positions) if layout == "NCDHW" else (n5, positions, rows)
                ok = check_sizes(problems, full, dtype, [x])
                result_shape = (full if len(shape) == 5 else full[1:]) if ok else None
        out = None
        if result_shape is not None and not problems:
            out = draw(out_buffer(result_shape, dtype, [x], clean=clean))
            check_out(problems, fn, out, result_shape, dtype, [x])

        def expected():
            if math.prod(result_shape) == 0:
                return np.zeros(result_shape, dtype)
            x5 = np.array(x) if len(shape) == 5 else np.array(x)[None]
            cols = reference.im2col3d(x5, kernel, stride, padding, dilation, layout, mode)
            return cols if len(shape) == 5 else cols[0]

        kwargs = dict(stride=stride_arg, padding=padding_arg, dilation=dilation_arg,
                      layout=layout_arg, padding_mode=mode_arg)
        if out is not None:
            kwargs["out"] = out
        function = getattr(fastconv, fn)
        errors, may_return = settle(problems, [x], result_shape)
        return Case(f"{fn}({arg}: {np.shape(x)} {dtype_of(x)}, {kernel_arg!r}, **{kwargs!r})",
                    lambda: function(x, kernel_arg, **kwargs), errors,
                    expected if may_return else None,
                    assert_into(out) if out is not None else None, (x,))
    return strategy()


@st.composite
def col2im_3d_cases(draw):
    """col2im with a 3-tuple kernel_size: columns of the right shape for a drawn geometry
    (sometimes perturbed), folded back into volumes of `output_size`."""
    clean = draw(st.integers(0, 3)) > 0
    fn = "col2im"
    layout_arg = draw(st.sampled_from(LAYOUTS_3D) if clean else LAYOUT_3D_ARGS)
    layout = parse_layout_3d(layout_arg, two_d_names=True)
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(0, 4)) for _ in range(3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(3))
    stride_arg = draw(triple_value(1, 2, huge=False, clean=clean))
    dilation_arg = draw(triple_value(1, 2, huge=False, clean=clean))
    padding_arg = draw(padding_3d_value(clean=clean))
    mode_arg = draw(st.sampled_from(MODES_3D) if clean else MODE_ARGS)
    guess = window_3d(Problems(), fn, sizes, kernel, parse_triple(stride_arg) or (1, 1, 1),
                      parse_padding_3d(padding_arg) or ((0, 0),) * 3,
                      parse_triple(dilation_arg) or (1, 1, 1))
    positions = math.prod(guess) if guess is not None else draw(st.integers(0, 3))
    rows = c * math.prod(kernel)
    change = "none" if clean else draw(st.sampled_from(["none"] * 12 + ["rows", "positions",
                                                                       "ndim", "size"]))
    rows += draw(st.sampled_from([-1, 1])) if change == "rows" else 0
    positions += 1 if change == "positions" else 0
    batched = draw(st.booleans())
    shape = (n, rows, positions) if layout != "NDHWC" else (n, positions, rows)
    shape = shape if batched else shape[1:]
    if change == "ndim":
        shape = shape[-1:]
    dtype = draw(dtype_values(movable=True, clean=clean))
    cols = draw(arrays(shape, dtype, [o for o in MEMORY_ORDERS if o != "list"]))
    size_arg = sizes if change != "size" else draw(st.sampled_from([sizes[:2], -1, None]))

    problems = Problems()
    if layout is None:
        problems.add(ValueError, rf"^{fn}: layout")
    mode = parse_mode(problems, fn, mode_arg)
    dtype = check_movable(problems, fn, "cols", cols, allow_bool=False)
    if len(shape) not in (2, 3):
        problems.add(ValueError, rf"^{fn}: expected cols of shape")
    size = parse_triple(size_arg, minimum=0)
    stride, dilation = parse_triple(stride_arg), parse_triple(dilation_arg)
    padding = parse_padding_3d(padding_arg)
    for name, value in (("output_size", size), ("stride", stride), ("dilation", dilation),
                        ("padding", padding)):
        if value is None:
            problems.add(ValueError, rf"^{fn}: {name}")
    result_shape = None
    if layout and len(shape) in (2, 3) and mode is not None:
        cols3 = shape if len(shape) == 3 else (1,) + shape
        rows3 = cols3[1] if layout == "NCDHW" else cols3[2]
        taps = math.prod(kernel)
        if rows3 == 0 or rows3 % taps:
            problems.add(ValueError, rf"^{fn}: cols has \d+ (rows|columns)")
        elif size is not None:
            outs = window_3d(problems, fn, size, kernel, stride, padding, dilation, mode)
            if outs is not None:
                if (cols3[2] if layout == "NCDHW" else cols3[1]) != math.prod(outs):
                    problems.add(ValueError, rf"^{fn}: cols has \d+ sliding-window")
                else:
                    image = ((cols3[0], rows3 // taps) + size if layout == "NCDHW"
                             else (cols3[0],) + size + (rows3 // taps,))
                    result_shape = image if len(shape) == 3 else image[1:]

    def expected():
        if math.prod(result_shape) == 0:
            return np.zeros(result_shape, dtype)
        cols3 = np.array(cols) if len(shape) == 3 else np.array(cols)[None]
        if cols3.size == 0:
            return np.zeros(result_shape, dtype)
        image = reference.col2im3d(cols3, size, kernel, stride, padding, dilation, layout,
                                   mode)
        return image if len(shape) == 3 else image[0]

    kwargs = dict(stride=stride_arg, padding=padding_arg, dilation=dilation_arg,
                  layout=layout_arg, padding_mode=mode_arg)
    errors, may_return = settle(problems, [cols], result_shape)
    return Case(f"col2im(cols: {shape} {dtype_of(cols)}, {size_arg!r}, {kernel}, **{kwargs!r})",
                lambda: fastconv.col2im(cols, size_arg, kernel, **kwargs), errors,
                expected if may_return else None, None, (cols,))


# ================================================================== the table
# name → strategy drawing a Case. New public functions add a row (see the module docstring).
TARGETS = {
    "im2col": im2col_strategy(),
    "col2im_backward": im2col_strategy("col2im_backward", "grad_image"),
    "col2im": col2im_cases(),
    "im2col_backward": col2im_cases("im2col_backward"),
    "conv2d": conv2d_cases(),
    "conv2d_backward": conv2d_backward_cases(),
    "conv_transpose2d": conv_transpose2d_cases(),
    "space_to_batch": space_to_batch_strategy(),
    "batch_to_space_backward": space_to_batch_strategy("batch_to_space_backward"),
    "batch_to_space": batch_to_space_strategy(),
    "space_to_batch_backward": batch_to_space_strategy("space_to_batch_backward"),
    "atrous_conv2d": atrous_conv2d_cases(),
    "rmac_regions": rmac_regions_cases(),
    "roi_max_pool": roi_max_pool_cases(),
    "rmac": rmac_cases(),
    "Conv2D": conv2d_layer_cases(),
    "ConvGeometry": conv_geometry_cases(),
    "threads": threads_cases(),
    "conv1d": conv1d_cases(),
    "conv1d_backward": conv1d_backward_cases(),
    "conv_transpose1d": conv_transpose1d_cases(),
    "Conv1D": conv1d_layer_cases(),
    "im2col_1d": im2col_1d_strategy(),
    "col2im_backward_1d": im2col_1d_strategy("col2im_backward", "grad_image"),
    "col2im_1d": col2im_1d_cases(),
    "conv3d": conv3d_cases(),
    "conv3d_backward": conv3d_backward_cases(),
    "conv_transpose3d": conv_transpose3d_cases(),
    "Conv3D": conv3d_layer_cases(),
    "im2col_3d": im2col_3d_strategy(),
    "col2im_backward_3d": im2col_3d_strategy("col2im_backward", "grad_image"),
    "col2im_3d": col2im_3d_cases(),
}


@pytest.mark.parametrize("name", list(TARGETS))
@settings(PROFILE)
@given(data=st.data())
def test_fuzz(name, data):
    run_case(data.draw(TARGETS[name], label=name))


# ================================================================== former deviations
# Reproducers of calls the model once had to reject as "KNOWN DEVIATION" (see the module
# notes); all four are fixed and stay here as regression tests.
def test_atrous_large_rate_small_image():
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    weight = np.full((1, 1, 1, 1), 2, np.float32)
    assert_same(fastconv.conv2d(x, weight, dilation=2**20), 2 * x)
    assert_same(fastconv.atrous_conv2d(x, weight, 2**20), 2 * x)


def test_atrous_rate_limit_message():
    with pytest.raises(ValueError, match=r"^atrous_conv2d: rate"):
        fastconv.atrous_conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), 2**62 + 1)


def test_atrous_blas_range_message():
    x = np.zeros((0, 1, 2**20, 2**20), np.float32)  # an empty batch of huge maps
    weight = np.ones((1, 1, 1, 1), np.float32)
    for rate in (1, 2):
        try:
            y = fastconv.atrous_conv2d(x, weight, rate)
        except ValueError as error:
            assert str(error).startswith("atrous_conv2d: "), str(error)
        else:
            assert y.shape == x.shape


def test_rmac_whitened_empty_channels_eps0():
    x = np.zeros((2, 0, 5, 5))
    whiten = (np.zeros(0), np.zeros((3, 0)))
    with np.errstate(invalid="ignore"):
        expected = reference.rmac(x, eps=0, whiten=whiten)
    assert np.isnan(expected).all()
    np.testing.assert_array_equal(fastconv.rmac(x, eps=0, whiten=whiten), expected)
