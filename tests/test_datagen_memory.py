"""script_datagen.py --mode offline in bounded memory: the external sort and the on-disk answer
cache that let it write any --packets in the memory of one run, with the same bytes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_generating_codes import datagen_sort
from data_generating_codes.datagen_cache import DiskCache
from data_generating_codes.datagen_sort import RunSorter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data_generating_codes" / "script_datagen.py"


def peak_rss_mb(packets: int, out: Path) -> float:
    """Peak resident memory of one offline run (os.wait4: that child's own rusage, in kB)."""
    with open(out.with_suffix(".log"), "wb") as log:
        child = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--mode", "offline", "--packets", str(packets),
             "--seed", "5", "--out", str(out)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, out.with_suffix(".log").read_text()
    return usage.ru_maxrss / 1024


def test_peak_memory_does_not_grow_with_the_packet_count(tmp_path):
    small = peak_rss_mb(20_000, tmp_path / "small.pcap")
    large = peak_rss_mb(200_000, tmp_path / "large.pcap")  # 3 runs of the sort, 20k names
    assert large <= 1.2 * small + 30, (small, large)
    assert (tmp_path / "large.pcap").stat().st_size > 9 * (tmp_path / "small.pcap").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _rows(count: int, seed: int) -> list[tuple]:
    """Packets as the generator adds them, with many equal timestamps (whole milliseconds)."""
    rng = random.Random(seed)
    return [
        (rng.randrange(3000) / 1000, rng.randrange(9), rng.randrange(9), rng.randrange(65536),
         53, rng.randbytes(rng.randint(0, 90)), rng.randrange(20), rng.randrange(-1, 5))
        for _ in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize(("run_rows", "fan_in", "read_rows"), [(10**6, 32, 1024), (97, 3, 5)])
def test_merged_runs_are_a_stable_sort_by_time(tmp_path, monkeypatch, run_rows, fan_in, read_rows):
    monkeypatch.setattr(datagen_sort, "FAN_IN", fan_in)  # (97, 3): merges of merges
    monkeypatch.setattr(datagen_sort, "READ_ROWS", read_rows)
    rows, start_ns = _rows(5000, seed=1), 1_767_225_600 * 10**9
    sorter = RunSorter(tmp_path, start_ns, run_rows)
    for number, row in enumerate(rows):
        sorter.add(row)
        if number % 7 == 0:
            sorter.spill_if_full()
    blocks = list(sorter.merged())
    ns = start_ns + np.round(np.array([row[0] for row in rows]) * 1e9).astype(np.int64)
    order = np.argsort(ns, kind="stable").tolist()  # what the whole-capture writer did
    got = np.concatenate([records for records, _ in blocks])
    assert got["ns"].tolist() == ns[order].tolist()
    columns = {"src": 1, "dst": 2, "sport": 3, "dport": 4, "cls": 6, "file": 7}  # 5: payload
    for field, column in columns.items():
        assert got[field].tolist() == [rows[i][column] for i in order], field
    assert [p for _, payloads in blocks for p in payloads] == [rows[i][5] for i in order]
    assert list(tmp_path.iterdir()) == []  # the runs are deleted once read


def test_disk_cache_is_a_dict_even_for_equal_hashes(tmp_path):
    cache, reference = DiskCache(tmp_path / "answers", slots=2), {}
    assert hash(("a.example", -1)) == hash(("a.example", -2))  # CPython: hash(-1) == hash(-2)
    rng = random.Random(2)
    keys = [(f"{rng.randrange(400)}.example", rng.choice([1, 28, -1, -2])) for _ in range(3000)]
    for key in keys:
        value = rng.randbytes(rng.randint(0, 300))
        assert cache.get(key) == reference.get(key)
        if key not in reference or rng.random() < 0.1:
            cache[key] = reference[key] = value
    assert len(cache) == len(reference) and all(cache.get(k) == v for k, v in reference.items())
    assert cache.get(("missing", 1)) is None
    cache.close()
