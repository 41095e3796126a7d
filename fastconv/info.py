"""Build and runtime information (docs/spec.md §0 'Build info'): ``python -m fastconv info``.

:func:`build_info` collects everything into a plain dict (JSON-serialisable);
:func:`format_build_info` turns it into the text that ``python -m fastconv info`` prints.
Nothing here imports torch: its version is read from the installed package metadata.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys

__all__ = ["build_info", "format_build_info", "print_build_info"]


def _package_version(name):
    """Version of an importable package, or None when it is not installed."""
    try:
        module = __import__(name)
    except ImportError:
        return None
    return getattr(module, "__version__", "unknown")


def _torch_version():
    """torch's version without importing torch (importing it takes seconds); None if absent."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _usable_cpus():
    """CPUs this process may run on (its affinity mask), or None where the OS cannot say."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _openmp_info():
    """OpenMP on/off, fastconv's thread count and the processors OpenMP sees."""
    from fastconv import get_num_threads
    from fastconv._kernels import _openmp

    return {
        "openmp": bool(_openmp.openmp_enabled()),
        "num_threads": get_num_threads(),
        "openmp_num_procs": _openmp.num_procs(),
    }


def _blas_info():
    """threadpoolctl's view of the BLAS libraries scipy and numpy load: (list, error or None)."""
    try:
        from fastconv.threads import blas_info
        libraries = blas_info()
    except Exception as error:  # threadpoolctl missing or failing must not break `info`
        return [], f"{type(error).__name__}: {error}"
    keys = ("internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture", "filepath")
    return [{key: library.get(key) for key in keys} for library in libraries], None


def _compile_info():
    """Compiler flags recorded by setup.py in fastconv/_build_info.py, or None if missing."""
    try:
        _build_info = importlib.import_module("fastconv._build_info")
    except ImportError:
        return None
    return {
        "compile_args": list(getattr(_build_info, "COMPILE_ARGS", [])),
        "link_args": list(getattr(_build_info, "LINK_ARGS", [])),
        "openmp_requested": getattr(_build_info, "OPENMP_REQUESTED", None),
        "cc": getattr(_build_info, "CC", None),
    }


def build_info():
    """Everything ``python -m fastconv info`` reports, as a JSON-serialisable dict.

    Keys: ``fastconv``, ``python``, ``python_executable``, ``platform``, ``numpy``,
    ``scipy``, ``torch`` (None when not installed), ``openmp`` (bool), ``num_threads``
    (``fastconv.get_num_threads()``), ``cpu_count``, ``usable_cpus``, ``openmp_num_procs``,
    ``blas`` (list of dicts from threadpoolctl), ``blas_error`` (None unless threadpoolctl
    failed), ``build`` (compiler flags, None when fastconv/_build_info.py is missing) and
    ``simd`` (the wider instruction sets the CPU has, and the build of each dispatched
    kernel module, see :mod:`fastconv.cpu`) and ``tuning`` (the cache sizes read and the
    tuning constants derived from them and the core count).

    Returns
    -------
    dict
        The keys above.

    Raises
    ------
    None
        A BLAS inspection failure is reported under ``blas_error`` instead.

    Examples
    --------
    >>> from fastconv.info import build_info
    >>> info = build_info()
    >>> info["fastconv"] == fastconv.__version__, isinstance(info["openmp"], bool)
    (True, True)
    """
    import fastconv

    blas, blas_error = _blas_info()
    info = {
        "fastconv": fastconv.__version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "numpy": _package_version("numpy"),
        "scipy": _package_version("scipy"),
        "torch": _torch_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": _usable_cpus(),
    }
    info.update(_openmp_info())
    info["blas"] = blas
    info["blas_error"] = blas_error
    info["build"] = _compile_info()
    info["simd"] = _simd_info()
    info["tuning"] = _tuning_info()
    return info


def _tuning_info():
    """The caches fastconv read and the tuning constants derived from the machine."""
    from fastconv import _tuning, cpu

    tuning = _tuning.active()
    return {"l2_cache_bytes": cpu.l2_cache_bytes(), "l3_cache_bytes": cpu.l3_cache_bytes(),
            "l3_share_bytes": cpu.l3_share_bytes(),
            "derived": {name: {"value": getattr(tuning, name), "from": source}
                        for name, source in _tuning.DERIVED.items()}}


