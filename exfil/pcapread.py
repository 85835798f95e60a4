"""Read DNS packets from pcap and pcapng captures fast: numpy over a memory-mapped file.

    from exfil.pcapread import read_dns
    stats = {}
    for batch in read_dns("x.pcap", ports=(53,), stats=stats):
        batch.qname, batch.qlen, batch.qtype, batch.response   # one row per DNS message

Why this shape: scapy decodes ~2,500 packets/s; walking record headers in one tight loop and
then decoding link, IP, UDP/TCP and DNS headers for a whole chunk of records at once with numpy
fancy indexing is several hundred times faster. Chunks hold a constant number of records, so
memory stays bounded on captures bigger than RAM (the file itself is only mapped, never read
whole). Malformed records are skipped and counted by reason in `stats`; a file that is not a
capture, or is cut inside its file header, raises `exfil.cli.UserError`.

Formats: pcap (µs and ns magic, either byte order) and pcapng (SHB/IDB/EPB/SPB and the obsolete
PB; several sections and interfaces, each with its link type and if_tsresol/if_tsoffset).
Link types: Ethernet with up to three 802.1Q/802.1ad tags, Linux SLL and SLL2, raw IP (101, 12,
14, 228, 229), BSD null/loopback (0, 108). IPv4 (fragments skipped) and IPv6 (hop-by-hop,
routing and destination-option headers skipped over; fragments skipped).
DNS over TCP: each segment's payload is read as one or more complete `length + message` pairs
starting at the segment start; there is no stream reassembly, so a message split across
segments is skipped and counted ("tcp-partial"). Every such message becomes its own row, all
carrying the segment's record index. In pcapng, record indices count packet blocks only.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from exfil.cli import UserError
from exfil.dnsparse import REASONS, parse_questions

# --------------------------------------------------------------------------- constants
CHUNK_RECORDS = 65536  # records decoded together: bounds memory, amortises numpy call overhead
MAX_CAPLEN = 262144  # a record claiming more is corrupt (Wireshark's limit); stop reading there
MAX_TCP_MESSAGES = 64  # DNS messages looked for in one TCP segment

PCAP_MAGIC = {  # magic as read little-endian -> (byte order, timestamp units per second)
    0xA1B2C3D4: ("<", 10**6),
    0xD4C3B2A1: (">", 10**6),
    0xA1B23C4D: ("<", 10**9),
    0x4D3CB2A1: (">", 10**9),
}
PCAPNG_SHB = 0x0A0D0D0A
ETHERNET, NULL, LOOP, SLL, SLL2 = 1, 0, 108, 113, 276
RAW_LINKS = (101, 12, 14, 228, 229)
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
V6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options: skipped over
AF_INET6 = (10, 24, 28, 30)  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
IP_VERSION_KIND = np.array([0] * 4 + [0x0800, 0, 0x86DD] + [0] * 9)  # raw IP: nibble -> type


@dataclass
class DnsBatch:
    """One row per DNS message in a chunk. `data` views the mapped file (valid while held)."""

    record: np.ndarray  # int64 (n,) 0-based record index in the capture
    time: np.ndarray  # float64 (n,) epoch seconds (NaN for pcapng simple packet blocks)
    ipver: np.ndarray  # uint8 (n,) 4 or 6
    src: np.ndarray  # uint8 (n, 16) IPv6, or IPv4-mapped ::ffff:a.b.c.d
    dst: np.ndarray  # uint8 (n, 16)
    sport: np.ndarray  # uint16 (n,)
    dport: np.ndarray  # uint16 (n,)
    proto: np.ndarray  # uint8 (n,) 17 UDP or 6 TCP
    l4_off: np.ndarray  # int64 (n,) offset in `data` of the UDP header (TCP: the length prefix)
    msg_off: np.ndarray  # int64 (n,) offset in `data` of the DNS message
    msg_len: np.ndarray  # int64 (n,) DNS message length in bytes (as captured)
    qname: np.ndarray  # uint8 (n, W) first question name, labels joined by '.', 0-padded;
    #                    W = the batch's longest name (<= 253): pad with features.qname_matrix
    qlen: np.ndarray  # int32 (n,) its length (0 for the root name)
    qtype: np.ndarray  # uint16 (n,)
    response: np.ndarray  # bool (n,) QR flag
    data: np.ndarray  # uint8 view of the whole capture file

    def __len__(self) -> int:
        return len(self.record)


# --------------------------------------------------------------------------- file level
def _map(path: str | os.PathLike) -> np.ndarray:
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise UserError(f"{path}: empty file, not a pcap or pcapng capture")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=np.uint8)  # the array keeps the mapping alive


def _u16(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Big-endian (network order) uint16 at each position; positions are pre-clipped."""
    return (data.take(pos).astype(np.int64) << 8) | data.take(pos + 1)


