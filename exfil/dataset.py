"""The dataset folder format, owned here: which arrays, their dtypes, the two JSON files, parts.

A dataset folder is what ld.py (labels) and ng.py (features) write for the same captures and
what training, evaluation and leave-one-out read; row i of every array is the i-th DNS message
in capture order.

    labels.npy   int8  (N,)     1 = malicious                      ld.py
    classes.npy  int16 (N,)     index into labels.json "classes"   ld.py
    files.npy    int32 (N,)     index into labels.json "files", -1 ld.py
    qtypes.npy   uint16 (N,)    question type                      ld.py
    times.npy    float64 (N,)   capture time, s (evaluation only)  ld.py
    unigrams.npy uint8 (N, 256) raw byte counts (uint16 for the dns/udp scopes), the
                 transform of features.json applied by read_unigrams   ng.py
                 (float32 transformed values in folders written before)
    qname_bytes.npy uint8 (N, qname_len), qname_len.npy int32 (N,) ng.py
    extras.npy   float32 (N, len(features.json "extras"))          ng.py
    labels.json / features.json: settings, captures (with SHA-256), counts, FORMAT

Writers stream rows into hidden part files (one per capture and process) and join them here.
Each writer's JSON is its manifest: `begin` removes the old one before any array is written,
and `write_meta` writes the new one after the last, so a folder whose labels.json and
features.json are both there (and name the same captures) is complete, whatever was
interrupted (Ctrl-C, a full disk) in between.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from exfil.cli import UserError
from exfil.files import atomic_path, save_json

FORMAT = "exfil-detect-dataset/1"
ARRAYS = {  # field (file = field + ".npy") -> dtype
    "labels": np.int8,
    "classes": np.int16,
    "files": np.int32,
    "qtypes": np.uint16,
    "times": np.float64,
    "unigrams": np.float32,
    "qname_bytes": np.uint8,
    "qname_len": np.int32,
    "extras": np.float32,
}
LABEL_FIELDS = ("labels", "classes", "files", "qtypes", "times")  # written by ld.py
FEATURE_FIELDS = ("unigrams", "qname_bytes", "qname_len", "extras")  # written by ng.py
HINT = "run ld.py and ng.py into it"


# --------------------------------------------------------------------------- reading


def read_json(folder: Path, name: str) -> dict:
    """labels.json or features.json; a missing or foreign file is a one-line UserError."""
    path = Path(folder) / name
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing ({HINT})") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format", FORMAT) != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{path}: format {found!r}, this version reads {FORMAT!r}")
    return meta


def read_array(folder: Path, field: str) -> np.ndarray:
    """One array of the folder in its format's dtype (a safe cast from a compatible one)."""
    path, dtype = Path(folder) / f"{field}.npy", ARRAYS[field]
    array = _load_npy(path)
    if array.dtype != dtype:
        try:
            array = array.astype(dtype, casting="same_kind")
        except TypeError:
            raise UserError(f"{path}: dtype {array.dtype}, expected {np.dtype(dtype)}") from None
    return array


def _load_npy(path: Path) -> np.ndarray:
    """An .npy file of the folder; missing or unreadable is a one-line UserError."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: missing ({HINT})") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable .npy file ({error})") from None


def read_unigrams(folder: Path, features: dict) -> np.ndarray:
    """unigrams.npy as the networks read it, float32 (N, 256): stored counts (2-4x smaller than
    the floats) go through features.json's transform here, the one place every consumer uses;
    a folder of floats (written before counts were stored) is read as it is."""
    from exfil.features import transform_counts

    path = Path(folder) / "unigrams.npy"
    if features.get("unigram_storage") != "counts":
        return read_array(folder, "unigrams")
    counts = _load_npy(path)
    if counts.dtype.kind != "u" or counts.ndim != 2:
        raise UserError(f"{path}: features.json says counts, found {counts.dtype} {counts.shape}")
    return transform_counts(counts, features.get("transform", "log1p"))


def capture_digests(meta: dict) -> list[str]:
    """SHA-256 of the captures a labels.json / features.json was made from, in order."""
    return [c.get("sha256", "") for c in meta.get("captures", []) if isinstance(c, dict)]


# --------------------------------------------------------------------------- writing


def begin(folder: Path, manifest: str) -> Path:
    """Before writing: the folder is writable, and its old `manifest` is gone (see above)."""
    from exfil.files import writable_folder

    folder = writable_folder(folder, "dataset")
    (folder / manifest).unlink(missing_ok=True)
    return folder


def write_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each array as FIELD.npy in its format's dtype, atomically."""
    from exfil.files import save_npy

    for field, array in arrays.items():
        save_npy(Path(folder) / f"{field}.npy", np.asarray(array, dtype=ARRAYS[field]))


def write_meta(folder: Path, name: str, meta: dict) -> None:
    """labels.json or features.json, stamped with the format version."""
    save_json(Path(folder) / name, {"format": FORMAT, **meta})


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


def join_npy(parts: list[str], final: Path) -> None:
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


def join_text(parts: list[str], final: Path, header: str) -> None:
    """A header line, then each text part file in order, as one file, atomically."""
    with atomic_path(final) as temporary, open(temporary, "wb") as handle:
        handle.write(header.encode())
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 22)
