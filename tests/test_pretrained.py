"""The shipped checkpoints (pretrained/, made by `make models`): they load safely, they read
the features ng.py writes today, and detect.py with no --model, run from another folder,
reaches the README's figures on the demo's test capture."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_script

from exfil.featureset import FeatureSettings
from models import load_checkpoint

NETWORKS = ("clf", "ae_clf", "lstm")
README_F1 = {"clf": 0.9961, "ae_clf": 0.9931, "lstm": 0.9955}  # the README's table
SLACK = 0.003  # the capture is regenerated from its seed: equal bytes, so equal scores


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> dict:
    """features.json as ng.py writes it today with its defaults (on a shipped capture)."""
    out = tmp_path_factory.mktemp("recipe")
    run_script("ng.py", ROOT / "data_generating_codes/captures/iodine.pcap", "--out", out)
    return json.loads((out / "features.json").read_text())


@pytest.mark.parametrize("network", NETWORKS)
def test_shipped_checkpoint_loads_and_reads_todays_features(network, recipe):
    model, meta = load_checkpoint(ROOT / "pretrained" / f"{network}.pt")  # weights_only=True
    assert meta["network"] == network and 0 < meta["threshold"] < 1
    features = meta["features"]
    for key in ("scope", "transform", "qname_len", "fold_case"):
        assert features[key] == recipe[key], key
    assert set(features["extras"]) <= set(recipe["extras"])  # columns ng.py writes
    FeatureSettings.from_meta(features)  # the one settings object builds from it


@pytest.mark.slow
def test_detect_without_model_from_another_folder_reaches_the_readme(tmp_path):
    """The demo's test capture (the Makefile's seed and files), scanned as a new user would."""
    capture = tmp_path / "test.pcap"
    run_script("data_generating_codes/script_datagen.py", "--mode", "offline", "--packets",
               30000, "--seed", 2, "--files", "firmware.bin", "photo-street.jpg", "chart.png",
               "--out", capture)  # fmt: skip
    run_script("ld.py", capture, "--out", tmp_path / "labels")
    labels = np.load(tmp_path / "labels" / "labels.npy")
    truth = set(json.loads(capture.with_suffix(".truth.json").read_text())["exfil_domains"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for network in NETWORKS:
        model = [] if network == "clf" else ["--model", ROOT / "pretrained" / f"{network}.pt"]
        done = subprocess.run(
            [sys.executable, ROOT / "detect.py", capture, *model, "--out", f"{network}.csv",
             "--alerts", f"{network}.json"],
            cwd=elsewhere, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr  # 1 = alerts raised
        flagged = pd.read_csv(elsewhere / f"{network}.csv")["malicious"].to_numpy()
        true_positives = int((flagged & labels).sum())
        f1 = 2 * true_positives / (flagged.sum() + labels.sum())
        assert f1 >= README_F1[network] - SLACK, (network, f1)
        report = json.loads((elsewhere / f"{network}.json").read_text())
        assert {alert["domain"] for alert in report["alerts"]} == truth, network
        if network == "clf":
            assert report["model"] == str(ROOT / "pretrained" / "clf.pt")  # the default
