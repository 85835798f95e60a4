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

from exfil.cli import configure, run
from exfil.context import DEFAULT_CONTEXT, ContextFeature
from exfil.features import NAME_FEATURES, Extra
from models.recipes import launch, train_ae_clf
from models.settings import AEClfRun, Device, ThresholdRule

# ----------------------------------------------------------------------------- config
# data
DATA = "work/train"  # dataset folder written by ld.py + ng.py
OUT = "checkpoints/ae_clf.pt"  # checkpoint to write
VAL_FILES = 0.25  # share of the exfiltrated files held out for validation
VAL_TIME = 0.2  # share of the capture (its last time block) held out for validation
THRESHOLD_RULE: ThresholdRule = "fpr"  # decision threshold: fpr (false-alarm budget) | f1
TARGET_FPR = 0.001  # for THRESHOLD_RULE fpr: share of benign validation packets flagged
EXTRAS: list[Extra] = list(NAME_FEATURES)  # name features beside the unigrams; none: --extras
AUGMENT = 6  # copies of each training exfiltration packet with session id + domain redrawn
# model
HIDDEN = 128  # first encoder layer width, sigmoid (the original: 128)
CODE = 64  # bottleneck width (the original: 64)
INPUT_DROPOUT = 0.5  # training: each input column zeroed with this probability (README: why)
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
DEVICE: Device = "auto"  # auto picks CUDA when present
THREADS = 1  # torch CPU threads per process (0: all cores; 1 is faster for these small nets)
DRY_RUN = False  # one batch of one epoch per stage: a smoke test of the whole pipeline
CONTEXT = True  # per-domain context features (exfil/context.py) as inputs; off: --no-context
CONTEXT_COLUMNS: list[ContextFeature] = list(DEFAULT_CONTEXT)  # which (README: why)
# -----------------------------------------------------------------------------


def main() -> int:
    launch(train_ae_clf, AEClfRun(**configure(globals(), paths=("DATA", "OUT"))), "train_ae_clf.py")
    return 0


if __name__ == "__main__":
    run(main)
