"""pcapng: walk the block chain once, decode each run of packet blocks with numpy.

SHB/IDB/EPB/SPB and the obsolete PB; several sections, in either byte order, and interfaces,
each with its link type and if_tsresol/if_tsoffset; every other block type is stepped over.
Record indices count packet blocks only.

Why one walk: the blocks are chained by their lengths, so finding them is one Python step per
block whatever its type (`exfil.pcapformat.walk`). Interface and section blocks met on the way
are read in order and each packet block is matched to the interfaces defined before it, so a
file that puts another block after every packet costs what a plain one does (looking ahead
for the next packet from every packet once made such files quadratic: 82 s for 3.5 MB). A
section in the other byte order must be walked afresh from its header: that walk starts small
and doubles, so even a file of such sections is read in time linear in its size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from exfil.pcapformat import PCAPNG_SHB, fields, stop_record, tally, walk

# --------------------------------------------------------------------------- constants
IDB = 1  # interface description block
SIMPLE = 3
BYTE_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}  # SHB byte-order magic
MIN_STEP = 64  # blocks walked at once after a change of byte order (then doubled)
NO_INTERFACE = (-1, 0, 0.0)  # (link type, units per second, offset s) of a missing interface


# --------------------------------------------------------------------------- interfaces
def _tsresol(code: int) -> int:
    """Timestamp units per second of an if_tsresol byte, or 0 when no 64-bit tick count can
    use them (more than 2^64 per second, e.g. 10^127 or 2^127): that interface's timestamps
    are meaningless and its packets are skipped ("bad-tsresol")."""
    units = 2 ** (code & 0x7F) if code & 0x80 else 10 ** (code & 0x7F)
    return units if units < 2**64 else 0


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


def _interfaces(buf: memoryview, run: tuple, order: str, ifaces: list, base: int) -> tuple:
    """Read the run's interface blocks into `ifaces` (every interface of the file, sections in
    turn). Per block (a scalar for all when the run holds no section or interface block): the
    index in `ifaces` of its section's first interface, and how many interfaces were read."""
    offs, btype, blen = run
    idb, shb = btype == IDB, btype == PCAPNG_SHB
    if not (idb.any() or shb.any()):
        return base, len(ifaces)
    defined = len(ifaces) + np.cumsum(idb)
    first = np.maximum.accumulate(np.where(shb, defined, base))
    for i in np.flatnonzero(idb).tolist():
        ifaces.append(_idb(buf, int(offs[i]), int(blen[i]), order))
    return first, defined


def _lookup(ifaces: list, number: np.ndarray) -> tuple:
    """(link type, units, offset) per packet of interface `number` (-1: none): scalars when
    all packets share one interface (the usual case), else arrays, one look-up per interface."""
    low, high = (int(number.min()), int(number.max())) if len(number) else (-1, -1)
    if low == high:
        link, units, shift = ifaces[low] if low >= 0 else NO_INTERFACE
        return link, np.uint64(units), shift
    ids, slot = np.unique(number, return_inverse=True)
    table = [ifaces[i] if i >= 0 else NO_INTERFACE for i in ids.tolist()]
    link, units, shift = zip(*table, strict=True)
    columns = np.array(link), np.array(units, dtype=np.uint64), np.array(shift)
    return tuple(column[slot.reshape(-1)] for column in columns)


# --------------------------------------------------------------------------- blocks
def _is_packet(btype: np.ndarray) -> np.ndarray:
    """Packet blocks among block types (three compares: np.isin costs more on short runs)."""
    return (btype == 6) | (btype == 3) | (btype == 2)


