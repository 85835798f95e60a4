"""Capture file formats: walk the records of a pcap or pcapng file, chunk by chunk.

    from exfil.pcapformat import records
    for data, index, time, start, caplen, link, dead in records("x.pcap", 65536, stats):
        ...   # data[start[i] : start[i] + caplen[i]] is record index[i]'s frame

Records are chained (each header gives the next one's offset), so one tight Python loop finds
their offsets (~0.13 µs per record); every header field is then read for the whole chunk at
once with numpy. The file is only mapped, never read whole, and a chunk holds a constant number
of records, so memory stays bounded on captures bigger than RAM. Malformed records are counted
by reason in `stats`; a file that is not a capture, or is cut inside its file header, raises
`exfil.cli.UserError`.

pcap: µs and ns magic, either byte order. pcapng: SHB/IDB/EPB/SPB and the obsolete PB; several
sections and interfaces, each with its link type and if_tsresol/if_tsoffset. In pcapng, record
indices count packet blocks only.
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
    is several times faster than gathering with an (n, width) index matrix."""
    starts = np.asarray(starts, dtype=np.int64)
    if len(data) < width:
        if not len(data):
            return np.zeros((len(starts), width), dtype=np.uint8)
        return data.take(np.minimum(starts[:, None] + np.arange(width), len(data) - 1))
    view = np.lib.stride_tricks.sliding_window_view(data, width)
    out = view[np.clip(starts, 0, len(view) - 1)]
    late = np.flatnonzero(starts >= len(view))  # rows reaching past the end of the file
    if len(late):
        out[late] = data.take(np.minimum(starts[late, None] + np.arange(width), len(data) - 1))
    return out


def _fields(data: np.ndarray, offs: np.ndarray, start: int, count: int, order: str) -> np.ndarray:
    """(n, count) uint32 header fields at offs + start, in the file's byte order."""
    return window(data, offs + start, 4 * count).view(order + "u4").astype(np.int64)


def _walk(buf: memoryview, off: int, limit: int, fmt: str, length_at: int, extra: int) -> list:
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


def _count(stats: dict, reason: str, count: int) -> None:
    if count:
        stats[reason] = stats.get(reason, 0) + int(count)


# --------------------------------------------------------------------------- pcap
def _pcap_records(data: np.ndarray, buf: memoryview, chunk: int, stats: dict) -> Iterator[tuple]:
    if len(data) < 24:
        raise UserError("capture cut inside its 24-byte pcap file header")
    order, units = PCAP_MAGIC[int(data[:4].view("<u4")[0])]
    linktype = struct.unpack_from(order + "I", buf, 20)[0] & 0x0FFFFFFF
    off, index, end = 24, 0, len(data)
    while off < end:
        offs = np.asarray(_walk(buf, off, chunk, order + "I", 8, 16), dtype=np.int64)
        offs = offs[offs < end]
        if len(offs) == 0:
            break
        whole = offs + 16 <= end
        if not whole[-1]:  # only the last offset can run past the end of the file
            _count(stats, "truncated-record", 1)
            offs = offs[whole]
        head = window(data, offs, 16).view(order + "u4")  # ts_sec, ts_frac, incl_len, orig_len
        caplen = head[:, 2].astype(np.int64)
        bad = np.flatnonzero(caplen > MAX_CAPLEN)
        stop = len(offs) < chunk
        if len(bad):
            _count(stats, "bad-caplen", 1)
            offs, head, caplen, stop = offs[: bad[0]], head[: bad[0]], caplen[: bad[0]], True
        cut = offs + 16 + caplen > end
        if cut[-1:].any():  # only the last record can run past the end of the file
            _count(stats, "truncated-record", np.count_nonzero(cut))
            caplen = np.where(cut, 0, caplen)
        time = head[:, 0] + head[:, 1] / units
        links = np.full(len(offs), linktype, dtype=np.int64)
        yield index + np.arange(len(offs)), time, offs + 16, caplen, links, cut
        index += len(offs)
        if stop:
            break
        off = int(offs[-1] + 16 + caplen[-1])


# --------------------------------------------------------------------------- pcapng
def _tsresol(code: int) -> int:
    return 2 ** (code & 0x7F) if code & 0x80 else 10 ** (code & 0x7F)


