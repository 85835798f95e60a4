"""exfil.dnsparse: agreement with an independent scalar parser, hostile names, TTL offsets."""

from __future__ import annotations

import struct

import numpy as np
from fuzzing import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from exfil.dnsparse import REASONS, parse_questions, qtype_names, rr_ttl_offsets

HEADER = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)


def parse_many(messages: list[bytes]):  # noqa: ANN201
    """Lay messages end to end (with junk between) and parse them in one call."""
    blob, offs = bytearray(b"\xee" * 5), []
    for msg in messages:
        offs.append(len(blob))
        blob += msg + b"\xc0\x0c\x3f"  # junk after each message must never be read
    data = np.frombuffer(bytes(blob), dtype=np.uint8)
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    return parse_questions(data, np.array(offs, dtype=np.int64), lengths)


def check_against_reference(messages: list[bytes]) -> None:
    got = parse_many(messages)
    for i, msg in enumerate(messages):
        want = reference(msg)
        if want[0] != "ok":
            assert REASONS[got.reason[i]] == want[0], (msg, want)
            continue
        assert got.reason[i] == -1, (msg, REASONS[got.reason[i]])
        assert bytes(got.qname[i, : got.qlen[i]]) == want[1]
        assert not got.qname[i, got.qlen[i] :].any()
        assert (int(got.qtype[i]), int(got.response[i])) == (want[2], want[3])


def name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


def test_plain_and_compressed_names() -> None:
    question = name(b"www", b"example", b"com") + struct.pack(">HH", 16, 1)
    response = bytearray(HEADER + question)
    response[2] |= 0x80
    # nothing precedes the first question but the header, so a pointer there is never valid
    compressed = HEADER + b"\x01a\xc0\x0c" + struct.pack(">HH", 1, 1)
    messages = [HEADER + question, bytes(response), HEADER + b"\x00" + bytes(4), compressed]
    check_against_reference(messages)
    got = parse_many(messages)
    assert bytes(got.qname[0, : got.qlen[0]]) == b"www.example.com"
    assert got.qtype[0] == 16 and not got.response[0] and got.response[1]
    assert got.qlen[2] == 0 and got.reason[2] == -1  # the root name
    assert REASONS[got.reason[3]] == "dns-bad-pointer"


def test_hostile_names_are_rejected_with_their_reason() -> None:
    cases = {
        "dns-bad-pointer": [
            HEADER + b"\xc0\x0c" + bytes(4),  # points at itself: a loop
            HEADER + b"\xc0\x20" + bytes(40),  # forward
            HEADER + b"\xff\xff" + bytes(4),  # far out of range
            HEADER + b"\xc0\x02" + bytes(4),  # into the header
            HEADER + b"\x01a\xc0\x0e" + bytes(4),  # loops back onto its own pointer
        ],
        "dns-bad-label": [HEADER + b"\x40" + b"a" * 64 + b"\x00" + bytes(4)],
        "dns-name-too-long": [HEADER + name(*[b"a" * 63] * 5) + bytes(4)],
        "dns-truncated": [HEADER + b"\x05ab", HEADER + name(b"abc"), HEADER + b"\xc0"],
        "dns-short": [HEADER[:11]],
        "dns-no-question": [struct.pack(">HHHHHH", 1, 0, 0, 0, 0, 0) + name(b"a") + bytes(4)],
    }
    for reason, messages in cases.items():
        got = parse_many(messages)
        assert [REASONS[r] for r in got.reason] == [reason] * len(messages), reason
        assert not got.qname.any() and not got.qlen.any()
    check_against_reference([m for ms in cases.values() for m in ms])


