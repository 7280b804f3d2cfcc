"""Plots of the measured figures in benchmarks/RESULTS*.md, for the documentation site.

The numbers are read from the Markdown tables of the results files (never typed in here), so
a re-measured table gives a new plot by running this script again:

    python benchmarks/plot_results.py                      # writes docs/assets/benchmarks/*.png
    python benchmarks/plot_results.py --output-dir /tmp/plots

Each plot names the table it comes from; a table that is missing or changed its columns is an
error that says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import textwrap
from typing import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_RNN = ROOT / "benchmarks" / "RESULTS_rnn.md"
RESULTS_LENET = ROOT / "benchmarks" / "RESULTS_lenet.md"
DEFAULT_OUTPUT = ROOT / "docs" / "assets" / "benchmarks"


@dataclasses.dataclass
class Table:
    """One Markdown table: its column names and rows of cell strings (Markdown removed)."""

    source: pathlib.Path
    columns: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> list[str]:
        """The cells of the column called ``name``."""
        return [row[self.columns.index(name)] for row in self.rows]

    def numbers(self, name: str) -> list[float]:
        """The column ``name`` as numbers (the first number of each cell)."""
        return [number(cell) for cell in self.column(name)]


def _cells(line: str) -> list[str]:
    return [re.sub(r"\*\*|`", "", cell).strip() for cell in line.strip().strip("|").split("|")]


def read_tables(path: pathlib.Path) -> list[Table]:
    """Every table of the Markdown file ``path``, in order."""
    tables, lines = [], path.read_text().splitlines()
    for i in range(len(lines) - 1):
        if lines[i].lstrip().startswith("|") and re.fullmatch(r"\s*\|[\s:|-]+\|\s*", lines[i + 1]):
            rows = []
            for line in lines[i + 2:]:
                if not line.lstrip().startswith("|"):
                    break
                rows.append(_cells(line))
            tables.append(Table(path, _cells(lines[i]), rows))
    return tables


def find_table(path: pathlib.Path, *columns: str) -> Table:
    """The first table of ``path`` that has all of ``columns``."""
    for table in read_tables(path):
        if all(column in table.columns for column in columns):
            return table
    raise ValueError(f"{path.relative_to(ROOT)}: no table with the columns {list(columns)}")


def number(cell: str) -> float:
    """The first number in ``cell`` ("7,980" -> 7980.0, "1.24x" -> 1.24, "3.3 (...)" -> 3.3)."""
    match = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell)
    if match is None:
        raise ValueError(f"no number in the table cell {cell!r}")
    return float(match.group().replace(",", ""))


def _short(name: str, width: int = 38) -> str:
    """A row name without its trailing parenthesis, wrapped to ``width`` characters."""
    return textwrap.fill(re.sub(r"\s*\([^()]*\)$", "", name), width)


def _source_note(fig, table: Table) -> None:
    fig.text(0.995, 0.005, f"data: {table.source.relative_to(ROOT)}", ha="right", va="bottom", fontsize=7,
             color="0.4")


def plot_lenet_step(plt, output: pathlib.Path) -> pathlib.Path:
    """LeNet training step, jaxdl vs PyTorch eager: samples/s per batch size and core count."""
    table = find_table(RESULTS, "batch", "threads", "jaxdl samples/s", "torch samples/s", "jaxdl / torch")
    labels = [f"batch {b}\n{t} core{'s' if t != '1' else ''}"
              for b, t in zip(table.column("batch"), table.column("threads"))]
    jaxdl, torch, ratios = (table.numbers(name) for name in ("jaxdl samples/s", "torch samples/s", "jaxdl / torch"))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    positions = range(len(labels))
    ax.bar([p - 0.2 for p in positions], jaxdl, 0.4, label="jaxdl (jit)")
    ax.bar([p + 0.2 for p in positions], torch, 0.4, label="PyTorch eager")
    for p, value, ratio in zip(positions, jaxdl, ratios):
        ax.annotate(f"{ratio:.2f}x", (p, value), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(list(positions), labels, fontsize=8)
    ax.set_ylabel("samples / s")
    ax.set_title("LeNet training step on the 2-core CPU (jaxdl / PyTorch above the bars)")
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    _source_note(fig, table)
    return _save(fig, output / "lenet_step_vs_pytorch.png")


def plot_lenet_profile(plt, output: pathlib.Path) -> pathlib.Path:
    """Where the LeNet step's time goes, per operation, first version and now."""
    table = find_table(RESULTS, "operation", "first version", "now")
    names = [_short(name) for name in table.column("operation")]
    first, now = table.numbers("first version"), table.numbers("now")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    positions = list(range(len(names)))[::-1]
    ax.barh([p + 0.2 for p in positions], first, 0.4, label="first version")
    ax.barh([p - 0.2 for p in positions], now, 0.4, label="now")
    ax.set_yticks(positions, names, fontsize=8)
    ax.set_xlabel("ms per step (one core, batch 128)")
    ax.set_title("LeNet step per operation (jax.profiler trace)")
    ax.legend(loc="upper right")
    ax.grid(axis="x", alpha=0.3)
    _source_note(fig, table)
    return _save(fig, output / "lenet_step_profile.png")


