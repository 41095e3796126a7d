"""Argument checks shared by every public function (docs/spec.md §0).

Every public function validates here, in Python, before any kernel runs: a kernel only
ever sees shapes and indices that were checked. Errors name the function, the argument,
the value received and what was expected. These names are this module's API for the rest
of the package; none of them is public.
"""
from __future__ import annotations

import operator

import numpy as np

LAYOUTS = ("NCHW", "NHWC")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# BLAS takes its dimensions and leading dimensions as C int.
BLAS_INT_MAX = 2**31 - 1
# The kernels add a few window numbers in Py_ssize_t (e.g. oh·stride − top + i·dilation,
# −offset + stride − 1): bounding each of them, and every padded size, by 2**62 keeps all
# such sums inside int64. No image that fits in memory comes near it.
MAX_WINDOW_VALUE = 2**62


def normalize_layout(layout, fn, layouts=LAYOUTS):
    """'nchw' / 'NHWC' → 'NCHW' / 'NHWC' (or one of `layouts`, e.g. the 1-D or 3-D ones, in
    any case); anything else is a ValueError listing them."""
    if isinstance(layout, str) and layout.upper() in layouts:
        return layout.upper()
    raise ValueError(f"{fn}: layout must be one of {', '.join(map(repr, layouts))} "
                     f"(case-insensitive), got {layout!r}")


def columns_layout(layout, fn, first, last, data):
    """An im2col/col2im layout for 1-D or 3-D `data` ("1-D images (a 1-tuple", "volumes (a
    3-tuple"): `first` or im2col's default 'NCHW' → `first`, `last` or 'NHWC' → `last`
    (the 2-D names serve every dimension); anything else is a ValueError naming both."""
    if isinstance(layout, str):
        if layout.upper() in (first, "NCHW"):
            return first
        if layout.upper() in (last, "NHWC"):
            return last
    raise ValueError(f"{fn}: layout must be one of {first!r}, {last!r} for {data} "
                     f"kernel_size; 'NCHW' / 'NHWC' are read as {first!r} / {last!r}), got "
                     f"{layout!r}")


ALGORITHMS = ("auto", "gemm", "winograd")


def normalize_algorithm(algorithm, fn):
    """'auto' / 'gemm' / 'winograd' in any case → lower case; anything else is a ValueError
    listing them (docs/spec.md §5)."""
    if isinstance(algorithm, str) and algorithm.lower() in ALGORITHMS:
        return algorithm.lower()
    raise ValueError(f"{fn}: algorithm must be one of {', '.join(map(repr, ALGORITHMS))} "
                     f"(case-insensitive), got {algorithm!r}")


def as_int(value, name, fn, minimum):
    """An int >= minimum (bools and floats rejected), else ValueError."""
    if type(value) is int and value >= minimum:  # the common case, first (per-call cost)
        return value
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return number


def _is_sequence(value):
    return isinstance(value, (tuple, list, np.ndarray))


def normalize_pair(value, name, fn, minimum=1):
    """int or (h, w) → (h, w), each an int >= minimum."""
    if type(value) is int and value >= minimum:  # the common cases, first (per-call cost)
        return (value, value)
    if (type(value) is tuple and len(value) == 2 and type(value[0]) is int
            and type(value[1]) is int and min(value) >= minimum):
        return value
    if _is_sequence(value):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {value!r}")
        return tuple(as_int(v, name, fn, minimum) for v in value)
    number = as_int(value, name, fn, minimum)
    return (number, number)


