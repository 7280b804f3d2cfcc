"""Forward + backward speed of jaxdl's RNN, LSTM and GRU against PyTorch on CPU (or CUDA).

Each contender computes the value and the gradients (with respect to every parameter and the
input) of ``sum(outputs)`` for a (batch, time, features) float32 input: jaxdl with
``jax.jit(jax.value_and_grad(...))``, PyTorch with ``torch.nn.RNN/LSTM/GRU(batch_first=True)``,
``backward()`` and ``torch.set_num_threads(threads)`` in a child process. Contenders run
interleaved, round by round, so load from other processes hits them alike; the table reports
the median sequences/s over the rounds, the ratio of medians against PyTorch and the first
call's time (tracing + compilation) for jaxdl. PyTorch is optional (not a jaxdl dependency).

Devices: jaxdl runs on JAX's default device (the GPU where JAX has one: `jax.devices()[0]`).
PyTorch runs on the CPU unless ``--torch-device cuda``: then ``torch.nn.LSTM/RNN/GRU`` on the
GPU are cuDNN's kernels, and the timer is read after ``torch.cuda.synchronize()`` (jaxdl's
calls end in ``jax.block_until_ready``). The table's comment line names both devices.

``--padded``: padded batches, each sequence's length uniform in [T/2, T] (`padded_lengths`):
jaxdl takes the batch as a `SequenceBatch`, PyTorch as a ``pack_padded_sequence`` whose
outputs are padded again (``pad_packed_sequence``), the way each library runs such a batch.

Usage:
    python benchmarks/bench_rnn.py                        # all cells, sizes small/default/large
    python benchmarks/bench_rnn.py --cells lstm --sizes default --rounds 30
    python benchmarks/bench_rnn.py --implementations fused,scan --markdown results.md
    python benchmarks/bench_rnn.py --cells lstm,gru --sizes default --padded
    python benchmarks/bench_rnn.py --torch-device cuda --sizes default,large --calls 10   # on a GPU machine
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxdl.layers.recurrent import GRU, LSTM, RNN, SequenceBatch  # noqa: E402
from bench_lenet import cpu_model  # noqa: E402  (the same CPU description)

#: name -> (batch, time, features, hidden)
SIZES = {
    "small": (16, 50, 16, 32),
    "default": (64, 100, 32, 128),
    "large": (128, 200, 64, 256),
}
CELLS = {"rnn": (RNN, "RNN"), "lstm": (LSTM, "LSTM"), "gru": (GRU, "GRU")}


def padded_lengths(size) -> np.ndarray:
    """``--padded``'s sequence lengths: (batch,) integers uniform in [T/2, T], fixed seed."""
    batch, steps = size[:2]
    return np.random.default_rng(2).integers(steps // 2, steps + 1, size=batch)


def jax_contender(cell: str, implementation: str, size, padded: bool = False):
    """A zero-argument callable running one jitted forward+backward, and its first-call time.

    ``padded``: the batch as a `SequenceBatch` with `padded_lengths` (zero outputs past each
    sequence's length, its state kept there)."""
    batch, steps, features, hidden = size
    layer = CELLS[cell][0](hidden, implementation=implementation)
    params, state = layer.init(jax.random.key(0), (batch, steps, features))
    x = jax.random.normal(jax.random.key(1), (batch, steps, features), jnp.float32)
    lengths = jnp.asarray(padded_lengths(size)) if padded else None

    def loss(params, x):
        inputs = SequenceBatch(x, lengths) if padded else x
        return jnp.sum(layer.apply(params, state, inputs)[0])

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    start = time.perf_counter()
    jax.block_until_ready(step(params, x))
    first_call = time.perf_counter() - start
    return (lambda: jax.block_until_ready(step(params, x))), first_call


class TorchWorker:
    """PyTorch in a child process, timed there; None-like (``available`` False) without torch.

    A separate process keeps the two runtimes' thread pools apart: PyTorch's OpenMP threads
    and XLA's threads, both busy-waiting for a while after their work, slow each other down
    badly when they share a process on two cores.

    ``device`` is ``"cpu"`` or ``"cuda"``; for ``"cuda"`` without a GPU that PyTorch can use,
    `SystemExit` with the reason (a CPU-only build of torch, or no GPU).
    """

    def __init__(self, threads: int, device: str = "cpu"):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_torch_worker, args=(child, threads, device), daemon=True)
        self._process.start()
        try:
            status, self.version, self.device_name = self._connection.recv()
        except EOFError:
            self._process.join(timeout=10)
            raise SystemExit(f"bench_rnn: the PyTorch worker died at start (exit code {self._process.exitcode})")
        if status == "error":
            self._process.join(timeout=10)
            raise SystemExit(f"bench_rnn: {self.version}")
        self.available = status == "ok"

    def setup(self, cell: str, size, lengths=None):
        self._connection.send(("setup", CELLS[cell][1], size, None if lengths is None else list(map(int, lengths))))
        self._connection.recv()

    def run(self, calls: int) -> float:
        """Seconds per call, timed in the child."""
        self._connection.send(("run", calls))
        return self._connection.recv()

    def close(self):
        self._connection.send(("stop",))
        self._process.join(timeout=10)


