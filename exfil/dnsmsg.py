"""One DNS message at a time: pack queries and responses, parse untrusted messages safely.

The generator and the DET server build messages here; the server parses what attackers send.
The batch (vectorised) parser used on captures lives in `exfil.dnsparse`; this module is the
scalar reference, written in the dpkt style: one precompiled struct per header, tables not
if/elif chains, and hard bounds on everything read from the wire.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------
# tables

QTYPE: dict[str, int] = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "NULL": 10, "PTR": 12, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "OPT": 41, "DS": 43, "DNSKEY": 48, "SVCB": 64, "HTTPS": 65,
    "ANY": 255, "CAA": 257,
}  # fmt: skip
QTYPE_NAME: dict[int, str] = {number: name for name, number in QTYPE.items()}

RCODE = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080

MAX_LABEL = 63
MAX_NAME = 255  # wire length, length bytes and the root byte included
MAX_POINTER_HOPS = 64  # more hops than any legal name can need: treated as a loop

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")


class DnsError(ValueError):
    """The bytes are not a well-formed DNS message; `reason` is a short tag for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def qtype_name(number: int) -> str:
    """Mnemonic of a query type, RFC 3597 style for unknown ones."""
    return QTYPE_NAME.get(number, f"TYPE{number}")


def qtype_number(name: str) -> int:
    """Inverse of qtype_name; accepts mnemonics and TYPEnnn."""
    upper = name.upper()
    if upper in QTYPE:
        return QTYPE[upper]
    if upper.startswith("TYPE") and upper[4:].isdigit():
        return int(upper[4:])
    raise ValueError(f"unknown query type {name!r}")


# ---------------------------------------------------------------------------
# packing


def pack_name(name: str | bytes) -> bytes:
    """Wire form of a dotted name (no compression). Raises ValueError on illegal sizes."""
    raw = name.encode("latin-1") if isinstance(name, str) else name
    raw = raw.rstrip(b".")
    if not raw:
        return b"\x00"
    out = bytearray()
    for label in raw.split(b"."):
        if not 0 < len(label) <= MAX_LABEL:
            raise ValueError(f"label of {len(label)} bytes in {raw[:80]!r}")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"name of {len(out)} wire bytes exceeds {MAX_NAME}")
    return bytes(out)


@dataclass(frozen=True)
class Record:
    """A resource record; rdata is already in wire form (see the rdata_* helpers)."""

    name: str | bytes
    rtype: int
    ttl: int
    rdata: bytes
    rclass: int = 1


def pack_query(qid: int, qname: str | bytes, qtype: int, *, rd: bool = True) -> bytes:
    """A standard query with one question, class IN."""
    flags = FLAG_RD if rd else 0
    return (
        _HEADER.pack(qid & 0xFFFF, flags, 1, 0, 0, 0)
        + pack_name(qname)
        + _QUESTION_TAIL.pack(qtype, 1)
    )


def pack_response(
    qid: int,
    qname: str | bytes,
    qtype: int,
    *,
    rcode: int = 0,
    answers: tuple[Record, ...] | list[Record] = (),
    authority: tuple[Record, ...] | list[Record] = (),
    rd: bool = True,
    aa: bool = False,
) -> bytes:
    """A response echoing the question; answer names equal to qname are compressed to it."""
    flags = FLAG_QR | FLAG_RA | (FLAG_RD if rd else 0) | (FLAG_AA if aa else 0) | (rcode & 0xF)
    question_name = pack_name(qname)
    out = bytearray(_HEADER.pack(qid & 0xFFFF, flags, 1, len(answers), len(authority), 0))
    out += question_name + _QUESTION_TAIL.pack(qtype, 1)
    for record in (*answers, *authority):
        owner = pack_name(record.name)
        out += b"\xc0\x0c" if owner == question_name else owner
        out += _RR_FIXED.pack(record.rtype, record.rclass, record.ttl, len(record.rdata))
        out += record.rdata
    return bytes(out)


