"""Character-level text: the bundled corpus, a character vocabulary, splits and truncated-BPTT batches.

* `load_text` reads a UTF-8 text file and checks its SHA256: the bundled corpus
  (`BUNDLED_CORPUS`, Jane Austen's *Pride and Prejudice*, public domain, 684,768 characters;
  origin and license in ``data/pride_and_prejudice.LICENSE``) against its
  ``data/pride_and_prejudice.SHA256``; another file against the sha256 the caller gives, or
  unchecked. A mismatch is a `TextChecksumError` naming the file and both sha256s.
* `CharVocabulary`: the sorted distinct characters of a text; `encode` maps text to int32 ids
  (an unknown character is a ValueError naming it), `decode` maps ids back.
* `split_text`: contiguous train / validation / test parts (the last ``test`` fraction is
  the test part, the ``validation`` fraction before it the validation part), so no window of
  one part overlaps another.
* `StreamBatches`: truncated-BPTT batching. The part is cut into ``batch`` parallel streams
  of equal length (stream b is the b-th contiguous slice), and the epoch's batches are
  consecutive windows of ``length`` characters of every stream: batch k holds characters
  [k*length, (k+1)*length) of each stream as input and the same shifted by one as targets.
  So row b of batch k+1 continues row b of batch k, and a recurrent layer with
  ``memorize=True`` carries its state from one batch to the next; the first batch of every
  epoch has ``reset=True`` (`jaxdl.training.Batch`: `jaxdl.fit` zeroes the memorized states
  there). The batches are the same every epoch (no shuffling: the order is the text's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pathlib
from typing import Iterator, NamedTuple

import numpy as np

from jaxdl.training.data import Batch
from jaxdl.validation import in_interval, positive_int

#: The bundled corpus (present in a source checkout): Pride and Prejudice, plain ASCII text.
BUNDLED_CORPUS = pathlib.Path(__file__).resolve().parents[2] / "data" / "pride_and_prejudice.txt"


class TextChecksumError(ValueError):
    """A text file whose SHA256 is not the expected one (damaged, edited or another file)."""


def file_sha256(path) -> str:
    """The hex SHA256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(path) -> str | None:
    """The sha256 recorded beside ``path`` in ``<stem>.SHA256`` (``sha256sum`` format), or None."""
    record = pathlib.Path(path).with_suffix(".SHA256")
    if not record.is_file():
        return None
    return record.read_text().split()[0].lower()


def load_text(path=None, *, sha256: str | None = None) -> str:
    """Reads a UTF-8 text file after checking its SHA256.

    Args:
        path: the file; None for `BUNDLED_CORPUS`.
        sha256: the expected hex sha256; None for the one recorded beside the file in
            ``<stem>.SHA256`` (the bundled corpus has one), or no check when there is none.

    Returns:
        The text.

    Raises:
        FileNotFoundError: for a missing file, naming it.
        TextChecksumError: (a ValueError) when the file's sha256 differs, naming the file and
            both sha256s.
        ValueError: for a file that is not UTF-8 text, or an empty one.
    """
    path = pathlib.Path(BUNDLED_CORPUS if path is None else path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"load_text: no text file at {path}.")
    expected = sha256.lower() if sha256 is not None else recorded_sha256(path)
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected:
            raise TextChecksumError(f"load_text: {path} has sha256 {actual}, expected {expected} (the file is "
                                    f"damaged or not the corpus it should be).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"load_text: {path} is not UTF-8 text ({error}).") from None
    if not text:
        raise ValueError(f"load_text: {path} is empty.")
    return text


@dataclasses.dataclass(frozen=True)
class CharVocabulary:
    """The characters of a text, each with an id (its position in ``chars``).

    Attributes:
        chars: the distinct characters, sorted by code point.

    Example:
        >>> vocabulary = CharVocabulary.from_text("hello")
        >>> vocabulary.chars, vocabulary.encode("hole").tolist(), vocabulary.decode([3, 0])
        ('ehlo', [1, 3, 2, 0], 'oe')
    """

    chars: str

    def __post_init__(self):
        if not isinstance(self.chars, str) or not self.chars:
            raise ValueError(f"CharVocabulary: chars must be a non-empty string, got {self.chars!r}.")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"CharVocabulary: chars must be distinct, got {self.chars!r}.")

    @classmethod
    def from_text(cls, text: str) -> "CharVocabulary":
        """The vocabulary of ``text``'s distinct characters."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"CharVocabulary.from_text: text must be a non-empty string, got {text!r:.40}.")
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        """The number of characters V (ids 0 .. V-1)."""
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as an int32 array of ids.

        Raises:
            ValueError: for a character not in the vocabulary, naming it and its position.
        """
        lookup = {char: index for index, char in enumerate(self.chars)}
        try:
            return np.fromiter((lookup[char] for char in text), dtype=np.int32, count=len(text))
        except KeyError as error:
            char = error.args[0]
            raise ValueError(f"CharVocabulary.encode: character {char!r} (at position {text.index(char)}) is not "
                             f"in the vocabulary of {self.size} characters.") from None

    def decode(self, ids) -> str:
        """The text of a sequence of ids.

        Raises:
            ValueError: for an id outside [0, size).
        """
        ids = np.asarray(ids).reshape(-1)
        bad = ids[(ids < 0) | (ids >= self.size)]
        if bad.size:
            raise ValueError(f"CharVocabulary.decode: ids must be in [0, {self.size}), got {int(bad[0])}.")
        return "".join(self.chars[i] for i in ids.tolist())