def _torch_worker(connection, threads, device="cpu"):
    try:
        import torch
    except ImportError:
        if device != "cpu":
            connection.send(("error", f"--torch-device {device}: PyTorch is not installed", None))
        else:
            connection.send(("missing", None, None))
        return
    torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        reason = (f"--torch-device cuda: CUDA is not available to torch {torch.__version__} "
                  f"(built for CUDA {torch.version.cuda or 'none: a CPU-only build'}; "
                  f"{torch.cuda.device_count()} GPUs visible)")
        connection.send(("error", reason, None))
        return
    if device == "cuda":
        device_name = torch.cuda.get_device_name()
        synchronize = torch.cuda.synchronize
    else:
        device_name = "cpu"

        def synchronize():
            pass

    connection.send(("ok", torch.__version__, device_name))
    step = None
    while True:
        message = connection.recv()
        if message[0] == "stop":
            return
        if message[0] == "setup":
            _, class_name, (batch, steps, features, hidden), lengths = message
            torch.manual_seed(0)
            module = getattr(torch.nn, class_name)(features, hidden, batch_first=True).to(device)
            x = torch.randn(batch, steps, features, device=device, requires_grad=True)
            lengths = None if lengths is None else torch.tensor(lengths)

            def step(module=module, x=x, lengths=lengths):
                module.zero_grad(set_to_none=True)
                x.grad = None
                if lengths is None:
                    outputs, _ = module(x)
                else:  # PyTorch's way to run a padded batch: packed, then padded again with zeros
                    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                    outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(module(packed)[0], batch_first=True,
                                                                        total_length=steps)
                outputs.sum().backward()

            step()
            synchronize()
            connection.send("ready")
        elif message[0] == "run":
            synchronize()
            start = time.perf_counter()
            for _ in range(message[1]):
                step()
            synchronize()  # CUDA kernels run asynchronously: wait for them before reading the timer
            connection.send((time.perf_counter() - start) / message[1])


def measure(contenders: dict, torch_worker, rounds: int, calls: int) -> dict:
    """Median seconds per call of each contender (and "torch"), timed round-robin."""
    times = {name: [] for name in contenders}
    if torch_worker is not None:
        times["torch"] = []
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append((time.perf_counter() - start) / calls)
            time.sleep(0.02)  # let the other runtime's spinning threads go idle
        if torch_worker is not None:
            times["torch"].append(torch_worker.run(calls))
            time.sleep(0.02)
    return {name: statistics.median(ts) for name, ts in times.items()}


