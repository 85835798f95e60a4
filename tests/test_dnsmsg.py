"""Scalar DNS packing agrees with scapy; parsing untrusted bytes is bounded and never hangs."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS

from exfil.dnsmsg import (
    QTYPE,
    DnsError,
    Record,
    pack_name,
    pack_query,
    pack_response,
    parse_message,
    qtype_name,
    qtype_number,
    rdata_a,
    rdata_mx,
    rdata_name,
    rdata_txt,
)


def test_query_and_response_decode_in_scapy():
    query = pack_query(0xBEEF, "www.example.com", QTYPE["MX"])
    decoded = DNS(query)
    assert decoded.id == 0xBEEF and decoded.qr == 0 and decoded.rd == 1
    assert decoded.qd[0].qname == b"www.example.com." and decoded.qd[0].qtype == 15
    answers = [
        Record("www.example.com", QTYPE["CNAME"], 300, rdata_name("edge.cdn.example.net")),
        Record("edge.cdn.example.net", QTYPE["A"], 60, rdata_a("198.51.100.7")),
        Record("www.example.com", QTYPE["MX"], 60, rdata_mx(10, "mx.example.com")),
        Record("www.example.com", QTYPE["TXT"], 60, rdata_txt("v=spf1 -all")),
    ]
    response = pack_response(0xBEEF, "www.example.com", QTYPE["A"], answers=answers)
    decoded = DNS(response)
    assert decoded.qr == 1 and decoded.ancount == 4
    assert [a.type for a in decoded.an] == [5, 1, 15, 16]
    assert decoded.an[1].rdata == "198.51.100.7"
    parsed = parse_message(response)
    assert parsed.is_response and parsed.questions == [(b"www.example.com", 1, 1)]
    assert [(a.name, a.ttl) for a in parsed.answers][:2] == [
        (b"www.example.com", 300),
        (b"edge.cdn.example.net", 60),
    ]


def test_nxdomain_rcode():
    response = pack_response(1, "x.example", QTYPE["A"], rcode=3)
    assert parse_message(response).rcode == 3 and DNS(response).rcode == 3


def test_pack_name_rejects_illegal_sizes():
    with pytest.raises(ValueError):
        pack_name("a" * 64 + ".com")
    with pytest.raises(ValueError):
        pack_name(".".join(["a" * 63] * 4) + ".com")
    assert pack_name(".".join(["a" * 63] * 3) + ".co")[-1] == 0


def test_qtype_names_round_trip():
    assert qtype_name(65) == "HTTPS" and qtype_name(65534) == "TYPE65534"
    assert qtype_number("TYPE65534") == 65534 and qtype_number("txt") == 16


def header(qdcount: int = 1, ancount: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 1, 0x0100, qdcount, ancount, 0, 0)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc0\x0c\x00\x01\x00\x01", "pointer-loop"),  # points at itself
        (b"\xc0\x20\x00\x01\x00\x01", "pointer-out-of-range"),  # forward, past the end
        (b"\x03abc\xc0\x0c", "pointer-loop"),  # back to its own start
        (b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", "bad-label-type"),  # 64-byte label
        (b"\x05ab", "truncated-name"),
        ((b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01", "name-too-long"),
    ],
)
def test_hostile_names_are_rejected_with_reason(body, reason):
    with pytest.raises(DnsError) as error:
        parse_message(header() + body)
    assert error.value.reason == reason


def test_truncated_header_and_huge_counts():
    with pytest.raises(DnsError, match="truncated-header"):
        parse_message(b"\x00" * 11)
    with pytest.raises(DnsError, match="too-many-records"):
        parse_message(header(qdcount=65535))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_parse_or_raise_dns_error(body):
    try:
        parsed = parse_message(header(qdcount=2, ancount=2) + body)
    except DnsError:
        return
    for name, _, _ in parsed.questions:
        assert len(name) <= 255


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=63).filter(lambda b: b"." not in b), max_size=3))
def test_name_round_trip(labels):
    name = b".".join(labels)
    message = header() + pack_name(name) + b"\x00\x01\x00\x01"
    assert parse_message(message).questions[0][0] == name
