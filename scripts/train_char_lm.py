#!/usr/bin/env python
"""Character-level language models on the bundled text (Pride and Prejudice): an LSTM (truncated BPTT) or a Transformer.

A thin command line over `jaxdl.recipes.char_lm` (the data, the models, the loss and the
sampling are described in its docstring). Prints one line per epoch with the validation bits
per character, a sample every ``--sample-every`` epochs, and at the end the validation (and,
with ``--test``, test) bits per character beside the uniform baseline log2(V).

Usage:
    python scripts/train_char_lm.py                          # LSTM(256), a few minutes on 2 cores
    python scripts/train_char_lm.py --model transformer      # 2 pre-norm blocks of width 64
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
from jaxdl.recipes.char_lm import MODEL_DEFAULTS, MODELS, CharLMConfig, train_char_lm, uniform_bits  # noqa: E402

SCRIPT = "train_char_lm.py"
DEFAULTS = CharLMConfig()
EPOCHS = ", ".join(f"{model} {MODEL_DEFAULTS[model]['epochs']}" for model in MODELS)
RATES = ", ".join(f"{model} {MODEL_DEFAULTS[model]['learning_rate']:g}" for model in MODELS)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--model", choices=MODELS, default=DEFAULTS.model, help=f"the model (default {DEFAULTS.model})")
    add("--hidden", type=cli.positive_int, help=f"LSTM hidden size (default {DEFAULTS.hidden})")
    add("--embed", type=cli.positive_int, help=f"LSTM character embedding size (default {DEFAULTS.embed})")
    add("--width", type=cli.positive_int, help=f"Transformer feature size (default {DEFAULTS.width})")
    add("--layers", type=cli.positive_int, help=f"Transformer blocks (default {DEFAULTS.layers})")
    add("--heads", type=cli.positive_int, help=f"Transformer attention heads (default {DEFAULTS.heads})")
    add("--batch", type=cli.positive_int, help=f"parallel streams per training batch (default {DEFAULTS.batch})")
    add("--length", type=cli.positive_int,
        help=f"characters per window: the truncated-BPTT length, the Transformer's context (default {DEFAULTS.length})")
    add("--eval-batch", type=cli.positive_int,
        help=f"parallel streams of the validation and test text (default {DEFAULTS.eval_batch})")
    add("--epochs", type=cli.positive_int, help=f"epochs (default {EPOCHS})")
    add("--max-batches", type=cli.positive_int, help="at most this many batches per epoch (default: all)")
    add("--learning-rate", type=cli.positive_float, help=f"Adam's learning rate (default {RATES})")
    add("--clip", type=cli.positive_float, help=f"clip gradients to this global norm (default {DEFAULTS.clip})")
    add("--seed", type=cli.seed, help=f"seed (default {DEFAULTS.seed})")
    add("--max-chars", type=cli.positive_int, help="use only the text's first characters (default: all)")
    add("--sample-every", type=cli.non_negative_int,
        help=f"print a sample after every this many epochs, 0 for none (default {DEFAULTS.sample_every})")
    add("--sample-length", type=cli.positive_int, help=f"characters per sample (default {DEFAULTS.sample_length})")
    add("--temperature", type=cli.positive_float, help=f"sampling temperature (default {DEFAULTS.temperature})")
    add("--corpus", type=cli.path, help="a UTF-8 text file instead of the bundled corpus")
    add("--output-dir", type=cli.path, help="write checkpoints and metrics here (default: nothing written)")
    add("--overwrite", action="store_true", help="start anew in an --output-dir that holds an old run")
    add("--test", action="store_true", help="also report the test bits per character (once, for the chosen setting)")
    add("--progress", action="store_true", help="show a progress bar")
    return parser.parse_args(argv)


#: The config fields the options set (each option's name with - for _).
FIELDS = ("hidden", "embed", "width", "layers", "heads", "batch", "length", "eval_batch", "epochs", "max_batches",
          "learning_rate", "clip", "seed", "max_chars", "sample_every", "sample_length", "temperature", "corpus")


def config_from(args: argparse.Namespace) -> CharLMConfig:
    """The model's chosen settings (`MODEL_DEFAULTS`), then the options given."""
    return CharLMConfig.for_model(args.model, **{name: getattr(args, name) for name in FIELDS})


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
