"""Per-packet CSV rows shared by ld.py's packets.csv and detect.py's scores.csv, made by numpy.

Both files must number and spell packets identically (a SOC joins them), so the formatting lives
here once. It is on detection's hot path, so nothing here loops over rows in Python:

- a *text column* is an (n, w) uint8 matrix (or (1, w) for a value shared by every row); row
  i's text is its non-NUL bytes in order, so NUL is padding wherever it sits (numbers are
  right-aligned, names left-aligned, and nobody shifts bytes per row). No text holds a real NUL
  (names escape it as `\\000`) or 0x01 (csv_block's splice mark).
- `csv_block` lays the columns side by side with their separators in one (n, T) matrix and drops
  every NUL in one boolean compaction: that is the whole ragged join, and the batch is written
  with a single `write`. Its cost is per byte of T and per NUL run, so columns stay narrow:
  the few names much longer than the rest, or needing escapes, are a `Spliced` column's
  separate bytes, put in place by one `bytes.split` on the mark and one `join`.

The spelling of each field (kept byte-identical to the straightforward Python formatting, which
tests/test_packets.py holds as a slow reference):
- numbers in decimal; time and score exactly as `"%.6f" % value` (correctly rounded, ties to
  even on the exact binary value, so a µs timestamp prints its own microseconds; NaN prints
  `nan`, as for pcapng simple packet blocks, which carry no time);
- IPv4-mapped addresses as a dotted quad, others as `ipaddress.ip_address(...).compressed`;
- the question name in presentation form, bytes outside printable ASCII and `\\`, `,`, `"`
  as `\\DDD`, the root name as `.`; query type as in `exfil.dnsparse.qtype_names`; flags 0/1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from exfil.dnsparse import QTYPE_NAMES

ESCAPE = np.zeros(256, dtype=bool)  # bytes written as \DDD in names
ESCAPE[:0x21] = ESCAPE[0x7F:] = True
ESCAPE[[ord("\\"), ord(","), ord('"')]] = True
_SPECIALS = (b"\\", b",", b'"', b"\x7f")  # escaped printable bytes, found by memchr
_QUOTE_IF = ',"\n\r'  # a capture name holding one of these is written as a quoted CSV field
_SPLICE_SHARE = 32  # names wider than all but 1/32 of a batch's are spliced, not in the matrix
_MARK = 1  # stands in a row for a spliced text until the row is compacted; no text holds it
_TIE = 1e-6  # |fraction - 1/2| of µs below which Python decides the rounding (exact ties)


# -----------------------------------------------------------------------------
# numbers: three decimal digits per uint32 table entry (4 bytes, the last NUL)

_GROUP = np.zeros((2001, 4), np.uint8)  # 0..999 "000".."999"; +1000: no leading zeros; 2000: ""
for _v in range(1000):
    _GROUP[_v, :3] = np.frombuffer(b"%03d" % _v, np.uint8)
    _GROUP[1000 + _v, 3 - len(str(_v)) : 3] = np.frombuffer(str(_v).encode(), np.uint8)
_GROUP32 = _GROUP.view(np.uint32).ravel()


def _groups(values: np.ndarray, count: int, padded: bool) -> np.ndarray:
    """(n, 3 * count) text of the low `count` three-digit groups of non-negative int64 values.

    padded: every group zero-filled (fractions, or below a shared leading part); else the
    number as written, leading zero groups empty.
    """
    if not len(values):
        return np.zeros((0, 3 * count), np.uint8)
    out = np.empty((len(values), count), np.uint32)
    rest = values
    for k in range(count):  # from the units up
        above = rest // 1000
        index = rest - above * 1000
        if not padded:
            lead = np.where(rest > 0, index + 1000, 2000) if k else index + 1000
            index = np.where(above > 0, index, lead)
        out[:, count - 1 - k] = _GROUP32[index]
        rest = above
    return out.view(np.uint8).reshape(len(values), count, 4)[:, :, :3].reshape(len(values), -1)


_SMALL: list[np.ndarray] = []  # filled on first use: text of 0..65535 right-aligned, uint64


def _small_ints() -> np.ndarray:
    if not _SMALL:
        text = np.zeros((65536, 8), np.uint8)
        text[:, 2:] = _groups(np.arange(65536), 2, padded=False)
        _SMALL.append(text.view(np.uint64).ravel())
    return _SMALL[0]


def format_int(values: np.ndarray) -> np.ndarray:
    """Text column of non-negative integers in decimal (`str(int(v))`).

    Rows of a batch share their leading digits (record numbers, epoch seconds), so the part
    common to all rows is written once and only the groups below it are computed.
    """
    values = np.asarray(values).astype(np.int64).reshape(-1)
    if len(values) == 0:
        return np.zeros((0, 1), np.uint8)
    low, high = int(values.min()), int(values.max())
    if low < 0:
        raise ValueError("format_int takes non-negative integers")
    if high < 65536:  # ports, small counters: one gather from a table of all of them
        return _small_ints().take(values).view(np.uint8).reshape(len(values), 8)
    count = 0
    while low // 1000**count != high // 1000**count:
        count += 1
    shared = low // 1000**count
    if shared == 0:
        return _groups(values, max(count, 1), padded=False)
    head = np.frombuffer(str(shared).encode(), np.uint8)
    out = np.empty((len(values), len(head) + 3 * count), np.uint8)
    out[:, : len(head)] = head
    out[:, len(head) :] = _groups(values - shared * 1000**count, count, padded=True)
    return out


def format_flag(values: np.ndarray) -> np.ndarray:
    """Text column `1` where the value is true or non-zero, else `0`."""
    return (np.asarray(values) != 0).astype(np.uint8).reshape(-1, 1) + np.uint8(48)


def format_fixed6(values: np.ndarray) -> np.ndarray:
    """Text column exactly equal to `"%.6f" % float(v)` for every float (float32 is widened).

    The one rounding rule of both CSV files: whole seconds = floor(v) (exact), then the exact
    fraction times 1e6 rounded to nearest. The product is off the true one by < 2e-10, so only
    values within `_TIE` of half a microsecond (exact ties, rounded half-even by Python) and the
    odd ones (NaN, inf, negative, >= 2**52) are left to Python's own formatting.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    fast = np.isfinite(x) & ~np.signbit(x) & (x < 2.0**52)
    x = np.where(fast, x, 0.0)
    seconds = np.floor(x)
    scaled = (x - seconds) * 1e6
    part = scaled - np.floor(scaled)
    slow = ~fast | (np.abs(part - 0.5) < _TIE)
    micros = np.rint(scaled).astype(np.int64)
    whole = seconds.astype(np.int64) + (micros >= 1_000_000)
    micros %= 1_000_000
    head = format_int(whole)
    out = np.empty((len(x), head.shape[1] + 7), np.uint8)
    out[:, : head.shape[1]] = head
    out[:, head.shape[1]] = ord(".")
    out[:, head.shape[1] + 1 :] = _groups(micros, 2, padded=True)
    rows = np.flatnonzero(slow)
    if len(rows):
        raw = np.asarray(values, dtype=np.float64).reshape(-1)[rows]
        out = _place(out, rows, [b"%.6f" % v for v in raw.tolist()])
    return out


