"""Modelled tunnel families, part 2: a low-and-slow DNS beacon and a DGA-like one-label C2.

`beacon` follows the public description of Cobalt Strike's DNS beacon (malleable C2
`dns-beacon` block, 4.3+ defaults): an A check-in `<id>.<domain>` every sleep minus up to the
jitter, answered with the `dns_idle` address when there is no task and another one when there
is; a tasked beacon fetches its task with `api.<nonce>.<id>.<domain>` TXT (or `cdn.` A,
`www6.` AAAA) and posts the output in hex with `post.<hex>.<counter>.<id>.<domain>`; the first
contact sends its metadata the same way under `www.`. `dga` draws a new registered domain for
almost every query: one label of 20-32 letters (or letters and digits) under a TLD, mostly
NXDOMAIN, a few registered ones answering; the data rides in a few of those labels.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import string
import zlib
from collections.abc import Iterable

from data_generating_codes.det_codec import downstream
from data_generating_codes.families_wire import (
    Built,
    FamilyConfig,
    Query,
    Responder,
    digest,
    pick,
    reply,
    soa,
    text_of,
)
from exfil.cli import UserError
from exfil.dnsmsg import QTYPE, RCODE, Record, rdata_a, rdata_aaaa, rdata_soa, rdata_txt

# ---------------------------------------------------------------------------
# beacon

_TASK_FLAG = {"A": 0xF1, "TXT": 0xF2, "AAAA": 0xF3}  # last octet XOR: "task, fetch it by"
_TASK_CUT = 96  # of 256: check-ins that find a task waiting
_METADATA = 128  # bytes of the first contact's (encrypted) metadata


def _tasked(cfg: FamilyConfig, beacon_id: str, number: int) -> bool:
    """Whether the server has a task at this beacon's `number`-th check-in (both sides know)."""
    return digest(cfg.domain, "task", beacon_id, number)[0] < _TASK_CUT


def _fetches(cfg: FamilyConfig, beacon_id: str, number: int) -> int:
    return 1 + digest(cfg.domain, "size", beacon_id, number)[0] % cfg.fetches


def plan_beacon(data: bytes, filename: str, cfg: FamilyConfig,
                rng: random.Random) -> tuple[str, list[Query]]:  # fmt: skip
    """Metadata, then check-ins a sleep apart; a tasked one fetches its task and posts the next
    piece of the file as output (a 4-byte length post, then small hex chunks)."""
    beacon_id = f"{rng.randint(0x100000, 0xFFFFFFFF):x}"  # 6-8 hex characters
    tail, (meta, task, post) = f"{beacon_id}.{cfg.domain}", cfg.prefixes
    queries: list[Query] = []
    counter = 0

    def put(prefix: str, payload: bytes) -> None:
        nonlocal counter
        start = 0
        while start < len(payload):
            chunk = payload[start : start + rng.randint(cfg.min_bytes, cfg.max_bytes)]
            gap = rng.uniform(*cfg.query_gap) if queries else 0.0
            queries.append((f"{prefix}.{chunk.hex()}.{counter:x}.{tail}", "A", gap))
            start, counter = start + len(chunk), counter + 1

    put(meta, downstream(digest("metadata", beacon_id).hex().encode(), _METADATA))
    start, number = 0, 0
    while start < len(data):
        queries.append((tail, "A", rng.uniform(*cfg.sleep)))
        number += 1
        if not _tasked(cfg, beacon_id, number - 1):
            continue
        for _ in range(_fetches(cfg, beacon_id, number - 1)):
            name = f"{task}.{rng.getrandbits(32):08x}.{tail}"
            queries.append((name, cfg.qtypes[0], rng.uniform(*cfg.query_gap)))
        size = min(len(data) - start, rng.randint(*cfg.output))
        put(post, size.to_bytes(4, "big"))
        put(post, data[start : start + size])
        start += size
    return beacon_id, queries


