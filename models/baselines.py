"""Baselines the networks must beat: logistic regression, random forest, a length/entropy rule.

All are fitted on the training split of the same folder and split as the networks, and their
thresholds come from the same validation rule, so the comparison is like for like.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.data import Dataset
from models.settings import SplitConfig

BaselineName = Literal["logreg", "forest", "rule"]
NAMES = get_args(BaselineName)

# --------------------------------------------------------------------------- name statistics


def name_entropy(qname_bytes: np.ndarray, qname_len: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Shannon entropy (bits per character) of each name's bytes, vectorised in chunks."""
    out = np.zeros(len(qname_len), np.float64)
    positions = np.arange(qname_bytes.shape[1])
    for start in range(0, len(qname_len), chunk):
        qb, ql = qname_bytes[start : start + chunk], qname_len[start : start + chunk]
        valid = positions < ql[:, None]  # (n, L)
        rows = np.broadcast_to(np.arange(len(ql))[:, None], qb.shape)[valid]
        counts = np.bincount(rows * 256 + qb[valid], minlength=len(ql) * 256).reshape(-1, 256)
        p = counts / np.maximum(ql, 1)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + chunk] = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return out


class LengthEntropyRule:
    """Flag a name when it is at least L bytes long AND its entropy is at least H bits/char.

    L and H are picked on training data by grid search for the best F1, the way such rules are
    tuned in practice. The score min(len / L, entropy / H) is >= 1 exactly when the rule fires,
    which gives ROC/PR curves and a threshold of 1.0.
    """

    def fit(self, qname_bytes: np.ndarray, qname_len: np.ndarray, labels: np.ndarray):
        length, entropy = qname_len.astype(np.float64), name_entropy(qname_bytes, qname_len)
        y = labels.astype(bool)
        grid = np.linspace(0, 1, 41)
        best = (-1.0, 1.0, 1.0)
        for L in np.unique(np.quantile(length, grid)):
            long_enough = length >= L
            for H in np.unique(np.quantile(entropy, grid)):
                flagged = long_enough & (entropy >= H)
                tp = np.sum(flagged & y)
                f1 = 2 * tp / max(flagged.sum() + y.sum(), 1)
                if f1 > best[0]:
                    best = (f1, float(L), float(H))
        self.length, self.entropy = max(best[1], 1.0), max(best[2], 1e-6)
        return self

    def score(self, qname_bytes: np.ndarray, qname_len: np.ndarray) -> np.ndarray:
        entropy = name_entropy(qname_bytes, qname_len)
        return np.minimum(qname_len / self.length, entropy / self.entropy).astype(np.float32)


# --------------------------------------------------------------------------- fitting


class Baseline:
    """A fitted baseline: `score(data)` and the validation-chosen `threshold`."""

    def __init__(self, name: str, trees: int = 100, seed: int = 1):
        self.name = name
        if name == "logreg":
            self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        elif name == "forest":
            self.model = RandomForestClassifier(
                n_estimators=trees, min_samples_leaf=2, n_jobs=-1, random_state=seed
            )
        else:
            self.model = LengthEntropyRule()
        self.threshold, self.rule = 0.5, ""

    def fit(
        self, data: Dataset, train: np.ndarray, val: np.ndarray, split: SplitConfig
    ) -> Baseline:
        """Fit on the training rows; threshold from the validation rows by `split`'s rule."""
        from models.pipeline import pick_threshold

        if self.name == "rule":
            self.model.fit(data.qname_bytes[train], data.qname_len[train], data.labels[train])
            self.threshold = 1.0  # the rule as tuned; the score only orders packets for curves
            self.rule = f"length >= {self.model.length:g} and entropy >= {self.model.entropy:.3g}"
        else:
            self.model.fit(data.unigrams[train], data.labels[train])
            val_scores = self.score(data.subset(val))
            self.threshold, self.rule = pick_threshold(data.labels[val], val_scores, split)
        return self

    def score(self, data: Dataset) -> np.ndarray:
        if self.name == "rule":
            return self.model.score(data.qname_bytes, data.qname_len)
        return self.model.predict_proba(data.unigrams)[:, 1].astype(np.float32)
