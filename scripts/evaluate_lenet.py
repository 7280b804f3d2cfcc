#!/usr/bin/env python
"""Evaluates a LeNet checkpoint on MNIST: accuracy, confusion matrix, misclassified digits.

    python scripts/evaluate_lenet.py [CHECKPOINT] [--split test|validation] [--grid PATH]
                                     [--data-dir DIR] [--cache-dir DIR] [--download]

CHECKPOINT defaults to runs/lenet: a run directory (or its checkpoints/) stands for its best
step, checkpoints/step_<n> (`jaxdl.recipes.lenet.checkpoint_to_evaluate`). The model is
rebuilt from the config in the checkpoint's manifest and only its params and state are
restored (safe format, no pickle). Prints the accuracy and the confusion matrix (rows: true digit, columns:
prediction), and writes a PNG grid of misclassified digits (default: misclassified.png
next to the checkpoint directory's run, i.e. <run>/misclassified.png).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

import jax
import numpy as np
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

import jaxdl
from jaxdl import checkpoint, models
from jaxdl.compilation_cache import enable_compilation_cache
from jaxdl.datasets.mnist import Split, load_mnist
from jaxdl.datasets.pipeline import EpochBatches
from jaxdl.recipes import cli
from jaxdl.recipes.lenet import EVAL_BATCH_SIZE, ConfigError, check_mnist_files, checkpoint_to_evaluate, lenet_model

DEFAULT_CHECKPOINT = "runs/lenet"


def restore_model(directory):
    """(model, params, state, manifest) of a checkpoint written by train_lenet.py (the model in
    the run's compute dtype, `jaxdl.recipes.lenet.lenet_model`)."""
    manifest = checkpoint.read_manifest(directory)
    if not manifest.get("model_config"):
        raise checkpoint.CheckpointError(f"Checkpoint {directory} has no model_config to rebuild the model from.")
    # The run's compute dtype, so this evaluation is the one train_lenet.py printed.
    compute_dtype = manifest["metadata"].get("config", {}).get("compute_dtype", "float32")
    model = lenet_model(manifest["model_config"], compute_dtype)
    input_shape = (1, *manifest["metadata"].get("input_shape", models.LENET_INPUT_SHAPE))
    params_template, state_template = jax.eval_shape(lambda: model.init(jax.random.key(0), input_shape))
    params, _ = checkpoint.load_checkpoint(directory, params_template, prefix="params")
    state = {}
    if jax.tree.leaves(state_template):
        state, _ = checkpoint.load_checkpoint(directory, state_template, prefix="state")
    return model, params, state, manifest


def predict_labels(model, params, state, split: Split, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """The arg-max class of each image of ``split`` (int array of shape (n,))."""
    predict = jaxdl.make_predict(model)
    outputs = [np.asarray(predict(params, state, x))
               for x, _ in EpochBatches(split.images, split.labels, batch_size).epoch(0)]
    return np.argmax(np.concatenate(outputs), axis=-1)


def confusion_matrix(labels, predicted, num_classes: int = 10) -> np.ndarray:
    """counts[true, predicted] (int64, num_classes x num_classes)."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predicted)), 1)
    return counts


def format_confusion(confusion: np.ndarray) -> str:
    """The confusion matrix as text: rows are true digits, columns predictions."""
    width = max(5, len(str(confusion.max())) + 1)
    header = "true\\pred" + "".join(f"{c:>{width}}" for c in range(confusion.shape[1]))
    rows = [f"{r:>9}" + "".join(f"{v:>{width}}" for v in row) for r, row in enumerate(confusion)]
    return "\n".join([header, *rows])


def plot_misclassified(path, images, labels, predicted, max_images: int = 64) -> int:
    """Writes a PNG grid of up to ``max_images`` misclassified images; returns how many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predicted))
    wrong = all_wrong[:max_images]
    columns = min(8, max(len(wrong), 1))
    rows = max(math.ceil(len(wrong) / columns), 1)
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, wrong):
        ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{labels[index]} as {predicted[index]}", fontsize=9)
    figure.suptitle(f"Misclassified (true as predicted): {len(wrong)} of {len(all_wrong)} shown", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return len(wrong)


def evaluate_checkpoint(directory, split: Split, *, grid_path=None, batch_size: int = EVAL_BATCH_SIZE,
                        max_images: int = 64) -> dict:
    """Accuracy, confusion matrix and misclassified count of a checkpoint on ``split``.

    Returns:
        ``{"accuracy", "confusion", "misclassified", "predicted", "manifest"}``.
    """
    model, params, state, manifest = restore_model(directory)
    predicted = predict_labels(model, params, state, split, batch_size)
    confusion = confusion_matrix(split.labels, predicted, confusion_size(manifest, split))
    if grid_path is not None:
        plot_misclassified(grid_path, split.images, split.labels, predicted, max_images)
    return {"accuracy": float(np.mean(predicted == split.labels)), "confusion": confusion,
            "misclassified": int(np.sum(predicted != split.labels)), "predicted": predicted, "manifest": manifest}


def confusion_size(manifest, split: Split) -> int:
    return int(manifest["model_config"].get("num_classes", max(10, int(split.labels.max()) + 1)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, type=cli.path,
                        help=f"a checkpoint directory, or a run directory for its best checkpoint "
                             f"(default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--grid", default=None, type=cli.path,
                        help="PNG of misclassified digits (default <run>/misclassified.png)")
    parser.add_argument("--max-images", type=cli.non_negative_int, default=64,
                        help="most misclassified digits in the grid")
    parser.add_argument("--data-dir", default=None, type=cli.path,
                        help="directory with the MNIST .gz files (default: bundled)")
    parser.add_argument("--cache-dir", default=None, type=cli.path,
                        help="tensorflow-datasets cache (default as train_lenet.py)")
    parser.add_argument("--download", action="store_true", help="let tensorflow-datasets download MNIST")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0 done, 2 bad options, checkpoint or data)."""
    args = parse_args(argv)
    try:
        if not args.download:
            check_mnist_files(args.data_dir)
        directory = checkpoint_to_evaluate(args.checkpoint)
        if directory != pathlib.Path(args.checkpoint):
            print(f"Evaluating {directory}, the best checkpoint of {args.checkpoint}")
        manifest = checkpoint.read_manifest(directory)
        validation_size = manifest["metadata"].get("config", {}).get("validation_size", 5000)
        data = load_mnist(args.data_dir, cache_dir=args.cache_dir, download=args.download,
                          validation_size=validation_size)
        split = getattr(data, args.split)
        grid = pathlib.Path(args.grid) if args.grid else directory.resolve().parent.parent / "misclassified.png"
        report = evaluate_checkpoint(directory, split, grid_path=grid, max_images=args.max_images)
    except (ConfigError, FileNotFoundError, checkpoint.CheckpointError, ValueError, NonMatchingChecksumError) as error:
        cli.report_error("evaluate_lenet.py", error)
        return 2
    epoch = manifest["metadata"].get("epoch", "?")
    print(f"Checkpoint {directory} (epoch {epoch}, step {manifest.get('step')}) on the {len(split):,} {args.split} images")
    print(format_confusion(report["confusion"]))
    print(f"Misclassified: {report['misclassified']} (grid of up to {args.max_images}: {grid})")
    print(f"Accuracy: {100 * report['accuracy']:.2f}%")
    return 0


if __name__ == "__main__":
    enable_compilation_cache()
    sys.exit(main())
