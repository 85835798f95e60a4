"""A capture session: benign DNS lookups plus DET-style exfiltrations, with exact ground truth.

    python data_generating_codes/script_datagen.py --mode offline --packets 20000 --seed 1 \
        --out work/train.pcap
    python data_generating_codes/script_datagen.py --out work/test.pcapng --seed 2 \
        --files memo.txt 'sales.*'
    sudo .venv/bin/python data_generating_codes/script_datagen.py --mode live --packets 3000
    sudo .venv/bin/python data_generating_codes/script_datagen.py --mode netns --out work/ns.pcap

Writes OUT (pcap, or pcapng by suffix), OUT.logs.csv (the attacker script's `label,name,time`
rows) and OUT.truth.json (exfil domains, job ids, record ranges, classes; see the spec).
`offline` builds the packets directly with synthetic timestamps (no sockets, >100k packets/s,
same seed -> same bytes); `live` runs det.py's server and client and a benign resolver over real
UDP on loopback and captures them; `netns` does the same between two network namespaces.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# ---------------------------------------------------------------------------
# session
MODE = "offline"  # offline | live | netns
PACKETS = 20000  # DNS packets in the capture (offline: exact; live/netns: about)
SEED = 1  # fixes every draw: same seed, same offline capture byte for byte
OUT = "work/capture.pcap"  # capture path; a .pcapng suffix writes pcapng
DURATION = 1800.0  # seconds of session time (offline; stretched when exfiltration needs more)
START_TIME = 1767225600.0  # epoch of the session start (offline)
NANOSECOND = False  # pcap/pcapng with nanosecond timestamps
# exfiltration
EXFIL_SHARE = 0.10  # target share of malicious packets (0.05-0.20)
STYLES = ["all"]  # exfil styles to draw from (det_styles.STYLES; all = every one but det-slow)
FILES = ["*"]  # names or globs under EXFIL_DIR to exfiltrate
EXFIL_DIR = "data_generating_codes/ExfiltrationData"  # folder of files to exfiltrate
PASSPHRASE = "exfil-detect"  # DET AES passphrase
# benign traffic
HOSTS = 8  # client hosts on the LAN (one of them is the attacker)
SHARE_CDN_HASH = 0.05  # share of lookups: long CDN/cloud names with hashes
SHARE_AV_LOOKUP = 0.02  # share: antivirus/reputation hash lookups
SHARE_DKIM = 0.01  # share: DKIM selector TXT lookups
SHARE_DMARC = 0.01  # share: _dmarc TXT lookups
SHARE_ACME = 0.005  # share: _acme-challenge TXT lookups
SHARE_REVERSE_PTR = 0.03  # share: reverse PTR (in-addr.arpa, ip6.arpa)
SHARE_SRV = 0.01  # share: SRV service discovery
SHARE_DNSBL = 0.01  # share: DNSBL reversed-address lookups
SHARE_CHROME_PROBE = 0.01  # share: Chromium random single-label probes
SHARE_WORDY_LONG = 0.02  # share: long but wordy names
# live / netns
SLEEP_SCALE = 0.001  # live/netns: factor on DET's sleeps and benign inter-arrival times
LIVE_TIMEOUT = 120.0  # live/netns: give up after this many seconds
# ---------------------------------------------------------------------------

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data_generating_codes import benign  # noqa: E402
from data_generating_codes.datagen_plan import (  # noqa: E402
    ExfilPlan,
    SessionSettings,
    expand_styles,
    place_in_time,
    plan_exfiltration,
)
from data_generating_codes.datagen_truth import write_sidecars  # noqa: E402
from data_generating_codes.det_codec import answer  # noqa: E402
from data_generating_codes.det_styles import STYLES as STYLE_NAMES  # noqa: E402
from exfil.cli import UserError, configure, format_config, run  # noqa: E402
from exfil.dnsmsg import pack_query, qtype_number  # noqa: E402
from exfil.pcapwrite import ipv4_to_int, write_udp_capture  # noqa: E402

_RESOLVER = "10.0.0.1"
_EXFIL_SHARE_BOUNDS = (0.05, 0.20)
_PROGRESS_FROM = 500_000  # packets from which offline mode shows a progress bar (on a terminal)


# ---------------------------------------------------------------------------
# inputs


def hard_shares() -> dict[str, float]:
    """The SHARE_* constants keyed by benign class name."""
    return {
        cls: globals()["SHARE_" + cls.split("/")[1].upper().replace("-", "_")]
        for cls in benign.HARD_SHARES
    }


def session_settings() -> SessionSettings:
    """The constants, as parsed from the flags, frozen for the session builders."""
    return SessionSettings(
        packets=PACKETS, duration=DURATION, start_time=START_TIME, exfil_share=EXFIL_SHARE,
        styles=expand_styles(STYLES), files=tuple(FILES), exfil_dir=EXFIL_DIR,
        passphrase=PASSPHRASE, hosts=HOSTS, shares=hard_shares(), nanosecond=NANOSECOND,
        sleep_scale=SLEEP_SCALE, live_timeout=LIVE_TIMEOUT,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# offline: the packets, straight into arrays


class Packets:
    """Rows (time, src, dst, sport, dport, payload, class, file) of the capture being built;
    `add` is list.append (one call per packet on the hot path), columns come out at the end."""

    FIELDS = ("time", "src", "dst", "sport", "dport", "payload", "cls", "file")

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.add = self.rows.append

    def columns(self) -> dict[str, list]:
        return dict(zip(self.FIELDS, map(list, zip(*self.rows, strict=True)), strict=True))


def latency(rng: random.Random, cached: bool) -> float:
    """Resolver answer delay: sub-millisecond from cache, tens of milliseconds when recursing."""
    if cached and rng.random() < 0.7:
        return rng.uniform(0.0002, 0.002)
    return min(math.exp(rng.gauss(-3.2, 0.7)), 2.0)  # lognormal, median 40 ms


def add_exfiltration(rng: random.Random, packets: Packets, plans: list[ExfilPlan],
                     classes: list[str], attacker: int, resolver: int) -> None:  # fmt: skip
    """Every planned query from the attacker, and the DET server's answer via the resolver."""
    for index, plan in enumerate(plans):
        cfg, cls = plan.cfg, classes.index(f"exfil/{plan.style}")
        for message, offsets in zip(plan.messages, plan.times, strict=True):
            for (qname, qtype), offset in zip(message, offsets, strict=True):
                when, sport = plan.start + offset, 32768 + int(rng.random() * 28232)
                query = pack_query(rng.getrandbits(16), qname, qtype_number(qtype))
                packets.add((when, attacker, resolver, sport, 53, query, cls, index))
                reply = answer(query, cfg)
                if reply is not None:  # a resolver relays it without the AA bit
                    reply = reply[:2] + bytes([reply[2] & ~0x04]) + reply[3:]
                    wait = latency(rng, False)
                    packets.add((when + wait, resolver, attacker, 53, sport, reply, cls, index))


