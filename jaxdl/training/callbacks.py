"""Hooks into `jaxdl.fit`: the `Callback` base class and a tqdm `ProgressBar`.

`fit` calls, in order: ``on_fit_start(epochs, first_epoch)``; per epoch
``on_epoch_start(epoch, steps)``, ``on_steps(epoch, metrics)`` every ``log_every`` steps and
at the epoch's end (``metrics``: the host values of those steps' metric dicts, with
``examples``, the batch size, added), ``on_epoch_end(row, train_state)`` (a callback may add
keys to ``row``: they are saved in the history, the checkpoint and metrics.csv); and
``on_fit_end(result)``. Epochs are 0-based in calls and 1-based in ``row["epoch"]``.
"""

from __future__ import annotations


class Callback:
    """Does nothing; subclass it and override the hooks you need."""

    def on_fit_start(self, epochs: int, first_epoch: int) -> None:
        """Before the first epoch this call trains (``first_epoch`` > 0 when resuming)."""

    def on_epoch_start(self, epoch: int, steps: int | None) -> None:
        """Before an epoch; ``steps`` is its number of batches when the data source knows it."""

    def on_steps(self, epoch: int, metrics: list[dict]) -> None:
        """After a group of steps, with each step's metrics as Python floats."""

    def on_epoch_end(self, row: dict, train_state) -> None:
        """After an epoch's training and validation, before its checkpoint is written."""

    def on_fit_end(self, result) -> None:
        """After training stopped (completed or diverged; not on KeyboardInterrupt)."""


class ProgressBar(Callback):
    """A tqdm bar per epoch: examples per second and the running mean loss per example.

    Args:
        leave: keep each finished epoch's bar on screen.
    """

    def __init__(self, *, leave: bool = True):
        self.leave = leave
        self._bar = None
        self._epochs = 0
        self._loss_sum = 0.0
        self._examples = 0

    def on_fit_start(self, epochs: int, first_epoch: int) -> None:
        self._epochs = epochs

    def on_epoch_start(self, epoch: int, steps: int | None) -> None:
        from tqdm.auto import tqdm

        self._loss_sum, self._examples = 0.0, 0
        self._bar = tqdm(total=steps, unit="batch", desc=f"epoch {epoch + 1}/{self._epochs}", leave=self.leave,
                         dynamic_ncols=True)

    def on_steps(self, epoch: int, metrics: list[dict]) -> None:
        for entry in metrics:
            self._loss_sum += entry["example_loss"] * entry["examples"]
            self._examples += entry["examples"]
        self._bar.update(len(metrics))
        if self._examples:
            self._bar.set_postfix(loss=f"{self._loss_sum / self._examples:.4f}", refresh=False)

    def on_epoch_end(self, row: dict, train_state) -> None:
        self._close()

    def on_fit_end(self, result) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
