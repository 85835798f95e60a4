"""Real iodine and dns2tcp tunnels (script_datagen.py --mode netns --tool ...): the shipped
captures label as their truth says, and, as root with the packages, a fresh session does too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_generating_codes.datagen_tools import BINARIES, TOOLS, check_machine
from exfil import labels
from exfil.cli import UserError
from exfil.pcapread import read_dns

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "data_generating_codes" / "script_datagen.py"
CAPTURES = ROOT / "data_generating_codes" / "captures"


def check_capture(path: Path, tool: str) -> dict:
    """Labels by the truth's domains agree with its per-record classes; both files went through
    intact; the tunnel is most of the capture and the resolver's other traffic is benign."""
    truth = labels.load_truth(labels.sidecar(path, "truth.json"))
    assert truth["tools"] == [tool]
    assert [entry["direction"] for entry in truth["files"]] == ["upload", "download"]
    for entry in truth["files"]:
        assert entry["tool"] == tool and entry["received"] is True
        assert entry["md5"] == entry["md5_received"] and entry["bytes"] >= 65536
    batches = list(read_dns(path))
    label = np.concatenate([labels.domain_labels(b.qname, b.qlen, truth["exfil_domains"])
                            for b in batches])  # fmt: skip
    record = np.concatenate([b.record for b in batches])
    assert len(record) == truth["records"]  # every captured frame is a DNS packet
    klass = truth["record_class"][record]
    tunnel = truth["classes"].index(f"exfil/{tool}")
    np.testing.assert_array_equal(label == 1, klass == tunnel)
    assert int(label.sum()) == truth["malicious_records"]
    assert 0.5 < label.mean() < 1.0  # a large share, and some benign lookups beside it
    files = np.concatenate([labels.file_rows(b.record, b.qname, b.qlen, truth["files"])
                            for b in batches])  # fmt: skip
    np.testing.assert_array_equal(files >= 0, label == 1)
    assert labels.sidecar(path, "logs.csv") is not None
    return truth


@pytest.mark.parametrize("tool", TOOLS)
def test_shipped_capture_labels(tool: str) -> None:
    check_capture(CAPTURES / f"{tool}.pcap", tool)


@pytest.mark.parametrize("tool", TOOLS)
def test_shipped_capture_time_rule(tool: str) -> None:
    """The logs.csv rows bracket the tunnel, so the time rule marks its packets too."""
    path = CAPTURES / f"{tool}.pcap"
    truth = labels.load_truth(labels.sidecar(path, "truth.json"))
    times, exfil = labels.load_logs(labels.sidecar(path, "logs.csv"))
    batches = list(read_dns(path))
    by_time = np.concatenate([labels.time_labels(b.time, times, exfil) for b in batches])
    by_domain = np.concatenate([labels.domain_labels(b.qname, b.qlen, truth["exfil_domains"])
                                for b in batches])  # fmt: skip
    assert by_time[by_domain == 1].all()
    assert (by_time == 0).any()


def test_unsuitable_machine_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="choose one of"):
        check_machine("ptunnel")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match="needs root"):
        check_machine("iodine")


def missing_for(tool: str) -> str:
    """Why a fresh session cannot run here ("" if it can)."""
    if os.geteuid() != 0:
        return "needs root"
    missing = [b for b in (*BINARIES[tool], "dnsmasq", "ip") if shutil.which(b) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iodine dns2tcp dnsmasq)"
    if tool == "iodine" and not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return ""


def netns_names() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


@pytest.mark.slow
@pytest.mark.parametrize("tool", TOOLS)
def test_fresh_session(tool: str, tmp_path: Path) -> None:
    if reason := missing_for(tool):
        pytest.skip(reason)
    out = tmp_path / f"{tool}.pcap"
    command = [sys.executable, str(GENERATOR), "--mode", "netns", "--tool", tool, "--seed", "3",
               "--live-timeout", "40", "--out", str(out)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT) as session:  # fmt: skip
        _, stderr = session.communicate(timeout=60)
    if session.returncode and "ip netns add" in stderr:
        pytest.skip(f"no network namespaces here: {stderr.strip()}")
    assert session.returncode == 0, stderr
    check_capture(out, tool)
    # the session removed its own namespaces (named by its pid; another worker's may be up now)
    tag = f"-{session.pid % 100000}"
    assert not {name for name in netns_names() if name.endswith(tag)}
