"""Modelled tunnel families other than DET, part 1: the shared pieces and dnscat2.

Each family has a planner (file bytes -> queries, each with the seconds since the previous one),
a responder (the attacker server's reply to one query datagram) and a receiver (query names ->
file bytes). They are models built from the tools' public protocol descriptions, not ports of
their code; families.py holds the style presets and dispatches to them, families_c2.py has the
beacon and DGA families, families_exfiltrator.py DNSExfiltrator and the other encodings. All
randomness comes from the planner's generator or from SHA-256 of the query, so a seed gives the
same bytes and a responder needs no state unless its protocol does.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from data_generating_codes.det_codec import downstream
from exfil.cli import UserError
from exfil.dnsmsg import (
    QTYPE,
    RCODE,
    DnsError,
    Record,
    pack_response,
    parse_message,
    rdata_mx,
    rdata_name,
    rdata_soa,
    rdata_txt,
    read_name,
)

Query = tuple[str, str, float]  # (qname, qtype, seconds after the previous query)
Responder = Callable[[bytes], bytes | None]
Built = tuple[int, list[Record], list[Record]]  # rcode, answers, authority


@dataclass(frozen=True)
class FamilyConfig:
    """One modelled channel: the family, its attacker domain and the style's knobs."""

    family: str  # dnscat2 | beacon | dga | dnsexfiltrator
    style: str  # a families.STYLES name
    domain: str  # attacker domain (dga: only the seed of its keys; names sit under TLDs)
    passphrase: str  # dnsexfiltrator: RC4 key; dga: tag key
    qtypes: tuple[str, ...] = ("TXT",)  # drawn per query (beacon: the task fetches' type)
    label: int = 63  # longest data label
    name: int = 253  # longest query name (presentation form, no final dot)
    encoding: str = "hex"  # dnsexfiltrator: base64url|base32|base32lower|raw8; dga: base26|base36
    tag: str = ""  # dnscat2: this prefix instead of the domain suffix ("dnscat")
    min_bytes: int = 0  # data bytes per query (0: as many as fit)
    max_bytes: int = 0
    query_gap: tuple[float, float] = (0.02, 0.2)  # seconds between the queries of a burst
    sleep: tuple[float, float] = (0.8, 1.2)  # seconds between bursts (dnscat2: poll delay)
    burst: tuple[int, int] = (4, 24)  # queries (dnscat2: data packets) per burst
    idle_polls: tuple[int, int] = (1, 6)  # dnscat2: empty MSG polls between bursts
    prefixes: tuple[str, str, str] = ("www", "api", "post")  # beacon: metadata, task, output
    idle_ip: str = "0.0.0.0"  # beacon: the check-in answer that means "no task"
    fetches: int = 2  # beacon: most task fetches per tasking
    output: tuple[int, int] = (200, 900)  # beacon: output bytes posted per tasking
    tlds: tuple[str, ...] = ("com", "net", "org")  # dga
    noise: tuple[int, int] = (2, 5)  # dga: NXDOMAIN-only names before each data name
    length: tuple[int, int] = (20, 32)  # dga: label length
    resolve_cut: int = 20  # dga: of 256, the share of names that are registered (resolve)


# ---------------------------------------------------------------------------
# shared pieces


def digest(*parts: object) -> bytes:
    """SHA-256 of the parts' text: the deterministic "random" of responders and receivers."""
    return hashlib.sha256("|".join(map(str, parts)).encode("latin-1")).digest()


def labels(text: str, size: int) -> str:
    return ".".join(text[i : i + size] for i in range(0, len(text), size))


