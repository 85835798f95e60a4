"""The one recipe from DNS packets to network inputs, shared by ng.py (training) and detect.py.

    settings = FeatureSettings(scope="qname", transform="log1p", qname_len=256)
    context = settings.new_context()   # per-capture state when extras name ctx_* features
    arrays = settings.compute(batch, context=context)  # {"unigrams", "qname_bytes", ...}

ng.py saves the settings in features.json and every array; a checkpoint stores the settings its
network was trained on (`features`), and detect.py rebuilds them from there and computes the
same arrays with the same code, so training and serving cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np

from exfil.cli import UserError
from exfil.context import CONTEXT_FEATURES, DomainContext
from exfil.features import (
    EXTRA_FEATURES,
    LOWER,
    NAME_FEATURES,
    SCOPES,
    TRANSFORMS,
    Scope,
    Transform,
    extras,
    qname_matrix,
    unigrams,
)

UNIGRAM_BINS = 256


@dataclass(frozen=True)
class FeatureSettings:
    scope: Scope = "qname"  # bytes counted in the histogram
    transform: Transform = "log1p"  # count transform
    qname_len: int = 256  # name bytes kept per packet (LSTM input width)
    extras: tuple[str, ...] = NAME_FEATURES  # hand-made name features, in column order
    fold_case: bool = False  # names ASCII-lower-cased first (DNS 0x20 randomises their case)

    def __post_init__(self) -> None:
        problems = []
        if self.scope not in SCOPES:
            problems.append(f"scope {self.scope!r} (known: {', '.join(SCOPES)})")
        if self.transform not in TRANSFORMS:
            problems.append(f"transform {self.transform!r} (known: {', '.join(TRANSFORMS)})")
        if not isinstance(self.qname_len, int) or not 1 <= self.qname_len <= 4096:
            problems.append(f"qname_len {self.qname_len!r} (1 to 4096)")
        unknown = [e for e in self.extras if e not in EXTRA_FEATURES + CONTEXT_FEATURES]
        if unknown:
            known = ", ".join(EXTRA_FEATURES + CONTEXT_FEATURES)
            problems.append(f"extras {unknown} (known: {known})")
        if problems:
            raise UserError("feature settings: " + "; ".join(problems))

    @classmethod
    def from_meta(cls, meta: dict) -> FeatureSettings:
        """From features.json or a checkpoint's `features` (keys it lacks take the defaults)."""
        known = {k: meta[k] for k in ("scope", "transform", "qname_len") if meta.get(k) is not None}
        fold = bool(meta.get("fold_case", False))  # settings saved before folding existed: raw
        return cls(**known, extras=tuple(meta.get("extras") or ()), fold_case=fold)

    def meta(self) -> dict:
        """The settings as features.json and checkpoints write them."""
        return {**asdict(self), "extras": list(self.extras), "dim": UNIGRAM_BINS}

    @property
    def context_features(self) -> tuple[str, ...]:
        """The per-domain context columns among the extras (exfil/context.py)."""
        return tuple(e for e in self.extras if e in CONTEXT_FEATURES)

    def new_context(self) -> DomainContext | None:
        """Fresh per-domain state for one capture (or live stream); None without ctx_ extras."""
        return DomainContext() if self.context_features else None

    def compute(  # noqa: ANN001
        self, batch, need: tuple[str, ...] = ("unigrams", "qname"), out=None, context=None
    ) -> dict:
        """The arrays of one DnsBatch: "unigrams", "extras" and/or "qname_bytes", "qname_len".

        `out`, if given, is a float32 (n, 256) buffer the unigrams are written into. `context`
        (from new_context) is updated with every batch, in capture order: the extras' ctx_
        columns describe each packet's domain up to that packet. "extras" is always given.
        """
        arrays = {}
        names = self.names(batch)
        if "unigrams" in need:
            counted = names if self.scope == "qname" else batch  # dns/udp: the raw message
            arrays["unigrams"] = unigrams(counted, self.scope, self.transform, out=out)
        if "qname" in need:
            arrays["qname_bytes"], arrays["qname_len"] = qname_matrix(names, self.qname_len)
        arrays["extras"] = self.extra_columns(batch, names, context)
        return arrays

    def extra_columns(self, batch, names, context: DomainContext | None) -> np.ndarray:  # noqa: ANN001
        """float32 (n, len(extras)): name features and context features in `extras` order."""
        wanted = self.context_features
        plain = tuple(e for e in self.extras if e not in CONTEXT_FEATURES)
        columns = dict(zip(plain, extras(names, plain).T, strict=True))
        if wanted:
            if context is None:
                raise ValueError("ctx_ extras need the capture's DomainContext (new_context())")
            folded = names.qname if self.fold_case else None  # the state folds case itself
            rows = context.update(batch, folded)
            columns.update((f, rows[:, CONTEXT_FEATURES.index(f)]) for f in wanted)
        n = len(batch.qlen)
        if not self.extras:
            return np.zeros((n, 0), np.float32)
        return np.stack([columns[e] for e in self.extras], 1).astype(np.float32)

    def names(self, batch):  # noqa: ANN001, ANN201
        """The batch's question names as the recipe reads them (case-folded if fold_case)."""
        if not self.fold_case:
            return batch
        qtype = getattr(batch, "qtype", np.zeros(len(batch.qlen), np.uint16))
        return SimpleNamespace(qname=LOWER[batch.qname], qlen=batch.qlen, qtype=qtype)


def unigram_inputs(arrays: dict) -> np.ndarray:
    """What a unigram network reads: the histogram with the extras as trailing columns."""
    if arrays["extras"].shape[1] == 0:
        return arrays["unigrams"]
    return np.hstack([arrays["unigrams"], arrays["extras"]])