def _blocks(data: np.ndarray, buf: memoryview, off: int, limit: int, order: str) -> tuple:
    """Sound blocks chained from `off`, at most `limit`: (offsets, types, lengths, stop).

    `stop` says why fewer came back: None (none missing), "end" (the end of the file),
    "section" (a section in the other byte order is next), or the skip reason of the block that
    cannot be read (`_unsound`). One vector test finds the blocks worth a closer look.
    """
    end = len(data)
    offs = np.asarray(walk(buf, off, limit, order + "I", 4, 0), dtype=np.int64)
    full = len(offs) == limit and offs[-1] < end
    offs = offs[offs < end]
    if not len(offs):  # the last walk ended with the file
        return offs, offs, offs, "end"
    head = fields(data, offs - 4, 0, 4, order)  # the block before's trailer, type, length, BOM
    if offs[0] < 4:  # the file's first block: nothing before it
        head[0, 1:] = fields(data, offs[:1], 0, 3, order)[0]
    btype, blen = head[:, 1], head[:, 2]
    at, size = int(offs[-1]), int(blen[-1])
    whole = size >= 12 and at + size <= end  # the last trailer: the others come with the next
    last = struct.unpack_from(order + "I", buf, at + size - 4)[0] if whole else -1
    tail = np.append(head[1:, 0], last)
    odd = (blen < 12) | (blen & 3 > 0) | (offs + blen > end) | (tail != blen)
    for i in np.flatnonzero(odd | (btype == PCAPNG_SHB)).tolist():
        stop = _unsound(int(offs[i]), *head[i, 1:].tolist(), int(tail[i]), end)
        if stop:
            return offs[:i], btype[:i], blen[:i], stop
    return offs, btype, blen, None if full else "end"


def _unsound(off: int, btype: int, blen: int, bom: int, tail: int, end: int) -> str | None:
    """Why a block cannot be read in this walk, or None: "truncated-record" (it runs past the
    end of the file), "section" (a section header in the other byte order), "bad-block" (length
    under 12 or not a multiple of 4, or the trailing copy of the length differs)."""
    if off + 12 > end:
        return "truncated-record"
    if btype == PCAPNG_SHB and bom != 0x1A2B3C4D:  # as read in this section's byte order
        return "section"
    if blen < 12 or blen % 4:
        return "bad-block"
    if off + blen > end:
        return "truncated-record"
    return "bad-block" if tail != blen else None


def _run(data: np.ndarray, buf: memoryview, off: int, chunk: int, order: str) -> tuple:
    """Blocks from `off` up to the `chunk`-th packet block: (parts, next offset, order, stop).

    A part is (offsets, types, lengths, byte order); a section in the other byte order starts a
    new one, walked afresh from its header. Walks `chunk` blocks, then more while packets are
    missing (from MIN_STEP after a change of byte order, doubling), so that what is walked in
    vain stays a bounded share of what is used. Blocks walked past the last packet wanted are
    left for the next run, and so is a stop found among them.
    """
    parts, need, step = [], chunk, chunk
    while True:
        offs, btype, blen, stop = _blocks(data, buf, off, step, order)
        have = np.cumsum(_is_packet(btype))
        done = len(have) > 0 and have[-1] >= need
        if done:
            at = int(np.searchsorted(have, need)) + 1
            offs, btype, blen, stop = offs[:at], btype[:at], blen[:at], None
        parts.append((offs, btype, blen, order))
        if len(offs):
            off, need = int(offs[-1] + blen[-1]), need - int(have[len(offs) - 1])
        if done or stop not in (None, "section"):
            return parts, off, order, stop
        if stop == "section":
            order, step = BYTE_ORDER.get(bytes(data[off + 8 : off + 12]), ""), MIN_STEP
            if not order:
                return parts, off, order, "bad-block"
        else:
            step = min(2 * step, max(need, MIN_STEP))


