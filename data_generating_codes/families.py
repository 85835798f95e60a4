"""Tunnel families of the offline generator: DET (det_codec) and the modelled ones, one table.

A family turns a file into queries (a planner), answers them as its server would (a responder)
and, on the other side, rebuilds the file from the query names (a receiver). DET's presets stay
in det_styles.STYLES; the modelled families' presets are `STYLES` here, each a FamilyConfig
override (families_wire, families_c2 and families_exfiltrator say which public description
each one follows):

- `dnscat2-*`: hex packets with dnscat2's header (packet id, SYN/MSG/FIN, session, seq, ack),
  keep-alive polls while idle, the server's packets hex in TXT / CNAME / MX answers.
- `beacon-*`: a Cobalt-Strike-like DNS beacon, check-ins minutes to hours apart (synthetic time).
- `dga-*`: one random label under a TLD per query, mostly NXDOMAIN, data in a few labels.
- `dnsexfiltrator-*`: DNSExfiltrator's init/chunk TXT queries in base64url, base32 (upper,
  lower) or raw 8-bit label bytes.

`plan` gives (job id, messages, send offsets), the shape of det_codec.plan_queries + schedule,
so ExfilPlan.replay and the offline builder handle every family the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from data_generating_codes import families_c2 as c2
from data_generating_codes import families_exfiltrator as exfiltrator
from data_generating_codes import families_wire as wire
from data_generating_codes.det_codec import answer as det_answer
from data_generating_codes.det_codec import plan_queries, schedule
from data_generating_codes.det_config import DetConfig
from data_generating_codes.det_styles import STYLES as DET_STYLES
from data_generating_codes.families_wire import FamilyConfig, Query, Responder
from exfil.cli import UserError

Messages = list[list[tuple[str, str]]]

_MIN, _HOUR = 60.0, 3600.0
STYLES: dict[str, dict] = {
    # dnscat2: label size, qtypes, chunking; the client polls about once a second when idle
    "dnscat2-txt": {"family": "dnscat2", "qtypes": ("TXT",)},
    "dnscat2-cname": {"family": "dnscat2", "qtypes": ("CNAME",), "label": 62, "min_bytes": 16,
                      "max_bytes": 80},
    "dnscat2-mx": {"family": "dnscat2", "qtypes": ("MX",), "label": 32, "burst": (1, 6),
                   "idle_polls": (3, 12)},
    "dnscat2-tag": {"family": "dnscat2", "qtypes": ("TXT", "CNAME", "MX"), "tag": "dnscat"},
    # beacon: sleep range = sleeptime minus up to the jitter; output posted in small chunks
    "beacon-txt": {"family": "beacon", "qtypes": ("TXT",), "sleep": (15 * _MIN, 30 * _MIN),
                   "min_bytes": 16, "max_bytes": 28, "fetches": 2},
    "beacon-a": {"family": "beacon", "qtypes": ("A",), "prefixes": ("www", "cdn", "post"),
                 "idle_ip": "74.125.196.113", "sleep": (4 * _MIN, 5 * _MIN),
                 "min_bytes": 8, "max_bytes": 16, "fetches": 6, "output": (100, 400)},
    "beacon-aaaa": {"family": "beacon", "qtypes": ("AAAA",), "prefixes": ("www", "www6", "post"),
                    "idle_ip": "8.8.4.4", "sleep": (1.4 * _HOUR, 2 * _HOUR), "min_bytes": 20,
                    "max_bytes": 30, "fetches": 3, "output": (600, 1500)},
    # dga: alphabet, qtypes, TLDs; bursts of look-ups seconds apart, minutes between bursts
    "dga-alpha": {"family": "dga", "encoding": "base26", "qtypes": ("A",),
                  "tlds": ("com", "net", "org", "info", "biz"), "query_gap": (0.05, 1.5),
                  "sleep": (60.0, 600.0), "burst": (5, 20)},
    "dga-alnum": {"family": "dga", "encoding": "base36", "qtypes": ("A", "A", "AAAA", "TXT"),
                  "tlds": ("xyz", "top", "club", "online", "site"), "query_gap": (0.05, 1.0),
                  "sleep": (30.0, 300.0), "burst": (4, 16)},
    "dga-txt": {"family": "dga", "encoding": "base36", "qtypes": ("TXT",), "noise": (1, 3),
                "tlds": ("net", "org", "ru", "cc", "pw"), "query_gap": (0.1, 2.0),
                "sleep": (120.0, 900.0), "burst": (3, 10)},
    # dnsexfiltrator: encoding, label and request size (the tool's -l / -r), throttle (-t)
    "dnsexfiltrator-b64": {"family": "dnsexfiltrator", "encoding": "base64url",
                           "query_gap": (0.0, 0.05)},
    "dnsexfiltrator-b32": {"family": "dnsexfiltrator", "encoding": "base32", "label": 50,
                           "name": 200, "query_gap": (0.2, 0.3)},
    "dnsexfiltrator-b32lower": {"family": "dnsexfiltrator", "encoding": "base32lower",
                                "label": 30, "name": 120, "query_gap": (0.9, 1.6)},
    "dnsexfiltrator-raw8": {"family": "dnsexfiltrator", "encoding": "raw8", "label": 40,
                            "name": 180, "query_gap": (0.0, 0.1)},
}  # fmt: skip


@dataclass(frozen=True)
class Family:
    """What the generator and the tests need of one modelled family."""

    plan: Callable[[bytes, str, FamilyConfig, random.Random], tuple[str, list[Query]]]
    responder: Callable[[FamilyConfig], Responder]
    receive: Callable[[Iterable[str | bytes], FamilyConfig], bytes]
    own_names: Callable[[FamilyConfig], bool]  # no fixed suffix: the truth lists every name


FAMILIES: dict[str, Family] = {
    "dnscat2": Family(wire.plan_dnscat2, wire.dnscat2_responder, wire.receive_dnscat2,
                      lambda cfg: bool(cfg.tag)),
    "beacon": Family(c2.plan_beacon, c2.beacon_responder, c2.receive_beacon, lambda cfg: False),
    "dga": Family(c2.plan_dga, c2.dga_responder, c2.receive_dga, lambda cfg: True),
    "dnsexfiltrator": Family(exfiltrator.plan_dnsexfiltrator, exfiltrator.dnsexfiltrator_responder,
                             exfiltrator.receive_dnsexfiltrator, lambda cfg: False),
}  # fmt: skip


# ---------------------------------------------------------------------------
# style names


def family_of(style: str) -> str:
    """The family of a style name: "det" for DET's presets; a real tool's name stays itself."""
    if style in DET_STYLES:
        return "det"
    return STYLES[style]["family"] if style in STYLES else style


def selectors() -> list[str]:
    """The --style words that stand for several styles (see expand)."""
    return ["all", "all-families", *(f"family:{name}" for name in ("det", *FAMILIES))]


def expand(names: Iterable[str]) -> tuple[str, ...]:
    """Style names with the selectors expanded, in order, once each. `all` (and `family:det`):
    DET's presets but det-slow (it stretches a session to hours: only when named);
    `family:X`: every style of X; `all-families`: both."""
    det = [style for style in DET_STYLES if style != "det-slow"]
    by_family = {"det": det}
    by_family |= {f: [s for s in STYLES if STYLES[s]["family"] == f] for f in FAMILIES}
    chosen: list[str] = []
    for name in names:
        if name in ("all", "all-families"):
            chosen += det if name == "all" else [s for group in by_family.values() for s in group]
        elif name.startswith("family:"):
            if name[7:] not in by_family:
                raise UserError(f"unknown family {name[7:]!r}; choose from {sorted(by_family)}")
            chosen += by_family[name[7:]]
        else:
            chosen.append(name)
    return tuple(dict.fromkeys(chosen))


def style_config(style: str, domain: str, passphrase: str) -> FamilyConfig:
    """A modelled style's channel to `domain`."""
    if style not in STYLES:
        raise UserError(f"unknown style {style!r}; choose from {sorted(STYLES)}")
    return replace(FamilyConfig(STYLES[style]["family"], style, domain, passphrase),
                   **{k: v for k, v in STYLES[style].items() if k != "family"})  # fmt: skip


