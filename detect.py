"""Score every DNS packet of captures (or of a live interface) and raise per-domain alerts.

    python detect.py capture.pcapng --out scores.csv          # the shipped pretrained/ae_clf.pt
    python detect.py caps/ --model checkpoints/lstm.pt --out scores.csv --threshold 0.9
    sudo python detect.py --iface eth0 --model checkpoints/clf.pt --out live.csv

Captures (pcap, pcapng) or DNS logs (Zeek dns.log TSV/JSON, Suricata eve.json; gzip too).
Writes OUT (one row per DNS packet, in capture order:
capture,packet,time,src,dst,qname,qtype,response,score,malicious) and ALERTS (default: alerts.json
beside OUT), and prints the alert table. `packet` counts every record of the capture, as ld.py
does. Exit code: 0 nothing alerted, 1 alerts raised, 2 error. Live mode prints each alert the
moment it is raised and keeps a rolling window, so memory stays flat over hours.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from dataclasses import fields as fields_of
from functools import partial
from pathlib import Path
from typing import Literal

import exfil  # noqa: F401 (first: a python without the requirements says so in one line)

# isort: split
import numpy as np
import torch

from exfil.alert_formats import format_alerts, ndjson_text, rpz_text, score_in_words
from exfil.alerts import AlertBook
from exfil.allowlist import Allowlist
from exfil.captures import checked_capture_paths, map_captures
from exfil.cli import UserError, check_range, configure, format_config, run, verbose
from exfil.dataset import join_text
from exfil.features import unigrams
from exfil.featureset import FeatureSettings, unigram_inputs
from exfil.files import atomic_path, save_json, save_text, writable_folder
from exfil.logread import read_any
from exfil.memory import Releaser
from exfil.numtext import format_fixed6, format_flag
from exfil.packets import csv_block, packet_fields
from exfil.pcapread import read_dns
from exfil.pcapwrite import frames_pcap
from exfil.report_html import render_report
from models import load_checkpoint, predict_proba
from models.nets import INPUTS

# -----------------------------------------------------------------------------
# what to score
CAPTURES: list[str] = []  # captures, folders of captures, or text files listing them
MODEL = "pretrained/ae_clf.pt"  # shipped (make models, README: why); yours: checkpoints/*.pt
THRESHOLD = -1.0  # decision threshold on the score; negative: the checkpoint's own
# outputs
OUT = "scores.csv"  # per-packet scores
FLAGGED_ONLY = False  # write only the flagged packets' rows to OUT (same columns)
ALERTS = ""  # alerts JSON (default: alerts.json beside OUT)
NDJSON = ""  # also write the alerts as ECS JSON lines, one per alert, for a SIEM
RPZ = ""  # also write a DNS Response Policy Zone blocking the alerted domains
REPORT = ""  # also write a self-contained HTML page: alerts, timelines, score histogram
MIN_NAMES = 5  # distinct flagged names a registered domain needs before it is alerted
MIN_SHARE = 0.2  # ... and the share of all its packets its flagged ones must make up
ALLOWLIST: list[str] = []  # allowlist files: flagged names under an entry are never alerted
DEFAULT_ALLOWLIST = (
    True  # also the shipped list (DNSBLs, AV look-ups...); off: --no-default-allowlist
)
# live traffic
IFACE = ""  # sniff this interface instead of reading captures (root or CAP_NET_RAW)
CAPTURE_PORTS: list[int] = [53]  # capture filter: UDP/TCP ports carrying DNS (files too)
LIVE_SECONDS = 0.0  # stop live capture after this many seconds (0: until Ctrl-C / SIGTERM)
LIVE_FLUSH = 0.5  # score what arrived at least this often (seconds)
LIVE_WINDOW = 3600.0  # forget domains quiet for this long (seconds), so memory stays flat
# system
CHUNK = 8192  # capture records decoded at once (bounds memory; fits in cache)
WORKERS = 0  # processes for several captures (0 = one per core)
SCHEDULER = ""  # a Dask scheduler (tcp://host:8786): the per-capture work runs on its cluster
BATCH_SIZE = 65536  # packets per network forward pass
PRECISION: Literal["fp32", "bf16"] = "fp32"  # bf16: clf/ae_clf forward ~2x faster, same verdicts
# -----------------------------------------------------------------------------

MIXED_CASE_WARNING = 0.5  # share of names with upper case that prompts the 0x20 warning
_HEADER = "capture,packet,time,src,dst,qname,qtype,response,score,malicious\n"
_ID_COLUMNS = ("capture", "packet", "time", "src", "dst", "qname", "qtype", "response")


@dataclass(frozen=True)
class Job:
    """What a worker needs to score captures: the model, its threshold, alerting, reading."""

    model: str
    threshold: float
    min_names: int
    min_share: float
    allowlist: Allowlist
    ports: tuple[int, ...]
    chunk: int
    batch_size: int
    flagged_only: bool = False
    precision: str = "fp32"


def network_inputs(batch, meta: dict, context=None) -> dict:  # noqa: ANN001
    """The arrays the checkpoint's network reads, by the recipe ng.py used (its `features`).

    `context` is the capture's per-domain state (FeatureSettings.new_context), fed every batch
    in capture order, exactly as ng.py feeds it.
    """
    network = INPUTS[meta["network"]]
    settings = FeatureSettings.from_meta(meta["features"])
    arrays = settings.compute(batch, need=(network,), context=context)
    if network == "qname":
        side = arrays["extras"] if arrays["extras"].shape[1] else None
        return {"qname_bytes": arrays["qname_bytes"], "qname_len": arrays["qname_len"],
                "context": side}  # fmt: skip
    return {"unigrams": unigram_inputs(arrays)}


def score_batches(  # noqa: ANN001
    batches, name: str, model, meta: dict, job: Job, sink, book, context=None
) -> int:
    """Score DnsBatches, write their CSV rows to `sink`, feed alerts; return flagged count."""
    flagged, memory = 0, Releaser()
    for batch in batches:
        memory.after(batch)  # hands back the pages of earlier chunks: memory stays flat
        if not len(batch):
            continue
        inputs = network_inputs(batch, meta, context)
        scores = predict_proba(model, meta, batch_size=job.batch_size, precision=job.precision,
                               threshold=job.threshold, **inputs)  # fmt: skip
        malicious = scores >= job.threshold
        flagged += int(malicious.sum())
        rows, row_scores, row_flags = batch, scores, malicious
        if job.flagged_only:
            rows = flagged_rows(batch, malicious)
            row_scores, row_flags = scores[malicious], malicious[malicious]
        if len(rows):
            fields = packet_fields(name, rows)
            columns = [fields[key] for key in _ID_COLUMNS]
            sink.write(csv_block([*columns, format_fixed6(row_scores), format_flag(row_flags)]))
        # the alert's "why" compares qname 1 + ln(count) histograms: reuse the inputs if they are
        features = meta["features"]
        same = (features.get("scope"), features.get("transform")) == ("qname", "log1p")
        why = inputs["unigrams"] if same and "unigrams" in inputs else unigrams(batch)
        domains = context.row_domains if context is not None else None  # the same look-up
        raised = book.update(batch, scores, malicious, why[:, :256], capture=name, domains=domains)
        for domain in raised if book.window_seconds is not None else ():
            alert = book.summary(domain)
            print(
                f"ALERT {domain}: {alert['queries']} flagged queries from "
                f"{', '.join(alert['clients'])}; e.g. {alert['examples'][0]}",
                flush=True,
            )
    return flagged


def flagged_rows(batch, malicious: np.ndarray):  # noqa: ANN001, ANN201
    """The batch's flagged rows only (--flagged-only: no row per benign packet)."""
    picked = {f.name: getattr(batch, f.name)[malicious] for f in fields_of(batch)
              if f.name != "data" and getattr(batch, f.name) is not None}  # fmt: skip
    return replace(batch, **picked)


