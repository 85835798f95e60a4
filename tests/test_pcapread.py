"""exfil.pcapread: every format and link type against scapy, chunking, broken and hostile files.

Capture builders live in tests/fuzzing.py; the seeded mutation fuzzer in tests/test_fuzz.py."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from fuzzing import (
    ETHER,
    EXPECTED,
    T0,
    block,
    epb,
    everything,
    frames,
    idb,
    ip_packets,
    odd_frames,
    pcap_bytes,
    pcapng_bytes,
    query,
    rows_of,
    same_results,
    shb,
    tcp_stream,
    write_pcap,
    write_pcapng,
)
from scapy.all import DNS, IP, TCP, UDP, IPv6

from exfil.captures import capture_paths
from exfil.cli import UserError
from exfil.dnsparse import REASONS
from exfil.pcapread import read_dns


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
    eth, unknown = frames(1), block(0x0BAD, b"")  # pcapng: sections, blocks between packets
    blob = pcapng_bytes([(1, 6)], [(0, f) for f in eth[:5]]) + unknown
    blob += pcapng_bytes([(1, 9)], [], ">") + pcapng_bytes([(1, 6)], [(0, f) for f in eth])
    path.write_bytes(blob + unknown * 3)
    whole = rows_of(path)
    assert len(whole) == len(EXPECTED) + 5
    for chunk in range(1, 40):  # every way for a walk to end with the file
        assert rows_of(path, chunk_records=chunk) == whole, chunk


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
@pytest.mark.parametrize("chunk", [1, 3, 8192])
def test_fast_path_agrees_with_general_path(tmp_path: Path, chunk: int) -> None:
    eth = frames(1)
    mixed = [f for pair in zip(eth * 2, odd_frames() * 2, strict=False) for f in pair]
    path = write_pcap(tmp_path / "m.pcap", mixed + odd_frames(), 1)
    fast = everything(path, chunk_records=chunk)
    same_results(fast, everything(path, general_only=True, chunk_records=chunk))
    assert fast[2].count(b"a.example.com") >= 6 and b"c" * 60 + b".example" in fast[2]
    same_results(fast, everything(path, chunk_records=10**6))  # chunked == one shot


def test_window_reads_rows_and_clips_at_the_end() -> None:
    from exfil.pcapformat import window

    data = np.arange(50, dtype=np.uint8)
    starts = np.array([0, 7, 44, 49, 60])
    got = window(data, starts, 8)
    want = np.minimum(starts[:, None] + np.arange(8), 49)
    np.testing.assert_array_equal(got, data[want])
    np.testing.assert_array_equal(window(data[:5], starts[:2], 8), data[np.minimum(want[:2], 4)])
    assert window(data[:0], starts, 4).shape == (5, 4)


# --------------------------------------------------------------------------- audit regressions
def skipped(stats: dict) -> int:
    return sum(v for k, v in stats.items() if k not in ("records", "dns_packets"))


def timed_rows(path: Path) -> tuple[float, list]:
    """(best CPU seconds of three reads, rows): the machine running the tests is shared."""
    import time

    seconds = []
    for _ in range(3):
        start = time.process_time()
        got = rows_of(path)
        seconds.append(time.process_time() - start)
    return min(seconds), got


def test_pcapng_walk_is_linear_in_blocks(tmp_path: Path) -> None:
    """Another block after every packet (unknown type, interface, section) once made the walk
    look 8192 blocks ahead per packet: 82 s for 3.5 MB."""
    eth, n = bytes(ETHER / IP() / UDP(sport=9, dport=53) / query("a.example")), 2000
    packets = [epb(0, (T0 + i) * 10**6, eth) for i in range(n)]
    other = shb(">") + idb(1, 6, ">") + epb(0, T0 * 10**6, eth, ">")  # a section, other order
    mine = [shb() + idb(1) + b"".join(packets[i : i + 3]) + other for i in range(0, n, 4)]
    files = {
        "normal": shb() + idb(1) + b"".join(packets),
        "unknown": shb() + idb(1) + b"".join(p + block(0x0BAD, b"\0" * 4) for p in packets),
        "idb": shb() + idb(1) + b"".join(p + idb(1) for p in packets),
        "sections": b"".join(mine),  # byte order changing every 4 packets
    }
    (tmp_path / "warm.pcapng").write_bytes(files["normal"])
    timed_rows(tmp_path / "warm.pcapng")
    seconds = {}
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
        seconds[name], got = timed_rows(tmp_path / name)
        assert [r[1:] for r in got] == [(b"a.example", 1, 0)] * n, name
    assert all(s < 5 * seconds["normal"] + 0.5 for s in seconds.values()), seconds


def test_packet_blocks_match_interfaces_defined_before_them(tmp_path: Path) -> None:
    eth = bytes(ETHER / IP() / UDP(sport=9, dport=53) / query("a.example"))
    blob = shb() + idb(1) + epb(1, 0, eth) + idb(1) + epb(1, 0, eth) + epb(0, 0, eth)
    blob += shb() + epb(0, 0, eth) + idb(1) + epb(0, 0, eth)  # a new section: no interface yet
    stats: dict = {}
    assert [r[0] for r in rows_of(write(tmp_path, blob), stats=stats)] == [1, 2, 4]
    assert stats == {"records": 5, "dns_packets": 3, "bad-block": 2}


def write(folder: Path, blob: bytes, name: str = "x.pcapng") -> Path:
    (folder / name).write_bytes(blob)
    return folder / name


@pytest.mark.parametrize("code", [0x7F, 0xFF, 0x14, 0xC0, 0x40])
def test_absurd_tsresol_skips_that_interface(tmp_path: Path, code: int) -> None:
    """10^127 per second raised OverflowError; no 64-bit tick count can use 2^64 or more."""
    eth = bytes(ETHER / IP() / UDP(sport=9, dport=53) / query("a.example"))
    blob = shb() + idb(1, code) + idb(1) + epb(0, 5, eth) + epb(1, 7 * 10**6, eth)
    blob += block(3, struct.pack("<I", len(eth)) + eth)  # simple packet block: no timestamp
    stats: dict = {}
    assert [r[0] for r in rows_of(write(tmp_path, blob), stats=stats)] == [1, 2]
    assert stats == {"records": 3, "dns_packets": 2, "bad-tsresol": 1}


@pytest.mark.parametrize("code", [0, 0x80, 0x13, 0xBF, 0x86])
def test_extreme_but_usable_timestamps(tmp_path: Path, code: int) -> None:
    """Resolutions up to 10^19 and 2^63 per second, ticks up to 2^64 - 1 (read as negative)."""
    eth = bytes(ETHER / IP() / UDP(sport=9, dport=53) / query("a.example"))
    units = 2 ** (code & 0x7F) if code & 0x80 else 10**code
    ticks = [0, 2**63 + 12345, 2**64 - 1, units * T0 % 2**64]
    path = write(tmp_path, shb() + idb(1, code) + b"".join(epb(0, t, eth) for t in ticks))
    times = np.concatenate([b.time for b in read_dns(path)])
    np.testing.assert_allclose(times, [t / units for t in ticks], rtol=1e-12)


def test_malformed_blocks_are_counted_and_stop_reading(tmp_path: Path) -> None:
    eth = bytes(ETHER / IP() / UDP(sport=9, dport=53) / query("a.example"))
    good = shb() + idb(1, 6, snaplen=0) + epb(0, 0, eth)  # snaplen 0: no limit
    spb12 = struct.pack("<II", 3, 12) + struct.pack("<I", 12)  # SPB without its length field
    bad_trailer = epb(0, 0, eth)[:-4] + struct.pack("<I", 999)
    odd_length = struct.pack("<II", 6, 30) + bytes(22)
    epb_past_block = epb(0, 0, eth).replace(struct.pack("<I", len(eth)) * 2, b"\xff" * 8, 1)
    cases = {  # what follows a good packet -> (records, skip reason)
        spb12 + epb(0, 0, eth): (3, "bad-block"),  # read on after the SPB
        bad_trailer + epb(0, 0, eth): (2, "bad-block"),
        odd_length: (2, "bad-block"),
        epb_past_block: (2, "bad-block"),
        epb(0, 0, eth)[:-3]: (2, "truncated-record"),
        b"\x06\x00\x00\x00\x20": (2, "truncated-record"),
    }
    for tail, (records, reason) in cases.items():
        stats: dict = {}
        got = rows_of(write(tmp_path, good + tail), stats=stats)
        assert len(got) == records - 1 and stats == {
            "records": records, "dns_packets": records - 1, reason: 1
        }, (tail[:8], stats)  # fmt: skip


def test_every_record_is_counted_once(tmp_path: Path) -> None:
    """records = DNS rows + skips, with one record of every skip reason there is."""
    from scapy.all import ARP, ICMP

    ip, dns_head = IP(src="10.0.0.1", dst="10.0.0.2"), struct.pack(">6H", 7, 0, 1, 0, 0, 0)
    udp = [dns_head + tail for tail in (b"\x05ab", b"\x41" + bytes(70), b"\xc0\x0c" + bytes(4))]
    udp += [dns_head + (b"\x3f" + b"a" * 63) * 4, b"\x00\x01", bytes(12)]  # long, short, qd=0
    frames_ = [ETHER / ip / UDP(sport=9, dport=53) / payload for payload in udp] + [
        ETHER / ARP(), ETHER / IP(ihl=4) / UDP(dport=53), ETHER / IP(flags="MF") / UDP(dport=53),
        ETHER / ip / ICMP(), ETHER / ip / UDP(dport=53, len=7), ETHER / ip / UDP(sport=9, dport=80),
        ETHER / ip / TCP(dport=53), ETHER / ip / TCP(dport=53) / tcp_stream(bytes(query("a")))[:-3],
        ETHER / IPv6() / UDP(dport=53) / query("six.example"), ETHER / ip / UDP() / query("ok"),
    ]  # fmt: skip
    raw = [bytes(f) for f in frames_]
    blob = shb() + idb(147) + idb(1) + idb(1, 0x7F) + epb(0, 0, raw[0]) + epb(1, 0, b"")
    blob += b"".join(epb(1, 0, frame) for frame in raw) + epb(1, 0, raw[0][:10])
    blob += epb(2, 0, raw[-1]) + epb(7, 0, raw[-1]) + struct.pack("<3I", 3, 12, 12)  # SPB
    blob += epb(1, 0, raw[-1])[:-2]
    stats: dict = {}
    assert [r[1] for r in rows_of(write(tmp_path, blob), stats=stats)] == [b"six.example", b"ok"]
    assert stats["records"] == stats["dns_packets"] + skipped(stats), stats
    reasons = {"bad-block": 2, "bad-tsresol": 1, "zero-length": 1, "link-short": 1, "not-ip": 1,
               "unknown-link": 1, "ip-bad-header": 1, "ip-fragment": 1, "not-udp-tcp": 1,
               "l4-bad-header": 1, "other-port": 1, "tcp-empty": 1, "tcp-partial": 1,
               "truncated-record": 1}  # fmt: skip
    assert stats == {"records": 23, "dns_packets": 2, **reasons, **dict.fromkeys(REASONS, 1)}
    for cut in (3, 1000):  # pcap: a record header cut, a caplen too big to be true
        blob = pcap_bytes(raw[-1:] * 3, 1)
        blob = blob[:-cut] if cut < 100 else blob[:-4] + struct.pack("<I", 10**6) + blob[-4:]
        stats = {}
        rows_of(write(tmp_path, blob, "x.pcap"), stats=stats)
        assert stats["records"] == stats["dns_packets"] + skipped(stats), stats


def test_tcp_segments_yield_every_message(tmp_path: Path) -> None:
    """100 messages in one segment: 64 were read and 36 dropped uncounted."""
    names = [f"m{i}.example".encode() for i in range(170)]
    messages = [bytes(query(name.decode())) for name in names]
    cut = tcp_stream(*messages[100:], messages[0])[:-5]  # 70 messages, then a cut one
    segments = [tcp_stream(*messages[:100]), cut]
    frames_ = [bytes(ETHER / IP() / TCP(sport=9, dport=53) / s) for s in segments]
    stats: dict = {}
    got = rows_of(write_pcap(tmp_path / "t.pcap", frames_, 1), stats=stats)
    assert [r[1] for r in got] == names and [r[0] for r in got] == [0] * 100 + [1] * 70
    assert stats == {"records": 2, "dns_packets": 170, "tcp-partial": 1}
    extra = 100 + 71 - 2  # a segment of k items counts k - 1 times more than its record
    assert stats["records"] + extra == stats["dns_packets"] + skipped(stats)
