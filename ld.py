"""Label every DNS packet of one or more captures (1 = malicious, 0 = benign).

    python ld.py work/train.pcap --out work/train                       # rule: domain (truth)
    python ld.py work/train.pcap --out work/train --rule time           # the original's windows
    python ld.py caps/ --out work/x --rule domain --exfil-domain evil.example
    python ld.py list.txt --out work/x --rule hosts --attacker-hosts 10.0.0.66

Writes OUT/labels.npy (int8), OUT/packets.csv, OUT/labels.json (with the settings used),
OUT/classes.npy (int16), OUT/files.npy (int32) and OUT/qtypes.npy (uint16); row i is the i-th
DNS message in capture order, as in ng.py's outputs (format: exfil/dataset.py). Without
--exfil-domain the domains come from X.truth.json beside each capture X.pcap.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import exfil  # noqa: F401 (first: a python without the requirements says so in one line)

# isort: split
import numpy as np

from exfil import labels as lab
from exfil.captures import checked_capture_paths, map_captures, with_progress
from exfil.cli import UserError, configure, format_config, run
from exfil.dataset import begin, join_text, write_arrays, write_meta
from exfil.files import sha256_file
from exfil.logread import log_format, read_any
from exfil.memory import Releaser
from exfil.numtext import format_flag
from exfil.packets import PACKET_COLUMNS, csv_block, packet_fields

# -----------------------------------------------------------------------------
# inputs and rule
CAPTURES: list[str] = []  # captures, folders of captures, or text files listing them
OUT = ""  # output folder (required)
RULE: lab.Rule = "domain"  # labelling rule: domain (exact) | time (2018 windows) | hosts
EXFIL_DOMAIN: list[str] = []  # exfiltration domains (default: each capture's X.truth.json)
ATTACKER_HOSTS: list[str] = []  # attacker addresses for --rule hosts (default: truth sidecar)
LOGS = ""  # logs.csv for --rule time (default: X.logs.csv beside each capture)
# reading
PORTS: list[int] = [53]  # UDP/TCP ports carrying DNS
CHUNK = 8192  # capture records decoded at once (bounds memory; fits in cache)
WORKERS = 0  # processes for several captures (0 = one per core)
SCHEDULER = ""  # a Dask scheduler (tcp://host:8786): the per-capture work runs on its cluster
# -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What a worker needs: the rule, how to read, where to put its part file."""

    rule: lab.LabelRule
    ports: tuple[int, ...]
    chunk: int
    out: Path


def label_capture(path: Path, job: Job, name: str | None = None) -> dict:
    """Read one capture, label it, write its CSV rows to a part file; arrays come back.
    `name`: how outputs name the capture (the path as given, where a cluster reads another)."""
    name = name or str(path)
    truth_file = lab.sidecar(path, "truth.json")
    truth = lab.load_truth(truth_file) if truth_file else {}
    rule = job.rule.rule
    domains = list(job.rule.exfil_domains) or truth.get("exfil_domains", [])
    hosts = list(job.rule.attacker_hosts) or truth.get("attacker_hosts", [])
    listed = log_format(path) == "names"  # a `label,name` list brings its own labels
    if rule == "domain" and not domains and not listed:
        raise UserError(f"{path}: no exfiltration domain: give --exfil-domain or X.truth.json")
    if rule == "hosts" and not hosts:
        raise UserError(f"{path}: no attacker hosts: give --attacker-hosts or X.truth.json")
    if rule == "time":
        logs = Path(job.rule.logs) if job.rule.logs else lab.sidecar(path, "logs.csv")
        if logs is None:
            raise UserError(f"{path}: --rule time needs X.logs.csv beside it or --logs")
        log_times, log_exfil = lab.load_logs(logs)
    record_class = truth.get("record_class")
    files = [dict(entry, capture=name) for entry in truth.get("files", [])]
    stats: dict = {}
    parts: dict[str, list] = {"label": [], "klass": [], "file": [], "qtype": [], "time": []}
    part = job.out / f".packets.csv.part-{os.getpid()}-{uuid.uuid4().hex}"  # unique per run
    with open(part, "wb") as handle:
        memory = Releaser()
        for batch in with_progress(read_any(path, job.ports, job.chunk, stats), path):
            memory.after(batch)  # pages of earlier chunks handed back
            if rule == "domain" and listed:
                label = listed_labels(path, batch, domains)
            elif rule == "domain":
                label = lab.domain_labels(batch.qname, batch.qlen, domains)
            elif rule == "time":
                label = lab.time_labels(batch.time, log_times, log_exfil)
            else:
                label = lab.host_labels(batch.src, batch.dst, hosts)
            if record_class is not None:
                klass = record_class[np.minimum(batch.record, len(record_class) - 1)]
            else:
                klass = label.astype(np.int64)
            parts["label"].append(label)
            parts["klass"].append(klass.astype(np.int16))
            parts["file"].append(lab.file_rows(batch.record, batch.qname, batch.qlen, files))
            parts["qtype"].append(batch.qtype)
            parts["time"].append(batch.time)
            columns = packet_fields(name, batch)  # as detect.py's scores.csv spells them
            handle.write(csv_block([*map(columns.get, PACKET_COLUMNS), format_flag(label)]))
    arrays = {k: np.concatenate(v) if v else np.zeros(0, np.int16) for k, v in parts.items()}
    classes = truth.get("classes") if record_class is not None else ["benign", "malicious"]
    return {
        "path": name,
        "part": str(part),
        "stats": stats,
        "domains": domains,
        "classes": classes,
        "files": files,
        "styles": truth.get("styles", []),
        **arrays,
    }


