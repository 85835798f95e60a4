"""Vectorised DNS parsing for a batch of messages lying in one byte array (a mapped capture).

Query names are written by attackers, so every rule here is about staying bounded:
- a compression pointer must point into the message, after the 12-byte header, and strictly
  before the start of the stretch of labels being read (so every jump goes backwards past all
  earlier jumps: loops are impossible), and at most MAX_JUMPS pointers are followed per name;
- label length bytes 0x40-0xBF (labels over 63 bytes, the unused label types) are rejected;
- names over 255 bytes on the wire are rejected; reading past the message end is "truncated".
Each failing message gets a reason (REASONS) and is skipped by the caller; nothing is allocated
per message beyond at most QNAME_MAX bytes for its name row, and every loop has a fixed bound.

`parse_questions` gives the first question (name as presentation bytes: raw label bytes joined
by '.', no trailing dot, the root name as length 0), its type and the QR flag. `rr_ttl_offsets`
walks every resource record to find its TTL, so the `dns` feature scope can zero them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exfil.pcapformat import window

QNAME_MAX = 256  # presentation names are at most 253 bytes, so this row width always holds one
MAX_JUMPS = 64  # compression pointers followed per name (real messages use one or two)
MAX_RRS = 512  # resource records walked per message when looking for TTLs
REASONS = (
    "dns-short",  # under the 12-byte header
    "dns-no-question",  # QDCOUNT = 0
    "dns-truncated",  # a label, pointer or the question's type/class runs past the message
    "dns-bad-label",  # length byte 0x40-0xBF: label over 63 bytes or an unknown label type
    "dns-bad-pointer",  # pointer forward, into the header, in a loop, or too many of them
    "dns-name-too-long",  # name over 255 bytes on the wire
)
SHORT, NO_QUESTION, TRUNCATED, BAD_LABEL, BAD_POINTER, TOO_LONG = range(len(REASONS))
# row q: q bytes 0xFF, then zeros; ANDed onto a row of bytes it keeps only the first q
PREFIX_MASK = np.tri(QNAME_MAX + 1, QNAME_MAX, -1, dtype=np.uint8) * np.uint8(255)


@dataclass
class Questions:
    """First question of each message; rows with reason >= 0 are malformed (other fields 0)."""

    reason: np.ndarray  # int8 (n,) -1 = parsed, else index into REASONS
    qname: np.ndarray  # uint8 (n, W) zero-padded presentation name, W = longest (<= 253)
    qlen: np.ndarray  # int32 (n,)
    qtype: np.ndarray  # uint16 (n,)
    response: np.ndarray  # bool (n,)


def _u16(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (data.take(pos).astype(np.int64) << 8) | data.take(pos + 1)


def ragged(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ranges [start, start + length): (positions, row of each position).

    Built with two cumulative sums (steps of 1 inside a range, a jump between ranges), which
    is several times faster than np.repeat with per-row counts.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rows = np.flatnonzero(lengths > 0)
    size, begin = lengths[rows], np.asarray(starts, dtype=np.int64)[rows]
    total = int(size.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.cumsum(size) - size
    step = np.ones(total, dtype=np.int64)
    step[first] = np.diff(begin, prepend=0) - np.concatenate([[0], size[:-1] - 1])
    jump = np.zeros(total, dtype=np.int64)
    jump[first] = np.diff(rows, prepend=0)
    return np.cumsum(step), np.cumsum(jump)


def _walk_labels(data: np.ndarray, first: np.ndarray, end: np.ndarray) -> tuple:
    """Follow plain length bytes from `first`: (stop position, byte there, dot marks).

    A name stops at the first byte that is not a 1-63 length, or at the message end; `marks`
    holds (row, position) of every length byte after the first (a dot in presentation form).
    Rows still walking after 128 labels (longer than any legal name) get stop byte 0xFF.
    """
    clip = max(len(data) - 1, 0)
    stop, stop_byte = first.copy(), np.full(len(first), 0xFF, dtype=np.uint8)
    live, pos, e = np.arange(len(first)), first, end
    marks = []
    for step in range(128):  # a 255-byte name has at most 127 labels
        if not len(live):
            break
        b = data.take(np.minimum(pos, clip))
        go = (b - np.uint8(1) < 0x3F) & (pos < e)  # uint8: 0 wraps to 255
        if not go.all():
            ended = np.flatnonzero(~go)
            stop[live[ended]], stop_byte[live[ended]] = pos[ended], b[ended]
            going = np.flatnonzero(go)
            live, pos, e, b = live[going], pos[going], e[going], b[going]
        if step:
            marks.append((live, pos))
        pos = pos + 1 + b
    stop[live] = pos
    return stop, stop_byte, marks


def parse_questions(data: np.ndarray, msg_off: np.ndarray, msg_len: np.ndarray) -> Questions:
    """Parse the header and first question of every message data[off : off + len].

    Fast pass first: names without compression whose labels are all 1-63 bytes are walked by
    their length bytes only, then copied whole from the wire (the presentation form is the
    wire form with interior length bytes turned into dots). Everything else, hostile or merely
    compressed, goes through `_careful`, which checks every rule and names the reason.
    """
    off = np.asarray(msg_off, dtype=np.int64)
    end = off + np.asarray(msg_len, dtype=np.int64)
    n, clip = len(off), max(len(data) - 2, 0)
    head = window(data, off, 12)  # bytes past a short message are never used
    rows = np.flatnonzero((end - off >= 12) & (head[:, 4:6].view(">u2")[:, 0] > 0))
    first = off[rows] + 12  # the first length byte
    pos, stopped, marks = _walk_labels(data, first, end[rows])
    good = (stopped == 0) & (pos - first < 255) & (pos + 5 <= end[rows])
    every = len(rows) == n and bool(good.all())
    good_rows = rows if every else rows[good]
    if not every:
        pos, first = pos[good], first[good]
    sizes = np.maximum(pos - first - 1, 0)
    if every:  # the usual case: no message needs the careful pass
        slow = Questions(
            np.full(n, -1, dtype=np.int8),
            np.zeros((n, 0), dtype=np.uint8),
            sizes.astype(np.int32),
            np.zeros(n, dtype=np.uint16),
            np.zeros(n, dtype=bool),
        )
    else:
        fast = np.zeros(n, dtype=bool)
        fast[good_rows] = True
        slow = _careful(data, off, end, fast)
    width = max(int(sizes.max()) if len(sizes) else 0, int(slow.qlen.max()) if n else 0, 1)
    names = window(data, first + 1, width)
    names &= PREFIX_MASK[:, :width][sizes]  # what follows the name (zero byte, type...) -> padding
    # walked row -> flat offset of its name's first byte in `names`, less that byte's position
    where = np.full(len(rows), -1, dtype=np.int64)
    where[good] = np.arange(len(good_rows)) * width
    shift = where - (off[rows] + 13)
    flat = names.reshape(-1)
    for live, p in marks:
        if every:
            flat[p + shift[live]] = ord(".")
        else:
            keep = where[live] >= 0
            flat[p[keep] + shift[live[keep]]] = ord(".")
    if every:
        slow.qname = names
    else:
        qname = np.zeros((n, width), dtype=np.uint8)
        qname[:, : slow.qname.shape[1]] = slow.qname[:, :width]
        qname[good_rows] = names
        slow.qname = qname
    slow.qlen[good_rows] = sizes
    slow.qtype[good_rows] = _u16(data, np.minimum(pos + 1, clip))
    slow.response[good_rows] = (head[good_rows, 2] >> 7).astype(bool)
    slow.reason[good_rows] = -1
    return slow


def _header(data: np.ndarray, off: np.ndarray, msg_len: np.ndarray) -> tuple:
    """(reason so far, QR flag) per message from its 12-byte header: too short, no question."""
    reason = np.full(len(off), -1, dtype=np.int8)
    reason[msg_len < 12] = SHORT
    hdr = np.minimum(off, max(len(data) - 12, 0))  # only short messages are moved
    response = (data.take(hdr + 2) >> 7).astype(bool) if len(off) else np.zeros(0, bool)
    reason[(reason < 0) & (_u16(data, hdr + 4) == 0)] = NO_QUESTION
    return reason, response


def _question_types(data: np.ndarray, rows: list, after: list, end, reason) -> np.ndarray:  # noqa: ANN001
    """QTYPE of each message whose name ended (row, offset just after the name); a question
    cut before its type and class ends is marked "dns-truncated" in `reason`."""
    done = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    after = np.concatenate(after) if after else np.zeros(0, np.int64)
    cut = after + 4 > end[done]
    reason[done[cut]] = TRUNCATED
    qtype = np.zeros(len(reason), dtype=np.uint16)
    qtype[done[~cut]] = _u16(data, np.minimum(after[~cut], max(len(data) - 2, 0)))
    return qtype


def _careful(data: np.ndarray, off: np.ndarray, end: np.ndarray, skip: np.ndarray) -> Questions:
    """Every rule checked, every reason named; rows in `skip` are left empty for the caller."""
    n, clip = len(off), max(len(data) - 2, 0)
    reason, response = _header(data, off, end - off)
    # per active message: position, floor for pointers, end of name in the question, wire
    # length, labels so far, presentation length so far, jumps taken
    rows = rows_all = np.flatnonzero((reason < 0) & ~skip)
    pos, floor = off[rows] + 12, off[rows] + 12
    qend = np.full(len(rows), -1, dtype=np.int64)
    wire, labels, size, jumps = (np.zeros(len(rows), dtype=np.int64) for _ in range(4))
    done_rows, done_qend, found = [], [], []  # found: (row, source, length, destination)
    final_size = np.zeros(n, dtype=np.int64)
    while len(rows):
        e = end[rows]
        inside = pos < e
        b = data.take(np.minimum(pos, clip)).astype(np.int64)
        fail = np.full(len(rows), -1, dtype=np.int64)
        fail[~inside] = TRUNCATED
        zero = inside & (b == 0)
        pointer = inside & (b >= 0xC0)
        label = inside & (b > 0) & (b < 0x40)
        fail[inside & (b >= 0x40) & (b < 0xC0)] = BAD_LABEL
        # pointers
        target = off[rows] + (((b & 0x3F) << 8) | data.take(np.minimum(pos + 1, clip)))
        fail[pointer & (pos + 2 > e)] = TRUNCATED
        wrong = pointer & ((target >= floor) | (target < off[rows] + 12) | (jumps >= MAX_JUMPS))
        fail[wrong & (fail < 0)] = BAD_POINTER
        jump = pointer & (fail < 0)
        qend = np.where(jump & (qend < 0), pos + 2, qend)
        # labels
        fail[label & (pos + 1 + b > e)] = TRUNCATED
        wire = wire + np.where(label, b + 1, 0)
        fail[label & (wire + 1 > 255) & (fail < 0)] = TOO_LONG
        take = label & (fail < 0)
        dest = size + (labels > 0)
        found.append((rows[take], pos[take] + 1, b[take], dest[take]))
        size = np.where(take, dest + b, size)
        labels = labels + take
        # names that ended here
        qend = np.where(zero & (qend < 0), pos + 1, qend)
        reason[rows[fail >= 0]] = fail[fail >= 0]
        done_rows.append(rows[zero])
        done_qend.append(qend[zero])
        final_size[rows[zero]] = size[zero]
        pos = np.where(jump, target, np.where(take, pos + 1 + b, pos))
        floor = np.where(jump, target, floor)
        jumps = jumps + jump
        go = (fail < 0) & ~zero
        rows, pos, floor, qend = rows[go], pos[go], floor[go], qend[go]
        wire, labels, size, jumps = wire[go], labels[go], size[go], jumps[go]
    qtype = _question_types(data, done_rows, done_qend, end, reason)
    ok = reason < 0
    width = QNAME_MAX if len(rows_all) else 0  # nothing to copy: skip the allocation
    qname = _copy_labels(data, found, ok, width)
    qlen = np.where(ok, final_size, 0).astype(np.int32)
    return Questions(reason, qname, qlen, np.where(ok, qtype, 0).astype(np.uint16), response & ok)


def _copy_labels(data: np.ndarray, found: list, ok: np.ndarray, width: int) -> np.ndarray:
    """(n, width) presentation names: the labels `found` (row, source, length, destination)
    of the rows still `ok` copied in place, a dot before every label but the first."""
    qname = np.zeros((len(ok), width), dtype=np.uint8)
    if not found or not width:
        return qname
    row, src, length, dest = (np.concatenate(part) for part in zip(*found, strict=True))
    keep = ok[row]
    row, src, length, dest = row[keep], src[keep], length[keep], dest[keep]
    flat = qname.reshape(-1)
    source, _ = ragged(src, length)
    target_pos, _ = ragged(row * QNAME_MAX + dest, length)
    flat[target_pos] = data.take(source)
    dots = dest > 0
    flat[row[dots] * QNAME_MAX + dest[dots] - 1] = ord(".")
    return qname


def _skip_names(
    data: np.ndarray, pos: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Position just past each (possibly compressed) name, and whether it was well formed."""
    clip = max(len(data) - 2, 0)
    pos, ok = pos.copy(), np.ones(len(pos), dtype=bool)
    active = np.arange(len(pos))
    for _ in range(128):  # 128 labels of >= 1 byte already exceed the 255-byte name limit
        if not len(active):
            break
        p = pos[active]
        b = data.take(np.minimum(p, clip)).astype(np.int64)
        inside = p < end[active]
        label = inside & (b > 0) & (b < 0x40)
        stop = inside & ((b == 0) | (b >= 0xC0))
        pos[active] = np.where(label, p + 1 + b, np.where(stop, p + 1 + (b >= 0xC0), p))
        ok[active[~label & ~stop]] = False
        active = active[label]
    ok[active] = False
    return pos, ok & (pos <= end)


