"""Evaluate the three networks and the baselines on a separately generated test capture.

    python evaluate.py                                   # checkpoints/*.pt on work/test -> results/
    python evaluate.py --test work/test --data work/train --out results
    python evaluate.py --checkpoints checkpoints/clf.pt --baselines rule --no-plots
    python evaluate.py --time-labels work/test-time/labels.npy   # measure time-rule label noise
    python evaluate.py --leave-one-out                   # + train without each family, test on it
    python evaluate.py --ablation                        # + baselines on unigrams alone
    python evaluate.py --extras                          # baselines on unigrams alone

Networks use the threshold stored in their checkpoint and the extra features it names (TEST
needs them: ng.py --extras). Baselines (logistic regression and random forest on the unigrams
+ EXTRAS, a length/entropy rule) are fitted on DATA's training split with the networks' split
and threshold rule, read from the checkpoints' settings (the project's defaults without any);
leave-one-out retrains each network with its checkpoint's settings. Writes results/metrics.json
(model -> accuracy, precision, recall, f1, roc_auc, pr_auc, fpr, ...; undefined values are
null with a note), results/report.md and PNG plots; metrics.json is written last (an old one
is removed first), so it is there only when the whole set is. Bad input: one line, exit code 2.
"""

import json
import sys
import time
from pathlib import Path

import exfil  # noqa: F401 (first: a python without the requirements says so in one line)

# isort: split
import numpy as np

from exfil.cli import UserError, configure, format_config, run
from exfil.context import DEFAULT_CONTEXT
from exfil.dnsparse import qtype_names
from exfil.features import NAME_FEATURES, Extra
from exfil.files import save_json, save_text, writable_folder
from models import anomaly_score, baselines, check_features, load_checkpoint, predict_proba
from models import domain_metrics as dm
from models.baselines import BaselineName
from models.data import (
    Dataset,
    features_key,
    file_families,
    load_dataset,
    model_inputs,
    split_by_file_and_time,
    with_extras,
)
from models.metrics import binary_metrics, rate_by_group
from models.nets import Network
from models.report import domain_table, group_table, main_table, markdown_report
from models.settings import RUNS, RunConfig, SplitConfig

# ----------------------------------------------------------------------------- config
# data
DATA = "work/train"  # training folder: the baselines are fitted on its training split
TEST = "work/test"  # test folder, from a separately generated capture (other seed, files)
TIME_LABELS = "work/test-time/labels.npy"  # time-rule labels of TEST (ld.py --rule time), if any
# models
CHECKPOINTS = ["checkpoints/ae_clf.pt", "checkpoints/clf.pt", "checkpoints/lstm.pt"]  # networks
BASELINES: list[BaselineName] = ["logreg", "forest", "rule"]  # baselines to fit and score
EXTRAS: list[Extra] = list(NAME_FEATURES)  # baselines' name features; none: --extras
CONTEXT = True  # baselines also get the per-domain context features (as the networks do)
ABLATION = False  # also fit logreg and forest on unigrams alone (NAME-unigrams): do EXTRAS help?
ANOMALY = True  # also report ae_clf's anomaly path (reconstruction error) as ae_anomaly
FOREST_TREES = 100  # trees of the random forest baseline (seeded by the split's seed)
DOMAIN_RULES = True  # also the per-domain rules: rule_subdomains (RITA), rule_hourly (Zeek)
MIN_NAMES = 5  # per-domain metrics: alert rule as detect.py's (distinct flagged names) ...
MIN_SHARE = 0.2  # ... and share of the domain's packets flagged so far
# leave one family out
LEAVE_ONE_OUT = False  # for each tunnel family in DATA: train without it, test on it
LOO_NETWORKS: list[Network] = ["clf", "ae_clf", "lstm"]  # retrained per held-out family (slow)
# output
OUT = "results"  # folder for metrics.json, report.md and plots
PLOTS = True  # write PNG plots
BATCH_SIZE = 65536  # packets per inference batch
# -----------------------------------------------------------------------------


def timed(fn):
    """(result, seconds) of one call."""
    began = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - began


def steady_timed(fn, test: Dataset):
    """Time `fn(rows)` on all of TEST after a small warm-up call (kernel and allocator setup)."""
    fn(slice(0, 1024))
    return timed(lambda: fn(slice(None)))


