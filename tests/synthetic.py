"""Tiny dataset folders in the exact ld.py + ng.py format (exfil/dataset.py), for tests.

Arrays come from the same feature recipe as ng.py's (exfil/featureset.py) and are written by
the same writer, so a change of format or recipe reaches these folders too.

Benign packets look up word-like names under popular domains (some long CDN-style hashes so the
task is not trivial); exfiltration packets are DET-style `<jobid><hex>.<domain>` names, one
domain per file, each file a contiguous run of packets interleaved with benign traffic.
"""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from exfil.context import CONTEXT_FEATURES
from exfil.dataset import write_arrays, write_meta
from exfil.features import NAME_FEATURES
from exfil.featureset import FeatureSettings

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
QTYPES = [1, 16, 15, 5, 2]  # A, TXT, MX, CNAME, NS
CLASSES = ["benign/ordinary", "benign/cdn-hash", "exfil/det", "exfil/base32"]
STYLES = ("det", "base32")  # file f uses STYLES[f % styles]


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
    qtypes = rng.choice(QTYPES, size=packets)
    qname_len = np.array([len(n) for n in names], np.int32)
    qname_bytes = np.zeros((packets, QNAME_LEN), np.uint8)
    for i, name in enumerate(names):
        qname_bytes[i, : len(name)] = np.frombuffer(name.encode(), np.uint8)
    extras = NAME_FEATURES + CONTEXT_FEATURES  # ng.py's recipe and its default columns
    settings = FeatureSettings("qname", transform, QNAME_LEN, extras)
    batch = SimpleNamespace(qname=qname_bytes, qlen=qname_len.astype(np.int64), qtype=qtypes)
    features = settings.compute(batch, context=settings.new_context())
    write_arrays(folder, {"labels": labels, "classes": classes, "files": file_rows,
                          "qtypes": qtypes, "times": 1.7e9 + np.arange(packets) * 0.05,
                          **features})  # fmt: skip
    capture = {"path": "synthetic.pcap", "sha256": f"{seed:064x}", "packets": packets}
    write_meta(
        folder,
        "labels.json",
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
    write_meta(folder, "features.json", {**settings.meta(), "packets": packets,
                                         "captures": [capture]})  # fmt: skip
    return folder