def add_benign(rng: random.Random, packets: Packets, count: int, length: float,
               classes: list[str], resolver: int,
               settings: SessionSettings) -> list[tuple[float, int, str]]:  # fmt: skip
    """`count` benign packets from all hosts; returns (time, host, first name) per session."""
    model = benign.BenignModel(rng, settings.shares)
    sessions, lookups = [], 0
    while 2 * lookups < count:
        sessions.append(model.session())
        lookups += len(sessions[-1])
    starts = sorted(rng.uniform(0, length) for _ in sessions)
    budget, started, add, query = count, [], packets.add, model.query
    class_index = {cls: classes.index(cls) for cls in benign.CLASSES}
    progress = tqdm(total=count, unit="pkt", disable=count < _PROGRESS_FROM or None, leave=False)
    for number, (start, session) in enumerate(zip(starts, sessions, strict=True)):
        if number % 1024 == 0:
            progress.update(count - budget - progress.n)
        host = int(rng.random() * settings.hosts)
        started.append((start, host, session[0][1]))
        for cls, qname, qtype, offset in session:
            if budget <= 0:
                break
            qid, sport, when = (
                rng.getrandbits(16),
                32768 + int(rng.random() * 28232),
                start + offset,
            )
            code = class_index[cls]
            add((when, host, resolver, sport, 53, query(qid, qname, qtype), code, -1))
            budget -= 1
            if budget:  # an odd count leaves the capture's last-drawn query unanswered
                reply = model.response(qid, cls, qname, qtype)
                wait = latency(rng, cls == benign.ORDINARY)
                add((when + wait, resolver, host, 53, sport, reply, code, -1))
                budget -= 1
    progress.close()
    return started


