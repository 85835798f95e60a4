"""evaluate.py's figures are readable: every axis says what it counts, confusion cells give
rates beside counts, curves mark each model's operating point, and the PNGs are not blank."""

import numpy as np
from matplotlib import image

from models import plots
from models.metrics import binary_metrics


def _results(labels: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    results = {}
    for name, noise in (("clf", 0.1), ("lstm", 0.2), ("rule", 0.45)):
        scores = np.clip(labels + rng.normal(0, noise, len(labels)), 0, 1)
        results[name] = {"scores": scores, "metrics": binary_metrics(labels, scores, 0.5)}
    return results


def test_figures_label_every_axis_and_give_rates_beside_counts(tmp_path):
    labels = (np.arange(2000) % 10 == 0).astype(np.int8)  # 10% malicious
    results = _results(labels)
    history = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6},
               {"epoch": 2, "train_loss": 0.3, "val_loss": 0.4}]  # fmt: skip
    figures = [plots.confusion_figure(results), plots.histogram_figure(results, labels),
               *plots.curve_figures(results, labels).values(),
               plots.training_figure({"clf": history})]  # fmt: skip
    assert len(figures) == 5
    for fig in figures:
        for ax in fig.axes:
            if ax.axison:
                assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), fig
    cells = [t.get_text() for t in figures[0].axes[0].texts]
    m = results["clf"]["metrics"]
    assert f"{m['tn']:,}" in cells[0] and "% of row" in cells[0] and len(cells) == 4
    share = 100 * m["fp"] / (m["tn"] + m["fp"])  # the rate of the benign row's false positives
    assert f"{share:.2f}%" in cells[1]
    roc = figures[2].axes[0]
    dots = [line for line in roc.lines if line.get_marker() == "o"]
    assert len(dots) == 3 and np.allclose(dots[0].get_xydata()[0], [m["fpr"], m["recall"]])
    for name in (plots.confusion_matrices(results, tmp_path),
                 plots.score_histograms(results, labels, tmp_path)):  # fmt: skip
        pixels = image.imread(tmp_path / name)
        assert pixels.std() > 0.05  # drawn, not blank
    assert plots.curve_figures(results, np.zeros(10, np.int8)) == {}  # one class: no curves
