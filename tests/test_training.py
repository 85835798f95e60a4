"""The training loop and the three training scripts, one process and torchrun, on tiny data."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from exfil.context import DEFAULT_CONTEXT
from exfil.features import NAME_FEATURES
from models import load_checkpoint, predict_proba
from models.data import load_dataset, model_inputs, with_extras
from models.distributed import Dist
from models.metrics import binary_metrics
from models.nets import AEConfig, AutoEncoder, LSTMConfig, MLPClassifier, MLPConfig, QnameLSTM
from models.training import TrainConfig, cross_entropy, fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), packets=3000, seed=4, files=5)


def _mse(net, batch):
    return torch.nn.functional.mse_loss(net(batch[0]), batch[0])


@pytest.mark.parametrize("network", ["clf", "ae", "lstm"])
def test_a_few_steps_lower_the_training_loss(folder, network):
    data = load_dataset(folder)
    torch.manual_seed(0)
    y = torch.from_numpy(data.labels).long()
    x = torch.from_numpy(data.unigrams)
    if network == "clf":
        model, tensors, loss_fn = MLPClassifier(MLPConfig()), (x, y), cross_entropy
    elif network == "ae":
        model, tensors, loss_fn = AutoEncoder(AEConfig()), (x,), _mse
    else:
        qb, ql = torch.from_numpy(data.qname_bytes), torch.from_numpy(data.qname_len).long()
        model, tensors, loss_fn = (
            QnameLSTM(LSTMConfig()),
            (qb[:800], ql[:800], y[:800]),
            cross_entropy,
        )
    with torch.no_grad():
        before = loss_fn(model.eval(), tensors).item()  # eval: no dropout noise in the measure
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, patience=5)
    history = fit(model, tensors, loss_fn, lambda m: {"val_loss": 0.0}, cfg, Dist(), network)
    with torch.no_grad():
        after = loss_fn(model.eval(), tensors).item()
    assert len(history) == 2 and history[0]["train_loss"] > 0
    assert after < 0.8 * before


def test_early_stopping_restores_the_best_epoch(folder):
    data = load_dataset(folder)
    model = MLPClassifier(MLPConfig())
    tensors = (torch.from_numpy(data.unigrams), torch.from_numpy(data.labels).long())
    losses = iter([0.5, 0.3, 0.4, 0.6, 0.7, 0.8])
    kept = {}

    def validate(m):
        loss = next(losses)
        kept[loss] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"val_loss": loss}

    cfg = TrainConfig(epochs=6, batch_size=256, patience=2)
    history = fit(model, tensors, cross_entropy, validate, cfg, Dist(), "clf")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]  # stopped after 2 epochs without gain
    assert all(torch.equal(v, kept[0.3][k]) for k, v in model.state_dict().items())


def test_a_tie_on_the_monitored_score_goes_to_the_lower_validation_loss(folder):
    """PR-AUC saturates at 1 on easy validation sets: the kept epoch is then the one with the
    lowest validation loss (here the third), not merely the first to reach 1."""
    data = load_dataset(folder)
    model = MLPClassifier(MLPConfig())
    tensors = (torch.from_numpy(data.unigrams), torch.from_numpy(data.labels).long())
    losses = iter([0.5, 0.3, 0.1, 0.2, 0.4, 0.6, 0.7])
    kept = {}

    def validate(m):
        loss = next(losses)
        kept[loss] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"val_loss": loss, "val_pr_auc": 1.0}

    cfg = TrainConfig(epochs=7, batch_size=256, patience=3, monitor="val_pr_auc")
    history = fit(model, tensors, cross_entropy, validate, cfg, Dist(), "clf")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert all(torch.equal(v, kept[0.1][k]) for k, v in model.state_dict().items())


def _run(args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        ("train_clf.py", ["--epochs", "3"]),
        ("train_ae_clf.py", ["--ae-epochs", "2", "--epochs", "3"]),
        pytest.param(
            "train_lstm.py", ["--epochs", "8", "--batch-size", "32"], marks=pytest.mark.slow
        ),
    ],
)
def test_training_script_saves_a_usable_checkpoint(tmp_path, folder, script, flags):
    out = tmp_path / "model.pt"
    result = _run([script, "--data", str(folder), "--out", str(out), "--seed", "2", *flags])
    assert result.returncode == 0, result.stderr[-2000:]
    model, meta = load_checkpoint(out)
    assert meta["network"] == script[6:-3] and meta["features"]["scope"] == "qname"
    assert meta["history"] and meta["config"]["seed"] == 2 and 0 < meta["threshold"] < 1
    data = load_dataset(folder)
    if meta["network"] != "lstm":  # unigram nets: name and context columns, all standardised
        assert meta["features"]["extras"] == [*NAME_FEATURES, *DEFAULT_CONTEXT]
        assert meta["model_args"]["extras"] == len(NAME_FEATURES) + len(DEFAULT_CONTEXT)
    else:  # the LSTM reads the context beside the name
        assert meta["features"]["extras"] == list(DEFAULT_CONTEXT)
        assert meta["model_args"]["side"] == len(DEFAULT_CONTEXT)
    p = predict_proba(model, meta, **model_inputs(data, meta))
    assert binary_metrics(data.labels, p, meta["threshold"])["f1"] > 0.9
    if script == "train_ae_clf.py":
        assert meta["anomaly_threshold"] > 0 and len(meta["history"]["autoencoder"]) == 2


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_trains_a_usable_checkpoint(tmp_path, folder):
    out = tmp_path / "ddp.pt"
    result = _run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "train_clf.py",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--device",
            "cpu",
        ],
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on cpu x2" in result.stdout and result.stdout.count("saved ") == 1  # rank 0 only
    model, meta = load_checkpoint(out)
    data = with_extras(load_dataset(folder), meta["features"]["extras"])
    p = predict_proba(model, meta, data.unigrams)
    assert binary_metrics(data.labels, p, meta["threshold"])["f1"] > 0.9


@pytest.mark.parametrize("case", ["missing", "one_class", "negative_copies"])
def test_training_bad_input_is_one_line_and_exit_2(tmp_path, case):
    data = tmp_path / "data"
    script, flags = "train_clf.py", []
    if case == "one_class":
        make_dataset(data, packets=200, seed=1)
        np.save(data / "labels.npy", np.zeros(200, np.int8))
    if case == "negative_copies":
        make_dataset(data, packets=200, seed=1)
        script, flags = "train_lstm.py", ["--augment", "-1"]
    result = _run([script, "--data", str(data), "--out", str(tmp_path / "x.pt"), *flags])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "error:" in result.stderr
    assert not (tmp_path / "x.pt").exists()