def rdata_a(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def rdata_aaaa(address: str) -> bytes:
    return ipaddress.IPv6Address(address).packed


def rdata_name(name: str | bytes) -> bytes:
    """CNAME, NS and PTR data: a bare name."""
    return pack_name(name)


def rdata_mx(preference: int, exchange: str | bytes) -> bytes:
    return struct.pack("!H", preference) + pack_name(exchange)


def rdata_txt(*strings: str | bytes) -> bytes:
    """TXT data: character-strings of at most 255 bytes each (longer ones are split)."""
    out = bytearray()
    for text in strings:
        raw = text.encode() if isinstance(text, str) else text
        for start in range(0, max(len(raw), 1), 255):
            piece = raw[start : start + 255]
            out.append(len(piece))
            out += piece
    return bytes(out)


def rdata_srv(priority: int, weight: int, port: int, target: str | bytes) -> bytes:
    return struct.pack("!HHH", priority, weight, port) + pack_name(target)


def rdata_soa(mname: str, rname: str, serial: int, minimum: int = 300) -> bytes:
    return (
        pack_name(mname)
        + pack_name(rname)
        + struct.pack("!IIIII", serial, 7200, 900, 1209600, minimum)
    )


def rdata_https(
    priority: int = 1, target: str = ".", alpn: tuple[str, ...] = ("h2", "h3")
) -> bytes:
    """HTTPS/SVCB data with an alpn parameter, the common shape browsers see."""
    alpn_value = b"".join(bytes([len(protocol)]) + protocol.encode() for protocol in alpn)
    return (
        struct.pack("!H", priority)
        + pack_name(target)
        + struct.pack("!HH", 1, len(alpn_value))
        + alpn_value
    )


# ---------------------------------------------------------------------------
# parsing (untrusted input)


def read_name(message: bytes, offset: int) -> tuple[bytes, int]:
    """Decode a possibly compressed name at `offset`; return (dotted bytes, offset after it).

    Bounded: at most MAX_POINTER_HOPS pointers, each pointing before every byte read so far
    (so no loop is possible), labels <= 63,
    the decoded name <= 255 wire bytes. Anything else raises DnsError with a reason tag.
    """
    labels: list[bytes] = []
    wire_length = 1
    end = None
    hops = 0
    lowest = offset
    size = len(message)
    while True:
        if offset >= size:
            raise DnsError("truncated-name")
        length = message[offset]
        kind = length & 0xC0
        if kind == 0xC0:
            if offset + 1 >= size:
                raise DnsError("truncated-name")
            target = ((length & 0x3F) << 8) | message[offset + 1]
            if end is None:
                end = offset + 2
            hops += 1
            if hops > MAX_POINTER_HOPS or target >= lowest:
                raise DnsError("pointer-loop" if target < size else "pointer-out-of-range")
            offset = lowest = target
            continue
        if kind:
            raise DnsError("bad-label-type")
        if length == 0:
            return b".".join(labels), (end if end is not None else offset + 1)
        if offset + 1 + length > size:
            raise DnsError("truncated-name")
        wire_length += 1 + length
        if wire_length > MAX_NAME:
            raise DnsError("name-too-long")
        labels.append(message[offset + 1 : offset + 1 + length])
        offset += 1 + length


@dataclass
class Message:
    """The parts of a message the project uses; records keep raw rdata."""

    id: int
    flags: int
    questions: list[tuple[bytes, int, int]] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def parse_message(message: bytes, *, max_records: int = 64) -> Message:
    """Parse header, questions and answers; bounded in every count read from the wire."""
    if len(message) < _HEADER.size:
        raise DnsError("truncated-header")
    qid, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(message)
    if qdcount > max_records or ancount > max_records:
        raise DnsError("too-many-records")
    parsed = Message(qid, flags)
    offset = _HEADER.size
    for _ in range(qdcount):
        name, offset = read_name(message, offset)
        if offset + 4 > len(message):
            raise DnsError("truncated-question")
        qtype, qclass = _QUESTION_TAIL.unpack_from(message, offset)
        offset += 4
        parsed.questions.append((name, qtype, qclass))
    for _ in range(ancount):
        name, offset = read_name(message, offset)
        if offset + _RR_FIXED.size > len(message):
            raise DnsError("truncated-record")
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(message, offset)
        offset += _RR_FIXED.size
        if offset + rdlength > len(message):
            raise DnsError("truncated-record")
        parsed.answers.append(Record(name, rtype, ttl, message[offset : offset + rdlength], rclass))
        offset += rdlength
    return parsed
