"""The three networks of the original design, small parts first, each with one config dataclass.

Defaults are the 2018 repository's shapes (DESIGN.md section 1): a 256-128-64 autoencoder with a
mirrored decoder, a classifier head on its encoder, a 256-128-64-2 classifier with sigmoids, and
(new, since the original LSTM never ran) a byte-level LSTM over the question name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# --------------------------------------------------------------------------- building blocks


def mlp(widths: list[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers with sigmoids between them (the original used sigmoids throughout)."""
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(widths) - 2 or final_activation:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


class Standardize(nn.Module):
    """x * scale + offset, standardising the last `extras` columns (hand-made features).

    The unigram bins are already small (1 + ln count); the extras are not (lengths up to 253),
    so they are standardised with statistics of the training split, kept as buffers: they
    travel in the checkpoint's state_dict and detect.py feeds raw extras unchanged. Full-width
    buffers (1 and 0 on the unigram bins) make it one fused multiply-add, no slicing or copies.
    """

    def __init__(self, dim: int, extras: int):
        super().__init__()
        self.start = dim - extras
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(dim))

    def fit(self, x: torch.Tensor) -> None:
        """Statistics of the training rows x (N, dim)."""
        cols = x[:, self.start :].double()
        scale = 1.0 / cols.std(0).clamp(min=1e-6)
        self.scale[self.start :] = scale.float()
        self.offset[self.start :] = (-cols.mean(0) * scale).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.offset, x, self.scale)


def scaler(dim: int, extras: int) -> nn.Module:
    """Standardize for the extras, or nothing (no state_dict keys) when there are none."""
    return Standardize(dim, extras) if extras else nn.Identity()


def fit_scaling(model: nn.Module, x: torch.Tensor) -> None:
    """Fit every Standardize inside `model` on training rows x (a no-op without extras)."""
    for module in model.modules():
        if isinstance(module, Standardize):
            module.fit(x)


# --------------------------------------------------------------------------- autoencoder


@dataclass
class UnigramInput:
    """What the two unigram networks share: input width, its extras, output classes."""

    dim: int = 256  # input width: unigram bins + extras
    extras: int = 0  # trailing extra-feature columns of the input (standardised)
    classes: int = 2
    # training only: each input column zeroed with this probability (no parameters, no cost at
    # inference). Leave-one-family-out, 0.5 lifted unseen-beacon recall 0.13 -> 0.44 and cut
    # benign false alarms several-fold (README, Honest evaluation): the net cannot lean on a
    # few bytes a family's names happen to share, it has to read the whole row and its context
    input_dropout: float = 0.0


@dataclass
class AEConfig(UnigramInput):
    hidden: int = 128  # first encoder layer (sigmoid)
    code: int = 64  # bottleneck