# -----------------------------------------------------------------------------
# captures


def score_capture(path: Path, part_dir: Path, job: Job, name: str | None = None) -> dict:
    """One capture: CSV rows to a part file, alerts kept in a book (returned to the parent);
    `name`: how outputs name the capture (the path as given, where a cluster reads another).

    One torch thread: chunks are small enough that threads cost more than they give, and
    several captures run in parallel processes instead.
    """
    torch.set_num_threads(1)
    name = name or str(path)
    model, meta = load_checkpoint(job.model)
    book = AlertBook(job.min_names, job.min_share, allowlist=job.allowlist.fresh())
    stats: dict = {}
    part = part_dir / f"{os.getpid()}-{uuid.uuid4().hex}.csv"  # a/x.pcap and b/x.pcap differ
    with open(part, "wb") as sink:
        batches = read_any(path, job.ports, job.chunk, stats, meta["features"]["scope"])
        context = FeatureSettings.from_meta(meta["features"]).new_context()  # this capture's
        flagged = score_batches(batches, name, model, meta, job, sink, book, context)
    return {"path": name, "part": str(part), "stats": stats, "flagged": flagged, "book": book}


def detect_files(job: Job, alerts_path: Path, config: dict) -> tuple[AlertBook, dict]:
    paths = checked_capture_paths(CAPTURES)
    out = Path(OUT)
    workers = min(WORKERS or os.cpu_count() or 1, len(paths))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.absolute().parent, prefix=".detect-") as part_dir:
        work = partial(score_capture, part_dir=Path(part_dir), job=job)
        results = map_captures(work, paths, workers, SCHEDULER)
        join_text([r["part"] for r in results], out, _HEADER)
    book = results[0]["book"]
    for result in results[1:]:
        book.merge(result["book"])
    report = save_alerts(alerts_path, book, job, config, out)
    packets = sum(r["stats"].get("dns_packets", 0) for r in results)
    seconds = time.perf_counter() - started
    for result in results:
        skipped = {k: v for k, v in result["stats"].items() if k not in ("records", "dns_packets")}
        print(
            f"{result['path']}: {result['stats'].get('records', 0)} records, "
            f"{result['stats'].get('dns_packets', 0)} DNS packets, {result['flagged']} flagged"
            + (f"; skipped {skipped}" if skipped else "")
        )
    print(
        f"scored {packets} DNS packets in {seconds:.2f} s "
        f"({packets / max(seconds, 1e-9):,.0f} packets/s) -> {out}"
    )
    return book, report


