"""DNS logs as input: Zeek dns.log (TSV with its `#fields` header, or JSON lines) and Suricata
eve.json DNS events (format version 2: `query` / `answer` records; version 3: `request` /
`response` with a `queries` list), plain or gzip, recognised by their content.

Most sensors keep logs, not packets. Each log record becomes the DNS messages it describes (a
Zeek row: the query and, when it has an answer section or an rcode, the response; an eve event:
one message), rebuilt on the wire and read by the capture reader, so names, context state,
features and alerts are computed by exactly the code a capture goes through. What a log lacks
(the DNS id, ports, TTLs where absent) is filled with constants, which no feature reads (they
would leak labels). `packet` is the 0-based record index in the log. Only qname-scope features
can be computed from a log: the raw message of a log is a reconstruction.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from exfil.cli import UserError
from exfil.dnsmsg import (
    Record,
    pack_query,
    pack_response,
    qtype_number,
    rdata_name,
    rdata_txt,
)
from exfil.pcapread import read_dns
from exfil.pcapwrite import frames_pcap

MAX_LINE = 1 << 20  # longer lines are no DNS record: skipped and counted
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
_SERVER, _CLIENT = "192.0.2.53", "192.0.2.1"  # documentation addresses where a log has none


def _opened(path: str | os.PathLike):  # noqa: ANN202
    """A binary stream of the file, gunzipped when it starts with gzip's magic."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def log_format(path: str | os.PathLike) -> str | None:
    """'zeek-tsv', 'zeek-json', 'eve', or None when the file is not a DNS log we read."""
    try:
        with _opened(path) as handle:
            head = handle.read(65536)
    except (OSError, EOFError, zlib.error):
        return None
    for line in head.splitlines():
        text = line.strip()
        if not text:
            continue
        if text.startswith((b"#separator", b"#fields")):
            return "zeek-tsv"
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
    return None


