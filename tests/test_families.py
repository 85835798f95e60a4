"""families*.py: the modelled tunnel families (dnscat2, beacon, dga, dnsexfiltrator).

Round trips (file -> names -> receiver), known-answer checks of the names and answers, and one
short offline capture per family that ld.py's domain rule labels exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scapy.utils import RawPcapReader
from test_datagen import generate, sidecar

from data_generating_codes import families
from data_generating_codes import families_exfiltrator as exfiltrator
from data_generating_codes import families_wire as wire
from data_generating_codes.datagen_plan import expand_styles
from data_generating_codes.datagen_truth import decode_record_class
from data_generating_codes.det_styles import STYLES as DET_STYLES
from exfil.dnsmsg import QTYPE, RCODE, pack_query, parse_message, qtype_number, read_name
from exfil.sniff import udp_payload

ROOT = Path(__file__).resolve().parents[1]
DOMAIN, PASSPHRASE = "paint-sand.net", "exfil-detect"
DATA = (ROOT / "data_generating_codes" / "ExfiltrationData" / "customers.csv").read_bytes()[:2500]
BINARY = random.Random(5).randbytes(700)  # incompressible, every byte value
HEX = set(string.hexdigits.lower())


def cfg_of(style: str, domain: str = DOMAIN) -> wire.FamilyConfig:
    return families.style_config(style, domain, PASSPHRASE)


def planned(style: str, data: bytes = DATA, seed: int = 1) -> tuple[wire.FamilyConfig, list]:
    """(cfg, [(qname, qtype, offset)]) of one file in one style."""
    cfg = cfg_of(style)
    _, messages, times = families.plan(data, "notes.csv", cfg, random.Random(seed))
    pairs = zip(messages, times, strict=True)
    return cfg, [(n, q, t) for m, ts in pairs for (n, q), t in zip(m, ts, strict=True)]


def exchange(cfg: wire.FamilyConfig, queries: list) -> list:
    """(name as the server read it, parsed reply) of every query, through the wire forms."""
    answer, out = families.responder(cfg), []
    for number, (name, qtype, _) in enumerate(queries):
        query = pack_query(number, name, qtype_number(qtype))
        asked = parse_message(query).questions[0][0]
        out.append((asked, parse_message(answer(query))))
    return out


# ---------------------------------------------------------------------------
# every style


@pytest.mark.parametrize("style", sorted(families.STYLES))
@pytest.mark.parametrize("data", [DATA, BINARY, b"x"], ids=["text", "binary", "one-byte"])
def test_round_trip_through_the_wire(style, data):
    cfg, queries = planned(style, data)
    replies = exchange(cfg, queries)
    assert families.receive([asked for asked, _ in replies], cfg) == data
    for (name, qtype, _), (asked, reply) in zip(queries, replies, strict=True):
        assert asked == name.encode("latin-1") and len(asked) <= 253
        assert max(map(len, asked.split(b"."))) <= 63
        assert reply.is_response and reply.questions[0][:2] == (asked, qtype_number(qtype))
    offsets = [t for _, _, t in queries]
    assert offsets == sorted(offsets) and offsets[0] == 0.0


@pytest.mark.parametrize("style", sorted(families.STYLES))
def test_same_seed_same_plan(style):
    assert planned(style, seed=3) == planned(style, seed=3)
    assert planned(style, seed=3)[1] != planned(style, seed=4)[1]


def test_style_selectors():
    det = [s for s in DET_STYLES if s != "det-slow"]
    assert expand_styles(["all"]) == tuple(det) == expand_styles(["family:det"])
    assert expand_styles(["family:dnscat2"]) == (
        "dnscat2-txt", "dnscat2-cname", "dnscat2-mx", "dnscat2-tag")  # fmt: skip
    every = expand_styles(["all-families"])
    assert set(every) == set(det) | set(families.STYLES) and len(every) == len(set(every))
    assert {families.family_of(s) for s in every} == {"det", *families.FAMILIES}
    assert families.family_of("iodine") == "iodine"  # a real tool's session keeps its name


# ---------------------------------------------------------------------------
# dnscat2


def test_dnscat2_known_answer_name():
    packet = bytes.fromhex("123401abcd00100020") + b"hi"
    cfg = cfg_of("dnscat2-mx")  # 32-character labels
    assert wire.dnscat2_name(packet, cfg) == f"123401abcd001000206869.{DOMAIN}"
    assert wire.dnscat2_name(packet * 3, cfg).split(".")[0] == (packet * 3).hex()[:32]
    assert wire.dnscat2_name(packet, cfg_of("dnscat2-tag")) == "dnscat.123401abcd001000206869"
    assert wire.dnscat2_packet(f"1234.01ABCD00100020.6869.{DOMAIN.upper()}", cfg) == packet


@pytest.mark.parametrize("style", ["dnscat2-txt", "dnscat2-cname", "dnscat2-mx", "dnscat2-tag"])
def test_dnscat2_header_fields_and_downstream(style):
    cfg, queries = planned(style)
    packets = [wire.dnscat2_packet(name, cfg) for name, _, _ in queries]
    kinds = [p[2] for p in packets]
    assert kinds[0] == wire.SYN and kinds[-1] == wire.FIN and set(kinds[1:-1]) == {wire.MSG}
    session = int.from_bytes(packets[0][3:5], "big")
    assert {int.from_bytes(p[3:5], "big") for p in packets} == {session}
    assert packets[0][7:9] == b"\x00\x01" and packets[0][9:] == b"notes.csv\0"  # OPT_NAME
    seq = int.from_bytes(packets[0][5:7], "big")
    polls = 0
    for packet, (name, _, _) in zip(packets[1:-1], queries[1:-1], strict=True):
        assert int.from_bytes(packet[5:7], "big") == seq  # seq counts the bytes sent
        seq = (seq + len(packet) - wire.MSG_HEADER) & 0xFFFF
        if len(packet) == wire.MSG_HEADER:  # a keep-alive poll: a short, fixed-length name
            polls += 1
            body = name[len(cfg.tag) + 1 :] if cfg.tag else name[: -len(DOMAIN) - 1]
            assert len(body) == 18 and set(body) <= HEX
    assert polls >= 1
    labels = [lab for name, _, _ in queries for lab in name.split(".")]
    data_labels = labels if not cfg.tag else [x for x in labels if x != cfg.tag]
    assert all(set(x) <= HEX | set(DOMAIN) for x in data_labels)
    assert max(map(len, data_labels)) <= cfg.label
    if cfg.tag:
        assert all(name.startswith("dnscat.") for name, _, _ in queries)
    # the server's packets: seq = the client's ack, ack = client seq + its data; the client's
    # next ack moves on by what the server sent
    expected_ack = None
    for packet, (_, reply) in zip(packets, exchange(cfg, queries), strict=True):
        record = reply.answers[0]
        assert record.rtype in {QTYPE[q] for q in cfg.qtypes}
        back = wire.dnscat2_reply_packet(record.rtype, record.rdata, cfg)
        assert back[2] == packet[2] and back[3:5] == packet[3:5]
        if packet[2] == wire.SYN:
            expected_ack = int.from_bytes(back[5:7], "big")  # the server's initial seq
        elif packet[2] == wire.MSG:
            seq, ack = int.from_bytes(packet[5:7], "big"), int.from_bytes(packet[7:9], "big")
            assert ack == expected_ack and back[5:7] == packet[7:9]
            assert int.from_bytes(back[7:9], "big") == (seq + len(packet) - 9) & 0xFFFF
            expected_ack = (ack + len(back) - wire.MSG_HEADER) & 0xFFFF


# ---------------------------------------------------------------------------
# beacon


@pytest.mark.parametrize("style", ["beacon-txt", "beacon-a", "beacon-aaaa"])
def test_beacon_names_gaps_and_answers(style):
    cfg, queries = planned(style)
    meta, task, post = cfg.prefixes
    checkin = re.compile(rf"[0-9a-f]{{6,8}}\.{re.escape(DOMAIN)}")
    times = [t for name, _, t in queries if checkin.fullmatch(name)]
    assert len(times) >= 3
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 60  # minutes apart (and more)
    ids = {name.split(".")[-3] for name, _, _ in queries}
    assert len(ids) == 1 and 6 <= len(ids.pop()) <= 8
    posts = [name.split(".") for name, _, _ in queries if name.startswith(post + ".")]
    assert all(len(p[1]) <= 2 * cfg.max_bytes and set(p[1] + p[2]) <= HEX for p in posts)
    assert [int(p[2], 16) for p in posts] == sorted(int(p[2], 16) for p in posts)
    idle, tasked = 0, 0
    for (name, qtype, _), (_, reply) in zip(queries, exchange(cfg, queries), strict=True):
        if checkin.fullmatch(name):
            address = reply.answers[0].rdata
            idle += address == bytes(map(int, cfg.idle_ip.split(".")))
            tasked += address != bytes(map(int, cfg.idle_ip.split(".")))
        elif name.startswith(task + "."):
            assert qtype == cfg.qtypes[0] and reply.answers[0].rtype == QTYPE[qtype]
            assert re.fullmatch(r"[0-9a-f]{8}", name.split(".")[1])
    assert idle >= 1 and tasked >= 1


# ---------------------------------------------------------------------------
# dga


@pytest.mark.parametrize("style", ["dga-alpha", "dga-alnum", "dga-txt"])
def test_dga_one_label_under_a_tld_and_distinct(style):
    cfg, queries = planned(style)
    names = [name for name, _, _ in queries]
    digits = set(string.digits) if cfg.encoding == "base36" else set()
    alphabet = set(string.ascii_lowercase) | digits
    for name in names:
        label, tld = name.split(".")
        assert tld in cfg.tlds and 20 <= len(label) <= 32 and set(label) <= alphabet
    assert len(set(names)) == len(names)
    assert families.name_domains(cfg, [[(n, "A") for n in names]]) == names
    rcodes = [reply.rcode for _, reply in exchange(cfg, queries)]
    assert rcodes.count(RCODE["NXDOMAIN"]) >= 0.7 * len(rcodes) and rcodes.count(0) >= 1
    # the data labels look like the others: no shared leading characters
    assert len({name[:3] for name in names}) > len(names) // 2


# ---------------------------------------------------------------------------
# dnsexfiltrator


def test_rc4_and_raw8_known_answers():
    assert wire.digest("a") == hashlib.sha256(b"a").digest()
    assert exfiltrator.rc4(b"Key", b"Plaintext").hex() == "bbf316e8d940af0ad3"  # the test vector
    assert exfiltrator.raw8_encode(bytes(7)) == "\x80" * 8
    assert exfiltrator.raw8_encode(b"\xff") == "\xff\xc0"
    for size in range(20):
        data = random.Random(size).randbytes(size)
        text = exfiltrator.raw8_encode(data)
        assert len(text) == (8 * size + 6) // 7 and all(0x80 <= ord(c) <= 0xFF for c in text)
        assert exfiltrator.raw8_decode(text) == data


ALPHABETS = {
    "dnsexfiltrator-b64": set(string.ascii_letters + string.digits + "-_"),
    "dnsexfiltrator-b32": set(string.ascii_uppercase + "234567"),
    "dnsexfiltrator-b32lower": set(string.ascii_lowercase + "234567"),
    "dnsexfiltrator-raw8": set(map(chr, range(0x80, 0x100))),
}


@pytest.mark.parametrize("style", sorted(ALPHABETS))
def test_dnsexfiltrator_init_chunks_and_alphabet(style):
    cfg, queries = planned(style, BINARY)
    names = [name[: -len(DOMAIN) - 1] for name, _, _ in queries]
    init = names[0].split(".")
    assert init[0] == "init" and init[-1] == {"base64url": "base64", "raw8": "raw8"}.get(
        cfg.encoding, "base32")  # fmt: skip
    head = base64.b32decode("".join(init[1:-1]).upper() + "=" * (-len("".join(init[1:-1])) % 8))
    assert head == f"notes.csv|{len(names) - 1}".encode()
    for index, name in enumerate(names[1:]):
        number, *data = name.split(".")
        assert number == str(index) and set("".join(data)) <= ALPHABETS[style]
        assert max(map(len, data)) <= cfg.label
    assert max(len(name) for name, _, _ in queries) <= cfg.name
    assert {q for _, q, _ in queries} == {"TXT"}
    assert all(reply.answers[0].rdata == b"\x02OK" for _, reply in exchange(cfg, queries))


# ---------------------------------------------------------------------------
# offline captures, labelled by ld.py


def query_names(path: Path) -> list[tuple[bytes, bool]]:
    """(qname, is_response) of every record of a pcap."""
    out = []
    for frame, _ in RawPcapReader(str(path)):
        payload = udp_payload(frame)[4]
        out.append((read_name(payload, 12)[0], bool(payload[2] & 0x80)))
    return out


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("files")
    (folder / "notes.csv").write_bytes(DATA[:1500])
    (folder / "keys.bin").write_bytes(BINARY[:600])
    return folder


@pytest.mark.parametrize("family", ["det", *sorted(families.FAMILIES)])
def test_offline_capture_labelled_by_domain_rule(family, small_files, tmp_path):
    out = tmp_path / f"{family}.pcap"
    done = generate(out, "--styles", f"family:{family}", "--exfil-dir", str(small_files),
                    "--exfil-share", "0.2", packets=3000, seed=4)  # fmt: skip
    assert done.returncode == 0, done.stderr
    truth = json.loads(sidecar(out, ".truth.json").read_text())
    assert truth["records"] == 3000 and truth["files"]
    assert {entry["family"] for entry in truth["files"]} == {family}
    labelled = subprocess.run([sys.executable, "ld.py", str(out), "--out", str(tmp_path / "ds")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert labelled.returncode == 0, labelled.stderr
    classes = np.asarray(truth["classes"])[decode_record_class(truth)]
    is_family = np.char.startswith(classes.astype(str), "exfil/")
    labels = np.load(tmp_path / "ds" / "labels.npy")
    assert is_family.sum() == truth["malicious_records"] and (labels == is_family).all()
    # each file the receiver can rebuild from the capture's queries alone (dga: its key is the
    # planner's, not in the truth; its round trip is tested above)
    names = query_names(out)
    for entry in truth["files"]:
        if family == "det":  # det_reassembly is DET's receiver (test_det.py)
            continue
        if family == "dga":
            assert len(entry["domains"]) * 2 == entry["records"]  # a new domain every query
            continue
        cfg = cfg_of(entry["style"], entry["domain"])
        if cfg.tag:
            cfg = cfg_of(entry["style"])  # the tag, not the domain, marks its names
        span = names[entry["first_record"] : entry["last_record"] + 1]
        suffixes = tuple(d.encode() for d in entry.get("domains", [entry["domain"]]))
        mine = [n for n, response in span if not response and n.lower().endswith(suffixes)]
        assert hashlib.md5(families.receive(mine, cfg)).hexdigest() == entry["md5"]


@pytest.mark.parametrize("args", [["--mode", "live"], ["--mode", "netns", "--tool", "iodine"]])
def test_live_modes_refuse_modelled_styles(args, tmp_path):
    command = [sys.executable, "data_generating_codes/script_datagen.py", "--styles", "dga-txt",
               "--out", str(tmp_path / "x.pcap"), *args]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "dga-txt" in done.stderr and "offline only" in done.stderr
