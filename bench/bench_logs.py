"""Benchmark: DNS log records read per second (Zeek TSV and JSON, Suricata eve v2 / v3), one core.

    python bench/bench_logs.py                      # a 200,000-packet capture as each log
    python bench/bench_logs.py --packets 50000      # quick look

Builds a capture with the offline generator, writes its traffic as the four log formats (the
test fixtures' writer, from the published formats), then times, on one core and best of
PASSES: the project's reader (`read_log_dns`: records to DnsBatches of rebuilt messages, what
ld.py, ng.py and detect.py consume) against the obvious alternative measured in the same run,
which only parses (pandas.read_csv for TSV, json.loads line by line for JSON) and builds no
DNS message. Prints records/s, messages/s and peak memory (RSS).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the log fixtures' writer

from exfil.cli import configure, format_config, run
from exfil.logread import read_log_dns

# -----------------------------------------------------------------------------
PACKETS = 200_000  # DNS packets of the generated capture (about half as many Zeek rows)
SEED = 4  # randomness of the generated capture
PASSES = 3  # passes timed per reader; the best CPU time counts (the machine may be shared)
# -----------------------------------------------------------------------------


def cpu_time(work) -> tuple[float, object]:  # noqa: ANN001
    """(best CPU seconds over PASSES, the last result) of work()."""
    best, result = float("inf"), None
    for _ in range(PASSES):
        start = time.process_time()
        result = work()
        best = min(best, time.process_time() - start)
    return best, result


def ours(path: Path) -> tuple[int, int]:
    stats: dict = {}
    messages = sum(len(batch) for batch in read_log_dns(path, stats=stats))
    return stats["records"], messages


def json_lines(path: Path) -> int:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return sum(1 for line in handle if line.strip() and json.loads(line))


def pandas_tsv(path: Path) -> int:
    import pandas as pd

    fields = next(line for line in path.open() if line.startswith("#fields")).split("\t")[1:]
    frame = pd.read_csv(path, sep="\t", comment="#", header=None, names=fields,
                        na_values="-", quoting=3, low_memory=False)  # fmt: skip
    return len(frame)


def main() -> None:
    config = configure(globals())
    print(format_config(config))
    from test_logs import write_logs

    with tempfile.TemporaryDirectory(prefix="bench-logs-") as scratch:
        folder = Path(scratch)
        capture = folder / "traffic.pcap"
        subprocess.run([sys.executable, str(ROOT / "data_generating_codes" / "script_datagen.py"),
                        "--mode", "offline", "--packets", str(PACKETS), "--seed", str(SEED),
                        "--out", str(capture)], check=True, capture_output=True)  # fmt: skip
        print(f"writing {PACKETS:,} packets as Zeek TSV, Zeek JSON, eve v2, eve v3 (gzip) ...")
        paths = write_logs(capture, folder)
        print(f"\n{'log':<10} {'MB':>6} {'records':>9} {'project records/s':>18} "
              f"{'messages/s':>11} {'parse-only alternative':>24}")  # fmt: skip
        for key, path in paths.items():
            seconds, (records, messages) = cpu_time(lambda p=path: ours(p))
            other = pandas_tsv if key == "zeek.tsv" else json_lines
            label = "pandas.read_csv" if key == "zeek.tsv" else "json.loads"
            other_seconds, _ = cpu_time(lambda p=path, f=other: f(p))
            print(f"{key:<10} {path.stat().st_size / 1e6:>6.1f} {records:>9,} "
                  f"{records / seconds:>18,.0f} {messages / seconds:>11,.0f} "
                  f"{records / other_seconds:>15,.0f} ({label})")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:,.0f} MB (the writer holds the capture's rows; the reader streams)")


if __name__ == "__main__":
    run(main)