class AutoEncoder(nn.Module):
    """256 -> 128 (sigmoid) -> 64 -> 128 (sigmoid) -> 256, trained with MSE."""

    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.scale = scaler(cfg.dim, cfg.extras)
        self.encoder = mlp([cfg.dim, cfg.hidden, cfg.code])
        self.decoder = mlp([cfg.code, cfg.hidden, cfg.dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B, dim), vs target(x)
        return self.decoder(self.encoder(self.scale(x)))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What forward() rebuilds: the input with its extras standardised."""
        return self.scale(x)


class AEClassifier(nn.Module):
    """The stage-1 autoencoder (frozen, for the anomaly score) plus a fine-tuned encoder + head.

    The encoder is copied before fine-tuning so that the reconstruction error, and with it the
    anomaly threshold fitted on benign traffic, still refers to the autoencoder as trained.
    """

    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.autoencoder = AutoEncoder(cfg)
        self.encoder = mlp([cfg.dim, cfg.hidden, cfg.code])
        self.head = nn.Sequential(nn.Sigmoid(), nn.Linear(cfg.code, cfg.classes))
        self.drop = nn.Dropout(cfg.input_dropout)  # the classifier's input, not the autoencoder's

    def start_from_autoencoder(self) -> None:
        self.encoder.load_state_dict(self.autoencoder.encoder.state_dict())
        self.autoencoder.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B, classes) logits
        return self.head(self.encoder(self.drop(self.autoencoder.scale(x))))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B,)
        return (self.autoencoder(x) - self.autoencoder.target(x)).pow(2).mean(dim=1)


# --------------------------------------------------------------------------- fully connected


@dataclass
class MLPConfig(UnigramInput):
    hidden: tuple[int, ...] = (128, 64)


class MLPClassifier(nn.Module):
    """256 -> 128 -> 64 -> 2 with sigmoids: the original nn_train.py network."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.scale = scaler(cfg.dim, cfg.extras)
        self.drop = nn.Dropout(cfg.input_dropout)
        self.net = mlp([cfg.dim, *cfg.hidden, cfg.classes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B, classes)
        return self.net(self.drop(self.scale(x)))


# --------------------------------------------------------------------------- byte LSTM


@dataclass
class LSTMConfig:
    vocab: int = 256  # one token per byte value
    embed: int = 16
    hidden: int = 32  # small on purpose: inference speed is a target (>= 100k names/s)
    layers: int = 1  # 1 or 2
    classes: int = 2
    qname_len: int = 256  # longest name the features hold
    reverse: bool = True  # read names right to left: TLD first, the leftmost (data) label last
    max_len: int = 256  # bytes read at most per name (its first ones)
    dropout: float = 0.2  # dropout on the byte embeddings while training (no cost at inference)
    pool: str = "max"  # max: head on the max over all steps | last: on the last state
    side: int = 0  # per-packet side columns (the per-domain context) beside the name


class QnameLSTM(nn.Module):
    """Embedding -> LSTM over the name's bytes (packed, so padding costs nothing) -> linear head."""

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.embed, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.pool = cfg.pool
        self.side = cfg.side
        if cfg.side:  # the name's summary and the standardised context, then one hidden layer
            self.side_scale = Standardize(cfg.side, cfg.side)
            self.head = nn.Sequential(
                nn.Linear(cfg.hidden + cfg.side, cfg.hidden), nn.Tanh(),
                nn.Linear(cfg.hidden, cfg.classes),
            )  # fmt: skip
        else:
            self.head = nn.Linear(cfg.hidden, cfg.classes)
        self.reverse, self.max_len = cfg.reverse, cfg.max_len

    def forward(
        self, qbytes: torch.Tensor, qlen: torch.Tensor, side: torch.Tensor | None = None,
        sorted_: bool = False,
    ):  # fmt: skip
        """qbytes (B, T) uint8/long, qlen (B,), side (B, cfg.side) -> logits (B, classes).

        `sorted_` says the batch is already sorted by decreasing length (saves a permutation).
        """
        lengths = qlen.clamp(1, min(qbytes.shape[1], self.max_len)).cpu()  # root "." has 0 bytes
        tokens = qbytes[:, : int(lengths.max())].long()  # (B, T)
        if self.reverse:  # last hidden state then summarises the leftmost label, where data sits
            steps = torch.arange(tokens.shape[1], device=tokens.device)
            last = lengths.to(tokens.device)[:, None] - 1
            tokens = tokens.gather(1, (last - steps).clamp(min=0))  # (B, T), padding ignored
        x = self.drop(self.embed(tokens))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=sorted_)
        out, (h, _) = self.lstm(packed)  # h: (layers, B, H), in the caller's order
        if self.pool == "max":
            # max over every step (states lie in (-1, 1), so -1 padding never wins): the verdict
            # cannot rest on the last bytes read, which are the per-file job id the net memorises
            steps, _ = pad_packed_sequence(out, batch_first=True, padding_value=-1.0)  # (B,T,H)
            summary = steps.amax(dim=1)
        else:
            summary = h[-1]
        if self.side:
            if side is None:
                raise ValueError(f"this LSTM reads {self.side} context columns beside the name")
            summary = torch.cat([summary, self.side_scale(side.float())], dim=1)
        return self.head(summary)


# --------------------------------------------------------------------------- registry

NETWORKS = {
    "ae_clf": (AEClassifier, AEConfig),
    "clf": (MLPClassifier, MLPConfig),
    "lstm": (QnameLSTM, LSTMConfig),
}
Network = Literal["ae_clf", "clf", "lstm"]
INPUTS = {"ae_clf": "unigrams", "clf": "unigrams", "lstm": "qname"}


def build(network: str, model_args: dict) -> nn.Module:
    """Rebuild a network from a checkpoint's plain-JSON arguments."""
    module, config = NETWORKS[network]
    args = dict(model_args)
    if network == "lstm":  # checkpoints from before these options: last state, no dropout
        args.setdefault("pool", "last")
        args.setdefault("dropout", 0.0)
    if "hidden" in args and isinstance(args["hidden"], list):
        args["hidden"] = tuple(args["hidden"])
    return module(config(**args))