format_time = format_fixed6  # capture timestamps: both files print them by this one rule


def _place(out: np.ndarray, rows: np.ndarray, texts: list[bytes]) -> np.ndarray:
    """Overwrite `rows` of a text column with `texts` (left-aligned), widening it if needed."""
    width = max(out.shape[1], max(len(t) for t in texts))
    if width > out.shape[1]:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])))
    block = np.zeros((len(texts), width), np.uint8)
    for i, text in enumerate(texts):
        block[i, : len(text)] = np.frombuffer(text, np.uint8)
    out[rows] = block
    return out


# -----------------------------------------------------------------------------
# addresses, names, types


def _left_align(text: np.ndarray) -> np.ndarray:
    """Each row's non-NUL bytes moved to its start (for building tables, not on hot paths)."""
    keep = text != 0
    out = np.zeros_like(text)
    rank = np.cumsum(keep, axis=1) - 1
    out[np.nonzero(keep)[0], rank[keep]] = text[keep]
    return out


_OCTET = np.zeros((256, 4), np.uint8)  # "d.", "dd.", "ddd." right-aligned in 4 bytes
for _v in range(256):
    _t = f"{_v}.".encode()
    _OCTET[_v, 4 - len(_t) :] = np.frombuffer(_t, np.uint8)
_PAIRS: list[np.ndarray] = []  # filled on first use: "a.b." and "a.b" by 256 * a + b, uint64