def _fields(data: np.ndarray, offs: np.ndarray, start: int, count: int, order: str) -> np.ndarray:
    """(n, count) uint32 header fields at offs + start, in the file's byte order."""
    raw = data.take((offs + start)[:, None] + np.arange(4 * count))
    return raw.view(order + "u4").astype(np.int64)


def _walk(buf: memoryview, off: int, limit: int, fmt: str, length_at: int, extra: int) -> list:
    """Offsets of up to `limit` chained records: next = off + extra + u32 at off + length_at.

    The only per-record Python loop of the reader (~0.15 µs/record); everything else is numpy.
    The last offset may lie past the end of the file (checked by the caller).
    """
    out: list[int] = []
    append = out.append
    unpack = struct.Struct(fmt).unpack_from
    try:
        for _ in repeat(None, limit):
            append(off)
            off += extra + unpack(buf, off + length_at)[0]
    except struct.error:
        pass
    return out


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
        if not whole.all():
            stats["truncated-record"] = stats.get("truncated-record", 0) + 1
            offs = offs[whole]
        head = _fields(data, offs, 0, 4, order)  # ts_sec, ts_frac, incl_len, orig_len
        bad = np.flatnonzero(head[:, 2] > MAX_CAPLEN)
        stop = len(offs) < chunk
        if len(bad):
            stats["bad-caplen"] = stats.get("bad-caplen", 0) + 1
            offs, head, stop = offs[: bad[0]], head[: bad[0]], True
        caplen = head[:, 2]
        cut = offs + 16 + caplen > end
        if cut.any():  # only the last record can run past the end of the file
            stats["truncated-record"] = stats.get("truncated-record", 0) + int(cut.sum())
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
            if off + 12 > end:
                break
            order = "<" if struct.unpack_from("<I", buf, off + 8)[0] == 0x1A2B3C4D else ">"
            ifaces = []
        blen = struct.unpack_from(order + "I", buf, off + 4)[0]
        if blen < 12 or blen % 4 or off + blen > end:
            stats["bad-block"] = stats.get("bad-block", 0) + 1
            return
        btype = struct.unpack_from(order + "I", buf, off)[0]
        if btype == 1:
            ifaces.append(_idb(buf, off, blen, order))
        if btype not in (2, 3, 6):
            off += blen
            continue
        # a run of blocks up to the next SHB/IDB; packets decoded with numpy
        offs = _walk(buf, off, chunk, order + "I", 4, 0)
        offs = np.asarray(offs, dtype=np.int64)
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
    if bad.any():
        stats["bad-block"] = stats.get("bad-block", 0) + int(bad.sum())
    start = offs + np.where(simple, 12, 28)
    return index + np.arange(len(offs)), time, start, np.where(bad, 0, caplen), links, bad


# --------------------------------------------------------------------------- link, IP, transport
def _count(stats: dict, reason: str, mask: np.ndarray) -> None:
    n = int(np.count_nonzero(mask))
    if n:
        stats[reason] = stats.get(reason, 0) + n


