"""ld.py and ng.py end to end: labels vs ground truth and scapy, leakage, time rule, bad input."""

from __future__ import annotations

import csv
import json
import math
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import DNS, DNSQR, DNSRR, DNSRROPT, IP, UDP, Ether, IPv6

from exfil.context import CONTEXT_FEATURES
from exfil.dnsparse import QNAME_MAX, QTYPE_NAMES
from exfil.features import TRANSFORMS, extras, name_histograms, unigrams
from exfil.labels import load_truth
from exfil.pcapread import read_dns

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "data_generating_codes" / "script_datagen.py"
ETHER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP look-ups
T0 = 1_700_000_000
CODES = {mnemonic: number for number, mnemonic in QTYPE_NAMES.items()}


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / name), *args], capture_output=True, text=True, cwd=ROOT
    )


def write_pcap(path: Path, frames: list[bytes], times: list[float] | None = None) -> Path:
    blob = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, frame in enumerate(frames):
        t = times[i] if times else T0 + i
        sec, usec = int(t), round((t - int(t)) * 1e6)
        blob += struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame
    path.write_bytes(blob)
    return path


def traffic(seed: int) -> list[bytes]:
    """The same DNS conversation every time; addresses, ports, ids and TTLs drawn from seed."""
    rng = np.random.default_rng(seed)

    def ttl() -> int:
        return int(rng.integers(0, 2**31))

    def v4() -> str:
        return ".".join(str(x) for x in rng.integers(1, 255, 4))

    frames = []
    names = ["www.example.com", "a1b2c3d4e5f6.evil-sync.net", "x.y.z.cdn.example.org", "ok"]
    for n, name in enumerate(names * 3):
        ident, sport = int(rng.integers(0, 65536)), int(rng.integers(1024, 65536))
        q = DNSQR(qname=name, qtype=["A", "TXT", "MX", "AAAA"][n % 4])
        answers = [
            DNSRR(rrname=name, type="CNAME", ttl=ttl(), rdata="alias." + name),
            DNSRR(rrname="alias." + name, type="A", ttl=ttl(), rdata="192.0.2.1"),
            DNSRR(rrname=name, type="TXT", ttl=ttl(), rdata=["hello", "world"]),
        ]
        opt = DNSRROPT(rclass=1232)
        query = DNS(id=ident, rd=1, qd=q, ar=[opt])
        authority = [DNSRR(rrname="example.com", type="NS", ttl=ttl(), rdata="ns1.example.com")]
        response = DNS(id=ident, qr=1, rd=1, ra=1, qd=q, an=answers[: 1 + n % 3], ns=authority)
        client, server = (v4(), v4()) if n % 2 else (None, None)
        for message, forward in ((query, True), (response, False)):
            ports = (sport, 53) if forward else (53, sport)
            if client:
                hosts = (client, server) if forward else (server, client)
                packet = IP(src=hosts[0], dst=hosts[1])
            else:
                a, b = f"fd00::{rng.integers(1, 9999):x}", f"fd00::{rng.integers(1, 9999):x}"
                packet = IPv6(src=a, dst=b)
            frames.append(bytes(ETHER / packet / UDP(sport=ports[0], dport=ports[1]) / message))
    return frames


def features_of(path: Path, scope: str, chunk: int = 65536) -> np.ndarray:
    return np.concatenate([unigrams(b, scope, "raw") for b in read_dns(path, chunk_records=chunk)])


def test_leakage_ips_ports_ids_ttls_do_not_change_features(tmp_path: Path) -> None:
    one = write_pcap(tmp_path / "one.pcap", traffic(1))
    two = write_pcap(tmp_path / "two.pcap", traffic(2))
    assert one.read_bytes() != two.read_bytes()
    for scope in ("qname", "dns"):
        first, second = features_of(one, scope), features_of(two, scope)
        assert first.shape == (24, 256) and first.any()
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(features_of(one, "udp"), features_of(two, "udp"))  # documented
    np.testing.assert_array_equal(features_of(one, "dns", chunk=3), features_of(one, "dns"))


def test_transforms_match_byte_counts(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "t.pcap", traffic(3))
    batch = next(read_dns(path))
    raw = unigrams(batch, "qname", "raw")
    for i in range(len(batch)):
        name = bytes(batch.qname[i, : batch.qlen[i]])
        want = np.zeros(256)
        for byte, count in Counter(name).items():
            want[byte] = count
        np.testing.assert_array_equal(raw[i], want)
    log = {"log1p": math.log, "log2": math.log2, "log10": math.log10}
    for transform, fn in log.items():
        expect = np.where(raw > 0, 1 + np.vectorize(fn)(np.maximum(raw, 1)), 0)
        np.testing.assert_allclose(unigrams(batch, "qname", transform), expect, rtol=1e-6)
    l1 = unigrams(batch, "qname", "l1")
    np.testing.assert_allclose(l1.sum(1), np.where(batch.qlen > 0, 1, 0), rtol=1e-5)
    raw_dns = unigrams(batch, "dns", "raw")
    np.testing.assert_array_equal(raw_dns.sum(1), batch.msg_len)
    more = extras(batch, ("name_len", "labels", "longest_label"))
    assert more[0].tolist() == [15, 3, 7]  # www.example.com