def _octet_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Two left-aligned octets per 8-byte entry: a dotted quad is two gathers, two NUL runs."""
    if not _PAIRS:
        pair = _OCTET[np.arange(65536).reshape(-1, 1) >> np.array([8, 0]) & 255].reshape(-1, 8)
        dotted = _left_align(pair)
        last = pair.copy()
        last[:, 7] = 0
        _PAIRS.extend([dotted.view(np.uint64).ravel(), _left_align(last).view(np.uint64).ravel()])
    return _PAIRS[0], _PAIRS[1]


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _ipv6(hextets: np.ndarray) -> np.ndarray:
    """(m, 41) text of IPv6 addresses as ipaddress compresses them (RFC 5952 longest zero run).

    Slot j of 5 bytes holds the separator before hextet j, then its 4 hex digits (leading zeros
    as NUL); byte 40 is the separator after the last. The first longest run of >= 2 zero
    hextets is blanked and its two bounding separators become the `::`.
    """
    m = len(hextets)
    out = np.zeros((m, 41), np.uint8)
    for nibble in range(4):
        value = (hextets >> (12 - 4 * nibble)) & 15
        digit = _HEX[value]
        if nibble < 3:
            digit[hextets < 16 ** (3 - nibble)] = 0
        out[:, 1 + nibble : 40 : 5] = digit
    run = np.zeros((m, 9), np.int64)  # zero hextets starting at each position
    for k in range(7, -1, -1):
        run[:, k] = (hextets[:, k] == 0) * (run[:, k + 1] + 1)
    start = run.argmax(1)
    length = run[np.arange(m), start]
    squeeze = length >= 2
    end = np.where(squeeze, start + length, -1)
    start = np.where(squeeze, start, -1)[:, None]
    end = end[:, None]
    slots = np.arange(9)
    colon = (slots >= 1) & (slots <= 7) & ~((slots > start) & (slots < end))
    colon |= (slots == start) | (slots == end)
    out[:, 0::5] = np.where(colon, ord(":"), 0)
    blank = (np.arange(8) >= start) & (np.arange(8) < end)  # (m, 8) hextets inside the run
    hexes = (5 * np.arange(8)[:, None] + 1 + np.arange(4)).ravel()  # their 32 digit bytes
    out[:, hexes] = np.where(np.repeat(blank, 4, axis=1), 0, out[:, hexes])
    return out


def format_address(addresses: np.ndarray) -> np.ndarray:
    """Text column of (n, 16) address rows: IPv4-mapped as a.b.c.d, IPv6 compressed."""
    addresses = np.ascontiguousarray(addresses, dtype=np.uint8)
    words = addresses.view(">u4")
    v4 = (words[:, 0] == 0) & (words[:, 1] == 0) & (words[:, 2] == 0xFFFF)
    halves = np.ascontiguousarray(addresses[:, 12:]).view(">u2").astype(np.intp)  # (n, 2)
    first, last = _octet_pairs()
    dotted = np.empty((len(addresses), 2), np.uint64)
    dotted[:, 0] = first[halves[:, 0]]
    dotted[:, 1] = last[halves[:, 1]]
    dotted = dotted.view(np.uint8)  # (n, 16)
    if v4.all():
        return dotted
    out = np.zeros((len(addresses), 41), np.uint8)
    out[v4, :16] = dotted[v4]
    out[~v4] = _ipv6(addresses[~v4].view(">u2").astype(np.int64))
    return out


_ESCAPED = np.zeros((256, 4), np.uint8)  # each byte's text, NUL-padded: "a", "\\000", ...
for _v in range(256):
    _t = b"\\%03d" % _v if ESCAPE[_v] else bytes([_v])
    _ESCAPED[_v, : len(_t)] = np.frombuffer(_t, np.uint8)
_ESCAPED32 = _ESCAPED.view(np.uint32).ravel()


def escape_names(qname: np.ndarray, qlen: np.ndarray) -> list[bytes]:
    """Presentation text of each row's name: `\\DDD` for bytes outside printable ASCII and
    `\\,"`, the root name as `.` (vectorised: for the rows that need it)."""
    inside = np.arange(qname.shape[1]) < qlen[:, None]
    text = np.where(inside, _ESCAPED32[qname], 0).view(np.uint8)  # (m, 4 W)
    sizes = np.count_nonzero(text, axis=1)
    flat = text[text != 0].tobytes()
    ends = np.cumsum(sizes).tolist()
    return [flat[a:b] or b"." for a, b in zip([0, *ends][:-1], ends, strict=True)]


def _dirty_rows(names: np.ndarray, qlen: np.ndarray) -> np.ndarray:
    """Rows whose name needs escapes: whole-buffer memchr/SIMD checks, rows located only for
    the checks that fail (a clean batch, the usual case, costs a few fast passes)."""
    flat, width = names.tobytes(), names.shape[1]
    found = []
    if not flat.isascii():
        found.append(np.flatnonzero(names >= 0x80) // width)
    for byte in _SPECIALS:
        if byte in flat:
            found.append(np.flatnonzero(names == byte[0]) // width)
    shifted = names - np.uint8(1)  # NUL -> 0xff, controls and space -> 0x00..0x1f
    if shifted.size and int(shifted.min()) < 0x20:
        found.append(np.flatnonzero(shifted < 0x20) // width)
    if np.count_nonzero(names) != int(qlen.sum()):  # NUL inside a name (or bytes past qlen)
        inside = np.arange(width) < qlen[:, None]
        found.append(np.flatnonzero((names == 0) == inside) // width)
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


class Spliced(NamedTuple):
    """A text column with a few rows too wide for its matrix, spliced in by csv_block.

    Names full of `\\DDD` escapes grow to four times their width; widening the whole matrix for
    them would make every row pay. Their matrix rows are left empty instead.
    """

    text: np.ndarray  # (n, w) uint8 left-aligned, NUL-padded; rows in `rows` all NUL
    rows: np.ndarray  # int64 (m,) distinct row numbers
    wide: list[bytes]  # their text


def _short_width(qlen: np.ndarray, width: int) -> int:
    """Matrix width for names: all but about 1 in 32 rows fit (the rest are spliced in)."""
    beyond = len(qlen) - np.cumsum(np.bincount(qlen, minlength=width + 1))  # rows longer than
    return max(1, int(np.argmax(beyond <= len(qlen) // _SPLICE_SHARE)))


def format_qname(qname: np.ndarray, qlen: np.ndarray) -> Spliced:
    """Text column of question names: escaped, the root name as `.`, left-aligned.

    Takes DnsBatch's rows: raw name bytes, zero beyond `qlen`. The matrix is only as wide as
    most names (padding is what every later pass pays for); longer names and names needing
    escapes are spliced in as bytes.
    """
    qlen = np.asarray(qlen, dtype=np.int64)
    width = _short_width(qlen, qname.shape[1]) if len(qlen) else 1
    names = np.ascontiguousarray(qname[:, :width], dtype=np.uint8)
    if np.may_share_memory(names, qname) or names.shape[1] < width:
        names = np.pad(names, ((0, 0), (0, width - names.shape[1])))  # a copy we may edit
    long = np.flatnonzero(qlen > width)
    dirty = _dirty_rows(names, np.minimum(qlen, width))
    long_dirty = _dirty_rows(qname[long], qlen[long]) if len(long) else long
    escaped = np.union1d(dirty, long[long_dirty])
    rows = np.union1d(long, escaped)
    text = {row: qname[row, : qlen[row]].tobytes() for row in long.tolist()}
    text.update(zip(escaped.tolist(), escape_names(qname[escaped], qlen[escaped]), strict=True))
    wide = [text[row] for row in rows.tolist()]
    names[rows] = 0
    names[qlen == 0, 0] = ord(".")
    return Spliced(names, rows, wide)


_QTYPE_TEXT: list[np.ndarray] = []  # filled on first use: (65536, 12) mnemonic per number


def format_qtype(qtype: np.ndarray) -> np.ndarray:
    """Text column of query type mnemonics: `A`, `TXT`, ..., `TYPE65534` for the rest."""
    if not _QTYPE_TEXT:
        table = np.zeros((65536, 12), np.uint8)
        table[:, :4] = np.frombuffer(b"TYPE", np.uint8)
        table[:, 4:] = _small_ints().view(np.uint8).reshape(-1, 8)
        for code, name in QTYPE_NAMES.items():
            table[code] = 0
            table[code, : len(name)] = np.frombuffer(name.encode(), np.uint8)
        _QTYPE_TEXT.append(table)
    return _QTYPE_TEXT[0][np.asarray(qtype, dtype=np.intp)]


def constant(text: str, rows: int = 1) -> np.ndarray:
    """Text column holding one value (shape (1, w): csv_block repeats it for every row)."""
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    if (raw <= _MARK).any():
        raise ValueError("a CSV field cannot contain NUL or \\x01")
    return np.broadcast_to(raw, (rows, len(raw)))


def csv_field(text: str) -> str:
    """`text` as one CSV field: quoted (quotes doubled) only when it would break the row."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in _QUOTE_IF) else text


