"""Tiny dataset folders in the exact ld.py + ng.py format, for tests and benchmarks.

Benign packets look up word-like names under popular domains (some long CDN-style hashes so the
task is not trivial); exfiltration packets are DET-style `<jobid><hex>.<domain>` names, one
domain per file, each file a contiguous run of packets interleaved with benign traffic.
"""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import numpy as np

from exfil.files import save_json, save_npy

QNAME_LEN = 256
WORDS = [
    "mail",
    "www",
    "api",
    "cdn",
    "static",
    "img",
    "login",
    "news",
    "shop",
    "video",
    "blog",
    "docs",
    "cloud",
    "app",
    "store",
    "maps",
    "search",
    "play",
    "edge",
    "media",
    "data",
    "sync",
    "update",
    "account",
    "help",
    "support",
    "secure",
    "portal",
]
SITES = [
    "google.com",
    "youtube.com",
    "facebook.com",
    "wikipedia.org",
    "amazon.com",
    "netflix.com",
    "github.com",
    "microsoft.com",
    "apple.com",
    "reddit.com",
    "bbc.co.uk",
    "office.com",
    "yahoo.com",
    "zoom.us",
]
NAMES = ["blue", "harbor", "green", "river", "stone", "cloud", "north", "light", "swift", "amber"]
TLDS = ["net", "com", "org", "io"]
QTYPES = ["A", "TXT", "MX", "CNAME", "NS"]
CLASSES = ["benign/ordinary", "benign/cdn-hash", "exfil/det", "exfil/base32"]
STYLES = ("det", "base32")  # file f uses STYLES[f % styles]


def unigrams(qname_bytes: np.ndarray, qname_len: np.ndarray) -> np.ndarray:
    """256-bin byte histogram of each name, value 1 + ln(count) where count > 0, else 0."""
    n = len(qname_len)
    valid = np.arange(qname_bytes.shape[1]) < qname_len[:, None]  # (N, L)
    rows = np.broadcast_to(np.arange(n)[:, None], qname_bytes.shape)[valid]
    counts = np.zeros((n, 256), np.float32)
    np.add.at(counts, (rows, qname_bytes[valid]), 1.0)
    return np.where(counts > 0, 1.0 + np.log(np.maximum(counts, 1.0)), 0.0).astype(np.float32)


EXTRAS = (
    "name_len",
    "labels",
    "longest_label",
    "digit_ratio",
    "upper_ratio",
    "other_ratio",
    "entropy",
)


def name_extras(qname_bytes: np.ndarray, qname_len: np.ndarray) -> np.ndarray:
    """extras.npy as ng.py --extras writes it (EXTRAS, in order), from the same function."""
    from types import SimpleNamespace

    from exfil.features import extras

    batch = SimpleNamespace(qname=qname_bytes, qlen=qname_len.astype(np.int64))
    return extras(batch, EXTRAS)


def _benign(rng: np.random.Generator) -> tuple[str, int]:
    if rng.random() < 0.15:  # CDN host with a hash label: long and random-looking, yet benign
        label = "".join(rng.choice(list("0123456789abcdef"), size=int(rng.integers(8, 20))))
        return f"{label}.{rng.choice(WORDS)}.{rng.choice(SITES)}", 1
    depth = int(rng.integers(0, 3))
    return ".".join([*rng.choice(WORDS, size=depth), str(rng.choice(SITES))]), 0


