"""det_server.py against hostile senders: datagrams built to break it, and file names built to
aim its writes. The server must drop and count (or answer) every datagram, keep serving and
keep its open jobs; a written file's name must be harmless wherever it is later used."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import socket
import string
import struct
from collections import Counter
from pathlib import Path

import pytest
from test_det import _exchange as exchange  # send, and wait for the reply with its id

from data_generating_codes.det_codec import answer, plan_queries, read_query
from data_generating_codes.det_config import DetConfig
from data_generating_codes.det_server import DetServer, safe_name
from exfil.dnsmsg import DnsError, pack_query, parse_message, qtype_number

DOMAIN = "det-exfil.test"
CFG = DetConfig(domain=DOMAIN, passphrase="hostile", port=0, min_sleep=0.0, max_sleep=0.0,
                query_gap=0.0, reply_timeout=2.0)  # fmt: skip
JOB, DECOY = "RealJob", "zzzzzzz"  # differ at every position: no mutation turns one into the other
SYNC_EVERY = 40  # datagrams sent between two answered queries (stays under any receive buffer)


def header(qid: int = 0x4242, flags: int = 0x0100, qd: int = 1, an: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, 0, 0)


def wire(*labels: bytes) -> bytes:
    """A name as raw labels (any bytes, dots included), root-terminated."""
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


TAIL = struct.pack("!HH", 1, 1)  # qtype A, class IN
ZONE = (b"det-exfil", b"test")

# one or more datagrams of each kind; the kinds that carry a dot in a label are counted apart
DOTTED = {
    "label-is-dot-a": [header() + b"\x02.a\x00" + TAIL],
    "label-is-dot": [header() + wire(b".") + TAIL, header() + wire(b"..") + TAIL],
    "dot-in-job-label": [header() + wire(b"RealJob.00", *ZONE) + TAIL],
    "dot-ends-label": [header() + wire(b"RealJob00.", *ZONE) + TAIL],
    "dot-starts-label": [header() + wire(b".RealJob00", *ZONE) + TAIL],
    "only-dots": [header() + wire(*[b"."] * 100) + TAIL],
    "dot-in-second-question": [header(qd=2) + wire(b"ok", *ZONE) + TAIL + b"\x01.\x00" + TAIL],
}
HOSTILE = {
    "empty": [b""],
    "truncated-header": [header()[:cut] for cut in range(1, 12)],
    "header-only": [header()],
    "truncated-question": [header() + wire(b"a", *ZONE), header() + b"\x3fabc"],
    "zero-questions": [header(qd=0), header(qd=0) + wire(b"a", *ZONE) + TAIL],
    "many-questions": [header(qd=2) + (wire(b"a", *ZONE) + TAIL) * 2,
                       header(qd=64) + (wire(b"b", *ZONE) + TAIL) * 64,
                       header(qd=65) + (wire(b"c", *ZONE) + TAIL) * 65, header(qd=0xFFFF)],
    "response": [header(flags=0x8180) + wire(b"RealJob00", *ZONE) + TAIL],
    "pointer-to-itself": [header() + b"\xc0\x0c" + TAIL],
    "pointer-loop": [header() + b"\x01a\xc0\x0e" + TAIL, header() + b"\xc0\x0e\xc0\x0c" + TAIL],
    "pointer-out-of-range": [header() + b"\xc3\xff" + TAIL, header() + b"\xc0"],
    "pointer-into-header": [header(qid=0x0161) + b"\xc0\x00" + TAIL],
    "bad-label-type": [header() + b"\x41abc\x00" + TAIL, header() + b"\x81x\x00" + TAIL],
    "name-too-long": [header() + wire(*[b"x" * 63] * 5, *ZONE) + TAIL],
    "nul-and-control-bytes": [header() + wire(b"Real\x00ob\x01\x7f", *ZONE) + TAIL],
    "non-ascii": [header() + wire(b"\xff\xfe\xc3\xa9RealJob", *ZONE) + TAIL],
    "opcode-update": [header(flags=0x2800) + wire(b"a", *ZONE) + TAIL],
    "too-many-answers": [header(an=0xFFFF) + wire(b"a", *ZONE) + TAIL],
    "huge": [header() + wire(b"a", *ZONE) + TAIL + bytes(60_000),
             bytes(random.Random(5).randbytes(65_000))],
}  # fmt: skip


def mutations(valid: list[bytes], count: int, seed: int) -> list[bytes]:
    """Random bytes, and valid queries with 1-3 edits: a flipped or dotted byte, a new length
    byte, a cut, an insertion (seeded: the same batch every run)."""
    rng, out = random.Random(seed), []
    for number in range(count):
        if number % 3 == 0:
            out.append(rng.randbytes(rng.randint(0, 600)))
            continue
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            where = rng.randrange(len(data))
            edit = rng.randrange(4)
            if edit == 0:
                data[where] = rng.choice([0x2E, 0x00, 0xC0, 0x3F, 0xFF, rng.randrange(256)])
            elif edit == 1:
                del data[where:]
                data += b"\x00" * (not data)
            elif edit == 2:
                data[where:where] = rng.randbytes(rng.randint(1, 8))
            else:
                data[where] ^= 1 << rng.randrange(8)
        out.append(bytes(data))
    return out


def send_plan(sock: socket.socket, messages: list[list[tuple[str, str]]], qid: int) -> None:
    for message in messages:
        for name, qtype in message:
            assert exchange(sock, pack_query(qid, name, qtype_number(qtype))) is not None
            qid += 1


# ---------------------------------------------------------------------------


def test_label_with_a_dot_is_malformed_not_a_crash():
    query = header(qid=0x1234) + b"\x02.a\x00" + TAIL
    with pytest.raises(DnsError) as caught:
        read_query(query)
    assert caught.value.reason == "label-with-dot"
    reply = parse_message(answer(query, CFG))
    assert (reply.id, reply.is_response, reply.rcode, reply.questions) == (0x1234, True, 1, [])
    # names whose labels hold no dot read as before, compressed or not
    plain = header() + wire(b"RealJob00", *ZONE) + TAIL
    pointed = header(qd=2) + wire(b"a", *ZONE) + TAIL + b"\x01b\xc0\x0e" + TAIL
    assert read_query(plain).questions == [(b"RealJob00.det-exfil.test", 1, 1)]
    assert [name for name, _, _ in read_query(pointed).questions] == [
        b"a.det-exfil.test", b"b.det-exfil.test"
    ]  # fmt: skip


def test_hostile_datagrams_leave_the_server_serving_and_its_jobs_open(tmp_path):
    data = random.Random(3).randbytes(3000)
    _, plan = plan_queries(data, "kept.bin", CFG, random.Random(1), JOB, bytes(16))
    _, decoy = plan_queries(b"decoy" * 200, "decoy.bin", CFG, random.Random(2), DECOY, bytes(16))
    decoys = [pack_query(7, name, 1) for message in decoy for name, _ in message]
    dotted = [d for batch in DOTTED.values() for d in batch]
    battery = dotted + [d for batch in HOSTILE.values() for d in batch]
    battery += mutations(decoys, 300, seed=11)
    assert len(DOTTED) + len(HOSTILE) >= 15
    server = DetServer(CFG, tmp_path, bind="127.0.0.1", port=0)
    thread = server.start()
    sync = pack_query(0xBEEF, "RealJob" + "zz." + DOMAIN, 1)  # a bad piece: no job is touched
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(server.address)
            sock.settimeout(2.0)
            send_plan(sock, plan[:2], qid=1)  # REGISTER and the first chunk: the job is open
            assert JOB in server.jobs
            for start in range(0, len(battery), SYNC_EVERY):
                for datagram in battery[start : start + SYNC_EVERY]:
                    sock.send(datagram)
                assert exchange(sock, sync) is not None, f"no answer after datagram {start}"
            assert thread.is_alive() and JOB in server.jobs
            reply = parse_message(exchange(sock, pack_query(0x5151, "a." + DOMAIN, 1)))
            assert reply.id == 0x5151 and reply.rcode == 3  # still answering: NXDOMAIN
            send_plan(sock, plan[2:], qid=100)
    finally:
        server.stop()
        thread.join(5)
        server.close()
    written = tmp_path / "kept.bin"
    assert hashlib.md5(written.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["kept.bin"]
    assert server.drops["internal-error"] == 0
    assert server.drops["malformed-label-with-dot"] >= len(dotted)
    for reason in ["malformed-truncated-header", "malformed-pointer-loop",
                   "malformed-too-many-records", "not-a-query", "malformed-name-too-long",
                   "malformed-bad-label-type", "bad-job-id"]:  # fmt: skip
        assert server.drops[reason] > 0, (reason, dict(server.drops))
    assert sum(server.drops.values()) >= len(battery)


# ---------------------------------------------------------------------------
# file names

SAFE_NAMES = [
    ("-rf", "rf"), ("--help", "help"), ("CON", "_CON"), ("con.txt", "_con.txt"),
    ("PRN", "_PRN"), ("aux.c", "_aux.c"), ("NUL", "_NUL"), ("nul.tar.gz", "_nul.tar.gz"),
    ("COM1", "_COM1"), ("com9.log", "_com9.log"), ("LPT1", "_LPT1"), ("lpt9", "_lpt9"),
    ("CON.", "_CON"), ("COM10", "COM10"), ("CONSOLE", "CONSOLE"), ("..", "unnamed"),
    (".", "unnamed"), ("", "unnamed"), ("/", "unnamed"), ("a/b/c.txt", "c.txt"),
    ("..\\..\\win.ini", "win.ini"), ("../../x", "x"), ("a\x00b.txt", "a_b.txt"),
    ("\x1b[31mred", "__31mred"), ("tab\there", "tab_here"), (".bashrc", "bashrc"),
    ("-.-x", "x"), ("a...", "a"), ("résumé.pdf", "r_sum_.pdf"), (b"\xff\xfe.bin", "__.bin"),
    ("report.txt", "report.txt"), ("x" * 300, "x" * 120), ("y" * 300 + ".tar", "y" * 116 + ".tar"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "expected"), SAFE_NAMES)
def test_safe_name_known_answers(raw, expected):
    assert safe_name(raw) == expected


def test_safe_name_properties_on_random_names():
    rng = random.Random(4)
    pieces = ["-", ".", "..", "/", "\\", "\x00", "CON", "lpt1", "é", " ", "\n", "a", "Z9", "_"]
    for _ in range(2000):
        name = safe_name("".join(rng.choice(pieces) for _ in range(rng.randint(0, 90))))
        assert 0 < len(name.encode()) <= 120 and set(name) <= set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
        )
        assert name[0] not in "-." and name[-1] != "."
        assert name.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "LPT1"}


def test_hostile_names_are_written_apart_inside_the_folder(tmp_path):
    out = tmp_path / "out"
    # DET's framing drops a piece equal to an earlier one of the message: no "x" * 300 here
    long = "".join(random.Random(9).choices(string.ascii_letters, k=300))
    names = ["-rf", "rf", "CON", "_CON", "con", "..", "unnamed", long, long + "z", "\x00"]
    server = DetServer(CFG, out)
    try:
        for number, name in enumerate(names):
            _, plan = plan_queries(b"file %d" % number, name, CFG, random.Random(number))
            for message in plan:
                for query, _ in message:
                    server.handle(pack_query(number, query, 1))
    finally:
        server.close()
    contents = Counter(p.read_bytes() for p in out.iterdir())
    assert contents == Counter(b"file %d" % n for n in range(len(names)))  # none overwritten
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "rf", "rf-1", "_CON", "_CON-1", "_con", "unnamed", "unnamed-1", long[:120],
        long[:120] + "-1", "_",
    ])  # fmt: skip
    assert [p for p in tmp_path.iterdir()] == [out] and all(p.is_file() for p in out.iterdir())


def test_dangling_link_in_the_folder_is_not_replaced(tmp_path):
    (tmp_path / "a.txt").symlink_to(tmp_path / "missing")
    server = DetServer(dataclasses.replace(CFG), tmp_path)
    _, plan = plan_queries(b"data", "a.txt", CFG, random.Random(1))
    for message in plan:
        for query, _ in message:
            server.handle(pack_query(1, query, 1))
    server.close()
    assert (tmp_path / "a.txt").is_symlink() and (tmp_path / "a-1.txt").read_bytes() == b"data"
    assert not Path(tmp_path / "missing").exists()