# -----------------------------------------------------------------------------
# live traffic


def detect_live(job: Job, alerts_path: Path, config: dict) -> tuple[AlertBook, dict]:
    from exfil.sniff import Sniffer

    model, meta = load_checkpoint(job.model)
    book = AlertBook(job.min_names, job.min_share, LIVE_WINDOW, job.allowlist.fresh())
    context = FeatureSettings.from_meta(meta["features"]).new_context()  # the whole stream's
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    arrived: list[tuple[float, bytes]] = []
    seen = 0
    name = f"iface:{IFACE}"
    with Sniffer(IFACE, CAPTURE_PORTS) as sniffer, tempfile.TemporaryDirectory() as scratch:
        print(f"listening on {IFACE} (ports {CAPTURE_PORTS}); Ctrl-C to stop", flush=True)
        sniffer.start(keep=arrived)
        deadline = time.monotonic() + LIVE_SECONDS if LIVE_SECONDS > 0 else None
        with atomic_path(OUT) as temporary, open(temporary, "wb") as sink:
            sink.write(_HEADER.encode())
            try:
                while not stop.is_set():
                    finished = deadline is not None and time.monotonic() >= deadline
                    stop.wait(LIVE_FLUSH if not finished else 0.3)
                    taken = arrived[: len(arrived)]
                    del arrived[: len(taken)]
                    if taken:  # a fresh file each time: earlier batches may still map the last
                        window = Path(scratch) / f"window-{seen}.pcap"
                        window.write_bytes(frames_pcap(taken))
                        batches = list(read_dns(window, job.ports, job.chunk))
                        for batch in batches:
                            batch.record = batch.record + seen
                        seen += len(taken)
                        score_batches(batches, name, model, meta, job, sink, book, context)
                        sink.flush()
                        del batches
                        window.unlink()
                    if finished:
                        break
            except KeyboardInterrupt:
                print("stopping", file=sys.stderr)
            sniffer.stop()
    return book, save_alerts(alerts_path, book, job, config, Path(OUT))


