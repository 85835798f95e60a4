"""Modelled tunnel families, part 3: DNSExfiltrator (Arno0x) and other label encodings.

From the tool's public description: the file is zipped in memory, optionally RC4-encrypted
with a password, encoded in base64url (or base32), and sent as TXT queries, first
`init.<base32 of "filename|chunk count">.<encoding>.<domain>`, then `<chunk index>.<data in
labels of at most -l characters>.<domain>` filling names up to -r characters; the server
answers each with a TXT record. Besides base64url and base32 (upper case, as the tool writes
it, or lower), `raw8` carries 7 bits in each label byte 0x80-0xff, as raw DNS tunnels do.
"""

from __future__ import annotations

import base64
import io
import random
import zipfile
from collections.abc import Callable, Iterable

from data_generating_codes.families_wire import (
    Built,
    FamilyConfig,
    Query,
    Responder,
    fit,
    labels,
    pick,
    reply,
    soa,
    text_of,
)
from exfil.cli import UserError
from exfil.dnsmsg import QTYPE, RCODE, Record, rdata_txt

_RAW8 = bytes(range(0x80, 0x100)).decode("latin-1")  # 7 bits per label byte, all >= 0x80


def rc4(key: bytes, data: bytes) -> bytes:
    """RC4 (the tool's optional encryption); its own inverse."""
    box, j = list(range(256)), 0
    for i in range(256):
        j = (j + box[i] + key[i % len(key)]) & 0xFF
        box[i], box[j] = box[j], box[i]
    out, i, j = bytearray(len(data)), 0, 0
    for n, byte in enumerate(data):
        i = (i + 1) & 0xFF
        j = (j + box[i]) & 0xFF
        box[i], box[j] = box[j], box[i]
        out[n] = byte ^ box[(box[i] + box[j]) & 0xFF]
    return bytes(out)


def raw8_encode(data: bytes) -> str:
    """7 bytes -> 8 label bytes 0x80-0xff (a short last group: ceil(8k/7) of them)."""
    out = []
    for start in range(0, len(data), 7):
        group = data[start : start + 7]
        chars = (8 * len(group) + 6) // 7
        value = int.from_bytes(group, "big") << (7 * chars - 8 * len(group))
        out += [_RAW8[(value >> 7 * (chars - 1 - k)) & 0x7F] for k in range(chars)]
    return "".join(out)


def raw8_decode(text: str) -> bytes:
    out = bytearray()
    for start in range(0, len(text), 8):
        group, value = text[start : start + 8], 0
        for char in group:
            if not 0x80 <= ord(char) <= 0xFF:
                raise ValueError("raw8 character below 0x80")
            value = value << 7 | (ord(char) - 0x80)
        size = 7 * len(group) // 8
        out += (value >> (7 * len(group) - 8 * size)).to_bytes(size, "big")
    return bytes(out)


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


def _unpad(text: str, block: int) -> str:
    return text + "=" * (-len(text) % block)


_CODECS: dict[str, tuple[Callable[[bytes], str], Callable[[str], bytes], str]] = {
    "base64url": (lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
                  lambda t: base64.urlsafe_b64decode(_unpad(t, 4)), "base64"),
    "base32": (_b32, lambda t: base64.b32decode(_unpad(t.upper(), 8)), "base32"),
    "base32lower": (lambda b: _b32(b).lower(),
                    lambda t: base64.b32decode(_unpad(t.upper(), 8)), "base32"),
    "raw8": (raw8_encode, raw8_decode, "raw8"),
}  # fmt: skip  # encoding -> (encode, decode, the init name's encoding label)


def _zip(filename: str, data: bytes) -> bytes:
    """An in-memory zip of the one file, with a fixed date so a seed gives the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(filename, date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def plan_dnsexfiltrator(data: bytes, filename: str, cfg: FamilyConfig,
                        rng: random.Random) -> tuple[str, list[Query]]:  # fmt: skip
    """init with name and chunk count, then `<index>.<data labels>.<domain>`, all TXT."""
    encode, _, kind = _CODECS[cfg.encoding]
    text = encode(rc4(cfg.passphrase.encode(), _zip(filename, data)))
    suffix, chunks, start = "." + cfg.domain, [], 0
    while start < len(text):
        size = fit(cfg.name - len(str(len(chunks))) - 1 - len(suffix), cfg.label)
        if size < 1:
            raise UserError(f"domain {cfg.domain!r} too long for {cfg.style}")
        chunks.append(text[start : start + size])
        start += size
    head = _b32(f"{filename}|{len(chunks)}".encode())
    head = head if cfg.encoding == "base32" else head.lower()
    queries = [(f"init.{labels(head, 63)}.{kind}{suffix}", "TXT", 0.0)]
    for index, chunk in enumerate(chunks):
        name = f"{index}.{labels(chunk, cfg.label)}{suffix}"
        queries.append((name, pick(rng, cfg.qtypes), rng.uniform(*cfg.query_gap)))
    return "", queries


def dnsexfiltrator_responder(cfg: FamilyConfig) -> Responder:
    """TXT "OK" to every query under the domain, as the tool's server acknowledges them."""
    suffix = b"." + cfg.domain.encode()

    def build(name: bytes, qtype: int) -> Built:
        if not name.lower().endswith(suffix):
            return RCODE["REFUSED"], [], []
        if qtype != QTYPE["TXT"]:
            return 0, [], [soa(cfg.domain)]
        return 0, [Record(name, QTYPE["TXT"], 0, rdata_txt("OK"))], []

    return lambda query: reply(query, build)


def receive_dnsexfiltrator(names: Iterable[str | bytes], cfg: FamilyConfig) -> bytes:
    """Chunks by index, decoded, RC4-decrypted and unzipped (the file inside the zip)."""
    _, decode, _ = _CODECS[cfg.encoding]
    suffix, chunks, count = "." + cfg.domain, {}, None
    for name in names:
        body = text_of(name)[: -len(suffix)]
        first, _, rest = body.partition(".")
        if first.lower() == "init":
            head = rest.rpartition(".")[0].replace(".", "").upper()
            count = int(base64.b32decode(_unpad(head, 8)).decode().rpartition("|")[2])
        else:
            chunks[int(first)] = rest.replace(".", "")
    if count is None:
        raise ValueError("no init query")
    blob = rc4(cfg.passphrase.encode(), decode("".join(chunks[i] for i in range(count))))
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return archive.read(archive.namelist()[0])
