"""Read DNS packets from pcap and pcapng captures fast: numpy over a memory-mapped file.

    from exfil.pcapread import read_dns
    stats = {}
    for batch in read_dns("x.pcap", ports=(53,), stats=stats):
        batch.qname, batch.qlen, batch.qtype, batch.response   # one row per DNS message

Why this shape: scapy decodes ~2,500 packets/s; walking record headers in one tight loop
(`exfil.pcapformat`) and then decoding link, IP, UDP/TCP and DNS headers for a whole chunk of
records at once with numpy fancy indexing is several hundred times faster. Records in the
common shape (Ethernet, IPv4 without options or fragmentation, UDP on a DNS port) are decoded
from one fixed 42-byte window each; every other record takes the general path below, which
gives the same answer for the common shape too. Malformed records are skipped and counted by
reason in `stats`; a file that is not a capture, or is cut inside its file header, raises
`exfil.cli.UserError`.

Link types: Ethernet with up to three 802.1Q/802.1ad tags, Linux SLL and SLL2, raw IP (101, 12,
14, 228, 229), BSD null/loopback (0, 108). IPv4 (fragments skipped) and IPv6 (hop-by-hop,
routing and destination-option headers skipped over; fragments skipped).
DNS over TCP: each segment's payload is read as one or more complete `length + message` pairs
starting at the segment start; there is no stream reassembly, so a message split across
segments is skipped and counted ("tcp-partial"). Every such message becomes its own row, all
carrying the segment's record index.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from exfil.dnsparse import REASONS, parse_questions
from exfil.pcapformat import records, window

# --------------------------------------------------------------------------- constants
CHUNK_RECORDS = 8192  # records decoded together: small enough that a chunk stays in cache
MAX_TCP_MESSAGES = 64  # DNS messages looked for in one TCP segment

ETHERNET, NULL, LOOP, SLL, SLL2 = 1, 0, 108, 113, 276
RAW_LINKS = (101, 12, 14, 228, 229)
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
V6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options: skipped over
AF_INET6 = (10, 24, 28, 30)  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
IP_VERSION_KIND = np.array([0] * 4 + [0x0800, 0, 0x86DD] + [0] * 9)  # raw IP: nibble -> type
FAST_WIDTH = 42  # Ethernet (14) + IPv4 without options (20) + UDP (8) header bytes
COLUMNS = (("ipver", np.uint8), ("src", np.uint8), ("dst", np.uint8), ("sport", np.uint16),
           ("dport", np.uint16), ("proto", np.uint8), ("l4_off", np.int64),
           ("msg_off", np.int64), ("msg_len", np.int64))  # fmt: skip


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


# --------------------------------------------------------------------------- link, IP, transport
def _u16(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Big-endian (network order) uint16 at each position; positions are pre-clipped."""
    return (data.take(pos).astype(np.int64) << 8) | data.take(pos + 1)


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


# --------------------------------------------------------------------------- fast path
def _be16(rows: np.ndarray, column: int) -> np.ndarray:
    """Big-endian uint16 at `column` of each window row (a strided view, no copy)."""
    return rows[:, column : column + 2].view(">u2")[:, 0]


def _mapped(rows: np.ndarray, column: int) -> np.ndarray:
    """(n, 16) IPv4-mapped addresses ::ffff:a.b.c.d from the 4 bytes at `column`."""
    out = np.zeros((len(rows), 16), dtype=np.uint8)
    out.view(np.uint16)[:, 5] = 0xFFFF  # bytes 10-11, whatever the machine's byte order
    out.view(np.uint32)[:, 3] = rows[:, column : column + 4].view(np.uint32)[:, 0]  # as is
    return out


def _port_match(sport: np.ndarray, dport: np.ndarray, ports: np.ndarray) -> np.ndarray:
    """Either port in `ports`; a few comparisons beat np.isin for the usual one or two."""
    if len(ports) > 4:
        return np.isin(sport, ports) | np.isin(dport, ports)
    found = np.zeros(len(sport), dtype=bool)
    for port in ports.tolist():
        found |= (sport == port) | (dport == port)
    return found


