"""What the training loop iterates: batches, and data sources indexed by epoch.

Conventions:

* A batch is ``(x, labels)`` or a `Batch` ``(x, labels, reset)``: ``reset=True`` starts new
  sequences, so the loop zeroes the memorized recurrent states (`jaxdl.reset_memory`) before
  that batch (truncated BPTT over chunks of long sequences). ``labels`` may be any pytree
  the loss accepts.
* An epoch-indexed source is an object with ``epoch(epoch: int) -> iterable of batches``
  (e.g. `jaxdl.datasets.pipeline.EpochBatches`, whose shuffling and augmentation are a pure
  function of its seed and the epoch, which is what makes a resumed run bit-identical), or a
  function ``epoch -> iterable``. A re-iterable (a list, or an object whose ``__iter__``
  starts a new pass) gives the same batches every epoch. A one-shot iterator (a generator)
  can serve one epoch only: asking it for more is a `ValueError`, never a silent short run.
* A position in the data (what a mid-epoch checkpoint stores, `EpochIterator.position`) is a
  JSON dict ``{"epoch": e, "batches": k, "iterator": state}``: ``k`` batches of epoch ``e``
  were consumed. ``state`` is the epoch iterator's own ``get_state()`` when it has grain's
  checkpoint protocol (``get_state()`` / ``set_state(state)``, as
  `jaxdl.datasets.pipeline.BatchIterator`), else None. Continuing from a position
  (``EpochSource.epoch(e, position)``) restores that state, or, without one, skips ``k``
  batches of a fresh epoch ``e``; either is exact when the epoch's batches depend only on
  ``e`` (an epoch-indexed source as above, a list).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Batch(NamedTuple):
    """One training or evaluation batch.

    Attributes:
        x: the model's input (batch first).
        labels: what the loss compares the outputs with (an array or a pytree).
        reset: True zeroes the memorized recurrent states before this batch.
    """

    x: Any
    labels: Any
    reset: bool = False


def as_batch(item) -> Batch:
    """``item`` ((x, labels), (x, labels, reset) or a `Batch`) as a `Batch`."""
    if isinstance(item, Batch):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return Batch(*item)
    raise TypeError(f"A batch must be (x, labels) or (x, labels, reset), got {type(item).__name__}"
                    f"{'' if not hasattr(item, '__len__') else f' of length {len(item)}'}.")


class EpochSource:
    """Wraps any supported data into ``epoch(epoch) -> iterator of Batch``.

    Args:
        data: an object with ``epoch(epoch)``, a callable ``epoch -> iterable``, a re-iterable
            or a one-shot iterator (one epoch only).
        name: how error messages call it (e.g. "train_data").
    """

    def __init__(self, data, name: str = "data"):
        self.name = name
        self._data = data
        self._one_shot = _is_one_shot(data)
        self._used = False

    @property
    def one_shot(self) -> bool:
        """True when ``data`` is an iterator that cannot start a new pass."""
        return self._one_shot

    def steps(self, epoch: int) -> int | None:
        """The number of batches of ``epoch`` when the data knows it (``steps_per_epoch`` or len)."""
        steps = getattr(self._data, "steps_per_epoch", None)
        if steps is not None:
            return int(steps(epoch) if callable(steps) else steps)
        try:
            return len(self._data)
        except TypeError:
            return None

    def epoch(self, epoch: int, position: dict | None = None) -> "EpochIterator":
        """The batches of ``epoch`` (0-based), from the start or from ``position``.

        Args:
            epoch: which epoch.
            position: where to continue, an `EpochIterator.position` of the same epoch (see
                the module docstring); None starts the epoch.

        Raises:
            ValueError: for a position of another epoch, or one past the epoch's end.
        """
        if position is not None and position.get("epoch") != epoch:
            raise ValueError(f"{self.name}: a position in epoch {position.get('epoch')} cannot start epoch {epoch}.")
        return EpochIterator(self._items(epoch), epoch, self.name, position, closable=not self._one_shot)

    def _items(self, epoch: int):
        if hasattr(self._data, "epoch") and callable(self._data.epoch):
            items = self._data.epoch(epoch)
        elif callable(self._data) and not hasattr(self._data, "__iter__"):
            items = self._data(epoch)
        else:
            if self._one_shot and self._used:
                raise ValueError(
                    f"{self.name} is a one-shot iterator (e.g. a generator) and was used up by an earlier "
                    f"epoch; pass a list, an object whose __iter__ starts a new pass, or one with "
                    f"epoch(epoch) -> batches.")
            self._used = True
            items = self._data
        return items


class EpochIterator:
    """The batches (as `Batch`) of one epoch of an `EpochSource`, with the position reached.

    Args:
        items: the epoch's iterable of batches.
        epoch: its number.
        name: how error messages call the data.
        position: continue from this `position` (grain's ``set_state`` when the iterator has
            it and the position holds a state, else by skipping ``position["batches"]`` batches).
        closable: `close` may close the iterator (False for the caller's own one-shot iterator).

    Raises:
        ValueError: when the epoch ends before the position.
    """

    def __init__(self, items, epoch: int, name: str = "data", position: dict | None = None, *,
                 closable: bool = True):
        self.epoch, self.name, self._closable = epoch, name, closable
        self._iterator = iter(items)
        self._checkpointable = callable(getattr(self._iterator, "get_state", None)) and callable(
            getattr(self._iterator, "set_state", None))
        self.batches = 0
        if position is not None:
            self._continue(position)

    def _continue(self, position: dict) -> None:
        batches = position.get("batches")
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 0:
            raise ValueError(f"{self.name}: a position needs a batch count >= 0, got {batches!r}.")
        state = position.get("iterator")
        if self._checkpointable and state is not None:
            self._iterator.set_state(state)
        else:
            for done in range(batches):
                if next(self._iterator, _END) is _END:
                    raise ValueError(f"{self.name}: epoch {self.epoch + 1} has {done} batches, fewer than the "
                                     f"{batches} the position has consumed (the data changed?).")
        self.batches = batches

    def __iter__(self) -> "EpochIterator":
        return self

    def __next__(self) -> Batch:
        item = next(self._iterator)
        self.batches += 1
        return as_batch(item)

    def position(self) -> dict:
        """``{"epoch", "batches", "iterator"}`` after the batches returned so far (JSON)."""
        state = self._iterator.get_state() if self._checkpointable else None
        return {"epoch": self.epoch, "batches": self.batches, "iterator": state}

    def close(self) -> None:
        """Stops the source's background work (its iterator's ``close``), if any and closable."""
        close = getattr(self._iterator, "close", None)
        if self._closable and callable(close):
            close()


_END = object()


def _is_one_shot(data) -> bool:
    if hasattr(data, "epoch") or (callable(data) and not hasattr(data, "__iter__")):
        return False
    if not hasattr(data, "__iter__"):
        raise TypeError(f"Training data must be iterable or have epoch(epoch), got {type(data).__name__}.")
    return iter(data) is data


def check_epochs(source: EpochSource, epochs: int) -> None:
    """Raises ValueError when a one-shot source is asked for more than one epoch."""
    if source.one_shot and epochs > 1:
        raise ValueError(
            f"{source.name} is a one-shot iterator (e.g. a generator) but {epochs} epochs were asked for: "
            f"it would be exhausted after the first. Pass a list, an object whose __iter__ starts a new "
            f"pass, or one with epoch(epoch) -> batches (see jaxdl.datasets.pipeline.EpochBatches).")

