"""DNS logs as input: Zeek dns.log (TSV with its `#fields` header, or JSON lines), Suricata
eve.json DNS events (format version 2: `query` / `answer` records; version 3: `request` /
`response` with a `queries` list) and plain name lists (one name a line, or `label,name`),
plain or gzip, recognised by their content.

Most sensors keep logs, not packets. Each log record becomes the DNS messages it describes (a
Zeek row: the query and, when it has an answer section or an rcode, the response; an eve event:
one message; a listed name: a query), rebuilt on the wire inside the same DnsBatch a capture
gives, so names, context state, features and alerts are computed by exactly the code a capture
goes through. What a log lacks (the DNS id, ports, TTLs) is filled with constants, which no
feature reads (they would leak labels). `packet` is the 0-based record index in the log. Only
qname-scope features can be computed from a log: its raw messages are reconstructions.

Why columns: parsing a record costs a JSON decode or a split in C, and everything after it
(times, addresses, wire names, headers, answers) is built for a whole chunk at once with numpy;
rebuilding each message with struct and reading it back as a capture ran at ~20,000 records/s.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import socket
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from exfil.cli import UserError
from exfil.dnsmsg import qtype_number, rdata_name, rdata_txt
from exfil.pcapread import DnsBatch, read_dns

try:  # several times faster than json on eve and Zeek lines; json is the fallback
    from orjson import loads as _loads
except ImportError:  # pragma: no cover (orjson is in requirements.txt)
    _loads = json.loads

MAX_LINE = 1 << 20  # longer lines are no DNS record: skipped and counted
BLOCK = 1 << 22  # bytes read at a time
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
_SERVER, _CLIENT = "192.0.2.53", "192.0.2.1"  # documentation addresses where a log has none
LABELS = {"0": 0, "benign": 0, "false": 0, "normal": 0,
          "1": 1, "malicious": 1, "true": 1, "exfil": 1, "tunnel": 1}  # fmt: skip
_NAME_LINE = re.compile(rb"(?:([A-Za-z0-9_-]+),)?([A-Za-z0-9_*\\-]+(?:\.[A-Za-z0-9_*\\-]+)*\.?)")
FLAGS_QUERY, FLAGS_RESPONSE = 0x0100, 0x8180  # RD; QR + RD + RA (the rcode is or-ed in)
SPORT = 40000  # the client's port in a rebuilt message


# --------------------------------------------------------------------------- recognising
def _opened(path: str | os.PathLike):  # noqa: ANN202
    """A binary stream of the file, gunzipped when it starts with gzip's magic."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def log_format(path: str | os.PathLike) -> str | None:
    """'zeek-tsv', 'zeek-json', 'eve', 'names', or None when the file is no DNS log we read.
    Sniffed once per file version (callers ask several times)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return _sniff(os.fspath(path), info.st_size, info.st_mtime_ns)


@lru_cache(maxsize=256)
def _sniff(path: str, size: int, mtime: int) -> str | None:  # size, mtime: the cache key
    try:
        with _opened(path) as handle:
            head = handle.read(65536)
    except (OSError, EOFError, zlib.error):
        return None
    lines = head.splitlines()
    if len(head) == 65536 and len(lines) > 1:
        lines.pop()  # maybe cut in the middle
    content = [line.strip() for line in lines if line.strip()]
    for text in content:
        if text.startswith((b"#separator", b"#fields")):
            return "zeek-tsv"
        if text.startswith(b"#"):
            continue
        if text.startswith(b"{"):
            try:
                record = json.loads(text)
            except ValueError:
                return None
            if not isinstance(record, dict):
                return None
            if "event_type" in record:
                return "eve"
            if "query" in record or "id.orig_h" in record:
                return "zeek-json"
            return None
        return "names" if _is_name_list(path, content) else None
    return None


def _is_name_list(path: str, content: list[bytes]) -> bool:
    """Every line a DNS name or `label,name` (a `label,name` header allowed), the first label a
    known one; a list whose first entry is a file beside it lists captures (exfil.captures)."""
    entries = [t for t in content if not t.startswith(b"#")][:64]
    if entries and entries[0].lower() in (b"label,name", b"name"):
        entries = entries[1:]
    if not entries or (Path(path).parent / entries[0].decode("latin-1")).exists():
        return False
    matches = [_NAME_LINE.fullmatch(text) for text in entries]
    if not all(matches):
        return False
    label = matches[0].group(1)  # type: ignore[union-attr]
    return label is None or label.decode().lower() in LABELS  # others: counted when read


# --------------------------------------------------------------------------- lines
def _line_blocks(path: str | os.PathLike, stats: dict) -> Iterator[list[bytes]]:
    """The file's lines (no line ends) a block at a time; an over-long line is skipped and
    counted; a gzip cut short or corrupt is an error."""
    carry, skipping = b"", False
    try:
        with _opened(path) as handle:
            while block := handle.read(BLOCK):
                if skipping:  # inside an over-long line: drop up to its end
                    cut = block.find(b"\n")
                    if cut < 0:
                        continue
                    block, skipping = block[cut + 1 :], False
                lines = (carry + block).split(b"\n")
                carry = lines.pop()
                if len(carry) > MAX_LINE:
                    _count(stats, "long_line")
                    carry, skipping = b"", True
                if lines and max(map(len, lines)) > MAX_LINE:
                    kept = [line for line in lines if len(line) <= MAX_LINE]
                    _count(stats, "long_line", len(lines) - len(kept))
                    lines = kept
                yield lines
        if carry:
            yield [carry]
    except EOFError:
        raise UserError(f"{path}: compressed log cut short (gzip ended early)") from None
    except (zlib.error, gzip.BadGzipFile) as error:
        raise UserError(f"{path}: corrupt gzip ({error})") from None


def _count(stats: dict, reason: str, n: int = 1) -> None:
    if n:
        stats[reason] = stats.get(reason, 0) + n


# --------------------------------------------------------------------------- values
@dataclass
class Records:
    """Log records of one chunk as columns (lists, tuples or arrays), one row per record."""

    index: Sequence[int]  # the record's 0-based index in the log
    time: Sequence  # as logged: epoch number or text, ISO-8601 text, or None (no time)
    src: Sequence  # address text (bytes or str) of the record's source, the client in Zeek
    dst: Sequence
    qname: Sequence[bytes]  # the name as its bytes, a trailing dot kept
    qtype: Sequence[int]  # -1: a query type we do not know (the record is skipped)
    rcode: Sequence[int]  # -1: none logged
    answers: Sequence[bytes]  # answer records packed on the wire, their owner the question
    ancount: Sequence[int]
    rtt: Sequence[float]  # Zeek: the response's delay after the query
    response: Sequence[bool]  # eve: the event is the response
    label: Sequence[int] | None = None  # a labelled name list
    addresses: tuple | None = None  # (src code, dst code, table, version) instead of texts
    logged_names: bool = False  # qname holds the names as logged (Zeek TSV), escapes and all
    pairs: bool = False  # Zeek: a record is a query and, when answered, its response

    @classmethod
    def from_rows(cls, rows: list[tuple], pairs: bool) -> Records:
        """Records of row tuples in the order of the fields above (index ... response)."""
        if not rows:
            return cls(*([] for _ in range(11)), pairs=pairs)
        return cls(*zip(*rows, strict=True), pairs=pairs)

    def __len__(self) -> int:
        return len(self.index)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _when(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if _is_number(value):  # Zeek TSV: epoch seconds as text
        return float(value)  # type: ignore[arg-type]
    text = _text(value).replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":  # Suricata: +0000
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).timestamp()


def _times(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, usable) of logged times: numbers and text in one numpy call, the fixed
    ISO-8601 shape Suricata writes (`2026-01-02T03:04:05.123456+0000`) vectorised, anything
    else one by one; a time that cannot be read marks its record unusable."""
    n = len(values)
    if n == 0:
        return np.zeros(0), np.zeros(0, bool)
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":  # parsed (Zeek TSV)
        return values, np.isfinite(values)
    if values[0] is None:  # a name list: no times
        return np.full(n, np.nan), np.ones(n, bool)
    try:
        return np.array(values, dtype=np.float64), np.ones(n, bool)
    except (TypeError, ValueError):
        pass
    iso = _iso_times(values)
    if iso is not None:
        return iso, np.ones(n, bool)
    out, ok = np.full(n, np.nan), np.ones(n, bool)
    for i, value in enumerate(values):
        try:
            out[i] = _when(value)
        except (TypeError, ValueError, OverflowError):
            ok[i] = False
    return out, ok