# -----------------------------------------------------------------------------
# rows


def csv_block(columns: list[np.ndarray | Spliced]) -> bytes:
    """CSV rows (comma-separated, '\\n'-terminated) of text columns, as one bytes object."""
    texts = [c.text if isinstance(c, Spliced) else c for c in columns]
    texts = [np.zeros((len(t), 1), np.uint8) if t.shape[1] == 0 else t for t in texts]  # mark
    sizes = {len(t) for t in texts} - {1}  # (1, w) columns are repeated on every row
    if len(sizes) > 1:
        raise ValueError(f"columns of {[len(t) for t in texts]} rows")
    rows = sizes.pop() if sizes else min(len(texts), 1)
    if rows == 0:
        return b""
    template = np.zeros(sum(t.shape[1] + 1 for t in texts), np.uint8)
    ends = np.cumsum([t.shape[1] + 1 for t in texts]) - 1
    template[ends] = ord(",")
    template[-1] = ord("\n")
    table = np.empty((rows, len(template)), np.uint8)  # (n, T)
    table[:] = template
    wide: list[tuple[int, int, bytes]] = []  # (row, column, text) spliced in after compaction
    for j, (column, text, end) in enumerate(zip(columns, texts, ends.tolist(), strict=True)):
        table[:, end - text.shape[1] : end] = text
        if isinstance(column, Spliced) and len(column.rows):
            table[column.rows, end - text.shape[1]] = _MARK
            wide += zip(column.rows.tolist(), [j] * len(column.rows), column.wide, strict=True)
    out = table[table != 0].tobytes()
    if not wide:
        return out
    wide.sort()  # row order, then column order: the order of the marks in `out`
    pieces = out.split(bytes([_MARK]))
    if len(pieces) != len(wide) + 1:
        raise ValueError("a text column holds byte 0x01, or a Spliced row is listed twice")
    merged = [b""] * (2 * len(pieces) - 1)
    merged[0::2] = pieces
    merged[1::2] = [text for _, _, text in wide]
    return b"".join(merged)


