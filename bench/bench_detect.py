"""End-to-end detection speed: read, features, network, CSV and alerts, on >= 1M DNS packets.

    python bench/bench_detect.py                                  # default capture and clf.pt
    python bench/bench_detect.py --model checkpoints/lstm.pt
    python bench/bench_detect.py --capture big.pcapng --tshark-slice 0

Runs detect.py on one capture with one worker (one process) and prints its packets/s, then times
tshark merely extracting the query names from a slice of the same capture, in the same run, and
prints the ratio. Needs a trained checkpoint (`make demo` writes checkpoints/clf.pt).
"""

import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exfil.cli import UserError, configure, format_config, run

# -----------------------------------------------------------------------------
CAPTURE = ""  # capture to score (default: bench/out/bench.pcap, generated once)
PACKETS = 1_000_000  # DNS packets in the generated capture
SEED = 7  # generator seed
MODEL = "checkpoints/clf.pt"  # checkpoint detect.py loads
TSHARK_SLICE = 100_000  # packets of the capture tshark extracts names from (0: skip tshark)
# -----------------------------------------------------------------------------


def make_capture() -> Path:
    path = ROOT / "bench" / "out" / "bench.pcap"
    if not path.exists():
        print(f"generating {PACKETS:,} packets -> {path}", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "data_generating_codes" / "script_datagen.py"),
             "--mode", "offline", "--packets", str(PACKETS), "--seed", str(SEED),
             "--out", str(path)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return path


def pcap_slice(source: Path, target: Path, records: int) -> None:
    """The first `records` records of a classic pcap file (tshark's input for the comparison)."""
    with open(source, "rb") as handle, open(target, "wb") as out:
        header = handle.read(24)
        if header[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            raise UserError(f"{source}: the tshark slice needs a little-endian pcap file")
        out.write(header)
        for _ in range(records):
            head = handle.read(16)
            if len(head) < 16:
                break
            out.write(head + handle.read(struct.unpack("<I", head[8:12])[0]))


def main() -> None:
    print(format_config(configure(globals())))
    capture = Path(CAPTURE) if CAPTURE else make_capture()
    if not Path(MODEL).is_file():
        raise UserError(f"{MODEL}: no checkpoint; run `make demo` or a training script first")
    out = ROOT / "bench" / "out" / "bench-scores.csv"
    command = [sys.executable, str(ROOT / "detect.py"), str(capture), "--model", MODEL,
               "--out", str(out), "--workers", "1"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise UserError(f"detect.py failed: {done.stderr.strip().splitlines()[-1]}")
    found = re.search(r"scored (\d+) DNS packets in ([\d.]+) s", done.stdout)
    packets, seconds = int(found.group(1)), float(found.group(2))
    ours = packets / seconds
    print(
        f"detect.py ({Path(MODEL).name}, 1 process): {packets:,} DNS packets in {seconds:.2f} s "
        f"= {ours:,.0f} packets/s ({packets / wall:,.0f} including start-up, {wall:.1f} s)"
    )
    tshark = shutil.which("tshark")
    if TSHARK_SLICE and tshark:
        piece = out.with_name("tshark-slice.pcap")
        pcap_slice(capture, piece, TSHARK_SLICE)
        started = time.perf_counter()
        subprocess.run(
            [tshark, "-r", str(piece), "-T", "fields", "-e", "dns.qry.name"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs = TSHARK_SLICE / (time.perf_counter() - started)
        print(
            f"tshark extracting names only: {theirs:,.0f} packets/s "
            f"-> detect.py is {ours / theirs:.1f}x faster"
        )
    elif TSHARK_SLICE:
        print("tshark not installed: comparison skipped (apt-get install tshark)")


if __name__ == "__main__":
    run(main)
