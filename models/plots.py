"""Figures for results/: confusion matrices, ROC and PR curves, score histograms, training curves.

matplotlib with the Agg backend (no display needed); every figure is written atomically. What
makes them readable: colour-blind-safe colours (Okabe and Ito), networks as solid lines and
baselines dashed, every axis titled with what it counts, rates beside counts (a confusion cell
gives both, each curve marks where its threshold puts it), and log scales said in the title.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from exfil.files import atomic_path

# Okabe & Ito (2008): distinguishable with any colour vision, and in grey
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442"]  # fmt: skip
BENIGN, MALICIOUS = "#0072B2", "#D55E00"
NETWORKS = ("ae_clf", "clf", "lstm")  # drawn solid; everything else is a baseline, dashed


def _save(fig, path: Path) -> str:  # noqa: ANN001
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path.name


def _grid(count: int):  # noqa: ANN202
    cols = min(count, 4)
    rows = -(-count // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _style(name: str, index: int) -> dict:
    return {"color": PALETTE[index % len(PALETTE)], "lw": 2.0 if name in NETWORKS else 1.3,
            "ls": "-" if name in NETWORKS else "--"}  # fmt: skip


def confusion_figure(results: dict):  # noqa: ANN201
    """Per model: counts, and the share of each true class (row) that each cell holds; the
    colour is that share, so a rare class is as visible as a common one."""
    fig, axes = _grid(len(results))
    for ax, (name, r) in zip(axes, results.items(), strict=False):
        m = r["metrics"]
        cells = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]], dtype=np.float64)
        rates = cells / np.maximum(cells.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(cells):
            colour = "white" if rates[i, j] > 0.55 else "black"
            ax.text(j, i, f"{int(value):,}\n{100 * rates[i, j]:.2f}% of row", ha="center",
                    va="center", color=colour, fontsize=9)  # fmt: skip
        ax.set_xticks([0, 1], ["benign", "malicious"])
        ax.set_yticks([0, 1], ["benign", "malicious"])
        ax.set_title(f"{name}  (F1 {m['f1']:.4f})" if m.get("f1") is not None else name,
                     fontsize=10)  # fmt: skip
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    fig.suptitle("confusion matrices on the test capture: packets and share of the true class")
    return fig


def confusion_matrices(results: dict, out: Path) -> str:
    return _save(confusion_figure(results), out / "confusion_matrices.png")


def curve_figures(results: dict, labels: np.ndarray) -> dict:
    """{"roc": fig, "pr": fig}: every model on one axis each, a dot where its threshold
    operates; empty when the labels hold one class only."""
    if labels.all() or not labels.any():
        return {}
    figures = {}
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(6.4, 5.0))
        for index, (name, r) in enumerate(results.items()):
            scores = np.asarray(r["scores"], np.float64)
            style = _style(name, index)
            if kind == "roc":
                x, y, _ = roc_curve(labels, scores)
            else:
                y, x, _ = precision_recall_curve(labels, scores)
            auc = r["metrics"].get(f"{kind}_auc")
            auc = float("nan") if auc is None else auc
            ax.plot(x, y, label=f"{name} (AUC {auc:.4f})", **style)
            m = r["metrics"]
            point = (m["fpr"], m["recall"]) if kind == "roc" else (m["recall"], m["precision"])
            if None not in point:
                ax.plot(*point, "o", color=style["color"], ms=6, mec="white", mew=0.8)
        if kind == "roc":
            ax.set_xscale("symlog", linthresh=1e-4)
            ax.set_xlim(0, 1)
            ax.set(xlabel="false-positive rate: share of benign packets flagged (symlog)",
                   ylabel="recall: share of exfiltration packets flagged",
                   title="ROC on the test capture (dots: each model's threshold)")  # fmt: skip
        else:
            ax.set(xlabel="recall: share of exfiltration packets flagged",
                   ylabel="precision: share of flagged packets that are exfiltration",
                   title="precision-recall on the test capture (dots: thresholds)")  # fmt: skip
        ax.legend(fontsize=8, loc="lower right" if kind == "roc" else "lower left")
        ax.grid(alpha=0.3)
        figures[kind] = fig
    return figures


def curves(results: dict, labels: np.ndarray, out: Path) -> list[str]:
    """ROC and PR curves of every model on one axis each (skipped with one class only)."""
    return [_save(fig, out / f"{kind}_curves.png")
            for kind, fig in curve_figures(results, labels).items()]  # fmt: skip


def histogram_figure(results: dict, labels: np.ndarray):  # noqa: ANN201
    """Per model, test scores by true class on a log count axis, with the threshold."""
    fig, axes = _grid(len(results))
    for ax, (name, r) in zip(axes, results.items(), strict=False):
        scores = np.asarray(r["scores"], np.float64)
        bins = np.linspace(scores.min(), scores.max() + 1e-9, 50)
        for cls, colour, title in ((0, BENIGN, "benign"), (1, MALICIOUS, "malicious")):
            if (labels == cls).any():
                ax.hist(scores[labels == cls], bins=bins, alpha=0.6, color=colour,
                        label=f"{title} ({int((labels == cls).sum()):,})")  # fmt: skip
        threshold = r["metrics"]["threshold"]
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3g}")
        ax.set_yscale("log")
        ax.set(title=name, xlabel="score", ylabel="packets (log scale)")
        ax.legend(fontsize=7)
    fig.suptitle("test scores by true class")
    return fig


def score_histograms(results: dict, labels: np.ndarray, out: Path) -> str:
    return _save(histogram_figure(results, labels), out / "score_histograms.png")


def training_figure(histories: dict):  # noqa: ANN201
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
        for key, label, colour in (("train_loss", "training", BENIGN),
                                   ("val_loss", "validation", MALICIOUS)):  # fmt: skip
            ax.plot(epochs, [h.get(key) for h in history], marker="o", ms=3, label=label,
                    color=colour)  # fmt: skip
        ax.set_yscale("log")
        ax.set(title=title, xlabel="epoch", ylabel="loss (log scale)")
        ax.legend(fontsize=7)
    fig.suptitle("training curves")
    return fig


def training_curves(histories: dict, out: Path) -> str | None:
    fig = training_figure(histories)
    return None if fig is None else _save(fig, out / "training_curves.png")
