"""Command line of jaxdl.exercise: ``python -m jaxdl.exercise scaffold DIR``."""

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
    args = parser.parse_args(argv)
    scaffold(args.directory, mnist_dir=args.mnist, link=not args.copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
