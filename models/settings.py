"""The settings a training run is made of, as frozen dataclasses (one per network).

A train_*.py script turns its constants block into one of these (field = constant in lower
case); the recipe reads nothing else, so leave-one-out can run the same recipe in-process, and
the checkpoint's `config` is this object written out, from which evaluate.py reads the split.
Defaults live in the scripts' constants blocks (what users edit), except the split's, which
are the project's honest split and belong here.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Literal

from exfil.cli import UserError
from models.training import TrainConfig

Device = Literal["auto", "cpu", "cuda"]
ThresholdRule = Literal["fpr", "f1"]  # fpr: false-alarm budget on validation | f1: best F1
Pool = Literal["max", "last"]


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """Validation split and threshold rule: the networks' and the baselines' alike."""

    val_files: float = 0.25  # share of the exfiltrated files held out for validation
    val_time: float = 0.2  # share of the capture (its last time block) held out
    threshold_rule: ThresholdRule = "fpr"
    target_fpr: float = 0.001  # for fpr: share of benign validation packets flagged
    seed: int = 1  # seeds the split (and, in a run, weights and shuffling)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config"):  # noqa: ANN206
        """The fields of `values` this class knows (a checkpoint's config holds more)."""
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
        if required:
            raise UserError(f"{where}: settings {required} missing (retrain with this version)")
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, kw_only=True)
class RunConfig(SplitConfig):
    """What every training run has: data, output, optimiser schedule, system."""

    data: str
    out: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    device: Device = "auto"
    threads: int = 1
    dry_run: bool = False
    context: bool = True  # the per-domain context features (exfil/context.py) as inputs
    context_columns: list[str] | None = None  # which of them (None: DEFAULT_CONTEXT)
    augment: int = 0  # redrawn copies of each training exfiltration packet (models/augment.py)

    def __post_init__(self) -> None:
        if self.augment < 0:
            raise UserError(f"--augment {self.augment}: the number of copies cannot be negative")
        dropout = getattr(self, "input_dropout", 0.0)
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"--input-dropout {dropout}: a probability from 0 up to (not) 1")

    def train_config(self, **changes) -> TrainConfig:
        """The training loop's settings, early stopping on validation PR-AUC unless changed."""
        base = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
            "seed": self.seed,
            "dry_run": self.dry_run,
            "monitor": "val_pr_auc",
        }
        return TrainConfig(**{**base, **changes})


@dataclass(frozen=True, kw_only=True)
class ClfRun(RunConfig):
    extras: list[str]  # name features appended to the unigrams
    hidden: list[int]  # hidden layer widths
    input_dropout: float = 0.0  # training: share of input columns zeroed (checkpoints before: 0)


@dataclass(frozen=True, kw_only=True)
class AEClfRun(RunConfig):
    extras: list[str]
    hidden: int  # first encoder layer width
    code: int  # bottleneck width
    ae_epochs: int
    ae_lr: float
    ae_benign_only: bool  # autoencoder on benign packets only (anomaly mode)
    anomaly_quantile: float  # anomaly threshold = this quantile of benign validation error
    input_dropout: float = 0.0  # training: share of the classifier's input columns zeroed


@dataclass(frozen=True, kw_only=True)
class LSTMRun(RunConfig):
    embed: int
    hidden: int
    layers: Literal[1, 2]
    max_len: int
    reverse: bool
    dropout: float
    pool: Pool


RUNS = {"clf": ClfRun, "ae_clf": AEClfRun, "lstm": LSTMRun}
