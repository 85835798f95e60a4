"""Offline capture sessions for script_datagen.py: packets built directly, synthetic timestamps.

The random stream fixes everything (same seed, same bytes): the plans, then every exfiltration
packet, then the benign sessions. Memory stays that of one sort run at any --packets (2M
packets once took 1.2 GB): the packets are drawn in stream order and time-sorted on the way to
the file by datagen_sort's external merge sort, the truth is tallied as records are written,
the resolver's answer cache lives on disk (datagen_cache), and nothing drawn is kept whole: an
exfiltration's queries are drawn again from their plan (ExfilPlan.replay), and the benign
sessions are drawn once to count them, then again from a copy of the generator as they are sent.
Scratch files go to a hidden folder beside the capture (about the capture's size).
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_generating_codes import benign, families
from data_generating_codes.datagen_cache import DiskCache
from data_generating_codes.datagen_plan import (
    ExfilPlan,
    SessionSettings,
    place_in_time,
    plan_exfiltration,
)
from data_generating_codes.datagen_sort import Block, RunSorter
from data_generating_codes.datagen_truth import RecordTally
from exfil.cli import UserError
from exfil.dnsmsg import pack_query, qtype_number
from exfil.files import atomic_path
from exfil.pcapwrite import (
    _records,  # the record/block headers of a chunk: pcapwrite owns the format
    capture_format,
    frame_headers,
    ipv4_to_int,
    pcap_header,
    pcapng_header,
)

RESOLVER = "10.0.0.1"
ATTACKER = 0  # host index of the attacker (the hosts' addresses are drawn: any index would do)
_PROGRESS_FROM = 500_000  # packets from which the benign draw shows a progress bar (a terminal)


def latency(rng: random.Random, cached: bool) -> float:
    """Resolver answer delay: sub-millisecond from cache, tens of milliseconds when recursing."""
    if cached and rng.random() < 0.7:
        return rng.uniform(0.0002, 0.002)
    return min(math.exp(rng.gauss(-3.2, 0.7)), 2.0)  # lognormal, median 40 ms


# ---------------------------------------------------------------------------
# the packets, in the order the seed draws them


def add_exfiltration(rng: random.Random, packets: RunSorter, plans: list[ExfilPlan],
                     classes: list[str], attacker: int, resolver: int,
                     mixed_case: float = 0.0) -> list[tuple[float, float]]:  # fmt: skip
    """Every planned query from the attacker and its server's answer (DET's, or the modelled
    family's) via the resolver; returns each file's (first, last) packet time.

    With `mixed_case`, that share of the queries of case-blind channels (families.case_blind)
    is seen behind a DNS 0x20 resolver: the name with its letters' case randomised, the answer
    built for the name as the client wrote it and echoing the question as sent. Per query, not
    per file: a capture holds a handful of files, and a coin per file often left every tunnel
    in one case while benign sessions were mixed, which taught the networks "mixed case =
    benign". Benign sessions get the same share (BenignModel), so case tells neither apart.
    """
    windows = []
    for index, plan in enumerate(plans):
        cls, last = classes.index(f"exfil/{plan.style}"), -math.inf
        answer = families.responder(plan.cfg)  # one per file: a beacon's server counts check-ins
        blind = bool(mixed_case) and families.case_blind(plan.cfg)
        for message, offsets in zip(*plan.replay(), strict=True):
            for (qname, qtype), offset in zip(message, offsets, strict=True):
                when, sport = plan.start + offset, 32768 + int(rng.random() * 28232)
                qid, number = rng.getrandbits(16), qtype_number(qtype)
                written = pack_query(qid, qname, number)
                if blind and rng.random() < mixed_case:
                    sent = pack_query(qid, benign.randomise_case(qname, rng), number)
                else:
                    sent = written
                packets.add((when, attacker, resolver, sport, 53, sent, cls, index))
                last = max(last, when)
                reply = answer(written)
                if reply is not None:  # a resolver relays it without the AA bit, 0x20 echoed
                    reply = reply[:2] + bytes([reply[2] & ~0x04]) + reply[3:]
                    if sent is not written and reply[12 : len(written)] == written[12:]:
                        reply = reply[:12] + sent[12:] + reply[len(written) :]
                    wait = latency(rng, False)
                    packets.add((when + wait, resolver, attacker, 53, sport, reply, cls, index))
                    last = max(last, when + wait)
            packets.spill_if_full()
        windows.append((plan.start, last))
    return windows


def _session_starts(rng: random.Random, settings: SessionSettings, count: int,
                    length: float) -> tuple[np.ndarray, random.Random]:  # fmt: skip
    """Sorted start times of the sessions that make `count` packets, and a generator that draws
    those sessions again (drawn once here, to count them, and not kept)."""
    replay = random.Random()
    replay.setstate(rng.getstate())
    model, sessions, lookups = settings.benign_model(rng), 0, 0
    while 2 * lookups < count:
        lookups += len(model.session())
        sessions += 1
    starts = np.fromiter((rng.uniform(0, length) for _ in range(sessions)), float, sessions)
    return np.sort(starts), replay


def add_benign(rng: random.Random, packets: RunSorter, count: int, length: float,
               classes: list[str], resolver: int, settings: SessionSettings,
               logged: list[tuple[float, float]]) -> list[tuple[float, str]]:  # fmt: skip
    """`count` benign packets from all hosts; returns (time, first name) of the attacker's
    sessions that start outside every window in `logged` (they go to logs.csv)."""
    starts, replay = _session_starts(rng, settings, count, length)
    sessions = settings.benign_model(replay)
    cache = DiskCache(packets.folder / "answers")  # beside the sort's runs
    model = settings.benign_model(rng, cache)
    budget, started, add, query = count, [], packets.add, model.query
    class_index = {cls: classes.index(cls) for cls in benign.CLASSES}
    progress = tqdm(total=count, unit="pkt", disable=count < _PROGRESS_FROM or None, leave=False)
    for number, start in enumerate(map(float, starts)):
        if number % 1024 == 0:
            progress.update(count - budget - progress.n)
        session = sessions.session()
        host = int(rng.random() * settings.hosts)
        if host == ATTACKER and not any(a <= start <= b for a, b in logged):
            started.append((start, session[0][1]))
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
        packets.spill_if_full()
    progress.close()
    cache.close()
    return started


# ---------------------------------------------------------------------------
# the capture, in time order


def write_capture(out: Path, blocks: Iterable[Block], address: np.ndarray, *, nanosecond: bool,
                  seed: int) -> RecordTally:  # fmt: skip
    """Frames of the time-ordered packets, a block at a time; IP ids drawn from `seed` in
    capture order. Returns the records' tally for the truth."""
    fmt, tally, ip_ids = capture_format(out), RecordTally(), np.random.default_rng(seed)
    with atomic_path(out) as temporary, open(temporary, "wb") as handle:
        handle.write(pcap_header(nanosecond) if fmt == "pcap" else pcapng_header(nanosecond))
        for records, payloads in blocks:
            ns, lengths = records["ns"], records["length"]
            tally.add(records["cls"], records["file"], ns)
            headers = frame_headers(address[records["src"]], address[records["dst"]],
                                    records["sport"], records["dport"], lengths,
                                    ip_ids.integers(0, 65536, len(records)))  # fmt: skip
            blob, width, tails = _records(ns, headers, lengths, fmt, nanosecond)
            pieces: list[bytes] = []
            for index, payload in enumerate(payloads):
                pieces += (blob[index * width : (index + 1) * width], payload)
                if tails is not None:
                    pieces.append(tails[index])
            handle.write(b"".join(pieces))
    return tally