def rr_ttl_offsets(data: np.ndarray, msg_off: np.ndarray, msg_len: np.ndarray) -> tuple:
    """(message row, offset of the 4 TTL bytes) of every resource record that can be walked.

    Used to zero TTLs for the `dns` scope: they are chosen by whoever runs the server, so they
    would let a model tell servers apart. A malformed record stops the walk of its message.
    """
    off = np.asarray(msg_off, np.int64)
    end = off + msg_len
    rows = np.flatnonzero(np.asarray(msg_len) >= 12)
    head = off[rows]
    left_q = _u16(data, head + 4)
    left_rr = _u16(data, head + 6) + _u16(data, head + 8) + _u16(data, head + 10)
    pos, e = head + 12, end[rows]
    found_rows, found_pos = [], []
    for _ in range(MAX_RRS):
        in_q = left_q > 0
        walking = in_q | (left_rr > 0)
        if not walking.any():
            break
        rows, pos, e, in_q = rows[walking], pos[walking], e[walking], in_q[walking]
        left_q, left_rr = left_q[walking], left_rr[walking]
        pos, ok = _skip_names(data, pos, e)
        ttl_ok = ok & ~in_q & (pos + 8 <= e)
        found_rows.append(rows[ttl_ok])
        found_pos.append(pos[ttl_ok] + 4)
        rdlen = _u16(data, np.minimum(pos + 8, max(len(data) - 2, 0)))
        pos = np.where(in_q, pos + 4, pos + 10 + rdlen)
        left_q, left_rr = left_q - in_q, left_rr - ~in_q
        left_q[~ok | (pos > e)] = 0
        left_rr[~ok | (pos > e)] = 0
    if not found_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_rows), np.concatenate(found_pos)


QTYPE_NAMES = {  # mnemonic of common types; others print as TYPE<n> (RFC 3597)
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 13: "HINFO", 15: "MX",
    16: "TXT", 28: "AAAA", 29: "LOC", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT",
    43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB",
    65: "HTTPS", 99: "SPF", 252: "AXFR", 255: "ANY", 256: "URI", 257: "CAA",
}  # fmt: skip


def qtype_names(qtype: np.ndarray) -> list[str]:
    """Mnemonic per query type number, e.g. "A", "TXT", "TYPE65534"."""
    table = {int(code): QTYPE_NAMES.get(int(code), f"TYPE{int(code)}") for code in np.unique(qtype)}
    return [table[code] for code in qtype.tolist()]