class _BeaconServer:
    """The team server's DNS side; it counts each beacon's check-ins (the names repeat)."""

    def __init__(self, cfg: FamilyConfig) -> None:
        self.cfg, self.checkins = cfg, {}
        self.idle = ipaddress.IPv4Address(cfg.idle_ip)
        self.suffix = "." + cfg.domain

    def __call__(self, query: bytes) -> bytes | None:
        return reply(query, self.build)

    def build(self, name: bytes, qtype: int) -> Built:
        cfg, text = self.cfg, text_of(name).lower()
        if not text.endswith(self.suffix):
            return RCODE["REFUSED"], [], []
        parts = text[: -len(self.suffix)].split(".")
        if len(parts) == 1 and qtype == QTYPE["A"]:  # a check-in
            number = self.checkins.get(parts[0], 0)
            self.checkins[parts[0]] = number + 1
            flag = _TASK_FLAG[cfg.qtypes[0]] if _tasked(cfg, parts[0], number) else 0
            address = ipaddress.IPv4Address(int(self.idle) ^ flag)
            return 0, [Record(name, QTYPE["A"], 1, address.packed)], []
        seed = digest(cfg.domain, "task-bytes", text)
        if parts[0] == cfg.prefixes[1] and qtype == QTYPE["TXT"]:  # 189 bytes: 252 characters
            rdata = rdata_txt(base64.b64encode(downstream(seed, 189)))
        elif parts[0] == cfg.prefixes[1] and qtype == QTYPE["AAAA"]:
            rdata = rdata_aaaa(str(ipaddress.IPv6Address(downstream(seed, 16))))
        elif parts[0] == cfg.prefixes[1] and qtype == QTYPE["A"]:
            rdata = rdata_a(str(ipaddress.IPv4Address(downstream(seed, 4))))
        elif qtype == QTYPE["A"]:  # metadata and output posts: acknowledged with dns_idle
            rdata = rdata_a(cfg.idle_ip)
        else:
            return 0, [], [soa(cfg.domain)]
        return 0, [Record(name, qtype, 1, rdata)], []


def beacon_responder(cfg: FamilyConfig) -> Responder:
    return _BeaconServer(cfg)


def receive_beacon(names: Iterable[str | bytes], cfg: FamilyConfig) -> bytes:
    """The outputs' bytes: posts in counter order, each output a length post then its chunks."""
    suffix, posts = "." + cfg.domain, []
    for name in names:
        parts = text_of(name).lower()[: -len(suffix)].split(".")
        if len(parts) == 4 and parts[0] == cfg.prefixes[2]:
            posts.append((int(parts[2], 16), bytes.fromhex(parts[1])))
    out, want = bytearray(), 0
    for _, chunk in sorted(posts):
        if want:
            out += chunk
            want -= len(chunk)
        else:
            want = int.from_bytes(chunk, "big")
    return bytes(out)


# ---------------------------------------------------------------------------
# dga

ALPHABETS = {"base26": string.ascii_lowercase, "base36": string.digits + string.ascii_lowercase}
_LAST = 0x8000  # high bit of the 2-byte sequence number: the last chunk


def _key(cfg: FamilyConfig) -> bytes:
    return digest("dga", cfg.passphrase, cfg.domain)


def registered(cfg: FamilyConfig, label: str) -> bool:
    """Whether the attacker registered this name (it resolves); the rest are NXDOMAIN."""
    return digest(_key(cfg), "registered", label)[0] < cfg.resolve_cut


def _room(cfg: FamilyConfig, length: int) -> int:
    """Payload bytes a label of `length` carries: the most whose values all fit in it."""
    return ((len(ALPHABETS[cfg.encoding]) ** length).bit_length() - 1) // 8


def _mask(cfg: FamilyConfig, tag: bytes, size: int) -> bytes:
    return downstream(digest(_key(cfg), "mask", tag.hex()), size)