def _exfil(rng: np.random.Generator, job: str, domain: str, style: str) -> str:
    room = 66 - len(domain) - len(job)
    data = bytes(rng.integers(0, 256, size=room // 2, dtype=np.uint8))
    if style == "base32":  # iodine/dnscat-like: base32 labels of 30 characters
        text = base64.b32encode(data).decode().rstrip("=").lower()
        return ".".join([text[i : i + 30] for i in range(0, len(text), 30)] + [domain])
    return f"{job}{data.hex()}.{domain}"


def make_dataset(
    folder: str | Path,
    packets: int = 2000,
    seed: int = 0,
    files: int = 4,
    exfil_fraction: float = 0.15,
    scope: str = "qname",
    transform: str = "log1p",
    styles: int = 1,
) -> Path:
    """Write labels/features for `packets` synthetic packets into `folder`; return it."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    file_rows = np.full(packets, -1, np.int32)
    per_file = int(packets * exfil_fraction / max(files, 1))
    starts = np.linspace(0, packets - per_file * 3, files, endpoint=False).astype(int) + 10
    file_meta = []
    for f, start in enumerate(starts):
        run = np.arange(start, start + per_file * 3)
        rows = np.sort(rng.choice(run, size=per_file, replace=False))  # interleaved with benign
        file_rows[rows] = f
        domain = f"{rng.choice(NAMES)}{rng.choice(NAMES)}-{f}.{rng.choice(TLDS)}"
        job = "".join(rng.choice(list("abcdefghijkLMNOPQ0123456789"), size=7, replace=False))
        file_meta.append(
            {
                "file": f"file{f}.png",
                "job_id": job,
                "style": STYLES[f % styles],
                "domain": domain,
                "first_record": int(rows[0]),
                "last_record": int(rows[-1]),
                "records": per_file,
                "capture": "synthetic.pcap",
            }
        )
    names, classes, labels = [], np.zeros(packets, np.int16), (file_rows >= 0).astype(np.int8)
    for i in range(packets):
        if file_rows[i] >= 0:
            meta = file_meta[file_rows[i]]
            names.append(_exfil(rng, meta["job_id"], meta["domain"], meta["style"]))
            classes[i] = 2 + STYLES.index(meta["style"])
        else:
            name, classes[i] = _benign(rng)
            names.append(name)
    qname_len = np.array([len(n) for n in names], np.int32)
    qname_bytes = np.zeros((packets, QNAME_LEN), np.uint8)
    for i, name in enumerate(names):
        qname_bytes[i, : len(name)] = np.frombuffer(name.encode(), np.uint8)
    qtypes = rng.choice(QTYPES, size=packets)
    with open(folder / "packets.csv", "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(
            [
                "capture",
                "packet",
                "time",
                "src",
                "dst",
                "sport",
                "dport",
                "qname",
                "qtype",
                "response",
                "label",
            ]
        )
        for i in range(packets):
            out.writerow(
                [
                    "synthetic.pcap",
                    i,
                    f"{1.7e9 + i * 0.05:.6f}",
                    "10.0.0.2",
                    "10.0.0.1",
                    40000 + i % 1000,
                    53,
                    names[i],
                    qtypes[i],
                    i % 2,
                    labels[i],
                ]
            )
    save_npy(folder / "labels.npy", labels)
    save_npy(folder / "classes.npy", classes)
    save_npy(folder / "files.npy", file_rows)
    save_npy(folder / "unigrams.npy", unigrams(qname_bytes, qname_len))
    save_npy(folder / "qname_bytes.npy", qname_bytes)
    save_npy(folder / "qname_len.npy", qname_len)
    save_npy(folder / "extras.npy", name_extras(qname_bytes, qname_len))
    capture = {"path": "synthetic.pcap", "sha256": f"{seed:064x}", "packets": packets}
    save_json(
        folder / "labels.json",
        {
            "rule": "domain",
            "exfil_domains": [m["domain"] for m in file_meta],
            "captures": [
                {
                    **capture,
                    "records": packets,
                    "dns_packets": packets,
                    "malicious": int(labels.sum()),
                    "skipped": {},
                }
            ],
            "packets": packets,
            "malicious": int(labels.sum()),
            "classes": CLASSES,
            "files": file_meta,
            "styles": list(STYLES[:styles]),
        },
    )
    save_json(
        folder / "features.json",
        {
            "scope": scope,
            "transform": transform,
            "qname_len": QNAME_LEN,
            "dim": 256,
            "extras": list(EXTRAS),
            "packets": packets,
            "captures": [capture],
        },
    )
    return folder