def normalize_padding(value, fn, name="padding"):
    """int, (pad_h, pad_w) or ((top, bottom), (left, right)) → ((top, bottom), (left, right))."""
    if type(value) is int and value >= 0:  # the common cases, first (per-call cost)
        return ((value, value), (value, value))
    if (type(value) is tuple and len(value) == 2
            and all(type(axis) is tuple and len(axis) == 2 and type(axis[0]) is int
                    and type(axis[1]) is int and min(axis) >= 0 for axis in value)):
        return value
    expected = "an int, (pad_h, pad_w) or ((top, bottom), (left, right)) of ints >= 0"
    if not _is_sequence(value):
        try:
            number = as_int(value, name, fn, 0)
        except ValueError:
            raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}") from None
        return ((number, number), (number, number))
    if len(value) != 2:
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    pairs = []
    for axis in value:
        if _is_sequence(axis):
            if len(axis) != 2:
                raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
            pairs.append(tuple(as_int(v, name, fn, 0) for v in axis))
        else:
            number = as_int(axis, name, fn, 0)
            pairs.append((number, number))
    if any(_is_sequence(a) for a in value) and not all(_is_sequence(a) for a in value):
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    return tuple(pairs)


def same_padding(size, kernel, stride, dilation):
    """(before, after) of padding="same" along one axis: TensorFlow's SAME, which is
    PyTorch's "same" at stride 1. The output has ceil(size/stride) positions; the padding
    that takes is split evenly, the odd pixel at the end (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return (total // 2, total - total // 2)


def resolve_conv_padding(padding, kernel_size, stride, dilation, fn, sizes=None):
    """Numeric padding, or 'valid' (none) / 'same' (TensorFlow's SAME: ceil(size/stride)
    outputs, the odd pixel of padding at the end; at stride 1 PyTorch's "same").

    `sizes` are the input's spatial sizes; without them (a layer made before it sees an
    input) a strided 'same' is returned as the string 'same', to be resolved per input."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * len(kernel_size)
        if mode == "same":
            if sizes is None:
                if any(s != 1 for s in stride):
                    return "same"
                sizes = (0,) * len(kernel_size)  # at stride 1 the size does not matter:
                # the total padding is dilation·(k − 1)
            return tuple(same_padding(size, k, s, d)
                         for size, k, s, d in zip(sizes, kernel_size, stride, dilation))
        raise ValueError(f"{fn}: padding must be 'valid', 'same' or a number, got {padding!r}")
    return normalize_padding(padding, fn)


def as_array(x, name, fn):
    """x as an ndarray (array-likes are converted) in native byte order and aligned to its
    element size (a copy when not: kernels load whole elements); object arrays are a
    TypeError."""
    array = np.asarray(x)
    if array.dtype == object:
        raise TypeError(f"{fn}: {name} has unsupported dtype object")
    if not array.dtype.isnative:  # kernels compute in the machine's byte order
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.aligned:
        array = array.copy()
    return array


def normalize_shape(shape, name, fn, ndims=(3, 4)):
    """A shape given as a sequence of ints >= 0 with an allowed length → tuple of ints."""
    try:
        dims = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise ValueError(f"{fn}: {name} must be a tuple of ints, got {shape!r}") from None
    if len(dims) not in ndims:
        raise ValueError(f"{fn}: {name} must have {' or '.join(map(str, ndims))} dimensions, "
                         f"got {dims}")
    if any(d < 0 for d in dims):
        raise ValueError(f"{fn}: {name} must not have negative sizes, got {dims}")
    return dims


def split_columns(cols, name, fn, expected):
    """(cols3, batched) of a column array: 3-D a batch, 2-D one image (a batch of one view);
    any other ndim is a ValueError naming `expected`, the shapes it may have."""
    if cols.ndim == 3:
        return cols, True
    if cols.ndim == 2:
        return cols[np.newaxis], False
    raise ValueError(f"{fn}: expected {name} of shape {expected}, got shape {cols.shape}")


def check_float_dtype(array, name, fn):
    """float32 / float64 only, for arithmetic operators."""
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {array.dtype}")


def check_same_dtype(fn, **arrays):
    """All given arrays share one dtype, else a TypeError naming each."""
    named = [(name, a) for name, a in arrays.items() if a is not None]
    first_name, first = named[0]
    for name, array in named[1:]:
        if array.dtype != first.dtype:
            raise TypeError(f"{fn}: {first_name} has dtype {first.dtype} but {name} has dtype "
                            f"{array.dtype}; convert one (no implicit casting)")