def _encode_label(body: bytes, length: int, cfg: FamilyConfig, rng: random.Random) -> str:
    """seq + chunk (masked) + tag as `length` digits; a random multiple of 256**size on top
    makes the leading digits as random as a DGA's."""
    alphabet = ALPHABETS[cfg.encoding]
    tag = digest(_key(cfg), body.hex())[:2]
    payload = bytes(a ^ b for a, b in zip(body, _mask(cfg, tag, len(body)), strict=True)) + tag
    span = 256 ** len(payload)
    value = int.from_bytes(payload, "big") + rng.randrange(len(alphabet) ** length // span) * span
    digits = []
    for _ in range(length):
        value, digit = divmod(value, len(alphabet))
        digits.append(alphabet[digit])
    return "".join(reversed(digits))


def _decode_label(label: str, cfg: FamilyConfig) -> tuple[int, bytes] | None:
    """(sequence number, chunk) of a data label; None for the generator's noise."""
    alphabet, value = ALPHABETS[cfg.encoding], 0
    for char in label:
        digit = alphabet.find(char)
        if digit < 0:
            return None
        value = value * len(alphabet) + digit
    size = _room(cfg, len(label))
    if size < 5:
        return None
    payload = (value % 256**size).to_bytes(size, "big")
    tag = payload[-2:]
    body = bytes(a ^ b for a, b in zip(payload[:-2], _mask(cfg, tag, size - 2), strict=True))
    if digest(_key(cfg), body.hex())[:2] != tag:
        return None
    return int.from_bytes(body[:2], "big"), body[2:]


def plan_dga(data: bytes, filename: str, cfg: FamilyConfig,
             rng: random.Random) -> tuple[str, list[Query]]:  # fmt: skip
    """zlib of the file in keyed, sequenced labels, each after a few noise names; bursts of
    look-ups a sleep apart; every name a new `<label>.<tld>`."""
    blob, key, alphabet = zlib.compress(data, 9), _key(cfg), ALPHABETS[cfg.encoding]
    used: set[str] = set()
    queries: list[Query] = []
    burst = rng.randint(*cfg.burst)

    def emit(label: str) -> None:
        nonlocal burst
        used.add(label)
        burst -= 1
        gap = rng.uniform(*cfg.query_gap) if burst > 0 else rng.uniform(*cfg.sleep)
        burst = burst if burst > 0 else rng.randint(*cfg.burst)
        name = f"{label}.{rng.choice(cfg.tlds)}"
        queries.append((name, pick(rng, cfg.qtypes), gap if queries else 0.0))

    start, seq = 0, 0
    while start < len(blob):
        for _ in range(rng.randint(*cfg.noise)):
            while True:
                size = rng.randint(*cfg.length)
                label = "".join(rng.choice(alphabet) for _ in range(size))
                if label not in used and _decode_label(label, cfg) is None:
                    break
            emit(label)
        length = rng.randint(*cfg.length)
        size = _room(cfg, length) - 4  # less the sequence number and the tag
        chunk = blob[start : start + size]
        start += len(chunk)
        chunk += rng.randbytes(size - len(chunk))  # the last label as long as the others
        if seq >= _LAST:
            raise UserError(f"{filename}: too large for {cfg.style}")
        body = (seq | (_LAST if start >= len(blob) else 0)).to_bytes(2, "big") + chunk
        while (label := _encode_label(body, length, cfg, rng)) in used:
            pass
        emit(label)
        seq += 1
    return key.hex()[:8], queries


def dga_responder(cfg: FamilyConfig) -> Responder:
    """NXDOMAIN from the TLD for unregistered names; registered ones answer with a few bytes
    (an A address, an AAAA or a TXT string)."""

    def build(name: bytes, qtype: int) -> Built:
        text = text_of(name).lower()
        label, _, tld = text.partition(".")
        if not registered(cfg, label):
            registry = rdata_soa(f"a.nic.{tld}", f"hostmaster.nic.{tld}", 2026010101, 900)
            return RCODE["NXDOMAIN"], [], [Record(tld, QTYPE["SOA"], 900, registry)]
        seed = digest(_key(cfg), "answer", text)
        rdata = {
            QTYPE["A"]: lambda: rdata_a(str(ipaddress.IPv4Address(seed[:4]))),
            QTYPE["AAAA"]: lambda: rdata_aaaa(str(ipaddress.IPv6Address(seed[:16]))),
            QTYPE["TXT"]: lambda: rdata_txt(base64.b64encode(downstream(seed, 24 + seed[0] % 72))),
        }.get(qtype)
        if rdata is None:
            return 0, [], [soa(text)]
        return 0, [Record(name, qtype, 300, rdata())], []

    return lambda query: reply(query, build)


def receive_dga(names: Iterable[str | bytes], cfg: FamilyConfig) -> bytes:
    """Every label that decodes with a good tag, by sequence number, up to the last one."""
    chunks, count = {}, None
    for name in names:
        found = _decode_label(text_of(name).lower().partition(".")[0], cfg)
        if found is not None:
            seq, chunk = found
            chunks[seq & ~_LAST] = chunk
            count = (seq & ~_LAST) + 1 if seq & _LAST else count
    if count is None:
        raise ValueError("no last chunk")
    return zlib.decompressobj().decompress(b"".join(chunks[i] for i in range(count)))
