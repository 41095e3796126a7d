"""Which build of an arithmetic kernel module runs on this CPU.

The default build is portable (x86-64 baseline: SSE2, no fused multiply-add), so loops the
compiler vectorises run four floats wide. For the kernels whose time is arithmetic rather
than memory traffic (the direct depthwise loops), setup.py also compiles the same code for
AVX2 + FMA and for AVX-512 (``_NAME_avx2`` / ``_NAME_avx512``, see its ``ISA_FLAGS``);
:func:`load_kernel` imports the widest one whose instructions this CPU has, as NumPy
dispatches its own loops. The GEMMs need none of this: OpenBLAS picks its kernels at run
time by itself.

``FASTCONV_SIMD=baseline|avx2|avx512`` (read at import) caps the choice, e.g. to compare
builds or to rule one out; an unknown value is a ValueError naming the accepted ones.
"""
from __future__ import annotations

import importlib
import os

__all__ = ["ISAS", "cpu_features", "supported_isas", "requested_isa", "load_kernel",
           "loaded_kernels", "l2_cache_bytes", "l3_cache_bytes", "l3_share_bytes",
           "L3_MAX_BYTES_PER_CPU"]

# The most L3 cache the planner counts on per CPU that shares it. No x86 part has much more
# per core (AMD's 3D V-Cache parts 12 MiB, Intel Xeons 1.4–5 MiB); a virtual machine may
# report its host socket's whole L3 for a couple of vCPUs (300 MiB for two on an Intel Xeon
# here), most of it other tenants' (docs/performance.md#l3-share).
L3_MAX_BYTES_PER_CPU = 16 << 20

