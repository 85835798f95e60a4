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
tests/test_packets.py holds as a slow reference): numbers, times, scores and addresses as in
exfil/numtext.py; the question name in presentation form, bytes outside printable ASCII and
`\\`, `,`, `"` as `\\DDD`, the root name as `.`; query type as in
`exfil.dnsparse.qtype_names`; flags 0/1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from exfil.dnsparse import QTYPE_NAMES
from exfil.numtext import format_address, format_flag, format_int, format_time, small_ints

ESCAPE = np.zeros(256, dtype=bool)  # bytes written as \DDD in names
ESCAPE[:0x21] = ESCAPE[0x7F:] = True
ESCAPE[[ord("\\"), ord(","), ord('"')]] = True
_SPECIALS = (b"\\", b",", b'"', b"\x7f")  # escaped printable bytes, found by memchr
_QUOTE_IF = ',"\n\r'  # a capture name holding one of these is written as a quoted CSV field
_SPLICE_SHARE = 32  # names wider than all but 1/32 of a batch's are spliced, not in the matrix
_MARK = 1  # stands in a row for a spliced text until the row is compacted; no text holds it


# -----------------------------------------------------------------------------
# names, types

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
        table[:, 4:] = small_ints().view(np.uint8).reshape(-1, 8)
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
