"""Unigram features of every DNS packet: a 256-bin byte histogram per packet, plus name bytes.

    python ng.py work/train.pcap --out work/train                 # scope qname, 1 + ln(count)
    python ng.py work/train.pcap --out work/train --scope dns --transform raw
    python ng.py caps/ --out work/x --extras name_len entropy     # optional extra features

Writes OUT/unigrams.npy (N x 256 raw byte counts, uint8: a quarter of float32's size; uint16
for the dns/udp scopes; exfil.dataset.read_unigrams applies TRANSFORM), OUT/qname_bytes.npy
(uint8, N x QNAME_LEN), OUT/qname_len.npy (int32), OUT/extras.npy (float32: the EXTRAS, then
with CONTEXT the per-domain context columns, each packet's registered domain up to that
packet) and OUT/features.json (the settings, which detect.py rebuilds from a checkpoint to
compute the same arrays); row i matches row i of ld.py's outputs for the same captures.
Arrays are streamed to disk chunk by chunk, so memory stays bounded whatever the capture size.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import exfil  # noqa: F401 (first: a python without the requirements says so in one line)

# isort: split
import numpy as np

from exfil import features as feat
from exfil.captures import checked_capture_paths, map_captures, with_progress
from exfil.cli import UserError, configure, format_config, run
from exfil.context import CONTEXT_FEATURES
from exfil.dataset import NpyStream, begin, join_npy, write_arrays, write_meta
from exfil.featureset import UNIGRAM_BINS, FeatureSettings
from exfil.files import sha256_file
from exfil.logread import read_any
from exfil.memory import Releaser

# -----------------------------------------------------------------------------
# inputs and features
CAPTURES: list[str] = []  # captures, folders of captures, or text files listing them
OUT = ""  # output folder (required)
SCOPE: feat.Scope = "qname"  # bytes counted: qname | dns (id, TTLs zeroed) | udp (leaks ports)
TRANSFORM: feat.Transform = "log1p"  # count transform: 1 + ln c | c | 1 + log2 c | ... | c / bytes
QNAME_LEN = 256  # name bytes kept per packet for the LSTM (padded with 0 or cut; 1 to 4096)
EXTRAS: list[feat.Extra] = list(feat.NAME_FEATURES)  # extra name features; none: --extras
FOLD_CASE = True  # lower-case names first: DNS 0x20 changes nothing; off: --no-fold-case
CONTEXT = True  # also the per-domain context features (exfil/context.py); off: --no-context
# reading
PORTS: list[int] = [53]  # UDP/TCP ports carrying DNS
CHUNK = 8192  # capture records decoded at once (bounds memory; fits in cache)
WORKERS = 0  # processes for several captures (0 = one per core)
SCHEDULER = ""  # a Dask scheduler (tcp://host:8786): the per-capture work runs on its cluster
# -----------------------------------------------------------------------------

_STREAMED = ("unigrams", "qname_bytes", "extras")  # part files per capture
COUNT_DTYPE = {"qname": "|u1", "dns": "<u2", "udp": "<u2"}  # names: <= 253 of a byte


@dataclass(frozen=True)
class Job:
    """What a worker needs: the feature recipe, how to read, where to put its parts."""

    features: FeatureSettings
    ports: tuple[int, ...]
    chunk: int
    out: Path


def featurize_capture(path: Path, job: Job, name: str | None = None) -> dict:
    """Stream one capture's features to hidden part files; return their names and lengths.
    `name`: how outputs name the capture (the path as given, where a cluster reads another)."""
    shown = name or str(path)
    stats: dict = {}
    tag = f"{os.getpid()}-{uuid.uuid4().hex}"  # the same capture may be given twice
    widths = {"unigrams": UNIGRAM_BINS, "qname_bytes": job.features.qname_len}
    widths["extras"] = len(job.features.extras)
    counts = COUNT_DTYPE[job.features.scope]
    streams = {
        name: NpyStream(job.out / f".{name}.part-{tag}", feat_dtype, widths[name])
        for name, feat_dtype in (("unigrams", counts), ("qname_bytes", "|u1"), ("extras", "<f4"))
    }
    counting = replace(job.features, transform="raw")  # stored as counts; read_unigrams transforms
    lengths = []
    buffer = np.zeros((0, UNIGRAM_BINS), dtype=np.float32)  # reused: fresh pages cost more
    context = job.features.new_context()  # each capture is its own vantage point: fresh state
    try:
        memory = Releaser()
        for batch in with_progress(
            read_any(path, job.ports, job.chunk, stats, job.features.scope), path
        ):
            memory.after(batch)  # pages of earlier chunks handed back
            if len(buffer) < len(batch):
                buffer = np.zeros((len(batch), UNIGRAM_BINS), dtype=np.float32)
            arrays = counting.compute(batch, out=buffer[: len(batch)], context=context)
            arrays["unigrams"] = arrays["unigrams"].astype(counts)  # exact: whole counts
            for name, stream in streams.items():
                stream.write(arrays[name])
            lengths.append(arrays["qname_len"])
    finally:
        for stream in streams.values():
            stream.close()
    qlen = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    parts = {name: str(stream.path) for name, stream in streams.items()}
    return {"path": shown, "parts": parts, "qlen": qlen, "stats": stats}


def main() -> None:
    config = configure(globals(), positional="CAPTURES")
    if not OUT:
        raise UserError("--out DIR is required")
    extras = tuple(dict.fromkeys([*EXTRAS, *(CONTEXT_FEATURES if CONTEXT else ())]))
    settings = FeatureSettings(SCOPE, TRANSFORM, QNAME_LEN, extras, FOLD_CASE)
    print(format_config(config))
    paths = checked_capture_paths(CAPTURES)
    out = Path(OUT).absolute()
    out = begin(out, "features.json")  # written again last: only a complete run has it
    job = Job(settings, tuple(PORTS), CHUNK, out)
    try:
        results = map_captures(partial(featurize_capture, job=job), paths, WORKERS, SCHEDULER)
        qlen = np.concatenate([r["qlen"] for r in results]).astype(np.int32)
        for name in _STREAMED:
            join_npy([r["parts"][name] for r in results], out / f"{name}.npy")
        write_arrays(out, {"qname_len": qlen})
        captures = [
            {"path": r["path"], "sha256": sha256_file(r["path"]), "packets": int(len(r["qlen"]))}
            for r in results
        ]
        meta = {**settings.meta(), "unigram_storage": "counts", "packets": int(len(qlen)),
                "captures": captures}  # fmt: skip
        write_meta(out, "features.json", {**meta, "ports": PORTS, "config": config})
    finally:
        for name in _STREAMED:
            for leftover in out.glob(f".{name}.part-*"):
                leftover.unlink(missing_ok=True)
    print(f"ng.py: {len(qlen)} DNS packets, scope {SCOPE}, transform {TRANSFORM} -> {out}")


if __name__ == "__main__":
    run(main)