def load_networks(test: Dataset) -> list[tuple[str, object, dict]]:
    """(path, model, meta) of every checkpoint, each checked against TEST's features."""
    loaded = []
    for path in CHECKPOINTS:
        model, meta = load_checkpoint(path)
        check_features(meta, test.features)
        loaded.append((path, model, meta))
    return loaded


def trained_settings(loaded: list) -> tuple[SplitConfig, dict[str, RunConfig]]:
    """The split the networks were trained with, and each network's run settings."""
    runs = {}
    for path, _, meta in loaded:
        runs.setdefault(meta["network"], RUNS[meta["network"]].from_dict(meta["config"], path))
    splits = {SplitConfig.from_dict(meta["config"], path) for path, _, meta in loaded}
    if len(splits) > 1:
        print(f"warning: the checkpoints differ in their split; baselines use {CHECKPOINTS[0]}'s")
    split = SplitConfig.from_dict(loaded[0][2]["config"]) if loaded else SplitConfig()
    return split, runs


def score_networks(test: Dataset, loaded: list) -> tuple[dict, dict]:
    """Every checkpoint's scores and metrics on TEST (+ the anomaly path of ae_clf)."""
    results, histories = {}, {}
    for path, model, meta in loaded:
        inputs = model_inputs(test, meta)  # + the extras the checkpoint was trained with
        x = inputs.get("unigrams")
        name = Path(path).stem
        if set(meta.get("train_captures", [])) & set(filter(None, test.captures)):
            print(f"warning: {name} was trained on a capture that is also in {TEST}")

        def proba(rows, model=model, meta=meta, inputs=inputs):
            picked = {k: (None if a is None else a[rows]) for k, a in inputs.items()}
            return predict_proba(model, meta, batch_size=BATCH_SIZE, **picked)

        scores, seconds = steady_timed(proba, test)
        rule = meta.get("threshold_rule", "")
        results[name] = {
            "scores": scores,
            "threshold": meta["threshold"],
            "seconds": seconds,
            "threshold_rule": rule,
        }
        histories[name] = meta.get("history", [])
        if ANOMALY and meta["network"] == "ae_clf" and "anomaly_threshold" in meta:

            def errors(rows, model=model, meta=meta, x=x):
                return anomaly_score(model, meta, x[rows], BATCH_SIZE)

            scores, seconds = steady_timed(errors, test)
            threshold = meta["anomaly_threshold"]
            results["ae_anomaly"] = {
                "scores": scores,
                "threshold": threshold,
                "seconds": seconds,
                "threshold_rule": "quantile of benign validation error",
            }
    return results, histories


def baseline_extras() -> list[str]:
    """The baselines' extra columns: EXTRAS, then (CONTEXT) the context ones the networks get."""
    return list(dict.fromkeys([*EXTRAS, *(DEFAULT_CONTEXT if CONTEXT else ())]))


def score_baselines(test: Dataset, split: SplitConfig) -> dict:
    """Each baseline fitted on DATA's training split, its threshold on validation, on TEST."""
    if not BASELINES:
        return {}
    train_data = load_dataset(DATA, need=("unigrams", "qname"))
    for key in ("scope", "transform", "dim"):
        if features_key(train_data.features)[key] != features_key(test.features)[key]:
            raise UserError(f"{DATA} and {TEST} have different feature {key}: rerun ng.py")
    train, val = split_by_file_and_time(train_data, split.val_files, split.val_time, split.seed)
    runs = [(name, name, baseline_extras()) for name in BASELINES]  # (name, baseline, extras)
    if ABLATION and EXTRAS:
        runs += [(f"{n}-unigrams", n, []) for n in BASELINES if n != "rule"]
    results = {}
    for label, name, extras in runs:
        fit_data, test_data = with_extras(train_data, extras), with_extras(test, extras)
        baseline, fit_seconds = timed(
            lambda n=name, d=fit_data: baselines.Baseline(n, FOREST_TREES, split.seed).fit(
                d, train, val, split
            )
        )
        scores, seconds = timed(lambda b=baseline, d=test_data: b.score(d))
        results[label] = {
            "scores": scores,
            "threshold": baseline.threshold,
            "seconds": seconds,
            "fit_seconds": round(fit_seconds, 3),
            "threshold_rule": baseline.rule,
        }
        print(f"fitted baseline {label} on {DATA} in {fit_seconds:.1f} s")
    return results


