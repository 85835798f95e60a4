"""Faults around the outputs: empty chunks, same-named captures, full disks, read-only folders,
Ctrl-C, mixed-up dataset folders. Each run ends in the right result or one line and exit 2,
and never leaves a partial output set that looks complete."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_script
from synthetic import make_dataset

from exfil.cli import UserError
from exfil.context import CONTEXT_FEATURES
from exfil.dnsmsg import pack_query
from exfil.pcapwrite import write_udp_capture
from models.data import load_dataset

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def capture(path: Path, names: list[str], port: int = 53, other: int = 0) -> Path:
    """`other` non-DNS UDP datagrams first, then one DNS query per name to `port`."""
    payloads = [b"not dns at all"] * other + [pack_query(i, n, 1) for i, n in enumerate(names)]
    n = len(payloads)
    ports = np.array([5000] * other + [port] * len(names))
    ip = np.full(n, 0x0A000001, np.uint32)
    write_udp_capture(path, np.arange(n, dtype=np.int64) * 1000, ip, ip + 1,
                      np.full(n, 40000), ports, payloads)  # fmt: skip
    return path


def test_ng_on_chunks_without_dns_writes_the_dns_rows_there_are(tmp_path):
    names = [f"www{i}.example.com" for i in range(30)]
    cap = capture(tmp_path / "x.pcap", names, other=100)  # the first chunks hold no DNS
    run_script("ng.py", cap, "--out", tmp_path / "a", "--chunk", "16")
    run_script("ng.py", cap, "--out", tmp_path / "b", "--ports", "9")  # no record matches
    features = json.loads((tmp_path / "a" / "features.json").read_text())
    assert features["packets"] == 30 and np.load(tmp_path / "a" / "extras.npy").shape == (30, 19)
    assert json.loads((tmp_path / "b" / "features.json").read_text())["packets"] == 0
    assert features["extras"][7:] == list(CONTEXT_FEATURES)  # 7 name + 12 context columns


def test_captures_with_the_same_file_name_keep_their_own_rows(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = capture(tmp_path / "a" / "x.pcap", ["one.example.com"] * 3)
    second = capture(tmp_path / "b" / "x.pcap", ["two.example.org"] * 5)
    model = make_model(tmp_path)
    out = tmp_path / "s.csv"
    done = run_script("detect.py", first, second, "--model", model, "--out", out, check=False)
    assert done.returncode in (0, 1), done.stderr
    rows = out.read_text().splitlines()[1:]
    assert sum("one.example.com" in r for r in rows) == 3
    assert sum("two.example.org" in r for r in rows) == 5


def make_model(tmp_path: Path) -> Path:
    from models import save_checkpoint
    from models.nets import MLPClassifier, MLPConfig

    meta = {"network": "clf", "model_args": {"hidden": [8, 4]}, "threshold": 0.5,
            "features": {"scope": "qname", "transform": "log1p", "extras": []}}  # fmt: skip
    save_checkpoint(tmp_path / "m.pt", MLPClassifier(MLPConfig(hidden=(8, 4))), meta)
    return tmp_path / "m.pt"


def test_labels_and_features_of_different_captures_are_refused(tmp_path):
    one = make_dataset(tmp_path / "one", packets=200, seed=1)
    two = make_dataset(tmp_path / "two", packets=200, seed=2)
    (one / "features.json").write_text((two / "features.json").read_text())
    with pytest.raises(UserError, match="different captures"):
        load_dataset(one)


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MiB tmpfs (root only), almost filled, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    (mount / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 96 * 1024))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def one_line_exit_2(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@needs_root
@pytest.mark.slow
def test_full_disk_ends_in_one_line_and_no_complete_looking_outputs(tmp_path, full_disk):
    names = [f"{i:08x}{'ab' * 25}.{'cd' * 30}.evil.example" for i in range(3000)]
    cap = capture(tmp_path / "x.pcap", names)
    line = one_line_exit_2(run_script("ng.py", cap, "--out", full_disk / "ds", check=False))
    assert "No space left" in line and not (full_disk / "ds" / "features.json").exists()
    line = one_line_exit_2(run_script("ld.py", cap, "--out", full_disk / "ds",
                                      "--exfil-domain", "evil.example", check=False))  # fmt: skip
    assert "No space left" in line and not (full_disk / "ds" / "labels.json").exists()
    done = run_script("detect.py", cap, "--model", make_model(tmp_path), "--out",
                      full_disk / "s.csv", check=False)  # fmt: skip
    assert "No space left" in one_line_exit_2(done)
    assert not (full_disk / "alerts.json").exists() and not (full_disk / "s.csv").exists()
    assert not list(full_disk.glob(".*partial*")) and not list(full_disk.glob(".detect-*"))


@pytest.mark.slow
def test_read_only_outputs_fail_before_any_work(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: use a read-only mount
        locked = tmp_path / "ro"
        locked.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(locked)],
                              capture_output=True)  # fmt: skip
        if made.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
    try:
        cap = capture(tmp_path / "x.pcap", ["a.example.com"] * 5)
        out = tmp_path / "s.csv"
        done = run_script("detect.py", cap, "--model", make_model(tmp_path), "--out", out,
                          "--alerts", locked / "alerts.json", check=False)  # fmt: skip
        assert "cannot write" in one_line_exit_2(done) and not out.exists()
        data = make_dataset(tmp_path / "d", packets=300, seed=3)
        done = run_script("train_clf.py", "--data", data, "--out", locked / "clf.pt", check=False)
        assert "cannot write" in one_line_exit_2(done) and "epoch" not in done.stdout
        done = run_script("detect.py", cap, "--model", make_model(tmp_path), "--out",
                          tmp_path / "no" / "such" / "s.csv", check=False)  # fmt: skip
        assert "no such folder" in one_line_exit_2(done) and not (tmp_path / "no").exists()
    finally:
        subprocess.run(["umount", "-l", str(locked)], check=False, capture_output=True)


@pytest.mark.slow
def test_ctrl_c_leaves_a_complete_dataset_or_none_that_looks_complete(tmp_path):
    cap = tmp_path / "big.pcap"
    run_script("data_generating_codes/script_datagen.py", "--mode", "offline", "--packets",
               200000, "--out", cap)  # fmt: skip
    out = tmp_path / "ds"
    run_script("ng.py", cap, "--out", out, "--workers", "1")  # a finished earlier run
    for delay in (0.0, 0.5):  # after it has begun writing parts (Ctrl-C at import is Python's)
        started = subprocess.Popen([sys.executable, "ng.py", str(cap), "--out", str(out),
                                    "--workers", "1"], cwd=ROOT, stderr=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while not list(out.glob(".*.part-*")) and started.poll() is None:
            assert time.monotonic() < deadline, "ng.py never started writing"
            time.sleep(0.01)
        time.sleep(delay)
        started.send_signal(signal.SIGINT)
        stderr = started.communicate(timeout=60)[1]
        if started.returncode == 0:  # finished first: then it is whole
            assert json.loads((out / "features.json").read_text())["packets"] == 200000
        else:
            assert started.returncode == 130 and "Traceback" not in stderr, stderr
            assert not (out / "features.json").exists()  # the old one went first
        assert not list(out.glob(".*part*")) and not list(out.glob(".*partial*"))
