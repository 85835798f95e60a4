"""The generator's ground truth: X.logs.csv and X.truth.json beside a capture X.pcap.

`session` (from script_datagen's offline builder or datagen_live) holds one class index and one
file index per capture record, record times, the exfiltration plans (datagen_plan.ExfilPlan)
and the attacker script's log rows. Format: the spec's "Generator output"; `decode_record_class`
reads the per-record class back for ld.py and tests.
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


def sidecars(out: Path) -> tuple[Path, Path]:
    """X.pcap -> (X.logs.csv, X.truth.json)."""
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".logs.csv"), stem.with_name(stem.name + ".truth.json")


def truth_document(out: Path, session: dict, config: dict, mode: str, seed: int) -> dict:
    """The ground truth: per-file record ranges from the per-record file index, classes, hosts."""
    cls, file, ns = session["cls"], session["file"], session["ns"]
    files = []
    for index, plan in enumerate(session["plans"]):
        where = np.flatnonzero(file == index)
        if not len(where):
            continue
        first, last = int(where[0]), int(where[-1])
        files.append({
            "file": plan.path.name, "md5": hashlib.md5(plan.data).hexdigest(),
            "bytes": len(plan.data), "job_id": plan.job_id, "style": plan.style,
            "domain": plan.cfg.domain, "first_record": first, "last_record": last,
            "records": len(where), "start_time": int(ns[first]) / 1e9,
            "end_time": int(ns[last]) / 1e9,
        })  # fmt: skip
        if plan.received is not None:  # live/netns: did det.py's server rebuild the file?
            files[-1]["received"] = plan.received
    packed = base64.b64encode(zlib.compress(np.asarray(cls, np.uint8).tobytes(), 9)).decode()
    return {
        "format": "exfil-detect-truth/1",
        "capture": out.name,
        "mode": mode,
        "seed": seed,
        "records": len(cls),
        "malicious_records": int((file >= 0).sum()),
        "exfil_domains": [entry["domain"] for entry in files],
        "attacker_hosts": session["attacker_hosts"],
        "server_hosts": session["server_hosts"],
        "files": files,
        "styles": list(dict.fromkeys(entry["style"] for entry in files)),
        "classes": session["classes"],
        "record_class": {"encoding": "zlib+base64 uint8", "data": packed},
        "config": config,
    }


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