# ----------------------------------------------------------------------------- groups


def _file_group(test: Dataset, per_file: list[str]) -> tuple:
    """(group id per packet, group names, mask: the files' packets) of a per-file value."""
    names = sorted(set(per_file))
    of_file = np.array([names.index(value) for value in per_file], np.int64)
    return np.where(test.files >= 0, of_file[np.maximum(test.files, 0)], -1), names, test.files >= 0


def packet_groups(test: Dataset) -> dict:
    """Group id arrays + names: per exfiltrated file, style, family, class, qtype."""
    groups = {}
    info = test.info
    if test.files is not None and (test.files >= 0).any():
        names = [f.get("file", str(i)) for i, f in enumerate(info.get("files", []))]
        groups["file"] = (test.files, names, test.files >= 0)
        groups["style"] = _file_group(test, [f.get("style", "?") for f in info.get("files", [])])
        groups["family"] = _file_group(test, file_families(info))
    if test.classes is not None:
        groups["class"] = (test.classes, info.get("classes"), np.ones(len(test), bool))
    if test.qtypes is not None:  # ld.py's qtypes.npy, as packets.csv spells them
        values, ids = np.unique(qtype_names(test.qtypes), return_inverse=True)
        groups["qtype"] = (ids, list(values), test.labels == 1)
    return groups


def compare_time_labels(test: Dataset) -> dict | None:
    """How wrong the original's time-window labels are, measured against the exact labels."""
    path = Path(TIME_LABELS)
    if not TIME_LABELS or not path.is_file():
        return None
    try:
        time_labels = np.load(path, allow_pickle=False).astype(np.int8)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable labels.npy ({error})") from None
    if len(time_labels) != len(test):
        if TIME_LABELS == "work/test-time/labels.npy":  # the demo's default, another --test
            print(f"note: {path} ({len(time_labels)} labels) is not of {TEST} ({len(test)} "
                  "packets): time-rule comparison skipped", file=sys.stderr)  # fmt: skip
            return None
        raise UserError(f"{path}: {len(time_labels)} labels but {TEST} has {len(test)} packets")
    m = binary_metrics(test.labels, time_labels, 0.5)
    return {
        "path": str(path),
        "agreement": m["accuracy"],
        "benign_labelled_malicious": m["fp"],
        "malicious_labelled_benign": m["fn"],
        "precision": m["precision"],
        "recall": m["recall"],
        "notes": m["notes"],
    }


def domain_rules(test: Dataset, where: tuple) -> dict:
    """The two per-domain rule baselines as results (causal per-packet flags, first alerts)."""
    domain, name = where
    results = {}
    for label in dm.RULES:
        if label == "rule_hourly" and test.times is None:
            continue
        first, seconds = timed(lambda label=label: dm.rule_alerts(label, domain, name, test.times))
        results[label] = {
            "scores": dm.flags_after(domain, first).astype(np.float32),
            "threshold": 0.5,
            "seconds": seconds,
            "threshold_rule": "per domain, causal: packets once their domain is alerted",
            "first": first,
        }
    return results


def summarise(result: dict, labels: np.ndarray, groups: dict, test: Dataset, where) -> dict:  # noqa: ANN001
    """metrics.json entry of one model: headline metrics, speed, per-group and per-domain."""
    m = binary_metrics(labels, result["scores"], result["threshold"])
    m["packets_per_s"] = len(labels) / max(result["seconds"], 1e-9)
    for key in ("fit_seconds", "threshold_rule"):
        if key in result:
            m[key] = result[key]
    flagged = np.asarray(result["scores"]) >= result["threshold"]
    for key, (ids, names, mask) in groups.items():
        name = "flagged_per_class" if key == "class" else f"recall_per_{key}"
        m[name] = rate_by_group(ids[mask], flagged[mask], names)
    domain, name = where
    first = result.get("first")
    if first is None:
        first = dm.first_alerts(domain, name, flagged, MIN_NAMES, MIN_SHARE)
    m["domains"] = dm.domain_summary(domain, labels, first, test.times, test.files)
    result["metrics"] = m
    return m


