"""LeNet train-step throughput: jaxdl (jit) vs PyTorch eager on CPU, in the same run.

Network: Conv 6@5x5 same, ReLU, max pool 2, Conv 16@5x5 same, ReLU, max pool 2, FC 120, 84, 10,
SoftMax + cross-entropy, Adam. For each batch size and thread count a fresh subprocess (thread
counts must be fixed before JAX or PyTorch start), pinned to that many cores with ``taskset``
(XLA starts helper threads whatever its thread flags say), measures:

* samples/s: median over ``--repeats`` timed blocks of ``--steps`` steps, after warm-up; each
  library's worker runs ``--rounds`` times, alternating with the other's, and the table gives
  the median over the rounds and the median of the rounds' jaxdl/torch ratios (the machine is
  shared: back-to-back pairs see the same load);
* samples per CPU second (process time): with 1 thread, a measure that other jobs on a
  shared machine disturb far less than wall time;
* first-step latency: the first call, compilation included (jaxdl) or not needed (PyTorch);
* peak RSS of the process.

Usage:
    python benchmarks/bench_lenet.py                       # batch 32/128/512, 1 and 2 threads
    python benchmarks/bench_lenet.py --batch 128 --threads 1
PyTorch columns appear when ``pip install torch==2.13.0`` is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time


def set_threads(threads: int) -> None:
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={threads}"
    )
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def timed_blocks(step, steps, repeats):
    """(wall seconds, process CPU seconds) of each block of ``steps`` steps."""
    blocks = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        blocks.append((time.perf_counter() - wall, time.process_time() - cpu))
    return blocks


def run_jaxdl(batch, steps, repeats):
    import jax
    import numpy as np

    import jaxdl
    import jaxdl.models

    model = jaxdl.models.lenet()
    optimizer = jaxdl.Adam(5e-4)
    train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (batch, 1, 28, 28))
    train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.uniform(size=(batch, 1, 28, 28)).astype(np.float32))
    y = jax.device_put(rng.integers(0, 10, batch).astype(np.int32))
    holder = [train_state]

    def step():
        holder[0], metrics = train_step(holder[0], x, y)
        return metrics

    start = time.perf_counter()
    jax.block_until_ready(step())
    first = time.perf_counter() - start
    for _ in range(3):
        step()

    def synced_step():
        jax.block_until_ready(step())

    return first, timed_blocks(synced_step, steps, repeats)


def run_torch(batch, steps, repeats, threads):
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(784, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(size=(batch, 1, 28, 28)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(3):
        step()
    return first, timed_blocks(step, steps, repeats)


def worker(args):
    set_threads(args.threads)
    if args.worker == "jaxdl":
        first, blocks = run_jaxdl(args.batch, args.steps, args.repeats)
    else:
        first, blocks = run_torch(args.batch, args.steps, args.repeats, args.threads)
    samples = args.batch * args.steps
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "samples_per_s": samples / statistics.median(wall for wall, _ in blocks),
        "samples_per_cpu_s": samples / statistics.median(cpu for _, cpu in blocks),
        "first_step_s": first, "peak_rss_mb": peak_rss_mb,
    }))


def measure(library, batch, threads, steps, repeats):
    # Pin the worker to `threads` cores: XLA starts helper threads whatever its flags say.
    pin = ["taskset", "-c", f"0-{threads - 1}"] if shutil.which("taskset") else []
    command = [*pin, sys.executable, __file__, "--worker", library, "--batch", str(batch),
               "--threads", str(threads), "--steps", str(steps), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{library} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_result(results):
    """The median of each figure over several workers' results."""
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=0, help="steps per timed block (default: ~4096 samples)")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per worker")
    parser.add_argument("--rounds", type=int, default=3,
                        help="workers per library and configuration, alternating jaxdl/torch")
    parser.add_argument("--worker", choices=["jaxdl", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.batch, args.threads = args.batch[0], args.threads[0]
        return worker(args)

    libraries = ["jaxdl"] + (["torch"] if torch_available() else [])
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print("| batch | threads | jaxdl samples/s | torch samples/s | jaxdl/torch | jaxdl/torch per CPU s "
          "| jaxdl first step s | torch first step s | jaxdl peak RSS MB | torch peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        for batch in args.batch:
            steps = args.steps or max(4096 // batch, 4)
            rounds = [{lib: measure(lib, batch, threads, steps, args.repeats) for lib in libraries}
                      for _ in range(args.rounds)]
            j, t = (median_result([r[lib] for r in rounds]) if lib in rounds[0] else None
                    for lib in ("jaxdl", "torch"))
            ratio = cpu_ratio = "-"
            if t:
                # the median over rounds of each round's ratio: both libraries ran back to back
                ratio = f"{statistics.median(r['jaxdl']['samples_per_s'] / r['torch']['samples_per_s'] for r in rounds):.2f}x"
                cpu_ratio = f"{statistics.median(r['jaxdl']['samples_per_cpu_s'] / r['torch']['samples_per_cpu_s'] for r in rounds):.2f}x"
            tcol = lambda key, fmt: format(t[key], fmt) if t else "-"  # noqa: E731
            print(f"| {batch} | {threads} | {j['samples_per_s']:,.0f} | {tcol('samples_per_s', ',.0f')} | "
                  f"{ratio} | {cpu_ratio} | {j['first_step_s']:.2f} | {tcol('first_step_s', '.3f')} | "
                  f"{j['peak_rss_mb']:.0f} | {tcol('peak_rss_mb', '.0f')} |", flush=True)


if __name__ == "__main__":
    main()
