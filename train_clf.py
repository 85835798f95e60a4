"""Train the fully connected classifier (256-128-64-2 with sigmoids) on the unigram features.

    python train_clf.py                                # work/train -> checkpoints/clf.pt
    python train_clf.py --data work/train --epochs 10 --batch-size 256
    python train_clf.py --extras                        # unigrams alone (ng.py without --extras)
    torchrun --nproc_per_node=2 train_clf.py           # two processes, DDP (gloo on CPU)
    python train_clf.py --dry-run --out /tmp/clf.pt    # one batch: tests the whole script

Validation = held-out exfiltrated files + the last time block of the capture. Early stopping
watches validation PR-AUC; the decision threshold flags at most TARGET_FPR of the benign
validation packets (or, with --threshold-rule f1, is the best-F1 cut). The checkpoint carries
shapes, features, threshold, metrics and the per-epoch history.
"""

import torch

from exfil.features import NAME_FEATURES
from models.distributed import teardown
from models.nets import MLPClassifier, MLPConfig, fit_scaling
from models.pipeline import finish, labelled, load_split, scorer, start
from models.training import classifier_validation, cross_entropy, fit

# ----------------------------------------------------------------------------- config
# data
DATA = "work/train"  # dataset folder written by ld.py + ng.py
OUT = "checkpoints/clf.pt"  # checkpoint to write
VAL_FILES = 0.25  # share of the exfiltrated files held out for validation
VAL_TIME = 0.2  # share of the capture (its last time block) held out for validation
THRESHOLD_RULE = "fpr"  # decision threshold on validation: fpr (false-alarm budget) | f1 (best F1)
TARGET_FPR = 0.001  # for THRESHOLD_RULE fpr: share of benign validation packets flagged
EXTRAS = list(NAME_FEATURES)  # name features appended to the unigrams (ng.py); none: --extras
# model
HIDDEN = [128, 64]  # hidden layer widths (the original: 128 64)
# training
EPOCHS = 30  # passes over the training split (early stopping usually ends sooner)
BATCH_SIZE = 128  # packets per step (the original: 32; 128 is ~4x faster for the same F1)
LR = 1e-3  # Adam learning rate (the original: 1e-3)
WEIGHT_DECAY = 1e-5  # Adam weight decay (the original: 1e-5)
PATIENCE = 3  # epochs without a better validation PR-AUC before stopping
SEED = 1  # seeds the split, the initial weights and the shuffling
# system
DEVICE = "auto"  # auto | cpu | cuda
THREADS = 1  # torch CPU threads per process (0: all cores; 1 is faster for these small nets)
DRY_RUN = False  # one batch of one epoch: a smoke test of the whole pipeline
# -----------------------------------------------------------------------------


def main() -> int:
    config, dist, train_cfg = start(globals())
    data, train, val = load_split(DATA, "clf", VAL_FILES, VAL_TIME, SEED, dist, EXTRAS)
    args = MLPConfig(dim=data.unigrams.shape[1], hidden=tuple(HIDDEN), extras=len(EXTRAS))
    model = MLPClassifier(args)
    fit_scaling(model, torch.from_numpy(data.unigrams[train]))  # extras' statistics
    validate = classifier_validation(scorer(data, val, "clf"), data.labels[val])
    history = fit(
        model, labelled(data, train, "clf"), cross_entropy, validate, train_cfg, dist, "clf"
    )
    finish(model, "clf", args, data, val, history, config, dist)
    teardown(dist)
    return 0


if __name__ == "__main__":
    from exfil.cli import run

    run(main)
