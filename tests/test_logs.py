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
