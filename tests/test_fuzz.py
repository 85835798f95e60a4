"""Seeded mutation fuzzing of the capture reader and the DNS question parsers.

    pytest -q tests/test_fuzz.py                              # a few seconds, in the default run
    EXFIL_FUZZ_CASES=1000000 pytest -q -s tests/test_fuzz.py  # the long run; prints a summary

EXFIL_FUZZ_CASES mutated packets in all: MESSAGE_SHARE of them DNS messages, parsed in batches
by exfil.dnsparse.parse_questions and one by one by exfil.dnsmsg.parse_message and scapy; the
rest packets of small captures (pcap and pcapng) damaged by bit flips, truncation, inserted or
deleted bytes and header fields overwritten with extreme values, then read by read_dns.
EXFIL_FUZZ_SEED picks another sequence; case k of a test is drawn from default_rng([seed, k]),
so a failure names the case that reproduces it. Every case runs under a time limit.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np
from fuzzing import (
    ETHER,
    EXPECTED,
    block,
    everything,
    frames,
    header_fields,
    mutate,
    odd_frames,
    pcap_bytes,
    pcapng_bytes,
    query,
    reference,
    reply,
    rows_of,
    same_results,
    tcp_stream,
    time_limit,
    write_pcap,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import DNS, DNSQR, DNSRR, IP, TCP

import exfil.netdecode as netdecode
from exfil.cli import UserError
from exfil.dnsmsg import DnsError, parse_message
from exfil.dnsparse import REASONS, parse_questions, rr_ttl_offsets
from exfil.pcapread import read_dns

CASES = int(os.environ.get("EXFIL_FUZZ_CASES", "3000"))  # mutated packets, all tests together
SEED = int(os.environ.get("EXFIL_FUZZ_SEED", "0"))
MESSAGE_SHARE = 0.8  # of CASES: DNS messages; the rest: packets in mutated captures
BATCH = 2000  # messages parsed together
CASE_SECONDS = 10.0  # a batch of messages, or one capture read four ways: a hang fails here
CHUNKS = (1, 2, 3, 4, 5, 6, 7, 9, 13, 8192)  # records per chunk read, drawn per capture
POINTER_BYTES = (0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFF)  # length-byte extremes
logging.getLogger("scapy").setLevel(logging.ERROR)  # mutated names warn on every other packet


# --------------------------------------------------------------------------- DNS messages
@cache
def message_seeds() -> tuple[bytes, ...]:
    """Well-formed messages: queries and responses, long and odd names, several questions."""
    names = ["a.example.com", "x" * 63 + ".y", ".".join(["a" * 63] * 3 + ["b" * 61]), "."]
    names += [b"\x00odd\xff.by\x2ctes", "w.EXAMPLE", "sub." * 30 + "net", "n"]
    out = [bytes(query(n, t)) for n in names for t in ("A", "TXT", "NULL", 65535)]
    out += [bytes(reply("r.example", "AAAA")), bytes(DNS(qd=[DNSQR(qname="q1"), DNSQR()]))]
    for n, name in enumerate(names[:4]):  # responses, plain and compressed, distinct TTLs
        answers = [DNSRR(rrname=name, ttl=n + 7, rdata="192.0.2.1")]
        answers += [DNSRR(rrname="b." + name, type="CNAME", ttl=2**31 + n, rdata=name)]
        packet = DNS(id=n, qr=1, qd=DNSQR(qname=name), an=answers)
        out += [bytes(packet), bytes(packet.compress())]
    return tuple(out)


def mutate_message(msg: bytes, rng: np.random.Generator) -> bytes:
    """One to four damages aimed at the header counts, length bytes and pointers."""
    out = bytearray(msg)
    for _ in range(int(rng.integers(1, 5))):
        at, kind = int(rng.integers(0, max(len(out), 1))), int(rng.integers(7))
        if kind == 0 and at < len(out):
            out[at] ^= 1 << int(rng.integers(8))
        elif kind == 1 and at < len(out):
            out[at] = int(rng.choice(POINTER_BYTES))
        elif kind == 2:  # a compression pointer anywhere, to anywhere near
            out[at : at + 2] = bytes([0xC0 | int(rng.integers(0, 2)), int(rng.integers(256))])
        elif kind == 3 and len(out) >= 6:
            out[4:6] = struct.pack(">H", int(rng.choice([0, 1, 2, 64, 65, 0xFFFF])))
        elif kind == 4:
            del out[at:]
        elif kind == 5:
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 70)), dtype=np.uint8).tobytes()
        else:
            del out[at : at + int(rng.integers(1, 9))]
    return bytes(out)


def check_question(msg: bytes, reason: int, name: bytes, qtype: int, qr: int, tally: dict,
                   ttls: list | None = None) -> None:  # fmt: skip
    """One parsed message against the scalar reference, exfil.dnsmsg and scapy; `ttls`: what
    rr_ttl_offsets found, checked against dnsmsg's answers when there is nothing else."""
    want = reference(msg)
    if want[0] != "ok":
        assert reason >= 0 and REASONS[reason] == want[0], (msg.hex(), want)
    else:
        assert reason == -1 and (name, qtype, qr) == want[1:], (msg.hex(), want, name)
    try:
        parsed = parse_message(msg)
    except DnsError:
        parsed = None  # the only exception allowed
    if parsed and parsed.questions and reason == -1:
        assert parsed.questions[0][:2] == (name, qtype), (msg.hex(), parsed.questions[0])
        tally["dnsmsg-agreed"] += 1
    if parsed and ttls is not None and msg[8:12] == bytes(4):  # no authority, no additional
        assert ttls == [record.ttl for record in parsed.answers], (msg.hex(), ttls)
        tally["ttls-agreed"] += len(ttls)
    try:
        scapy = DNS(msg).qd if len(msg) >= 12 else None
    except Exception:  # scapy gives up on some, e.g. over conf.max_list_count questions
        scapy = None
    if scapy and isinstance(scapy[0], DNSQR) and reason == -1:
        assert (scapy[0].qname, scapy[0].qtype) == (name + b".", qtype), (msg.hex(), scapy[0])
        tally["scapy-agreed"] += 1
    elif reason == -1:
        tally["scapy-failed-we-parsed"] += 1


