"""DET's DNS wire format, as pure functions (no sockets, no clock).

The client (`det.send_file`), the server (`det_reassembly.Reassembler`) and the offline capture
writer (`script_datagen.py`) all build and read names here, so the three cannot drift apart.

A file becomes messages (DESIGN.md section 2), each message becomes text in the style's encoding,
and the text is cut into query names by the style's layout (both described in `det_styles`).
DET hex-encodes each chunk inside its message and the message again (hex of hex); the other
encodings carry the raw chunk bytes once, as real tunnels do.
"""

from __future__ import annotations

import hashlib
import random
import string
import zlib

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from data_generating_codes.det_config import DetConfig
from data_generating_codes.det_styles import (
    BASE36,
    COUNTER_DIGITS,
    ENCODINGS,
    JOB_ID_LEN,
    LAYOUTS,
    Layout,
    piece_capacity,
)
from exfil.cli import UserError
from exfil.dnsmsg import (
    QTYPE,
    RCODE,
    DnsError,
    Message,
    Record,
    pack_response,
    parse_message,
    rdata_a,
    rdata_mx,
    rdata_name,
    rdata_soa,
    rdata_txt,
)

JOB_ID_ALPHABET = string.ascii_letters + string.digits
TTL = 60


def _labels(text: str, size: int) -> str:
    return ".".join(text[i : i + size] for i in range(0, len(text), size))


# ---------------------------------------------------------------------------
# messages (DET's application layer)


def new_job_id(rng: random.Random) -> str:
    """DET's job id: 7 distinct characters of [A-Za-z0-9]."""
    return "".join(rng.sample(JOB_ID_ALPHABET, JOB_ID_LEN))


def _key(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


def encrypt_blob(payload: bytes, passphrase: str, iv: bytes) -> bytes:
    """AES-256-CBC, key SHA-256(passphrase), PKCS7, IV prepended (DET's aes_encrypt)."""
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(_key(passphrase)), modes.CBC(iv)).encryptor()
    padded = padder.update(payload) + padder.finalize()
    return iv + encryptor.update(padded) + encryptor.finalize()


def decrypt_blob(blob: bytes, passphrase: str) -> bytes:
    """Inverse of encrypt_blob; ValueError on a bad length or padding."""
    if len(blob) < 32 or len(blob) % 16:
        raise ValueError(f"ciphertext of {len(blob)} bytes")
    decryptor = Cipher(algorithms.AES(_key(passphrase)), modes.CBC(blob[:16])).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    padded = decryptor.update(blob[16:]) + decryptor.finalize()
    return unpadder.update(padded) + unpadder.finalize()


def build_messages(
    data: bytes, filename: str, cfg: DetConfig, rng: random.Random, job_id: str, iv: bytes
) -> list[bytes]:
    """REGISTER, chunk and DONE messages for one file (the filename is sent verbatim)."""
    md5 = hashlib.md5(data).hexdigest()
    messages = [f"{job_id}|!|{filename}|!|REGISTER|!|{md5}".encode()]
    payload = zlib.compress(data) if cfg.compression else data
    blob = encrypt_blob(payload, cfg.passphrase, iv)
    start = index = 0
    while start < len(blob):
        chunk = blob[start : start + rng.randint(cfg.min_bytes, cfg.max_bytes)]
        start += len(chunk)
        body = chunk.hex().encode() if cfg.encoding == "hex" else chunk
        messages.append(f"{job_id}|!|{index}|!|".encode() + body)
        index += 1
    messages.append(f"{job_id}|!|{index}|!|DONE".encode())
    return messages


def _counter(value: int) -> str:
    """COUNTER_DIGITS base36 digits, most significant first."""
    digits = []
    for _ in range(COUNTER_DIGITS):
        value, digit = divmod(value, 36)
        digits.append(BASE36[digit])
    if value:
        raise UserError("file too large for the counter layout")
    return "".join(reversed(digits))


def _label_sizes(layout: Layout, capacity: int, rng: random.Random) -> list[int]:
    """Data label lengths of one counter-layout query: full labels, or random ones (depth)."""
    if not layout.varying:
        full, rest = divmod(capacity, layout.label)
        return [layout.label] * full + ([rest] if rest else [])
    count = rng.randint(1, layout.max_labels)
    sizes = [rng.randint(min(8, layout.label), layout.label) for _ in range(count)]
    while len(sizes) > 1 and sum(sizes) > capacity:
        sizes.pop()
    return [min(sizes[0], capacity)] + sizes[1:] if len(sizes) == 1 else sizes


