"""Figures for results/: confusion matrices, ROC and PR curves, score histograms, training curves.

matplotlib with the Agg backend (no display needed); every figure is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from exfil.files import atomic_path


def _save(fig, path: Path) -> str:
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path.name


def _grid(count: int):
    cols = min(count, 4)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat)


def confusion_matrices(results: dict, out: Path) -> str:
    fig, axes = _grid(len(results))
    for ax, (name, r) in zip(axes, results.items(), strict=False):
        m = r["metrics"]
        cells = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(cells, cmap="Blues")
        for (i, j), value in np.ndenumerate(cells):
            ax.text(j, i, f"{value:,}", ha="center", va="center", color="darkred")
        ax.set_xticks([0, 1], ["benign", "malicious"])
        ax.set_yticks([0, 1], ["benign", "malicious"])
        ax.set_title(name)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.suptitle("confusion matrices on the test capture")
    return _save(fig, out / "confusion_matrices.png")


def curves(results: dict, labels: np.ndarray, out: Path) -> list[str]:
    """ROC and PR curves of every model on one axis each (skipped with one class only)."""
    if labels.all() or not labels.any():
        return []
    names = []
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for name, r in results.items():
            if kind == "roc":
                x, y, _ = roc_curve(labels, r["scores"])
            else:
                y, x, _ = precision_recall_curve(labels, r["scores"])
            ax.plot(x, y, label=f"{name} ({r['metrics'][kind + '_auc']:.4f})")
        if kind == "roc":
            ax.set_xscale("symlog", linthresh=1e-4)
            ax.set(xlabel="false-positive rate (symlog)", ylabel="recall", title="ROC (test)")
        else:
            ax.set(xlabel="recall", ylabel="precision", title="precision-recall (test)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        names.append(_save(fig, out / f"{kind}_curves.png"))
    return names


def score_histograms(results: dict, labels: np.ndarray, out: Path) -> str:
    fig, axes = _grid(len(results))
    for ax, (name, r) in zip(axes, results.items(), strict=False):
        scores = np.asarray(r["scores"], np.float64)
        bins = np.linspace(scores.min(), scores.max() + 1e-9, 50)
        for cls, colour in ((0, "tab:blue"), (1, "tab:red")):
            if (labels == cls).any():
                ax.hist(
                    scores[labels == cls],
                    bins=bins,
                    alpha=0.6,
                    color=colour,
                    label="malicious" if cls else "benign",
                )
        ax.axvline(r["metrics"]["threshold"], color="black", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.suptitle("test scores by true class (dashed: threshold)")
    return _save(fig, out / "score_histograms.png")


def training_curves(histories: dict, out: Path) -> str | None:
    """Per-epoch train and validation loss of every network, one panel per training stage."""
    stages = []
    for name, history in histories.items():
        if isinstance(history, dict):
            stages += [(f"{name}: {stage}", h) for stage, h in history.items()]
        elif history:
            stages.append((name, history))
    if not stages:
        return None
    fig, axes = _grid(len(stages))
    for ax, (title, history) in zip(axes, stages, strict=False):
        epochs = [h["epoch"] for h in history]
        for key in ("train_loss", "val_loss"):
            ax.plot(epochs, [h.get(key) for h in history], marker="o", ms=3, label=key)
        ax.set_yscale("log")
        ax.set(title=title, xlabel="epoch")
        ax.legend(fontsize=7)
    return _save(fig, out / "training_curves.png")
