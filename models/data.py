"""Load one dataset folder (ld.py + ng.py outputs), check it is whole, split it honestly.

Honest split: packets of one exfiltrated file are all in train or all in validation (random
packet splits would leak a file's neighbouring pieces), and benign traffic is split by time
(the last block of the capture), so validation looks like "later traffic, unseen files".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from exfil.cli import UserError
from exfil.dataset import (
    ARRAYS,
    capture_digests,
    read_array,
    read_json,
    read_unigrams,
    write_arrays,
    write_meta,
)

# --------------------------------------------------------------------------- loading


@dataclass
class Dataset:
    folder: Path
    labels: np.ndarray  # (N,) int8, 1 = malicious
    features: dict  # features.json
    info: dict  # labels.json
    classes: np.ndarray | None = None  # (N,) int16
    files: np.ndarray | None = None  # (N,) int32, -1 = not part of a file
    qtypes: np.ndarray | None = None  # (N,) uint16
    times: np.ndarray | None = None  # (N,) float64: per-domain evaluation, never a feature
    unigrams: np.ndarray | None = None  # (N, dim) float32 (+ extras, see with_extras)
    qname_bytes: np.ndarray | None = None  # (N, qname_len) uint8
    qname_len: np.ndarray | None = None  # (N,) int32
    extras: np.ndarray | None = None  # (N, len(features["extras"])) float32, from ng.py

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def captures(self) -> list[str]:
        """SHA-256 of the captures this folder was made from (to catch test-on-train)."""
        return capture_digests(self.info)

    def arrays(self) -> dict[str, np.ndarray | None]:
        """Every per-packet array by field name (the format's fields), labels included."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in ARRAYS}

    def replace_arrays(self, **arrays) -> Dataset:
        """The same folder and metadata with other arrays (the rest kept)."""
        return Dataset(self.folder, features=self.features, info=self.info, **{
            **self.arrays(), **arrays,
        })  # fmt: skip

    def subset(self, index: np.ndarray) -> Dataset:
        pick = {k: (v[index] if v is not None else None) for k, v in self.arrays().items()}
        return self.replace_arrays(**pick)


def load_dataset(
    folder: str | Path, need: tuple[str, ...] = ("unigrams", "qname"), min_classes: int = 2
) -> Dataset:
    """Read a dataset folder; every inconsistency is a UserError with one line.

    `need` lists the inputs the caller uses ("unigrams", "qname"); others are loaded if present.
    `min_classes=2` refuses data with one class only (a classifier cannot be trained on it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such dataset folder (run ld.py and ng.py first)")
    labels = read_array(folder, "labels")
    info = read_json(folder, "labels.json")
    features = read_json(folder, "features.json")
    if capture_digests(info) != capture_digests(features):
        raise UserError(
            f"{folder}: labels.json and features.json come from different captures "
            "(rerun ld.py and ng.py on the same captures)"
        )
    n = len(labels)
    if labels.ndim != 1:
        raise UserError(f"{folder}/labels.npy: expected one label per packet, shape {labels.shape}")
    if n == 0:
        raise UserError(f"{folder}: empty dataset (0 packets); was the capture empty?")
    wanted = {"unigrams": ["unigrams"], "qname": ["qname_bytes", "qname_len"]}
    required = {name for key in need for name in wanted[key]}
    arrays = {}
    for name in ARRAYS:
        if name == "labels" or (name not in required and not (folder / f"{name}.npy").exists()):
            continue
        arrays[name] = (read_unigrams(folder, features) if name == "unigrams"
                        else read_array(folder, name))  # fmt: skip
        if len(arrays[name]) != n:
            raise UserError(
                f"{folder}: {name} has {len(arrays[name])} rows but labels.npy has {n} "
                "(folder mixes outputs of different runs: rerun ld.py and ng.py)"
            )
    for name, meta in (("labels.json", info), ("features.json", features)):
        if meta.get("packets", n) != n:
            raise UserError(f"{folder}: {name} says {meta['packets']} packets, labels.npy {n}")
    if "unigrams" in arrays and arrays["unigrams"].shape[1:] != (features.get("dim", 256),):
        raise UserError(f"{folder}/unigrams.npy: shape {arrays['unigrams'].shape}")
    if not np.isin(labels, (0, 1)).all():
        raise UserError(f"{folder}/labels.npy: labels must be 0 or 1")
    present = np.unique(labels)
    if len(present) < min_classes:
        kind = "malicious" if present[0] == 1 else "benign"
        raise UserError(f"{folder}: all {n} packets are {kind}; need both classes")
    return Dataset(folder, labels, features, info, **arrays)


def features_key(features: dict) -> dict:
    """The feature settings a model depends on (stored in checkpoints, compared at load)."""
    key = {k: features.get(k) for k in ("scope", "transform", "qname_len", "dim")}
    fold = bool(features.get("fold_case", False))
    return {**key, "extras": list(features.get("extras") or []), "fold_case": fold}


def _extra_columns(data: Dataset, names: list[str]) -> np.ndarray:
    """The named columns of extras.npy, in that order (ng.py may have written more)."""
    have = list(data.features.get("extras") or [])
    missing = [n for n in names if n not in have]
    if data.extras is None or missing:
        raise UserError(
            f"{data.folder}: extra features {missing or names} missing "
            f"(rerun ng.py with --extras {' '.join(names)})"
        )
    return data.extras[:, [have.index(n) for n in names]]


def with_extras(data: Dataset, names: list[str] | tuple[str, ...]) -> Dataset:
    """`data` whose unigrams carry the named extra features as trailing columns.

    The columns are picked by name from extras.npy (ng.py may have written more), and
    features["extras"] says which, in order: what detect.py appends to its unigrams. Empty
    `names`: the unigrams alone, and features["extras"] = [] (a model that used none).
    """
    names = list(names)
    out = data.replace_arrays()
    out.features = {**data.features, "extras": names}
    if not names:
        return out
    columns = _extra_columns(data, names)
    if data.unigrams is None:
        raise UserError(f"{data.folder}: unigrams.npy missing (run ng.py)")
    out.unigrams = np.hstack([data.unigrams, columns]).astype(np.float32)
    return out


def with_side(data: Dataset, names: list[str] | tuple[str, ...]) -> Dataset:
    """`data` whose `extras` are the named columns only, in that order: the LSTM's side input
    (the per-domain context beside the name). features["extras"] says which."""
    names = list(names)
    out = data.replace_arrays()
    out.features = {**data.features, "extras": names}
    out.extras = _extra_columns(data, names) if names else np.zeros((len(data), 0), np.float32)
    return out


def model_inputs(data: Dataset, meta: dict) -> dict:
    """predict_proba's keyword inputs for a checkpoint (its network and its extras)."""
    names = meta.get("features", {}).get("extras") or []
    if meta["network"] != "lstm":
        return {"unigrams": with_extras(data, names).unigrams}
    side = with_side(data, names).extras if names else None
    return {"qname_bytes": data.qname_bytes, "qname_len": data.qname_len, "context": side}


# --------------------------------------------------------------------------- split


def file_styles(data: Dataset, ids: np.ndarray) -> list:
    """The style of each file id (labels.json "files"[id]["style"]); None where unknown."""
    entries = data.info.get("files", []) if isinstance(data.info, dict) else []
    return [
        entries[i].get("style") if 0 <= i < len(entries) and isinstance(entries[i], dict) else None
        for i in ids
    ]


def file_families(info: dict) -> list[str]:
    """The tunnel family of each file in labels.json "files" (older truth: its style)."""
    entries = info.get("files", []) if isinstance(info, dict) else []
    return [
        str(e.get("family") or e.get("style") or "?") if isinstance(e, dict) else "?"
        for e in entries
    ]


def packet_families(data: Dataset) -> np.ndarray:
    """Per packet: the family of its exfiltrated file, "" for packets outside files."""
    families = np.array([*file_families(data.info), ""], object)
    files = data.files if data.files is not None else np.full(len(data), -1)
    return families[np.where(files >= 0, files, len(families) - 1)]


def held_out_files(ids: np.ndarray, styles: list, count: int, seed: int) -> np.ndarray:
    """A seeded choice of `count` file ids to validate on, stratified by style.

    Each file instance has one style and a capture holds only a dozen instances over about nine
    styles, so a plain random choice often takes every instance of a style out of training (the
    networks then never see that encoding: the LSTM scored ~0 on such styles). Here a file is
    held out only while its style keeps at least one instance in training; styles with a single
    instance stay in training (so fewer than `count` may be held). Still whole files, never
    packets. If no style has two instances, one random file is held out (validation needs
    malicious packets).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    left = {}  # style -> instances still in training
    for style in styles:
        left[style] = left.get(style, 0) + 1
    held = []
    for i in order:
        if len(held) == count:
            break
        if left[styles[i]] >= 2:
            left[styles[i]] -= 1
            held.append(ids[i])
    if not held and len(ids) >= 2:
        held.append(ids[order[0]])
    return np.array(held, dtype=np.int32)


def split_by_file_and_time(
    data: Dataset, val_files: float = 0.25, val_time: float = 0.2, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_index, val_index): held-out exfiltrated files + the last block of the rest.

    Packets that belong to a file (files.npy >= 0) follow their file: up to `val_files` of the
    files go to validation, stratified by style (see held_out_files; at least one when there
    are two or more). All other packets go to validation when they lie in the last `val_time`
    of the capture (row order is capture order). Without file ids the time block alone decides.
    """
    n = len(data)
    files = data.files if data.files is not None else np.full(n, -1, np.int32)
    ids = np.unique(files[files >= 0])
    held = np.array([], dtype=np.int32)
    if len(ids) >= 2:
        count = min(len(ids) - 1, max(1, round(val_files * len(ids))))
        held = held_out_files(ids, file_styles(data, ids), count, seed)
    loose = files < 0  # benign traffic and malicious packets with no file id
    if len(ids) < 2:
        loose = np.ones(n, dtype=bool)  # fall back to a pure time split
    cut = int(np.floor(n * (1.0 - val_time)))
    in_block = np.arange(n) >= cut
    val = (loose & in_block) | (~loose & np.isin(files, held))
    return np.flatnonzero(~val), np.flatnonzero(val)


def save_dataset(data: Dataset, folder: str | Path) -> Path:
    """Write a (subset) Dataset as a dataset folder that load_dataset and the scripts accept."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_arrays(folder, {k: v for k, v in data.arrays().items() if v is not None})
    n, malicious = len(data), int(data.labels.sum())
    write_meta(folder, "labels.json", {**data.info, "packets": n, "malicious": malicious})
    floats = {k: v for k, v in data.features.items() if k != "unigram_storage"}  # as loaded
    write_meta(folder, "features.json", {**floats, "packets": n})
    return folder
