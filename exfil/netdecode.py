"""Link, IP and transport headers of a chunk of capture records, decoded with numpy.

Each function takes whole arrays (one entry per record, or per DNS message candidate) and
counts what it skips by reason in `stats`: every record it is given either goes on to the next
layer or is counted exactly once. Link types: Ethernet with up to three 802.1Q/802.1ad tags,
Linux SLL and SLL2, raw IP (101, 12, 14, 228, 229), BSD null/loopback (0, 108). IPv4 (fragments
skipped) and IPv6 (hop-by-hop, routing and destination-option headers skipped over; fragments
skipped).

DNS over TCP: each segment's payload is read as complete `length + message` pairs starting at
the segment start, every one of them however many there are; there is no stream reassembly, so
a message split across segments is skipped and counted ("tcp-partial"). A segment carrying k
pairs (a cut last one included) thus counts once among the records read and k times among the
DNS messages kept plus the skip reasons.
"""

from __future__ import annotations

import numpy as np

from exfil.pcapformat import tally

# --------------------------------------------------------------------------- constants
TCP_ROUNDS = 64  # pairs of every TCP segment read in vectorised rounds; the rest one by one
ETHERNET, NULL, LOOP, SLL, SLL2 = 1, 0, 108, 113, 276
RAW_LINKS = (101, 12, 14, 228, 229)
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
V6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options: skipped over
AF_INET6 = (10, 24, 28, 30)  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
IP_VERSION_KIND = np.array([0] * 4 + [0x0800, 0, 0x86DD] + [0] * 9)  # raw IP: nibble -> type


# --------------------------------------------------------------------------- helpers
def _u16(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Big-endian (network order) uint16 at each position; positions are pre-clipped."""
    return (data.take(pos).astype(np.int64) << 8) | data.take(pos + 1)


def _count(stats: dict, reason: str, mask: np.ndarray) -> None:
    tally(stats, reason, np.count_nonzero(mask))


# --------------------------------------------------------------------------- link, IP
def link_layer(data: np.ndarray, start, end, links, stats) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
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
            tally(stats, "unknown-link", len(idx))  # every record of this link type
            continue
        short = pos + 1 > end[idx]
        _count(stats, "link-short", short)
        version = np.where(kind == 0x0800, 4, np.where(kind == 0x86DD, 6, 0))
        _count(stats, "not-ip", (version == 0) & ~short)
        net[idx] = np.where(short, 0, version)
        l3[idx] = pos
    return l3, net


def ip_layer(data: np.ndarray, l3, end, net, stats) -> tuple:  # noqa: ANN001
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
        pc = np.minimum(p, len(data) - 20)  # the whole header inside the file, never shifted
        ihl = (data.take(pc) & 15).astype(np.int64) * 4
        total = _u16(data, pc + 2)
        frag = _u16(data, pc + 6)
        bad = (p + 20 > e) | (data.take(pc) >> 4 != 4) | (ihl < 20) | (total < ihl) | (p + ihl > e)
        _count(stats, "ip-bad-header", bad)
        fragment = ~bad & ((frag & 0x3FFF) != 0)
        _count(stats, "ip-fragment", fragment)
        good = ~bad & ~fragment
        proto[v4] = np.where(good, data.take(pc + 9).astype(np.int64), -1)  # uint8 holds no -1
        src[v4, 10:12] = dst[v4, 10:12] = 0xFF
        src[v4, 12:] = data.take((pc + 12)[:, None] + np.arange(4))
        dst[v4, 12:] = data.take((pc + 16)[:, None] + np.arange(4))
        l4[v4], ip_end[v4] = p + ihl, np.minimum(p + total, e)
    v6 = np.flatnonzero(net == 6)
    if len(v6):
        p, e = l3[v6], end[v6]
        pc = np.minimum(p, len(data) - 40)
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


# --------------------------------------------------------------------------- transport
def transport_layer(data: np.ndarray, proto, l4, ip_end, ports, stats) -> tuple:  # noqa: ANN001
    """Per DNS message: (record row, sport, dport, l4 offset, message offset, message length)."""
    rows = np.flatnonzero((proto == 17) | (proto == 6))
    _count(stats, "not-udp-tcp", (proto >= 0) & (proto != 17) & (proto != 6))
    p, e, tcp = l4[rows], ip_end[rows], proto[rows] == 6
    pc = np.minimum(p, len(data) - 8)  # a sound UDP header at the very end is read in place
    sport, dport = _u16(data, pc), _u16(data, pc + 2)
    short = p + np.where(tcp, 20, 8) > e
    ulen = _u16(data, pc + 4)
    doff = (data.take(np.minimum(p + 12, len(data) - 1)) >> 4).astype(np.int64) * 4
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
    which, pos, size = _tcp_messages(data, body[seg], stop[seg], stats)
    k = seg[which]
    out.append((rows[k], sport[k], dport[k], pos, pos + 2, size))
    parts = [np.concatenate(column) for column in zip(*out, strict=True)]
    order = np.argsort(parts[0], kind="stable")  # rows in record order, TCP messages in turn
    return tuple(part[order] for part in parts)


def _tcp_messages(data: np.ndarray, pos: np.ndarray, stop: np.ndarray, stats: dict) -> tuple:
    """(segment, prefix offset, message length) of every whole `length + message` pair in the
    payloads data[pos:stop]; a pair cut by its segment's end is counted ("tcp-partial").

    Vectorised rounds take the first TCP_ROUNDS pairs of all segments together; the rare
    segments holding more are walked pair by pair, so that a segment costs time linear in its
    bytes however many messages it packs, and none is dropped uncounted.
    """
    last = len(data) - 2
    seg, found = np.arange(len(pos)), []
    for _ in range(TCP_ROUNDS):
        if not len(seg):
            break
        size = _u16(data, np.minimum(pos, last))
        whole = pos + 2 + size <= stop
        _count(stats, "tcp-partial", ~whole)
        found.append((seg[whole], pos[whole], size[whole]))
        pos = pos + 2 + size
        more = whole & (pos < stop)
        seg, pos, stop = seg[more], pos[more], stop[more]
    for s, p, e in zip(seg.tolist(), pos.tolist(), stop.tolist(), strict=True):
        starts, sizes, cut = _pairs(data[p:e].tobytes())
        tally(stats, "tcp-partial", cut)
        found.append((np.full(len(starts), s), p + np.array(starts, np.int64), np.array(sizes)))
    if not found:
        return (np.zeros(0, np.int64),) * 3
    return tuple(np.concatenate(column).astype(np.int64) for column in zip(*found, strict=True))


def _pairs(payload: bytes) -> tuple[list[int], list[int], bool]:
    """(offsets, lengths) of the whole `length + message` pairs of one payload, and whether a
    cut pair ends it."""
    starts, sizes, at, end = [], [], 0, len(payload)
    while at + 2 <= end:
        size = payload[at] << 8 | payload[at + 1]
        if at + 2 + size > end:
            return starts, sizes, True
        starts.append(at)
        sizes.append(size)
        at += 2 + size
    return starts, sizes, at < end