def offline_session(rng: random.Random, settings: SessionSettings, out: Path, seed: int) -> dict:
    """Write the capture to `out`; return what the truth needs (the tally, plans, logs rows)."""
    plans = plan_exfiltration(rng, settings)
    length = place_in_time(rng, plans, settings.duration)
    hosts = [f"10.0.0.{number}" for number in rng.sample(range(10, 250), settings.hosts)]
    resolver = settings.hosts  # the address table: the hosts, then the resolver
    classes = [*benign.CLASSES, *dict.fromkeys(f"exfil/{p.style}" for p in plans)]
    start_time, total = settings.start_time, settings.packets
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.sort-", dir=out.parent) as folder:
        packets = RunSorter(Path(folder), round(start_time * 1e9))
        windows = add_exfiltration(
            rng, packets, plans, classes, ATTACKER, resolver, settings.mixed_case
        )
        if len(packets) >= total:
            raise UserError(f"exfiltration alone needs {len(packets)} packets: raise --packets")
        started = add_benign(rng, packets, total - len(packets), length, classes, resolver,
                             settings, windows)  # fmt: skip
        tally = write_capture(out, packets.merged(), ipv4_to_int([*hosts, RESOLVER]),
                              nanosecond=settings.nanosecond, seed=seed)  # fmt: skip
    for plan in plans:  # no one suffix covers a dga's or a tagged dnscat2's names: list them
        if (domains := families.name_domains(plan.cfg, plan.replay()[0])) is not None:
            plan.extra.update(domain=domains[0], domains=domains)
    rows = [("exfil", p.path.name, start_time + p.start) for p in plans]
    rows += [("benign", name, start_time + when) for when, name in started]
    return {
        "tally": tally,
        "classes": classes,
        "plans": plans,
        "rows": sorted(rows, key=lambda row: row[2]),
        "attacker_hosts": [hosts[ATTACKER]],
        "server_hosts": [RESOLVER],
    }
