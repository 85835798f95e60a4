"""exfil/packets.py: the numpy CSV formatting against a slow, straightforward reference."""

from __future__ import annotations

import csv
import io
import ipaddress
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw

from exfil import numtext as nt
from exfil import packets as pk
from exfil.dnsmsg import pack_query, pack_response
from exfil.dnsparse import QTYPE_NAMES, qtype_names
from exfil.pcapread import read_dns

ROOT = Path(__file__).resolve().parents[1]
ETHER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
T0 = 1_700_000_000


# -----------------------------------------------------------------------------
# the reference: one Python row at a time, as ld.py spelled packets.csv before


def ref_name(raw: bytes) -> str:
    bad = set(range(0x21)) | set(range(0x7F, 256)) | set(b'\\,"')
    return "".join(f"\\{b:03d}" if b in bad else chr(b) for b in raw) or "."


def ref_address(row: np.ndarray) -> str:
    address = ipaddress.IPv6Address(row.tobytes())
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else address.compressed


def ref_capture(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n\r') else name


def ref_rows(capture: str, batch, label: np.ndarray) -> str:  # noqa: ANN001
    names = {int(code): QTYPE_NAMES.get(int(code), f"TYPE{int(code)}") for code in batch.qtype}
    out = []
    for i in range(len(batch)):
        fields = [
            ref_capture(capture),
            str(int(batch.record[i])),
            "%.6f" % float(batch.time[i]),  # noqa: UP031 (the rule both files follow)
            ref_address(batch.src[i]),
            ref_address(batch.dst[i]),
            str(int(batch.sport[i])),
            str(int(batch.dport[i])),
            ref_name(batch.qname[i, : batch.qlen[i]].tobytes()),
            names[int(batch.qtype[i])],
            str(int(batch.response[i])),
            str(int(label[i])),
        ]
        out.append(",".join(fields) + "\n")
    return "".join(out)


# -----------------------------------------------------------------------------
# field formatters


def test_format_int_matches_str() -> None:
    rng = np.random.default_rng(1)
    cases = [
        np.array([0]),
        np.array([0, 7, 10, 99, 100, 999, 1000, 1001, 65535]),
        T0 + rng.integers(0, 5000, 300),  # shared leading digits
        rng.integers(0, 10 ** rng.integers(1, 19, 300)),
        np.array([10**18, 999_999_999_999_999_999, 1]),
        np.arange(65536, dtype=np.uint16),
    ]
    for values in cases:
        assert pk.strings(nt.format_int(values)) == [str(int(v)) for v in values]
    with pytest.raises(ValueError):
        nt.format_int(np.array([-1]))
    assert nt.format_int(np.zeros(0, np.int64)).shape[0] == 0


def test_format_fixed6_is_percent_format() -> None:
    rng = np.random.default_rng(2)
    micros = T0 + rng.integers(0, 10**6, 2000) + rng.integers(0, 10**6, 2000) / 1e6
    nanos = T0 + rng.integers(0, 10**9, 2000) / 1e9
    ties = np.array([k / 128 for k in range(-3, 300)] + [T0 + 2.5e-7 * 4, 0.5e-6, 1.5e-6])
    odd = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -1.25, 1e300, 2.0**52, 2.0**53 + 2])
    edges = np.array([0.9999995, 0.99999949999, 1.9999999, 999_999.9999995, T0 + 0.9999996])
    scores = rng.random(3000).astype(np.float32)
    scores[:64] = np.arange(64, dtype=np.float32) / 128  # float32 values that are exact ties
    wide = rng.random(2000) * 10.0 ** rng.integers(-8, 16, 2000)
    for values in (micros, nanos, ties, odd, edges, wide, np.full(5, T0 + 0.25)):
        assert pk.strings(nt.format_fixed6(values)) == [f"{v:.6f}" for v in values.tolist()]
    assert pk.strings(nt.format_fixed6(scores)) == np.char.mod("%.6f", scores).tolist()
    assert nt.format_time is nt.format_fixed6


def test_format_address_matches_ipaddress() -> None:
    rng = np.random.default_rng(3)
    v4 = np.zeros((500, 16), np.uint8)
    v4[:, 10:12] = 0xFF
    v4[:, 12:] = rng.integers(0, 256, (500, 4))
    v4[:4, 12:] = [[0, 0, 0, 0], [255, 255, 255, 255], [10, 0, 0, 66], [9, 99, 100, 1]]
    hextets = rng.integers(0, 65536, (2000, 8)) * (rng.random((2000, 8)) < 0.6)
    hextets[:, :] = np.where(rng.random((2000, 1)) < 0.2, hextets % 16, hextets)  # short ones
    special = [[0] * 8, [0] * 7 + [1], [1] + [0] * 7, [1, 0, 1, 0, 0, 1, 0, 0], [0, 1] + [0] * 6]
    special += [
        [0, 0, 1, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0xFFFF, 0, 1],
        [0xFE80, 0, 0, 0, 1, 2, 3, 4],
    ]
    six = np.vstack([hextets, special]).astype(">u2").view(np.uint8).reshape(-1, 16)
    for rows in (v4, six, np.vstack([v4, six])[rng.permutation(len(v4) + len(six))]):
        assert pk.strings(nt.format_address(rows)) == [ref_address(r) for r in rows]


