"""The simulated resolver's answer cache, on disk: RAM holds 16 bytes per slot, not the answers.

benign.BenignModel caches each ordinary answer per (name, type), like a recursive resolver, and
the cache decides the bytes of a capture (a hit repeats an answer and draws nothing), so it can
drop nothing. As a dict it grows with the distinct names seen: 36 MB of Python objects at 2M
packets. `DiskCache` keeps the answers in a file and only an open-addressing table of
(hash, where) pairs in memory; each record keeps its key, so equal hashes are told apart by
comparing keys and probed past, and the cache is exact.
"""

from __future__ import annotations

import marshal
import os
from array import array
from pathlib import Path

START_SLOTS = 1 << 15  # table size to start with; doubled past MAX_LOAD
MAX_LOAD = 0.6  # keys per slot before the table doubles
_LENGTH_BITS = 24  # a slot's `where`: file offset << _LENGTH_BITS | record length


class DiskCache:
    """A dict of (name, qtype) -> answer bytes with only `get` and `[] =`, values in `path`."""

    def __init__(self, path: Path, slots: int = START_SLOTS) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._end = self._count = 0
        self._hashes = array("q", bytes(8 * slots))  # 0: an empty slot
        self._where = array("q", bytes(8 * slots))

    def __len__(self) -> int:
        return self._count

    def get(self, key: tuple[str, int]) -> bytes | None:
        _, value = self._find(key, marshal.dumps(key))
        return value

    def __setitem__(self, key: tuple[str, int], value: bytes) -> None:
        raw = marshal.dumps(key)
        slot, old = self._find(key, raw)
        record = len(raw).to_bytes(4, "little") + raw + value
        os.pwrite(self._fd, record, self._end)
        self._where[slot] = self._end << _LENGTH_BITS | len(record)
        self._end += len(record)
        if old is None:
            self._hashes[slot] = hash(key) or 1
            self._count += 1
            if self._count > MAX_LOAD * len(self._hashes):
                self._grow()

    def close(self) -> None:
        os.close(self._fd)

    def _find(self, key: tuple[str, int], raw: bytes) -> tuple[int, bytes | None]:
        """The key's slot and value, or the empty slot where it would go and None."""
        hashes, mask = self._hashes, len(self._hashes) - 1
        wanted = hash(key) or 1
        slot = wanted & mask
        while stored := hashes[slot]:
            if stored == wanted:
                where = self._where[slot]
                record = os.pread(self._fd, where & ((1 << _LENGTH_BITS) - 1),
                                  where >> _LENGTH_BITS)  # fmt: skip
                size = int.from_bytes(record[:4], "little")
                if record[4 : 4 + size] == raw:
                    return slot, record[4 + size :]
            slot = (slot + 1) & mask
        return slot, None

    def _grow(self) -> None:
        """Twice the slots; every key moves to its slot in the new table (no file access)."""
        old_hashes, old_where = self._hashes, self._where
        slots = 2 * len(old_hashes)
        self._hashes, self._where = array("q", bytes(8 * slots)), array("q", bytes(8 * slots))
        mask = slots - 1
        for stored, where in zip(old_hashes, old_where, strict=True):
            if stored:
                slot = stored & mask
                while self._hashes[slot]:
                    slot = (slot + 1) & mask
                self._hashes[slot], self._where[slot] = stored, where