def _fast(data: np.ndarray, start, caplen, links, ports) -> tuple:  # noqa: ANN001
    """(record rows, message columns) of the records in the common Ethernet/IPv4/UDP shape.

    Only records the general path would keep without counting anything are taken: Ethernet
    without tags, IPv4 with a 20-byte header, no fragment, UDP with sound lengths, either port
    in `ports`. Everything else is left to the general path.
    """
    w = window(data, start, FAST_WIDTH)
    total, ulen = _be16(w, 16), _be16(w, 38)
    sport, dport = _be16(w, 34), _be16(w, 36)
    ok = (links == ETHERNET) & (caplen >= FAST_WIDTH) & (_be16(w, 12) == 0x0800)
    ok &= (w[:, 14] == 0x45) & (w[:, 23] == 17) & (((w[:, 20] & 0x3F) | w[:, 21]) == 0)
    ok &= (total >= 28) & (ulen >= 8) & _port_match(sport, dport, ports)
    rows = np.flatnonzero(ok)
    if len(rows) < len(ok):
        w, total, ulen, sport, dport = w[rows], total[rows], ulen[rows], sport[rows], dport[rows]
        start, caplen = start[rows], caplen[rows]
    size = np.minimum(
        np.minimum(total.astype(np.int64) + 14, caplen) - 42, ulen.astype(np.int64) - 8
    )
    four, udp = np.full(len(rows), 4), np.full(len(rows), 17)
    values = (four, _mapped(w, 26), _mapped(w, 30), sport, dport, udp, start + 34, start + 42, size)
    return rows, _columns(values)


def _general(data: np.ndarray, start, caplen, links, dead, ports, stats) -> tuple:  # noqa: ANN001
    """(record rows, message columns) through link, IP and transport decoding of any shape."""
    _count(stats, "zero-length", (caplen == 0) & ~dead)
    sel = np.flatnonzero(caplen > 0)
    end = start[sel] + caplen[sel]
    l3, net = _link(data, start[sel], end, links[sel], stats)
    src, dst, proto, l4, ip_end = _ip(data, l3, end, net, stats)
    rows, sport, dport, l4_off, msg_off, msg_len = _transport(data, proto, l4, ip_end, ports, stats)
    values = (net[rows], src[rows], dst[rows], sport, dport, proto[rows], l4_off, msg_off, msg_len)
    return sel[rows], _columns(values)


def _columns(values: tuple) -> dict:
    """Message columns by name, in DnsBatch's dtypes (no copy where they already match)."""
    return {
        k: np.asarray(v).astype(t, copy=False) for (k, t), v in zip(COLUMNS, values, strict=True)
    }


def _messages(data: np.ndarray, start, caplen, links, dead, ports, stats) -> tuple:  # noqa: ANN001
    """(record rows, message columns) of every DNS message candidate, in record order."""
    rows, columns = _fast(data, start, caplen, links, ports)
    if len(rows) == len(start):
        return rows, columns
    rest = np.flatnonzero(np.isin(np.arange(len(start)), rows, invert=True))
    more, extra = _general(data, start[rest], caplen[rest], links[rest], dead[rest], ports, stats)
    rows = np.concatenate([rows, rest[more]])
    order = np.argsort(rows, kind="stable")  # one record is either fast or general
    columns = {k: np.concatenate([v, extra[k]])[order] for k, v in columns.items()}
    return rows[order], columns


# --------------------------------------------------------------------------- public API
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
    for data, rec, time, start, caplen, links, dead in records(path, chunk_records, stats):
        stats["records"] += len(rec)
        rows, columns = _messages(data, start, caplen, links, dead, ports, stats)
        q = parse_questions(data, columns["msg_off"], columns["msg_len"])
        failed = np.bincount(q.reason + 1, minlength=len(REASONS) + 1)
        for reason, count in zip(REASONS, failed[1:].tolist(), strict=True):
            if count:
                stats[reason] = stats.get(reason, 0) + count
        kept = int(failed[0])
        stats["dns_packets"] += kept
        if kept < len(rows):  # drop malformed messages (rare: skip the copies otherwise)
            ok = np.flatnonzero(q.reason < 0)
            rows, columns = rows[ok], {k: v[ok] for k, v in columns.items()}
            for field in ("qname", "qlen", "qtype", "response"):
                setattr(q, field, getattr(q, field)[ok])
        every = len(rows) == len(rec) and bool((rows == np.arange(len(rows))).all())
        picked = slice(None) if every else rows
        yield DnsBatch(
            record=rec[picked].astype(np.int64),
            time=time[picked].astype(np.float64),
            qname=q.qname,
            qlen=q.qlen,
            qtype=q.qtype,
            response=q.response,
            data=data,
            **columns,
        )