def random_names(rng: np.random.Generator, n: int, width: int = 253) -> tuple:
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789-._", np.uint8)
    names = alphabet[rng.integers(0, len(alphabet), (n, width))]
    lengths = np.minimum(rng.geometric(1 / 30, n), width).astype(np.int32)
    lengths[rng.random(n) < 0.05] = 0  # the root name
    lengths[rng.random(n) < 0.03] = width
    dirty = rng.random(n) < 0.1
    spots = rng.integers(0, width, n)
    names[dirty, spots[dirty]] = rng.choice(np.array([0, 1, 9, 10, 32, 34, 44, 92, 127, 200, 255]))
    names[np.arange(width) >= lengths[:, None]] = 0
    return names, lengths


def test_format_qname_matches_reference() -> None:
    rng = np.random.default_rng(4)
    for width in (253, 40, 1):
        names, lengths = random_names(rng, 3000, width)
        column = pk.format_qname(names, lengths)
        expected = [ref_name(names[i, : lengths[i]].tobytes()) for i in range(len(names))]
        assert pk.strings(column) == expected
        assert pk.csv_block([column]).decode() == "".join(e + "\n" for e in expected)
    all_root = pk.format_qname(np.zeros((3, 0), np.uint8), np.zeros(3, np.int32))
    assert pk.strings(all_root) == [".", ".", "."]
    names, lengths = random_names(rng, 50)
    before = names.copy()
    pk.format_qname(names, lengths)
    assert (names == before).all()  # the batch's own array is never edited


def test_format_qtype_and_flags() -> None:
    codes = np.arange(65536, dtype=np.uint16)
    assert pk.strings(pk.format_qtype(codes)) == qtype_names(codes)
    assert pk.strings(nt.format_flag(np.array([True, False, True]))) == ["1", "0", "1"]
    assert pk.strings(nt.format_flag(np.array([0, 1], np.int8))) == ["0", "1"]


# -----------------------------------------------------------------------------
# rows


def test_csv_block_quotes_and_splices() -> None:
    rng = np.random.default_rng(5)
    names, lengths = random_names(rng, 400)
    capture = 'odd, "name"\nhere.pcap'
    columns = [
        pk.constant(pk.csv_field(capture)),
        nt.format_int(np.arange(400)),
        pk.format_qname(names, lengths),
        nt.format_flag(np.arange(400) % 2),
    ]
    assert len(columns[2].rows)  # long and escaped names take the splice path
    parsed = list(csv.reader(io.StringIO(pk.csv_block(columns).decode(), newline="")))
    assert len(parsed) == 400
    for i, row in enumerate(parsed):
        name = ref_name(names[i, : lengths[i]].tobytes())
        assert row == [capture, str(i), name, str(i % 2)]
    assert pk.csv_block([pk.constant("x"), nt.format_int(np.zeros(0, int))]) == b""
    with pytest.raises(ValueError):
        pk.csv_block([nt.format_int(np.arange(3)), nt.format_int(np.arange(4))])
    with pytest.raises(ValueError):
        pk.constant("a\x00b")
    empty = pk.Spliced(np.zeros((2, 0), np.uint8), np.array([1]), [b"zz"])
    assert pk.csv_block([empty, nt.format_int(np.arange(2))]) == b",0\nzz,1\n"
    assert pk.strings(empty) == ["", "zz"]
    marked = pk.Spliced(np.array([[ord("a")], [1]], np.uint8), np.array([0]), [b"x"])
    with pytest.raises(ValueError):
        pk.csv_block([marked])  # a stray 0x01 would shift every spliced text after it


