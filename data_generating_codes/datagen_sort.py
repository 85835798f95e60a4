"""A capture's packets in time order without holding them all: an external merge sort.

The offline generator draws packets in the order its random stream fixes (every exfiltration,
then the benign sessions), not in time order, and the same seed must give the same bytes. A
`RunSorter` takes the packets in that order, sorts each run of `run_rows` of them by timestamp
and spills it to two files (fixed-width records, payloads); `merged()` reads the runs back
READ_ROWS rows at a time and yields blocks of packets in the order a stable sort of the whole
capture by timestamp gives (equal timestamps: the order added). Memory is bounded by the run
size and FAN_IN * READ_ROWS rows, whatever the packet count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

RUN_ROWS = 1 << 16  # packets sorted and spilled at a time
FAN_IN = 32  # runs merged at once; with more, groups of them are merged into files first
READ_ROWS = 1024  # rows read from each run at a time while merging
# one packet on disk; its payload is in the run's payload file
FIELDS = ("ns", "src", "dst", "sport", "dport", "cls", "file")
FORMATS = ("<i8", "<u2", "<u2", "<u2", "<u2", "u1", "<i4", "<u4")
RECORD = np.dtype(list(zip((*FIELDS, "length"), FORMATS, strict=True)))

# rows in time order: RECORD rows (src/dst index the address table, file -1 for benign), and
# the payload of each
Block = tuple[np.ndarray, list[bytes]]


class _Run:
    """One sorted run on disk: `<stem>.rec` (RECORD rows) and `<stem>.pay` (their payloads)."""

    def __init__(self, stem: Path) -> None:
        self.records, self.payloads = stem.with_suffix(".rec"), stem.with_suffix(".pay")

    def append(self, records: np.ndarray, payloads: list[bytes]) -> None:
        with open(self.records, "ab") as handle:
            handle.write(records.tobytes())
        with open(self.payloads, "ab") as handle:
            handle.write(b"".join(payloads))

    def blocks(self) -> Iterator[Block]:
        """The run in order, READ_ROWS rows at a time; the files go once read."""
        with open(self.records, "rb") as records, open(self.payloads, "rb") as payloads:
            while chunk := records.read(READ_ROWS * RECORD.itemsize):
                table = np.frombuffer(chunk, RECORD)
                blob = payloads.read(int(table["length"].sum()))
                ends = np.cumsum(table["length"]).tolist()
                yield table, [blob[a:b] for a, b in zip([0, *ends], ends, strict=False)]
        self.records.unlink()
        self.payloads.unlink()


class RunSorter:
    """Packets in, in any time order; `merged()` out, in stable timestamp order."""

    def __init__(self, folder: Path, start_ns: int, run_rows: int = RUN_ROWS) -> None:
        self.folder, self.start_ns, self.run_rows = folder, start_ns, run_rows
        self.rows: list[tuple] = []
        self.add = self.rows.append  # the hot path: one call per packet
        self.runs: list[_Run] = []  # spilled, in the order added
        self.spilled = self._named = 0

    def __len__(self) -> int:
        return self.spilled + len(self.rows)

    def spill_if_full(self) -> None:
        """Callers check now and then (per session, per message): runs can be a little longer."""
        if len(self.rows) >= self.run_rows:
            self.spill()

    def spill(self) -> None:
        """Sort the packets held by timestamp (stable) and write them as a new run."""
        if not self.rows:
            return
        seconds, src, dst, sport, dport, payload, cls, file = zip(*self.rows, strict=True)
        ns = self.start_ns + np.round(np.asarray(seconds) * 1e9).astype(np.int64)
        order = np.argsort(ns, kind="stable")
        records = np.empty(len(ns), RECORD)
        for name, column in zip(FIELDS, (ns, src, dst, sport, dport, cls, file), strict=True):
            records[name] = np.asarray(column)[order]
        payloads = [payload[i] for i in order.tolist()]
        records["length"] = np.fromiter(map(len, payloads), np.uint32, len(payloads))
        self.runs.append(self._new_run())
        self.runs[-1].append(records, payloads)
        self.spilled += len(self.rows)
        self.rows.clear()

    def merged(self) -> Iterator[Block]:
        """Every packet added, by (timestamp, order added); reads and deletes the runs lazily."""
        self.spill()
        runs = self.runs
        while len(runs) > FAN_IN:  # consecutive groups, so equal timestamps keep their order
            runs = [self._merge_to_run(runs[i : i + FAN_IN]) for i in range(0, len(runs), FAN_IN)]
        return _merge(runs)

    def _new_run(self) -> _Run:
        self._named += 1
        return _Run(self.folder / f"run-{self._named:06d}")

    def _merge_to_run(self, runs: list[_Run]) -> _Run:
        run = self._new_run()
        for records, payloads in _merge(runs):
            run.append(records, payloads)
        return run


def _merge(runs: list[_Run]) -> Iterator[Block]:
    """Merge sorted runs a block at a time, in (ns, run, position) order.

    Each step takes, from every run's buffer, the rows not after the least last key (ns, run)
    of all buffers: no row still unread can come before them. That run's buffer is used up and
    read again, so every step makes progress and no buffer outgrows READ_ROWS.
    """
    readers = [run.blocks() for run in runs]
    buffers = {number: block for number, reader in enumerate(readers)
               if (block := next(reader, None)) is not None}  # fmt: skip
    while buffers:
        least = min(buffers, key=lambda number: (buffers[number][0]["ns"][-1], number))
        limit = buffers[least][0]["ns"][-1]
        tables, payloads = [], []
        for number, (table, held) in list(buffers.items()):  # in run order
            cut = int(np.searchsorted(table["ns"], limit, "right" if number <= least else "left"))
            tables.append(table[:cut])
            payloads += held[:cut]
            if cut < len(table):
                buffers[number] = (table[cut:], held[cut:])
            elif (block := next(readers[number], None)) is not None:
                buffers[number] = block
            else:
                del buffers[number]
        table = np.concatenate(tables)
        order = np.argsort(table["ns"], kind="stable")
        yield table[order], [payloads[i] for i in order.tolist()]