def ttl_lists(data: np.ndarray, offs: np.ndarray, lengths: list[int]) -> list[list[int]]:
    """Per message, the TTLs at the offsets rr_ttl_offsets gives (checked to lie inside)."""
    rows, at = rr_ttl_offsets(data, offs, np.array(lengths))
    assert ((at >= offs[rows] + 12) & (at + 4 <= offs[rows] + np.array(lengths)[rows])).all()
    out: list[list[int]] = [[] for _ in lengths]
    for row, pos in zip(rows.tolist(), at.tolist(), strict=True):
        out[row].append(int.from_bytes(data[pos : pos + 4].tobytes(), "big"))
    return out


def test_fuzz_dns_questions() -> None:
    """parse_questions never raises, stays in range and agrees with three other parsers."""
    seeds, total = message_seeds(), 0
    tally = dict.fromkeys(("dnsmsg-agreed", "ttls-agreed", "scapy-agreed"), 0)
    tally["scapy-failed-we-parsed"] = 0
    started = time.perf_counter()
    wanted = max(1, round(CASES * MESSAGE_SHARE))
    for batch in range(-(-wanted // BATCH)):
        rng = np.random.default_rng([SEED, 1, batch])
        size = min(BATCH, wanted - batch * BATCH)
        msgs = [mutate_message(seeds[i], rng) for i in rng.integers(0, len(seeds), size)]
        blob, offs = bytearray(b"\xee" * 3), []
        for msg in msgs:  # end to end, with bytes after each that must never be read
            offs.append(len(blob))
            blob += msg + b"\xc0\x0c\x3f"
        with time_limit(CASE_SECONDS, f"message batch {batch}"):
            data = np.frombuffer(bytes(blob), dtype=np.uint8)
            got = parse_questions(data, np.array(offs), np.array([len(m) for m in msgs]))
            qlen, width = got.qlen, got.qname.shape[1]
            assert ((got.reason >= -1) & (got.reason < len(REASONS))).all()
            assert ((qlen >= 0) & (qlen <= min(width, 253))).all() and width <= 256
            assert not (got.qname * (np.arange(width) >= qlen[:, None])).any()  # zero padding
            ttls = ttl_lists(data, np.array(offs), [len(m) for m in msgs])
            for i, msg in enumerate(msgs):
                name = bytes(got.qname[i, : qlen[i]])
                fields = int(got.qtype[i]), int(got.response[i])
                check_question(msg, int(got.reason[i]), name, *fields, tally, ttls[i])
        total += len(msgs)
    seconds = time.perf_counter() - started
    print(f"\nfuzz dns: {total} messages in {seconds:.1f} s, {tally}")
    assert tally["scapy-agreed"] > total // 20  # the mutations leave enough parsable names


# --------------------------------------------------------------------------- captures
@cache
def capture_seeds() -> tuple[tuple[bytes, tuple[int, ...], int], ...]:
    """(file, offsets of its header fields, records) of small valid captures of every shape."""
    many = tcp_stream(*[bytes(query(f"t{i}.example")) for i in range(netdecode.TCP_ROUNDS + 6)])
    eth = frames(1) + odd_frames() + [bytes(ETHER / IP() / TCP(dport=53) / many)]
    mixed = [(i % 2, f) for i, f in enumerate(frames(1))] + [("spb", eth[0])]
    files = [
        pcap_bytes(eth, 1),
        pcap_bytes(frames(101), 101, ">", True),
        pcapng_bytes([(1, 6), (1, 9)], [(0, f) for f in eth]) + block(5, bytes(16)),  # an ISB
        pcapng_bytes([(1, 6), (101, 0x8A)], mixed, ">") + block(5, bytes(8), ">") * 2,
        pcapng_bytes([(1, 6), (1, 6)], mixed[:4]) + pcapng_bytes([(1, 9)], [(0, eth[1])], ">"),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        path, out = Path(scratch) / "seed", []
        for blob in files:
            path.write_bytes(blob)
            stats: dict = {}
            assert sum(len(b) for b in read_dns(path, stats=stats)) > 0
            out.append((blob, header_fields(blob), stats["records"]))
    return tuple(out)


def mutate_capture(blob: bytes, fields: tuple[int, ...], rng: np.random.Generator) -> bytes:
    """An extreme value in a header field (half the time), then one to three random damages."""
    out = bytearray(blob)
    if rng.random() < 0.5:
        at = int(rng.choice(fields))
        if rng.random() < 0.3:  # one byte: tsresol codes, link types, version nibbles
            out[at + int(rng.integers(4))] = int(rng.choice([0x7F, 0xFF, 0x13, 0x14, 0xBF, 0xC0]))
        else:
            value = int(rng.choice([0, 1, 11, 12, 13, 16, 0x7FFFFFFF, 0xFFFFFFFC, 0xFFFFFFFF]))
            out[at : at + 4] = value.to_bytes(4, "little" if rng.random() < 0.5 else "big")
    return mutate(bytes(out), rng, int(rng.integers(1, 4)))


def read_counted(path: Path, chunk: int) -> tuple[tuple, dict, int]:
    """everything() of a read, with the extra items of TCP segments that carry several: a
    segment of k pairs (messages or a cut one) counts k - 1 times more than its record."""
    real, extra = netdecode._tcp_messages, [0]

    def spy(data, pos, stop, stats) -> tuple:  # noqa: ANN001
        partial = stats.get("tcp-partial", 0)
        found = real(data, pos, stop, stats)
        extra[0] += len(found[0]) + stats.get("tcp-partial", 0) - partial - len(pos)
        return found

    netdecode._tcp_messages = spy
    try:
        result = everything(path, chunk_records=chunk)
    finally:
        netdecode._tcp_messages = real
    return result, result[1], extra[0]


def check_capture(path: Path, size: int, chunk: int, tally: dict) -> None:
    """Rows in range, every record counted once, the same rows whatever the path or chunk."""
    (columns, stats, names), _, extra = read_counted(path, chunk)
    skipped = sum(v for k, v in stats.items() if k not in ("records", "dns_packets"))
    assert stats["records"] + extra == stats["dns_packets"] + skipped, stats
    record, start, length = columns["record"], columns["msg_off"], columns["msg_len"]
    assert ((record >= 0) & (record < stats["records"])).all() and (np.diff(record) >= 0).all()
    assert ((columns["l4_off"] >= 0) & (start >= columns["l4_off"] + 2)).all()
    assert ((length >= 12) & (start + length <= size)).all()
    assert np.isin(columns["ipver"], (4, 6)).all() and np.isin(columns["proto"], (6, 17)).all()
    assert ((columns["qlen"] >= 0) & (columns["qlen"] <= 253)).all()
    data = np.fromfile(path, dtype=np.uint8)
    for i, name in enumerate(names):
        msg = data[start[i] : start[i] + length[i]].tobytes()
        fields = int(columns["qtype"][i]), int(columns["response"][i])
        check_question(msg, -1, name, *fields, tally)
    same_results((columns, stats, names), everything(path, general_only=True, chunk_records=chunk))
    same_results((columns, stats, names), everything(path, chunk_records=1 + chunk % 7))
    tally["rows"] += len(names)


def test_fuzz_capture_reader() -> None:
    """read_dns on damaged captures: a UserError at most, never a hang, sound rows and counts."""
    seeds = capture_seeds()
    per_case = np.mean([records for _, _, records in seeds])
    cases = max(len(seeds), round(CASES * (1 - MESSAGE_SHARE) / per_case))
    tally = dict.fromkeys(("rows", "user-error", "dnsmsg-agreed", "ttls-agreed", "scapy-agreed"), 0)
    tally["scapy-failed-we-parsed"], started = 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "case"
        for case in range(cases):
            rng = np.random.default_rng([SEED, 2, case])
            blob, fields, _ = seeds[case % len(seeds)]
            damaged = mutate_capture(blob, fields, rng)
            path.write_bytes(damaged)
            try:
                with time_limit(CASE_SECONDS, f"capture case {case}"):
                    check_capture(path, len(damaged), int(rng.choice(CHUNKS)), tally)
            except UserError:
                tally["user-error"] += 1  # the file header is gone: the documented outcome
    seconds = time.perf_counter() - started
    print(f"\nfuzz captures: {cases} captures ({cases * per_case:.0f} packets) in ", end="")
    print(f"{seconds:.1f} s, {tally}")
    assert tally["rows"] > cases  # most damage leaves most packets readable


# --------------------------------------------------------------------------- hypothesis
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=4)), max_size=6),
    st.integers(0, 10_000),
)
def test_hostile_capture_bytes_never_crash(edits: list, cut: int) -> None:
    """Random overwrites (caplen huge or zero, bad lengths, garbage headers) and truncation."""
    import tempfile

    base = write_pcap(Path(tempfile.mkdtemp()) / "h.pcap", frames(1) * 2, 1)
    blob = bytearray(base.read_bytes())
    for at, value in edits:
        at = at % len(blob)
        blob[at : at + len(value)] = value
    blob = blob[: max(len(blob) - cut, 0)] if cut % 3 == 0 else blob
    base.write_bytes(bytes(blob))
    stats: dict = {}
    try:
        got = rows_of(base, stats=stats, chunk_records=4)
    except UserError:
        return  # header destroyed: a one-line error, the documented outcome
    assert len(got) <= 2 * len(EXPECTED) + 4
    assert all(len(name) <= 253 for _, name, _, _ in got)
    # an edited length field can cut one record into several: bounded by 16-byte record headers
    assert stats["records"] <= len(blob) // 16 + 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 4_000), st.binary(min_size=1, max_size=3)), max_size=6))
def test_fast_path_agrees_with_general_path_on_damaged_frames(edits: list) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = write_pcap(Path(scratch) / "d.pcap", frames(1) + odd_frames(), 1)
        blob = bytearray(path.read_bytes())
        for at, value in edits:  # keep the file header, damage the frames
            at = 24 + at % (len(blob) - 24)
            blob[at : at + len(value)] = value
        path.write_bytes(bytes(blob))
        fast = everything(path, chunk_records=5)
        same_results(fast, everything(path, general_only=True, chunk_records=5))
