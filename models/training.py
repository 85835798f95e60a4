"""One training loop for every network: Adam, shuffled batches, early stopping on validation.

Batches are taken by index from tensors that sit on the device once (the datasets are small),
with the DistributedSampler deciding each process's share, so one process and torchrun run the
same lines. The weights of the best validation epoch are restored at the end.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from models.distributed import Dist, agree, print0, unwrap, wrap
from models.metrics import binary_metrics


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 3  # epochs without a better validation score before stopping
    monitor: str = "val_loss"  # validation key that decides early stopping (val_loss: lower)
    seed: int = 1
    dry_run: bool = False  # one batch, one epoch: a smoke test of the whole script


LossFn = Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]
ValidateFn = Callable[[nn.Module], dict]


def fit(
    model: nn.Module,
    tensors: tuple[torch.Tensor, ...],
    loss_fn: LossFn,
    validate: ValidateFn,
    cfg: TrainConfig,
    dist: Dist,
    desc: str = "train",
) -> list[dict]:
    """Train `model` in place on `tensors` (rows = samples); return the per-epoch history.

    `loss_fn(net, batch)` gives the mean loss of one batch; `validate(model)` returns a dict with
    `cfg.monitor` in it (val_loss: lower is better; any other key: higher is better), computed
    on the whole validation set by every rank.
    """
    torch.manual_seed(cfg.seed)
    tensors = tuple(t.to(dist.device) for t in tensors)
    net = wrap(model, dist)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = DistributedSampler(
        range(len(tensors[0])), num_replicas=dist.world_size, rank=dist.rank, seed=cfg.seed
    )
    history: list[dict] = []
    sign = 1.0 if cfg.monitor == "val_loss" else -1.0  # minimise sign * monitored value
    best, best_loss = float("inf"), float("inf")
    best_state, waited = copy.deepcopy(unwrap(net).state_dict()), 0
    show = dist.is_main and sys.stderr.isatty()
    for epoch in range(1 if cfg.dry_run else cfg.epochs):
        sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on every rank
        index = torch.tensor(list(sampler), device=dist.device)
        starts = range(0, len(index), cfg.batch_size)
        if cfg.dry_run:
            starts = starts[:1]
        net.train()
        began, total, steps = time.perf_counter(), 0.0, 0
        for start in tqdm(starts, desc=f"{desc} {epoch + 1}", disable=not show, leave=False):
            pick = index[start : start + cfg.batch_size]
            loss = loss_fn(net, tuple(t[pick] for t in tensors))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        record = {"epoch": epoch + 1, "train_loss": total / max(steps, 1)}
        record.update(validate(unwrap(net)))
        record["seconds"] = round(time.perf_counter() - began, 3)
        history.append(record)
        print0(dist, f"{desc} epoch {epoch + 1:3d} | " + " | ".join(_fmt(record)))
        score = sign * (record.get(cfg.monitor) if record.get(cfg.monitor) is not None else 0.0)
        loss = record.get("val_loss")
        loss = float("inf") if loss is None else float(loss)
        # a tie on the monitored score (PR-AUC saturates at 1 on easy validation sets) goes to
        # the lower validation loss: the better-calibrated epoch, not merely the first
        tied = abs(score - best) <= 1e-7 and loss < best_loss - 1e-7
        if score < best - 1e-7 or tied:
            best, best_loss, waited = min(score, best), loss, 0
            best_state = copy.deepcopy(unwrap(net).state_dict())
        else:
            waited += 1
        if agree(waited >= cfg.patience, dist):
            print0(dist, f"{desc}: no better {cfg.monitor} for {cfg.patience} epochs, stopping")
            break
    unwrap(net).load_state_dict(best_state)
    return history


def _fmt(record: dict) -> list[str]:
    return [
        f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in record.items()
        if k != "epoch" and v is not None
    ]


# --------------------------------------------------------------------------- validation helpers


def classifier_validation(score_fn: Callable[[nn.Module], np.ndarray], labels: np.ndarray):
    """Build `validate(model)`: log-loss, F1 at 0.5, ROC-AUC and PR-AUC of the probability.

    PR-AUC (average precision) is what classifiers stop on: it does not depend on a
    threshold, and the log-loss is dominated by confident misses on held-out files of a style
    the model has not seen, which grows while everything else still improves.
    """
    labels = np.asarray(labels).astype(np.float64)

    def validate(model: nn.Module) -> dict:
        p = np.clip(score_fn(model).astype(np.float64), 1e-7, 1 - 1e-7)
        loss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
        m = binary_metrics(labels, p, 0.5)
        return {
            "val_loss": loss,
            "val_f1": m["f1"],
            "val_roc_auc": m["roc_auc"],
            "val_pr_auc": m["pr_auc"],
        }

    return validate


def cross_entropy(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Loss of a classifier batch (inputs..., labels): the last tensor holds the labels."""
    *inputs, y = batch
    return nn.functional.cross_entropy(net(*inputs), y)
