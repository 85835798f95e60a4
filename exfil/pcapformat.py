"""Capture file formats: walk the records of a pcap or pcapng file, chunk by chunk.

    from exfil.pcapformat import records
    for data, index, time, start, caplen, link, dead in records("x.pcap", 65536, stats):
        ...   # data[start[i] : start[i] + caplen[i]] is record index[i]'s frame

Records are chained (each header gives the next one's offset), so one tight Python loop finds
their offsets (~0.13 µs per record); every header field is then read for the whole chunk at
once with numpy. The file is only mapped, never read whole, and a chunk holds a constant number
of records, so memory stays bounded on captures bigger than RAM. Malformed records are counted
by reason in `stats` and still yielded (as `dead`, caplen 0), so that the records read are the
records decoded plus those skipped. Reading stops at a record whose length cannot be trusted
(cut by the end of the file, or corrupt): the chain is lost there, and that record is the last
one yielded. A file that is not a capture, or is cut inside its file header, raises
`exfil.cli.UserError`.

pcap: µs and ns magic, either byte order; here. pcapng: `exfil.pcapng`.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from itertools import repeat

import numpy as np

from exfil.cli import UserError

# --------------------------------------------------------------------------- constants
MAX_CAPLEN = 262144  # a record claiming more is corrupt (Wireshark's limit); stop reading there
PCAP_MAGIC = {  # magic as read little-endian -> (byte order, timestamp units per second)
    0xA1B2C3D4: ("<", 10**6),
    0xD4C3B2A1: (">", 10**6),
    0xA1B23C4D: ("<", 10**9),
    0x4D3CB2A1: (">", 10**9),
}
PCAPNG_SHB = 0x0A0D0D0A
SMALL_WINDOW = 2048  # bytes: fewer are gathered directly, sparing the sliding view's set-up
NOT_A_CAPTURE = (
    "not a pcap or pcapng capture (unknown magic number), nor a Zeek dns.log or Suricata eve.json"
)


# --------------------------------------------------------------------------- helpers
def _map(path: str | os.PathLike) -> np.ndarray:
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise UserError(f"{path}: empty file, not a pcap or pcapng capture")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=np.uint8)  # the array keeps the mapping alive


def window(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """(n, width) copy of the bytes at each start; bytes past the end of `data` read as its
    last byte (callers check lengths). One row copy each through a sliding-window view, which
    is several times faster than gathering with an (n, width) index matrix, except for a few
    rows (many small pcapng runs), where setting the view up would cost more than the copy."""
    starts = np.asarray(starts, dtype=np.int64)
    if len(data) < width or len(starts) * width <= SMALL_WINDOW:
        if not len(data):
            return np.zeros((len(starts), width), dtype=np.uint8)
        at = np.maximum(starts, 0)[:, None] + np.arange(width)
        return data.take(np.minimum(at, len(data) - 1))
    view = np.lib.stride_tricks.sliding_window_view(data, width)
    out = view[np.clip(starts, 0, len(view) - 1)]
    late = np.flatnonzero(starts >= len(view))  # rows reaching past the end of the file
    if len(late):
        out[late] = data.take(np.minimum(starts[late, None] + np.arange(width), len(data) - 1))
    return out


def fields(data: np.ndarray, offs: np.ndarray, start: int, count: int, order: str) -> np.ndarray:
    """(n, count) uint32 header fields at offs + start, in the file's byte order."""
    return window(data, offs + start, 4 * count).view(order + "u4").astype(np.int64)


def walk(buf: memoryview, off: int, limit: int, fmt: str, length_at: int, extra: int) -> list:
    """Offsets of up to `limit` chained records: next = off + extra + u32 at off + length_at.

    The only per-record Python loop of the reader. A list comprehension does the common case;
    when it runs off the end of the file (the last chunk), the plain loop redoes that chunk to
    keep the offsets found before the end. The last offset may lie past the end of the file.
    """
    unpack = struct.Struct(f"{fmt[0]}{length_at}x{fmt[1:]}").unpack_from
    try:
        first = off
        return [first] + [off := off + extra + unpack(buf, off)[0] for _ in repeat(None, limit - 1)]
    except struct.error:
        pass
    out: list[int] = []
    append = out.append
    off = first
    try:
        for _ in repeat(None, limit):
            append(off)
            off += extra + unpack(buf, off)[0]
    except struct.error:
        pass
    return out