def fit(room: int, label: int) -> int:
    """Most characters that fit in `room` once cut into labels of `label` with dots between."""
    chars = room - (room // (label + 1))
    while chars > 0 and chars + (chars - 1) // label > room:
        chars -= 1
    return max(chars, 0)


def pick(rng: random.Random, qtypes: tuple[str, ...]) -> str:
    return qtypes[0] if len(qtypes) == 1 else rng.choice(qtypes)


def text_of(name: str | bytes) -> str:
    return name.decode("latin-1") if isinstance(name, bytes) else name


def soa(zone: str) -> Record:
    return Record(zone, QTYPE["SOA"], 60,
                  rdata_soa(f"ns1.{zone}", f"hostmaster.{zone}", 2026010101))  # fmt: skip


def reply(query: bytes, build: Callable[[bytes, int], Built]) -> bytes | None:
    """The authoritative answer `build` gives the one question; None for anything unreadable."""
    try:
        message = parse_message(query)
    except DnsError:
        return None
    if message.is_response or len(message.questions) != 1:
        return None
    name, qtype, _ = message.questions[0]
    rcode, answers, authority = build(name, qtype)
    return pack_response(message.id, name, qtype, rcode=rcode, answers=answers,
                         authority=authority, rd=bool(message.flags & 0x0100), aa=True)  # fmt: skip


# ---------------------------------------------------------------------------
# dnscat2: hex-encoded packets with a session header (doc/protocol.md of iagox86/dnscat2)

SYN, MSG, FIN = 0x00, 0x01, 0x02  # message types
OPT_NAME = 0x01  # SYN option: a session name follows
_HEAD = struct.Struct("!HBH")  # packet_id, message_type, session_id
_SEQ = struct.Struct("!HH")  # SYN: initial seq, options; MSG: seq, ack
MSG_HEADER = _HEAD.size + _SEQ.size  # an empty MSG (a poll): 9 bytes, 18 hex characters
_DOWNSTREAM_CUT = 64  # of 256: polls the server answers with a few bytes (a command)


def dnscat2_name(packet: bytes, cfg: FamilyConfig) -> str:
    text = labels(packet.hex(), cfg.label)
    return f"{cfg.tag}.{text}" if cfg.tag else f"{text}.{cfg.domain}"


def dnscat2_packet(name: str | bytes, cfg: FamilyConfig) -> bytes:
    """The packet a query name carries (periods and case ignored); ValueError if not one."""
    text = text_of(name).lower()
    if cfg.tag and text.startswith(cfg.tag + "."):
        text = text[len(cfg.tag) + 1 :]
    elif not cfg.tag and text.endswith("." + cfg.domain):
        text = text[: -len(cfg.domain) - 1]
    else:
        raise ValueError("not a dnscat2 name")
    return bytes.fromhex(text.replace(".", ""))


def dnscat2_capacity(cfg: FamilyConfig) -> int:
    """Data bytes in a full MSG (the name limit, less the header)."""
    room = cfg.name - len(cfg.tag or cfg.domain) - 1
    return fit(room, cfg.label) // 2 - MSG_HEADER


def _server_isn(cfg: FamilyConfig, session: int) -> int:
    return int.from_bytes(digest(cfg.domain, "isn", session)[:2], "big")


def server_data(cfg: FamilyConfig, session: int, packet_id: int, ack: int) -> bytes:
    """What the server sends in reply to a poll: now and then a command, mostly nothing. A
    function of the poll alone, so the responder stays pure and the planner can follow it."""
    roll = digest(cfg.domain, "cmd", session, packet_id, ack)
    return downstream(roll, 8 + roll[1] % 41) if roll[0] < _DOWNSTREAM_CUT else b""


def plan_dnscat2(data: bytes, filename: str, cfg: FamilyConfig,
                 rng: random.Random) -> tuple[str, list[Query]]:  # fmt: skip
    """SYN (named after the file), data MSGs in bursts with keep-alive polls between, FIN."""
    capacity = min(dnscat2_capacity(cfg), cfg.max_bytes or 1 << 16)
    if capacity < 1:
        raise UserError(f"domain {cfg.domain!r} too long for {cfg.style}")
    session, seq, low = rng.getrandbits(16), rng.getrandbits(16), min(cfg.min_bytes, capacity)
    ack, queries = _server_isn(cfg, session), []

    def send(packet: bytes, delay: float) -> None:
        queries.append((dnscat2_name(packet, cfg), pick(rng, cfg.qtypes), delay))

    hello = _SEQ.pack(seq, OPT_NAME) + filename.encode()[: capacity - 1] + b"\0"
    send(_HEAD.pack(rng.getrandbits(16), SYN, session) + hello, 0.0)
    start = 0
    while start < len(data):
        for _ in range(rng.randint(*cfg.burst)):
            if start >= len(data):
                break
            size = rng.randint(low, capacity) if low else capacity
            chunk = data[start : start + size]
            packet = _HEAD.pack(rng.getrandbits(16), MSG, session) + _SEQ.pack(seq, ack) + chunk
            send(packet, rng.uniform(*cfg.query_gap))
            seq, start = (seq + len(chunk)) & 0xFFFF, start + len(chunk)
        for _ in range(rng.randint(*cfg.idle_polls)):
            packet_id = rng.getrandbits(16)
            send(_HEAD.pack(packet_id, MSG, session) + _SEQ.pack(seq, ack), rng.uniform(*cfg.sleep))
            ack = (ack + len(server_data(cfg, session, packet_id, ack))) & 0xFFFF
    send(_HEAD.pack(rng.getrandbits(16), FIN, session) + b"\0", rng.uniform(*cfg.query_gap))
    return f"{session:04x}", queries


def _dnscat2_reply_packet(packet: bytes, salt: bytes, cfg: FamilyConfig) -> bytes:
    packet_id, kind, session = _HEAD.unpack_from(packet)
    head = _HEAD.pack(int.from_bytes(salt[:2], "big"), kind, session)
    if kind == SYN:
        return head + _SEQ.pack(_server_isn(cfg, session), 0)
    if kind == MSG:
        seq, ack = _SEQ.unpack_from(packet, _HEAD.size)
        body = packet[MSG_HEADER:]
        data = b"" if body else server_data(cfg, session, packet_id, ack)
        return head + _SEQ.pack(ack, (seq + len(body)) & 0xFFFF) + data
    return _HEAD.pack(int.from_bytes(salt[:2], "big"), FIN, session) + b"\0"


def dnscat2_responder(cfg: FamilyConfig) -> Responder:
    """The server's MSG/SYN/FIN back, hex in a TXT string or in a CNAME/MX name like a query."""

    def build(name: bytes, qtype: int) -> Built:
        try:
            packet = dnscat2_packet(name, cfg)
            out = _dnscat2_reply_packet(packet, digest(name), cfg)
        except (ValueError, struct.error):
            return RCODE["NXDOMAIN"], [], [soa(cfg.domain)]
        salt = digest(name, "mx")
        record = {
            QTYPE["TXT"]: lambda: rdata_txt(out.hex()),
            QTYPE["CNAME"]: lambda: rdata_name(dnscat2_name(out, cfg)),
            QTYPE["MX"]: lambda: rdata_mx(10 * (1 + salt[0] % 5), dnscat2_name(out, cfg)),
        }.get(qtype)
        return 0, [Record(name, qtype, 1, record())] if record else [], []

    return lambda query: reply(query, build)


def dnscat2_reply_packet(rtype: int, rdata: bytes, cfg: FamilyConfig) -> bytes:
    """The server packet in one answer record (the client's side of the downstream)."""
    if rtype == QTYPE["TXT"]:
        return bytes.fromhex(rdata[1 : 1 + rdata[0]].decode())
    name, _ = read_name(rdata, 2 if rtype == QTYPE["MX"] else 0)
    return dnscat2_packet(name, cfg)


def receive_dnscat2(names: Iterable[str | bytes], cfg: FamilyConfig) -> bytes:
    """The client's byte stream: MSG data in seq order from the SYN's initial seq."""
    out, expected = bytearray(), None
    for name in names:
        packet = dnscat2_packet(name, cfg)
        kind = packet[2]
        if kind == SYN:
            expected = _SEQ.unpack_from(packet, _HEAD.size)[0]
        elif kind == MSG and len(packet) > MSG_HEADER and expected is not None:
            if _SEQ.unpack_from(packet, _HEAD.size)[0] != expected:
                continue  # a resend, or out of order: the real client resends until acked
            out += packet[MSG_HEADER:]
            expected = (expected + len(packet) - MSG_HEADER) & 0xFFFF
    return bytes(out)