# Widest first: (name, the CPU features it needs, as NumPy names them).
ISAS = (
    ("avx512", ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX2", "FMA3")),
    ("avx2", ("AVX", "AVX2", "FMA3", "F16C")),
)
_ORDER = ["baseline"] + [name for name, _ in reversed(ISAS)]

# module name -> the ISA of the build that load_kernel imported
_loaded = {}


def cpu_features():
    """NumPy's run-time CPU feature detection: {name: bool}; empty where it is unavailable
    (then only the baseline builds are used).

    Returns
    -------
    dict of str to bool

    Raises
    ------
    None
        It never raises.

    Examples
    --------
    >>> from fastconv.cpu import cpu_features
    >>> isinstance(cpu_features().get("AVX2", False), bool)
    True
    """
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            return dict(importlib.import_module(module).__cpu_features__)
        except (ImportError, AttributeError):
            continue
    return {}


def supported_isas(features=None):
    """The ISAs of ``ISAS`` this CPU supports, widest first.

    Parameters
    ----------
    features : dict of str to bool, optional
        CPU features as :func:`cpu_features` returns them (default: this CPU's).

    Returns
    -------
    list of str
        A subset of ``["avx512", "avx2"]``.

    Raises
    ------
    None
        It never raises.

    Examples
    --------
    >>> from fastconv.cpu import supported_isas
    >>> supported_isas({"AVX": True, "AVX2": True, "FMA3": True, "F16C": True})
    ['avx2']
    """
    features = cpu_features() if features is None else features
    return [name for name, needs in ISAS if all(features.get(flag) for flag in needs)]


def requested_isa(environ=None):
    """The cap from ``FASTCONV_SIMD`` ('baseline', 'avx2', 'avx512'), or None for no cap.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default: ``os.environ``).

    Returns
    -------
    str or None

    Raises
    ------
    ValueError
        For an unknown value, naming the accepted ones.

    Examples
    --------
    >>> from fastconv.cpu import requested_isa
    >>> requested_isa({"FASTCONV_SIMD": "AVX2"}), requested_isa({})
    ('avx2', None)
    """
    value = (os.environ if environ is None else environ).get("FASTCONV_SIMD", "").strip()
    if value.lower() in ("", "auto"):
        return None
    if value.lower() not in _ORDER:
        raise ValueError(f"FASTCONV_SIMD must be one of auto, {', '.join(_ORDER)}; "
                         f"got {value!r}")
    return value.lower()


def load_kernel(name, *, features=None, environ=None):
    """Import ``fastconv._kernels.<name>`` in its widest build this CPU runs (and that was
    built, and that FASTCONV_SIMD allows); the baseline build otherwise.

    Parameters
    ----------
    name : str
        A kernel module, e.g. ``"_conv"``.
    features : dict of str to bool, optional
        CPU features (default: this CPU's).
    environ : mapping, optional
        The environment whose ``FASTCONV_SIMD`` caps the choice (default: ``os.environ``).

    Returns
    -------
    module

    Raises
    ------
    ImportError
        When not even the baseline build of `name` exists.
    ValueError
        For an unknown ``FASTCONV_SIMD``.

    Examples
    --------
    >>> from fastconv.cpu import load_kernel
    >>> load_kernel("_conv").__name__        # e.g. 'fastconv._kernels._conv_avx512'
    'fastconv._kernels._conv...'
    """
    cap = requested_isa(environ)
    allowed = _ORDER[:_ORDER.index(cap) + 1] if cap else _ORDER
    for isa in supported_isas(features):
        if isa not in allowed:
            continue
        try:
            module = importlib.import_module(f"fastconv._kernels.{name}_{isa}")
        except ImportError:  # not built: the compiler lacked the flags, or FASTCONV_NO_SIMD
            continue
        _loaded[name] = isa
        return module
    _loaded[name] = "baseline"
    return importlib.import_module(f"fastconv._kernels.{name}")


def loaded_kernels():
    """{module name: the ISA of the build in use} for the modules loaded so far.

    Returns
    -------
    dict of str to str

    Raises
    ------
    None
        It never raises.

    Examples
    --------
    >>> from fastconv.cpu import loaded_kernels
    >>> loaded_kernels()["_conv"] in ("baseline", "avx2", "avx512")
    True
    """
    return dict(_loaded)


def l2_cache_bytes(default=1 << 20):
    """Bytes of one core's L2 cache as Linux reports it (sysfs), else `default`.

    Parameters
    ----------
    default : int

    Returns
    -------
    int

    Raises
    ------
    None
        Unreadable sysfs entries give `default`.

    Examples
    --------
    >>> from fastconv.cpu import l2_cache_bytes
    >>> l2_cache_bytes() > 0
    True
    """
    return _cache_bytes(2, default)


def l3_cache_bytes(default=16 << 20):
    """Bytes of the L3 cache cpu0 shares, as Linux reports it (sysfs), else `default`.

    Parameters
    ----------
    default : int

    Returns
    -------
    int

    Raises
    ------
    None
        Unreadable sysfs entries give `default`.

    Examples
    --------
    >>> from fastconv.cpu import l3_cache_bytes
    >>> l3_cache_bytes() > 0
    True
    """
    return _cache_bytes(3, default)


def l3_share_bytes(default=16 << 20):
    """Bytes of L3 cache the planner counts on: :func:`l3_cache_bytes`, at most
    L3_MAX_BYTES_PER_CPU for each CPU that Linux says shares it (else each CPU of
    ``os.cpu_count()``).

    Parameters
    ----------
    default : int
        The L3 size assumed when sysfs does not say.

    Returns
    -------
    int

    Raises
    ------
    None
        Unreadable sysfs entries give `default` (and ``os.cpu_count()`` sharers).

    Examples
    --------
    >>> from fastconv.cpu import l3_cache_bytes, l3_share_bytes
    >>> 0 < l3_share_bytes() <= l3_cache_bytes()
    True
    """
    sharers = _cache_sharers(3) or os.cpu_count() or 1
    return min(l3_cache_bytes(default), sharers * L3_MAX_BYTES_PER_CPU)


def _cache_sharers(level):
    """How many CPUs share cpu0's cache of this level (sysfs shared_cpu_list), or 0."""
    cpu_list = _cache_entry(level, "shared_cpu_list")
    try:
        return _count_cpus(cpu_list) if cpu_list else 0
    except ValueError:
        return 0


def _count_cpus(cpu_list):
    """The number of CPUs in a Linux CPU list such as ``"0-3,8,10-11"``."""
    count = 0
    for part in cpu_list.strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _cache_bytes(level, default):
    size = (_cache_entry(level, "size") or "").upper()
    units = {"K": 1 << 10, "M": 1 << 20}
    try:
        return int(size[:-1]) * units[size[-1]] if size[-1:] in units else int(size)
    except ValueError:
        return default


def _cache_entry(level, name):
    """The text of sysfs file `name` of cpu0's cache of this level, or None."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            with open(os.path.join(base, index, "level")) as handle:
                if handle.read().strip() != str(level):
                    continue
            with open(os.path.join(base, index, name)) as handle:
                return handle.read().strip()
    except OSError:
        pass
    return None
