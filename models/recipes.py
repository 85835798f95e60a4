"""Training recipes, one per network: settings in, checkpoint out.

    meta = train_clf(ClfRun(...), Dist())      # in-process (leave-one-out does this)
    launch(train_clf, cfg, "train_clf.py")     # what a train_*.py script does: device, DDP, run

The scripts only turn their constants into a settings object; everything a run does is here,
so a run from the shell, under torchrun and inside leave-one-out is the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from exfil.cli import format_config
from exfil.files import writable_folder
from models.augment import with_session_copies, with_unigram_session_copies
from models.distributed import Dist, print0, setup, teardown
from models.inference import reconstruction_errors
from models.metrics import binary_metrics
from models.nets import (
    AEClassifier,
    AEConfig,
    LSTMConfig,
    MLPClassifier,
    MLPConfig,
    QnameLSTM,
    fit_scaling,
)
from models.pipeline import (
    fit_threshold_and_save,
    load_split,
    network_tensors,
    training_tensors,
    validation_scorer,
)
from models.settings import AEClfRun, ClfRun, LSTMRun, RunConfig
from models.training import classifier_validation, cross_entropy, fit

Recipe = Callable[[RunConfig, Dist], dict]


def launch(recipe: Recipe, cfg: RunConfig, script: str) -> dict:
    """Device and torchrun setup, the resolved settings printed once, the run, teardown."""
    writable_folder(Path(cfg.out).parent, "checkpoint")  # now, not after the training
    dist = setup(cfg.device, cfg.threads)
    print0(dist, f"{script} on {dist.device} x{dist.world_size}")
    print0(dist, format_config(asdict(cfg)))
    try:
        return recipe(cfg, dist)
    finally:
        teardown(dist)


def _classifier(model, network: str, data, train, val, cfg: RunConfig, dist: Dist, desc: str):  # noqa: ANN001
    """Stage every recipe ends with: cross-entropy, early stopping on validation PR-AUC.
    The training rows get cfg.augment redrawn copies of each exfiltration packet."""
    validate = classifier_validation(validation_scorer(data, val, network), data.labels[val])
    seen = with_unigram_session_copies(data, train, cfg.augment, cfg.seed)
    print0(dist, f"training rows: {len(train)} packets + {len(seen) - len(train)} redrawn copies")
    tensors = training_tensors(seen, np.arange(len(seen)), network)
    return fit(model, tensors, cross_entropy, validate, cfg.train_config(), dist, desc)


def train_clf(cfg: ClfRun, dist: Dist) -> dict:
    """Fully connected classifier on unigrams + name features."""
    torch.manual_seed(cfg.seed)  # the initial weights: models are built after this
    data, train, val = load_split(cfg, "clf", dist, cfg.extras)
    args = MLPConfig(
        dim=data.unigrams.shape[1],
        hidden=tuple(cfg.hidden),
        extras=len(data.features["extras"]),
        input_dropout=cfg.input_dropout,
    )
    model = MLPClassifier(args)
    fit_scaling(model, torch.from_numpy(data.unigrams[train]))  # extras' statistics
    history = _classifier(model, "clf", data, train, val, cfg, dist, "clf")
    return fit_threshold_and_save(model, "clf", args, data, val, history, cfg, dist)


def _mse(net: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    (x,) = batch
    target = getattr(net, "module", net).target(x)  # DDP wraps the autoencoder in .module
    return torch.nn.functional.mse_loss(net(x), target)


def _fit_autoencoder(model: AEClassifier, data, train, val, cfg: AEClfRun, dist: Dist):  # noqa: ANN001
    """Stage 1: the autoencoder learns to rebuild (benign) traffic; its anomaly threshold."""
    ae_train = train[data.labels[train] == 0] if cfg.ae_benign_only else train
    x_val = data.unigrams[val[data.labels[val] == 0]]

    def validate_ae(net: torch.nn.Module) -> dict:
        errors = reconstruction_errors(model, x_val) if len(x_val) else np.zeros(1)
        return {"val_loss": float(errors.mean())}

    ae_cfg = cfg.train_config(epochs=cfg.ae_epochs, lr=cfg.ae_lr, monitor="val_loss")
    tensors = network_tensors(data, ae_train, "ae_clf")
    history = fit(model.autoencoder, tensors, _mse, validate_ae, ae_cfg, dist, "autoencoder")
    errors = reconstruction_errors(model, data.unigrams[val])
    benign_errors = errors[data.labels[val] == 0]
    if len(benign_errors) == 0:  # no benign validation traffic: fall back to training traffic
        benign_errors = reconstruction_errors(model, data.unigrams[ae_train])
    threshold = float(np.quantile(benign_errors, cfg.anomaly_quantile))
    anomaly = binary_metrics(data.labels[val], errors, threshold)
    print0(
        dist,
        f"anomaly threshold {threshold:.4g} (reconstruction MSE): validation "
        f"recall {anomaly['recall']} fpr {anomaly['fpr']}",
    )
    return history, threshold, anomaly


def train_ae_clf(cfg: AEClfRun, dist: Dist) -> dict:
    """Autoencoder (stage 1), then a classifier on a copy of its encoder (stage 2)."""
    torch.manual_seed(cfg.seed)
    data, train, val = load_split(cfg, "ae_clf", dist, cfg.extras)
    dim = data.unigrams.shape[1]
    args = AEConfig(dim=dim, hidden=cfg.hidden, code=cfg.code, extras=len(data.features["extras"]),
                    input_dropout=cfg.input_dropout)  # fmt: skip
    model = AEClassifier(args)
    fit_scaling(model, torch.from_numpy(data.unigrams[train]))  # extras' statistics
    ae_history, threshold, anomaly = _fit_autoencoder(model, data, train, val, cfg, dist)
    model.start_from_autoencoder()  # stage 2: all layers of the copy fine-tuned
    clf_history = _classifier(model, "ae_clf", data, train, val, cfg, dist, "classifier")
    history = {"autoencoder": ae_history, "classifier": clf_history}
    return fit_threshold_and_save(
        model, "ae_clf", args, data, val, history, cfg, dist,
        anomaly_threshold=threshold, anomaly_metrics=anomaly,
    )  # fmt: skip


def train_lstm(cfg: LSTMRun, dist: Dist) -> dict:
    """Byte LSTM over the name, also trained on copies with session constants redrawn."""
    torch.manual_seed(cfg.seed)
    data, train, val = load_split(cfg, "lstm", dist)
    args = LSTMConfig(
        max_len=cfg.max_len,
        embed=cfg.embed,
        hidden=cfg.hidden,
        layers=cfg.layers,
        pool=cfg.pool,
        reverse=cfg.reverse,
        dropout=cfg.dropout,
        qname_len=data.qname_bytes.shape[1],
        side=data.extras.shape[1],
    )
    model = QnameLSTM(args)
    if args.side:
        fit_scaling(model, torch.from_numpy(data.extras[train]))  # the context's statistics
    seen = with_session_copies(data, train, cfg.augment, cfg.seed)
    print0(dist, f"training names: {len(train)} packets + {len(seen) - len(train)} redrawn copies")
    validate = classifier_validation(validation_scorer(data, val, "lstm"), data.labels[val])
    tensors = training_tensors(seen, np.arange(len(seen)), "lstm")
    history = fit(model, tensors, cross_entropy, validate, cfg.train_config(), dist, "lstm")
    return fit_threshold_and_save(model, "lstm", args, data, val, history, cfg, dist)


RECIPES: dict[str, Recipe] = {"clf": train_clf, "ae_clf": train_ae_clf, "lstm": train_lstm}