@pytest.mark.parametrize(("scope", "transform", "stored"), [("qname", "log1p", "uint8"),
                         ("qname", "l1", "uint8"), ("dns", "log2", "uint16")])  # fmt: skip
def test_unigrams_are_stored_as_counts_and_loaded_as_the_recipe_computes_them(
    tmp_path: Path, scope: str, transform: str, stored: str
) -> None:
    """unigrams.npy holds raw counts (a quarter of float32's bytes for names); the one loader
    gives exactly the floats the recipe computes from the packets (what detect.py feeds)."""
    from exfil.dataset import read_unigrams
    from exfil.featureset import FeatureSettings

    path = write_pcap(tmp_path / "t.pcap", traffic(4))
    out = tmp_path / "ds"
    run = script("ng.py", str(path), "--out", str(out), "--scope", scope, "--transform",
                 transform, "--no-context")  # fmt: skip
    assert run.returncode == 0, run.stderr
    on_disk = np.load(out / "unigrams.npy")
    assert on_disk.dtype == np.dtype(stored) and on_disk.shape == (24, 256)
    features = json.loads((out / "features.json").read_text())
    assert features["unigram_storage"] == "counts" and features["transform"] == transform
    recipe = FeatureSettings.from_meta(features)
    computed = np.concatenate([recipe.compute(b, need=("unigrams",))["unigrams"]
                               for b in read_dns(path)])  # fmt: skip
    np.testing.assert_array_equal(read_unigrams(out, features), computed)
    np.testing.assert_array_equal(on_disk, features_of(path, scope))


def test_time_rule_reproduces_the_original_windows(tmp_path: Path) -> None:
    frames = traffic(4)[:10]
    path = write_pcap(tmp_path / "cap.pcap", frames, [T0 + i for i in range(10)])
    (tmp_path / "cap.logs.csv").write_text(
        f"label,name,time\nbenign,a.com,{T0 + 0.5}\nexfil,cat.png,{T0 + 3.5}\n"
        f"benign,b.com,{T0 + 6.0}\n"
    )
    done = script("ld.py", str(path), "--out", str(tmp_path / "out"), "--rule", "time")
    assert done.returncode == 0, done.stderr
    labels = np.load(tmp_path / "out" / "labels.npy")
    # before the first row and in benign windows: 0; from 3.5 up to (not incl.) 6.0: 1; at 6.0
    # exactly the benign row already holds
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    rows = read_rows(tmp_path / "out" / "packets.csv")
    assert [int(r["label"]) for r in rows] == labels.tolist()
    assert [int(r["packet"]) for r in rows] == list(range(10))


def test_hosts_and_domain_rules(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "cap.pcap", traffic(5))
    out = tmp_path / "out"
    done = script("ld.py", str(path), "--out", str(out), "--exfil-domain", "EVIL-sync.net.")
    assert done.returncode == 0, done.stderr
    rows = read_rows(out / "packets.csv")
    want = [int(r["qname"].lower().endswith(".evil-sync.net")) for r in rows]
    assert np.load(out / "labels.npy").tolist() == want and sum(want) == 6
    first = rows[2]  # an IPv4 query
    done = script(
        "ld.py", str(path), "--out", str(out), "--rule", "hosts", "--attacker-hosts", first["src"]
    )
    assert done.returncode == 0, done.stderr
    labels = np.load(out / "labels.npy")
    assert labels[2] == labels[3] == 1 and labels.sum() == 2