def _link(data: np.ndarray, start, end, links, stats) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Offset of the network header and its version (4, 6, or 0 when not IP) per record."""
    last = len(data) - 2
    l3 = start.copy()
    net = np.zeros(len(start), dtype=np.int64)
    for linktype in np.unique(links):
        idx = np.flatnonzero(links == linktype)
        s = start[idx]
        if linktype == ETHERNET:
            kind, pos = _u16(data, np.minimum(s + 12, last)), s + 14
            for _ in range(3):
                tagged = np.isin(kind, VLAN_TYPES)
                if not tagged.any():
                    break
                kind = np.where(tagged, _u16(data, np.minimum(pos + 2, last)), kind)
                pos = pos + 4 * tagged
        elif linktype in (SLL, SLL2):
            at, size = (14, 16) if linktype == SLL else (0, 20)
            kind, pos = _u16(data, np.minimum(s + at, last)), s + size
        elif linktype in RAW_LINKS:
            pos = s
            kind = IP_VERSION_KIND[data.take(np.minimum(s, last)) >> 4]
        elif linktype in (NULL, LOOP):
            pos = s + 4
            word = data.take(np.minimum(s, last - 2)[:, None] + np.arange(4)).copy()
            orders = (">u4",) if linktype == LOOP else ("<u4", ">u4")  # null: writer's order
            kind = np.zeros(len(s), dtype=np.int64)
            for fmt in orders:
                family = word.view(fmt)[:, 0]
                kind = np.where(np.isin(family, AF_INET6), 0x86DD, kind)
                kind = np.where(family == 2, 0x0800, kind)
        else:
            _count(stats, "unknown-link", idx)
            continue
        short = pos + 1 > end[idx]
        _count(stats, "link-short", short)
        version = np.where(kind == 0x0800, 4, np.where(kind == 0x86DD, 6, 0))
        _count(stats, "not-ip", (version == 0) & ~short)
        net[idx] = np.where(short, 0, version)
        l3[idx] = pos
    return l3, net


def _ip(data: np.ndarray, l3, end, net, stats) -> tuple:  # noqa: ANN001
    """(kept, src, dst, proto, l4, ip_end) for records with a sound, unfragmented IP header."""
    n, last = len(l3), len(data) - 2
    src = np.zeros((n, 16), dtype=np.uint8)
    dst = np.zeros((n, 16), dtype=np.uint8)
    proto = np.full(n, -1, dtype=np.int64)
    l4 = np.zeros(n, dtype=np.int64)
    ip_end = np.zeros(n, dtype=np.int64)
    v4 = np.flatnonzero(net == 4)
    if len(v4):
        p, e = l3[v4], end[v4]
        pc = np.minimum(p, last - 20)
        ihl = (data.take(pc) & 15).astype(np.int64) * 4
        total = _u16(data, pc + 2)
        frag = _u16(data, pc + 6)
        bad = (p + 20 > e) | (data.take(pc) >> 4 != 4) | (ihl < 20) | (total < ihl) | (p + ihl > e)
        _count(stats, "ip-bad-header", bad)
        fragment = ~bad & ((frag & 0x3FFF) != 0)
        _count(stats, "ip-fragment", fragment)
        good = ~bad & ~fragment
        proto[v4] = np.where(good, data.take(pc + 9), -1)
        src[v4, 10:12] = dst[v4, 10:12] = 0xFF
        src[v4, 12:] = data.take((pc + 12)[:, None] + np.arange(4))
        dst[v4, 12:] = data.take((pc + 16)[:, None] + np.arange(4))
        l4[v4], ip_end[v4] = p + ihl, np.minimum(p + total, e)
    v6 = np.flatnonzero(net == 6)
    if len(v6):
        p, e = l3[v6], end[v6]
        pc = np.minimum(p, last - 40)
        bad = (p + 40 > e) | (data.take(pc) >> 4 != 6)
        plen = _u16(data, pc + 4)
        nxt, pos = data.take(pc + 6).astype(np.int64), p + 40
        for _ in range(4):
            ext = np.isin(nxt, V6_EXT_HEADERS) & ~bad
            if not ext.any():
                break
            bad |= ext & (pos + 8 > e)
            at = np.minimum(pos, last)
            nxt = np.where(ext, data.take(at), nxt)
            pos = np.where(
                ext, pos + (data.take(np.minimum(at + 1, last)).astype(np.int64) + 1) * 8, pos
            )
        bad |= np.isin(nxt, V6_EXT_HEADERS)
        _count(stats, "ip-bad-header", bad)
        fragment = ~bad & (nxt == 44)
        _count(stats, "ip-fragment", fragment)
        proto[v6] = np.where(bad | fragment, -1, nxt)
        src[v6] = data.take((pc + 8)[:, None] + np.arange(16))
        dst[v6] = data.take((pc + 24)[:, None] + np.arange(16))
        l4[v6] = pos
        ip_end[v6] = np.where(plen == 0, e, np.minimum(p + 40 + plen, e))
    return src, dst, proto, l4, ip_end


def _transport(data: np.ndarray, proto, l4, ip_end, ports, stats) -> tuple:  # noqa: ANN001
    """Per DNS message: (record row, sport, dport, l4 offset, message offset, message length)."""
    last = len(data) - 2
    rows = np.flatnonzero((proto == 17) | (proto == 6))
    _count(stats, "not-udp-tcp", (proto >= 0) & (proto != 17) & (proto != 6))
    p, e, tcp = l4[rows], ip_end[rows], proto[rows] == 6
    pc = np.minimum(p, last - 20)
    sport, dport = _u16(data, pc), _u16(data, pc + 2)
    short = p + np.where(tcp, 20, 8) > e
    ulen = _u16(data, pc + 4)
    doff = (data.take(pc + 12) >> 4).astype(np.int64) * 4
    bad = short | np.where(tcp, doff < 20, ulen < 8)
    _count(stats, "l4-bad-header", bad)
    ours = ~bad & (np.isin(sport, ports) | np.isin(dport, ports))
    _count(stats, "other-port", ~bad & ~ours)
    body = np.where(tcp, p + doff, p + 8)
    stop = np.where(tcp, e, np.minimum(p + ulen, e))
    udp = ours & ~tcp
    out = [(rows[udp], sport[udp], dport[udp], p[udp], body[udp], stop[udp] - body[udp])]
    seg = np.flatnonzero(ours & tcp)
    _count(stats, "tcp-empty", body[seg] >= stop[seg])
    seg = seg[body[seg] < stop[seg]]
    pos, stop_t = body[seg], stop[seg]
    for _ in range(MAX_TCP_MESSAGES):
        if not len(seg):
            break
        size = _u16(data, np.minimum(pos, last))
        whole = pos + 2 + size <= stop_t
        _count(stats, "tcp-partial", ~whole)
        k = seg[whole]
        out.append((rows[k], sport[k], dport[k], pos[whole], pos[whole] + 2, size[whole]))
        pos = pos + 2 + size
        more = whole & (pos < stop_t)
        seg, pos, stop_t = seg[more], pos[more], stop_t[more]
    parts = [np.concatenate(column) for column in zip(*out, strict=True)]
    order = np.argsort(parts[0], kind="stable")  # rows in record order, TCP messages in turn
    return tuple(part[order] for part in parts)


# --------------------------------------------------------------------------- public API
def _records(path: str | os.PathLike, chunk: int, stats: dict) -> Iterator[tuple]:
    """Yield (data, records, time, data offset, caplen, link type, dead) per chunk of records."""
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


def read_dns(
    path: str | os.PathLike,
    ports: tuple[int, ...] | list[int] = (53,),
    chunk_records: int = CHUNK_RECORDS,
    stats: dict | None = None,
) -> Iterator[DnsBatch]:
    """DNS messages (UDP or TCP, either port in `ports`) of a capture, chunk by chunk.

    `stats` (if given) is filled in place: "records" (every record read), "dns_packets" (rows
    yielded) and one count per skip reason. Rows follow capture order whatever the chunk size.
    """
    stats = {} if stats is None else stats
    stats.setdefault("records", 0)
    stats.setdefault("dns_packets", 0)
    ports = np.asarray(sorted(set(ports)), dtype=np.int64)
    for data, rec, time, start, caplen, links, dead in _records(path, chunk_records, stats):
        stats["records"] += len(rec)
        _count(stats, "zero-length", (caplen == 0) & ~dead)
        sel = np.flatnonzero(caplen > 0)
        l3, net = _link(data, start[sel], start[sel] + caplen[sel], links[sel], stats)
        src, dst, proto, l4, ip_end = _ip(data, l3, start[sel] + caplen[sel], net, stats)
        rows, sport, dport, l4_off, msg_off, msg_len = _transport(
            data, proto, l4, ip_end, ports, stats
        )
        q = parse_questions(data, msg_off, msg_len)
        for code, reason in enumerate(REASONS):
            _count(stats, reason, q.reason == code)
        ok = np.flatnonzero(q.reason < 0)
        rows = rows[ok]
        stats["dns_packets"] += len(ok)
        yield DnsBatch(
            record=rec[sel[rows]].astype(np.int64),
            time=time[sel[rows]].astype(np.float64),
            ipver=net[rows].astype(np.uint8),
            src=src[rows],
            dst=dst[rows],
            sport=sport[ok].astype(np.uint16),
            dport=dport[ok].astype(np.uint16),
            proto=proto[rows].astype(np.uint8),
            l4_off=l4_off[ok],
            msg_off=msg_off[ok],
            msg_len=msg_len[ok].astype(np.int64),
            qname=q.qname[ok],
            qlen=q.qlen[ok],
            qtype=q.qtype[ok],
            response=q.response[ok],
            data=data,
        )


def capture_stats(path: str | os.PathLike, ports: tuple[int, ...] = (53,)) -> dict:
    """Read a whole capture only for its counts (records, DNS packets, skips by reason)."""
    stats: dict = {}
    for _ in read_dns(path, ports, stats=stats):
        pass
    return stats


# --------------------------------------------------------------------------- many captures
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")  # picked from folders
LIST_SUFFIXES = (".txt", ".list", ".lst")  # text files naming one capture per line


def capture_paths(arguments: list[str]) -> list[Path]:
    """Expand capture arguments: files, folders (their captures, sorted), and name lists."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in CAPTURE_SUFFIXES)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    name = Path(line.strip())
                    found += capture_paths(
                        [str(name if name.is_absolute() else path.parent / name)]
                    )
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{argument}: no such capture, folder or list")
    if not found:
        raise UserError("no captures given (files, folders of captures, or lists of them)")
    return found


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


def map_captures(work, paths: list, workers: int = 0) -> list:  # noqa: ANN001
    """[work(path) for path in paths], in order, on up to `workers` processes (0 = cores)."""
    workers = min(workers or os.cpu_count() or 1, len(paths))
    if workers <= 1:
        return [work(path) for path in paths]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(work, paths, chunksize=1)


def with_progress(batches: Iterator[DnsBatch], path: str | os.PathLike) -> Iterator[DnsBatch]:
    """Pass batches through, showing a tqdm bar over the file's bytes when stderr is a tty."""
    import sys

    from tqdm import tqdm

    done = 0
    total = os.path.getsize(path)
    with tqdm(total=total, unit="B", unit_scale=True, desc=Path(path).name,
              disable=not sys.stderr.isatty(), leave=False) as bar:  # fmt: skip
        for batch in batches:
            if len(batch):
                reached = int(batch.msg_off[-1] + batch.msg_len[-1])
                bar.update(max(reached - done, 0))
                done = max(done, reached)
            yield batch
        bar.update(max(total - done, 0))
