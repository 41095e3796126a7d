"""The ``bench`` command line: its options, and the three runs they ask for (the sections'
table, ``--compare``'s targets, or ``--network``'s whole networks). ``fastconv/__main__.py``
routes to them.

Bad requests end via ``parser.error``: argparse's usage line, a one-line message and exit
code 2.
"""
from __future__ import annotations

import argparse
import json
import os

from fastconv.bench import compare, network
from fastconv.bench.config import DTYPES, LAYOUTS, PADDING_MODES, make_config
from fastconv.bench.plot import check_plot_target, plot_rows
from fastconv.bench.report import format_table, to_json
from fastconv.bench.sections import SECTIONS, run
from fastconv.bench.suite import BenchError, parse_conv, parse_conv1d, parse_conv3d
from fastconv.bench.timing import warn_if_busy

__all__ = ["add_arguments", "check_output_targets", "run_sections", "run_compare",
           "run_network"]


def _positive_int(text):
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _conv_argument(text):
    """argparse type of ``--conv``: :func:`parse_conv`, its errors as argparse's."""
    try:
        return parse_conv(text)
    except BenchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _conv1d_argument(text):
    """argparse type of ``--conv1d``: :func:`parse_conv1d`, its errors as argparse's."""
    try:
        return parse_conv1d(text)
    except BenchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _conv3d_argument(text):
    """argparse type of ``--conv3d``: :func:`parse_conv3d`, its errors as argparse's."""
    try:
        return parse_conv3d(text)
    except BenchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# What ``bench --help`` says below the options about the algorithm= tables.
EPILOG = ("fastconv's columns are algorithm='auto', what users get. On Winograd-eligible "
          "layers (3x3, stride 1, dilation 1, not depthwise) the conv2d, conv2d_backward "
          "and layer sections, and --compare, also time algorithm='gemm' and 'winograd', "
          "round-robin with 'auto' and torch, and print them side by side with their "
          "ratios in a second table (JSON: the algorithm_* and winograd_vs_gemm keys).")


def add_arguments(parser):
    """Add the ``bench`` options to an argparse parser, and its epilog on the algorithm=
    tables."""
    parser.epilog = EPILOG
    parser.add_argument("--layers", nargs="+", metavar="NAME",
                        help="layers of fastconv/data/layers.json, and 1-D layers of the "
                             "conv1d sections (conv1d.64to64.k3, conv1d.64to64.k9, "
                             "audio.frontend) and 3-D layers of the conv3d sections "
                             "(conv3d.32to32.k3), to run (names or globs such as 'resnet50.*'; "
                             "default: all)")
    parser.add_argument("--conv", action="append", type=_conv_argument,
                        metavar="N,C,H,W,O,k,s,p",
                        help="also time your own layer: batch, in channels, height, width, "
                             "out channels, kernel, stride, padding (repeatable; alone, "
                             "only these layers run)")
    parser.add_argument("--conv1d", action="append", type=_conv1d_argument,
                        metavar="N,C,L,O,k,s,p",
                        help="also time your own 1-D layer in the conv1d sections: batch, "
                             "in channels, length, out channels, kernel, stride, padding "
                             "(repeatable; alone, only these layers run)")
    parser.add_argument("--conv3d", action="append", type=_conv3d_argument,
                        metavar="N,C,D,H,W,O,k,s,p",
                        help="also time your own 3-D layer in the conv3d sections: batch, "
                             "in channels, depth, height, width, out channels, kernel, "
                             "stride, padding (repeatable; alone, only these layers run)")
    parser.add_argument("--batch", nargs="+", type=_positive_int, metavar="N",
                        help="batch sizes (default: each layer's own, normally 1 and 8)")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="threads for fastconv and torch (default: "
                             "fastconv.get_num_threads())")
    parser.add_argument("--layout", type=str.upper, choices=LAYOUTS,
                        help="image layout (default NCHW, and both with --compare and "
                             "--network; torch runs NCHW, with --network NHWC torch's "
                             "channels_last)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="element type (default float32)")
    parser.add_argument("--padding-mode", choices=PADDING_MODES, default="reflect",
                        help="the padding_mode section's mode, timed against zero padding "
                             "on the same layers (default reflect)")
    parser.add_argument("--ops", nargs="+", choices=list(SECTIONS), metavar="OP",
                        help=f"sections to run, from {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--full", action="store_true",
                        help="more repeats per measurement (slower, steadier)")
    parser.add_argument("--repeats", type=_positive_int, metavar="N",
                        help="exactly N timed samples per measurement (overrides --full; "
                             "a call slower than 1 s is still timed once)")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the torch baseline even when torch is installed")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the rates as a bar chart per operator into FILE.png "
                             "(needs matplotlib: pip install \"fastconv[plot]\")")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    parser.add_argument("--compare", action="store_true",
                        help="the performance targets instead of the sections: conv2d "
                             "forward and backward vs torch (NumPy without torch), GEMM "
                             "efficiency and 1->N thread speed-up per layer, batches 1 and "
                             "8, both layouts, algorithm='gemm' and 'winograd' side by side "
                             "on the Winograd-eligible layers, then each target checked")
    parser.add_argument("--network", nargs="+", action="extend",
                        choices=[*network.NETWORKS, network.ALL], metavar="NAME",
                        help="whole networks instead of the sections: every convolution "
                             "of NAME (" + ", ".join(network.NETWORKS) + ", or all; "
                             "repeatable) from fastconv/data/networks.json, conv2d forward "
                             "and backward (input and weight gradients, no bias) vs torch, "
                             "per shape and summed over the network (count x time); "
                             "batches 1 and 8 and both layouts unless --batch / --layout "
                             "(NHWC: torch channels_last)")


