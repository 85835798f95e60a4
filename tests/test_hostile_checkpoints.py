"""Checkpoints that are wrong but would load: each is refused with one line (exit 2 in scripts)."""

import copy
import zipfile

import pytest
import torch
from conftest import run_script
from synthetic import make_dataset

from exfil.cli import UserError
from models import load_checkpoint, save_checkpoint
from models.nets import MLPClassifier, MLPConfig

GOOD_META = {
    "network": "clf",
    "model_args": {"dim": 256, "hidden": [16, 8], "classes": 2, "extras": 0},
    "features": {"scope": "qname", "transform": "log1p", "qname_len": 256, "dim": 256,
                 "extras": []},
    "threshold": 0.5,
}  # fmt: skip


def write(path, meta=None, state=None) -> None:
    """A checkpoint in the project's format with `meta` (and optionally other weights)."""
    model = MLPClassifier(MLPConfig(hidden=(16, 8)))
    blob = {"state_dict": state or model.state_dict(), "meta": meta or GOOD_META}
    torch.save(blob, path)


def changed(**changes) -> dict:
    meta = copy.deepcopy(GOOD_META)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = meta
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(key)
        else:
            target[key] = value
    return meta


CASES = {
    "string threshold": (changed(threshold="0.5"), "threshold"),
    "missing threshold": (changed(threshold=None), "threshold"),
    "threshold outside [0, 1]": (changed(threshold=7.0), "threshold"),
    "missing features": (changed(features=None), "feature settings"),
    "bogus scope": (changed(features__scope="everything"), "scope"),
    "bogus transform": (changed(features__transform="sqrt"), "transform"),
    "bogus extras": (changed(features__extras=["shoe_size"]), "extras"),
    "absurd qname_len": (changed(features__qname_len=10**12), "qname_len"),
    "negative qname_len": (changed(features__qname_len=-3), "qname_len"),
    "string network argument": (changed(model_args__hidden=["16", "8"]), "hidden"),
    "absurd network argument": (changed(model_args__dim=10**9), "dim"),
    "negative anomaly threshold": (changed(anomaly_threshold=-1.0), "anomaly_threshold"),
}


def test_a_good_checkpoint_loads(tmp_path):
    write(tmp_path / "good.pt")
    model, meta = load_checkpoint(tmp_path / "good.pt")
    assert meta["threshold"] == 0.5 and not model.training


@pytest.mark.parametrize("case", CASES)
def test_wrong_values_are_refused_in_one_line(tmp_path, case):
    meta, words = CASES[case]
    write(tmp_path / "bad.pt", meta)
    with pytest.raises(UserError, match=words) as refused:
        load_checkpoint(tmp_path / "bad.pt")
    assert "\n" not in str(refused.value)


def test_nan_weights_are_refused(tmp_path):
    model = MLPClassifier(MLPConfig(hidden=(16, 8)))
    state = model.state_dict()
    state["net.0.weight"][0, 0] = float("nan")
    write(tmp_path / "nan.pt", state=state)
    with pytest.raises(UserError, match="not finite"):
        load_checkpoint(tmp_path / "nan.pt")


def test_damaged_zip_member_is_refused_not_loaded_as_garbage(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", MLPClassifier(MLPConfig(hidden=(16, 8))), GOOD_META)
    raw = bytearray((tmp_path / "ok.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "ok.pt") as archive:  # the largest tensor's stored bytes
        info = max(archive.infolist(), key=lambda i: i.file_size)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.file_size // 2] ^= 0xFF
    (tmp_path / "damaged.pt").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="damaged|not a readable"):
        load_checkpoint(tmp_path / "damaged.pt")


@pytest.mark.slow
def test_scripts_end_in_one_line_and_exit_2_on_a_crafted_checkpoint(tmp_path):
    write(tmp_path / "bad.pt", changed(features__qname_len=10**12))
    capture = tmp_path / "x.pcap"
    run_script("data_generating_codes/script_datagen.py", "--mode", "offline", "--packets", 200,
               "--out", capture)  # fmt: skip
    test = make_dataset(tmp_path / "test", packets=300, seed=1)
    runs = (("detect.py", [capture, "--out", tmp_path / "s.csv"]),
            ("evaluate.py", ["--test", test, "--data", test, "--baselines", "--out",
                             tmp_path / "r"]))  # fmt: skip
    for script, args in runs:
        done = run_script(script, *args, "--model" if script == "detect.py" else "--checkpoints",
                          tmp_path / "bad.pt", check=False)  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "bad.pt: feature settings: qname_len" in lines[0]
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "alerts.json").exists()
