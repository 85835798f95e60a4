"""The steps the three training recipes share: load + split, tensors, threshold, save.

Kept here (not pasted into each recipe) so that a checkpoint's metadata is written one way.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from exfil.cli import UserError
from exfil.context import DEFAULT_CONTEXT
from models.checkpoint import save_checkpoint
from models.data import (
    Dataset,
    features_key,
    load_dataset,
    split_by_file_and_time,
    with_extras,
    with_side,
)
from models.distributed import Dist, print0
from models.inference import score_qnames, score_unigrams
from models.metrics import binary_metrics, choose_threshold, fpr_threshold
from models.nets import INPUTS
from models.settings import RunConfig, SplitConfig


def pick_threshold(labels: np.ndarray, scores: np.ndarray, split: SplitConfig) -> tuple[float, str]:
    """The decision threshold on validation scores and a sentence saying how it was chosen."""
    if split.threshold_rule == "fpr":
        threshold = fpr_threshold(labels, scores, split.target_fpr)
        if threshold is not None:
            return threshold, f"flags at most {split.target_fpr:g} of benign validation packets"
    return choose_threshold(labels, scores), "best F1 on validation, mid-gap below the cut"


def load_split(
    cfg: RunConfig, network: str, dist: Dist, extras: list[str] | tuple[str, ...] = ()
) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The dataset and its honest (file + time block) train/validation split.

    Unigram networks get the named `extras` (ng.py --extras) as trailing input columns, and
    with `cfg.context` the per-domain context columns too; the LSTM gets the context alone,
    as its side input.
    """
    data = load_dataset(cfg.data, need=(INPUTS[network],))
    chosen = DEFAULT_CONTEXT if cfg.context_columns is None else cfg.context_columns
    context = list(chosen) if cfg.context else []
    if INPUTS[network] == "unigrams":
        data = with_extras(data, [*[e for e in extras if e not in context], *context])
    else:
        data = with_side(data, context)
    train, val = split_by_file_and_time(data, cfg.val_files, cfg.val_time, cfg.seed)
    for name, index in (("train", train), ("validation", val)):
        if len(index) == 0 or not data.labels[index].any() and name == "train":
            raise UserError(
                f"{cfg.data}: the {name} split has no malicious packets; need more data"
            )
    print0(
        dist,
        f"data {cfg.data}: {len(data)} packets, {int(data.labels.sum())} malicious | "
        f"train {len(train)} ({int(data.labels[train].sum())} malicious) | "
        f"validation {len(val)} ({int(data.labels[val].sum())} malicious, held-out files + "
        f"last {cfg.val_time:.0%} of the capture)",
    )
    return data, train, val


def network_tensors(data: Dataset, index: np.ndarray, network: str) -> tuple[torch.Tensor, ...]:
    """The network's input tensors for the rows in `index` (no labels)."""
    if INPUTS[network] == "unigrams":
        return (torch.from_numpy(data.unigrams[index]),)
    qlen = torch.from_numpy(data.qname_len[index]).long()
    if data.extras is not None and data.extras.shape[1]:  # the side (context) columns
        side = torch.from_numpy(np.ascontiguousarray(data.extras[index]))
        return torch.from_numpy(data.qname_bytes[index]), qlen, side
    return torch.from_numpy(data.qname_bytes[index]), qlen


def training_tensors(data: Dataset, index: np.ndarray, network: str) -> tuple[torch.Tensor, ...]:
    """Input tensors followed by the labels: what `cross_entropy` batches are made of."""
    return (*network_tensors(data, index, network), torch.from_numpy(data.labels[index]).long())


def validation_scorer(data: Dataset, index: np.ndarray, network: str, batch_size: int = 65536):
    """`score(model) -> malicious probability` on fixed rows (validation, threshold fitting)."""
    if INPUTS[network] == "unigrams":
        x = data.unigrams[index]
        return lambda model: score_unigrams(model, x, batch_size)
    qb, ql = data.qname_bytes[index], data.qname_len[index]
    side = data.extras[index] if data.extras is not None and data.extras.shape[1] else None
    return lambda model: score_qnames(model, qb, ql, batch_size, side)


def fit_threshold_and_save(
    model: nn.Module,
    network: str,
    model_args: object,
    data: Dataset,
    val: np.ndarray,
    history: list | dict,
    cfg: RunConfig,
    dist: Dist,
    **extra,
) -> dict:
    """Fit the decision threshold on validation, measure there, save the checkpoint (rank 0)."""
    scores = validation_scorer(data, val, network)(model)
    threshold, rule = pick_threshold(data.labels[val], scores, cfg)
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
        "config": asdict(cfg),
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
        save_checkpoint(cfg.out, model, meta)
        print(f"saved {cfg.out}")
    return meta