def _iso_times(values: list) -> np.ndarray | None:
    """Epoch seconds of `YYYY-MM-DDTHH:MM:SS.ffffff+hhmm` texts, None if any has another shape."""
    try:
        text = np.array(values, dtype="S31")
    except (TypeError, ValueError, UnicodeEncodeError):
        return None
    raw = text.view(np.uint8).reshape(len(values), 31)
    digits = raw.astype(np.int64) - ord("0")
    shape_ok = (raw[:, 4] == ord("-")) & (raw[:, 10] == ord("T")) & (raw[:, 19] == ord("."))
    sign = np.where(raw[:, 26] == ord("-"), -1, 1)
    shape_ok &= (raw[:, 26] == ord("+")) | (raw[:, 26] == ord("-"))
    shape_ok &= ((digits[:, 27:31] >= 0) & (digits[:, 27:31] <= 9)).all(axis=1)
    if not shape_ok.all() or any(len(v) != 31 for v in values):
        return None
    try:
        base = np.ascontiguousarray(raw[:, :26]).view("S26")[:, 0].astype("datetime64[us]")
    except ValueError:
        return None
    offset = (digits[:, 27] * 10 + digits[:, 28]) * 3600 + (digits[:, 29] * 10 + digits[:, 30]) * 60
    return base.astype(np.int64) / 1e6 - sign * offset.astype(np.int64)