def _lines(path: str | os.PathLike, stats: dict) -> Iterator[bytes]:
    """The file's lines; an over-long line is skipped and counted, a cut gzip is an error."""
    try:
        with _opened(path) as handle:
            while True:
                line = handle.readline(MAX_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_LINE:
                    stats["long_line"] = stats.get("long_line", 0) + 1
                    while line and not line.endswith(b"\n"):  # the rest of the long line
                        line = handle.readline(MAX_LINE)
                    continue
                yield line
    except EOFError:
        raise UserError(f"{path}: compressed log cut short (gzip ended early)") from None
    except (zlib.error, gzip.BadGzipFile) as error:
        raise UserError(f"{path}: corrupt gzip ({error})") from None


def _when(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if _is_number(value):  # Zeek TSV: epoch seconds as text
        return float(value)  # type: ignore[arg-type]
    text = str(value).replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":  # Suricata: +0000
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).timestamp()


def _qtype(value: object) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else qtype_number(text)


def _rcode(value: object) -> int | None:
    if value in (None, "-", ""):
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else RCODES.get(text.upper(), 0)


def _answer(qname: str, rtype: int | None, text: str) -> Record | None:
    """One answer record from a log's text: A, AAAA, TXT, else a name (CNAME, MX, NS, PTR)."""
    text = text.strip()
    if not text:
        return None
    parsed = _ip(text)
    if parsed is not None:
        version, packed = parsed
        return Record(qname, 28 if version == 6 else 1, 60, packed)
    if rtype == 16 or text.startswith("TXT "):
        body = text.split(" ", 2)[-1] if text.startswith("TXT ") else text
        return Record(qname, 16, 60, rdata_txt(body.encode()[:255]))
    name = text.rstrip(".")
    if rtype in (5, 2, 12) and _valid_name(name):
        return Record(qname, rtype, 60, rdata_name(name))
    if _valid_name(name):
        return Record(qname, 5, 60, rdata_name(name))
    return None


def _valid_name(name: str) -> bool:
    try:
        return bool(name) and all(0 < len(label) < 64 for label in name.encode().split(b"."))
    except UnicodeEncodeError:
        return False


_ESCAPE = re.compile(rb"\\(?:x([0-9a-fA-F]{2})|([0-9]{3})|(.))", re.DOTALL)


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


class _Skip(Exception):
    """A record we cannot use (wrong types, a name that is no DNS name): skipped and counted."""


def _messages_zeek(row: dict) -> list[tuple[float, str, str, bytes, bool]]:
    qname = row.get("query")
    if not isinstance(qname, str) or qname in ("-", "(empty)"):
        raise _Skip("no_query")
    qname = name_bytes(qname)
    qtype = _qtype(row.get("qtype", 1)) if row.get("qtype") not in (None, "-") else 1
    client, server = str(row.get("id.orig_h", _CLIENT)), str(row.get("id.resp_h", _SERVER))
    when = _when(row["ts"])
    out = [(when, client, server, pack_query(0, qname, qtype), False)]
    answers = row.get("answers")
    answers = [] if answers in (None, "-", "(empty)") else answers
    if isinstance(answers, str):
        answers = answers.split(",")
    rcode = _rcode(row.get("rcode"))
    if rcode is not None or answers:
        records = [r for r in (_answer(qname, qtype, str(a)) for a in answers) if r]
        rtt = row.get("rtt")
        delay = float(rtt) if isinstance(rtt, (int, float)) or _is_number(rtt) else 0.0
        message = pack_response(0, qname, qtype, rcode=rcode or 0, answers=records)
        out.append((when + delay, server, client, message, True))
    return out


def _is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _messages_eve(event: dict) -> list[tuple[float, str, str, bytes, bool]]:
    if event.get("event_type") != "dns" or not isinstance(event.get("dns"), dict):
        raise _Skip("not_dns_event")
    dns = event["dns"]
    kind = dns.get("type")
    queries = dns.get("queries")
    if isinstance(queries, list) and queries and isinstance(queries[0], dict):  # version 3
        qname, qtype = queries[0].get("rrname"), queries[0].get("rrtype", "A")
    else:  # version 2
        qname, qtype = dns.get("rrname"), dns.get("rrtype", "A")
    if not isinstance(qname, str):
        raise _Skip("no_query")
    qname = name_bytes(qname)
    qtype = _qtype(qtype)
    src, dst = str(event.get("src_ip", _CLIENT)), str(event.get("dest_ip", _SERVER))
    when = _when(event["timestamp"])
    if kind in ("query", "request"):
        return [(when, src, dst, pack_query(0, qname, qtype), False)]
    if kind not in ("answer", "response"):
        raise _Skip("unknown_dns_type")
    answers = dns.get("answers") or []
    if isinstance(dns.get("grouped"), dict) and not answers:
        answers = [{"rrtype": t, "rdata": d} for t, ds in dns["grouped"].items() for d in ds]
    records = []
    for answer in answers if isinstance(answers, list) else []:
        if isinstance(answer, dict) and answer.get("rdata") is not None:
            rtype = _qtype(answer.get("rrtype", "A"))
            record = _answer(qname, rtype, str(answer["rdata"]))
            if record:
                records.append(record)
    message = pack_response(0, qname, qtype, rcode=_rcode(dns.get("rcode")) or 0, answers=records)
    return [(when, src, dst, message, True)]  # Suricata logs a response from the responder


def _zeek_tsv_rows(lines: Iterator[bytes], stats: dict) -> Iterator[dict | None]:
    fields: list[str] | None = None
    separator, set_separator, unset, empty = "\t", ",", "-", "(empty)"
    for line in lines:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith("#"):
            if text.startswith("#separator"):  # the one header line split by a space
                value = text.partition(" ")[2].strip()
                separator = value.encode("ascii", "replace").decode("unicode_escape") or "\t"
                continue
            key, _, value = text.partition(separator)
            if key == "#set_separator":
                set_separator = value
            elif key == "#unset_field":
                unset = value
            elif key == "#empty_field":
                empty = value
            elif key == "#fields":
                fields = value.split(separator)
            continue
        if not text:
            continue
        if fields is None:
            raise UserError("Zeek log without a #fields header")
        values = text.split(separator)
        if len(values) != len(fields):
            stats["wrong_columns"] = stats.get("wrong_columns", 0) + 1
            yield None
            continue
        row: dict = {}
        for key, value in zip(fields, values, strict=True):
            if value == unset:
                continue
            row[key] = [] if value == empty else value.split(set_separator) if key in (
                "answers", "TTLs") else value  # fmt: skip
        yield row


def _json_rows(lines: Iterator[bytes], stats: dict) -> Iterator[dict | None]:
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            stats["bad_json"] = stats.get("bad_json", 0) + 1
            yield None
            continue
        if not isinstance(row, dict):
            stats["bad_json"] = stats.get("bad_json", 0) + 1
            yield None
            continue
        yield row


def log_messages(path: str | os.PathLike, stats: dict) -> Iterator[tuple[int, tuple]]:
    """(record index, (time, src, dst, DNS message, is response)) for each message of the log."""
    fmt = log_format(path)
    if fmt is None:
        raise UserError(f"{path}: not a Zeek dns.log or Suricata eve.json")
    lines = _lines(path, stats)
    rows = _zeek_tsv_rows(lines, stats) if fmt == "zeek-tsv" else _json_rows(lines, stats)
    make = _messages_eve if fmt == "eve" else _messages_zeek
    for index, row in enumerate(rows):
        stats["records"] = stats.get("records", 0) + 1
        if row is None:
            continue
        try:
            for message in make(row):
                yield index, message
        except _Skip as why:
            stats[str(why)] = stats.get(str(why), 0) + 1
        except (KeyError, TypeError, ValueError, OverflowError, UnicodeError):
            stats["bad_record"] = stats.get("bad_record", 0) + 1


@lru_cache(maxsize=1 << 16)
def _ip(text: str) -> tuple[int, bytes] | None:
    """(version, packed bytes) of an address, None if `text` is none; addresses repeat in a
    log (clients, servers, answers), so each is parsed once."""
    if not text or not (text[0].isdigit() or ":" in text):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, address.packed


def _address(text: str) -> tuple[int, bytes]:
    return _ip(text) or _ip(_CLIENT)  # type: ignore[return-value]


def frame(src: str, dst: str, message: bytes, response: bool) -> bytes:
    """An Ethernet + IPv4/IPv6 + UDP frame around `message` (port 53 on the server side)."""
    version, source = _address(src)
    other, destination = _address(dst)
    if other != version:  # a log mixing families in one record: keep both as IPv6
        source = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + source[-4:]).packed
        destination = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + destination[-4:]).packed
        version = 6
    sport, dport = (53, 40000) if response else (40000, 53)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(message), 0) + message
    if version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, source,
                         destination)  # fmt: skip
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, source, destination)
        ethertype = 0x86DD
    return b"\0" * 12 + struct.pack("!H", ethertype) + ip + udp


