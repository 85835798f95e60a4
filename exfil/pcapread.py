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

Accounting: stats["records"] = stats["dns_packets"] + the sum of the skip reasons, every record
counted once, except that a TCP segment carrying k DNS messages (`exfil.netdecode`) counts k
times on the right: each message becomes its own row, or is skipped with its own reason.
Link types and header rules: `exfil.netdecode`; file formats: `exfil.pcapformat`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from exfil.dnsparse import REASONS, parse_questions
from exfil.netdecode import ETHERNET, ip_layer, link_layer, transport_layer
from exfil.pcapformat import records, tally, window

# --------------------------------------------------------------------------- constants
CHUNK_RECORDS = 8192  # records decoded together: small enough that a chunk stays in cache
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
    label: np.ndarray | None = None  # int8 (n,): the labels a labelled name list gives

    def __len__(self) -> int:
        return len(self.record)


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
    tally(stats, "zero-length", np.count_nonzero((caplen == 0) & ~dead))
    sel = np.flatnonzero(caplen > 0)
    end = start[sel] + caplen[sel]
    l3, net = link_layer(data, start[sel], end, links[sel], stats)
    src, dst, proto, l4, ip_end = ip_layer(data, l3, end, net, stats)
    rows, sport, dport, l4_off, msg_off, msg_len = transport_layer(
        data, proto, l4, ip_end, ports, stats
    )
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
    yielded) and one count per skip reason; how they add up: the module docstring. Rows follow
    capture order whatever the chunk size.
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
            tally(stats, reason, count)
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