@lru_cache(maxsize=4096)
def _qtype(value: object) -> int:
    if isinstance(value, int):
        return value
    text = _text(value)
    return int(text) if text.isdigit() else qtype_number(text)


@lru_cache(maxsize=1024)
def _rcode(value: object) -> int:
    if value in (None, "-", "", b"-", b""):
        return -1
    if isinstance(value, int):
        return value & 0xF
    text = _text(value)
    return int(text) & 0xF if text.isdigit() else RCODES.get(text.upper(), 0)


def name_bytes(text: str) -> bytes:
    """A logged name as the bytes it stood for: RFC 1035 `\\DDD`, Zeek's `\\xNN` and `\\c`
    escapes undone (raw 8-bit labels survive a log this way); other text as UTF-8."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
    if b"\\" not in raw:
        return raw

    def undo(match: re.Match) -> bytes:
        hexa, decimal, char = match.groups()
        if hexa:
            return bytes([int(hexa, 16)])
        if decimal:
            return bytes([min(int(decimal), 255)])
        return char

    return _ESCAPE.sub(undo, raw)


_ESCAPE = re.compile(rb"\\(?:x([0-9a-fA-F]{2})|([0-9]{3})|(.))", re.DOTALL)


def _qname(value: object) -> bytes:
    """The name's bytes without a trailing dot; ASCII without escapes costs one check."""
    if isinstance(value, bytes) and value.isascii() and b"\\" not in value:
        return value.rstrip(b".")
    return name_bytes(_text(value)).rstrip(b".")


def _valid_name(name: str) -> bool:
    try:
        return bool(name) and all(0 < len(label) < 64 for label in name.encode().split(b"."))
    except UnicodeEncodeError:
        return False


_RR = struct.Struct("!HHHIH")


@lru_cache(maxsize=1 << 16)
def _rr(hint: int, text: str) -> bytes:
    """One answer record on the wire from a log's text (owner: a pointer to the question):
    A, AAAA, TXT, else a name (CNAME, NS, PTR); b"" for text that is none of these."""
    text = text.strip()
    if not text:
        return b""
    parsed = _ip(text)
    if parsed is not None:
        version, rdata = parsed
        rtype = 28 if version == 6 else 1
    elif hint == 16 or text.startswith("TXT "):
        body = text.split(" ", 2)[-1] if text.startswith("TXT ") else text
        rtype, rdata = 16, rdata_txt(body.encode()[:255])
    else:
        name = text.rstrip(".")
        if not _valid_name(name):
            return b""
        rtype, rdata = (hint if hint in (5, 2, 12) else 5), rdata_name(name)
    return _RR.pack(0xC00C, rtype, 1, 60, len(rdata)) + rdata


def _answer_hint(qtype: int) -> int:
    return qtype if qtype in (16, 5, 2, 12) else 0


# --------------------------------------------------------------------------- formats
class _Skip(Exception):
    """A record we cannot use (wrong types, no name): skipped and counted by its reason."""


def _zeek_row(index: int, row: dict) -> tuple:
    """The Records row of one Zeek JSON record (keys as in dns.log)."""
    query = row.get("query")
    if not isinstance(query, str) or query in ("-", "(empty)"):
        raise _Skip("no_query")
    qtype = _qtype(row["qtype"]) if row.get("qtype") not in (None, "-") else 1
    answers = row.get("answers")
    answers = () if answers in (None, "-", "(empty)") else answers
    if isinstance(answers, str):
        answers = answers.split(",")
    packed, count = _packed(_answer_hint(qtype), [str(a) for a in answers])
    rtt = row.get("rtt")
    return (index, row["ts"], _address_text(row.get("id.orig_h", _CLIENT)),
            _address_text(row.get("id.resp_h", _SERVER)), _qname(query), qtype,
            _rcode(row.get("rcode")), packed, count, float(rtt) if _is_number(rtt) else 0.0,
            False)  # fmt: skip


