"""Benchmark: labels + unigram features per second, against scapy's reader, on one core.

    python bench/bench_features.py                         # builds a 1,000,000-packet capture
    python bench/bench_features.py --capture work/big.pcap --scapy-packets 5000
    python bench/bench_features.py --packets 200000 --no-scripts   # quick look

Builds (unless --capture is given) a pcap of PACKETS DNS frames by tiling a few thousand
realistic frames (benign lookups and responses, DET-style 67-byte exfiltration names) with new
timestamps; times, on one core: the library path (read + parse + domain labels + qname unigrams
+ name bytes, no files written; best of LIBRARY_PASSES passes, each printed), then `ld.py` and
`ng.py` as the user runs them (files written), and scapy's rdpcap + DNS decoding on the first
SCAPY_PACKETS records. Prints packets/s of each, the ratio, and peak memory (RSS) of each step.
"""

from __future__ import annotations

import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from data_generating_codes.benign import WORDS
from exfil.cli import configure, format_config, run
from exfil.dnsparse import ragged
from exfil.features import qname_matrix, unigrams
from exfil.labels import domain_labels
from exfil.pcapread import read_dns

# -----------------------------------------------------------------------------
CAPTURE = ""  # capture to time (default: build one in a temporary folder)
PACKETS = 1_000_000  # DNS packets in the built capture
TEMPLATES = 4000  # distinct frames tiled to build it
SCAPY_PACKETS = 3000  # records of the capture read by scapy for comparison
SCRIPTS = True  # also time ld.py + ng.py end to end (they write their outputs)
SEED = 1  # randomness of the built capture
LIBRARY_PASSES = 3  # library passes timed; the best CPU time counts (the machine is shared)
# -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
_TLDS = ["com", "net", "org", "io", "de"]
_EXFIL = "bluehar-borsync.net"


def templates(count: int, rng: random.Random) -> list[bytes]:
    """Realistic Ethernet/IPv4/UDP/DNS frames built once with scapy."""
    from scapy.all import DNS, DNSQR, DNSRR, IP, UDP, Ether

    ether = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP look-ups
    frames = []
    for i in range(count):
        if i % 5 == 0:  # DET: 7-char job id + hex piece, whole name 67 bytes
            piece = "".join(rng.choice("0123456789abcdef") for _ in range(66 - len(_EXFIL) - 7))
            name = "".join(rng.choice("ABCDEFGHabcdefgh0123") for _ in range(7)) + piece
            name += "." + _EXFIL
        else:
            name = ".".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
            name += f".{rng.choice(WORDS)}{rng.randint(0, 99)}.{rng.choice(_TLDS)}"
        qtype = rng.choice(["A", "AAAA", "MX", "TXT", "NS", "CNAME"])
        query = DNS(id=rng.randrange(65536), rd=1, qd=DNSQR(qname=name, qtype=qtype))
        if i % 2:
            answer = DNSRR(rrname=name, type="A", ttl=rng.randint(30, 3600), rdata="192.0.2.7")
            query = DNS(id=query.id, qr=1, rd=1, ra=1, qd=query.qd, an=answer)
        hosts = (f"10.0.0.{rng.randint(2, 90)}", "10.0.0.1")
        src, dst = hosts if not i % 2 else hosts[::-1]
        ports = (rng.randint(1024, 65535), 53)
        sport, dport = ports if not i % 2 else ports[::-1]
        frames.append(bytes(ether / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / query))
    return frames


def build_capture(path: Path, packets: int, count: int, seed: int) -> None:
    """Tile template frames into a pcap of `packets` records, written in one pass."""
    rng = random.Random(seed)
    frames = templates(count, rng)
    pick = np.random.default_rng(seed).integers(0, len(frames), packets)
    lengths = np.array([len(f) for f in frames], dtype=np.int64)[pick]
    blob = np.frombuffer(b"".join(frames), dtype=np.uint8)
    starts = (np.cumsum([len(f) for f in frames]) - [len(f) for f in frames])[pick]
    with open(path, "wb") as handle:
        handle.write(np.array([0xA1B2C3D4, 0x00040002, 0, 0, 65535, 1], "<u4").tobytes())
        for first in range(0, packets, 100_000):
            sel = slice(first, first + 100_000)
            size = lengths[sel]
            head = np.zeros((len(size), 4), dtype="<u4")
            stamp = 1_700_000_000_000_000 + np.arange(first, first + len(size)) * 997
            head[:, 0], head[:, 1] = stamp // 10**6, stamp % 10**6
            head[:, 2] = head[:, 3] = size
            rows = np.cumsum(size + 16) - (size + 16)
            out = np.zeros(int((size + 16).sum()), dtype=np.uint8)
            out[(rows[:, None] + np.arange(16)).reshape(-1)] = head.view(np.uint8).reshape(-1)
            source, _ = ragged(starts[sel], size)
            target, _ = ragged(rows + 16, size)
            out[target] = blob[source]
            handle.write(out.tobytes())


