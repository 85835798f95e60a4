"""Memory stays flat over long reads: read capture pages and freed heap are handed back."""

import sys
from pathlib import Path

import numpy as np
import pytest

from exfil.memory import release_read_pages
from exfil.pcapformat import _map


def rss_file_kb() -> int:
    status = Path("/proc/self/status").read_text(encoding="ascii")
    return int(next(line for line in status.splitlines() if line.startswith("RssFile:")).split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_pages_of_a_mapped_capture_already_read_leave_the_resident_set(tmp_path):
    path = tmp_path / "big.pcap"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 64 << 20, np.uint8).tobytes())
    data = _map(path)
    before = rss_file_kb()
    total = int(data[::4096].sum(dtype=np.int64))  # touch every page
    touched = rss_file_kb()
    assert touched - before > 50_000  # ~64 MB of file pages now resident
    release_read_pages(data, 48 << 20)
    assert touched - rss_file_kb() > 40_000  # the first 48 MB went
    assert int(data[::4096].sum(dtype=np.int64)) == total  # and read back unchanged
