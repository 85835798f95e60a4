"""exfil.pcapread: every format and link type against scapy, chunking, broken and hostile files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import DNS, DNSQR, DNSRR, IP, TCP, UDP, CookedLinux, Dot1AD, Dot1Q, Ether, IPv6

from exfil.captures import capture_paths
from exfil.cli import UserError
from exfil.pcapread import read_dns

ETHER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP look-ups
T0 = 1_700_000_000


def query(qname: str, qtype: str = "A", **kw) -> DNS:  # noqa: ANN003
    return DNS(id=kw.pop("id", 99), rd=1, qd=DNSQR(qname=qname, qtype=qtype), **kw)


def reply(qname: str, qtype: str = "A") -> DNS:
    return DNS(id=5, qr=1, qd=DNSQR(qname=qname, qtype=qtype), an=[DNSRR(rrname=qname, ttl=60)])


def ip_packets() -> list:
    """Network-layer packets: the DNS ones, and ones that must be skipped."""
    two = bytes(query("one.tcp.example")), bytes(query("two.tcp.example", "MX"))
    stream = b"".join(struct.pack(">H", len(m)) + m for m in two)
    return [
        IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=4000, dport=53) / query("a.example.com"),
        IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=53, dport=4000) / reply("a.example.com"),
        IPv6(src="fd00::1", dst="fd00::2")
        / UDP(sport=4001, dport=53)
        / query("six.example", "AAAA"),
        IP() / TCP(sport=4002, dport=53, flags="PA") / stream,
        IP() / TCP(sport=4002, dport=53, flags="A"),  # no payload
        IP() / UDP(sport=4003, dport=5353) / query("mdns.local"),  # other port unless asked
        IP(flags="MF") / UDP(sport=4004, dport=53) / query("frag.example"),
        IP() / UDP(sport=4005, dport=53) / b"\x00\x01",  # too short for DNS
        IP() / UDP(sport=4006, dport=53) / query("x" * 10 + ".TXT.example", "TXT"),
    ]


EXPECTED = [  # (position in ip_packets, qname, qtype, response) with ports (53,)
    (0, b"a.example.com", 1, 0),
    (1, b"a.example.com", 1, 1),
    (2, b"six.example", 28, 0),
    (3, b"one.tcp.example", 1, 0),
    (3, b"two.tcp.example", 15, 0),
    (8, b"xxxxxxxxxx.TXT.example", 16, 0),
]


def frames(linktype: int) -> list[bytes]:
    out = []
    for n, packet in enumerate(ip_packets()):
        raw, v6 = bytes(packet), packet.version == 6
        if linktype == 1:
            tags = [ETHER, ETHER / Dot1Q(vlan=7), ETHER / Dot1AD(vlan=3) / Dot1Q(vlan=9)]
            out.append(bytes(tags[n % 3] / packet))
        elif linktype == 113:
            out.append(bytes(CookedLinux(proto=0x86DD if v6 else 0x0800) / packet))
        elif linktype == 276:  # SLL2: protocol, reserved, ifindex, arphrd, type, halen, addr
            out.append(struct.pack(">HHIHBB8s", 0x86DD if v6 else 0x0800, 0, 1, 1, 0, 6, b"") + raw)
        elif linktype in (101, 12):
            out.append(raw)
        elif linktype == 0:  # BSD null: family in the writer's byte order; macOS IPv6 = 30
            out.append(struct.pack("<I", 30 if v6 else 2) + raw)
        elif linktype == 108:
            out.append(struct.pack(">I", 24 if v6 else 2) + raw)
    return out


def write_pcap(path: Path, records: list[bytes], linktype: int, order="<", ns=False) -> Path:  # noqa: ANN001
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    blob = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, frame in enumerate(records):
        frac = (i * 1000) * (1000 if ns else 1)
        blob += struct.pack(order + "IIII", T0 + i, frac, len(frame), len(frame)) + frame
    path.write_bytes(blob)
    return path


def block(kind: int, body: bytes, order: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return (
        struct.pack(order + "II", kind, 12 + len(body))
        + body
        + struct.pack(order + "I", 12 + len(body))
    )


def write_pcapng(path: Path, interfaces: list[tuple[int, int]], records, order="<") -> Path:  # noqa: ANN001
    """interfaces: (linktype, tsresol code); records: (interface, frame) or ("spb", frame)."""
    blob = block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)
    for linktype, resol in interfaces:
        options = struct.pack(order + "HHB3x", 9, 1, resol) + struct.pack(order + "HH", 0, 0)
        blob += block(1, struct.pack(order + "HHI", linktype, 0, 65535) + options, order)
    blob += block(4, b"\x00\x00\x00\x00", order)  # a name resolution block, ignored
    for i, (iface, frame) in enumerate(records):
        if iface == "spb":
            blob += block(3, struct.pack(order + "I", len(frame)) + frame, order)
            continue
        units = 10 ** interfaces[iface][1]
        ticks = (T0 + i) * units + i * units // 1000
        head = struct.pack(
            order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
        )
        blob += block(6, head + frame, order)
    path.write_bytes(blob)
    return path


def rows_of(path: Path, **kw) -> list[tuple]:  # noqa: ANN003
    out = []
    for b in read_dns(path, **kw):
        for i in range(len(b)):
            name = bytes(b.qname[i, : b.qlen[i]])
            out.append((int(b.record[i]), name, int(b.qtype[i]), int(b.response[i])))
    return out


def test_scapy_agrees_on_udp_dns(tmp_path: Path) -> None:
    from scapy.all import rdpcap

    path = write_pcap(tmp_path / "e.pcap", frames(1), 1)
    got = {r[0]: r[1:] for r in rows_of(path)}
    compared = 0
    for n, packet in enumerate(rdpcap(str(path))):
        if UDP in packet and DNS in packet and 53 in (packet[UDP].sport, packet[UDP].dport):
            if n in (6, 7):  # fragment and short payload are skipped by design
                assert n not in got
                continue
            qd = packet[DNS].qd[0]
            assert got[n] == (qd.qname.rstrip(b"."), qd.qtype, packet[DNS].qr), n
            compared += 1
    assert compared == 4


@pytest.mark.parametrize("linktype", [1, 113, 276, 101, 12, 0, 108])
@pytest.mark.parametrize("variant", ["us-le", "ns-be"])
def test_pcap_link_types(tmp_path: Path, linktype: int, variant: str) -> None:
    order, ns = ("<", False) if variant == "us-le" else (">", True)
    path = write_pcap(tmp_path / "x.pcap", frames(linktype), linktype, order, ns)
    stats: dict = {}
    assert rows_of(path, stats=stats) == [(p, *rest) for p, *rest in EXPECTED]
    assert stats["records"] == len(ip_packets()) and stats["dns_packets"] == len(EXPECTED)
    assert stats["ip-fragment"] == 1 and stats["other-port"] == 1 and stats["dns-short"] == 1
    times = np.concatenate([b.time for b in read_dns(path)])
    assert np.allclose(times, [T0 + p + p / 1000 for p, *_ in EXPECTED], atol=1e-6)


def test_extra_ports(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "x.pcap", frames(1), 1)
    names = [r[1] for r in rows_of(path, ports=(53, 5353))]
    assert b"mdns.local" in names and len(names) == len(EXPECTED) + 1


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_blocks(tmp_path: Path, order: str) -> None:
    eth, raw = frames(1), frames(101)
    records = [(i % 2, (eth if i % 2 == 0 else raw)[i]) for i in range(len(eth))]
    records.append(("spb", eth[0]))
    path = write_pcapng(tmp_path / "x.pcapng", [(1, 6), (101, 9)], records, order)
    got = rows_of(path)
    assert got[:-1] == EXPECTED and got[-1] == (len(eth), b"a.example.com", 1, 0)
    times = np.concatenate([b.time for b in read_dns(path)])
    assert np.allclose(times[:-1], [T0 + p + p / 1000 for p, *_ in EXPECTED], atol=1e-6)
    assert np.isnan(times[-1])  # simple packet blocks carry no time


def test_chunked_equals_one_shot(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "x.pcap", frames(1) * 7, 1)
    whole = rows_of(path)
    for chunk in (1, 2, 5, 13):
        assert rows_of(path, chunk_records=chunk) == whole


def test_not_a_capture_and_cut_header(tmp_path: Path) -> None:
    good = write_pcap(tmp_path / "g.pcap", frames(1), 1).read_bytes()
    for name, blob in {
        "text": b"hello world, not a capture",
        "cut": good[:20],
        "empty": b"",
    }.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(UserError):
            list(read_dns(path))


def test_truncated_last_record_is_counted(tmp_path: Path) -> None:
    good = write_pcap(tmp_path / "g.pcap", frames(1), 1).read_bytes()
    for cut in (5, 30):
        path = tmp_path / "t.pcap"
        path.write_bytes(good[:-cut])
        stats: dict = {}
        got = rows_of(path, stats=stats)
        assert stats["truncated-record"] == 1 and got == EXPECTED[:-1]


def test_capture_paths_folder_and_list(tmp_path: Path) -> None:
    a = write_pcap(tmp_path / "a.pcap", frames(1), 1)
    b = write_pcap(tmp_path / "b.pcap", frames(1), 1)
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "list.txt").write_text("b.pcap\n# comment\na.pcap\n")
    assert capture_paths([str(tmp_path)]) == [a, b]
    assert capture_paths([str(tmp_path / "list.txt")]) == [b, a]
    with pytest.raises(UserError):
        capture_paths([str(tmp_path / "missing.pcap")])


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
    assert stats["records"] <= 2 * len(ip_packets())


def test_zero_length_and_huge_caplen_records(tmp_path: Path) -> None:
    eth = frames(1)
    path = write_pcap(tmp_path / "z.pcap", [eth[0], b"", eth[1]], 1)
    stats: dict = {}
    assert [r[0] for r in rows_of(path, stats=stats)] == [0, 2]
    assert stats["zero-length"] == 1
    blob = bytearray(path.read_bytes())
    struct.pack_into("<I", blob, 24 + 16 + len(eth[0]) + 8, 10**9)  # second record's caplen
    path.write_bytes(bytes(blob))
    stats = {}
    assert [r[0] for r in rows_of(path, stats=stats)] == [0]
    assert stats["bad-caplen"] == 1


# --------------------------------------------------------------------------- fast path
FIELDS = ("record", "time", "ipver", "src", "dst", "sport", "dport", "proto", "l4_off",
          "msg_off", "msg_len", "qlen", "qtype", "response")  # fmt: skip


def everything(path: Path, general_only: bool = False, **kw) -> tuple[dict, dict, list]:  # noqa: ANN003
    """Every column of every batch, the stats, and the names; optionally with the fast path
    switched off (no record qualifies when no link type is Ethernet)."""
    import exfil.pcapread as pcapread

    real = pcapread._fast
    if general_only:
        pcapread._fast = lambda data, start, caplen, links, ports: real(
            data, start, caplen, np.full_like(links, -1), ports
        )
    try:
        stats: dict = {}
        columns: dict = {field: [] for field in FIELDS}
        names = []
        for b in read_dns(path, stats=stats, **kw):
            for field in FIELDS:
                columns[field].append(getattr(b, field))
            names += [bytes(b.qname[i, : b.qlen[i]]) for i in range(len(b))]
            assert not any(b.qname[i, b.qlen[i] :].any() for i in range(len(b)))
    finally:
        pcapread._fast = real
    joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}
    return joined, stats, names


def same_results(a: tuple, b: tuple) -> None:
    assert a[1] == b[1] and a[2] == b[2]
    for field in FIELDS:
        assert a[0][field].dtype == b[0][field].dtype, field
        np.testing.assert_array_equal(a[0][field], b[0][field], err_msg=field)


def odd_frames() -> list[bytes]:
    """Ethernet frames the fast path must leave alone, mixed with ones it takes."""
    udp = UDP(sport=4000, dport=53) / query("a.example.com")
    return [
        bytes(ETHER / IP(src="10.0.0.1", dst="10.0.0.2") / udp),
        bytes(ETHER / Dot1Q(vlan=5) / IP() / udp),  # tagged
        bytes(ETHER / IP(options=b"\x01\x01\x01\x01") / udp),  # IPv4 options
        bytes(ETHER / IP(flags="MF") / udp),  # fragment
        bytes(ETHER / IP() / UDP(sport=53, dport=53, len=7) / query("bad.len")),  # UDP len < 8
        bytes(ETHER / IP(len=30) / udp),  # IP total length cuts the UDP payload
        bytes(ETHER / IP() / UDP(sport=53, dport=9) / query("c" * 60 + ".example")),
        bytes(ETHER / IP() / udp)[:40],  # snaplen cut inside the UDP header
        bytes(ETHER / IP() / UDP(sport=1, dport=2) / query("other.port")),
    ]


@pytest.mark.parametrize("chunk", [1, 3, 8192])
def test_fast_path_agrees_with_general_path(tmp_path: Path, chunk: int) -> None:
    eth = frames(1)
    mixed = [f for pair in zip(eth * 2, odd_frames() * 2, strict=False) for f in pair]
    path = write_pcap(tmp_path / "m.pcap", mixed + odd_frames(), 1)
    fast = everything(path, chunk_records=chunk)
    same_results(fast, everything(path, general_only=True, chunk_records=chunk))
    assert fast[2].count(b"a.example.com") >= 6 and b"c" * 60 + b".example" in fast[2]
    same_results(fast, everything(path, chunk_records=10**6))  # chunked == one shot


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


def test_window_reads_rows_and_clips_at_the_end() -> None:
    from exfil.pcapformat import window

    data = np.arange(50, dtype=np.uint8)
    starts = np.array([0, 7, 44, 49, 60])
    got = window(data, starts, 8)
    want = np.minimum(starts[:, None] + np.arange(8), 49)
    np.testing.assert_array_equal(got, data[want])
    np.testing.assert_array_equal(window(data[:5], starts[:2], 8), data[np.minimum(want[:2], 4)])
    assert window(data[:0], starts, 4).shape == (5, 4)
