"""DNS logs as input: the same traffic as a capture, Zeek TSV, Zeek JSON, Suricata eve v2 and
v3 (and gzipped) gives the same alerted domains; hostile logs give one-line errors or skipped,
counted records, never a traceback. The log fixtures are written here from the published
formats (no Zeek or Suricata package on these machines)."""

import gzip
import ipaddress
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from conftest import run_script

from exfil.dnsmsg import parse_message, qtype_name
from exfil.logread import log_format, read_log_dns
from exfil.packets import format_address, format_qname, strings
from exfil.pcapread import read_dns

ZEEK_FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
               "trans_id", "rtt", "query", "qclass", "qclass_name", "qtype", "qtype_name",
               "rcode", "rcode_name", "AA", "TC", "RD", "RA", "Z", "answers", "TTLs",
               "rejected"]  # fmt: skip
RCODE_NAMES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def _answer_text(record) -> tuple[str, str]:  # noqa: ANN001
    """(rrtype name, rdata text) as Zeek and Suricata print an answer."""
    kind = qtype_name(record.rtype)
    if record.rtype == 1:
        return kind, str(ipaddress.IPv4Address(record.rdata))
    if record.rtype == 28:
        return kind, str(ipaddress.IPv6Address(record.rdata))
    if record.rtype == 16:
        text = record.rdata[1 : 1 + record.rdata[0]].decode("latin-1")
        return kind, text
    return kind, ""  # names inside rdata may be compressed: left out, as a sensor may


def packets_of(capture) -> list[dict]:  # noqa: ANN001
    rows = []
    for batch in read_dns(capture):
        names = strings(format_qname(batch.qname, batch.qlen))
        src, dst = strings(format_address(batch.src)), strings(format_address(batch.dst))
        for i in range(len(batch)):
            start = int(batch.msg_off[i])
            message = parse_message(bytes(batch.data[start : start + int(batch.msg_len[i])]))
            rows.append({"time": float(batch.time[i]), "src": src[i], "dst": dst[i],
                         "qname": names[i], "qtype": int(batch.qtype[i]),
                         "response": bool(batch.response[i]), "id": message.id,
                         "rcode": message.flags & 0xF,
                         "answers": [_answer_text(r) for r in message.answers]})  # fmt: skip
    return rows


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def write_logs(capture, folder) -> dict:  # noqa: ANN001
    """The capture's traffic as the four log formats (one Zeek row per query and its answer)."""
    rows = packets_of(capture)
    answered = {(r["dst"], r["src"], r["id"], r["qname"].lower()): r for r in rows if r["response"]}
    zeek = []
    for r in rows:
        if r["response"]:
            continue
        reply = answered.get((r["src"], r["dst"], r["id"], r["qname"].lower()))
        answers = [text for kind, text in reply["answers"] if text] if reply else []
        zeek.append({"ts": r["time"], "uid": "C1", "id.orig_h": r["src"], "id.orig_p": 40000,
                     "id.resp_h": r["dst"], "id.resp_p": 53, "proto": "udp", "trans_id": r["id"],
                     "rtt": (reply["time"] - r["time"]) if reply else None, "query": r["qname"],
                     "qclass": 1, "qclass_name": "C_INTERNET", "qtype": r["qtype"],
                     "qtype_name": qtype_name(r["qtype"]),
                     "rcode": reply["rcode"] if reply else None,
                     "rcode_name": RCODE_NAMES.get(reply["rcode"], "NOERROR") if reply else None,
                     "AA": False, "TC": False, "RD": True, "RA": bool(reply), "Z": 0,
                     "answers": answers or None, "TTLs": [60.0] * len(answers) or None,
                     "rejected": False})  # fmt: skip
    paths = {"zeek.json": folder / "dns.json.log", "zeek.tsv": folder / "dns.log",
             "eve2": folder / "eve2.json", "eve3": folder / "eve3.json.gz"}  # fmt: skip
    paths["zeek.json"].write_text("".join(json.dumps({k: v for k, v in z.items() if v is not None})
                                          + "\n" for z in zeek))  # fmt: skip
    lines = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)",
             "#unset_field\t-", "#path\tdns", "#fields\t" + "\t".join(ZEEK_FIELDS),
             "#types\t" + "\t".join(["time"] + ["string"] * (len(ZEEK_FIELDS) - 1))]  # fmt: skip
    for z in zeek:
        cells = []
        for key in ZEEK_FIELDS:
            value = z[key]
            cells.append("-" if value is None else ",".join(map(str, value))
                         if isinstance(value, list) else f"{value:.6f}" if key == "ts"
                         else str(value).replace("\t", "\\x09"))  # fmt: skip
        lines.append("\t".join(cells))
    lines.append("#close\t2026-01-01-00-00-00")
    paths["zeek.tsv"].write_text("\n".join(lines) + "\n")
    eve2, eve3 = [], []
    for r in rows:
        base = {"timestamp": _iso(r["time"]), "event_type": "dns", "src_ip": r["src"],
                "src_port": 53 if r["response"] else 40000, "dest_ip": r["dst"],
                "dest_port": 40000 if r["response"] else 53, "proto": "UDP"}  # fmt: skip
        answers = [{"rrname": r["qname"], "rrtype": k, "ttl": 60, "rdata": t}
                   for k, t in r["answers"] if t]  # fmt: skip
        rcode = RCODE_NAMES.get(r["rcode"], "NOERROR")
        dns2 = {"id": r["id"], "rrname": r["qname"], "rrtype": qtype_name(r["qtype"])}
        if r["response"]:
            dns2.update(type="answer", rcode=rcode, **({"answers": answers} if answers else {}))
        else:
            dns2.update(type="query", tx_id=0)
        eve2.append({**base, "dns": dns2})
        queries = [{"rrname": r["qname"], "rrtype": qtype_name(r["qtype"])}]
        dns3 = {"version": 3, "type": "response" if r["response"] else "request", "id": r["id"],
                "queries": queries}  # fmt: skip
        if r["response"]:
            dns3.update(rcode=rcode, **({"answers": answers} if answers else {}))
        eve3.append({**base, "dns": dns3})
    paths["eve2"].write_text("".join(json.dumps(e) + "\n" for e in eve2))
    with gzip.open(paths["eve3"], "wt") as handle:
        handle.writelines(json.dumps(e) + "\n" for e in eve3)
    return paths


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("logs")
    capture = folder / "traffic.pcap"
    files = ["report.txt", "chart.png"]
    run_script("data_generating_codes/script_datagen.py", "--mode", "offline", "--packets",
               4000, "--seed", 5, "--files", *files, "--out", capture)  # fmt: skip
    return {"capture": capture, **write_logs(capture, folder)}


