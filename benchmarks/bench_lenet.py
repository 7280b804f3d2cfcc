"""LeNet train-step throughput: jaxdl (jit) vs PyTorch eager on CPU (or a GPU), in the same run.

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
  for jaxdl also with a warm persistent compilation cache (`jaxdl.compilation_cache`, what
  ``scripts/train_lenet.py`` switches on): two extra one-step workers per configuration share
  a fresh cache directory, the first fills it and the second's first step is the figure;
* peak RSS of the process;
* on the CPU, the worker's float32 matrix-product rate (a jitted 2048^3 product on the same
  pinned cores) and the step's share of it: samples/s x 3.92 MFLOP per image (the arithmetic
  of a plain LeNet step, `STEP_FLOP_PER_IMAGE`) / that rate.

``--compute-dtype float32 bfloat16`` measures jaxdl in each compute dtype (`jaxdl.MixedPrecision`;
float32 params and Adam moments): one train step per dtype in the same worker process, the timed
blocks alternating between them, and a table row per dtype with its speed relative to float32
(the median over the rounds of each worker's ratio). PyTorch always computes in float32.

``--device gpu``: the jaxdl worker runs on JAX's GPU and the PyTorch worker on CUDA, neither
pinned nor given CPU thread settings (``--threads`` is ignored; the threads column reads
``gpu``); every timed step ends in ``jax.block_until_ready`` or ``torch.cuda.synchronize()``.
The per-CPU-second ratio is left out there (it would time the host waiting for the GPU); the
devices' names (``jax.devices()[0].device_kind``, ``torch.cuda.get_device_name()``) follow the
table. A worker that finds no GPU stops the run with the reason.

Usage:
    python benchmarks/bench_lenet.py                       # batch 32/128/512, 1 and 2 threads
    python benchmarks/bench_lenet.py --batch 128 --threads 1
    python benchmarks/bench_lenet.py --batch 128 --compute-dtype float32 bfloat16 --steps 1 --repeats 30
    python benchmarks/bench_lenet.py --device gpu --batch 128 1024 --compute-dtype float32 bfloat16   # on a GPU machine
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
import tempfile
import time


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (from /proc/cpuinfo), e.g.
    ``AMD EPYC (family 26, model 2)``: VMs often report only the vendor's brand, and the family
    tells Zen 4 (25) from Zen 5 (26). Elsewhere `platform.processor()`."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = ", ".join(f"{name} {fields[key]}" for key, name in (("cpu family", "family"), ("model", "model"))
                        if key in fields)
    return f"{fields['model name']} ({numbers})" if numbers else fields["model name"]


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


def run_jaxdl(batch, steps, repeats, compute_dtypes=("float32",), device="cpu", first_step_only=False):
    """{dtype: (first-step seconds, timed blocks)}; the dtypes' blocks alternate (no blocks when
    ``first_step_only``)."""
    import jax
    import numpy as np

    import jaxdl
    import jaxdl.models

    if device == "gpu" and jax.default_backend() != "gpu":
        raise SystemExit(f"--device gpu: JAX has no GPU here (jax {jax.__version__}, default backend "
                         f"{jax.default_backend()!r}, devices {jax.devices()}); a CUDA build of jaxlib is needed")
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.uniform(size=(batch, 1, 28, 28)).astype(np.float32))
    y = jax.device_put(rng.integers(0, 10, batch).astype(np.int32))
    steps_by_dtype, firsts = {}, {}
    for dtype in compute_dtypes:
        model = jaxdl.models.lenet()
        if dtype != "float32":
            model = jaxdl.MixedPrecision(model, compute_dtype=dtype)
        optimizer = jaxdl.Adam(5e-4)
        train_state = jaxdl.create_train_state(model, optimizer, jax.random.key(0), (batch, 1, 28, 28))
        train_step = jaxdl.make_train_step(model, jaxdl.cross_entropy, optimizer)
        holder = [train_state]

        def step(train_step=train_step, holder=holder):
            holder[0], metrics = train_step(holder[0], x, y)
            return metrics

        start = time.perf_counter()
        jax.block_until_ready(step())
        firsts[dtype] = time.perf_counter() - start
        if first_step_only:
            continue
        for _ in range(3):
            step()
        steps_by_dtype[dtype] = lambda step=step: jax.block_until_ready(step())

    blocks = {dtype: [] for dtype in compute_dtypes}
    for _ in range(0 if first_step_only else repeats):
        for dtype in compute_dtypes:
            blocks[dtype] += timed_blocks(steps_by_dtype[dtype], steps, 1)
    return {dtype: (firsts[dtype], blocks[dtype]) for dtype in compute_dtypes}


#: Multiply-adds of one LeNet training step per image: forward conv1 28*28*6*25 = 117,600,
#: conv2 14*14*16*6*25 = 470,400, dense 784*120 + 120*84 + 84*10 = 105,000; backward twice
#: that (input and weight gradients) except conv1's input gradient (not needed): 1,961,400
#: multiply-adds = 3.92 MFLOP. The arithmetic a plain implementation does, whatever padding
#: or blocking the fast paths add.
STEP_FLOP_PER_IMAGE = 2 * (117_600 + 470_400 + 105_000 + 117_600 + 2 * (470_400 + 105_000))


def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """This worker's float32 matrix-product rate: a jitted n x n @ n x n product, median of
    ``repeats`` after one warm-up (XLA's CPU dot library on the worker's pinned cores)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    jax.block_until_ready(product(a))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(product(a))
        seconds.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(seconds) / 1e9