def _eve_row(index: int, event: dict) -> tuple:
    """The Records row of one eve.json DNS event (version 2 or 3)."""
    dns = event.get("dns")
    if event.get("event_type") != "dns" or not isinstance(dns, dict):
        raise _Skip("not_dns_event")
    queries = dns.get("queries")
    if isinstance(queries, list) and queries and isinstance(queries[0], dict):  # version 3
        qname, qtype = queries[0].get("rrname"), queries[0].get("rrtype", "A")
    else:  # version 2
        qname, qtype = dns.get("rrname"), dns.get("rrtype", "A")
    if not isinstance(qname, str):
        raise _Skip("no_query")
    kind = dns.get("type")
    if kind in ("query", "request"):
        response, packed, count, rcode = False, b"", 0, -1
    elif kind in ("answer", "response"):
        response, rcode = True, max(_rcode(dns.get("rcode")), 0)
        answers = dns.get("answers") or []
        if isinstance(dns.get("grouped"), dict) and not answers:
            answers = [{"rrtype": t, "rdata": d} for t, ds in dns["grouped"].items() for d in ds]
        records = [_rr(_answer_hint(_qtype(a.get("rrtype", "A"))), str(a["rdata"]))
                   for a in (answers if isinstance(answers, list) else [])
                   if isinstance(a, dict) and a.get("rdata") is not None]  # fmt: skip
        records = [r for r in records if r]
        packed, count = b"".join(records), len(records)
    else:
        raise _Skip("unknown_dns_type")
    return (index, event["timestamp"], _address_text(event.get("src_ip", _CLIENT)),
            _address_text(event.get("dest_ip", _SERVER)), _qname(qname), _qtype(qtype), rcode,
            packed, count, 0.0, response)  # fmt: skip


def _address_text(value: object) -> str | bytes:
    return value if isinstance(value, (str, bytes)) else str(value)


_A_RECORD = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4)  # an A answer's fixed part
_AAAA_RECORD = struct.pack("!HHHIH", 0xC00C, 28, 1, 60, 16)


def _packed(hint: int, answers: Sequence) -> tuple[bytes, int]:
    """(answer records on the wire, how many) of a record's answer texts; IPv4 addresses,
    most answers, take a short path (no cache: in a tunnel's answers each one is new)."""
    records = []
    for answer in answers:
        text = _text(answer)  # a TXT answer's UTF-8 stays UTF-8
        try:
            if ":" in text:
                records.append(_AAAA_RECORD + socket.inet_pton(socket.AF_INET6, text))
            else:
                records.append(_A_RECORD + socket.inet_pton(socket.AF_INET, text))
        except (OSError, ValueError):
            record = _rr(hint, text)
            if record:
                records.append(record)
    return b"".join(records), len(records)


def _json_records(make: Callable, pairs: bool) -> Callable:
    """A chunk reader for JSON lines whose rows `make` builds (Zeek JSON, eve)."""

    def read(lines: list[bytes], first: int, state: dict, stats: dict) -> Records:
        rows = []
        index = first
        for line in lines:
            if not line.strip():
                continue
            index += 1
            try:
                row = _loads(line)
            except ValueError:
                _count(stats, "bad_json")
                continue
            if not isinstance(row, dict):
                _count(stats, "bad_json")
                continue
            try:
                rows.append(make(index - 1, row))
            except _Skip as why:
                _count(stats, str(why))
            except (KeyError, TypeError, ValueError, OverflowError, UnicodeError, AttributeError):
                _count(stats, "bad_record")
        state["next"] = index
        return [Records.from_rows(rows, pairs)]

    return read


def _zeek_tsv_records(lines: list[bytes], first: int, state: dict, stats: dict) -> list[Records]:
    """A chunk of Zeek TSV lines: header lines update `state`; each run of data lines under
    one header is cut into columns by numpy."""
    parts: list[Records] = []
    joined = b"\n".join(lines)
    if not joined.startswith(b"#") and b"\n#" not in joined:  # no header line: one run
        state["next"] = _zeek_tsv_segment(parts, joined, first, state, stats)
        return parts
    index, segment = first, []
    for line in lines:
        if line.startswith(b"#"):
            index = _zeek_tsv_segment(parts, b"\n".join(segment), index, state, stats)
            segment = []
            _zeek_header(line.rstrip(b"\r"), state)
        else:
            segment.append(line)
    state["next"] = _zeek_tsv_segment(parts, b"\n".join(segment), index, state, stats)
    return parts