def tally(stats: dict, reason: str, count: int) -> None:
    """Add `count` skipped records to `stats[reason]` (no key for a reason never seen)."""
    if count:
        stats[reason] = stats.get(reason, 0) + int(count)


def stop_record(index: int, at: int, reason: str, stats: dict) -> tuple:
    """The record where reading stops (cut by the end of the file, or its length corrupt), as
    a one-record chunk: counted under `reason` and among the records read, never decoded."""
    tally(stats, reason, 1)
    one = np.ones(1, dtype=np.int64)
    return index * one, np.full(1, np.nan), at * one, 0 * one, -one, one.astype(bool)


# --------------------------------------------------------------------------- pcap
def _pcap_records(data: np.ndarray, buf: memoryview, chunk: int, stats: dict) -> Iterator[tuple]:
    """Yield (records, time, data offset, caplen, link, dead) per chunk of `chunk` records."""
    if len(data) < 24:
        raise UserError("capture cut inside its 24-byte pcap file header")
    order, units = PCAP_MAGIC[int(data[:4].view("<u4")[0])]
    linktype = struct.unpack_from(order + "I", buf, 20)[0] & 0x0FFFFFFF
    off, index, end = 24, 0, len(data)
    while off < end:
        offs = np.asarray(walk(buf, off, chunk, order + "I", 8, 16), dtype=np.int64)
        offs = offs[offs < end]
        head = window(data, offs, 16).view(order + "u4")  # ts_sec, ts_frac, incl_len, orig_len
        caplen = head[:, 2].astype(np.int64)
        # reading stops at a header cut by the end of the file or a caplen too big to be true
        # (the chain of records is lost there); that record is counted, never decoded
        broken = np.flatnonzero((offs + 16 > end) | (caplen > MAX_CAPLEN))
        stop = len(offs) < chunk or len(broken) > 0
        if len(broken):
            at = broken[0]
            why = "truncated-record" if offs[at] + 16 > end else "bad-caplen"
            offs, head, caplen = offs[:at], head[:at], caplen[:at]
        cut = offs + 16 + caplen > end  # only the last record can run past the end of the file
        tally(stats, "truncated-record", np.count_nonzero(cut))
        if len(offs):
            time = head[:, 0] + head[:, 1] / units
            links, size = np.full(len(offs), linktype, dtype=np.int64), np.where(cut, 0, caplen)
            yield index + np.arange(len(offs)), time, offs + 16, size, links, cut
            index += len(offs)
        after = int(offs[-1] + 16 + caplen[-1]) if len(offs) else off
        if len(broken):
            yield stop_record(index, after, why, stats)
        if stop or cut[-1:].any():
            break
        off = after


# --------------------------------------------------------------------------- public API
def records(path: str | os.PathLike, chunk: int, stats: dict) -> Iterator[tuple]:
    """Yield (data, records, time, data offset, caplen, link type, dead) per chunk of records.

    `data` is the whole mapped file (uint8); `dead` marks records whose caplen was set to 0
    because they are corrupt or cut by the end of the file (already counted in `stats`).
    """
    data = _map(path)
    buf = memoryview(data)
    magic = int(data[:4].view("<u4")[0]) if len(data) >= 4 else None
    if magic in PCAP_MAGIC:
        chunks = _pcap_records(data, buf, chunk, stats)
    elif magic == PCAPNG_SHB:
        bom = bytes(data[8:12])
        if len(data) < 28 or bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
            raise UserError(f"{path}: cut inside its pcapng section header, or not pcapng")
        from exfil.pcapng import pcapng_records  # here: exfil.pcapng uses this module's helpers

        chunks = pcapng_records(data, buf, chunk, stats)
    else:
        raise UserError(f"{path}: {NOT_A_CAPTURE}")
    for parts in chunks:
        yield (data, *parts)


def check_capture(path: str | os.PathLike) -> None:
    """Raise UserError now if `path` is not a capture, before any work or output starts."""
    with open(path, "rb") as handle:
        head = handle.read(28)
    magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else None
    if magic in PCAP_MAGIC and len(head) >= 24:
        return
    if magic == PCAPNG_SHB and len(head) >= 28:
        return
    if magic in PCAP_MAGIC or magic == PCAPNG_SHB:
        raise UserError(f"{path}: capture cut inside its file header")
    raise UserError(f"{path}: {NOT_A_CAPTURE}")