@pytest.mark.parametrize("name", ["ld.py", "ng.py"])
def test_bad_input_exits_2_with_one_line_and_no_outputs(tmp_path: Path, name: str) -> None:
    good = write_pcap(tmp_path / "good.pcap", traffic(6))
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture at all")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(good.read_bytes()[:10])
    for broken in (bad, cut):
        out = tmp_path / f"out-{broken.stem}"
        extra = ["--exfil-domain", "x.y"] if name == "ld.py" else []
        done = script(name, str(good), str(broken), "--out", str(out), *extra)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and "error" in done.stderr
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pcap", ".pcapng"])
def test_generator_output_agrees_with_truth_and_scapy(tmp_path: Path, suffix: str) -> None:
    from scapy.all import rdpcap

    capture = tmp_path / f"gen{suffix}"
    made = subprocess.run(
        [
            sys.executable,
            str(GENERATOR),
            "--mode",
            "offline",
            "--packets",
            "1500",
            "--seed",
            "11",
            "--out",
            str(capture),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert made.returncode == 0, f"generator failed: {made.stderr}"
    out = tmp_path / "out"
    for name in ("ld.py", "ng.py"):
        done = script(name, str(capture), str(capture), "--out", str(out), "--workers", "2")
        assert done.returncode == 0, done.stderr
    truth = load_truth(capture.with_suffix(".truth.json"))
    info = json.loads((out / "labels.json").read_text())
    labels, classes = np.load(out / "labels.npy"), np.load(out / "classes.npy")
    names, lengths = np.load(out / "qname_bytes.npy"), np.load(out / "qname_len.npy")
    rows = read_rows(out / "packets.csv")
    n = len(rows) // 2
    assert len(labels) == len(names) == len(lengths) == len(classes) == 2 * n
    assert info["captures"][0]["records"] == truth["records"] == n
    record = np.array([int(r["packet"]) for r in rows[:n]])
    malicious = np.array([c.startswith("exfil") for c in truth["classes"]])[truth["record_class"]]
    np.testing.assert_array_equal(labels[:n], malicious[record])
    np.testing.assert_array_equal(labels[n:], labels[:n])
    assert [info["classes"][c] for c in classes[:n]] == [
        truth["classes"][c] for c in truth["record_class"][record]
    ]
    files = np.load(out / "files.npy")
    assert sorted(np.bincount(files[files >= 0])[: len(truth["files"])]) == sorted(
        f["records"] for f in truth["files"]
    )
    for i, packet in enumerate(rdpcap(str(capture))):
        dns = packet[DNS]
        assert int(rows[i]["packet"]) == i  # offline captures: every record is DNS
        # ng.py's name bytes are the recipe's: case-folded by default (DNS 0x20)
        assert bytes(names[i, : lengths[i]]) == dns.qd[0].qname.rstrip(b".").lower(), i
        assert rows[i]["qname"].encode() == dns.qd[0].qname.rstrip(b"."), i  # ld.py: as sent
        assert (int(rows[i]["response"]), labels[i]) == (dns.qr, malicious[i])
        mnemonic = rows[i]["qtype"]
        number = int(mnemonic[4:]) if mnemonic.startswith("TYPE") else CODES[mnemonic]
        assert dns.qd[0].qtype == number


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=253), st.text("abcXYZ019-.", max_size=253).map(str.encode)),
        min_size=1,
        max_size=700,
    ),
    st.sampled_from(TRANSFORMS),
    st.booleans(),
)
def test_name_histograms_match_counter_for_any_bytes(
    names: list, transform: str, plain: bool
) -> None:
    if plain:  # blocks using only the usual name bytes take the 65-bin path
        names = [bytes(b for b in name if b in b"abcXYZ019-.") for name in names]
    matrix = np.zeros((len(names), QNAME_MAX), dtype=np.uint8)
    for i, name in enumerate(names):
        matrix[i, : len(name)] = list(name)
    lengths = np.array([len(name) for name in names], dtype=np.int32)
    got = name_histograms(matrix, lengths, transform)
    for i, name in enumerate(names):
        want = np.zeros(256, dtype=np.float32)
        for byte, count in Counter(name).items():
            want[byte] = count
        if transform == "l1":
            want /= max(len(name), 1)
        elif transform != "raw":
            fn = {"log1p": np.log, "log2": np.log2, "log10": np.log10}[transform]
            want = np.where(want > 0, 1 + fn(np.maximum(want, 1)), 0)
        np.testing.assert_allclose(got[i], want, rtol=1e-6)


def test_same_capture_twice_in_one_process_and_extras(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "cap.pcap", traffic(7))
    out = tmp_path / "out"
    done = script("ld.py", str(path), str(path), "--out", str(out), "--workers", "1",
                  "--exfil-domain", "evil-sync.net")  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = script("ng.py", str(path), str(path), "--out", str(out), "--workers", "1",
                  "--extras", "name_len", "entropy", "--qname-len", "40")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_rows(out / "packets.csv")
    names, more = np.load(out / "qname_bytes.npy"), np.load(out / "extras.npy")
    assert len(rows) == len(names) == len(more) == 48 and names.shape[1] == 40
    assert rows[:24] == rows[24:] and (names[:24] == names[24:]).all()
    assert more[:, 0].tolist() == [len(r["qname"]) for r in rows]
    info = json.loads((out / "features.json").read_text())
    assert info["packets"] == 48 and info["extras"] == ["name_len", "entropy", *CONTEXT_FEATURES]
    assert (more[:24] == more[24:]).all()  # each capture starts its per-domain context afresh
    assert not (more[1:24, 2:] == more[0, 2:]).all()  # ... which then moves
    assert not list(out.glob(".*"))  # no part files left behind


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 253]), min_size=1,
             max_size=2500),
    st.sampled_from(TRANSFORMS),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)  # fmt: skip