def strings(column: np.ndarray | Spliced) -> list[str]:
    """The text of each row of a column as str (for alerts, which key on names/addresses)."""
    if not isinstance(column, Spliced):
        return csv_block([column]).decode("utf-8").split("\n")[:-1] if len(column) else []
    text = column.text  # left-aligned printable ASCII: numpy's bytes view trims the padding
    rows = text.view(f"S{text.shape[1]}").ravel().tolist() if text.shape[1] else [b""] * len(text)
    out = b"\n".join(rows).decode("ascii").split("\n") if len(text) else []
    for row, wide in zip(column.rows.tolist(), column.wide, strict=True):
        out[row] = wide.decode("ascii")
    return out


# -----------------------------------------------------------------------------
# packets

PACKET_COLUMNS = (  # packets.csv's first columns and scores.csv's identifying ones, in order
    "capture", "packet", "time", "src", "dst", "sport", "dport", "qname", "qtype", "response",
)  # fmt: skip


def packet_fields(capture: str, batch) -> dict[str, np.ndarray | Spliced]:  # noqa: ANN001
    """Text columns identifying each row of a DnsBatch, keyed as in PACKET_COLUMNS."""
    return {
        "capture": constant(csv_field(capture)),
        "packet": format_int(batch.record),
        "time": format_time(batch.time),
        "src": format_address(batch.src),
        "dst": format_address(batch.dst),
        "sport": format_int(batch.sport),
        "dport": format_int(batch.dport),
        "qname": format_qname(batch.qname, batch.qlen),
        "qtype": format_qtype(batch.qtype),
        "response": format_flag(batch.response),
    }


def qname_strings(batch) -> list[str]:  # noqa: ANN001
    """Presentation names of a DnsBatch as str (what the qname column holds)."""
    return strings(format_qname(batch.qname, batch.qlen))
