"""Unigram features of every DNS packet: a 256-bin byte histogram per packet, plus name bytes.

    python ng.py work/train.pcap --out work/train                 # scope qname, 1 + ln(count)
    python ng.py work/train.pcap --out work/train --scope dns --transform raw
    python ng.py caps/ --out work/x --extras name_len entropy     # optional extra features

Writes OUT/unigrams.npy (float32, N x 256), OUT/qname_bytes.npy (uint8, N x QNAME_LEN),
OUT/qname_len.npy (int32), OUT/features.json (+ OUT/extras.npy when --extras is given); row i
matches row i of ld.py's outputs for the same captures. Arrays are streamed to disk chunk by
chunk, so memory stays bounded whatever the capture size.
"""

from __future__ import annotations

import os
import uuid
from functools import partial
from pathlib import Path

import numpy as np

from exfil import features as feat
from exfil.cli import UserError, configure, format_config, run
from exfil.files import atomic_path, save_json, save_npy, sha256_file
from exfil.pcapread import checked_capture_paths, map_captures, read_dns, with_progress

# -----------------------------------------------------------------------------
# inputs and features
CAPTURES: list[str] = []  # captures, folders of captures, or text files listing them
OUT = ""  # output folder (required)
SCOPE = "qname"  # bytes counted: qname | dns (id and TTLs zeroed) | udp (original; leaks ports)
TRANSFORM = "log1p"  # count transform: log1p (1 + ln c) | raw | log2 | log10 | l1
QNAME_LEN = 256  # name bytes kept per packet for the LSTM (padded with 0 or cut)
EXTRAS = list(feat.NAME_FEATURES)  # extra name features (see EXTRA_FEATURES); none: --extras
# reading
PORTS: list[int] = [53]  # UDP/TCP ports carrying DNS
CHUNK = 8192  # capture records decoded at once (bounds memory; fits in cache)
WORKERS = 0  # processes for several captures (0 = one per core)
# -----------------------------------------------------------------------------

_PARTS = ("unigrams", "qname_bytes", "extras")


class NpyStream:
    """Append rows to a .npy file without knowing the final row count in advance.

    The header is written padded to a fixed 128 bytes and rewritten with the true shape at the
    end, so the data is never copied.
    """

    HEADER = 128

    def __init__(self, path: Path, dtype: str, width: int) -> None:
        self.path, self.dtype, self.width, self.rows = path, np.dtype(dtype), width, 0
        self.handle = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.handle.write(self._header())

    def _header(self) -> bytes:
        text = f"{{'descr': '{self.dtype.str}', 'fortran_order': False, "
        text += f"'shape': ({self.rows}, {self.width}), }}"
        text = text.ljust(self.HEADER - 10 - 1) + "\n"
        return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()

    def write(self, rows: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        self.handle.seek(0)
        self.handle.write(self._header())
        self.handle.close()


def featurize_capture(path: Path, out: Path) -> dict:
    """Stream one capture's features to hidden part files; return their names and lengths."""
    stats: dict = {}
    tag = f"{os.getpid()}-{uuid.uuid4().hex}"  # the same capture may be given twice
    streams = {
        "unigrams": NpyStream(out / f".unigrams.part-{tag}", "<f4", 256),
        "qname_bytes": NpyStream(out / f".qname_bytes.part-{tag}", "|u1", QNAME_LEN),
        "extras": NpyStream(out / f".extras.part-{tag}", "<f4", len(EXTRAS)),
    }
    lengths = []
    buffer = np.zeros((0, 256), dtype=np.float32)  # reused: fresh pages cost more than zeroing
    try:
        for batch in with_progress(read_dns(path, PORTS, CHUNK, stats), path):
            if len(buffer) < len(batch):
                buffer = np.zeros((len(batch), 256), dtype=np.float32)
            rows = buffer[: len(batch)]  # unigrams() overwrites every cell
            streams["unigrams"].write(feat.unigrams(batch, SCOPE, TRANSFORM, out=rows))
            names, size = feat.qname_matrix(batch, QNAME_LEN)
            streams["qname_bytes"].write(names)
            lengths.append(size)
            if EXTRAS:
                streams["extras"].write(feat.extras(batch, tuple(EXTRAS)))
    finally:
        for stream in streams.values():
            stream.close()
    qlen = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    parts = {name: str(stream.path) for name, stream in streams.items()}
    return {"path": str(path), "parts": parts, "qlen": qlen, "stats": stats}


def join(parts: list[str], final: Path) -> None:
    """Concatenate .npy part files (same dtype and width) into one, atomically."""
    if len(parts) == 1:
        os.replace(parts[0], final)
        return
    arrays = [np.load(part, mmap_mode="r") for part in parts]
    rows = sum(len(a) for a in arrays)
    header = np.lib.format.header_data_from_array_1_0(arrays[0])
    header["shape"] = (rows, *arrays[0].shape[1:])
    with atomic_path(final) as temporary, open(temporary, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for array in arrays:
            for start in range(0, len(array), 1 << 16):
                handle.write(np.ascontiguousarray(array[start : start + (1 << 16)]).tobytes())


def main() -> None:
    choices = {"SCOPE": feat.SCOPES, "TRANSFORM": feat.TRANSFORMS, "EXTRAS": feat.EXTRA_FEATURES}
    config = configure(globals(), positional="CAPTURES", choices=choices)
    if not OUT:
        raise UserError("--out DIR is required")
    if not 1 <= QNAME_LEN <= 4096:
        raise UserError("--qname-len must be between 1 and 4096")
    print(format_config(config))
    paths = checked_capture_paths(CAPTURES)
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = map_captures(partial(featurize_capture, out=out), paths, WORKERS)
        qlen = np.concatenate([r["qlen"] for r in results]).astype(np.int32)
        for name in _PARTS if EXTRAS else _PARTS[:2]:
            join([r["parts"][name] for r in results], out / f"{name}.npy")
        save_npy(out / "qname_len.npy", qlen)
        captures = [
            {"path": r["path"], "sha256": sha256_file(r["path"]), "packets": int(len(r["qlen"]))}
            for r in results
        ]
        meta = {
            "scope": SCOPE,
            "transform": TRANSFORM,
            "qname_len": QNAME_LEN,
            "dim": 256,
            "packets": int(len(qlen)),
            "captures": captures,
            "ports": PORTS,
            "extras": list(EXTRAS),
            "config": config,
        }
        save_json(out / "features.json", meta)
    finally:
        for name in _PARTS:
            for leftover in out.glob(f".{name}.part-*"):
                leftover.unlink(missing_ok=True)
    print(f"ng.py: {len(qlen)} DNS packets, scope {SCOPE}, transform {TRANSFORM} -> {out}")


if __name__ == "__main__":
    run(main)