def _idb(buf: memoryview, off: int, blen: int, order: str) -> tuple[int, int, float]:
    """(link type, timestamp units per second, offset seconds) from an interface block."""
    linktype = struct.unpack_from(order + "H", buf, off + 8)[0]
    units, shift, pos, stop = 10**6, 0.0, off + 16, off + blen - 4
    while pos + 4 <= stop:
        code, size = struct.unpack_from(order + "HH", buf, pos)
        if code == 0 or pos + 4 + size > stop:
            break
        if code == 9 and size >= 1:
            units = _tsresol(buf[pos + 4])
        elif code == 14 and size >= 8:
            shift = float(struct.unpack_from(order + "q", buf, pos + 4)[0])
        pos += 4 + (size + 3) // 4 * 4
    return linktype, units, shift


def _pcapng_records(data: np.ndarray, buf: memoryview, chunk: int, stats: dict) -> Iterator:
    end, off, index = len(data), 0, 0
    order, ifaces = "<", []
    while off + 12 <= end:
        btype = struct.unpack_from("<I", buf, off)[0]
        if btype == PCAPNG_SHB:
            order = "<" if struct.unpack_from("<I", buf, off + 8)[0] == 0x1A2B3C4D else ">"
            ifaces = []
        blen = struct.unpack_from(order + "I", buf, off + 4)[0]
        if blen < 12 or blen % 4 or off + blen > end:
            _count(stats, "bad-block", 1)
            return
        btype = struct.unpack_from(order + "I", buf, off)[0]
        if btype == 1:
            ifaces.append(_idb(buf, off, blen, order))
        if btype not in (2, 3, 6):
            off += blen
            continue
        # a run of blocks up to the next SHB/IDB; packets decoded with numpy
        offs = np.asarray(_walk(buf, off, chunk, order + "I", 4, 0), dtype=np.int64)
        offs = offs[offs + 12 <= end]
        head = _fields(data, offs, 0, 2, order)
        ok = (head[:, 1] >= 12) & (head[:, 1] % 4 == 0) & (offs + head[:, 1] <= end)
        first_other = np.flatnonzero(~ok | ~np.isin(head[:, 0], (2, 3, 6)))
        if len(first_other):  # the outer loop handles (or rejects) that block
            offs, head = offs[: first_other[0]], head[: first_other[0]]
        yield _packet_blocks(data, offs, head, order, ifaces, index, stats)
        index += len(offs)
        off = int(offs[-1] + head[-1, 1])


def _packet_blocks(data, offs, head, order, ifaces, index, stats) -> tuple:  # noqa: ANN001
    """Decode a run of EPB/SPB/PB blocks: (records, time, data offset, caplen, link, cut)."""
    btype, blen = head[:, 0], head[:, 1]
    body = _fields(data, offs, 8, 5, order)  # EPB: iface, ts_hi, ts_lo, caplen, origlen
    simple = btype == 3
    iface = np.where(
        btype == 2, body[:, 0] >> 16 if order == ">" else body[:, 0] & 0xFFFF, body[:, 0]
    )
    iface = np.where(simple, 0, iface)
    caplen = np.where(simple, np.minimum(body[:, 0], blen - 16), body[:, 3])
    bad = (caplen > blen - np.where(simple, 16, 32)) | (iface >= len(ifaces))
    links = np.full(len(offs), -1, dtype=np.int64)
    time = np.full(len(offs), np.nan)
    ticks = (body[:, 1] << 32) | body[:, 2]
    for number, (linktype, units, shift) in enumerate(ifaces):
        mine = (iface == number) & ~bad
        links[mine] = linktype
        time[mine & ~simple] = (ticks // units + (ticks % units) / units + shift)[mine & ~simple]
    _count(stats, "bad-block", np.count_nonzero(bad))
    start = offs + np.where(simple, 12, 28)
    return index + np.arange(len(offs)), time, start, np.where(bad, 0, caplen), links, bad


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
        chunks = _pcapng_records(data, buf, chunk, stats)
    else:
        raise UserError(f"{path}: not a pcap or pcapng capture (unknown magic number)")
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
    raise UserError(f"{path}: not a pcap or pcapng capture (unknown magic number)")
