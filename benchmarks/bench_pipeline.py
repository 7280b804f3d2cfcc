"""Input pipeline images/s: the grain pipeline against jaxdl's earlier hand-written one, same run.

The earlier pipeline (NumPy batches built in one background thread, ``prefetch``) is read
from git (``--old-rev``, default the last commit that had it) and imported from a temporary
file, so both run in this process on the same data: the MNIST training images (55,000, from
`jaxdl.datasets.load_mnist`), LeNet's batch of 64 (``--batch``), shuffled, shifted by up to 2
pixels, last batch dropped: the LeNet recipe's training source. Two measures, each the median
over ``--rounds`` rounds that alternate the pipelines (the machine is shared: a round's
figures are taken back to back):

* pipeline alone: images/s over one epoch, the consumer doing nothing;
* LeNet training: images/s of the recipe's jitted train step (LeNet, Adam with decoupled L2)
  fed by the pipeline, over ``--steps`` steps after a warm-up (the pipeline's threads compete
  with XLA's for the cores: what ``make train`` sees).

Configurations: ``old`` (prefetch thread, 2 batches ahead) and ``old, no thread``; grain over
in-memory arrays (`ArraySource`) with 0, 1 and 2 threads (4 batches ahead); grain over the
tensorflow-datasets data source (`TfdsSource`: array_record records of uint8 tensors, parsed by
tfds per batch, 2 threads), and, with ``--multiprocessing``, grain's worker processes
(``mp_prefetch``, 1 worker: its start-up is reported apart). Prints a Markdown table and the
CPU model.

``--prepare`` measures MNIST's preparation instead, for this jaxdl and for the
``jaxdl/datasets/mnist.py`` of ``--old-mnist-rev`` (PNG records and a decoded ``.npz`` cache),
alternating, each into a fresh temporary cache: preparing, the first `load_mnist` after it and
a warm `load_mnist` (seconds, medians over ``--rounds``).

Usage:
    python benchmarks/bench_pipeline.py [--rounds 3] [--steps 300] [--multiprocessing]
    python benchmarks/bench_pipeline.py --prepare [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The last commit whose jaxdl/datasets/pipeline.py is the hand-written thread pipeline.
OLD_REV = "8c88042"
#: The last commit whose jaxdl/datasets/mnist.py stored PNG records and a decoded .npz cache.
OLD_MNIST_REV = "e34d0d8"


def load_old_pipeline(rev: str, file: str = "pipeline"):
    """The module jaxdl/datasets/<file>.py of commit ``rev``."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:jaxdl/datasets/{file}.py"],
                            capture_output=True, text=True, check=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / f"old_{file}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"old_{file}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        return f"{fields['Model name'].strip()}, {fields['CPU(s)'].strip()} CPUs"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or platform.machine()


def sources(old, batch: int, multiprocessing: bool):
    """{name: epoch -> iterator of (x, y)} for every configuration."""
    import grain

    from jaxdl.datasets import mnist, pipeline

    data = mnist.load_mnist()
    images, labels = data.train.images, data.train.labels
    options = dict(seed=0, shuffle=True, max_shift=2, drop_remainder=True)
    tfds_train = pipeline.TfdsSource(mnist.data_source(mnist.prepare_mnist(), "train"), stop=len(labels))
    made = {
        "old (1 thread, 2 ahead)": old.EpochBatches(images, labels, batch, prefetch_size=2, **options).epoch,
        "old, no thread": old.EpochBatches(images, labels, batch, prefetch_size=0, **options).epoch,
    }
    for threads in (0, 1, 2):
        new = pipeline.EpochBatches(images, labels, batch, num_threads=threads, prefetch_size=4 if threads else 0,
                                    **options)
        made[f"grain, arrays, {threads} thread{'s' if threads != 1 else ''}"] = new.epoch
    made["grain, tfds data source, 2 threads"] = pipeline.EpochBatches.from_source(tfds_train, batch, **options).epoch
    if multiprocessing:
        new = pipeline.EpochBatches(images, labels, batch, **options)

        def worker_epoch(epoch, new=new):
            return iter(new.dataset(epoch).to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
                        .mp_prefetch(grain.MultiprocessingOptions(num_workers=1)))

        made["grain, arrays, 1 worker process"] = worker_epoch
    return made