def run_leave_one_out(test: Dataset, loaded: list, config: dict, out: Path) -> None:
    """Train without each family, test on it; save leave_one_out.json (report.md shows it)."""
    import tempfile

    from models.loo import leave_one_out, loo_tables

    split, runs = trained_settings(loaded)
    missing = [n for n in LOO_NETWORKS if n not in runs]
    if missing:
        raise UserError(
            f"leave-one-out retrains each network with its checkpoint's settings: give "
            f"--checkpoints with a {' and '.join(missing)} checkpoint (or --loo-networks)"
        )
    runs = {n: runs[n] for n in LOO_NETWORKS}
    data = load_dataset(DATA, need=("unigrams", "qname"))
    with tempfile.TemporaryDirectory(prefix="exfil-loo-") as work:
        settings = {**config, "extras": baseline_extras()}
        results = leave_one_out(data, test, runs, BASELINES, split, settings, Path(work))
    save_json(out / "leave_one_out.json", results)
    print(loo_tables(results) + "\n")


def write_plots(results: dict, histories: dict, labels: np.ndarray, out: Path) -> list:
    """Confusion matrices, ROC/PR curves, score histograms, training curves: their paths."""
    from models import plots as figures

    plots = [figures.confusion_matrices(results, out)]
    plots += figures.curves(results, labels, out)
    plots += [figures.score_histograms(results, labels, out)]
    return plots + [p for p in [figures.training_curves(histories, out)] if p]


def print_summary(metrics: dict, context: dict) -> None:
    """The metrics table, the per-group tables, and how noisy the time labels are."""
    print(main_table(metrics))
    for key in ("recall_per_file", "recall_per_style", "recall_per_family", "flagged_per_class"):
        table = group_table(metrics, key)
        if table:
            print("\n" + table)
    print("\n" + domain_table(metrics))
    if context["time_labels"]:
        noise = context["time_labels"]
        print(
            f"\ntime-rule labels agree with exact labels on {noise['agreement']:.4f} of packets "
            f"({noise['benign_labelled_malicious']} benign labelled malicious)"
        )


def main() -> int:
    config = configure(globals(), paths=("DATA", "TEST", "TIME_LABELS", "CHECKPOINTS", "OUT"))
    print(format_config(config))
    test = load_dataset(TEST, need=("unigrams", "qname"), min_classes=1)
    out = writable_folder(OUT, "results")
    (out / "metrics.json").unlink(missing_ok=True)  # written last: there only when complete
    loaded = load_networks(test)
    time_labels = compare_time_labels(test)  # before any long work: a mismatch fails at once
    if LEAVE_ONE_OUT:
        run_leave_one_out(test, loaded, config, out)
    results, histories = score_networks(test, loaded)
    results.update(score_baselines(test, trained_settings(loaded)[0]))
    domain, _, name = dm.packet_domains(test.qname_bytes, test.qname_len)
    if DOMAIN_RULES:
        results.update(domain_rules(test, (domain, name)))
    if not results:
        raise UserError("nothing to evaluate: give --checkpoints and/or --baselines")
    groups = packet_groups(test)
    metrics = {
        label: summarise(r, test.labels, groups, test, (domain, name))
        for label, r in results.items()
    }
    one_class = len(np.unique(test.labels)) < 2
    context = {
        "test": TEST,
        "data": DATA,
        "packets": len(test),
        "malicious": int(test.labels.sum()),
        "time_labels": time_labels,
        "notes": [
            "test data has one class only: roc_auc, pr_auc and some rates are undefined (null)"
        ]
        if one_class
        else [],
    }
    plots = write_plots(results, histories, test.labels, out) if PLOTS else []
    save_json(out / "config.json", {**config, "time_labels_comparison": context["time_labels"]})
    if (out / "leave_one_out.json").is_file():
        from models.loo import loo_tables

        loo = json.loads((out / "leave_one_out.json").read_text(encoding="utf-8"))
        context["leave_one_out"] = loo_tables(loo) if loo else ""
    save_text(out / "report.md", markdown_report(metrics, context, plots))
    save_json(out / "metrics.json", metrics)
    print_summary(metrics, context)
    print(
        f"\nwrote {out}/metrics.json, {out}/report.md" + (f" and {len(plots)} plots" * bool(plots))
    )
    if one_class:
        kind = "malicious" if test.labels.all() else "benign"
        raise UserError(
            f"{TEST}: all packets are {kind} (one class only); undefined metrics "
            f"written as null to {out}/metrics.json"
        )
    return 0


if __name__ == "__main__":
    run(main)
