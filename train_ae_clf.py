"""Train the autoencoder (stage 1) and the classifier on its encoder (stage 2) on unigrams.

    python train_ae_clf.py                                # work/train -> checkpoints/ae_clf.pt
    python train_ae_clf.py --ae-epochs 10 --epochs 10
    python train_ae_clf.py --extras                       # unigrams alone (ng.py without --extras)
    torchrun --nproc_per_node=2 train_ae_clf.py           # two processes, DDP (gloo on CPU)
    python train_ae_clf.py --dry-run --out /tmp/ae.pt     # one batch per stage: smoke test

Stage 1: 256-128(sigmoid)-64 autoencoder with a mirrored decoder, MSE, on benign training
packets (AE_BENIGN_ONLY), so its reconstruction error is an anomaly score; the anomaly
threshold is the ANOMALY_QUANTILE of that error on benign validation packets. Stage 2: a copy
of the encoder + sigmoid + Linear(64, 2), all layers fine-tuned with cross-entropy, early
stopping on validation PR-AUC (held-out files + last time block); the decision threshold flags
at most TARGET_FPR of the benign validation packets (--threshold-rule f1: best-F1 cut).
"""

from dataclasses import replace

import numpy as np
import torch

from exfil.features import NAME_FEATURES
from models.distributed import print0, teardown
from models.inference import reconstruction_errors
from models.metrics import binary_metrics
from models.nets import AEClassifier, AEConfig, fit_scaling
from models.pipeline import finish, inputs, labelled, load_split, scorer, start
from models.training import classifier_validation, cross_entropy, fit

# ----------------------------------------------------------------------------- config
# data
DATA = "work/train"  # dataset folder written by ld.py + ng.py
OUT = "checkpoints/ae_clf.pt"  # checkpoint to write
VAL_FILES = 0.25  # share of the exfiltrated files held out for validation
VAL_TIME = 0.2  # share of the capture (its last time block) held out for validation
THRESHOLD_RULE = "fpr"  # decision threshold on validation: fpr (false-alarm budget) | f1 (best F1)
TARGET_FPR = 0.001  # for THRESHOLD_RULE fpr: share of benign validation packets flagged
EXTRAS = list(NAME_FEATURES)  # name features appended to the unigrams (ng.py); none: --extras
# model
HIDDEN = 128  # first encoder layer width, sigmoid (the original: 128)
CODE = 64  # bottleneck width (the original: 64)
# stage 1: autoencoder
AE_EPOCHS = 20  # autoencoder passes (the original: 20; early stopping may end sooner)
AE_LR = 1e-3  # autoencoder Adam learning rate (the original: 1e-3)
AE_BENIGN_ONLY = True  # train the autoencoder on benign packets only (anomaly mode)
ANOMALY_QUANTILE = 0.999  # anomaly threshold = this quantile of benign validation error
# stage 2: classifier (and shared)
EPOCHS = 30  # classifier passes (early stopping usually ends sooner)
BATCH_SIZE = 128  # packets per step, both stages (the original: 32)
LR = 1e-3  # classifier Adam learning rate (the original: 1e-5, too slow to converge here)
WEIGHT_DECAY = 1e-5  # Adam weight decay (the original: 1e-5)
PATIENCE = 3  # epochs without a better validation PR-AUC before stopping
SEED = 1  # seeds the split, the initial weights and the shuffling
# system
DEVICE = "auto"  # auto | cpu | cuda
THREADS = 1  # torch CPU threads per process (0: all cores; 1 is faster for these small nets)
DRY_RUN = False  # one batch of one epoch per stage: a smoke test of the whole pipeline
# -----------------------------------------------------------------------------


def mse(net: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    (x,) = batch
    target = getattr(net, "module", net).target(x)  # DDP wraps the autoencoder in .module
    return torch.nn.functional.mse_loss(net(x), target)


def main() -> int:
    config, dist, train_cfg = start(globals())
    data, train, val = load_split(DATA, "ae_clf", VAL_FILES, VAL_TIME, SEED, dist, EXTRAS)
    args = AEConfig(dim=data.unigrams.shape[1], hidden=HIDDEN, code=CODE, extras=len(EXTRAS))
    model = AEClassifier(args)
    fit_scaling(model, torch.from_numpy(data.unigrams[train]))  # extras' statistics

    # stage 1: the autoencoder learns to rebuild (benign) traffic
    ae_train = train[data.labels[train] == 0] if AE_BENIGN_ONLY else train
    benign_val = val[data.labels[val] == 0]
    x_val = data.unigrams[benign_val]

    def validate_ae(net: torch.nn.Module) -> dict:
        errors = reconstruction_errors(model, x_val) if len(x_val) else np.zeros(1)
        return {"val_loss": float(errors.mean())}

    ae_cfg = replace(train_cfg, epochs=AE_EPOCHS, lr=AE_LR, monitor="val_loss")
    ae_history = fit(
        model.autoencoder,
        inputs(data, ae_train, "ae_clf"),
        mse,
        validate_ae,
        ae_cfg,
        dist,
        "autoencoder",
    )
    errors = reconstruction_errors(model, data.unigrams[val])
    benign_errors = errors[data.labels[val] == 0]
    if len(benign_errors) == 0:  # no benign validation traffic: fall back to training traffic
        benign_errors = reconstruction_errors(model, data.unigrams[ae_train])
    anomaly_threshold = float(np.quantile(benign_errors, ANOMALY_QUANTILE))
    anomaly = binary_metrics(data.labels[val], errors, anomaly_threshold)
    print0(
        dist,
        f"anomaly threshold {anomaly_threshold:.4g} (reconstruction MSE): validation "
        f"recall {anomaly['recall']} fpr {anomaly['fpr']}",
    )

    # stage 2: classifier on a copy of the encoder, all layers fine-tuned
    model.start_from_autoencoder()
    validate = classifier_validation(scorer(data, val, "ae_clf"), data.labels[val])
    clf_history = fit(
        model,
        labelled(data, train, "ae_clf"),
        cross_entropy,
        validate,
        train_cfg,
        dist,
        "classifier",
    )
    finish(
        model,
        "ae_clf",
        args,
        data,
        val,
        {"autoencoder": ae_history, "classifier": clf_history},
        config,
        dist,
        anomaly_threshold=anomaly_threshold,
        anomaly_metrics=anomaly,
    )
    teardown(dist)
    return 0


if __name__ == "__main__":
    from exfil.cli import run

    run(main)