def pipeline_alone(epoch_fn, epoch: int, limit: int | None) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch) over one epoch (or ``limit`` batches)."""
    start = time.perf_counter()
    batches = epoch_fn(epoch)
    x, _ = next(batches)
    first = time.perf_counter() - start
    count, timer = 0, time.perf_counter()
    for index, (x, _) in enumerate(batches):
        count += len(x)
        if limit is not None and index + 2 >= limit:
            break
    close = getattr(batches, "close", None)
    callable(close) and close()
    return count / (time.perf_counter() - timer), first


def make_step(batch: int):
    """The LeNet recipe's train step and a fresh state maker."""
    import jax

    import jaxdl
    from jaxdl import models

    model = models.build_model(models.model_config("lenet"))
    optimizer = models.lenet_optimizer(1e-3, l2=4e-4)
    step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (batch, *models.LENET_INPUT_SHAPE))
    return step, state


def training(epoch_fn, epoch: int, step, state, steps: int) -> float:
    """Images/s of ``steps`` train steps fed by the pipeline (after 5 warm-up steps)."""
    import jax

    batches = epoch_fn(epoch)
    for _ in range(5):
        x, y = next(batches)
        state, metrics = step(state, x, y)
    jax.block_until_ready(metrics)
    count, start = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        state, metrics = step(state, x, y)
        count += len(x)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    close = getattr(batches, "close", None)
    callable(close) and close()
    return count / seconds


def preparation_times(module) -> tuple[float, float, float]:
    """(preparing, the first load after it, a warm load) of ``module``'s MNIST, in seconds, into
    a fresh temporary cache (removed afterwards)."""
    cache, data_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench_mnist_")), ROOT / "data" / "mnist"
    try:
        start = time.perf_counter()
        module.prepare_mnist(data_dir, cache_dir=cache, log=lambda line: None)
        prepared = time.perf_counter()
        module.load_mnist(data_dir, cache_dir=cache)
        loaded = time.perf_counter()
        module.load_mnist(data_dir, cache_dir=cache)
        return prepared - start, loaded - prepared, time.perf_counter() - loaded
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def compare_preparation(old_rev: str, rounds: int) -> None:
    """Prints a Markdown table of `preparation_times`, this jaxdl against ``old_rev``'s, alternating."""
    from jaxdl.datasets import mnist

    modules = {f"{old_rev} (PNG records, .npz cache)": load_old_pipeline(old_rev, "mnist"),
               "this jaxdl (uint8 tensors, tfds.data_source)": mnist}
    times = {name: [] for name in modules}
    for round_index in range(rounds):
        for name, module in modules.items():
            times[name].append(preparation_times(module))
        print(f"round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    print(f"CPU: {cpu_model()}; Python {platform.python_version()}; medians of {rounds} rounds, seconds.")
    print()
    print("| MNIST | prepare | first load | prepare + first load | warm load |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in times.items():
        prepare, first, warm = (statistics.median(column) for column in zip(*rows))
        total = statistics.median(p + f for p, f, _ in rows)
        print(f"| {name} | {prepare:.2f} | {first:.2f} | {total:.2f} | {warm:.2f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="train steps per training measurement")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--old-rev", default=OLD_REV)
    parser.add_argument("--multiprocessing", action="store_true", help="also grain's worker processes")
    parser.add_argument("--prepare", action="store_true", help="time preparing and loading MNIST instead")
    parser.add_argument("--old-mnist-rev", default=OLD_MNIST_REV)
    args = parser.parse_args(argv)
    if args.prepare:
        compare_preparation(args.old_mnist_rev, args.rounds)
        return
    if args.multiprocessing:
        from absl import flags

        flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags
    old = load_old_pipeline(args.old_rev)
    made = sources(old, args.batch, args.multiprocessing)
    step, state = make_step(args.batch)
    alone = {name: [] for name in made}
    first = {name: [] for name in made}
    trained = {name: [] for name in made}
    for round_index in range(args.rounds):
        for name, epoch_fn in made.items():
            limit = 300 if "tfds" in name or "worker" in name else None  # the slow ones: 300 batches
            rate, latency = pipeline_alone(epoch_fn, round_index, limit)
            alone[name].append(rate)
            first[name].append(latency)
            if "worker" not in name:
                trained[name].append(training(epoch_fn, round_index, step, state, args.steps))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    import grain
    import jax

    print(f"CPU: {cpu_model()}; jax {jax.__version__}, grain {grain.__version__}, numpy {np.__version__}, "
          f"Python {platform.python_version()}; batch {args.batch}, max_shift 2, shuffled, {args.rounds} rounds "
          f"(medians), training {args.steps} steps of the LeNet recipe's train step.")
    print()
    print("| pipeline | images/s, pipeline alone | first batch ms | images/s, LeNet training |")
    print("|---|---:|---:|---:|")
    for name in made:
        training_rate = f"{statistics.median(trained[name]):,.0f}" if trained[name] else "-"
        print(f"| {name} | {statistics.median(alone[name]):,.0f} | {1e3 * statistics.median(first[name]):,.1f} "
              f"| {training_rate} |")


if __name__ == "__main__":
    main()
