"""exfil/pcapwrite.py and exfil/sniff.py: frame headers, file formats, the live capture filter."""

from __future__ import annotations

import ipaddress
import os
import socket

import numpy as np
import pytest

from exfil.cli import UserError
from exfil.pcapwrite import CaptureWriter, write_udp_capture

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (AF_PACKET capture)")

# ---------------------------------------------------------------------------
# pcap writer


def test_writer_headers_checksums_and_stream(tmp_path):
    from scapy.all import IP, UDP, rdpcap

    payloads = [bytes([i]) * (i + 3) for i in range(50)]
    rng = np.random.default_rng(0)
    src = rng.integers(0, 2**32, 50, dtype=np.uint32)
    write_udp_capture(
        tmp_path / "a.pcap",
        np.arange(50, dtype=np.int64) * 1500,
        src,
        src[::-1],
        np.full(50, 5353),
        np.full(50, 53),
        payloads,
        ip_id=np.arange(50),
    )
    for packet, payload, address in zip(
        rdpcap(str(tmp_path / "a.pcap")), payloads, src, strict=True
    ):
        header = bytes(packet[IP])[:20]
        total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, 20, 2))
        assert (total & 0xFFFF) + (total >> 16) == 0xFFFF  # IPv4 checksum verifies
        assert bytes(packet[UDP].payload) == payload and packet[UDP].dport == 53
        assert packet[IP].src == str(ipaddress.IPv4Address(int(address)))
    for suffix in (".pcap", ".pcapng"):  # chunking never changes the bytes
        files = [tmp_path / f"chunk{size}{suffix}" for size in (7, 1 << 18)]
        for path, size in zip(files, (7, 1 << 18), strict=True):
            write_udp_capture(path, np.arange(50, dtype=np.int64) * 10**9, src, src, np.full(50, 1),
                              np.full(50, 53), payloads, chunk=size)  # fmt: skip
        assert files[0].read_bytes() == files[1].read_bytes()
    with CaptureWriter(tmp_path / "b.pcapng") as writer:
        for timestamp, frame in ((1.5, bytes(rdpcap(str(tmp_path / "a.pcap"))[0])),) * 3:
            writer.write(timestamp, frame)
    assert len(rdpcap(str(tmp_path / "b.pcapng"))) == 3


# ---------------------------------------------------------------------------
# live capture (root)


def test_sniff_unknown_interface():
    from exfil.sniff import Sniffer

    with pytest.raises(UserError, match="no such network interface"):
        Sniffer("nosuchif0")


@needs_root
def test_sniff_loopback_filters_ports_and_duplicates():
    from exfil.sniff import Sniffer

    keep: list = []
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.252", 53))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with Sniffer("lo", ports=(53,)) as sniffer:
        sniffer.start(None, keep)
        for index in range(5):
            client.sendto(b"q%d" % index, ("127.0.0.252", 53))
            client.sendto(b"other", ("127.0.0.252", 5999))
        sniffer.drain(0.2)
    server.close(), client.close()
    ours = [frame for _, frame in keep if frame[30:34] == socket.inet_aton("127.0.0.252")]
    assert sorted(frame[42:] for frame in ours) == [b"q%d" % i for i in range(5)]


# ---------------------------------------------------------------------------
# the kernel filter, run by a small classic-BPF interpreter


def _run_bpf(program: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """Interpret the opcodes exfil.sniff emits (ld abs/ind, ldx msh, jeq, jset, ret)."""
    a = x = pc = 0
    for _ in range(len(program) + 1):
        op, jt, jf, k = program[pc]
        size = {0x28: 2, 0x30: 1, 0x48: 2}.get(op)
        if size:
            at = k + (x if op == 0x48 else 0)
            if at + size > len(frame):
                return 0
            a, pc = int.from_bytes(frame[at : at + size], "big"), pc + 1
        elif op == 0xB1:
            x, pc = 4 * (frame[k] & 0x0F), pc + 1
        elif op in (0x15, 0x45):
            hit = a == k if op == 0x15 else bool(a & k)
            pc += 1 + (jt if hit else jf)
        elif op == 0x06:
            return k
    raise AssertionError("program did not return")


def _frame(proto: int, sport: int, dport: int, *, v6: bool = False, fragment: int = 0) -> bytes:
    l4 = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(16)
    if v6:
        ip = bytes([0x60, 0, 0, 0]) + len(l4).to_bytes(2, "big") + bytes([proto, 64]) + bytes(32)
        return bytes(12) + b"\x86\xdd" + ip + l4
    ip = (
        bytes([0x45, 0, 0, 40, 0, 0]) + fragment.to_bytes(2, "big") + bytes([64, proto]) + bytes(10)
    )
    return bytes(12) + b"\x08\x00" + ip + l4


def test_bpf_program_accepts_only_the_ports():
    from exfil.sniff import bpf_program, frame_ports

    program = bpf_program([53, 5300])
    cases = {
        _frame(17, 40000, 53): True, _frame(17, 53, 40000): True, _frame(6, 40000, 53): True,
        _frame(17, 40000, 5300): True, _frame(17, 40000, 53, v6=True): True,
        _frame(6, 53, 1234, v6=True): True, _frame(17, 40000, 5353): False,
        _frame(1, 40000, 53): False, _frame(17, 40000, 53, fragment=0x20): False,
        _frame(17, 40000, 443, v6=True): False, bytes(12) + b"\x08\x06" + bytes(28): False,
    }  # fmt: skip
    for frame, wanted in cases.items():
        assert bool(_run_bpf(program, frame)) == wanted, frame.hex()
        ports = frame_ports(frame)
        assert (ports is not None and bool({53, 5300} & set(ports[1:]))) == wanted
