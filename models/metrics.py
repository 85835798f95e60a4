"""Binary metrics that never crash: what is undefined (one class only) becomes None + a note."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """accuracy, precision, recall, f1, roc_auc, pr_auc, fpr (+ counts) at `threshold`.

    A packet is flagged when score >= threshold. Metrics whose denominator is empty (no
    positives, no flags, one class only) are None and explained in "notes".
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    flagged = scores >= threshold
    tp = int(np.sum(flagged & labels))
    fp = int(np.sum(flagged & ~labels))
    fn = int(np.sum(~flagged & labels))
    tn = int(np.sum(~flagged & ~labels))
    notes = []
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    if precision is None:
        notes.append("precision undefined: nothing flagged")
    if recall is None:
        notes.append("recall undefined: no malicious packets")
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    one_class = tp + fn == 0 or tn + fp == 0
    roc_auc = pr_auc = None
    if one_class:
        notes.append("roc_auc and pr_auc undefined: one class only")
    else:
        roc_auc = min(1.0, float(roc_auc_score(labels, scores)))  # sums can round past 1.0
        pr_auc = min(1.0, float(average_precision_score(labels, scores)))
    fpr = _ratio(fp, fp + tn)
    if fpr is None:
        notes.append("fpr undefined: no benign packets")
    return {
        "accuracy": _ratio(tp + tn, len(labels)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "fpr": fpr,
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "packets": int(len(labels)),
        "notes": notes,
    }


def choose_threshold(labels: np.ndarray, scores: np.ndarray, default: float = 0.5) -> float:
    """The threshold with the best F1 on validation, placed mid-way into the gap below it.

    Cutting at a validation score exactly would put the test packet with the same score on a
    coin flip; the midpoint between the chosen score and the next lower one keeps a margin on
    both sides (for separable validation data: half-way between the classes). Without both
    classes there is nothing to fit and `default` is returned.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        return float(default)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # a cut after every run of equal scores
    f1 = 2 * tp / (tp + fp + y.sum())
    f1 = np.where(last, f1, -1.0)
    k = int(np.argmax(f1))  # first (highest) cut among ties: fewest flags
    below = s[k + 1] if k + 1 < len(s) else s[k] - 1.0
    return float((s[k] + below) / 2.0)


def fpr_threshold(labels: np.ndarray, scores: np.ndarray, target_fpr: float) -> float | None:
    """The lowest threshold that flags at most `target_fpr` of the benign validation packets.

    A false-alarm budget, as deployed detectors are tuned: it only needs benign traffic, which
    the validation time block represents well, while held-out exfiltration files (often of a
    style seen nowhere else) would drag a best-F1 cut down into the hard benign traffic.
    Midway between the last allowed benign score and the next higher score. None without
    benign packets.
    """
    benign = np.sort(np.asarray(scores, np.float64)[~np.asarray(labels).astype(bool)])
    if len(benign) == 0:
        return None
    allowed = int(np.floor(target_fpr * len(benign)))  # benign packets that may be flagged
    top = benign[len(benign) - allowed - 1]  # highest benign score that must stay unflagged
    above = benign[len(benign) - allowed] if allowed else top + max(abs(top) * 1e-3, 1e-6)
    return float((top + above) / 2.0) if above > top else float(np.nextafter(top, np.inf))


def rate_by_group(groups: np.ndarray, flagged: np.ndarray, names: list[str] | None = None) -> dict:
    """Fraction flagged per group value (recall for malicious groups, FPR for benign ones)."""
    out = {}
    for value in np.unique(groups):
        mask = groups == value
        key = names[int(value)] if names is not None and 0 <= int(value) < len(names) else value
        out[str(key)] = {"packets": int(mask.sum()), "flagged": float(flagged[mask].mean())}
    return out