# ---------------------------------------------------------------------------
# dispatch


def group(queries: list[Query]) -> tuple[Messages, list[list[float]]]:
    """Queries with their gaps -> messages (bursts: a new one after a pause of a second or
    more, or every 64 queries) and each query's offset from the first."""
    messages: Messages = []
    times: list[list[float]] = []
    now = 0.0
    for number, (name, qtype, gap) in enumerate(queries):
        now += gap if number else 0.0
        if not messages or gap >= 1.0 or len(messages[-1]) >= 64:
            messages.append([])
            times.append([])
        messages[-1].append((name, qtype))
        times[-1].append(now)
    return messages, times


def plan(data: bytes, filename: str, cfg: DetConfig | FamilyConfig,
         rng: random.Random) -> tuple[str, Messages, list[list[float]]]:  # fmt: skip
    """(job id, messages, send offsets) of one file in any family (DET: as det.py draws it)."""
    if isinstance(cfg, DetConfig):
        job_id, messages = plan_queries(data, filename, cfg, rng)
        return job_id, messages, schedule(messages, cfg, rng)
    job_id, queries = FAMILIES[cfg.family].plan(data, filename, cfg, rng)
    return job_id, *group(queries)


def responder(cfg: DetConfig | FamilyConfig) -> Responder:
    """The attacker server's answer to each query datagram of one exfiltration, in order."""
    if isinstance(cfg, DetConfig):
        return lambda query: det_answer(query, cfg)
    return FAMILIES[cfg.family].responder(cfg)


def receive(names: Iterable[str | bytes], cfg: FamilyConfig) -> bytes:
    """The file a modelled family's query names carry (DET's receiver is det_reassembly)."""
    return FAMILIES[cfg.family].receive(names, cfg)


def name_domains(cfg: DetConfig | FamilyConfig, messages: Messages) -> list[str] | None:
    """The domains that cover every name when no one suffix does (dga, dnscat2's tag): each
    name itself, in order, once; None where cfg.domain covers them all."""
    if isinstance(cfg, DetConfig) or not FAMILIES[cfg.family].own_names(cfg):
        return None
    return list(dict.fromkeys(name.lower() for message in messages for name, _ in message))


_CASE_BLIND_ENCODINGS = {"hex", "base32", "base32lower", "base36", "base26"}


def case_blind(cfg: DetConfig | FamilyConfig) -> bool:
    """Whether the channel survives a DNS 0x20 resolver: its server reads names case-blind.

    A resolver that randomises letter case passes such a tunnel's names on mixed-case (the
    sensor behind it sees them so); base64 and 8-bit channels would break, and real tools fall
    back to a case-blind encoding there, so those keep their case.
    """
    if isinstance(cfg, DetConfig):
        from data_generating_codes.det_styles import ENCODINGS

        return ENCODINGS[cfg.encoding].case_insensitive
    if cfg.family in ("dnscat2", "beacon", "dga"):
        return True  # hex or lower-case letters and digits
    return getattr(cfg, "encoding", "") in _CASE_BLIND_ENCODINGS