def test_name_of_exactly_255_bytes_is_kept() -> None:
    labels = [b"a" * 63] * 3 + [b"b" * 61]  # 4 * 64 - 2 + 1 = 255 bytes on the wire
    msg = HEADER + name(*labels) + struct.pack(">HH", 1, 1)
    got = parse_many([msg])
    assert got.reason[0] == -1 and got.qlen[0] == 253


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=80), min_size=1, max_size=20))
def test_random_messages_agree_with_reference(tails: list[bytes]) -> None:
    messages = [HEADER + tail for tail in tails] + [tail for tail in tails if len(tail) < 12]
    check_against_reference(messages)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.binary(min_size=0, max_size=66), min_size=0, max_size=6),
            st.integers(0, 0xFFFF),
            st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=3),
        ),
        min_size=1,
        max_size=15,
    )
)
def test_mutated_names_agree_with_reference(specs: list) -> None:
    messages = []
    for labels, qtype, edits in specs:
        wire = b"".join(bytes([min(len(x), 255)]) + x for x in labels) + b"\x00"
        msg = bytearray(HEADER + wire + struct.pack(">HH", qtype, 1))
        for at, value in edits:  # stray pointers, bad lengths, truncation
            if at < len(msg):
                msg[at] = value
        messages.append(bytes(msg))
    check_against_reference(messages)


def test_ttl_offsets_cover_every_record() -> None:
    from scapy.all import DNS, DNSQR, DNSRR

    msg = bytes(
        DNS(
            id=7,
            qr=1,
            qd=DNSQR(qname="a.example.com"),
            an=[
                DNSRR(rrname="a.example.com", ttl=0x01020304, rdata="1.2.3.4"),
                DNSRR(rrname="a.example.com", ttl=0x05060708, rdata="5.6.7.8"),
            ],
            ns=[DNSRR(rrname="example.com", type="NS", ttl=0x0A0B0C0D, rdata="ns.example.com")],
        )
    )
    data = np.frombuffer(b"xx" + msg, dtype=np.uint8)
    rows, pos = rr_ttl_offsets(data, np.array([2]), np.array([len(msg)]))
    found = sorted(data[p : p + 4].tobytes() for p in pos)
    assert list(rows) == [0, 0, 0]
    assert found == sorted([b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", b"\x0a\x0b\x0c\x0d"])


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=300))
def test_ttl_walk_is_bounded_on_garbage(tail: bytes) -> None:
    msg = struct.pack(">HHHHHH", 1, 0, 3, 0xFFFF, 0xFFFF, 0xFFFF) + tail
    data = np.frombuffer(msg, dtype=np.uint8)
    rows, pos = rr_ttl_offsets(data, np.array([0]), np.array([len(msg)]))
    assert ((pos >= 12) & (pos + 4 <= len(msg))).all()


def test_qtype_names() -> None:
    assert qtype_names(np.array([1, 16, 65534, 28])) == ["A", "TXT", "TYPE65534", "AAAA"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.binary(min_size=1, max_size=63), min_size=0, max_size=8),
            st.integers(0, 6),
            st.sampled_from([b"", b"\xc0\x0c", b"\xc0\x0e", b"\x41x", b"\x05ab"]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_fast_pass_agrees_with_careful_pass(specs: list) -> None:
    """Plain names take a shortcut; the careful pass alone must give the same answers."""
    from exfil.dnsparse import _careful

    messages = []
    for labels, cut, tail in specs:
        wire = b"".join(bytes([len(x)]) + x for x in labels)
        messages.append((HEADER + wire + (tail or b"\x00") + b"\x00\x10\x00\x01")[: -cut or None])
    got = parse_many(messages)
    blob = b"\xee" * 5 + b"".join(m + b"\xc0\x0c\x3f" for m in messages)
    offs = np.cumsum([5] + [len(m) + 3 for m in messages[:-1]])
    lengths = np.array([len(m) for m in messages], dtype=np.int64)
    data = np.frombuffer(blob, dtype=np.uint8)
    want = _careful(data, offs, offs + lengths, np.zeros(len(messages), dtype=bool))
    for field in ("reason", "qlen", "qtype", "response"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    padded = []
    for names in (got.qname, want.qname):
        padded.append(np.zeros((len(messages), 256), dtype=np.uint8))
        padded[-1][:, : names.shape[1]] = names
    np.testing.assert_array_equal(padded[0], padded[1])
