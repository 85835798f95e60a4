"""Keep a long read's memory flat: hand back what was freed, and the capture pages read.

Two things grow with the capture while a whole file is streamed, although nothing is kept:
the memory-mapped capture's pages, counted in the process's resident set once read, and heap
pages glibc keeps after numpy frees each chunk's arrays (it raises its mmap threshold after the
first large frees, so later chunks come from a heap it seldom returns). Both are given back
every few chunks; on systems without glibc or madvise the calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

import numpy as np

PAGE = mmap.PAGESIZE
EVERY = 4  # chunks between releases: 2M packets within 20% of 100k; costs ~10% CPU

_LIBC = None
try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _TRIM = _LIBC.malloc_trim
except (OSError, AttributeError):
    _TRIM = None


class Releaser:
    """Call `after(batch)` once a chunk is done; every EVERY chunks memory is handed back."""

    def __init__(self, every: int = EVERY) -> None:
        self.every, self.count = every, 0

    def after(self, batch) -> None:  # noqa: ANN001
        self.count += 1
        if self.count % self.every or not len(batch):
            return
        release_read_pages(batch.data, int(batch.msg_off[0]))
        if _TRIM is not None:
            _TRIM(0)


def release_read_pages(data: np.ndarray, before: int) -> None:
    """Drop the mapped capture's pages before byte `before` from this process (they are read
    again from the page cache, unchanged, should anything still look at them)."""
    base = data.base.obj if isinstance(data.base, memoryview) else data.base
    mapping = base if isinstance(base, mmap.mmap) else None
    end = (before // PAGE) * PAGE
    if mapping is not None and end > 0 and hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED, 0, end)