def run_torch(batch, steps, repeats, threads, device="cpu"):
    import numpy as np
    import torch
    from torch import nn

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(cuda_missing(torch))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(784, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(size=(batch, 1, 28, 28)).astype(np.float32)).to(device)
    y = torch.from_numpy(rng.integers(0, 10, batch)).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        loss.backward()
        optimizer.step()

    if device == "cuda":
        unsynchronized_step = step

        def step():  # as jaxdl's timed steps end in block_until_ready
            unsynchronized_step()
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(3):
        step()
    return first, timed_blocks(step, steps, repeats)


def cuda_missing(torch) -> str:
    return (f"--device gpu: CUDA is not available to torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda or 'none: a CPU-only build'}; {torch.cuda.device_count()} GPUs visible)")


def device_name(library, device) -> str:
    """The worker's device, e.g. ``cpu`` or ``NVIDIA H200``."""
    if device == "cpu":
        return "cpu"
    if library == "jaxdl":
        import jax

        return jax.devices()[0].device_kind
    import torch

    return torch.cuda.get_device_name()


def worker(args):
    """Prints the figures as JSON: {dtype: figures} for jaxdl, the figures for torch (and "device")."""
    if args.device == "cpu":
        set_threads(args.threads)
    if args.compilation_cache:
        from jaxdl.compilation_cache import enable_compilation_cache

        enable_compilation_cache(args.compilation_cache)
    if args.first_step_only:
        firsts = run_jaxdl(args.batch, 0, 0, args.compute_dtype, args.device, first_step_only=True)
        print(json.dumps({dtype: first for dtype, (first, _) in firsts.items()}))
        return
    if args.worker == "jaxdl":
        measured = run_jaxdl(args.batch, args.steps, args.repeats, args.compute_dtype, args.device)
    else:
        torch_device = "cuda" if args.device == "gpu" else "cpu"
        measured = {"float32": run_torch(args.batch, args.steps, args.repeats, args.threads, torch_device)}
    samples = args.batch * args.steps
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {dtype: {
        "samples_per_s": samples / statistics.median(wall for wall, _ in blocks),
        "samples_per_cpu_s": samples / statistics.median(cpu for _, cpu in blocks),
        "first_step_s": first, "peak_rss_mb": peak_rss_mb,
    } for dtype, (first, blocks) in measured.items()}
    if args.worker == "jaxdl" and args.device == "cpu":
        peak = matmul_peak_gflops()
        for dtype_figures in figures.values():
            dtype_figures["peak_gflops"] = peak
    result = figures if args.worker == "jaxdl" else figures["float32"]
    print(json.dumps({**result, "device": device_name(args.worker, args.device)}))


#: the device each library's workers reported, e.g. {"jaxdl": "NVIDIA H200", "torch": "NVIDIA H200"}
DEVICES = {}


