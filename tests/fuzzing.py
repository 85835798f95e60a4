"""Test helpers shared by test_pcapread.py, test_dnsparse.py and test_fuzz.py.

Frames come from scapy (the independent reference); files are packed here by hand so a test
can put any value in any field: pcap in either byte order and unit, pcapng with several
interfaces, simple packet blocks, unknown blocks and sections. Also: a scalar reference DNS
question parser, readers that collect every column of read_dns, byte mutators, a time limit.
"""

from __future__ import annotations

import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from scapy.all import DNS, DNSQR, DNSRR, IP, TCP, UDP, CookedLinux, Dot1AD, Dot1Q, Ether, IPv6

from exfil.pcapread import read_dns

ETHER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP look-ups
T0 = 1_700_000_000
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)  # for overwrites


# --------------------------------------------------------------------------- packets
def query(qname: str, qtype: str = "A", **kw) -> DNS:  # noqa: ANN003
    return DNS(id=kw.pop("id", 99), rd=1, qd=DNSQR(qname=qname, qtype=qtype), **kw)


def reply(qname: str, qtype: str = "A") -> DNS:
    return DNS(id=5, qr=1, qd=DNSQR(qname=qname, qtype=qtype), an=[DNSRR(rrname=qname, ttl=60)])


def tcp_stream(*messages: bytes) -> bytes:
    """DNS over TCP payload: each message behind its 2-byte length."""
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def ip_packets() -> list:
    """Network-layer packets: the DNS ones, and ones that must be skipped."""
    stream = tcp_stream(bytes(query("one.tcp.example")), bytes(query("two.tcp.example", "MX")))
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
    """ip_packets() framed for `linktype` (Ethernet frames take 0, 1 or 2 VLAN tags in turn)."""
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


# --------------------------------------------------------------------------- DNS
def reference(msg: bytes) -> tuple[str, bytes, int, int] | tuple[str]:
    """Scalar parser from the rules in the exfil.dnsparse docstring: ("ok", name, type, qr)."""
    if len(msg) < 12:
        return ("dns-short",)
    if struct.unpack_from(">H", msg, 4)[0] == 0:
        return ("dns-no-question",)
    pos, floor, qend, labels, wire, jumps = 12, 12, None, [], 1, 0
    while True:
        if pos >= len(msg):
            return ("dns-truncated",)
        b = msg[pos]
        if b == 0:
            qend = pos + 1 if qend is None else qend
            break
        if b >= 0xC0:
            if pos + 2 > len(msg):
                return ("dns-truncated",)
            target = ((b & 0x3F) << 8) | msg[pos + 1]
            if target >= floor or target < 12 or jumps >= 64:
                return ("dns-bad-pointer",)
            qend = pos + 2 if qend is None else qend
            pos = floor = target
            jumps += 1
            continue
        if b >= 0x40:
            return ("dns-bad-label",)
        if pos + 1 + b > len(msg):
            return ("dns-truncated",)
        wire += b + 1
        if wire > 255:
            return ("dns-name-too-long",)
        labels.append(msg[pos + 1 : pos + 1 + b])
        pos += 1 + b
    if qend + 4 > len(msg):
        return ("dns-truncated",)
    return ("ok", b".".join(labels), struct.unpack_from(">H", msg, qend)[0], msg[2] >> 7)


# --------------------------------------------------------------------------- files
def pcap_bytes(records: list[bytes], linktype: int, order: str = "<", ns: bool = False) -> bytes:
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    blob = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, frame in enumerate(records):
        frac = (i * 1000) * (1000 if ns else 1)
        blob += struct.pack(order + "IIII", T0 + i, frac, len(frame), len(frame)) + frame
    return blob


def write_pcap(path: Path, records: list[bytes], linktype: int, order="<", ns=False) -> Path:  # noqa: ANN001
    path.write_bytes(pcap_bytes(records, linktype, order, ns))
    return path


