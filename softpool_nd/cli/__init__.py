"""The ``softpool-nd`` command line: ``info``, ``demo`` and ``bench``.

Exit status: 0 on success, 1 when a command fails (one line on stderr, no
traceback), 2 for a usage error (argparse's convention), 130 on Ctrl-C.

Examples
--------
>>> from softpool_nd.cli import main
>>> main(["demo", "--kernel", "0"])  # doctest: +SKIP
2
"""

import argparse
import os
import sys

from ._errors import CLIError

__all__ = ["main", "build_parser", "CLIError"]

_PROG = "softpool-nd"


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be finite")
    return value


def _info(args):
    from .info import report

    print(report())
    return 0


def _demo(args):
    from .demo import run

    return run(args)


def _bench(args):
    from .bench import run

    return run(quick=args.quick)


def build_parser():
    """The argparse parser of ``softpool-nd`` with its three subcommands."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="SoftPool (softmax-weighted pooling) for N-d arrays: see what it does, check the install, time it.",
        epilog="Start with: softpool-nd demo",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser(
        "info",
        help="versions, working backends, numba cache",
        description="Show the package and library versions, "
        "which backends work here (CPU threads, GPU name and memory) and where numba caches compiled kernels.",
    )
    info.set_defaults(func=_info)

    demo = sub.add_parser(
        "demo",
        help="downsample an image with SoftPool, average and max pooling",
        description="Downsample an image with SoftPool, average and max pooling; write one PNG with the results "
        "side by side and print how much each keeps (PSNR and SSIM after nearest-neighbour upsampling back "
        "to full size; mean absolute difference between the pooled images). Needs: pip install 'softpool_nd[demo]'.",
    )
    demo.add_argument(
        "--image",
        metavar="PATH",
        help="image file (PNG, JPEG, ... as Pillow reads it); "
        "default: a built-in synthetic scene with fine detail and sharp edges",
    )
    demo.add_argument(
        "--kernel",
        "-k",
        metavar="K",
        type=_positive_int,
        nargs="+",
        default=[2, 4],
        help="pooling kernel(s), stride = kernel (default: 2 4)",
    )
    demo.add_argument(
        "--beta",
        type=_finite_float,
        default=1.0,
        help="SoftPool inverse temperature on pixel values in [0, 1] (default: 1, the paper's SoftPool)",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        default=".",
        help="directory for softpool_demo.png (and softpool_demo_video.gif); default: current directory",
    )
    demo.add_argument(
        "--video",
        action="store_true",
        help="also pool a synthetic 16x96x96 video over time, height and width; writes an animated GIF",
    )
    demo.set_defaults(func=_demo)

    bench = sub.add_parser(
        "bench",
        help="time SoftPool against other pooling on CPU (and GPU)",
        description="Print the CPU comparison table (softpool_nd.bench) and, where CuPy sees a CUDA GPU, the GPU one.",
    )
    bench.add_argument("--quick", action="store_true", help="fewer sizes and repeats, for a first look")
    bench.set_defaults(func=_bench)
    return parser


def main(argv=None):
    """Run ``softpool-nd`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits for --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"{_PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: stop quietly, as Python's docs advise for pipelines
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