def test_formats_are_recognised_by_content(traffic):
    assert log_format(traffic["capture"]) is None
    assert log_format(traffic["zeek.tsv"]) == "zeek-tsv"
    assert log_format(traffic["zeek.json"]) == "zeek-json"
    assert log_format(traffic["eve2"]) == "eve" and log_format(traffic["eve3"]) == "eve"


def test_eve_gives_the_capture_names_in_order_numbered_by_record(traffic):
    def names(batches):
        out = []
        for batch in batches:
            out += strings(format_qname(batch.qname, batch.qlen))
        return out

    expected = names(read_dns(traffic["capture"]))
    for key in ("eve2", "eve3"):
        stats: dict = {}
        batches = list(read_log_dns(traffic[key], chunk_records=1000, stats=stats))
        assert names(batches) == expected, key
        records = np.concatenate([b.record for b in batches])
        assert (records == np.arange(len(expected))).all()  # packet = the log record's index
        assert stats["records"] == stats["dns_packets"] == len(expected)


@pytest.mark.slow
def test_same_traffic_as_capture_and_logs_gives_the_same_alerts(traffic, tmp_path):
    alerted = {}
    for key in ("capture", "zeek.tsv", "zeek.json", "eve2", "eve3"):
        out = tmp_path / key
        out.mkdir()
        done = run_script("detect.py", traffic[key], "--out", out / "s.csv", check=False)
        assert done.returncode in (0, 1), done.stderr
        report = json.loads((out / "alerts.json").read_text())
        alerted[key] = {alert["domain"] for alert in report["alerts"]}
    truth = json.loads(traffic["capture"].with_suffix(".truth.json").read_text())
    assert alerted["capture"] and alerted["capture"] <= set(truth["exfil_domains"])
    for key, domains in alerted.items():
        assert domains == alerted["capture"], key


