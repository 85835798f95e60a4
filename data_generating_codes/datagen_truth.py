"""The generator's ground truth: X.logs.csv and X.truth.json beside a capture X.pcap.

`session` (from datagen_offline or datagen_live) holds a `RecordTally` of the capture's records
(one class index and one file index each, and their times), the exfiltration plans
(datagen_plan.ExfilPlan) and the attacker script's log rows. Format: the spec's "Generator
output"; `decode_record_class` reads the per-record class back for ld.py and tests.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from pathlib import Path

import numpy as np

from exfil.files import save_json, save_text

# ---------------------------------------------------------------------------
# the sidecars


class RecordTally:
    """What the truth needs of the records, taken a chunk at a time in capture order (the
    offline writer never holds them all): the class bytes, deflated as they come (the bytes of
    zlib.compress of the whole), and each file's first and last record, times and count."""

    def __init__(self) -> None:
        self.records = self.malicious = 0
        self.files: dict[int, list[int]] = {}  # file index -> [first, last, count, ns0, ns1]
        self._deflate = zlib.compressobj(9)
        self._packed: list[bytes] = []

    def add(self, cls: np.ndarray, file: np.ndarray, ns: np.ndarray) -> None:
        """The next records: class index, file index (-1: benign) and ns timestamp of each."""
        self._packed.append(self._deflate.compress(np.asarray(cls, np.uint8).tobytes()))
        for index in np.unique(file[file >= 0]).tolist():
            where = np.flatnonzero(file == index)
            first, last = int(where[0]), int(where[-1])
            start = [self.records + first, 0, 0, int(ns[first]), 0]
            entry = self.files.setdefault(index, start)
            entry[1:3] = self.records + last, entry[2] + len(where)
            entry[4] = int(ns[last])
        self.malicious += int((file >= 0).sum())
        self.records += len(file)

    def record_class(self) -> str:
        """The record_class field's data (zlib+base64 uint8); ends the tally."""
        return base64.b64encode(b"".join(self._packed) + self._deflate.flush()).decode()


def sidecars(out: Path) -> tuple[Path, Path]:
    """X.pcap -> (X.logs.csv, X.truth.json)."""
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".logs.csv"), stem.with_name(stem.name + ".truth.json")


def truth_document(out: Path, session: dict, config: dict, mode: str, seed: int) -> dict:
    """The ground truth: per-file record ranges from the tally, classes, hosts."""
    tally: RecordTally = session["tally"]
    files = []
    for index, plan in enumerate(session["plans"]):
        if index not in tally.files:
            continue
        first, last, count, first_ns, last_ns = tally.files[index]
        files.append({
            "file": plan.path.name, "md5": hashlib.md5(plan.data).hexdigest(),
            "bytes": len(plan.data), "job_id": plan.job_id, "style": plan.style,
            "family": plan.family, "domain": plan.cfg.domain, "first_record": first,
            "last_record": last, "records": count, "start_time": first_ns / 1e9,
            "end_time": last_ns / 1e9,
        })  # fmt: skip
        if plan.received is not None:  # live/netns: did det.py's server rebuild the file?
            files[-1]["received"] = plan.received
        files[-1].update(plan.extra)  # --tool: tool, direction, md5_received; dga: domains
    # a dga (or tagged dnscat2) file lists every name it used in "domains"
    every = (d for entry in files for d in entry.get("domains", [entry["domain"]]))
    exfil_domains = list(dict.fromkeys(every))
    document = {
        "format": "exfil-detect-truth/1",
        "capture": out.name,
        "mode": mode,
        "seed": seed,
        "records": tally.records,
        "malicious_records": tally.malicious,
        "exfil_domains": exfil_domains,
        "attacker_hosts": session["attacker_hosts"],
        "server_hosts": session["server_hosts"],
        "files": files,
        "styles": list(dict.fromkeys(entry["style"] for entry in files)),
        "classes": session["classes"],
        "record_class": {"encoding": "zlib+base64 uint8", "data": tally.record_class()},
        "config": config,
    }
    if session.get("tools"):  # --tool: the real tunnel programs that ran
        document["tools"] = session["tools"]
    return document


def write_sidecars(out: Path, session: dict, config: dict, mode: str, seed: int) -> dict:
    """OUT.logs.csv and OUT.truth.json, atomically; returns the truth document."""
    logs, truth_path = sidecars(out)
    lines = ["label,name,time"] + [
        f"{label},{name},{when:.6f}" for label, name, when in session["rows"]
    ]
    save_text(logs, "\n".join(lines) + "\n")
    truth = truth_document(out, session, config, mode, seed)
    save_json(truth_path, truth)
    return truth


def decode_record_class(truth: dict) -> np.ndarray:
    """Inverse of the record_class field: one class index per capture record."""
    raw = zlib.decompress(base64.b64decode(truth["record_class"]["data"]))
    return np.frombuffer(raw, dtype=np.uint8)
