"""End-to-end detection speed: read, features, network, CSV and alerts, on >= 1M DNS packets.

    python bench/bench_detect.py                                  # default capture and clf.pt
    python bench/bench_detect.py --model checkpoints/lstm.pt
    python bench/bench_detect.py --capture big.pcapng --tshark-slice 0
    python bench/bench_detect.py --compare work/clf-no-context.pt   # context on vs off
    python bench/bench_detect.py --distinct-domains 1000000          # memory: 1 domain a packet
    python bench/bench_detect.py --no-compiled --no-bf16            # skip those two runs

Runs detect.py on one capture with one worker (one process) and prints its packets/s and peak
RSS, then (optionally) a second checkpoint on the same capture, e.g. one trained with
--no-context, and times tshark merely extracting the query names from a slice of the same
capture, in the same run, and prints the ratios. --distinct-domains N scores captures of 100,000
and N queries each under its own registered domain (the per-domain state's worst case) and
prints both peak RSS figures. Needs a trained checkpoint (`make demo` writes checkpoints/clf.pt).
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from exfil.cli import UserError, configure, format_config, run

# -----------------------------------------------------------------------------
CAPTURE = ""  # capture to score (default: bench/out/bench.pcap, generated once)
PACKETS = 1_000_000  # DNS packets in the generated capture
SEED = 7  # generator seed
MODEL = "checkpoints/clf.pt"  # checkpoint detect.py loads (make demo's clf)
TSHARK_SLICE = 100_000  # packets of the capture tshark extracts names from (0: skip tshark)
COMPARE = ""  # a second checkpoint to time on the same capture (e.g. trained --no-context)
DISTINCT_DOMAINS = 0  # also: peak RSS on 100,000 and this many queries, one domain each
COMPILED = True  # also time MODEL with the compiled kernels on (EXFIL_KERNELS=numba)
BF16 = True  # also time MODEL with --precision bf16 (a clf / ae_clf checkpoint)
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


def distinct_domains_capture(count: int) -> Path:
    """`count` A queries, each under a registered domain of its own (generated once)."""
    from exfil.dnsmsg import pack_query
    from exfil.pcapwrite import write_udp_capture

    path = ROOT / "bench" / "out" / f"domains-{count}.pcap"
    if not path.exists():
        print(f"generating {count:,} queries under {count:,} domains -> {path}", flush=True)
        payloads = [pack_query(i, f"www.d{i:07d}-example.com", 1) for i in range(count)]
        ip = np.full(count, 0x0A000001, np.uint32)
        write_udp_capture(path, np.arange(count, dtype=np.int64) * 1_000_000, ip, ip + 1,
                          np.full(count, 40000), np.full(count, 53), payloads)  # fmt: skip
    return path


def run_detect(
    capture: Path, model: str, kernels: str = "", precision: str = "fp32"
) -> tuple[int, float, float, float]:
    """detect.py in its own process: (packets, seconds scoring, wall seconds, peak RSS MiB);
    `kernels`: EXFIL_KERNELS for it ("numba": the compiled loops on)."""
    out = ROOT / "bench" / "out" / "bench-scores.csv"
    command = [sys.executable, str(ROOT / "detect.py"), str(capture), "--model", model,
               "--out", str(out), "--workers", "1", "--precision", precision]  # fmt: skip
    log = out.with_name("bench-detect.log")
    started = time.perf_counter()
    with open(log, "w") as sink:
        env = {**os.environ, "EXFIL_KERNELS": kernels} if kernels else None
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    text = log.read_text()
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise UserError(f"detect.py failed: {text.strip().splitlines()[-1]}")
    found = re.search(r"scored (\d+) DNS packets in ([\d.]+) s", text)
    return int(found.group(1)), float(found.group(2)), wall, usage.ru_maxrss / 1024


def main() -> None:
    print(format_config(configure(globals())))
    capture = Path(CAPTURE) if CAPTURE else make_capture()
    for model in filter(None, (MODEL, COMPARE)):
        if not Path(model).is_file():
            raise UserError(f"{model}: no checkpoint; run `make demo` or a training script first")
    rates = {}
    runs = [("default", MODEL, "", "fp32")]
    runs += [("compare", COMPARE, "", "fp32")] if COMPARE else []
    runs += [("numba", MODEL, "numba", "fp32")] if COMPILED else []
    runs += [("bf16", MODEL, "", "bf16")] if BF16 else []
    for kind, model, kernels, precision in runs:
        packets, seconds, wall, peak = run_detect(capture, model, kernels, precision)
        rates[kind] = packets / seconds
        path = f"{'compiled' if kernels else 'numpy'} path, {precision}"
        print(
            f"detect.py ({Path(model).name}, 1 process, {path}): {packets:,} DNS packets in "
            f"{seconds:.2f} s = {rates[kind]:,.0f} packets/s ({packets / wall:,.0f} including "
            f"start-up, {wall:.1f} s), peak RSS {peak:,.0f} MiB"
        )
    name = Path(MODEL).name
    if COMPARE:
        print(f"{name} runs at {rates['default'] / rates['compare']:.0%} of {Path(COMPARE).name}")
    if COMPILED:
        print(f"compiled kernels: {rates['numba'] / rates['default']:.2f}x the numpy path ({name})")
    if BF16:
        print(f"bf16: {rates['bf16'] / rates['default']:.2f}x float32 ({name})")
    if DISTINCT_DOMAINS:
        for count in sorted({100_000, DISTINCT_DOMAINS}):
            packets, seconds, _, peak = run_detect(distinct_domains_capture(count), MODEL)
            print(f"{packets:,} queries under as many domains: peak RSS {peak:,.0f} MiB, "
                  f"{packets / seconds:,.0f} packets/s")  # fmt: skip
    ours = rates["default"]
    tshark = shutil.which("tshark")
    if TSHARK_SLICE and tshark:
        piece = ROOT / "bench" / "out" / "tshark-slice.pcap"
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