def plot_rnn(plt, output: pathlib.Path) -> pathlib.Path:
    """Recurrent layers, forward + backward: sequences/s of jaxdl's two paths and PyTorch."""
    table = find_table(RESULTS_RNN, "size (B, T, F, H)", "cell", "jaxdl fused seq/s", "jaxdl scan seq/s",
                       "torch seq/s")
    sizes = list(dict.fromkeys(table.column("size (B, T, F, H)")))
    fig, axes = plt.subplots(1, len(sizes), figsize=(10, 3.4))
    series = (("jaxdl fused seq/s", "jaxdl fused"), ("jaxdl scan seq/s", "jaxdl scan"), ("torch seq/s", "PyTorch"))
    for ax, size in zip(axes, sizes):
        rows = [row for row in table.rows if row[table.columns.index("size (B, T, F, H)")] == size]
        cells = [row[table.columns.index("cell")] for row in rows]
        for k, (column, label) in enumerate(series):
            values = [number(row[table.columns.index(column)]) for row in rows]
            ax.bar([p + (k - 1) * 0.27 for p in range(len(cells))], values, 0.27, label=label)
        ax.set_xticks(range(len(cells)), cells)
        ax.set_title(size, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("sequences / s (forward + backward)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Recurrent layers on the 2-core CPU, float32")
    _source_note(fig, table)
    return _save(fig, output / "rnn_vs_pytorch.png")


def plot_lstm_profile(plt, output: pathlib.Path) -> pathlib.Path:
    """Where the LSTM's forward + backward call goes (default size, fused path)."""
    table = find_table(RESULTS_RNN, "part", "ms")
    names = [_short(name) for name in table.column("part")]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    positions = list(range(len(names)))[::-1]
    ax.barh(positions, table.numbers("ms"), 0.6)
    ax.set_yticks(positions, names, fontsize=8)
    ax.set_xlabel("ms per forward + backward call")
    ax.set_title("LSTM (64, 100, 32, 128), fused path: time per part")
    ax.grid(axis="x", alpha=0.3)
    _source_note(fig, table)
    return _save(fig, output / "lstm_profile.png")


def plot_lenet_search(plt, output: pathlib.Path) -> pathlib.Path:
    """The LeNet hyperparameter search: mean final validation accuracy over three seeds."""
    table = find_table(RESULTS_LENET, "peak learning rate", "shift", "mean", "standard error")
    labels = [f"lr {lr}\nshift {shift}" for lr, shift in zip(table.column("peak learning rate"), table.column("shift"))]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.errorbar(range(len(labels)), table.numbers("mean"), yerr=table.numbers("standard error"), fmt="o", capsize=4)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("validation accuracy (%), epoch 8")
    ax.set_title("LeNet defaults: mean of 3 seeds ± standard error (validation split only)")
    ax.grid(axis="y", alpha=0.3)
    _source_note(fig, table)
    return _save(fig, output / "lenet_validation_search.png")


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return path


PLOTS: tuple[Callable, ...] = (plot_lenet_step, plot_lenet_profile, plot_rnn, plot_lstm_profile, plot_lenet_search)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=pathlib.Path, default=DEFAULT_OUTPUT,
                        help=f"where the PNGs go (default {DEFAULT_OUTPUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.output_dir.mkdir(parents=True, exist_ok=True)
    for plot in PLOTS:
        print(f"wrote {plot(plt, args.output_dir)}")
        plt.close("all")


if __name__ == "__main__":
    main()