def test_name_histograms_overwrite_out_across_bands(
    lengths: list, transform: str, seed: int, ascii_only: bool
) -> None:
    """Names of every band length share blocks; `out` need not be zeroed; ASCII and not."""
    rng = np.random.default_rng(seed)
    top = 128 if ascii_only else 256
    names = [bytes(rng.integers(1, top, size).astype(np.uint8)) for size in lengths]
    matrix = np.zeros((len(names), QNAME_MAX), dtype=np.uint8)
    for i, name in enumerate(names):
        matrix[i, : len(name)] = list(name)
    out = np.full((len(names), 256), np.nan, dtype=np.float32)
    got = name_histograms(matrix, np.array(lengths, dtype=np.int32), transform, out=out)
    assert got is out
    for i in rng.choice(len(names), size=min(len(names), 40), replace=False):
        want = np.zeros(256)
        for byte, count in Counter(names[i]).items():
            want[byte] = count
        if transform == "l1":
            want /= max(len(names[i]), 1)
        elif transform != "raw":
            fn = {"log1p": np.log, "log2": np.log2, "log10": np.log10}[transform]
            want = np.where(want > 0, 1 + fn(np.maximum(want, 1)), 0)
        np.testing.assert_allclose(got[i], want, rtol=1e-6)


def test_unigrams_overwrite_out_for_every_scope(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "cap.pcap", traffic(3))
    for batch in read_dns(path):
        for scope in ("qname", "dns", "udp"):
            for transform in TRANSFORMS:
                fresh = unigrams(batch, scope, transform)
                dirty = np.full((len(batch), 256), 7.5, dtype=np.float32)
                unigrams(batch, scope, transform, out=dirty)
                np.testing.assert_array_equal(fresh, dirty)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.text("aAzZ-.@`[{\r\x0d0_", max_size=30), min_size=1, max_size=40),
    st.lists(st.text("az-.0_@`", min_size=1, max_size=8), min_size=1, max_size=3),
)
def test_domain_labels_match_a_plain_reference(names: list, domains: list) -> None:
    """Case folding touches letters only: '@' is not '`', '\\r' is not '-', '[' is not '{'."""
    from exfil.labels import domain_labels

    raw = [name.encode() for name in names]
    matrix = np.zeros((len(raw), max(max(len(r) for r in raw), 1)), dtype=np.uint8)
    for i, name in enumerate(raw):
        matrix[i, : len(name)] = list(name)
    got = domain_labels(matrix, np.array([len(r) for r in raw], dtype=np.int32), domains)

    def lower(text: bytes) -> bytes:
        return bytes(b + 32 if 65 <= b <= 90 else b for b in text)

    for i, name in enumerate(raw):
        wanted = [d.strip(".").lower().encode() for d in domains]
        hit = any(w and (lower(name) == w or lower(name).endswith(b"." + w)) for w in wanted)
        assert got[i] == hit, (name, domains)


def test_extras_match_a_per_name_reference(tmp_path: Path) -> None:
    """The vectorised name features equal a plain per-name computation."""
    rng = np.random.default_rng(5)
    alphabet = b"abcXYZ019-_.\x80\xff"
    names = [b"", b"a", b"www.example.com", b"a..b", b"."]
    names += [bytes(rng.choice(list(alphabet), rng.integers(1, 60))) for _ in range(200)]
    width = max(map(len, names))
    batch = SimpleNamespace(
        qname=np.array([list(n.ljust(width, b"\0")) for n in names], np.uint8),
        qlen=np.array([len(n) for n in names], np.int32),
        qtype=np.ones(len(names), np.uint16),
    )
    got = extras(batch, ("name_len", "labels", "longest_label", "digit_ratio", "entropy"))
    for name, row in zip(names, got, strict=True):
        labels = name.split(b".")
        letters = max(len(name) - name.count(b"."), 1)
        counts = [name.count(bytes([b])) for b in set(name)]
        entropy = -sum(c / len(name) * math.log2(c / len(name)) for c in counts) if name else 0
        expected = [len(name), len(labels) if name else 0, max(map(len, labels)),
                    sum(chr(b).isdigit() for b in name) / letters, entropy]  # fmt: skip
        assert np.allclose(row, expected, atol=1e-5), (name, row, expected)
