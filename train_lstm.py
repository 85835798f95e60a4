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

import numpy as np

from exfil.cli import UserError
from models.augment import with_session_copies
from models.distributed import print0, teardown
from models.nets import LSTMConfig, QnameLSTM
from models.pipeline import finish, labelled, load_split, scorer, start
from models.training import classifier_validation, cross_entropy, fit

# ----------------------------------------------------------------------------- config
# data
DATA = "work/train"  # dataset folder written by ld.py + ng.py
OUT = "checkpoints/lstm.pt"  # checkpoint to write
VAL_FILES = 0.25  # share of the exfiltrated files held out for validation
VAL_TIME = 0.2  # share of the capture (its last time block) held out for validation
THRESHOLD_RULE = "fpr"  # decision threshold on validation: fpr (false-alarm budget) | f1 (best F1)
TARGET_FPR = 0.001  # for THRESHOLD_RULE fpr: share of benign validation packets flagged
# model
EMBED = 16  # byte embedding width
HIDDEN = 32  # LSTM hidden width (the original: 2 layers; small keeps >= 100k names/s)
LAYERS = 1  # LSTM layers: 1 | 2
MAX_LEN = 128  # name bytes read at most (the leftmost ones); 99 in 100 names are shorter
REVERSE = True  # read names right to left (the leftmost label last)
DROPOUT = 0.2  # dropout on the byte embeddings while training (beat 0 and 0.3 on validation)
POOL = "max"  # head input: max (max over all steps) | last (final state; memorises job ids)
AUGMENT = 3  # copies of each training exfiltration packet with session id + domain redrawn
# training
EPOCHS = 6  # passes over the training split (early stopping may end sooner)
BATCH_SIZE = 256  # names per step
LR = 3e-3  # Adam learning rate
WEIGHT_DECAY = 1e-5  # Adam weight decay
PATIENCE = 3  # epochs without a better validation PR-AUC before stopping
SEED = 1  # seeds the split, the initial weights and the shuffling
# system
DEVICE = "auto"  # auto | cpu | cuda
THREADS = 1  # torch CPU threads per process (0: all cores; 1 is faster for these small nets)
DRY_RUN = False  # one batch of one epoch: a smoke test of the whole pipeline
# -----------------------------------------------------------------------------


def main() -> int:
    config, dist, train_cfg = start(globals(), choices={"LAYERS": [1, 2], "POOL": ["last", "max"]})
    if AUGMENT < 0:
        raise UserError(f"--augment {AUGMENT}: the number of copies cannot be negative")
    data, train, val = load_split(DATA, "lstm", VAL_FILES, VAL_TIME, SEED, dist)
    args = LSTMConfig(
        max_len=MAX_LEN,
        embed=EMBED,
        hidden=HIDDEN,
        layers=LAYERS,
        pool=POOL,
        reverse=REVERSE,
        dropout=DROPOUT,
        qname_len=data.qname_bytes.shape[1],
    )
    model = QnameLSTM(args)
    validate = classifier_validation(scorer(data, val, "lstm"), data.labels[val])
    seen = with_session_copies(data, train, AUGMENT, SEED)
    print0(dist, f"training names: {len(train)} packets + {len(seen) - len(train)} redrawn copies")
    everything = np.arange(len(seen))
    history = fit(
        model, labelled(seen, everything, "lstm"), cross_entropy, validate, train_cfg, dist, "lstm"
    )
    finish(model, "lstm", args, data, val, history, config, dist)
    teardown(dist)
    return 0


if __name__ == "__main__":
    from exfil.cli import run

    run(main)
