"""The steps the three training scripts share: start, load + split, score, pick threshold, save.

Kept here (not pasted into each script) so that a checkpoint's metadata is written one way.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exfil.cli import UserError, configure, format_config
from models.checkpoint import save_checkpoint
from models.data import Dataset, features_key, load_dataset, split_by_file_and_time, with_extras
from models.distributed import Dist, print0, setup
from models.inference import score_qnames, score_unigrams
from models.metrics import binary_metrics, choose_threshold, fpr_threshold
from models.nets import INPUTS
from models.training import TrainConfig


def start(namespace: dict, choices: dict | None = None) -> tuple[dict, Dist, TrainConfig]:
    """Flags -> constants, device/DDP setup, the resolved config printed once."""
    fixed = {"DEVICE": ["auto", "cpu", "cuda"], "THRESHOLD_RULE": ["fpr", "f1"]}
    config = configure(namespace, choices={**fixed, **(choices or {})})
    dist = setup(namespace["DEVICE"], namespace["THREADS"])
    torch.manual_seed(namespace["SEED"])  # the initial weights: models are built after this
    print0(dist, f"{Path(namespace['__file__']).name} on {dist.device} x{dist.world_size}")
    print0(dist, format_config(config))
    fields = {k: config[k] for k in TrainConfig.__dataclass_fields__ if k in config}
    train = TrainConfig(**fields, monitor="val_pr_auc")  # the autoencoder stage uses val_loss
    return config, dist, train


def pick_threshold(labels: np.ndarray, scores: np.ndarray, config: dict) -> tuple[float, str]:
    """The decision threshold on validation scores and a sentence saying how it was chosen."""
    if config.get("threshold_rule", "fpr") == "fpr":
        target = config.get("target_fpr", 0.001)
        threshold = fpr_threshold(labels, scores, target)
        if threshold is not None:
            return threshold, f"flags at most {target:g} of benign validation packets"
    return choose_threshold(labels, scores), "best F1 on validation, mid-gap below the cut"


def load_split(
    folder: str,
    network: str,
    val_files: float,
    val_time: float,
    seed: int,
    dist: Dist,
    extras: list[str] | tuple[str, ...] = (),
) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The dataset and its honest (file + time block) train/validation split.

    Unigram networks get the named `extras` (ng.py --extras) as trailing input columns.
    """
    data = load_dataset(folder, need=(INPUTS[network],))
    data = with_extras(data, extras if INPUTS[network] == "unigrams" else [])
    train, val = split_by_file_and_time(data, val_files, val_time, seed)
    for name, index in (("train", train), ("validation", val)):
        if len(index) == 0 or not data.labels[index].any() and name == "train":
            raise UserError(f"{folder}: the {name} split has no malicious packets; need more data")
    print0(
        dist,
        f"data {folder}: {len(data)} packets, {int(data.labels.sum())} malicious | "
        f"train {len(train)} ({int(data.labels[train].sum())} malicious) | "
        f"validation {len(val)} ({int(data.labels[val].sum())} malicious, held-out files + "
        f"last {val_time:.0%} of the capture)",
    )
    return data, train, val


def inputs(data: Dataset, index: np.ndarray, network: str) -> tuple[torch.Tensor, ...]:
    """The network's input tensors for the rows in `index` (no labels)."""
    if INPUTS[network] == "unigrams":
        return (torch.from_numpy(data.unigrams[index]),)
    qlen = torch.from_numpy(data.qname_len[index]).long()
    return torch.from_numpy(data.qname_bytes[index]), qlen


def labelled(data: Dataset, index: np.ndarray, network: str) -> tuple[torch.Tensor, ...]:
    return (*inputs(data, index, network), torch.from_numpy(data.labels[index]).long())


def scorer(data: Dataset, index: np.ndarray, network: str, batch_size: int = 65536):
    """`score(model) -> malicious probability` on fixed rows (validation, threshold fitting)."""
    if INPUTS[network] == "unigrams":
        x = data.unigrams[index]
        return lambda model: score_unigrams(model, x, batch_size)
    qb, ql = data.qname_bytes[index], data.qname_len[index]
    return lambda model: score_qnames(model, qb, ql, batch_size)


def finish(
    model: nn.Module,
    network: str,
    model_args: object,
    data: Dataset,
    val: np.ndarray,
    history: list | dict,
    config: dict,
    dist: Dist,
    **extra,
) -> dict:
    """Fit the decision threshold on validation, measure there, save the checkpoint (rank 0)."""
    scores = scorer(data, val, network)(model)
    threshold, rule = pick_threshold(data.labels[val], scores, config)
    metrics = binary_metrics(data.labels[val], scores, threshold)
    meta = {
        "network": network,
        "model_args": asdict(model_args),
        "features": features_key(data.features),
        "threshold": threshold,
        "threshold_rule": rule,
        "train_captures": data.captures,
        "train_packets": int(len(data) - len(val)),
        "metrics": metrics,
        "history": history,
        "config": config,
        **extra,
    }
    print0(
        dist,
        f"validation at threshold {threshold:.4g}: "
        + " ".join(
            f"{k} {metrics[k]:.4f}"
            for k in ("f1", "precision", "recall", "fpr")
            if metrics[k] is not None
        ),
    )
    if dist.is_main:
        save_checkpoint(config["out"], model, meta)
        print(f"saved {config['out']}")
    return meta