def offline_session(rng: random.Random, settings: SessionSettings) -> dict:
    """Build the whole capture in memory: arrays in time order, truth, and logs rows."""
    plans = plan_exfiltration(rng, settings)
    length = place_in_time(rng, plans, settings.duration)
    hosts = [f"10.0.0.{number}" for number in rng.sample(range(10, 250), settings.hosts)]
    attacker, resolver = 0, settings.hosts  # host indices; index `hosts` is the resolver
    classes = [*benign.CLASSES, *dict.fromkeys(f"exfil/{p.style}" for p in plans)]
    packets, total = Packets(), settings.packets
    add_exfiltration(rng, packets, plans, classes, attacker, resolver)
    if len(packets.rows) >= total:
        raise UserError(f"exfiltration alone needs {len(packets.rows)} packets: raise --packets")
    count = total - len(packets.rows)
    started = add_benign(rng, packets, count, length, classes, resolver, settings)
    columns, start_time = packets.columns(), settings.start_time
    start_ns = round(start_time * 1e9)
    ns = start_ns + np.round(np.asarray(columns["time"]) * 1e9).astype(np.int64)
    order = np.argsort(ns, kind="stable")
    address = ipv4_to_int([*hosts, _RESOLVER])
    seconds, owner = np.asarray(columns["time"]), np.asarray(columns["file"])
    windows = [(p.start, seconds[owner == i].max()) for i, p in enumerate(plans)]
    rows = [("exfil", p.path.name, start_time + p.start) for p in plans]
    rows += [
        ("benign", name, start_time + when)
        for when, host, name in started
        if host == attacker and not any(a <= when <= b for a, b in windows)
    ]
    return {
        "ns": ns[order],
        "src": address[np.asarray(columns["src"])[order]],
        "dst": address[np.asarray(columns["dst"])[order]],
        "sport": np.asarray(columns["sport"])[order],
        "dport": np.asarray(columns["dport"])[order],
        "payload": [columns["payload"][i] for i in order.tolist()],
        "cls": np.asarray(columns["cls"], dtype=np.uint8)[order],
        "file": np.asarray(columns["file"], dtype=np.int32)[order],
        "classes": classes,
        "plans": plans,
        "rows": sorted(rows, key=lambda row: row[2]),
        "attacker_hosts": [hosts[attacker]],
        "server_hosts": [_RESOLVER],
    }


# ---------------------------------------------------------------------------
# main


def main() -> int:
    config = configure(
        globals(), choices={"MODE": ["offline", "live", "netns"], "STYLES": ["all", *STYLE_NAMES]}
    )
    print(format_config(config), flush=True)
    if not 10 <= PACKETS <= 50_000_000:
        raise UserError(f"--packets {PACKETS}: need 10 to 50,000,000")
    if not _EXFIL_SHARE_BOUNDS[0] <= EXFIL_SHARE <= _EXFIL_SHARE_BOUNDS[1]:
        low, high = _EXFIL_SHARE_BOUNDS
        raise UserError(f"--exfil-share {EXFIL_SHARE}: need {low} to {high}")
    settings = session_settings()
    shares = settings.shares
    if min(shares.values()) < 0 or sum(shares.values()) >= 1:
        raise UserError(
            f"--share-* values must be >= 0 and sum below 1 (got {sum(shares.values()):g})"
        )
    if HOSTS < 1 or not STYLES:
        raise UserError("need --hosts >= 1 and at least one style")
    out = Path(OUT)
    began, cpu_began = time.perf_counter(), time.process_time()
    rng = random.Random(SEED)
    if MODE == "offline":
        session = offline_session(rng, settings)
        write_udp_capture(
            out,
            session["ns"],
            session["src"],
            session["dst"],
            session["sport"],
            session["dport"],
            session["payload"],
            nanosecond=NANOSECOND,
            ip_id=np.random.default_rng(SEED).integers(0, 65536, len(session["ns"])),
        )
    else:
        from data_generating_codes import datagen_live

        session = datagen_live.live_session(rng, out, MODE, settings)
    truth = write_sidecars(out, session, config, MODE, SEED)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    share = truth["malicious_records"] / max(truth["records"], 1)
    print(
        f"wrote {out}: {truth['records']} records, {truth['malicious_records']} malicious "
        f"({share:.1%}), {len(truth['files'])} files, styles {truth['styles']}, "
        f"in {seconds:.2f} s ({truth['records'] / seconds:,.0f} packets/s; "
        f"{truth['records'] / max(cpu, 1e-9):,.0f} per CPU second)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    run(main)