def calls_per_round(size, calls: int = 0) -> int:
    """``calls`` if given, else about 2e8 multiply-adds' worth of calls (1 to 10; sized for a CPU)."""
    if calls > 0:
        return calls
    batch, steps, _, hidden = size
    work = batch * steps * hidden * hidden
    return max(1, min(10, int(2e8 // work)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--sizes", default="small,default,large")
    parser.add_argument("--implementations", default="fused,scan",
                        help="jaxdl implementations to time (fused, scan)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (the median is taken)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (0: skip PyTorch)")
    parser.add_argument("--torch-device", choices=["cpu", "cuda"], default="cpu",
                        help="where PyTorch runs (cuda: cuDNN's RNN/LSTM/GRU); jaxdl runs on JAX's default device")
    parser.add_argument("--calls", type=int, default=0,
                        help="calls per contender and round (default: by size, 1 to 10, sized for a CPU)")
    parser.add_argument("--padded", action="store_true",
                        help="padded batches: lengths uniform in [T/2, T] (jaxdl: SequenceBatch; PyTorch: "
                             "pack_padded_sequence)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    implementations = args.implementations.split(",")

    if args.threads <= 0 and args.torch_device != "cpu":
        parser.error("--torch-device cuda needs PyTorch: --threads must be at least 1")
    torch_worker = TorchWorker(args.threads, args.torch_device) if args.threads > 0 else None
    if torch_worker is not None and not torch_worker.available:
        torch_worker = None
    torch_version = torch_worker.version if torch_worker else None
    torch_device = torch_worker.device_name if torch_worker else None
    print(f"jaxdl on {jax_device()}, torch on {torch_device or '-'}", flush=True)

    rows = []
    for size_name in args.sizes.split(","):
        size = SIZES[size_name]
        for cell in args.cells.split(","):
            contenders, first_calls = {}, {}
            for implementation in implementations:
                run, first_calls[implementation] = jax_contender(cell, implementation, size, args.padded)
                contenders[implementation] = run
            if torch_worker is not None:
                torch_worker.setup(cell, size, padded_lengths(size) if args.padded else None)
            seconds = measure(contenders, torch_worker, args.rounds, calls_per_round(size, args.calls))
            throughput = {name: size[0] / s for name, s in seconds.items()}
            row = (size_name, size, cell, throughput, first_calls)
            rows.append(row)
            print(format_row(row, implementations), flush=True)
    if torch_worker is not None:
        torch_worker.close()

    header = describe(torch_version, args, torch_device)
    print(header)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, implementations, header))


def format_row(row, implementations) -> str:
    size_name, size, cell, throughput, first_calls = row
    parts = [f"{size_name:8s} {cell:5s} B,T,F,H={','.join(map(str, size)):15s}"]
    for implementation in implementations:
        parts.append(f"{implementation} {throughput[implementation]:8.0f} seq/s "
                     f"(first call {first_calls[implementation]:.2f} s)")
    if "torch" in throughput:
        parts.append(f"torch {throughput['torch']:8.0f} seq/s")
        parts.append("ratio " + " ".join(
            f"{implementation}/torch {throughput[implementation] / throughput['torch']:.2f}"
            for implementation in implementations))
    return "  ".join(parts)


def jax_device() -> str:
    """JAX's default device, e.g. ``cpu`` or ``gpu NVIDIA H200``."""
    device = jax.devices()[0]
    return device.platform if device.platform == "cpu" else f"{device.platform} {device.device_kind}"


def describe(torch_version, args, torch_device=None) -> str:
    devices = ""
    if jax.default_backend() != "cpu" or (torch_device or "cpu") != "cpu":
        devices = f"jaxdl on {jax_device()}, torch on {torch_device or '-'}, "
    calls = f"{args.calls} calls per round, " if args.calls else ""
    return (f"jax {jax.__version__}, torch {torch_version or 'not installed'} "
            f"({args.threads} threads), {devices}{os.cpu_count()} CPUs, {cpu_model()}, "
            f"median of {args.rounds} interleaved rounds, {calls}"
            f"{'padded batches, ' if args.padded else ''}{datetime.date.today()}")


def markdown(rows, implementations, header) -> str:
    columns = ["size (B, T, F, H)", "cell"] + [f"jaxdl {i} seq/s" for i in implementations]
    columns += ["torch seq/s"] + [f"{i} / torch" for i in implementations] + ["first call (s)"]
    lines = [f"<!-- {header} -->", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for size_name, size, cell, throughput, first_calls in rows:
        torch_rate = throughput.get("torch")
        cells = [f"{size_name} {size}", cell.upper()]
        cells += [f"{throughput[i]:,.0f}" for i in implementations]
        cells += [f"{torch_rate:,.0f}" if torch_rate else "-"]
        cells += [f"{throughput[i] / torch_rate:.2f}" if torch_rate else "-" for i in implementations]
        cells += [f"{first_calls[implementations[0]]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
