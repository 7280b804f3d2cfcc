#!/usr/bin/env python3
"""Re-creates ``data/pride_and_prejudice.txt`` from Debian's ``r-cran-janeaustenr`` package.

The package ships Jane Austen's six novels as R lazy-load data (``Rdata.rdx``: a gzip'd
index of (offset, length) per variable; ``Rdata.rdb``: each variable as a 4-byte length and
a zlib stream of R's XDR serialization, here a character vector with one line per element).
This reads that format with the standard library alone (no R needed) and writes one novel's
lines joined by newlines, with a final newline.

Usage (no R, no network beyond Debian's package archive):
    apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*_all.deb pkg
    python3 data/extract_janeaustenr.py pkg/usr/lib/R/site-library/janeaustenr/data prideprejudice \
        data/pride_and_prejudice.txt
    (cd data && sha256sum -c pride_and_prejudice.SHA256)
"""

from __future__ import annotations

import gzip
import struct
import sys
import zlib


class _Reader:
    """R's XDR serialization (format 2 or 3), for the few object types the data uses."""

    def __init__(self, data: bytes):
        self.data, self.at, self.refs = data, 0, []

    def int(self) -> int:
        (value,) = struct.unpack(">i", self.take(4))
        return value

    def take(self, count: int) -> bytes:
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise ValueError("extract_janeaustenr: expected R's XDR serialization ('X\\n')")
        version = self.int()
        self.int(), self.int()                  # the writer's and the minimal reader's R version
        if version == 3:
            self.take(self.int())               # the native encoding's name

    def item(self):
        flags = self.int()
        kind, has_attributes, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:                         # NILVALUE_SXP
            return None
        if kind == 255:                         # REFSXP: a symbol seen before
            return self.refs[(flags >> 8) - 1]
        if kind == 1:                           # SYMSXP
            symbol = self.item()
            self.refs.append(symbol)
            return symbol
        if kind == 9:                           # CHARSXP (-1: NA)
            length = self.int()
            return None if length == -1 else self.take(length).decode("utf-8")
        if kind == 2:                           # LISTSXP (attributes): [(tag, value), ...]
            if has_attributes:
                self.item()
            tag = self.item() if has_tag else None
            value, rest = self.item(), self.item()
            return [(tag, value)] + (rest or [])
        if kind in (10, 13, 14, 16, 19):        # logical, integer, double, character, list vectors
            length = self.int()
            if kind in (16, 19):
                values = [self.item() for _ in range(length)]
            elif kind == 14:
                values = list(struct.unpack(f">{length}d", self.take(8 * length)))
            else:
                values = list(struct.unpack(f">{length}i", self.take(4 * length)))
            attributes = dict(self.item()) if has_attributes else {}
            return values, attributes
        raise ValueError(f"extract_janeaustenr: unsupported R object type {kind}")


def unserialize(data: bytes):
    """One R object from its XDR serialization."""
    reader = _Reader(data)
    reader.header()
    return reader.item()


def novel_lines(data_dir: str, name: str) -> list[str]:
    """The lines of one novel (``prideprejudice``, ``emma``...) of the package's data directory."""
    with open(f"{data_dir}/Rdata.rdx", "rb") as file:
        index, index_names = unserialize(gzip.decompress(file.read()))
    variables, variable_names = index[index_names["names"][0].index("variables")]
    where = dict(zip(variable_names["names"][0], variables))
    offset, length = where[name][0]
    with open(f"{data_dir}/Rdata.rdb", "rb") as file:
        file.seek(offset)
        blob = file.read(length)
    lines, _ = unserialize(zlib.decompress(blob[4:]))
    return ["" if line is None else line for line in lines]


def main(argv: list[str]) -> None:
    data_dir, name, output = argv
    with open(output, "w", encoding="utf-8", newline="\n") as file:
        file.write("\n".join(novel_lines(data_dir, name)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
