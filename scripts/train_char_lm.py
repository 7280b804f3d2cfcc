#!/usr/bin/env python
"""Character-level language model on the bundled text (Pride and Prejudice): LSTM with truncated BPTT.

A thin command line over `jaxdl.recipes.char_lm` (the data, the models, the loss and the
sampling are described in its docstring). Prints one line per epoch with the validation bits
per character, a sample every ``--sample-every`` epochs, and at the end the validation (and,
with ``--test``, test) bits per character beside the uniform baseline log2(V).

Usage:
    python scripts/train_char_lm.py                          # LSTM(256), 5 epochs, a few minutes on 2 cores
    python scripts/train_char_lm.py --epochs 1 --max-batches 50 --sample-every 0
    python scripts/train_char_lm.py --test --output-dir runs/char_lstm
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxdl.compilation_cache import enable_compilation_cache  # noqa: E402
from jaxdl.recipes import cli  # noqa: E402
from jaxdl.recipes.char_lm import MODELS, CharLMConfig, train_char_lm, uniform_bits  # noqa: E402

SCRIPT = "train_char_lm.py"
DEFAULTS = CharLMConfig()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--model", choices=MODELS, default=DEFAULTS.model, help=f"the model (default {DEFAULTS.model})")
    add("--hidden", type=cli.positive_int, default=DEFAULTS.hidden, help=f"LSTM hidden size (default {DEFAULTS.hidden})")
    add("--batch", type=cli.positive_int, default=DEFAULTS.batch,
        help=f"parallel streams per training batch (default {DEFAULTS.batch})")
    add("--length", type=cli.positive_int, default=DEFAULTS.length,
        help=f"characters per window, the truncated-BPTT length (default {DEFAULTS.length})")
    add("--eval-batch", type=cli.positive_int, default=DEFAULTS.eval_batch,
        help=f"parallel streams of the validation and test text (default {DEFAULTS.eval_batch})")
    add("--epochs", type=cli.positive_int, default=DEFAULTS.epochs, help=f"epochs (default {DEFAULTS.epochs})")
    add("--max-batches", type=cli.positive_int, default=None, help="at most this many batches per epoch (default: all)")
    add("--learning-rate", type=cli.positive_float, default=DEFAULTS.learning_rate,
        help=f"Adam's learning rate (default {DEFAULTS.learning_rate})")
    add("--clip", type=cli.positive_float, default=DEFAULTS.clip,
        help=f"clip gradients to this global norm (default {DEFAULTS.clip})")
    add("--seed", type=cli.seed, default=DEFAULTS.seed, help=f"seed (default {DEFAULTS.seed})")
    add("--max-chars", type=cli.positive_int, default=None, help="use only the text's first characters (default: all)")
    add("--sample-every", type=cli.non_negative_int, default=DEFAULTS.sample_every,
        help=f"print a sample after every this many epochs, 0 for none (default {DEFAULTS.sample_every})")
    add("--sample-length", type=cli.positive_int, default=DEFAULTS.sample_length,
        help=f"characters per sample (default {DEFAULTS.sample_length})")
    add("--temperature", type=cli.positive_float, default=DEFAULTS.temperature,
        help=f"sampling temperature (default {DEFAULTS.temperature})")
    add("--corpus", type=cli.path, default=None, help="a UTF-8 text file instead of the bundled corpus")
    add("--output-dir", type=cli.path, default=None, help="write checkpoints and metrics here (default: nothing written)")
    add("--overwrite", action="store_true", help="start anew in an --output-dir that holds an old run")
    add("--test", action="store_true", help="also report the test bits per character (once, for the chosen setting)")
    add("--progress", action="store_true", help="show a progress bar")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> CharLMConfig:
    return CharLMConfig(model=args.model, hidden=args.hidden, batch=args.batch, length=args.length,
                        eval_batch=args.eval_batch, epochs=args.epochs, max_batches=args.max_batches,
                        learning_rate=args.learning_rate, clip=args.clip, seed=args.seed, max_chars=args.max_chars,
                        sample_every=args.sample_every, sample_length=args.sample_length,
                        temperature=args.temperature, corpus=args.corpus)


def main(argv=None):
    args = parse_args(argv)
    try:
        config = config_from(args)
        result = train_char_lm(config, test=args.test, output_dir=args.output_dir, overwrite=args.overwrite,
                               progress=args.progress)
    except (ValueError, TypeError, FileNotFoundError) as error:
        cli.report_error(SCRIPT, error)
        sys.exit(2)
    print(f"{config.model}: validation {result.validation_bits:.3f} bits/char"
          + (f", test {result.test_bits:.3f} bits/char" if result.test_bits is not None else "")
          + f" (uniform {uniform_bits(result.vocabulary):.3f}, {result.vocabulary.size} characters); "
            f"{result.steps} steps in {result.seconds:.0f} s ({result.steps_per_second:.1f} steps/s)")
    return result


if __name__ == "__main__":
    enable_compilation_cache()
    main()