def _decode(data, buf, parts: list, ifaces: list, base: int, stats: dict) -> tuple:  # noqa: ANN001
    """(packet columns of a run or None, index in `ifaces` of the section's first interface)."""
    decoded = []
    for offs, btype, blen, order in parts:
        first, defined = _interfaces(buf, (offs, btype, blen), order, ifaces, base)
        base = int(first[-1]) if np.ndim(first) else first
        packet = np.flatnonzero(_is_packet(btype))
        mine, where = (offs, btype, blen), (first, defined)
        if len(packet) < len(offs):  # not the usual run of nothing but packets
            mine = offs[packet], btype[packet], blen[packet]
            where = (first[packet], defined[packet]) if np.ndim(first) else where
        if len(packet):
            decoded.append(_packets(data, mine, *where, ifaces, order, stats))
    if not decoded:
        return None, base
    return [np.concatenate(column) for column in zip(*decoded, strict=True)], base


def _layout(offs: np.ndarray, btype: np.ndarray, blen: np.ndarray, body, order: str) -> tuple:  # noqa: ANN001
    """(interface, caplen, malformed, simple, data offset) of packet blocks; a run of enhanced
    packet blocks only (the usual one) skips the other two layouts (simple is None then)."""
    if (btype == 6).all():
        return body[:, 0], body[:, 3], body[:, 3] > blen - 32, None, offs + 28
    simple = btype == SIMPLE
    iface = np.where(
        btype == 2, body[:, 0] >> 16 if order == ">" else body[:, 0] & 0xFFFF, body[:, 0]
    )
    room = blen - np.where(simple, 16, 32)  # bytes left for the frame
    caplen = np.where(simple, np.minimum(body[:, 0], room), body[:, 3])
    bad = (room < 0) | (caplen > room)
    return np.where(simple, 0, iface), caplen, bad, simple, offs + np.where(simple, 12, 28)


def _packets(data: np.ndarray, run: tuple, first, defined, ifaces, order, stats) -> tuple:  # noqa: ANN001
    """Decode a run's EPB/SPB/PB blocks: (time, data offset, caplen, link, dead)."""
    offs, btype, blen = run
    body = fields(data, offs, 8, 5, order)  # EPB: iface, ts_hi, ts_lo, caplen, origlen
    iface, caplen, bad, simple, start = _layout(offs, btype, blen, body, order)
    bad |= iface >= defined - first
    link, units, shift = _lookup(ifaces, np.where(bad, -1, first + iface))
    timed = ~bad if simple is None else ~bad & ~simple
    unusable = timed & (units == 0)
    tally(stats, "bad-block", np.count_nonzero(bad))
    tally(stats, "bad-tsresol", np.count_nonzero(unusable))
    dead, timed = bad | unusable, timed & ~unusable
    ticks = (body[:, 1].astype(np.uint64) << np.uint64(32)) | body[:, 2].astype(np.uint64)
    time = np.full(len(offs), np.nan)
    if np.ndim(units):  # packets of several interfaces
        t, u = ticks[timed], units[timed]
        time[timed] = t // u + (t % u) / u + shift[timed]
    elif units:
        time = np.where(timed, ticks // units + (ticks % units) / units + shift, np.nan)
    return time, start, np.where(dead, 0, caplen), np.where(dead, -1, link), dead


# --------------------------------------------------------------------------- public API
def pcapng_records(data: np.ndarray, buf: memoryview, chunk: int, stats: dict) -> Iterator:
    """Yield (records, time, data offset, caplen, link, dead) per run of up to `chunk` packet
    blocks; the caller has checked the first section header."""
    end, off, index, order = len(data), 0, 0, BYTE_ORDER[bytes(data[8:12])]
    ifaces: list[tuple[int, int, float]] = []  # every interface of the file, sections in turn
    base = 0  # index in `ifaces` of the current section's first interface
    while off < end:
        parts, off, order, stop = _run(data, buf, off, chunk, order)
        columns, base = _decode(data, buf, parts, ifaces, base, stats)
        if columns is not None:
            yield index + np.arange(len(columns[0])), *columns
            index += len(columns[0])
        if stop is not None:
            if stop != "end":
                yield stop_record(index, off, stop, stats)
            return