def test_hostile_logs_are_one_line_errors_or_counted_skips(traffic, tmp_path):
    good = traffic["zeek.json"].read_text().splitlines()
    cut = tmp_path / "cut.json"  # a truncated last line, wrong types, unknown columns
    cut.write_text("\n".join([*good[:50], json.dumps({"ts": "x", "query": 5}),
                              json.dumps({"ts": "yesterday", "query": "ok.example"}),
                              json.dumps({"ts": 1.0, "query": "a.example", "what": [1]}),
                              good[50][: len(good[50]) // 2]]))  # fmt: skip
    stats: dict = {}
    batches = list(read_log_dns(cut, stats=stats))
    assert sum(map(len, batches)) >= 50 and stats["bad_record"] == 1 and stats["bad_json"] == 1
    assert stats["no_query"] == 1  # each skip counted by its reason
    long = tmp_path / "long.json"  # a 10 MB single line
    long.write_text(good[0] + "\n" + "{" + "x" * 10_000_000 + "\n" + good[1] + "\n")
    stats = {}
    assert sum(map(len, read_log_dns(long, stats=stats))) >= 2 and stats["long_line"] == 1
    gz = tmp_path / "cut.json.gz"  # a gzip cut short
    gz.write_bytes(gzip.compress(traffic["eve2"].read_bytes())[:-2000])
    out = tmp_path / "s.csv"
    done = run_script("detect.py", gz, "--out", out, check=False)
    assert done.returncode == 2 and "cut short" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not out.exists() and not (tmp_path / "alerts.json").exists()


ZEEK_HEADER = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-",
               "#fields\tts\tid.orig_h\tid.resp_h\tquery\tqtype\trcode\tanswers\trtt"]  # fmt: skip
LONGEST = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 bytes: the longest legal name


def _zeek_tsv(path, rows, crlf=False) -> None:  # noqa: ANN001
    end = "\r\n" if crlf else "\n"
    path.write_text(end.join([*ZEEK_HEADER, *("\t".join(map(str, r)) for r in rows)]) + end)


def test_rebuilt_messages_are_the_wire_form_of_each_record(tmp_path):
    """Known answers: each message the vectorised builder lays out equals the one dnsmsg packs
    one by one, for awkward names; illegal names are skipped and counted, never mangled."""
    from exfil.dnsmsg import Record, pack_query, pack_response, rdata_name, rdata_txt

    rows = [  # ts, client, server, query, qtype, rcode, answers, rtt
        (1.5, "10.0.0.7", "10.0.0.1", "www.example.com.", 1, 0, "93.184.216.34,2606:2800::1", 0.25),
        (2.0, "10.0.0.7", "10.0.0.1", "Mixed.CASE.example", 16, 0, "TXT 5 hello", 0.5),
        (3.0, "fd00::7", "fd00::1", r"raw\x00\xffbytes.example", 5, 3, "-", 0.1),
        (4.0, "10.0.0.8", "10.0.0.1", LONGEST, 12, "-", "host.example", "-"),
        (5.0, "10.0.0.8", "10.0.0.1", "a" * 64 + ".too-long.example", 1, 0, "-", 0.1),
        (6.0, "10.0.0.8", "10.0.0.1", "empty..label.example", 1, 0, "-", 0.1),
        (7.0, "10.0.0.8", "fd00::1", "x.example", 1, "-", "-", "-"),  # mixed families, no reply
    ]
    _zeek_tsv(tmp_path / "dns.log", rows, crlf=True)
    stats: dict = {}
    batches = list(read_log_dns(tmp_path / "dns.log", stats=stats))
    assert stats["records"] == 7 and stats["bad_name"] == 2
    batch = batches[0]
    spans = zip(batch.msg_off, batch.msg_len, strict=True)
    messages = [bytes(batch.data[o : o + n]) for o, n in spans]
    names = strings(format_qname(batch.qname, batch.qlen))
    raw = b"raw\x00\xffbytes.example"
    expected = [
        pack_query(0, "www.example.com", 1),
        pack_response(0, "www.example.com", 1, answers=[
            Record("www.example.com", 1, 60, bytes([93, 184, 216, 34])),
            Record("www.example.com", 28, 60, ipaddress.IPv6Address("2606:2800::1").packed)]),
        pack_query(0, "Mixed.CASE.example", 16),
        pack_response(0, "Mixed.CASE.example", 16,
                      answers=[Record("Mixed.CASE.example", 16, 60, rdata_txt("hello"))]),
        pack_query(0, raw, 5), pack_response(0, raw, 5, rcode=3),
        pack_query(0, LONGEST, 12),
        pack_response(0, LONGEST, 12,
                      answers=[Record(LONGEST, 12, 60, rdata_name("host.example"))]),
        pack_query(0, "x.example", 1),
    ]  # fmt: skip
    assert messages == expected
    assert batch.response.tolist() == [False, True] * 4 + [False]
    assert batch.record.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 6]
    assert names[0] == "www.example.com" and names[2] == "Mixed.CASE.example"
    assert batch.qlen.tolist()[6] == 253
    assert np.allclose(batch.time, [1.5, 1.75, 2.0, 2.5, 3.0, 3.1, 4.0, 4.0, 7.0])
    src = strings(format_address(batch.src))
    assert src[:2] == ["10.0.0.7", "10.0.0.1"] and src[4:6] == ["fd00::7", "fd00::1"]
    assert batch.ipver.tolist() == [4, 4, 4, 4, 6, 6, 4, 4, 6]
    assert (batch.sport[batch.response] == 53).all() and (batch.dport[~batch.response] == 53).all()
    again = read_dns_of(batch)  # the capture reader parses every rebuilt message the same way
    assert again == names


def read_dns_of(batch) -> list[str]:  # noqa: ANN001
    """The names read_dns finds in the batch's messages written as a capture."""
    import tempfile
    from pathlib import Path

    from exfil.pcapwrite import ipv4_to_int, write_udp_capture

    n = len(batch)
    spans = zip(batch.msg_off, batch.msg_len, strict=True)
    payloads = [bytes(batch.data[o : o + k]) for o, k in spans]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.pcap"
        hosts = ipv4_to_int(["10.0.0.1"] * n)
        write_udp_capture(path, np.arange(n) * 10**9, hosts, hosts, batch.sport, batch.dport,
                          payloads)  # fmt: skip
        return [n for b in read_dns(path) for n in strings(format_qname(b.qname, b.qlen))]


def test_zeek_header_again_mid_file_and_blank_lines(tmp_path):
    rows = [(1.0, "10.0.0.7", "10.0.0.1", "a.example", 1, 0, "-", 0.1)]
    text = "\n".join([*ZEEK_HEADER, "\t".join(map(str, rows[0])), "", "#close\tx",
                      *ZEEK_HEADER[:-1], "#fields\tquery\tts", "b.example\t2.0",
                      "c.example\t3.0\textra"])  # fmt: skip
    (tmp_path / "dns.log").write_text(text + "\n")
    stats: dict = {}
    batches = list(read_log_dns(tmp_path / "dns.log", stats=stats))
    names = [n for b in batches for n in strings(format_qname(b.qname, b.qlen))]
    assert names == ["a.example", "a.example", "b.example"]
    assert [r for b in batches for r in b.record.tolist()] == [0, 0, 1]
    assert stats["records"] == 3 and stats["wrong_columns"] == 1


def test_name_lists_plain_and_labelled(tmp_path):
    plain = tmp_path / "names.txt"
    plain.write_text("# names seen at the proxy\nwww.example.com\n\nmail.example.org.\n")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("label,name\nbenign,www.example.com\nmalicious,aGVsbG8.t.evil.example\n"
                        "maybe,x.example\n")  # fmt: skip
    assert log_format(plain) == "names" and log_format(labelled) == "names"
    stats: dict = {}
    batch = next(read_log_dns(plain, stats=stats))
    assert strings(format_qname(batch.qname, batch.qlen)) == ["www.example.com", "mail.example.org"]
    assert batch.record.tolist() == [0, 1] and np.isnan(batch.time).all()
    assert not batch.response.any() and (batch.label == -1).all()
    stats = {}
    batch = next(read_log_dns(labelled, stats=stats))
    assert batch.label.tolist() == [0, 1] and stats["bad_label"] == 1 and stats["records"] == 3
    listing = tmp_path / "captures.txt"  # a list whose first entry is a file lists captures
    (tmp_path / "a.pcap").write_bytes(b"")
    listing.write_text("a.pcap\n")
    assert log_format(listing) is None
    assert log_format(tmp_path / "a.pcap") is None


def test_ld_takes_a_name_lists_labels_and_detect_alerts_on_it(tmp_path):
    rng = np.random.default_rng(3)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz234567"))
    lines = ["label,name"]
    for i in range(200):
        lines.append("benign," + ["www.google.com", "mail.example.org", "api.github.com"][i % 3])
        lines.append(f"malicious,{''.join(rng.choice(alphabet, 50))}.{i}.t.evil-tunnel.net")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(lines) + "\n")
    run_script("ld.py", names, "--out", tmp_path / "ds")
    labels = np.load(tmp_path / "ds" / "labels.npy")
    assert labels.tolist() == [0, 1] * 200
    done = run_script("detect.py", names, "--out", tmp_path / "s.csv", check=False)
    assert done.returncode == 1, done.stderr
    report = json.loads((tmp_path / "alerts.json").read_text())
    assert [a["domain"] for a in report["alerts"]] == ["evil-tunnel.net"]
    assert report["alerts"][0]["first_seen"] is None  # a list has no times, none made up
    unlabelled = tmp_path / "plain.txt"
    unlabelled.write_text("www.example.com\n")
    done = run_script("ld.py", unlabelled, "--out", tmp_path / "x", check=False)
    assert done.returncode == 2 and "--exfil-domain" in done.stderr