def save_alerts(path: Path, book: AlertBook, job: Job, config: dict, scores: Path) -> dict:
    """alerts.json (alerts, near misses, what the allowlist suppressed, model, threshold, the
    settings), written after `scores`: the two are a set, so if this fails the scores go too.
    Returns what it wrote (the run prints from it: the summaries are made once)."""
    alerts = book.alerts()
    for alert in alerts:
        alert["score"] = score_in_words(alert["mean_score"], job.threshold)
    report = {"threshold": job.threshold, "model": job.model, "alerts": alerts,
              "near_misses": book.near_misses(), "suppressed": book.allowlist.report(),
              "config": config}  # fmt: skip
    written: list[Path] = []
    try:
        page = partial(render_report, histogram=book.score_histogram)
        for target, text in ((NDJSON, ndjson_text), (RPZ, _rpz), (REPORT, page)):
            if target:
                save_text(target, text(report))
                written.append(Path(target))
        save_json(path, report)  # last: an alerts.json means the whole set is there
    except BaseException:
        for done in (*written, scores):
            done.unlink(missing_ok=True)
        raise
    return report


def _rpz(report: dict) -> str:
    return rpz_text([alert["domain"] for alert in report["alerts"]])


# -----------------------------------------------------------------------------


def main() -> int:
    config = configure(globals(), paths=("MODEL",), positional="CAPTURES")
    if bool(IFACE) == bool(CAPTURES):
        raise UserError("give capture files, or --iface NAME for live traffic (not both)")
    check_range("threshold", THRESHOLD, high=1.0)  # negative: the checkpoint's own
    check_range("min-share", MIN_SHARE, 0.0, 1.0)
    check_range("min-names", MIN_NAMES, 1)
    for flag, value in (("workers", WORKERS), ("live-seconds", LIVE_SECONDS),
                        ("live-window", LIVE_WINDOW)):  # fmt: skip
        check_range(flag, value, 0)
    for flag, value in (("chunk", CHUNK), ("batch-size", BATCH_SIZE), ("live-flush", LIVE_FLUSH)):
        check_range(flag, value, 1e-9)
    if verbose():  # saved in alerts.json either way
        print(format_config(config))
    model, meta = load_checkpoint(MODEL)  # fail early, before any output
    del model
    threshold = THRESHOLD if THRESHOLD >= 0 else float(meta.get("threshold", 0.5))
    print(f"model {MODEL}: {meta['network']}, threshold {threshold:.4f}")
    alerts_path = Path(ALERTS) if ALERTS else Path(OUT).with_name("alerts.json")
    extra = [Path(p) for p in (NDJSON, RPZ, REPORT) if p]
    for folder in {Path(OUT).parent, alerts_path.parent, *(p.parent for p in extra)}:
        writable_folder(folder, "scores and alerts", create=False)  # before any work
    for stale in (alerts_path, *extra):  # outputs are only ever this run's, complete
        stale.unlink(missing_ok=True)
    allowlist = Allowlist.load(ALLOWLIST, DEFAULT_ALLOWLIST)
    job = Job(MODEL, threshold, MIN_NAMES, MIN_SHARE, allowlist, tuple(CAPTURE_PORTS), CHUNK,
              BATCH_SIZE, FLAGGED_ONLY, PRECISION)  # fmt: skip
    detect = detect_live if IFACE else detect_files
    book, report = detect(job, alerts_path, config)
    alerts = report["alerts"]
    print(format_alerts(alerts))
    for row in report["near_misses"]:
        print(f"near miss, not alerted: {row['domain']}: {row['why_not']} "
              f"(e.g. {row['examples'][0] if row['examples'] else '-'})")  # fmt: skip
    for row in report["suppressed"]:
        print(f"suppressed by the allowlist: {row['domain']} ({row['reason']}): "
              f"{row['queries']} flagged queries, {row['unique_names']} names")  # fmt: skip
    print(f"alerts: {len(alerts)} domain(s) -> {alerts_path}")
    mixed = book.upper_case / max(book.packets, 1)
    if mixed > MIXED_CASE_WARNING and not meta["features"].get("fold_case"):
        print(f"warning: {mixed:.0%} of the names have upper-case letters (a resolver's DNS 0x20 "
              "case randomisation?) and this checkpoint reads names as written: retrain on "
              "features from ng.py (it folds case by default)", file=sys.stderr)  # fmt: skip
    return 1 if alerts else 0


if __name__ == "__main__":
    run(main)