def plan_queries(
    data: bytes,
    filename: str,
    cfg: DetConfig,
    rng: random.Random,
    job_id: str | None = None,
    iv: bytes | None = None,
) -> tuple[str, list[list[tuple[str, str]]]]:
    """(job id, messages); each message is the (qname, qtype) list sent back to back."""
    job_id = job_id or new_job_id(rng)
    iv = iv if iv is not None else rng.randbytes(16)
    layout, encode = LAYOUTS[cfg.layout], ENCODINGS[cfg.encoding].encode
    capacity = piece_capacity(layout, cfg.domain)
    qtypes, suffix = cfg.qtypes, "." + cfg.domain
    seq, plan = 0, []
    for message in build_messages(data, filename, cfg, rng, job_id, iv):
        text, names = encode(message), []
        if not layout.counter:
            pieces = [text[i : i + capacity] for i in range(0, len(text), capacity)]
            if len(text) % capacity == 0:
                pieces.append("")  # a full last piece: end the message with a bare terminator
            names = [_labels(job_id + piece, layout.label) + suffix for piece in pieces]
        else:
            start = 0
            while start < len(text):
                sizes = _label_sizes(layout, capacity, rng)
                piece, start = text[start : start + sum(sizes)], start + sum(sizes)
                head = job_id + _counter(2 * seq + (start >= len(text)))
                seq += 1
                cuts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
                labels = [piece[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if piece[a:b]]
                names.append(".".join([head, *labels]) + suffix)
        plan.append([(name, qtypes[0] if len(qtypes) == 1 else rng.choice(qtypes))
                     for name in names])  # fmt: skip
    return job_id, plan


def schedule(
    messages: list[list[tuple[str, str]]], cfg: DetConfig, rng: random.Random, start: float = 0.0
) -> list[list[float]]:
    """Send time of every query: query_gap inside a message, uniform(min, max) sleep between."""
    times, now = [], start
    for number, message in enumerate(messages):
        if number:
            now += rng.uniform(cfg.min_sleep, cfg.max_sleep)
        offsets = []
        for index in range(len(message)):
            now += cfg.query_gap if index else 0.0
            offsets.append(now)
        times.append(offsets)
    return times


# ---------------------------------------------------------------------------
# reading queries (untrusted)


def _label_count(message: bytes, offset: int) -> tuple[int, int]:
    """Labels of the name at `offset` as sent, and the offset after the name.

    Only for names read_name accepted: its pointers only go backwards, so this walk ends.
    """
    count, end = 0, None
    while length := message[offset]:
        if length >= 0xC0:
            end = offset + 2 if end is None else end
            offset = (length & 0x3F) << 8 | message[offset + 1]
        else:
            count, offset = count + 1, offset + 1 + length
    return count, offset + 1 if end is None else end


def read_query(datagram: bytes) -> Message:
    """parse_message, plus the one check it cannot make: no label holds a dot.

    read_name gives a name as its labels joined by dots, so a label holding a dot (legal on the
    wire) reads as two labels, or as an empty one pack_name refuses: such a name can be neither
    echoed in an answer nor framed, and is malformed here (DnsError "label-with-dot").
    """
    message = parse_message(datagram)
    offset = 12  # the header's size: the questions follow it
    for name, _, _ in message.questions:
        labels, offset = _label_count(datagram, offset)
        if labels != (name.count(b".") + 1 if name else 0):
            raise DnsError("label-with-dot", repr(name[:80]))
        offset += 4  # qtype and qclass
    return message


# ---------------------------------------------------------------------------
# answers (pure: the authoritative server's reply to one datagram)


def downstream(seed: bytes, size: int) -> bytes:
    """Deterministic pseudo-random bytes standing in for a tunnel's downstream data (DET's
    answers and the modelled families' commands and tasks)."""
    out = b""
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return out[:size]


def _answer_records(name: bytes, qtype: int, cfg: DetConfig) -> list[Record]:
    encode, payload = ENCODINGS[cfg.encoding].encode, downstream(name, 120)
    label_name = _labels(encode(payload[:36]), 60) + "." + cfg.domain
    kind = cfg.response
    if kind == "a" and qtype == QTYPE["A"]:
        return [Record(name, QTYPE["A"], TTL, rdata_a(cfg.answer_ip))]
    if kind == "txt" and qtype == QTYPE["TXT"]:
        return [Record(name, QTYPE["TXT"], 0, rdata_txt(encode(payload).encode("latin-1")))]
    if kind == "cname":
        return [Record(name, QTYPE["CNAME"], 0, rdata_name(label_name))]
    if kind == "null" and qtype == QTYPE["NULL"]:
        return [Record(name, QTYPE["NULL"], 0, payload[: 64 + payload[0] % 57])]
    if kind == "mx" and qtype == QTYPE["MX"]:
        return [Record(name, QTYPE["MX"], 0, rdata_mx(10, label_name))]
    return []


def answer(query: bytes, cfg: DetConfig) -> bytes | None:
    """The server's response to a datagram; None for responses and unreadable headers."""
    try:
        message = read_query(query)
    except DnsError:
        if len(query) >= 12 and not query[2] & 0x80:
            return query[:2] + bytes([0x80 | (query[2] & 0x01), RCODE["FORMERR"]]) + bytes(8)
        return None
    if message.is_response or len(message.questions) != 1:
        return None if message.is_response else query[:2] + b"\x81\x01" + bytes(8)
    name, qtype, _ = message.questions[0]
    rd = bool(message.flags & 0x0100)
    lower = name.lower()
    domain = cfg.domain.encode()
    if not (lower == domain or lower.endswith(b"." + domain)):
        return pack_response(message.id, name, qtype, rcode=RCODE["REFUSED"], rd=rd)
    soa = Record(
        domain,
        QTYPE["SOA"],
        TTL,
        rdata_soa(f"ns1.{cfg.domain}", f"hostmaster.{cfg.domain}", 2026010101),
    )
    if cfg.response == "nxdomain":
        return pack_response(message.id, name, qtype, rcode=RCODE["NXDOMAIN"], rd=rd, aa=True,
                             authority=[soa])  # fmt: skip
    records = _answer_records(name, qtype, cfg)
    return pack_response(message.id, name, qtype, answers=records, rd=rd, aa=True,
                         authority=[] if records else [soa])  # fmt: skip
