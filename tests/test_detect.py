"""detect.py on captures the networks never saw: per-packet scores, per-domain alerts, errors."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_script

COLUMNS = ["capture", "packet", "time", "src", "dst", "qname", "qtype", "response", "score",
           "malicious"]  # fmt: skip


def detect(pipeline, network, out_dir, *extra):
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{network}-scores.csv"
    model = pipeline["checkpoints"][network]
    capture = pipeline["work"] / "test.pcap"
    done = run_script("detect.py", capture, "--model", model, "--out", out, *extra, check=False)
    return done, out, json.loads(out.with_name("alerts.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("network", ["clf", "ae_clf", "lstm"])
def test_every_exfil_domain_alerted_and_no_benign_one(pipeline, network, tmp_path):
    done, out, alerts = detect(pipeline, network, tmp_path)
    assert done.returncode == 1, done.stderr  # 1 = alerts raised
    truth = json.loads((pipeline["work"] / "test.truth.json").read_text())
    alerted = {alert["domain"] for alert in alerts["alerts"]}
    assert alerted == set(truth["exfil_domains"])
    suppressed = {row["domain"] for row in alerts["suppressed"]}  # the default allowlist's
    assert not any(s == d or s.endswith("." + d) for s in suppressed for d in alerted)
    for alert in alerts["alerts"]:
        assert alert["queries"] >= 5 and len(alert["examples"]) == 3 and alert["why"]
        assert alert["estimated_bytes_exfiltrated"] > 0


@pytest.mark.slow
def test_scores_csv_matches_ld_numbering_and_round_trips(pipeline, tmp_path):
    done, out, _ = detect(pipeline, "clf", tmp_path)
    scores = pd.read_csv(out, keep_default_na=False)
    assert list(scores.columns) == COLUMNS
    packets = pd.read_csv(pipeline["work"] / "test" / "packets.csv", keep_default_na=False)
    assert len(scores) == len(packets)
    for column in ("packet", "time", "src", "dst", "qname", "qtype", "response"):
        assert (scores[column].astype(str) == packets[column].astype(str)).all(), column
    assert scores["score"].between(0, 1).all()
    threshold = json.loads(out.with_name("alerts.json").read_text())["threshold"]
    assert ((scores["score"] >= threshold).astype(int) == scores["malicious"]).all()
    # the detector agrees with the exact labels far better than chance
    labels = np.load(pipeline["work"] / "test" / "labels.npy")
    assert (scores["malicious"].to_numpy() == labels).mean() > 0.97


@pytest.mark.slow
def test_allowlisted_exfil_domain_is_scored_and_suppressed_not_alerted(pipeline, tmp_path):
    truth = json.loads((pipeline["work"] / "test.truth.json").read_text())
    domain = truth["exfil_domains"][0]
    listed = tmp_path / "allow.txt"
    listed.write_text(f"# our own test\n*.{domain.upper()}  # pretend it is ours\n")
    plain, plain_out, _ = detect(pipeline, "clf", tmp_path / "plain", "--no-default-allowlist")
    done, out, alerts = detect(pipeline, "clf", tmp_path, "--allowlist", listed)
    assert domain not in {alert["domain"] for alert in alerts["alerts"]}
    row = next(r for r in alerts["suppressed"] if r["domain"] == domain)
    assert row["reason"] == "pretend it is ours" and row["queries"] >= 5
    assert f"suppressed by the allowlist: {domain}" in done.stdout
    assert out.read_bytes() == plain_out.read_bytes()  # scores.csv unchanged


@pytest.mark.slow
def test_threshold_flag_overrides_checkpoint(pipeline, tmp_path):
    done, out, alerts = detect(pipeline, "clf", tmp_path, "--threshold", "0")
    assert alerts["threshold"] == 0.0 and done.returncode == 1
    assert pd.read_csv(out)["malicious"].all()  # every score is >= 0


@pytest.mark.slow
def test_ndjson_is_ecs_and_rpz_is_a_loadable_zone(pipeline, tmp_path):
    """--ndjson: one ECS document per alert with the fields a SIEM rule keys on; --rpz: a
    zone that a DNS parser (dnspython, as BIND would) loads, blocking each alerted domain and
    everything under it."""
    import dns.name
    import dns.rdatatype
    import dns.zone

    ndjson, rpz = tmp_path / "alerts.ndjson", tmp_path / "block.rpz"
    page = tmp_path / "report.html"
    done, out, report = detect(pipeline, "clf", tmp_path, "--ndjson", ndjson, "--rpz", rpz,
                               "--report", page)  # fmt: skip
    assert done.returncode == 1, done.stderr
    html = page.read_text()
    assert all(alert["domain"] in html for alert in report["alerts"]) and "<svg" in html
    documents = [json.loads(line) for line in ndjson.read_text().splitlines()]
    alerted = {alert["domain"]: alert for alert in report["alerts"]}
    assert {d["dns"]["question"]["registered_domain"] for d in documents} == set(alerted)
    for document in documents:
        alert = alerted[document["dns"]["question"]["registered_domain"]]
        assert document["event"]["kind"] == "alert" and "network" in document["event"]["category"]
        assert document["@timestamp"].endswith("Z") and document["rule"]["name"]
        assert document["source"]["ip"] in alert["clients"]
        assert document["threat"]["framework"] == "MITRE ATT&CK"
        assert "T1071.004" in document["threat"]["technique"]["id"]
        assert "T1048.003" in document["threat"]["technique"]["id"]  # these carry files out
        assert document["exfil_detect"]["examples"] == alert["examples"]
        assert document["exfil_detect"]["estimated_bytes_exfiltrated"] > 0
    zone = dns.zone.from_text(rpz.read_text(), relativize=False, check_origin=True)
    origin = zone.origin
    assert zone.get_rdataset(origin, "SOA") and zone.get_rdataset(origin, "NS")
    for domain in alerted:
        for owner in (domain, f"*.{domain}"):
            rdataset = zone.get_rdataset(dns.name.from_text(owner, origin), "CNAME")
            assert rdataset is not None and rdataset[0].target == dns.name.root, owner
    blocked = {n for n, node in zone.nodes.items() if node.get_rdataset(1, dns.rdatatype.CNAME)}
    assert len(blocked) == 2 * len(alerted)  # nothing else is blocked


def test_out_of_range_settings_are_one_line_errors(tmp_path):
    capture = tmp_path / "x.pcap"
    capture.write_bytes(b"")
    cases = [["--threshold", "2"], ["--min-share", "1.5"], ["--min-names", "-1"],
             ["--workers", "-2"], ["--out", tmp_path / "nonexistent" / "s.csv"]]  # fmt: skip
    for args in cases:
        done = run_script("detect.py", capture, *args, check=False)
        assert done.returncode == 2, (args, done.stderr)
        line = done.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        flag = str(args[0])
        assert flag in line or "nonexistent" in line, line
    assert not (tmp_path / "nonexistent").exists()


def test_bad_inputs_exit_2_with_one_line_and_no_scores(tmp_path):
    capture = tmp_path / "x.pcap"
    capture.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 10)  # cut inside the file header
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all" * 10)
    model = tmp_path / "model.pt"
    model.write_bytes(b"garbage")
    out = tmp_path / "scores.csv"
    cases = [
        [capture, "--model", ROOT / "missing.pt"],
        [junk, "--model", model],
        [capture, "--model", model],
        ["--iface", "no-such-iface0", "--model", model],
        [tmp_path / "absent.pcap", "--model", model],
    ]
    for args in cases:
        done = run_script("detect.py", *args, "--out", out, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert not out.exists()


@pytest.mark.slow
def test_truncated_capture_with_real_model_fails_cleanly(pipeline, tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((pipeline["work"] / "test.pcap").read_bytes()[:20])
    out = tmp_path / "scores.csv"
    done = run_script("detect.py", cut, "--model", pipeline["checkpoints"]["clf"], "--out", out,
                      check=False)  # fmt: skip
    assert done.returncode == 2 and "header" in done.stderr and not out.exists()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (AF_PACKET on lo)")
@pytest.mark.loopback
def test_live_mode_alerts_while_det_transfer_runs(pipeline, tmp_path):
    port = free_udp_port()
    domain = "quiet-harbor-sync.net"
    config = tmp_path / "det.json"
    config.write_text(json.dumps({
        "domain": domain, "passphrase": "live-test", "target": "127.0.0.1", "port": port,
        "min_sleep": 0, "max_sleep": 0, "query_gap": 0.02, "output_dir": str(tmp_path / "recv"),
    }))  # fmt: skip
    out = tmp_path / "live.csv"
    detector = subprocess.Popen(
        [sys.executable, "detect.py", "--iface", "lo", "--model", pipeline["checkpoints"]["clf"],
         "--capture-ports", str(port), "--live-seconds", "40", "--live-flush", "0.2",
         "--out", out],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines, alert_seen = [], threading.Event()
    alert_time = []

    def read_output():
        for line in detector.stdout:
            lines.append(line)
            if line.startswith(f"ALERT {domain}"):
                alert_time.append(time.monotonic())
                alert_seen.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    server = client = None
    try:
        deadline = time.monotonic() + 30
        while not any("listening on lo" in line for line in lines):
            assert detector.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.05)
        server = subprocess.Popen(
            [sys.executable, "data_generating_codes/det.py", "-c", config, "-L",
             "--max-seconds", "40", "--exit-after-files", "1"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)
        client = subprocess.run(
            [sys.executable, "data_generating_codes/det.py", "-c", config, "-f",
             ROOT / "data_generating_codes" / "ExfiltrationData" / "photo-street.jpg",
             "--seed", "3"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        transfer_done = time.monotonic()
        assert client.returncode == 0, client.stderr
        assert alert_seen.wait(10), "".join(lines)
        assert alert_time[0] < transfer_done, "alert came only after the transfer ended"
    finally:
        for process in (server, detector):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
    reader.join(5)
    assert detector.returncode == 1, "".join(lines)
    scores = pd.read_csv(out, keep_default_na=False)
    assert list(scores.columns) == COLUMNS and (scores["qname"].str.endswith(domain)).any()
