"""script_datagen.py, benign.py, exfil/pcapwrite.py and exfil/sniff.py: captures and truth."""

from __future__ import annotations

import bisect
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scapy.utils import RawPcapReader

from data_generating_codes import benign
from data_generating_codes.datagen_truth import decode_record_class
from data_generating_codes.det_styles import STYLES
from exfil.dnsmsg import parse_message, qtype_name, qtype_number
from exfil.dnsmsg import read_name as parse_name
from exfil.sniff import udp_payload

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data_generating_codes" / "script_datagen.py"
DEMO_PACKETS = 20000
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (AF_PACKET capture)")


def generate(
    out: Path, *args: str, packets: int = DEMO_PACKETS, seed: int = 1, mode: str = "offline"
):
    command = [sys.executable, str(SCRIPT), "--mode", mode, "--packets", str(packets),
               "--seed", str(seed), "--out", str(out), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=180)


def sidecar(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def read_qnames(path: Path, scapy_every: int = 1) -> list[tuple[bytes, int, bool]]:
    """(qname, qtype, is_response) of every record; scapy reads the file and fully decodes every
    `scapy_every`-th packet, which must decode as DNS with the same question."""
    from scapy.all import DNS, Ether

    records = []
    for index, (frame, _) in enumerate(RawPcapReader(str(path))):
        payload = udp_payload(frame)[4]
        qname, end = parse_name(payload, 12)
        qtype = int.from_bytes(payload[end : end + 2], "big")
        records.append((qname, qtype, bool(payload[2] & 0x80)))
        if index % scapy_every == 0:
            packet = Ether(frame)
            assert packet.haslayer(DNS), packet.summary()
            question = packet[DNS].qd
            question = question[0] if isinstance(question, list) else question
            assert (question.qname.rstrip(b"."), question.qtype) == records[-1][:2]
    return records


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo") / "capture.pcap"
    result = generate(out)
    assert result.returncode == 0, result.stderr
    truth = json.loads(sidecar(out, ".truth.json").read_text())
    return {
        "out": out,
        "stdout": result.stdout,
        "truth": truth,
        "names": read_qnames(out, scapy_every=10),
        "us": [meta.sec * 10**6 + meta.usec for _, meta in RawPcapReader(str(out))],
    }


# ---------------------------------------------------------------------------
# offline captures


def test_offline_is_deterministic(demo, tmp_path):
    again, other = tmp_path / "again.pcap", tmp_path / "other.pcap"
    assert generate(again).returncode == 0
    assert generate(other, seed=2).returncode == 0
    assert again.read_bytes() == demo["out"].read_bytes()
    assert (
        sidecar(again, ".logs.csv").read_bytes() == sidecar(demo["out"], ".logs.csv").read_bytes()
    )
    assert other.read_bytes() != demo["out"].read_bytes()
    domains = set(json.loads(sidecar(other, ".truth.json").read_text())["exfil_domains"])
    assert not domains & set(demo["truth"]["exfil_domains"])


def test_count_share_and_speed(demo):
    truth = demo["truth"]
    assert truth["records"] == DEMO_PACKETS == len(demo["names"])
    share = truth["malicious_records"] / truth["records"]
    assert 0.05 <= share <= 0.20
    found = re.search(r"\(([\d,]+) packets/s; ([\d,]+) per CPU second\)", demo["stdout"])
    speed, cpu_speed = (float(group.replace(",", "")) for group in found.groups())
    print(f"offline generator, {DEMO_PACKETS} packets: {speed:,.0f} packets/s wall, "
          f"{cpu_speed:,.0f} per CPU second")  # fmt: skip
    assert speed > 20_000  # the target is 100k/s; a loaded test machine gets slack


def test_truth_matches_capture(demo):
    truth, names = demo["truth"], demo["names"]
    classes = decode_record_class(truth)
    assert len(classes) == truth["records"]
    labels = [truth["classes"][c] for c in classes]
    domains = [f["domain"].encode() for f in truth["files"]]
    assert len(set(domains)) == len(domains)
    is_exfil = np.array([label.startswith("exfil/") for label in labels])
    assert is_exfil.sum() == truth["malicious_records"] == sum(f["records"] for f in truth["files"])
    for (qname, _, _), exfil in zip(names, is_exfil, strict=True):
        assert exfil == any(qname.lower().endswith(b"." + d) for d in domains), qname
    for entry in truth["files"]:
        assert re.fullmatch(r"[A-Za-z0-9]{7}", entry["job_id"]) and len(set(entry["job_id"])) == 7
        suffix = b"." + entry["domain"].encode()
        inside = [i for i, (q, _, _) in enumerate(names) if q.lower().endswith(suffix)]
        assert (inside[0], inside[-1], len(inside)) == (
            entry["first_record"], entry["last_record"], entry["records"])  # fmt: skip
        job = entry["job_id"].encode()
        assert all(names[i][0].startswith(job) for i in inside) or all(
            names[i][0].lower().startswith(job.lower()) for i in inside
        )  # behind a DNS 0x20 resolver the id's case is randomised
        assert {labels[i] for i in inside} == {f"exfil/{entry['style']}"}
        assert entry["style"] in STYLES and entry["style"] in truth["styles"]
    assert set(truth["classes"]) >= set(benign.CLASSES)


def test_logs_csv(demo):
    truth = demo["truth"]
    with open(sidecar(demo["out"], ".logs.csv"), newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["label", "name", "time"]
    times = [float(row[2]) for row in rows[1:]]
    assert times == sorted(times) and {row[0] for row in rows[1:]} == {"benign", "exfil"}
    exfil_rows = [(row[1], float(row[2])) for row in rows[1:] if row[0] == "exfil"]
    assert [name for name, _ in exfil_rows] == [f["file"] for f in truth["files"]]
    # the original's time rule (latest row at or before a packet) covers every exfil packet
    row_us = [round(float(row[2]) * 1e6) for row in rows[1:]]
    row_exfil = [row[0] == "exfil" for row in rows[1:]]
    classes = decode_record_class(truth)
    for micros, index in zip(demo["us"], classes, strict=True):
        if truth["classes"][index].startswith("exfil/"):
            latest = bisect.bisect_right(row_us, micros) - 1
            assert latest >= 0 and row_exfil[latest]


@pytest.mark.parametrize("suffix", [".pcapng", ".pcap"])
def test_pcapng_and_ns_read_by_scapy(tmp_path, suffix):
    out = tmp_path / f"small{suffix}"
    result = generate(out, "--nanosecond", packets=3000, seed=5)
    assert result.returncode == 0, result.stderr
    if suffix == ".pcapng":
        assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    truth = json.loads(sidecar(out, ".truth.json").read_text())
    names = read_qnames(out)
    assert len(names) == truth["records"] == 3000
    for entry in truth["files"]:
        assert names[entry["first_record"]][0].lower().endswith(entry["domain"].encode())


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_capture(demo):
    result = subprocess.run(["tshark", "-r", str(demo["out"]), "-Y", "dns", "-T", "fields",
                             "-e", "dns.qry.name"], capture_output=True, text=True)  # fmt: skip
    complaints = [line for line in result.stderr.splitlines() if "Running as user" not in line]
    assert result.returncode == 0 and not complaints, complaints
    assert len(result.stdout.splitlines()) == DEMO_PACKETS


def test_missing_files_is_a_one_line_error(tmp_path):
    result = generate(tmp_path / "x.pcap", "--files", "no-such-file.bin", packets=1000)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-file.bin" in result.stderr
    assert not (tmp_path / "x.pcap").exists()


# ---------------------------------------------------------------------------
# hard benign classes


def _valid_reverse_v4(name: str, suffix: str) -> bool:
    octets = name[: -len(suffix)].split(".")
    return len(octets) == 4 and all(o.isdigit() and int(o) < 256 for o in octets)


AV_VENDORS = r"(hash\.cymru\.com|mcafee\.com|sophosxl\.net|spamhaus\.net)$"
CLOUDS = r"(cloudfront\.net|amazonaws\.com|google(video|syndication)\.com|azurefd\.net|dweb\.link)$"


def _reverse_ptr(name: str) -> bool:
    if name.endswith(".in-addr.arpa"):
        return _valid_reverse_v4(name, ".in-addr.arpa")
    return re.fullmatch(r"([0-9a-f]\.){32}ip6\.arpa", name) is not None


def _dnsbl(name: str) -> bool:
    return any(
        name.endswith("." + z) and _valid_reverse_v4(name, "." + z) for z in benign.DNSBL_ZONES
    )


def _wordy(name: str) -> bool:
    label = name.split(".")[0]
    return len(label) >= 20 and all(word in benign.WORDS for word in label.split("-"))


CHECKS = {
    "benign/reverse-ptr": _reverse_ptr,
    "benign/dkim": lambda n: "._domainkey." in n,
    "benign/dmarc": lambda n: n.startswith("_dmarc.") and n.count(".") >= 2,
    "benign/acme": lambda n: n.startswith("_acme-challenge."),
    "benign/dnsbl": _dnsbl,
    "benign/chrome-probe": lambda n: re.fullmatch(r"[a-z]{7,15}", n) is not None,
    "benign/srv": lambda n: re.match(r"_[a-z-]+\._(tcp|udp|tls)\.", n) is not None,
    "benign/av-lookup": lambda n: (
        re.search(AV_VENDORS, n) is not None and max(len(label) for label in n.split(".")) >= 16
    ),
    "benign/cdn-hash": lambda n: re.search(CLOUDS, n) is not None,
    "benign/wordy-long": _wordy,
}


@pytest.mark.parametrize("cls", sorted(CHECKS))
def test_hard_benign_name_formats(cls):
    model = benign.BenignModel(random.Random(7))
    for _ in range(300):
        for qname, qtype in model._hard[cls]():
            assert CHECKS[cls](qname), (cls, qname)
            response = model.response(1, cls, qname, qtype_number(qtype))
            assert parse_message(response).questions[0][0].decode() == qname


def test_capture_classes_have_their_formats(demo):
    truth, names = demo["truth"], demo["names"]
    classes = decode_record_class(truth)
    seen = set()
    for (qname, _, _), index in zip(names, classes, strict=True):
        cls = truth["classes"][index]
        if cls in CHECKS:
            assert CHECKS[cls](qname.decode().lower()), (cls, qname)  # 0x20: some mixed case
            seen.add(cls)
    assert seen == set(CHECKS)  # every hard class occurs in a demo-sized capture


def test_dns_0x20_mixes_case_of_benign_and_case_blind_tunnels_only(tmp_path):
    out = tmp_path / "mixed.pcap"
    styles = ["base32-burst", "base64-cname"]
    result = generate(out, "--mixed-case", "1", "--styles", *styles, packets=4000)
    assert result.returncode == 0, result.stderr
    truth = json.loads(sidecar(out, ".truth.json").read_text())
    classes = [truth["classes"][c] for c in decode_record_class(truth)]
    names = read_qnames(out)
    mixed = {cls: [] for cls in set(classes)}
    for (qname, _, _), cls in zip(names, classes, strict=True):
        if any(chr(b).isalpha() for b in qname):
            mixed[cls].append(qname != qname.lower() and qname != qname.upper())
    assert np.mean(mixed["benign/ordinary"]) > 0.9  # every session, letters flipped at random
    assert np.mean(mixed["exfil/base32-burst"]) > 0.9  # base32 survives a 0x20 resolver
    assert "exfil/base64-cname" in mixed  # base64 would not: its case is its data
    plain = tmp_path / "plain.pcap"
    assert generate(plain, "--mixed-case", "0", "--styles", *styles, packets=4000).returncode == 0
    base64 = {q for (q, _, _), c in zip(names, classes, strict=True) if c == "exfil/base64-cname"}
    assert base64 <= {q for q, _, _ in read_qnames(plain)}  # the same names, case untouched


def test_class_shares_follow_the_constants(demo):
    truth = demo["truth"]
    classes = decode_record_class(truth)
    benign_records = np.array([truth["classes"][c].startswith("benign/") for c in classes])
    for cls in benign.HARD_SHARES:
        share = truth["config"]["share_" + cls.split("/")[1].replace("-", "_")]
        seen = (classes == truth["classes"].index(cls)).sum() / benign_records.sum()
        if share == 0:  # a class the constants leave off
            assert seen == 0, cls
            continue
        assert share / 2 < seen < share * 2, (cls, seen, share)


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_capture_without_privileges_is_a_one_line_error(tmp_path):
    drop = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"]
    code = "from exfil.sniff import Sniffer; from exfil.cli import run; run(lambda: Sniffer('lo'))"
    out = str(tmp_path / "x.pcap")
    for command in (
        [*drop, sys.executable, "-c", code],
        [*drop, sys.executable, str(SCRIPT), "--mode", "live", "--packets", "500", "--out", out],
    ):
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "CAP_NET_RAW" in result.stderr
    assert not (tmp_path / "x.pcap").exists()


def test_benign_qtype_mix_and_ttls():
    model = benign.BenignModel(random.Random(3))
    qtypes = [qtype_name(q) for _ in range(3000) for _, _, q, _ in model.session()]
    assert {"A", "AAAA", "HTTPS", "CNAME", "MX", "TXT", "NS", "PTR", "SRV"} <= set(qtypes)
    assert qtypes.count("A") > qtypes.count("AAAA") > qtypes.count("MX")
    with pytest.raises(ValueError):
        benign.BenignModel(random.Random(1), {"benign/nope": 0.1})


def _check_live(out: Path, result) -> None:
    assert result.returncode == 0, result.stderr
    truth = json.loads(sidecar(out, ".truth.json").read_text())
    classes = decode_record_class(truth)
    labels = {truth["classes"][c].split("/")[0] for c in classes}
    assert labels == {"benign", "exfil"} and truth["files"]
    assert all(entry["received"] for entry in truth["files"])  # det.py's server rebuilt them
    names = read_qnames(out)
    assert len(names) == truth["records"]
    for entry in truth["files"]:
        suffix = b"." + entry["domain"].encode()
        assert sum(q.lower().endswith(suffix) for q, _, _ in names) == entry["records"]


@needs_root
@pytest.mark.slow
def test_live_mode_over_loopback(tmp_path):
    out = tmp_path / "live.pcap"
    _check_live(out, generate(out, mode="live", packets=2000, seed=11))


@needs_root
@pytest.mark.slow
def test_netns_mode_and_cleanup(tmp_path):
    out = tmp_path / "ns.pcapng"
    _check_live(out, generate(out, mode="netns", packets=1500, seed=12))
    assert (
        "exfil-"
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )


@needs_root
def test_netns_removed_on_error():
    from data_generating_codes.datagen_live import veth_pair

    with pytest.raises(RuntimeError), veth_pair("t9", ["10.98.0.2"], ["10.98.0.1"]) as (a, s, _):
        assert a in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        raise RuntimeError("boom")
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "exfil-a-t9" not in listing and "exfil-s-t9" not in listing