def _simd_info():
    """The instruction sets this CPU offers fastconv, and the build each kernel module uses."""
    from fastconv import _engine, cpu, rmac  # noqa: F401  (they load the dispatched kernels)

    return {"cpu_supports": cpu.supported_isas(), "kernels": cpu.loaded_kernels()}


def _line(label, value):
    return f"  {label:<13} {value}"


def _format_build(build):
    if build is None:
        return [_line("build flags", "unknown (fastconv/_build_info.py missing: "
                                     "build with `python setup.py build_ext --inplace`)")]
    return [
        _line("compiler", build["cc"] or "unknown"),
        _line("compile args", " ".join(build["compile_args"]) or "(none)"),
        _line("link args", " ".join(build["link_args"]) or "(none)"),
    ]


def _format_blas(blas, error):
    lines = ["BLAS (threadpoolctl)"]
    if error is not None:
        return lines + [f"  unavailable: {error}"]
    if not blas:
        return lines + ["  no BLAS library found"]
    for library in blas:
        lines.append(f"  {library['internal_api']} {library['version']} "
                     f"({library['prefix']}), {library['num_threads']} threads, "
                     f"architecture {library['architecture']}, "
                     f"threading {library['threading_layer']}")
        lines.append(f"    {library['filepath']}")
    return lines


def format_build_info(info):
    """The text of ``python -m fastconv info`` for a dict from :func:`build_info`.

    Parameters
    ----------
    info : dict
        As :func:`build_info` returns it.

    Returns
    -------
    str
        Several lines, the first ``fastconv <version>``.

    Raises
    ------
    KeyError
        For a dict that lacks a key of :func:`build_info`.

    Examples
    --------
    >>> from fastconv.info import build_info, format_build_info
    >>> format_build_info(build_info()).splitlines()[0] == f"fastconv {fastconv.__version__}"
    True
    """
    cpus = f"{info['cpu_count']} (os.cpu_count)"
    if info["usable_cpus"] is not None:
        cpus += f", {info['usable_cpus']} usable by this process"
    cpus += f", {info['openmp_num_procs']} seen by OpenMP"
    lines = [
        f"fastconv {info['fastconv']}",
        _line("Python", f"{info['python']} ({info['python_implementation']}, "
                        f"{info['python_executable']})"),
        _line("platform", info["platform"]),
        _line("NumPy", info["numpy"] or "not installed"),
        _line("SciPy", info["scipy"] or "not installed"),
        _line("torch", info["torch"] or "not installed"),
        _line("OpenMP", "on" if info["openmp"] else "off (kernels run on one thread)"),
        _line("threads", f"{info['num_threads']} (fastconv.get_num_threads())"),
        _line("CPUs", cpus),
        _line("SIMD", ", ".join(f"{name} {isa}" for name, isa in info["simd"]["kernels"].items())
              + f" (CPU offers: {', '.join(info['simd']['cpu_supports']) or 'baseline only'})"),
    ]
    lines += _format_build(info["build"])
    lines += _format_blas(info["blas"], info["blas_error"])
    lines += _format_tuning(info["tuning"])
    return "\n".join(lines)


def _format_tuning(tuning):
    lines = [f"Tuning derived from this machine (L2 {tuning['l2_cache_bytes'] >> 10} KiB per "
             f"core, L3 {tuning['l3_cache_bytes'] >> 10} KiB of which "
             f"{tuning['l3_share_bytes'] >> 10} KiB counted; docs/performance.md)"]
    for name, entry in tuning["derived"].items():
        lines.append(f"  {name:<28} {entry['value']} ({entry['from']})")
    return lines


def print_build_info(file=None):
    """Print :func:`build_info` as text (to stdout by default).

    Parameters
    ----------
    file : file-like, optional
        Where to write; ``sys.stdout`` by default.

    Returns
    -------
    None

    Raises
    ------
    OSError
        When `file` cannot be written.

    Examples
    --------
    >>> import io
    >>> from fastconv.info import print_build_info
    >>> text = io.StringIO()
    >>> print_build_info(text)
    >>> "OpenMP" in text.getvalue()
    True
    """
    print(format_build_info(build_info()), file=file or sys.stdout)
