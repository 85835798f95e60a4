"""Leave one tunnel family out: train without it, then measure how it is caught.

A family is a tool (DET and its presets, iodine, dns2tcp, the modelled dnscat2, beacon, ...):
labels.json names each file's family (older truth files: its style). For each family in the
training folder its files are removed, the networks are retrained in-process by their recipes
with the settings of the checkpoints being evaluated (same honest split) on what is left, and
the baselines are fitted the same way. Recall is measured on that family's packets from the
training folder (never trained on) and from the test folder; false-positive rates on the test
folder's benign traffic, per benign class; per domain, the family's domains alerted and the
test's benign domains alerted, by detect.py's alert rule, beside the two domain-level rules
(which learn nothing, so they are the same in every run). This is the question a deployed
detector faces: a tool it never saw.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from exfil.cli import UserError
from models import domain_metrics as dm
from models.baselines import Baseline
from models.checkpoint import load_checkpoint, predict_proba
from models.data import (
    Dataset,
    model_inputs,
    packet_families,
    save_dataset,
    split_by_file_and_time,
    with_extras,
)
from models.distributed import Dist
from models.recipes import RECIPES
from models.settings import RunConfig, SplitConfig

_DOMAIN_COUNTS = ("tunnel_alerted", "tunnel_total", "benign_alerted", "benign_total")


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
            return predict_proba(model, meta, **model_inputs(d, meta))

        models[network] = (score, meta["threshold"])
    train, val = split_by_file_and_time(sub, split.val_files, split.val_time, split.seed)
    for name in baselines:
        extras = config.get("extras") or []
        fitted = Baseline(name, config["forest_trees"], split.seed)
        fitted.fit(with_extras(sub, extras), train, val, split)
        models[name] = (lambda d, f=fitted, e=extras: f.score(with_extras(d, e)), fitted.threshold)
    return models


def _flags_and_alerts(model: str, scorer: tuple | None, data: Dataset, where: tuple,
                      config: dict) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(per-packet flags, first alert per domain id) of one model on one held set: a network's
    or baseline's flags through detect.py's alert rule, or a domain rule's alerts and the
    causal flags they give."""
    domain, _, name = where
    if scorer is None:  # a domain rule (dm.RULES)
        first = dm.rule_alerts(model, domain, name, data.times)
        return dm.flags_after(domain, first), first
    score, threshold = scorer
    flagged = score(data) >= threshold
    first = dm.first_alerts(domain, name, flagged, config["min_names"], config["min_share"])
    return flagged, first


def leave_one_out(
    data: Dataset,
    test: Dataset,
    runs: dict[str, RunConfig],
    baselines: list[str],
    split: SplitConfig,
    config: dict,
    work: Path,
) -> dict:
    """{family: {model: {recall, packets, fpr, fpr_per_class, domains}}} per family in `data`.

    `runs` maps each network to retrain to its training settings; `config` holds the
    baselines' `extras` and `forest_trees` and the alert rule's `min_names` / `min_share`.
    """
    data_families, test_families = packet_families(data), packet_families(test)
    families = sorted(set(data_families) - {""})
    if len(families) < 2:
        raise UserError(f"leave-one-out needs two or more tunnel families in {data.folder}")
    is_benign = test.labels == 0
    benign = test.subset(np.flatnonzero(is_benign))
    class_names = test.info.get("classes", [])
    results = {}
    for family in families:
        print(f"leave-one-out: training without family {family!r}", flush=True)
        sub = data.subset(np.flatnonzero(data_families != family))
        folder = save_dataset(sub, work / ("without-" + re.sub(r"[^A-Za-z0-9_.-]", "_", family)))
        held_train = data.subset(np.flatnonzero(data_families == family))
        held_test = test.subset(np.flatnonzero(is_benign | (test_families == family)))
        in_test = held_test.labels == 1
        held = [held_train, held_test]
        where = [dm.packet_domains(d.qname_bytes, d.qname_len) for d in held]  # once per set
        results[family] = {}
        scorers: dict = _scorers(runs, baselines, sub, folder, split, config)
        timed = all(d.times is not None for d in held)
        scorers.update({rule: None for rule in dm.RULES if rule != "rule_hourly" or timed})
        for name, scorer in scorers.items():
            flags, domains = [], dict.fromkeys(_DOMAIN_COUNTS, 0)
            for d, at in zip(held, where, strict=True):
                flagged, first = _flags_and_alerts(name, scorer, d, at, config)
                summary = dm.domain_summary(at[0], d.labels, first, d.times)
                flags.append(flagged)
                domains = {key: domains[key] + summary[key] for key in domains}
            flagged_family = np.concatenate([flags[0], flags[1][in_test]])
            flagged_benign = flags[1][~in_test]
            per_class = {}
            if benign.classes is not None:
                for value in np.unique(benign.classes):
                    mask = benign.classes == value
                    key = class_names[value] if value < len(class_names) else str(value)
                    per_class[key] = float(flagged_benign[mask].mean())
            results[family][name] = {
                "recall": float(flagged_family.mean()) if len(flagged_family) else None,
                "packets": int(len(flagged_family)),
                "fpr": float(flagged_benign.mean()) if len(flagged_benign) else None,
                "fpr_per_class": per_class,
                "domains": domains,  # the family's tunnel domains, the test's benign ones
            }
    return results


def loo_tables(results: dict) -> str:
    """Markdown: recall per held-out family, domains alerted, then FPR per benign class."""
    models = list(next(iter(results.values())))
    lines = [
        "| held-out family | packets | " + " | ".join(models) + " |",
        "|" + "---|" * (len(models) + 2),
    ]
    for family, by_model in results.items():
        packets = next(iter(by_model.values()))["packets"]
        cells = ["n/a" if by_model[m]["recall"] is None else f"{by_model[m]['recall']:.4f}"
                 for m in models]  # fmt: skip
        lines.append(f"| {family} | {packets} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| held-out family: tunnel domains alerted, benign domains alerted | "
        + " | ".join(models)
        + " |",
        "|" + "---|" * (len(models) + 1),
    ]
    for family, by_model in results.items():
        cells = []
        for m in models:
            d = by_model[m]["domains"]
            cells.append(f"{d['tunnel_alerted']}/{d['tunnel_total']}, "
                         f"{d['benign_alerted']}/{d['benign_total']}")  # fmt: skip
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
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
