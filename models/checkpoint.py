"""Save and load checkpoints in one place: `{"state_dict", "meta"}`, loadable with weights_only.

`meta` is plain JSON (network, model_args, features, threshold, anomaly_threshold,
train_captures, metrics, history, config), so the next script rebuilds the model from the file
alone and knows which features it expects.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exfil.cli import UserError
from exfil.featureset import FeatureSettings
from exfil.files import atomic_path
from models.inference import (
    reconstruction_errors,
    score_qnames,
    score_unigrams,
    score_unigrams_bf16,
)
from models.nets import INPUTS, NETWORKS, build

FORMAT = "exfil-detect-checkpoint/1"
SIZE_ARGS = {  # model_args that size tensors: (least, most); outside is damage, not a model
    "dim": (1, 4096), "extras": (0, 256), "classes": (2, 16), "hidden": (1, 65536),
    "code": (1, 65536), "vocab": (1, 256), "embed": (1, 4096), "layers": (1, 8),
    "qname_len": (1, 4096), "max_len": (1, 4096), "side": (0, 256),
}  # fmt: skip


def flush_denormals(model: nn.Module) -> None:
    """Set subnormal weights to zero, in place.

    Weight decay shrinks the weights of byte values that never occur towards zero until they
    are subnormal floats; they change no output, but a CPU multiplies them several times slower
    (measured: the trained ae_clf ran at 0.25M instead of 2M packets/s on names with such bytes).
    """
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor[tensor.abs() < torch.finfo(tensor.dtype).tiny] = 0.0


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict) -> None:
    """Write atomically; tensors go to CPU so the file loads on any machine; no subnormals."""
    meta = json.loads(json.dumps({"format": FORMAT, **meta}))  # fail now if not plain JSON
    flush_denormals(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save({"state_dict": state, "meta": meta}, temporary)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from a checkpoint file; any problem is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (run the training script first)")
    _check_archive(path)
    try:
        with warnings.catch_warnings():  # junk bytes trigger torch warnings before the error
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ):
        raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated?)") from None
    if not isinstance(blob, dict) or not {"state_dict", "meta"} <= blob.keys():
        raise UserError(f"{path}: not an exfil-detect checkpoint (no state_dict/meta)")
    meta = blob["meta"]
    network = meta.get("network") if isinstance(meta, dict) else None
    if network not in NETWORKS:
        raise UserError(f"{path}: unknown network {network!r} (expected one of {list(NETWORKS)})")
    _check_meta(path, meta)
    try:
        model = build(network, meta.get("model_args", {}))
        model.load_state_dict(blob["state_dict"])
        flush_denormals(model)  # checkpoints written before this was done at save time
    except (TypeError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit the {network} network ({first})") from None
    bad = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise UserError(f"{path}: weights are not finite (NaN or inf) in {bad[0]}")
    return model.to(device).eval(), meta


def _check_archive(path: Path) -> None:
    """torch.load does not check the zip CRCs: damaged bytes would load as garbage weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):
        raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated?)") from None
    if damaged is not None:
        raise UserError(f"{path}: checkpoint damaged (checksum of {damaged} does not match)")


def _check_meta(path: Path, meta: dict) -> None:
    """Every value the scripts read from a checkpoint has the right type and a sane size."""
    threshold = meta.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise UserError(f"{path}: threshold {threshold!r} is not a number")
    if not 0.0 <= float(threshold) <= 1.0:
        raise UserError(f"{path}: threshold {threshold!r} is not a probability in [0, 1]")
    anomaly = meta.get("anomaly_threshold", 0.0)
    if isinstance(anomaly, bool) or not isinstance(anomaly, (int, float)) or not anomaly >= 0:
        raise UserError(f"{path}: anomaly_threshold {anomaly!r} is not a number >= 0")
    if not isinstance(meta.get("features"), dict):
        raise UserError(f"{path}: no feature settings (`features`); retrain with this version")
    try:
        FeatureSettings.from_meta(meta["features"])
    except (UserError, TypeError, ValueError) as error:
        raise UserError(f"{path}: {error}") from None
    args = meta.get("model_args", {})
    if not isinstance(args, dict):
        raise UserError(f"{path}: model_args is not a mapping")
    for key, value in args.items():
        sizes = value if isinstance(value, list) else [value]
        low, high = SIZE_ARGS.get(key, (None, None))
        if low is not None and not all(
            isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in sizes
        ):
            raise UserError(f"{path}: model_args {key} = {value!r} (whole numbers {low} to {high})")


def check_features(meta: dict, features_json: dict | str | Path) -> None:
    """Refuse features computed differently from the training features (scope, transform...)."""
    if not isinstance(features_json, dict):
        try:
            features_json = json.loads(Path(features_json).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UserError(f"{features_json}: unreadable features.json ({error})") from None
    expected = meta.get("features", {})
    keys = ("scope", "transform", "dim") if INPUTS.get(meta.get("network")) == "unigrams" else ()
    keys += ("qname_len",) if INPUTS.get(meta.get("network")) == "qname" else ()
    for key in (*keys, "fold_case"):
        want, got = expected.get(key), features_json.get(key)
        if key == "fold_case":  # settings saved before folding existed did not fold
            want, got = bool(want), bool(got)
        if want is not None and got != want:
            raise UserError(
                f"feature {key} is {got!r} but the {meta.get('network')} checkpoint was trained "
                f"with {want!r} (rerun ng.py with --{key.replace('_', '-')} {want})"
            )


def _need(array, name: str, network: str):
    if array is None:
        raise UserError(f"the {network} network needs {name}")
    return array


def predict_proba(
    model: nn.Module,
    meta: dict,
    unigrams: np.ndarray | None = None,
    qname_bytes: np.ndarray | None = None,
    qname_len: np.ndarray | None = None,
    batch_size: int = 65536,
    context: np.ndarray | None = None,
    precision: str = "fp32",
    threshold: float | None = None,
) -> np.ndarray:
    """Probability that each packet is malicious, float32 (N,); flag where >= meta["threshold"].

    `context`: the LSTM's side columns (the ctx_ extras it was trained with), if it has any.
    `precision` "bf16": the dense networks in bfloat16, verdicts at `threshold` (default the
    checkpoint's) kept those of float32 (models/inference.py); the LSTM stays float32.
    """
    network = meta["network"]
    if INPUTS[network] == "unigrams":
        x = np.ascontiguousarray(_need(unigrams, "unigrams", network), dtype=np.float32)
        if precision == "bf16":
            cut = float(meta["threshold"] if threshold is None else threshold)
            return score_unigrams_bf16(model, x, cut, batch_size)
        return score_unigrams(model, x, batch_size)
    qb = _need(qname_bytes, "qname_bytes", network)
    ql = _need(qname_len, "qname_len", network)
    if getattr(model, "side", 0):
        side = _need(context, "its context columns (ctx_ extras)", network)
        return score_qnames(model, qb, ql, batch_size, np.asarray(side, np.float32))
    return score_qnames(model, qb, ql, batch_size)


def anomaly_score(
    model: nn.Module, meta: dict, unigrams: np.ndarray, batch_size: int = 65536
) -> np.ndarray:
    """Reconstruction error of the ae_clf autoencoder; anomalous where >= anomaly_threshold."""
    if meta.get("network") != "ae_clf":
        raise UserError(f"anomaly scores need an ae_clf checkpoint, not {meta.get('network')}")
    return reconstruction_errors(model, np.ascontiguousarray(unigrams, np.float32), batch_size)