class TextSplits(NamedTuple):
    """Contiguous parts of an encoded text (int32 id arrays)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_text(ids, validation: float = 0.05, test: float = 0.05) -> TextSplits:
    """Cuts ``ids`` into train, validation and test parts, in this order along the text.

    Args:
        ids: the encoded text, 1-D.
        validation: the fraction of characters for validation, in [0, 1).
        test: the fraction for test, in [0, 1); with ``validation`` below 1 in all.

    Returns:
        `TextSplits`: test is the last ``round(test * n)`` ids, validation the
        ``round(validation * n)`` before them, train the rest.

    Raises:
        ValueError: for fractions outside [0, 1), summing to 1 or more, or ids that are not 1-D.
        TypeError: for fractions that are not real numbers.
    """
    validation = in_interval("split_text", "validation", validation, 0.0, 1.0)
    test = in_interval("split_text", "test", test, 0.0, 1.0)
    if validation + test >= 1:
        raise ValueError(f"split_text: validation + test must be < 1 (some text to train on), got "
                         f"{validation} + {test}.")
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"split_text: ids must be 1-D, got shape {ids.shape}.")
    n = ids.shape[0]
    n_test, n_validation = round(test * n), round(validation * n)
    train_end = n - n_test - n_validation
    return TextSplits(ids[:train_end], ids[train_end:n - n_test], ids[n - n_test:])


class StreamBatches:
    """Truncated-BPTT batches of one text part (see the module docstring): an epoch-indexed
    source for `jaxdl.fit`.

    Args:
        ids: the part, 1-D int ids.
        batch: B, the number of parallel streams (rows of every batch).
        length: T, the characters per window (time steps per batch).
        max_batches: None for every window of the streams, or at most this many per epoch
            (the first ones).

    Raises:
        TypeError, ValueError: for sizes that are not positive ints, or a part too short for
            one window of every stream (B * (T + 1) characters), naming both numbers.

    Example:
        >>> source = StreamBatches(np.arange(100, dtype=np.int32), batch=2, length=4)
        >>> first = next(iter(source.epoch(0)))
        >>> first.x.tolist(), first.labels.tolist(), first.reset
        ([[0, 1, 2, 3], [50, 51, 52, 53]], [[1, 2, 3, 4], [51, 52, 53, 54]], True)
    """

    def __init__(self, ids, batch: int, length: int, max_batches: int | None = None):
        self.batch = positive_int("StreamBatches", "batch", batch)
        self.length = positive_int("StreamBatches", "length", length)
        if max_batches is not None:
            max_batches = positive_int("StreamBatches", "max_batches", max_batches)
        ids = np.asarray(ids, dtype=np.int32)
        if ids.ndim != 1:
            raise ValueError(f"StreamBatches: ids must be 1-D, got shape {ids.shape}.")
        per_stream = ids.shape[0] // self.batch
        windows = (per_stream - 1) // self.length
        if windows < 1:
            raise ValueError(f"StreamBatches: {self.batch} streams of windows of {self.length} characters need at "
                             f"least {self.batch * (self.length + 1)} characters, got {ids.shape[0]}.")
        self.windows = windows if max_batches is None else min(windows, max_batches)
        self.streams = ids[:per_stream * self.batch].reshape(self.batch, per_stream)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch."""
        return self.windows

    @property
    def characters(self) -> int:
        """Predicted characters per epoch (B * T per batch)."""
        return self.windows * self.batch * self.length

    def __len__(self) -> int:
        return self.windows

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The epoch's batches (the same every epoch), ``reset=True`` on the first."""
        del epoch
        for k in range(self.windows):
            start = k * self.length
            yield Batch(self.streams[:, start:start + self.length], self.streams[:, start + 1:start + self.length + 1],
                        reset=k == 0)


def bits_per_char(nats: float) -> float:
    """A mean cross-entropy per character in nats as bits per character (nats / ln 2)."""
    return nats / math.log(2)
