"""Networks, checkpoints, data loading, splits and metrics, on tiny synthetic dataset folders."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from exfil.cli import UserError
from exfil.features import name_histograms
from models import check_features, load_checkpoint, predict_proba, save_checkpoint
from models.data import features_key, load_dataset, split_by_file_and_time, with_extras
from models.inference import score_qnames
from models.metrics import binary_metrics, choose_threshold, fpr_threshold
from models.nets import NETWORKS, AEClassifier, AEConfig, QnameLSTM, build, fit_scaling


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), packets=1200, seed=3)


# --------------------------------------------------------------------------- networks


def test_default_shapes_are_the_originals():
    ae = AEClassifier(AEConfig())
    linears = [m for m in ae.autoencoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (256, 128),
        (128, 64),
        (64, 128),
        (128, 256),
    ]
    assert ae.head[1].in_features == 64 and ae.head[1].out_features == 2
    clf = build("clf", {})
    assert [m.out_features for m in clf.modules() if isinstance(m, torch.nn.Linear)] == [128, 64, 2]
    x = torch.rand(5, 256)
    assert ae(x).shape == (5, 2) and ae.autoencoder(x).shape == (5, 256)
    assert ae.reconstruction_error(x).shape == (5,)


def test_lstm_ignores_padding_and_batch_order():
    torch.manual_seed(0)
    model = build("lstm", {}).eval()
    rng = np.random.default_rng(0)
    lengths = np.array([0, 3, 67, 12, 40], np.int32)  # 0: the root name
    qb = np.zeros((5, 256), np.uint8)
    for i, n in enumerate(lengths):
        qb[i, :n] = rng.integers(45, 123, n)
    dirty = qb.copy()
    dirty[np.arange(256) >= np.maximum(lengths, 1)[:, None]] = 7  # garbage after each name
    a = score_qnames(model, qb, lengths)
    assert np.allclose(a, score_qnames(model, dirty, lengths), atol=1e-6)
    with torch.no_grad():  # the length-sorted batched path equals a plain forward
        direct = torch.softmax(model(torch.from_numpy(qb), torch.from_numpy(lengths)), 1)[:, 1]
    assert np.allclose(a, direct.numpy(), atol=1e-6)
    assert np.allclose(a[[4, 2]], score_qnames(model, qb[[4, 2]], lengths[[4, 2]]), atol=1e-6)


def test_lstm_reads_names_right_to_left():
    torch.manual_seed(0)
    lstm = QnameLSTM(NETWORKS["lstm"][1]())
    seen = []
    lstm.embed.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    lstm(torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]], dtype=torch.uint8), torch.tensor([3, 2]))
    assert seen[0][0, :3].tolist() == [3, 2, 1] and seen[0][1, :2].tolist() == [5, 4]


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("network", ["ae_clf", "clf", "lstm"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, folder, network):
    torch.manual_seed(1)
    _, config = NETWORKS[network]
    model = build(network, asdict(config()))
    data = load_dataset(folder)
    meta = {
        "network": network,
        "model_args": asdict(config()),
        "threshold": 0.5,
        "features": features_key(data.features),
        "anomaly_threshold": 0.1,
    }
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "m.pt")
    arrays = dict(unigrams=data.unigrams, qname_bytes=data.qname_bytes, qname_len=data.qname_len)
    before = predict_proba(model, meta, **arrays)
    after = predict_proba(loaded, loaded_meta, **arrays)
    assert before.dtype == np.float32 and before.shape == (len(data),)
    assert np.array_equal(before, after)
    assert loaded_meta["threshold"] == 0.5 and loaded_meta["network"] == network
    blob = torch.load(tmp_path / "m.pt", weights_only=True)  # plain tensors + JSON only
    assert json.loads(json.dumps(blob["meta"]))["network"] == network


def test_load_checkpoint_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x80not a checkpoint" * 10)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}, "meta": {"network": "gpt"}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="unknown network"):
        load_checkpoint(tmp_path / "other.pt")
    meta = {"network": "clf", "threshold": 0.5, "features": {"scope": "qname"}}
    torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": meta}, tmp_path / "w.pt")
    with pytest.raises(UserError, match="do not fit"):
        load_checkpoint(tmp_path / "w.pt")


def test_check_features_refuses_other_scope_or_transform():
    meta = {"network": "clf", "features": {"scope": "qname", "transform": "log1p", "dim": 256}}
    check_features(meta, {"scope": "qname", "transform": "log1p", "dim": 256, "packets": 9})
    with pytest.raises(UserError, match="scope"):
        check_features(meta, {"scope": "udp", "transform": "log1p", "dim": 256})
    with pytest.raises(UserError, match="transform"):
        check_features(meta, {"scope": "qname", "transform": "raw", "dim": 256})


# --------------------------------------------------------------------------- data and split


def test_dataset_unigrams_are_the_feature_recipe_and_a_plain_count(folder):
    data = load_dataset(folder)
    for i in (0, 7, len(data) - 1):  # each row: 1 + ln(count) of its name's bytes, 0 elsewhere
        name = data.qname_bytes[i, : data.qname_len[i]]
        counts = np.bincount(name, minlength=256)
        expected = np.where(counts > 0, 1 + np.log(np.maximum(counts, 1)), 0)
        np.testing.assert_allclose(data.unigrams[i], expected, rtol=1e-6)
    qb = np.zeros((1, 256), np.uint8)
    qb[0, :6] = np.frombuffer(b"aab.cc", np.uint8)
    row = name_histograms(qb, np.array([6]))[0]
    assert row[ord("a")] == pytest.approx(1 + np.log(2)) and row[ord("b")] == 1.0
    assert row[0] == 0 and np.count_nonzero(row) == 4


def test_split_keeps_each_file_on_one_side_and_benign_by_time(folder):
    data = load_dataset(folder)
    train, val = split_by_file_and_time(data, val_files=0.25, val_time=0.2, seed=5)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(data)
    train_files, val_files = set(data.files[train]) - {-1}, set(data.files[val]) - {-1}
    assert val_files and train_files and not train_files & val_files
    benign_val = val[data.files[val] < 0]
    benign_train = train[data.files[train] < 0]
    assert benign_val.min() > benign_train.max()  # a time block, not random packets


def test_load_dataset_refuses_inconsistent_folders(tmp_path, folder):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    np.save(bad / "unigrams.npy", np.zeros((5, 256), np.float32))
    with pytest.raises(UserError, match="rows but labels.npy has"):
        load_dataset(bad)
    with pytest.raises(UserError, match="no such dataset"):
        load_dataset(tmp_path / "nowhere")
    empty = make_dataset(tmp_path / "one", packets=300, seed=1)
    np.save(empty / "labels.npy", np.zeros(300, np.int8))
    with pytest.raises(UserError, match="all 300 packets are benign"):
        load_dataset(empty)
    assert len(load_dataset(empty, min_classes=1)) == 300


# --------------------------------------------------------------------------- metrics


def test_threshold_sits_between_separable_classes():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    t = choose_threshold(labels, scores)
    assert 0.3 < t < 0.7
    m = binary_metrics(labels, scores, t)
    assert m["f1"] == 1.0 and m["fpr"] == 0.0 and m["roc_auc"] == 1.0


def test_undefined_metrics_are_null_with_a_note():
    m = binary_metrics(np.zeros(4), np.array([0.1, 0.2, 0.6, 0.3]), 0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None and m["recall"] is None
    assert m["fpr"] == 0.25 and any("one class" in note for note in m["notes"])
    assert choose_threshold(np.zeros(4), np.arange(4.0), default=0.5) == 0.5


def test_fpr_threshold_keeps_the_false_alarm_budget():
    rng = np.random.default_rng(0)
    benign = rng.random(10_000)
    labels = np.r_[np.zeros(10_000), np.ones(50)]
    scores = np.r_[benign, np.full(50, 2.0)]
    t = fpr_threshold(labels, scores, 0.001)
    assert np.sum(benign >= t) == 10  # exactly the budget: 0.1% of 10,000 benign packets
    assert fpr_threshold(labels, scores, 0.0) > benign.max()
    assert fpr_threshold(np.ones(3), np.arange(3.0), 0.001) is None


# --------------------------------------------------------------------------- style-stratified split


def test_split_keeps_an_instance_of_every_style_in_training(tmp_path):
    data = load_dataset(make_dataset(tmp_path / "d", packets=1500, seed=2, files=6))
    styles = ["a", "a", "a", "b", "c", "c"]  # b has one instance: it must stay in training
    data.info = {**data.info, "files": [{"style": s} for s in styles]}
    for seed in range(8):
        train, val = split_by_file_and_time(data, val_files=0.5, val_time=0.2, seed=seed)
        held = set(data.files[val]) - {-1}
        kept = set(data.files[train]) - {-1}
        assert held and not held & kept  # whole files, on one side only
        assert {styles[i] for i in kept} == {"a", "b", "c"}
        assert 3 not in held


def test_split_holds_one_file_out_when_no_style_repeats(tmp_path):
    data = load_dataset(make_dataset(tmp_path / "d", packets=800, seed=2, files=3))
    data.info = {**data.info, "files": [{"style": s} for s in "xyz"]}
    _, val = split_by_file_and_time(data, val_files=0.25, val_time=0.2, seed=1)
    assert len(set(data.files[val]) - {-1}) == 1  # validation still has malicious files


# --------------------------------------------------------------------------- extra features


def test_extras_are_standardised_inside_the_net_and_survive_a_checkpoint(tmp_path, folder):
    data = with_extras(load_dataset(folder), ["name_len", "entropy"])
    assert data.unigrams.shape[1] == 258 and data.features["extras"] == ["name_len", "entropy"]
    model = build("clf", {"dim": 258, "extras": 2})
    x = torch.from_numpy(data.unigrams)
    fit_scaling(model, x)
    scaled = model.scale(x)[:, 256:]
    assert torch.allclose(scaled.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(scaled.std(0), torch.ones(2), atol=1e-3)
    assert torch.equal(model.scale(x)[:, :256], x[:, :256])  # unigrams untouched
    meta = {"network": "clf", "model_args": {"dim": 258, "extras": 2}, "threshold": 0.5,
            "features": {"scope": "qname", "extras": ["name_len", "entropy"]}}  # fmt: skip
    save_checkpoint(tmp_path / "x.pt", model, meta)
    loaded, _ = load_checkpoint(tmp_path / "x.pt")
    assert np.array_equal(
        predict_proba(model, meta, data.unigrams), predict_proba(loaded, meta, data.unigrams)
    )


def test_missing_extras_are_a_user_error_that_says_how_to_fix(folder):
    data = load_dataset(folder)
    assert with_extras(data, []).unigrams.shape[1] == 256
    with pytest.raises(UserError, match="--extras qtype"):
        with_extras(data, ["qtype"])


def test_bf16_scoring_keeps_the_float32_verdicts_at_any_threshold():
    """--precision bf16: rounding moves scores, never a verdict, even at thresholds where the
    float32 sigmoid saturates (1 - 2^-24, 1.0) or at 0; and a changed weight is seen. A linear
    net with widely spread logits reaches both saturated ends."""
    from models.inference import score_unigrams, score_unigrams_bf16

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(258, 2)).eval()
    with torch.no_grad():
        model[0].weight.mul_(10.0)  # logits (their difference) with a spread of about 25
    x = np.random.default_rng(1).normal(size=(4000, 258)).astype(np.float32) * 3
    full = score_unigrams(model, x)
    assert (full == 1.0).any() and (full < 1e-9).any() and ((full > 0.1) & (full < 0.9)).any()
    for threshold in (0.0, 1e-9, 0.01, float(np.median(full)), 0.5, 1 - 2**-24, 1.0):
        low = score_unigrams_bf16(model, x, threshold)
        assert np.array_equal(low >= threshold, full >= threshold), threshold
    assert np.abs(score_unigrams_bf16(model, x, 0.5) - full).max() > 0  # bf16 it was
    with torch.no_grad():
        model[0].weight.mul_(-1.0)
    changed = score_unigrams(model, x)
    assert np.array_equal(score_unigrams_bf16(model, x, 0.5) >= 0.5, changed >= 0.5)