def pcapng(path: Path, frames: list[bytes], spb: set[int]) -> Path:
    """pcapng, µs resolution; frames whose index is in `spb` go in simple packet blocks."""

    def block(kind: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    blob = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    blob += block(1, struct.pack("<HHI", 1, 0, 65535))
    for i, frame in enumerate(frames):
        if i in spb:
            blob += block(3, struct.pack("<I", len(frame)) + frame)
            continue
        ticks = (T0 + i) * 10**6 + i * 12_345
        head = struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
        blob += block(6, head + frame)
    path.write_bytes(blob)
    return path


def odd_frames() -> list[bytes]:
    """IPv4/IPv6, UDP/TCP, escapes, root and long names, unknown types, both directions."""
    names = [b"www.example.com", b"", b"a,b.evil.example", b'q"x\\y.evil.example']
    names += [b"sp ace.tab\t.nul\x00.x", b"\xff\xc3\xa9t\xe9.evil.example", b"x" * 63 + b".y" * 90]
    names += [b"ok.example"] * 3
    frames = []
    for i, name in enumerate(names * 2):
        qtype = [1, 16, 28, 65534, 255, 5, 99, 15][i % 8]
        message = pack_query(i, name, qtype) if i % 3 else pack_response(i, name, qtype)
        if i % 4 == 1:
            ip = IPv6(src="fd00::1", dst=["::1", "2001:db8::a:0:0:1", "fe80::"][i % 3])
        else:
            ip = IP(src=f"10.0.{i}.1", dst="192.168.100.200")
        if i % 5 == 2:
            layer = TCP(sport=40000 + i, dport=53, flags="PA")
            payload = struct.pack(">H", len(message)) + message
        else:
            layer, payload = UDP(sport=53 if i % 3 == 0 else 1024 + i, dport=53), message
        frames.append(bytes(ETHER / ip / layer / Raw(payload)))
    return frames


def ld(*args: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "ld.py"), *args], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def expected_csv(captures: list[Path], labels: np.ndarray) -> bytes:
    text, at = "", 0
    for capture in captures:
        for batch in read_dns(capture, [53], 7):  # small chunks: several batches per capture
            text += ref_rows(str(capture), batch, labels[at : at + len(batch)])
            at += len(batch)
    assert at == len(labels)
    return text.encode()


def test_ld_packets_csv_equals_reference(tmp_path: Path) -> None:
    frames = odd_frames()
    with_spb = pcapng(tmp_path / "odd, name.pcapng", frames, spb={0, 5, 6})
    plain = tmp_path / "plain.pcap"
    blob = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, frame in enumerate(frames):
        blob += struct.pack("<IIII", T0 + i, (i * 99_991) % 10**6, len(frame), len(frame)) + frame
    plain.write_bytes(blob)
    captures = [with_spb, plain]
    ld(*map(str, captures), "--out", str(tmp_path / "out"), "--exfil-domain", "evil.example")
    labels = np.load(tmp_path / "out" / "labels.npy")
    written = (tmp_path / "out" / "packets.csv").read_bytes()
    header = b"capture,packet,time,src,dst,sport,dport,qname,qtype,response,label\n"
    assert written == header + expected_csv(captures, labels)
    assert b",nan," in written and b"\\000" in written and b"fd00::1" in written


def test_ld_on_generated_capture_equals_reference(tmp_path: Path) -> None:
    capture = tmp_path / "gen.pcap"
    generator = ROOT / "data_generating_codes" / "script_datagen.py"
    done = subprocess.run(
        [sys.executable, str(generator), "--mode", "offline", "--packets", "3000"]
        + ["--seed", "7", "--out", str(capture)],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr.decode()
    ld(str(capture), "--out", str(tmp_path / "out"))
    labels = np.load(tmp_path / "out" / "labels.npy")
    written = (tmp_path / "out" / "packets.csv").read_bytes()
    assert written.split(b"\n", 1)[1] == expected_csv([capture], labels)


def test_packet_fields_and_strings(tmp_path: Path) -> None:
    capture = pcapng(tmp_path / "c.pcapng", odd_frames(), spb={1})
    for batch in read_dns(capture, [53], 5):
        fields = pk.packet_fields("c", batch)
        assert list(fields) == list(pk.PACKET_COLUMNS)
        names = [ref_name(batch.qname[i, : batch.qlen[i]].tobytes()) for i in range(len(batch))]
        assert pk.qname_strings(batch) == names == pk.strings(fields["qname"])
        assert pk.strings(fields["src"]) == [ref_address(a) for a in batch.src]
        rows = [fields[key] for key in pk.PACKET_COLUMNS] + [pk.constant("0")]
        expected = ref_rows("c", batch, np.zeros(len(batch), int))
        assert pk.csv_block(rows).decode() == expected


def test_formatters_accept_empty_batches() -> None:
    empty = np.zeros((0, 7), np.uint8)
    lengths = np.zeros(0, np.int32)
    columns = [
        pk.format_qname(empty, lengths),
        nt.format_int(np.zeros(0, np.int64)),
        nt.format_fixed6(np.zeros(0)),
        nt.format_address(np.zeros((0, 16), np.uint8)),
        pk.format_qtype(np.zeros(0, np.uint16)),
        nt.format_flag(np.zeros(0, bool)),
    ]
    assert pk.csv_block(columns) == b""
    assert pk.strings(columns[0]) == [] and pk.strings(columns[3]) == []
