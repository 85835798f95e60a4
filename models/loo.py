"""Leave one exfiltration style out: train without it, then measure recall on it.

For each style in the training folder: its files are removed, the networks are retrained
in-process by their recipes with the settings of the checkpoints being evaluated (same honest
split) on what is left, and the baselines are fitted the same way. Recall is measured on that
style's packets from the training folder (never trained on) and from the test folder;
false-positive rates on the test folder's benign traffic, per benign class. This is the
question a deployed detector faces: a tool it never saw.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from exfil.cli import UserError
from models.baselines import Baseline
from models.checkpoint import load_checkpoint, predict_proba
from models.data import Dataset, save_dataset, split_by_file_and_time, with_extras
from models.distributed import Dist
from models.recipes import RECIPES
from models.settings import RunConfig, SplitConfig


def packet_styles(data: Dataset) -> np.ndarray:
    """Per packet: the style of its exfiltrated file, "" for packets outside files."""
    styles = np.array([f.get("style", "?") for f in data.info.get("files", [])] + [""], object)
    files = data.files if data.files is not None else np.full(len(data), -1)
    return styles[np.where(files >= 0, files, len(styles) - 1)]


def _train_network(network: str, folder: Path, settings: RunConfig) -> tuple:
    """Retrain `network` on `folder` with `settings` (its log kept quiet), then load it."""
    cfg = replace(settings, data=str(folder), out=str(folder / f"{network}.pt"))
    with contextlib.redirect_stdout(io.StringIO()):
        meta = RECIPES[network](cfg, Dist())
    print(f"  {network}: validation F1 {meta['metrics']['f1']}", flush=True)
    return load_checkpoint(cfg.out)


def _scorers(
    runs: dict, baselines: list, sub: Dataset, folder: Path, split: SplitConfig, config: dict
) -> dict:
    """name -> (score(data) function, threshold) for every model trained without the style."""
    models = {}
    for network, settings in runs.items():
        model, meta = _train_network(network, folder, settings)

        def score(d, model=model, meta=meta):
            x = with_extras(d, meta["features"].get("extras") or []).unigrams
            return predict_proba(model, meta, x, d.qname_bytes, d.qname_len)

        models[network] = (score, meta["threshold"])
    train, val = split_by_file_and_time(sub, split.val_files, split.val_time, split.seed)
    for name in baselines:
        extras = config.get("extras") or []
        fitted = Baseline(name, config["forest_trees"], split.seed)
        fitted.fit(with_extras(sub, extras), train, val, split)
        models[name] = (lambda d, f=fitted, e=extras: f.score(with_extras(d, e)), fitted.threshold)
    return models


def leave_one_out(
    data: Dataset,
    test: Dataset,
    runs: dict[str, RunConfig],
    baselines: list[str],
    split: SplitConfig,
    config: dict,
    work: Path,
) -> dict:
    """{style: {model: {recall, packets, fpr, fpr_per_class}}} for every style in `data`.

    `runs` maps each network to retrain to its training settings; `config` holds the
    baselines' `extras` and `forest_trees`.
    """
    data_styles, test_styles = packet_styles(data), packet_styles(test)
    styles = sorted(set(data_styles) - {""})
    if len(styles) < 2:
        raise UserError(f"leave-one-out needs two or more exfiltration styles in {data.folder}")
    benign = test.subset(np.flatnonzero(test.labels == 0))
    class_names = test.info.get("classes", [])
    results = {}
    for style in styles:
        print(f"leave-one-out: training without style {style!r}", flush=True)
        sub = data.subset(np.flatnonzero(data_styles != style))
        folder = save_dataset(sub, work / ("without-" + re.sub(r"[^A-Za-z0-9_.-]", "_", style)))
        held = [
            d.subset(np.flatnonzero(s == style))
            for d, s in ((data, data_styles), (test, test_styles))
        ]
        results[style] = {}
        scorers = _scorers(runs, baselines, sub, folder, split, config)
        for name, (score, threshold) in scorers.items():
            flagged_style = np.concatenate([score(d) >= threshold for d in held if len(d)])
            flagged_benign = score(benign) >= threshold if len(benign) else np.zeros(0, bool)
            per_class = {}
            if benign.classes is not None:
                for value in np.unique(benign.classes):
                    mask = benign.classes == value
                    key = class_names[value] if value < len(class_names) else str(value)
                    per_class[key] = float(flagged_benign[mask].mean())
            results[style][name] = {
                "recall": float(flagged_style.mean()),
                "packets": int(len(flagged_style)),
                "fpr": float(flagged_benign.mean()) if len(flagged_benign) else None,
                "fpr_per_class": per_class,
            }
    return results


def loo_tables(results: dict) -> str:
    """Markdown: recall per held-out style, then FPR per benign class (worst over styles)."""
    models = list(next(iter(results.values())))
    lines = [
        "| held-out style | packets | " + " | ".join(models) + " |",
        "|" + "---|" * (len(models) + 2),
    ]
    for style, by_model in results.items():
        packets = next(iter(by_model.values()))["packets"]
        cells = [f"{by_model[m]['recall']:.4f}" for m in models]
        lines.append(f"| {style} | {packets} | " + " | ".join(cells) + " |")
    classes = sorted({c for r in results.values() for m in r.values() for c in m["fpr_per_class"]})
    lines += [
        "",
        "| benign class (worst FPR over the runs) | " + " | ".join(models) + " |",
        "|" + "---|" * (len(models) + 1),
    ]
    for c in classes:
        cells = [max(r[m]["fpr_per_class"].get(c, 0.0) for r in results.values()) for m in models]
        lines.append(f"| {c} | " + " | ".join(f"{x:.4%}" for x in cells) + " |")
    return "\n".join(lines)
