"""The option types and error reports the scripts' command lines share (``scripts/*.py``).

The one library module that speaks in command-line options: the recipes raise errors that
carry facts (`jaxdl.recipes.lenet.ConfigError`'s ``option`` and ``run_dir``), and
`report_error` phrases them as advice in the scripts' options.

Each is an `argparse` ``type=`` function: it turns an option's text into its value, or
raises `argparse.ArgumentTypeError` with a message that says what was expected and what came,
which argparse prints as ``<script>: error: argument --seed: ...`` with exit status 2, before
anything is loaded or trained. The recipes check their configs again (`jaxdl.recipes.lenet`,
`jaxdl.recipes.delayed_recall`), for callers from Python.

Example:
    >>> parser.add_argument("--learning-rate", type=positive_float)
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

#: Seeds the command lines take: ``[0, 2**32 - 1]``, the range of a 32-bit unsigned seed
#: (`jax.random.key` takes it, and numpy's generators take any of them).
SEED_RANGE = (0, 2**32 - 1)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _checked(text: str, value, ok: bool, expected: str):
    """``value`` when ``ok``, else the `argparse.ArgumentTypeError` "expected <expected>, got <text>"."""
    if not ok:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1.

    Raises:
        argparse.ArgumentTypeError: for other text, naming it.
    """
    value = _integer(text)
    return _checked(text, value, value >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """An integer >= 0.

    Raises:
        argparse.ArgumentTypeError: for other text, naming it.
    """
    value = _integer(text)
    return _checked(text, value, value >= 0, "an integer >= 0")


def seed(text: str) -> int:
    """A seed: an integer in `SEED_RANGE`.

    Raises:
        argparse.ArgumentTypeError: for other text, naming it and the range.
    """
    low, high = SEED_RANGE
    value = _integer(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected a seed in [{low}, {high}], got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, for example: nan, inf and 0 are refused).

    Raises:
        argparse.ArgumentTypeError: for other text, naming it.
    """
    value = _real(text)
    return _checked(text, value, math.isfinite(value) and value > 0, "a finite number > 0")


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a regularization strength, a warm-up length).

    Raises:
        argparse.ArgumentTypeError: for other text, naming it.
    """
    value = _real(text)
    return _checked(text, value, math.isfinite(value) and value >= 0, "a finite number >= 0")


def path(text: str) -> str:
    """A file or directory path: any text but an empty one (``""`` would mean the current
    directory, or the default, without saying so).

    Raises:
        argparse.ArgumentTypeError: for an empty or blank path.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r} (an empty path is not the current "
                                         f"directory: write . for that)")
    return text


#: Advice for an error about a config field (a `ConfigError`'s ``option``), in the scripts' options.
OPTION_ADVICE = {"data_dir": "Point --data-dir at a directory with the four canonical files, or pass --download."}

#: What a command line says for a `jaxdl.checkpoint.RunDirectoryError`'s ``remedy``.
RUN_DIRECTORY_ADVICE = {
    "resume_or_overwrite": "Continue that run with --resume, start it anew with --overwrite, or pass another "
                           "--output-dir.",
    "overwrite": "Pass --overwrite to write the run there (other files are left as they are), or another --output-dir.",
    "start_anew": "Start without --resume.",
}


def report_error(script: str, error: BaseException | str) -> None:
    """Prints ``<script>: error: <error>`` to stderr, as argparse words its own errors, then
    the advice the error's facts call for (``option``: `OPTION_ADVICE`; a run directory's
    ``remedy``: `RUN_DIRECTORY_ADVICE`; ``run_dir``: the command that resumes that run)."""
    print(f"{script}: error: {error}", file=sys.stderr)
    advice = OPTION_ADVICE.get(getattr(error, "option", None)) or RUN_DIRECTORY_ADVICE.get(getattr(error, "remedy", None))
    if advice:
        print(advice, file=sys.stderr)
    run_dir = getattr(error, "run_dir", None)
    if run_dir is not None:
        print(f"Finish that run with: python scripts/train_lenet.py --resume --output-dir {shlex.quote(str(run_dir))}",
              file=sys.stderr)


def print_outputs(result) -> None:
    """Prints where a finished run's outputs are and, when it was evaluated, its test accuracy.

    Args:
        result: a recipe's result with ``fit`` (a `jaxdl.FitResult`) and ``test`` (None, or a
            dict with the best checkpoint's ``epoch`` and test ``accuracy``).
    """
    print(f"Outputs: {result.fit.output_dir}/metrics.csv, metrics.png; checkpoints: last "
          f"{result.fit.checkpoint_dir('last')}, best {result.fit.checkpoint_dir('best')}")
    if result.test is not None:
        print(f"Test accuracy of the best-validation checkpoint (epoch {result.test['epoch']}), evaluated once: "
              f"{100 * result.test['accuracy']:.2f}%")

