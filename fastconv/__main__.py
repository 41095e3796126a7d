"""Command line: ``python -m fastconv info`` and ``python -m fastconv bench [options]``.

Every command is routed here: ``info`` to :mod:`fastconv.info`, ``bench`` to the sections'
table, ``bench --compare`` to the performance targets and ``bench --network NAME`` to the
whole networks (:mod:`fastconv.bench.cli`).
Bad options end with argparse's usage line, a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys


def build_parser():
    """The argparse parser with the ``info`` and ``bench`` sub-commands."""
    from fastconv.bench import cli

    parser = argparse.ArgumentParser(
        prog="python -m fastconv",
        description="fastconv: build information and benchmarks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    info = commands.add_parser(
        "info", help="version, OpenMP, threads, BLAS and compiler flags",
        description="Print fastconv's build and runtime information.")
    info.add_argument("--json", action="store_true", help="print it as JSON")

    bench_parser = commands.add_parser(
        "bench", help="time fastconv against NumPy and torch",
        description="Time fastconv against a NumPy baseline and torch (when installed) on "
                    "the ResNet/VGG/MobileNet layers of fastconv/data/layers.json; with "
                    "--network, every convolution of whole networks "
                    "(fastconv/data/networks.json) against torch.")
    cli.add_arguments(bench_parser)
    bench_parser.set_defaults(command_parser=bench_parser)  # for its error messages
    return parser


def run_info(args):
    """``python -m fastconv info``."""
    from fastconv.info import build_info, format_build_info

    info = build_info()
    print(json.dumps(info, indent=2) if args.json else format_build_info(info))
    return 0


def run_bench(args):
    """``python -m fastconv bench [--compare | --network NAME]``; bad requests end via the
    bench parser's ``error`` (exit 2)."""
    from fastconv.bench import cli

    parser = args.command_parser
    cli.check_output_targets(args, parser)  # before any timing
    if args.network:
        return cli.run_network(args, parser)
    if args.compare:
        return cli.run_compare(args, parser)
    return cli.run_sections(args, parser)


def main(argv=None):
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return run_info(args)
    try:
        return run_bench(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except MemoryError as error:  # e.g. a --conv or --batch too large for this machine
        print(f"\n{parser.prog} bench: error: out of memory ({error}); try smaller layers "
              "or batches", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
