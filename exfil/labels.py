"""Labelling rules for DNS packets, and the generator's sidecar files.

Rules (1 = malicious, 0 = benign), all vectorised over a DnsBatch's columns:
- `domain`: the question name is, or ends with ".<d>" for, an exfiltration domain d (ASCII case
  folded). Exact, and the default.
- `time`: the original's window rule over `logs.csv`: a packet is malicious iff the latest log
  row at or before its time says `exfil`. Background traffic during an exfiltration is
  therefore mislabelled, as it was originally; kept to measure how noisy that is.
- `hosts`: the packet is to or from one of the given attacker addresses.

Sidecars beside `X.pcap`: `X.truth.json` (ground truth, format in the generator) and
`X.logs.csv` (`label,name,time` rows); `X.pcap.truth.json` / `X.pcap.logs.csv` are accepted too.
"""

from __future__ import annotations

import base64
import csv
import ipaddress
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from exfil.cli import UserError
from exfil.pcapformat import window

Rule = Literal["domain", "time", "hosts"]
RULES = get_args(Rule)


@dataclass(frozen=True)
class LabelRule:
    """How ld.py labels: the rule, and what it needs (empty: from each capture's sidecars)."""

    rule: Rule = "domain"
    exfil_domains: tuple[str, ...] = ()
    attacker_hosts: tuple[str, ...] = ()
    logs: str = ""  # logs.csv for the time rule (default: X.logs.csv beside each capture)


# --------------------------------------------------------------------------- sidecars
def sidecar(capture: str | os.PathLike, suffix: str) -> Path | None:
    """`X.<suffix>` or `X.pcap.<suffix>` beside capture `X.pcap`, if either exists."""
    path = Path(capture)
    for candidate in (path.with_suffix("." + suffix), path.with_name(f"{path.name}.{suffix}")):
        if candidate.is_file():
            return candidate
    return None


def load_truth(path: str | os.PathLike) -> dict:
    """The truth sidecar, with "record_class" decoded to a uint8 array (one per record)."""
    try:
        truth = json.loads(Path(path).read_text(encoding="utf-8"))
        packed = truth.get("record_class")
        if isinstance(packed, dict):
            raw = zlib.decompress(base64.b64decode(packed["data"]))
            truth["record_class"] = np.frombuffer(raw, dtype=np.uint8)
    except (OSError, ValueError, KeyError, TypeError, zlib.error) as error:
        raise UserError(f"{path}: unreadable truth sidecar ({error})") from error
    return truth


def load_logs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(times sorted, is-exfil flag per row) from a `label,name,time` logs.csv."""
    times, flags = [], []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                times.append(float(row["time"]))
                flags.append(row["label"].strip().lower() == "exfil")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: unreadable logs.csv ({error})") from error
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    return np.asarray(times, dtype=np.float64)[order], np.asarray(flags, dtype=bool)[order]


# --------------------------------------------------------------------------- rules
def domain_labels(qname: np.ndarray, qlen: np.ndarray, domains: list[str]) -> np.ndarray:
    """1 where the name equals or is under one of `domains` (case-insensitive).

    Domains are grouped by length: for each length, every long-enough name's last bytes are
    cut out once, ASCII-lower-cased and looked up among the domains of that length with one
    np.isin, so the cost grows with the number of distinct lengths, not of domains (a DGA's
    thousands of one-label domains cost what a dozen do). A match also needs a label edge
    before it (the name's start or a dot).
    """
    found = np.zeros(len(qlen), dtype=bool)
    width = qname.shape[1]
    flat = np.ascontiguousarray(qname).reshape(-1)
    by_size: dict[int, set[bytes]] = {}
    for domain in domains:
        want = domain.strip(".").lower().encode("utf-8", "surrogateescape")
        if 0 < len(want) <= width:
            by_size.setdefault(len(want), set()).add(want)
    for size, wanted in by_size.items():
        rows = np.flatnonzero(qlen >= size)
        at = np.minimum(qlen[rows] - size, width - size) + rows.astype(np.int64) * width
        tail = window(flat, at, size)
        tail = tail + 32 * ((tail >= ord("A")) & (tail <= ord("Z"))).astype(np.uint8)
        keys = np.ascontiguousarray(tail).view(f"V{size}").ravel()
        table = np.frombuffer(b"".join(sorted(wanted)), np.uint8).reshape(-1, size)
        same = np.isin(keys, np.ascontiguousarray(table).view(f"V{size}").ravel())
        edge = (qlen[rows] == size) | (flat.take(np.maximum(at - 1, 0)) == ord("."))
        found[rows[same & edge]] = True
    return found.astype(np.int8)


def time_labels(time: np.ndarray, log_times: np.ndarray, log_exfil: np.ndarray) -> np.ndarray:
    """The original window rule: the latest log row at or before each packet decides."""
    latest = np.searchsorted(log_times, time, side="right") - 1
    flags = np.concatenate([[False], log_exfil])
    return flags[np.where(np.isnan(time), -1, latest) + 1].astype(np.int8)


def address_bytes(address: str) -> bytes:
    """16 bytes as in DnsBatch.src: IPv6, or IPv4-mapped ::ffff:a.b.c.d."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError as error:
        raise UserError(f"not an IP address: {address!r}") from error
    if parsed.version == 4:
        return bytes(10) + b"\xff\xff" + parsed.packed
    return parsed.packed


def host_labels(src: np.ndarray, dst: np.ndarray, hosts: list[str]) -> np.ndarray:
    """1 where the source or destination address is one of `hosts`."""
    wanted = np.frombuffer(b"".join(address_bytes(h) for h in hosts), np.uint8).reshape(-1, 16)
    found = np.zeros(len(src), dtype=bool)
    for host in wanted:
        found |= (src == host).all(1) | (dst == host).all(1)
    return found.astype(np.int8)


def file_rows(record, qname, qlen, files: list[dict]) -> np.ndarray:  # noqa: ANN001
    """int32 index into `files` for rows inside a file's record range and domain, else -1."""
    index = np.full(len(record), -1, dtype=np.int32)
    if not len(record):
        return index
    low, high = int(record.min()), int(record.max())
    for number, entry in enumerate(files):
        if entry["last_record"] < low or entry["first_record"] > high:
            continue  # another chunk's file: its names are never looked at here
        rows = np.flatnonzero((record >= entry["first_record"]) & (record <= entry["last_record"])
                              & (index < 0))  # fmt: skip
        names = entry.get("domains") or ([entry["domain"]] if entry.get("domain") else [])
        if names and len(rows):  # a DGA's or a tag-routed tunnel's file lists every name it used
            rows = rows[domain_labels(qname[rows], qlen[rows], names).astype(bool)]
        index[rows] = number
    return index
