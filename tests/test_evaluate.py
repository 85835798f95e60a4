"""evaluate.py end to end on tiny synthetic data: outputs, and one-line exit-2 bad input."""

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_dataset

from exfil.cli import run

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "fpr")


def run_script(name: str, argv: list[str]) -> int:
    """Run a top-level script's main() in this process, as `python name.py argv` would."""
    module = importlib.import_module(name)  # flags start from the script's own defaults
    old = sys.argv
    sys.argv = [f"{name}.py", *argv]
    try:
        run(module.main)
    except SystemExit as done:
        return done.code
    finally:
        sys.argv = old
    return 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Train and test folders from different seeds, and three small trained checkpoints."""
    root = tmp_path_factory.mktemp("eval")
    train = make_dataset(root / "train", packets=1500, seed=11, files=5)
    test = make_dataset(root / "test", packets=1000, seed=12, files=3)
    ckpt = root / "checkpoints"
    quick = ["--data", str(train), "--device", "cpu", "--batch-size", "64"]
    assert run_script("train_clf", [*quick, "--epochs", "3", "--out", str(ckpt / "clf.pt")]) == 0
    assert (
        run_script(
            "train_ae_clf",
            [*quick, "--ae-epochs", "2", "--epochs", "3", "--out", str(ckpt / "ae_clf.pt")],
        )
        == 0
    )
    assert run_script("train_lstm", [*quick, "--epochs", "5", "--out", str(ckpt / "lstm.pt")]) == 0
    return root, train, test, [str(ckpt / f"{n}.pt") for n in ("ae_clf", "clf", "lstm")]


def evaluate(setup, out, test=None, checkpoints=None, extra=()):
    root, train, default_test, default_checkpoints = setup
    argv = [
        "--data",
        str(train),
        "--test",
        str(test or default_test),
        "--out",
        str(out),
        "--checkpoints",
        *(checkpoints or default_checkpoints),
        "--time-labels",  # never the demo's work/test-time of the checkout
        str(Path(out).parent / "no-time-labels.npy"),
        *extra,
    ]
    return run_script("evaluate", argv)


@pytest.mark.slow
def test_evaluate_writes_metrics_report_and_plots(setup, tmp_path, capsys):
    root, train, test, _ = setup
    time_labels = np.load(test / "labels.npy")
    time_labels[:50] = 1  # a time-window rule also flags background traffic
    np.save(tmp_path / "time_labels.npy", time_labels)
    out = tmp_path / "results"
    assert evaluate(setup, out, extra=["--time-labels", str(tmp_path / "time_labels.npy")]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("ae_clf", "clf", "lstm", "ae_anomaly", "logreg", "forest", "rule"):
        assert all(0.0 <= metrics[name][k] <= 1.0 for k in KEYS), name
        assert metrics[name]["packets_per_s"] > 0 and name in printed
    labels = np.load(test / "labels.npy")
    clf = metrics["clf"]
    assert clf["tp"] + clf["fn"] == labels.sum() and clf["packets"] == len(labels)
    files = json.loads((test / "labels.json").read_text())["files"]
    assert set(clf["recall_per_file"]) == {f["file"] for f in files}
    assert set(clf["flagged_per_class"]) <= {"benign/ordinary", "benign/cdn-hash", "exfil/det"}
    assert clf["recall_per_qtype"] and clf["recall_per_style"]["det"]["packets"] == labels.sum()
    report = (out / "report.md").read_text()
    assert "| clf |" in report and "Time-window labels" in report
    noise = json.loads((out / "config.json").read_text())["time_labels_comparison"]
    assert noise["benign_labelled_malicious"] == int((labels[:50] == 0).sum())
    for plot in (
        "confusion_matrices",
        "roc_curves",
        "pr_curves",
        "score_histograms",
        "training_curves",
    ):
        assert (out / f"{plot}.png").stat().st_size > 1000


def _copy(test: Path, where: Path) -> Path:
    shutil.copytree(test, where)
    return where


def _break(case: str, setup, tmp_path: Path) -> dict:
    """Make one kind of bad input; return evaluate's arguments for it."""
    _, _, test, checkpoints = setup
    if case == "missing_checkpoint":
        return {"checkpoints": [str(tmp_path / "nope.pt")]}
    if case == "corrupt_checkpoint":
        data = Path(checkpoints[1]).read_bytes()
        (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
        return {"checkpoints": [str(tmp_path / "cut.pt")]}
    broken = _copy(test, tmp_path / "test")
    features = json.loads((broken / "features.json").read_text())
    if case == "scope_mismatch":
        (broken / "features.json").write_text(json.dumps({**features, "scope": "udp"}))
    elif case == "count_mismatch":
        np.save(broken / "qname_len.npy", np.load(broken / "qname_len.npy")[:-3])
    elif case == "empty":
        for name in ("labels", "unigrams", "qname_bytes", "qname_len", "files", "classes"):
            array = np.load(broken / f"{name}.npy")
            np.save(broken / f"{name}.npy", array[:0])
        (broken / "features.json").write_text(json.dumps({**features, "packets": 0}))
    elif case == "one_class":
        np.save(broken / "labels.npy", np.zeros(len(np.load(broken / "labels.npy")), np.int8))
    return {"test": broken}


@pytest.mark.parametrize(
    "case",
    [
        "missing_checkpoint",
        "corrupt_checkpoint",
        "scope_mismatch",
        "count_mismatch",
        "empty",
        "one_class",
    ],
)
def test_bad_input_gives_one_line_and_exit_2(setup, tmp_path, capsys, case):
    out = tmp_path / "results"
    code = evaluate(
        setup, out, extra=["--baselines", "--no-plots"], **_break(case, setup, tmp_path)
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("evaluate.py: error:"), err
    if case == "one_class":  # what is defined is still written; the rest is null with a note
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["clf"]["roc_auc"] is None and metrics["clf"]["recall"] is None
        assert metrics["clf"]["fpr"] is not None and metrics["clf"]["notes"]
    else:
        assert not (out / "metrics.json").exists()


def test_command_line_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "--checkpoints",
            str(tmp_path / "x.pt"),
            "--test",
            str(tmp_path / "none"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _name_families(folder, families: dict) -> None:
    """Give each file of a dataset folder the family its style maps to (labels.json)."""
    path = folder / "labels.json"
    info = json.loads(path.read_text())
    for entry in info["files"]:
        entry["family"] = families[entry["style"]]
    path.write_text(json.dumps(info))


@pytest.mark.slow
def test_leave_one_out_trains_without_each_family_and_reports_it(setup, tmp_path, capsys):
    train = make_dataset(tmp_path / "train", packets=800, seed=21, files=4, styles=2)
    test = make_dataset(tmp_path / "test", packets=500, seed=22, files=2, styles=2)
    for folder in (train, test):
        _name_families(folder, {"det": "det", "base32": "tooly"})
    out = tmp_path / "results"
    argv = [
        "--data",
        str(train),
        "--test",
        str(test),
        "--out",
        str(out),
        "--leave-one-out",
        "--time-labels",
        str(tmp_path / "none.npy"),
        "--loo-networks",
        "clf",
        "--baselines",
        "rule",
        "--checkpoints",  # its settings (3 epochs, batch 64) are what each family retrains with
        setup[3][1],
        "--no-plots",
    ]
    assert run_script("evaluate", argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("clf: validation F1") == 2  # in-process, once per family
    assert "training without family 'tooly'" in printed
    loo = json.loads((out / "leave_one_out.json").read_text())
    assert set(loo) == {"det", "tooly"}
    classes = np.load(test / "classes.npy")
    for family, by_model in loo.items():
        assert {"clf", "rule", "rule_subdomains"} <= set(by_model)
        held_in_test = int((classes == 2 + ("det", "tooly").index(family)).sum())
        clf = by_model["clf"]
        assert clf["packets"] > held_in_test  # training-folder packets of the family too
        assert 0 <= clf["recall"] <= 1
        assert set(clf["fpr_per_class"]) <= {"benign/ordinary", "benign/cdn-hash"}
        domains = clf["domains"]
        assert domains["tunnel_total"] >= 1 and domains["benign_total"] >= 1
        assert 0 <= domains["tunnel_alerted"] <= domains["tunnel_total"]
        # the rules learn nothing: the same flags whichever family is held out of training
        assert by_model["rule_subdomains"]["packets"] == clf["packets"]
    report = (out / "report.md").read_text()
    assert "Leave one family out" in report and "tunnel domains alerted" in report