# The shapes of a batch and of one image, per layout (1-D, 2-D and 3-D), for split_batch.
BATCH_SHAPES = {
    "NCL": ("(N, C, L)", "(C, L)"), "NLC": ("(N, L, C)", "(L, C)"),
    "NCHW": ("(N, C, H, W)", "(C, H, W)"), "NHWC": ("(N, H, W, C)", "(H, W, C)"),
    "NCDHW": ("(N, C, D, H, W)", "(C, D, H, W)"), "NDHWC": ("(N, D, H, W, C)", "(D, H, W, C)"),
}


def split_batch(x, name, fn, layout):
    """A batch in `layout` → (x, True); one image (no N axis) → (x[None], False); any other
    ndim is a ValueError naming both shapes."""
    axes, single = BATCH_SHAPES[layout]
    ndim = axes.count(",") + 1
    if x.ndim == ndim:
        return x, True
    if x.ndim == ndim - 1:
        return x[np.newaxis], False
    raise ValueError(f"{fn}: expected {name} of shape {axes} or {single} for layout "
                     f"{layout!r}, got shape {x.shape} ({x.ndim}-D)")


def image_dims(shape4, layout):
    """(N, C, H, W) of a 4-D shape in the given layout."""
    if layout == "NCHW":
        return shape4
    n, h, w, c = shape4
    return (n, c, h, w)


def check_out(out, shape, dtype, inputs, fn):
    """`out` must be a C-contiguous writable ndarray of exact shape and dtype, sharing no memory
    with any input; returns it (or None)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{fn}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: out must have shape {tuple(shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"{fn}: out must have dtype {dtype}, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{fn}: out must be C-contiguous")
    if not out.flags.aligned:
        raise ValueError(f"{fn}: out must be aligned to its {out.dtype.itemsize}-byte elements")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    for array in inputs:
        if array is not None and np.may_share_memory(out, array):
            raise ValueError(f"{fn}: out overlaps an input; pass a separate buffer")
    return out


def check_movable_dtype(x, name, fn, allow_bool=True):
    """float32/float64, any integer, and (for pure copies) bool."""
    kind = x.dtype.kind
    if x.dtype in FLOAT_DTYPES or kind in "iu" or (allow_bool and kind == "b"):
        return
    accepted = "float32, float64, integer" + (" or bool" if allow_bool else "")
    raise TypeError(f"{fn}: {name} must be {accepted}, got dtype {x.dtype}")


# ------------------------------------------------------------------ convolution arguments
def check_conv_arrays(fn, x, weight, bias, x_name="input", weight_ndim=4):
    """ndarrays of float32/float64 sharing one dtype; weight `weight_ndim`-D (4 for 2-D
    convolutions, 3 for 1-D, 5 for 3-D); bias 1-D or None."""
    x = as_array(x, x_name, fn)
    weight = as_array(weight, "weight", fn)
    check_float_dtype(x, x_name, fn)
    check_float_dtype(weight, "weight", fn)
    if bias is not None:
        bias = as_array(bias, "bias", fn)
        check_float_dtype(bias, "bias", fn)
    check_same_dtype(fn, **{x_name: x, "weight": weight, "bias": bias})
    if weight.ndim != weight_ndim:
        raise ValueError(f"{fn}: expected a {weight_ndim}-D weight, got shape {weight.shape}")
    return x, weight, bias


def check_bias(fn, bias, channels):
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"{fn}: expected bias of shape ({channels},), got {bias.shape}")


def check_blas_range(fn, geom):
    """Every GEMM dimension and leading dimension must fit BLAS's C int."""
    m, k, n = geom.gemm_shape
    dims = {"C_out": geom.out_channels, "C_in": geom.in_channels, "K": k, "M": m,
            "OH*OW": n, "H*W": geom.height * geom.width}
    for name, value in dims.items():
        if value > BLAS_INT_MAX:
            raise ValueError(f"{fn}: {name} = {value} exceeds the BLAS int range "
                             f"({BLAS_INT_MAX}); split the input")