def listed_labels(path: Path, batch, domains: list[str]) -> np.ndarray:  # noqa: ANN001
    """A name list's own labels; names listed without one take the domain rule's label."""
    given = batch.label if batch.label is not None else np.full(len(batch), -1, np.int8)
    if (given < 0).any() and not domains:
        raise UserError(f"{path}: names without a label (`label,name`) and no --exfil-domain")
    by_domain = lab.domain_labels(batch.qname, batch.qlen, domains) if domains else given
    return np.where(given >= 0, given, by_domain).astype(np.int8)


def merge(results: list[dict], out: Path, config: dict) -> None:
    """Concatenate per-capture results in order, remap class/file indices, write outputs."""
    classes: list[str] = []
    files: list[dict] = []
    styles: list[str] = []
    domains: list[str] = []
    class_rows, file_rows, captures = [], [], []
    for result in results:
        mapping = []
        for name in result["classes"]:
            if name not in classes:
                classes.append(name)
            mapping.append(classes.index(name))
        class_rows.append(np.asarray(mapping, np.int16)[result["klass"]])
        file_rows.append(np.where(result["file"] < 0, -1, result["file"] + len(files)))
        files += result["files"]
        styles += [s for s in result["styles"] if s not in styles]
        domains += [d for d in result["domains"] if d not in domains]
        captures.append(capture_summary(result))
    labels = np.concatenate([r["label"] for r in results]).astype(np.int8)
    header = ",".join([*PACKET_COLUMNS, "label"]) + "\n"
    join_text([r["part"] for r in results], out / "packets.csv", header)
    write_arrays(
        out,
        {
            "labels": labels,
            "classes": np.concatenate(class_rows),
            "files": np.concatenate(file_rows),
            "qtypes": np.concatenate([r["qtype"] for r in results]),
            "times": np.concatenate([r["time"] for r in results]),
        },
    )
    summary = {
        "rule": config["rule"],
        "exfil_domains": domains,
        "captures": captures,
        "packets": int(len(labels)),
        "malicious": int(labels.sum()),
        "classes": classes,
        "files": files,
        "styles": styles,
        "config": config,
    }
    write_meta(out, "labels.json", summary)
    report(captures, labels)


def capture_summary(result: dict) -> dict:
    """labels.json's entry of one capture: its digest, counts and skips by reason."""
    stats = dict(result["stats"])
    records, kept = stats.pop("records"), stats.pop("dns_packets")
    return {
        "path": result["path"],
        "sha256": sha256_file(result["path"]),
        "records": records,
        "dns_packets": kept,
        "malicious": int(result["label"].sum()),
        "skipped": stats,
    }


def report(captures: list[dict], labels: np.ndarray) -> None:
    """One line: records read, packets kept and malicious, skips by reason."""
    skipped: dict[str, int] = {}
    for capture in captures:
        for reason, count in capture["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    records = sum(c["records"] for c in captures)
    print(
        f"ld.py: {records} records read, {len(labels)} DNS packets kept, "
        f"{int(labels.sum())} malicious; skipped: "
        + (", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none")
    )


def main() -> None:
    config = configure(globals(), positional="CAPTURES")
    if not OUT:
        raise UserError("--out DIR is required")
    print(format_config(config))
    paths = checked_capture_paths(CAPTURES)
    out = Path(OUT).absolute()
    out = begin(out, "labels.json")  # written again last: only a complete run has it
    rule = lab.LabelRule(RULE, tuple(EXFIL_DOMAIN), tuple(ATTACKER_HOSTS), LOGS)
    job = Job(rule, tuple(PORTS), CHUNK, out)
    try:
        results = map_captures(partial(label_capture, job=job), paths, WORKERS, SCHEDULER)
        merge(results, out, config)
    finally:
        for leftover in out.glob(".packets.csv.part-*"):
            leftover.unlink(missing_ok=True)


if __name__ == "__main__":
    run(main)