def library_pass(path: Path) -> tuple[int, float, float]:
    """Read + parse + label + unigrams + name bytes in this process, nothing written.

    Returns (packets, wall seconds, CPU seconds). CPU time is reported too because the wall
    clock of a shared machine includes other work.
    """
    start, cpu, kept = time.perf_counter(), time.process_time(), 0
    buffer = np.zeros((0, 256), dtype=np.float32)  # reused across chunks, as ng.py does
    for batch in read_dns(path):
        if len(buffer) < len(batch):
            buffer = np.zeros((len(batch), 256), dtype=np.float32)
        rows = buffer[: len(batch)]  # unigrams overwrites every cell: no zeroing needed
        domain_labels(batch.qname, batch.qlen, [_EXFIL])
        unigrams(batch, "qname", "log1p", out=rows)
        qname_matrix(batch, 256)
        kept += len(batch)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return kept, wall, cpu


def scapy_pass(path: Path, count: int) -> tuple[int, float]:
    from scapy.all import DNS, PcapReader

    start, kept = time.perf_counter(), 0
    with PcapReader(str(path)) as reader:
        for number, packet in enumerate(reader):
            if number >= count:
                break
            if DNS in packet and packet[DNS].qd is not None:
                dns = packet[DNS]
                _ = (dns.qd.qname, dns.qd.qtype, dns.qr)
                kept += 1
    return kept, time.perf_counter() - start


_WRAPPER = """import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    status = open("/proc/self/status").read()  # VmHWM: peak RSS of this program only
    print("maxrss", status.split("VmHWM:")[1].split()[0], file=sys.stderr)
"""


def script_pass(path: Path, out: Path) -> list[tuple[str, float, float, int]]:
    """ld.py then ng.py on one core: (script, wall s, CPU s, peak RSS KiB) each.

    CPU and wall time include the interpreter start and imports (~0.3 s).
    """
    found = []
    for script, extra in (("ld.py", ["--exfil-domain", _EXFIL]), ("ng.py", [])):
        command = [sys.executable, "-c", _WRAPPER, str(ROOT / script), str(path)]
        command += ["--out", str(out), "--workers", "1", *extra]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        peak = int(done.stderr.split("maxrss")[-1].split()[0])
        found.append((script, wall, cpu, peak))
    return found


def main() -> None:
    print(format_config(configure(globals())))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(CAPTURE) if CAPTURE else Path(scratch) / "bench.pcap"
        if not CAPTURE:
            start = time.perf_counter()
            build_capture(path, PACKETS, TEMPLATES, SEED)
            print(
                f"built {path} ({path.stat().st_size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - start:.1f} s"
            )
        passes = [library_pass(path) for _ in range(max(LIBRARY_PASSES, 1))]
        kept, wall, cpu = min(passes, key=lambda p: p[2])
        fast = kept / cpu
        print(f"library passes, CPU s: {' '.join(f'{p[2]:.2f}' for p in passes)} (best below)")
        print(
            f"library (read+parse+labels+unigrams+names), one core: {kept} DNS packets in "
            f"{wall:.2f} s wall ({kept / wall:,.0f} packets/s), {cpu:.2f} s CPU "
            f"({fast:,.0f} packets/s)"
        )
        if SCRIPTS:
            outputs = kept * (256 * 4 + 256 + 4 + 1 + 2 + 4)
            runs = script_pass(path, Path(scratch) / "out")
            for script, s_wall, s_cpu, rss in runs:
                print(
                    f"{script}: {s_wall:.2f} s wall ({kept / s_wall:,.0f} packets/s), "
                    f"{s_cpu:.2f} s CPU ({kept / s_cpu:,.0f} packets/s), peak RSS "
                    f"{rss / 1024:.0f} MiB"
                )
            both = sum(r[2] for r in runs)
            print(
                f"ld.py + ng.py: {kept / both:,.0f} packets/s (CPU); output arrays "
                f"{outputs / 2**20:.0f} MiB"
            )
        got, slow_s = scapy_pass(path, SCAPY_PACKETS)
        slow = got / slow_s
        print(f"scapy PcapReader + DNS: {got} packets in {slow_s:.2f} s = {slow:,.0f} packets/s")
        print(f"ratio library (CPU) / scapy: {fast / slow:,.0f}x")


if __name__ == "__main__":
    run(main)