def measure(library, batch, threads, steps, repeats, compute_dtypes=("float32",), device="cpu", extra=()):
    # Pin the worker to `threads` cores: XLA starts helper threads whatever its flags say.
    pin = ["taskset", "-c", f"0-{threads - 1}"] if device == "cpu" and shutil.which("taskset") else []
    command = [*pin, sys.executable, __file__, "--worker", library, "--batch", str(batch),
               "--threads", str(threads), "--steps", str(steps), "--repeats", str(repeats),
               "--compute-dtype", *compute_dtypes, "--device", device, *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{library} worker failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "device" in result:
        DEVICES[library] = result.pop("device")
    return result


def warm_cache_first_step(batch, threads, compute_dtypes, device) -> dict:
    """{dtype: jaxdl's first-step seconds with a warm persistent compilation cache}: one worker
    fills a fresh cache directory, a second one loads from it."""
    with tempfile.TemporaryDirectory(prefix="bench_lenet_xla_cache_") as directory:
        extra = ("--first-step-only", "--compilation-cache", directory)
        measure("jaxdl", batch, threads, 0, 0, compute_dtypes, device, extra)
        return measure("jaxdl", batch, threads, 0, 0, compute_dtypes, device, extra)


def peak_columns(figures) -> str:
    """The worker's fp32 matmul rate and the step's share of it (`STEP_FLOP_PER_IMAGE`)."""
    if "peak_gflops" not in figures:
        return "- | -"
    fraction = figures["samples_per_s"] * STEP_FLOP_PER_IMAGE / 1e9 / figures["peak_gflops"]
    return f"{figures['peak_gflops']:.0f} | {100 * fraction:.0f}%"


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
    parser.add_argument("--compute-dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"],
                        help="jaxdl compute dtypes, measured alternating in one process (default float32)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="cpu (default): pinned workers with --threads threads; gpu: jaxdl on JAX's GPU, "
                             "PyTorch on CUDA")
    parser.add_argument("--worker", choices=["jaxdl", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--first-step-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compilation-cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.batch, args.threads = args.batch[0], args.threads[0]
        return worker(args)
    try:
        return run_table(args)
    except RuntimeError as error:  # a worker failed: its stderr, without this process's traceback
        raise SystemExit(f"bench_lenet: {error}") from None


def run_table(args):
    gpu = args.device == "gpu"
    libraries = ["jaxdl"] + (["torch"] if torch_available() else [])
    if gpu and "torch" in libraries:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"bench_lenet: {cuda_missing(torch)}")
    thread_counts = args.threads[:1] if gpu else args.threads  # no CPU thread settings on the GPU
    print(f"# {cpu_model()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M')}" + (", --device gpu" if gpu else ""))
    dtypes = list(dict.fromkeys(args.compute_dtype))
    print("| batch | threads | jaxdl compute | jaxdl samples/s | jaxdl ms/step | vs float32 | torch samples/s "
          "| jaxdl/torch | jaxdl/torch per CPU s | jaxdl first step s | jaxdl first step, warm cache s "
          "| torch first step s | jaxdl peak RSS MB | torch peak RSS MB | fp32 matmul peak GFLOP/s "
          "| jaxdl fraction of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in thread_counts:
        for batch in args.batch:
            steps = args.steps or max(4096 // batch, 4)
            rounds = [{lib: measure(lib, batch, threads, steps, args.repeats, dtypes, args.device) for lib in libraries}
                      for _ in range(args.rounds)]
            t = median_result([r["torch"] for r in rounds]) if "torch" in rounds[0] else None
            warm = warm_cache_first_step(batch, threads, dtypes, args.device)
            for dtype in dtypes:
                j = median_result([r["jaxdl"][dtype] for r in rounds])

                def round_ratio(key, a, b):
                    # the median over rounds of each round's ratio: both ran back to back
                    return f"{statistics.median(a(r)[key] / b(r)[key] for r in rounds):.2f}x"

                ratio = cpu_ratio = versus = "-"
                if t:
                    ratio = round_ratio("samples_per_s", lambda r: r["jaxdl"][dtype], lambda r: r["torch"])
                    if not gpu:
                        cpu_ratio = round_ratio("samples_per_cpu_s", lambda r: r["jaxdl"][dtype], lambda r: r["torch"])
                if "float32" in dtypes:
                    versus = round_ratio("samples_per_s", lambda r: r["jaxdl"][dtype], lambda r: r["jaxdl"]["float32"])
                tcol = lambda key, fmt: format(t[key], fmt) if t else "-"  # noqa: E731
                print(f"| {batch} | {'gpu' if gpu else threads} | {dtype} | {j['samples_per_s']:,.0f} | "
                      f"{1000 * batch / j['samples_per_s']:.1f} | {versus} | {tcol('samples_per_s', ',.0f')} | "
                      f"{ratio} | {cpu_ratio} | {j['first_step_s']:.2f} | {warm[dtype]:.2f} | {tcol('first_step_s', '.3f')} | "
                      f"{j['peak_rss_mb']:.0f} | {tcol('peak_rss_mb', '.0f')} | {peak_columns(j)} |", flush=True)
    if gpu:
        print(f"\n# devices: jaxdl on {DEVICES.get('jaxdl', '-')}, torch on {DEVICES.get('torch', '-')}; "
              f"peak RSS is host memory")


if __name__ == "__main__":
    main()