def block(kind: int, body: bytes, order: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    size = struct.pack(order + "I", 12 + len(body))
    return struct.pack(order + "I", kind) + size + body + size


def shb(order: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def idb(linktype: int, resol: int = 6, order: str = "<", snaplen: int = 65535) -> bytes:
    options = struct.pack(order + "HHB3x", 9, 1, resol) + struct.pack(order + "HH", 0, 0)
    return block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + options, order)


def epb(iface: int, ticks: int, frame: bytes, order: str = "<") -> bytes:
    head = struct.pack(
        order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
    )
    return block(6, head + frame, order)


def pcapng_bytes(interfaces: list[tuple[int, int]], records, order: str = "<") -> bytes:  # noqa: ANN001
    """interfaces: (linktype, tsresol code); records: (interface, frame) or ("spb", frame)."""
    blob = shb(order) + b"".join(idb(link, resol, order) for link, resol in interfaces)
    blob += block(4, b"\x00\x00\x00\x00", order)  # a name resolution block, ignored
    for i, (iface, frame) in enumerate(records):
        if iface == "spb":
            blob += block(3, struct.pack(order + "I", len(frame)) + frame, order)
            continue
        code = interfaces[iface][1]
        units = 2 ** (code & 0x7F) if code & 0x80 else 10**code
        blob += epb(iface, (T0 + i) * units + i * units // 1000, frame, order)
    return blob


def write_pcapng(path: Path, interfaces: list[tuple[int, int]], records, order="<") -> Path:  # noqa: ANN001
    path.write_bytes(pcapng_bytes(interfaces, records, order))
    return path


# --------------------------------------------------------------------------- reading
def rows_of(path: Path, **kw) -> list[tuple]:  # noqa: ANN003
    out = []
    for b in read_dns(path, **kw):
        for i in range(len(b)):
            name = bytes(b.qname[i, : b.qlen[i]])
            out.append((int(b.record[i]), name, int(b.qtype[i]), int(b.response[i])))
    return out


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


# --------------------------------------------------------------------------- mutations
def header_fields(blob: bytes) -> tuple[int, ...]:
    """Offsets of the 32-bit header fields of every record (pcap) or block (pcapng)."""
    if blob[:4] != b"\x0a\x0d\x0d\x0a":
        order = "<" if blob[:4] == b"\xd4\xc3\xb2\xa1" or blob[:4] == b"\x4d\x3c\xb2\xa1" else ">"
        out, off = [], 24
        while off + 16 <= len(blob):
            out += range(off, off + 16, 4)
            off += 16 + struct.unpack_from(order + "I", blob, off + 8)[0]
        return tuple(out)
    out, off, order = [], 0, "<"
    while off + 12 <= len(blob):
        if blob[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            order = "<" if blob[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        kind, size = struct.unpack_from(order + "II", blob, off)
        head = size if kind in (0x0A0D0D0A, 1) else 28  # all of SHB and IDB, packet headers
        out += [*range(off, off + min(head, size - 4), 4), off + size - 4]
        off += size
    return tuple(out)


def mutate(blob: bytes, rng: np.random.Generator, edits: int = 3) -> bytes:
    """`edits` random damages: bit flips, 32-bit fields overwritten with extreme values,
    inserted or deleted bytes, a truncation. The first 24 bytes are spared half the time, so
    that most cases get past the file header and reach the record walk."""
    out = bytearray(blob)
    for _ in range(edits):
        low = 24 if rng.random() < 0.5 and len(out) > 32 else 0
        at = int(rng.integers(low, max(len(out), low + 1)))
        kind = rng.integers(5)
        if kind == 0 and at < len(out):
            out[at] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            value = int(rng.choice(EXTREMES)) if rng.random() < 0.7 else int(rng.integers(2**32))
            out[at : at + 4] = value.to_bytes(4, "little" if rng.random() < 0.5 else "big")
        elif kind == 2:
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif kind == 3:
            del out[at : at + int(rng.integers(1, 9))]
        else:
            del out[at + 1 :]
    return bytes(out)


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in the test if the block runs longer than `seconds` (SIGALRM)."""

    def fire(signum, frame) -> None:  # noqa: ANN001
        raise TimeoutError(f"{what} ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
