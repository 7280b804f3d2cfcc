"""Command line of jaxdl.exercise: ``python -m jaxdl.exercise scaffold DIR`` and ``check DIR``."""

from __future__ import annotations

import argparse
import sys

from jaxdl.exercise.scaffold import default_mnist_dir, scaffold


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxdl.exercise",
        description="The exercise's object API over jaxdl.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser(
        "scaffold",
        help="write the exercise's layout (Layers/, Optimization/, Models/, NeuralNetwork.py, "
             "TrainLeNet.py, Data/) into DIR as modules re-exporting jaxdl.exercise; never overwrites",
    )
    sub.add_argument("directory", metavar="DIR")
    sub.add_argument("--mnist", default=None, help=f"directory of the MNIST .gz files (default {default_mnist_dir()})")
    sub.add_argument("--copy", action="store_true", help="copy the MNIST files instead of symlinking them")
    checking = commands.add_parser(
        "check",
        help="check a NumPy solution in the course layout (Layers/, Optimization/) method by method against "
             "jaxdl's references; exit 0 only when every class found is OK",
    )
    checking.add_argument("directory", metavar="DIR", help="the solution's src_to_implement folder")
    checking.add_argument("--only", default=None, help="comma-separated classes (or files), e.g. Conv,LSTM")
    checking.add_argument("--json", action="store_true", help="print the report as JSON")
    checking.add_argument("--timeout", type=float, default=None, help="seconds per class before it counts as hanging")
    args = parser.parse_args(argv)
    if args.command == "check":
        from jaxdl.exercise import check

        only = args.only.split(",") if args.only else None
        return check.main(args.directory, only, args.json, args.timeout or check.DEFAULT_TIMEOUT)
    scaffold(args.directory, mnist_dir=args.mnist, link=not args.copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
