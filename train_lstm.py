"""Train the byte-level LSTM over the question name (qname_bytes.npy + qname_len.npy from ng.py).

    python train_lstm.py                                 # work/train -> checkpoints/lstm.pt
    python train_lstm.py --hidden 64 --layers 2 --epochs 10
    torchrun --nproc_per_node=2 train_lstm.py            # two processes, DDP (gloo on CPU)
    python train_lstm.py --dry-run --out /tmp/lstm.pt    # one batch: smoke test

Embedding of each byte (dropout 0.2 while training) -> LSTM over the packed (unpadded) name ->
max over all steps -> linear head. The head once sat on the last state: reading right to left,
that state ends on the leftmost bytes, the per-file job id, which the net memorised (a capture
has only a dozen files), scoring ~0 on new files of known styles; the max over steps judges the
whole name. The original's LSTM read spacy tokens of a CSV no script produced; this one reads
the name's bytes, so it works on any encoding (hex, base32, base64, binary labels). Small by
default: inference speed matters (bench/bench_models.py; hidden 64 runs ~60k names/s on two
cores, under the 100k target). Names are read right to left (left to right scored far worse on
a separate validation capture); names longer than MAX_LEN are read from their first MAX_LEN
bytes (bounds the steps per batch). Early stopping and threshold as in train_clf.py.

Every name of one exfiltration shares a session id and a domain, and a training capture holds
a dozen exfiltrations: read byte by byte, those constants are the easiest thing to learn, and a
net that learned them misses every new session. So the training split also holds AUGMENT copies
of each exfiltration packet with its shared leading bytes redrawn and its domain swapped for
one of the capture's benign domains (models/augment.py); validation keeps the real packets only.
"""

from typing import Literal

from exfil.cli import configure, run
from exfil.context import DEFAULT_CONTEXT, ContextFeature
from models.recipes import launch, train_lstm
from models.settings import Device, LSTMRun, Pool, ThresholdRule

# ----------------------------------------------------------------------------- config
# data
DATA = "work/train"  # dataset folder written by ld.py + ng.py
OUT = "checkpoints/lstm.pt"  # checkpoint to write
VAL_FILES = 0.25  # share of the exfiltrated files held out for validation
VAL_TIME = 0.2  # share of the capture (its last time block) held out for validation
THRESHOLD_RULE: ThresholdRule = "fpr"  # decision threshold: fpr (false-alarm budget) | f1
TARGET_FPR = 0.001  # for THRESHOLD_RULE fpr: share of benign validation packets flagged
# model
EMBED = 16  # byte embedding width
HIDDEN = 32  # LSTM hidden width (the original: 2 layers; small keeps >= 100k names/s)
LAYERS: Literal[1, 2] = 1  # LSTM layers
MAX_LEN = 128  # name bytes read at most (the leftmost ones); 99 in 100 names are shorter
REVERSE = True  # read names right to left (the leftmost label last)
DROPOUT = 0.2  # dropout on the byte embeddings while training (beat 0 and 0.3 on validation)
POOL: Pool = "max"  # head input: max (over all steps) | last (final state; memorises ids)
AUGMENT = 3  # copies of each training exfiltration packet with session id + domain redrawn
# training
EPOCHS = 6  # passes over the training split (early stopping may end sooner)
BATCH_SIZE = 256  # names per step
LR = 3e-3  # Adam learning rate
WEIGHT_DECAY = 1e-5  # Adam weight decay
PATIENCE = 3  # epochs without a better validation PR-AUC before stopping
SEED = 1  # seeds the split, the initial weights and the shuffling
# system
DEVICE: Device = "auto"  # auto picks CUDA when present
THREADS = 1  # torch CPU threads per process (0: all cores; 1 is faster for these small nets)
DRY_RUN = False  # one batch of one epoch: a smoke test of the whole pipeline
CONTEXT = True  # per-domain context features (exfil/context.py) as inputs; off: --no-context
CONTEXT_COLUMNS: list[ContextFeature] = list(DEFAULT_CONTEXT)  # which (README: why)
# -----------------------------------------------------------------------------


def main() -> int:
    launch(train_lstm, LSTMRun(**configure(globals(), paths=("DATA", "OUT"))), "train_lstm.py")
    return 0


if __name__ == "__main__":
    run(main)