def read_log_dns(  # noqa: ANN201 (DnsBatch from pcapread)
    path: str | os.PathLike, chunk_records: int = 8192, stats: dict | None = None
):
    """DnsBatches of a DNS log, as read_dns gives them for a capture; `record` is the log
    record's index and stats counts log records and the skipped ones by reason. No ports to
    choose: a log holds DNS only, and its rebuilt messages are put on port 53."""
    stats = {} if stats is None else stats
    stats.setdefault("records", 0)
    stats.setdefault("dns_packets", 0)
    with tempfile.TemporaryDirectory(prefix="exfil-log-") as scratch:
        pending: list[tuple[int, tuple]] = []
        part = 0
        for item in log_messages(path, stats):
            pending.append(item)
            if len(pending) >= chunk_records:
                yield from _batches(pending, Path(scratch) / f"{part}.pcap", stats)
                pending, part = [], part + 1
        if pending:
            yield from _batches(pending, Path(scratch) / f"{part}.pcap", stats)


def read_any(
    path: str | os.PathLike,
    ports: tuple[int, ...] | list[int] = (53,),
    chunk_records: int = 8192,
    stats: dict | None = None,
    scope: str = "qname",
):
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


def _batches(pending: list, window: Path, stats: dict):  # noqa: ANN202
    frames = [(when, frame(src, dst, message, response))
              for _, (when, src, dst, message, response) in pending]  # fmt: skip
    window.write_bytes(frames_pcap(frames))
    index = np.fromiter((i for i, _ in pending), np.int64, len(pending))
    inner: dict = {}
    for batch in read_dns(window, (53,), len(pending) + 1, inner):
        batch.record = index[batch.record]
        stats["dns_packets"] += len(batch)
        yield batch
    for key, value in inner.items():
        if key not in ("records", "dns_packets"):
            stats[key] = stats.get(key, 0) + value