def _zeek_header(line: bytes, state: dict) -> None:
    if line.startswith(b"#separator"):  # the one header line split by a space
        value = line.partition(b" ")[2].strip().decode("ascii", "replace")
        state["sep"] = value.encode().decode("unicode_escape").encode("latin-1") or b"\t"
        return
    key, _, value = line.partition(state.get("sep", b"\t"))
    if key == b"#set_separator":
        state["set_sep"] = value
    elif key == b"#unset_field":
        state["unset"] = value
    elif key == b"#empty_field":
        state["empty"] = value
    elif key == b"#fields":
        state["fields"] = value.split(state.get("sep", b"\t"))


def _field_text(arr: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The fields [start, end) of `arr` as one numpy bytes array (zero-padded, no objects)."""
    lengths = end - start
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    at = start[:, None] + np.arange(width)
    inside = at < end[:, None]
    matrix = np.where(inside, arr[np.minimum(at, len(arr) - 1)], 0).astype(np.uint8)
    return matrix.view(f"S{width}").reshape(-1)


def _by_distinct(values: Sequence[bytes], convert: Callable, bad: int = -1) -> np.ndarray:
    """int64 convert(value) of each bytes value, once per distinct value; `bad` on failure."""
    uniques, inverse = np.unique(np.asarray(values, dtype=bytes), return_inverse=True)
    out = []
    for value in uniques.tolist():
        try:
            out.append(convert(value))
        except (TypeError, ValueError, OverflowError, UnicodeError):
            out.append(bad)
    return np.asarray(out, np.int64)[inverse.reshape(-1)]


def _floats(values: np.ndarray, unset: bytes, default: float) -> np.ndarray:
    """Numbers logged as text (NaN where a value is none), `default` for unset fields."""
    values = np.where(values == unset, str(default).encode(), values)
    try:
        return values.astype(np.float64)
    except ValueError:
        return np.array([float(v) if _is_number(v) else np.nan for v in values.tolist()])


def _zeek_tsv_segment(parts: list, joined: bytes, index: int, state: dict,
                      stats: dict) -> int:  # fmt: skip
    """Append the Records of consecutive data lines under one header to `parts`: the lines are
    cut into fields by numpy (tab positions), each column converted at once; blank lines are
    no records."""
    if not joined.strip():
        return index
    fields = state.get("fields")
    if fields is None:
        raise UserError("Zeek log without a #fields header")
    sep, unset = state.get("sep", b"\t"), state.get("unset", b"-")
    empty, set_sep = state.get("empty", b"(empty)"), state.get("set_sep", b",")
    if len(sep) != 1:
        raise UserError(f"Zeek log with a separator of {len(sep)} bytes (one byte expected)")
    buf = joined + b"\n"
    arr = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    ends = ends - ((arr[np.maximum(ends - 1, 0)] == 13) & (ends > starts))  # CRLF
    filled = np.flatnonzero(ends > starts)
    starts, ends = starts[filled], ends[filled]
    tabs = np.flatnonzero(arr == sep[0])
    first = np.searchsorted(tabs, starts)
    good = (np.searchsorted(tabs, ends) - first) == len(fields) - 1
    _count(stats, "wrong_columns", int(np.count_nonzero(~good)))
    rows = np.flatnonzero(good)
    if b"query" not in fields or not len(rows):
        _count(stats, "no_query", len(rows))
        return index + len(starts)
    last = len(fields) - 1

    def bounds(name: bytes) -> tuple[np.ndarray, np.ndarray]:
        k = fields.index(name)
        begin = starts[rows] if k == 0 else tabs[first[rows] + k - 1] + 1
        return begin, (ends[rows] if k == last else tabs[first[rows] + k])

    def column(name: bytes) -> np.ndarray:
        if name not in fields:
            return np.full(len(rows), unset)
        return _field_text(arr, *bounds(name))

    begin, end = bounds(b"query")
    query = [buf[a:b] for a, b in zip(begin.tolist(), end.tolist(), strict=True)]
    named = np.fromiter((q != unset and q != empty for q in query), bool, len(query))
    _count(stats, "no_query", len(query) - int(np.count_nonzero(named)))
    qtype = _by_distinct(column(b"qtype"), lambda v: 1 if v == unset else _qtype(v))
    rcode = _by_distinct(column(b"rcode"), lambda v: -1 if v == unset else _rcode(v), 0)
    when = _floats(column(b"ts"), unset, math.nan)
    delay = _floats(column(b"rtt"), unset, 0.0)
    delay[~np.isfinite(delay)] = 0.0
    known = named & (qtype >= 0) & np.isfinite(when)
    _count(stats, "bad_record", int(np.count_nonzero(named & ~known)))
    keep = np.flatnonzero(known)
    answers = [b""] * len(keep)
    ancount = np.zeros(len(keep), np.int64)
    if b"answers" in fields:
        begin, end = bounds(b"answers")
        logged = np.flatnonzero((end - begin)[keep] > 0)
        for j, a, b, t in zip(logged.tolist(), begin[keep][logged].tolist(),
                              end[keep][logged].tolist(), qtype[keep][logged].tolist(),
                              strict=True):  # fmt: skip
            text = buf[a:b]
            if text != unset and text != empty:
                answers[j], ancount[j] = _packed(_answer_hint(t), text.split(set_sep))
    client = _CLIENT.encode()
    server = _SERVER.encode()
    orig = np.where(column(b"id.orig_h") == unset, client, column(b"id.orig_h"))[keep]
    resp = np.where(column(b"id.resp_h") == unset, server, column(b"id.resp_h"))[keep]
    codes, table, version = _address_table(orig, resp)
    parts.append(Records(
        index=rows[keep] + index, time=when[keep], src=(), dst=(),
        qname=[query[i] for i in keep.tolist()], qtype=qtype[keep], rcode=rcode[keep],
        answers=answers, ancount=ancount, rtt=delay[keep], response=np.zeros(len(keep), bool),
        addresses=(codes[: len(keep)], codes[len(keep) :], table, version), logged_names=True,
        pairs=True,
    ))  # fmt: skip
    return index + len(starts)


def _name_records(lines: list[bytes], first: int, state: dict, stats: dict) -> list[Records]:
    """A chunk of a name list: a query per name; `label,name` lines carry the label."""
    entries = [t for t in (line.strip() for line in lines) if t and not t.startswith(b"#")]
    if entries and not state.get("seen") and entries[0].lower() in (b"label,name", b"name"):
        entries = entries[1:]  # a header
    state["seen"] = state.get("seen") or bool(entries)
    split = [t.rpartition(b",") for t in entries]
    labels = _by_distinct([label for label, _, _ in split],
                       lambda v: LABELS.get(v.decode().lower(), -2) if v else -1, -2)  # fmt: skip
    keep = np.flatnonzero(labels > -2)
    _count(stats, "bad_label", len(entries) - len(keep))
    n = len(keep)
    state["next"] = first + len(entries)
    return [Records(
        index=keep + first, time=[None] * n, src=[_CLIENT] * n, dst=[_SERVER] * n,
        qname=[split[i][2] for i in keep.tolist()], qtype=np.ones(n, np.int64),
        rcode=np.full(n, -1), answers=[b""] * n, ancount=np.zeros(n, np.int64),
        rtt=np.zeros(n), response=np.zeros(n, bool), label=labels[keep],
    )]  # fmt: skip


READERS = {"zeek-tsv": _zeek_tsv_records, "zeek-json": _json_records(_zeek_row, True),
           "eve": _json_records(_eve_row, False), "names": _name_records}  # fmt: skip


# --------------------------------------------------------------------------- wire
@lru_cache(maxsize=1 << 16)
def _ip(text: object) -> tuple[int, bytes] | None:
    """(version, packed bytes) of an address, None if `text` is none; addresses repeat in a
    log (clients, servers, answers), so each is parsed once."""
    text = _text(text)
    if not text or not (text[0].isdigit() or ":" in text):
        return None
    try:
        return 4, socket.inet_pton(socket.AF_INET, text)
    except OSError:
        pass
    try:
        return 6, socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None


def _address_table(*columns: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code of each value, (u, 16) IPv6 / IPv4-mapped bytes, IP version) of address texts;
    each distinct address parsed once."""
    values = np.concatenate([np.asarray(column) for column in columns])
    uniques, codes = np.unique(values, return_inverse=True)
    table = np.zeros((len(uniques), 16), np.uint8)
    version = np.zeros(len(uniques), np.uint8)
    for code, value in enumerate(uniques.tolist()):
        ver, packed = _ip(value) or _ip(_CLIENT)  # type: ignore[misc]
        version[code] = ver
        table[code] = np.frombuffer(
            packed if ver == 6 else b"\0" * 10 + b"\xff\xff" + packed, np.uint8
        )
    return codes.reshape(-1), table, version


def _names(values: Sequence[bytes], logged: bool) -> list[bytes]:
    """Names as their bytes, trailing dots dropped; for names as logged, escapes and
    non-ASCII text undone name by name, only in a chunk that has any."""
    joined = b"".join(values)
    if logged and (not joined.isascii() or b"\\" in joined):
        return [_qname(v) for v in values]
    if any(v[-1:] == b"." for v in values):
        return [v.rstrip(b".") for v in values]  # as _qname and dnsmsg.pack_name do
    return list(values)


_ZERO20, _ZERO4, _DOT, _ROOT = bytes(20), bytes(4), b".", b"\0"


def _message_bytes(names: list[bytes], answers: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(buffer, slot length of each message) with, per message, 20 zero bytes (UDP and DNS
    headers, written later), the name as `.a.b` + root byte (label lengths written later in
    place of the dots), 4 zero bytes (qtype, qclass) and the answer records: one C join, as
    copying each piece costs less than indexing every byte with numpy."""
    pieces: list[bytes] = []
    add = pieces.extend
    for name, answer in zip(names, answers, strict=True):
        if name:
            add((_ZERO20, _DOT, name, _ROOT, _ZERO4, answer))
        else:
            add((_ZERO20, _ROOT, _ZERO4, answer))
    buffer = np.frombuffer(b"".join(pieces), np.uint8).copy()
    lengths = np.fromiter(map(len, names), np.int64, len(names))
    sizes = np.fromiter(map(len, answers), np.int64, len(answers))
    return buffer, 20 + np.where(lengths > 0, lengths + 2, 1) + 4 + sizes


def _label_lengths(data: np.ndarray, start: np.ndarray, wire_len: np.ndarray) -> np.ndarray:
    """Write each label's length over the dot before it in the question names at `start`
    (`.a.b` + root); return which names are legal (labels of 1 to 63 bytes, <= 255 bytes)."""
    n = len(start)
    dots = np.flatnonzero(data == ord("."))
    owner = np.searchsorted(start, dots, side="right") - 1
    inside = (owner >= 0) & (dots < (start + wire_len - 1)[np.maximum(owner, 0)])
    dots, owner = dots[inside], owner[inside]
    named = wire_len > 1
    ends = (start + wire_len - 1)[named]
    marks = np.concatenate([dots, ends])
    row = np.concatenate([owner, np.flatnonzero(named)])
    order = np.argsort(marks, kind="stable")
    marks, row = marks[order], row[order]
    is_end = np.zeros(len(marks), bool)
    is_end[len(dots) :] = True
    is_end = is_end[order]
    label = np.zeros(len(marks), np.int64)
    label[:-1] = marks[1:] - marks[:-1] - 1
    dot = ~is_end
    data[marks[dot]] = np.minimum(label[dot], 255).astype(np.uint8)
    legal = np.ones(n, bool)
    legal[row[dot & ((label < 1) | (label > 63))]] = False
    return legal & (wire_len <= 255)


def _be(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) big-endian bytes of unsigned integers."""
    shifts = 8 * np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((np.asarray(values, np.uint64)[:, None] >> shifts) & 0xFF).astype(np.uint8)


def _name_matrix(names: list[bytes], lengths: np.ndarray) -> np.ndarray:
    """(n, W) zero-padded names as DnsBatch.qname holds them (numpy copies each in C)."""
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    return np.array(names, dtype=f"S{width}").view(np.uint8).reshape(len(names), width)


def _messages(records: Records, stats: dict) -> DnsBatch | None:
    """The DnsBatch of a chunk's records: Zeek rows give a query and, when answered, a
    response; eve events and names one message each."""
    when, ok = _times(records.time)
    _count(stats, "bad_record", int(np.count_nonzero(~ok)))
    names = _names(records.qname, records.logged_names)
    rcode = np.asarray(records.rcode, np.int64)
    ancount = np.asarray(records.ancount, np.int64)
    answered = (rcode >= 0) | (ancount > 0)
    # message -> record row; response: sent by the server; swap: src/dst of the record swapped
    if records.pairs:
        repeat = 1 + answered
        row = np.repeat(np.arange(len(records)), repeat)
        response = np.zeros(len(row), bool)
        response[(np.cumsum(repeat) - repeat)[answered] + 1] = True
        swap = response
    else:
        row, response = np.arange(len(records)), np.asarray(records.response, bool)
        swap = np.zeros(len(row), bool)
    picked = row.tolist()
    message_names = [names[i] for i in picked]
    message_answers = [records.answers[i] if r else b"" for i, r in
                       zip(picked, response.tolist(), strict=True)]  # fmt: skip
    data, slot = _message_bytes(message_names, message_answers)
    l4_off = np.cumsum(slot) - slot
    msg_off, msg_len = l4_off + 8, slot - 8
    qlen = np.fromiter(map(len, names), np.int64, len(names))
    wire_len = np.where(qlen > 0, qlen + 2, 1)[row]
    legal = _label_lengths(data, msg_off + 12, wire_len)
    record_legal = np.ones(len(records), bool)
    record_legal[row[~legal]] = False
    _count(stats, "bad_name", int(np.count_nonzero(ok & ~record_legal)))
    keep = np.flatnonzero((ok & record_legal)[row])
    if len(keep) == 0:
        return None
    m = len(row)
    qtype = np.asarray(records.qtype, np.int64)[row]
    sport = np.where(response, 53, SPORT).astype(np.uint16)
    dport = np.where(response, SPORT, 53).astype(np.uint16)
    flags = np.where(response, FLAGS_RESPONSE | np.maximum(rcode[row], 0), FLAGS_QUERY)
    count = np.where(response, ancount[row], 0)
    head = np.concatenate([_be(sport, 2), _be(dport, 2), _be(slot, 2), np.zeros((m, 4), np.uint8),
                           _be(flags, 2), _be(np.ones(m), 2), _be(count, 2),
                           np.zeros((m, 4), np.uint8)], axis=1)  # fmt: skip
    data[(l4_off[:, None] + np.arange(20)).reshape(-1)] = head.reshape(-1)
    tail = np.concatenate([_be(qtype, 2), _be(np.ones(m), 2)], axis=1)
    data[((msg_off + 12 + wire_len)[:, None] + np.arange(4)).reshape(-1)] = tail.reshape(-1)
    if records.addresses is not None:
        src_code, dst_code, table, version = records.addresses
    else:
        codes, table, version = _address_table(records.src, records.dst)
        src_code, dst_code = codes[: len(records)], codes[len(records) :]
    src_code, dst_code = src_code[row], dst_code[row]
    src_code, dst_code = np.where(swap, dst_code, src_code), np.where(swap, src_code, dst_code)
    rtt = np.asarray(records.rtt, np.float64)[row]
    stats["dns_packets"] += len(keep)
    every = len(keep) == m
    sel = slice(None) if every else keep
    return DnsBatch(
        record=np.asarray(records.index, np.int64)[row][sel],
        time=(when[row] + np.where(swap, rtt, 0.0))[sel],
        ipver=np.where((version[src_code] == 6) | (version[dst_code] == 6), 6, 4).astype(
            np.uint8)[sel],
        src=table[src_code][sel], dst=table[dst_code][sel], sport=sport[sel], dport=dport[sel],
        proto=np.full(len(keep), 17, np.uint8), l4_off=l4_off[sel], msg_off=msg_off[sel],
        msg_len=msg_len[sel], qname=_name_matrix(names, qlen)[row][sel],
        qlen=qlen[row].astype(np.int32)[sel], qtype=qtype.astype(np.uint16)[sel],
        response=response[sel], data=data,
        label=None if records.label is None else np.asarray(records.label, np.int8)[row][sel],
    )  # fmt: skip


# --------------------------------------------------------------------------- public API
def read_log_dns(
    path: str | os.PathLike, chunk_records: int = 8192, stats: dict | None = None
) -> Iterator[DnsBatch]:
    """DnsBatches of a DNS log, as read_dns gives them for a capture; `record` is the log
    record's index and stats counts log records and the skipped ones by reason. No ports to
    choose: a log holds DNS only, and its rebuilt messages are put on port 53. A labelled name
    list gives each batch a `label` column."""
    stats = {} if stats is None else stats
    stats.setdefault("records", 0)
    stats.setdefault("dns_packets", 0)
    fmt = log_format(path)
    if fmt is None:
        raise UserError(f"{path}: not a Zeek dns.log, Suricata eve.json or list of names")
    read, state, first = READERS[fmt], {}, 0
    for block in _line_blocks(path, stats):
        for start in range(0, len(block), chunk_records):
            parts = read(block[start : start + chunk_records], first, state, stats)
            stats["records"] += state["next"] - first
            first = state["next"]
            for records in parts:
                batch = _messages(records, stats) if len(records) else None
                if batch is not None:
                    yield batch


def read_any(
    path: str | os.PathLike,
    ports: tuple[int, ...] | list[int] = (53,),
    chunk_records: int = 8192,
    stats: dict | None = None,
    scope: str = "qname",
) -> Iterator[DnsBatch]:
    """read_dns for a capture, read_log_dns for a DNS log (by content). A log refuses features
    of another scope than the name's: its messages are rebuilt, not the ones on the wire."""
    if log_format(path) is None:
        return read_dns(path, ports, chunk_records, stats)
    if scope != "qname":
        raise UserError(
            f"{path}: a DNS log holds names, not raw messages; these features need the "
            f"{scope!r} scope (use a qname-scope checkpoint, or ng.py --scope qname)"
        )
    return read_log_dns(path, chunk_records, stats)