def check_output_targets(args, parser):
    """``--json`` and ``--plot`` can be written (checked before any timing)."""
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(directory):
            parser.error(f"--json: directory {directory!r} does not exist")
    if args.plot:
        check_plot_target(args.plot, parser)


def _write_json(path, document):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")


def run_sections(args, parser):
    """``bench``: time the sections and print their table; returns the exit code."""
    try:
        config = make_config(layers=args.layers, batches=args.batch,
                             layout=args.layout or "NCHW",
                             dtype=args.dtype, threads=args.threads, full=args.full,
                             ops=args.ops, use_torch=not args.no_torch, repeats=args.repeats,
                             user_layers=args.conv, user_signals=args.conv1d,
                             padding_mode=args.padding_mode, user_volumes=args.conv3d)
    except BenchError as error:
        parser.error(str(error))
    warn_if_busy()
    rows = run(config, progress=not args.quiet)
    print(format_table(rows, config))
    if args.plot:
        plot_rows(rows, config, args.plot)
    if args.json:
        _write_json(args.json, to_json(rows, config))
    return 0


def _run_report(args, parser, module, make_config, refused, purpose, **selection):
    """The shared course of ``--network`` and ``--compare``: refuse the options `refused`
    (pairs of name and value) with `purpose` in the message, make the config by
    `make_config` from `selection` and the common options, run `module`, print its report,
    write --json; returns the exit code."""
    for option, given in refused:
        if given:
            parser.error(f"{purpose}; it takes no {option}")
    try:
        config = make_config(
            **selection, batches=args.batch,
            layouts=(args.layout,) if args.layout else LAYOUTS, dtype=args.dtype,
            threads=args.threads, full=args.full, use_torch=not args.no_torch,
            repeats=args.repeats)
    except BenchError as error:
        parser.error(str(error))
    warn_if_busy()
    rows = module.run(config, progress=not args.quiet)
    print(module.format_report(rows, config))
    if args.json:
        _write_json(args.json, module.to_json(rows, config))
    return 0


def run_network(args, parser):
    """``bench --network NAME``: the per-shape and whole-network tables of
    :mod:`fastconv.bench.network`; returns the exit code."""
    return _run_report(
        args, parser, network, network.make_network_config,
        (("--compare", args.compare), ("--ops", args.ops), ("--layers", args.layers),
         ("--conv", args.conv), ("--conv1d", args.conv1d), ("--conv3d", args.conv3d),
         ("--plot", args.plot)),
        "--network times the networks' convolutions, forward and backward",
        networks=args.network)


def run_compare(args, parser):
    """``bench --compare``: the table of :mod:`fastconv.bench.compare`; returns the exit
    code."""
    return _run_report(
        args, parser, compare, compare.make_compare_config,
        (("--ops", args.ops), ("--conv", args.conv), ("--conv1d", args.conv1d),
         ("--conv3d", args.conv3d), ("--plot", args.plot)),
        "--compare runs conv2d forward and backward on the suite's layers",
        layers=args.layers)
