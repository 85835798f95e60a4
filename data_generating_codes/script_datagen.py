"""A capture session: benign DNS lookups plus DET (or modelled tunnel) exfiltrations, exact truth.

    python data_generating_codes/script_datagen.py --mode offline --packets 20000 --seed 1 \
        --out work/train.pcap
    python data_generating_codes/script_datagen.py --out work/test.pcapng --seed 2 \
        --files memo.txt 'sales.*'
    sudo .venv/bin/python data_generating_codes/script_datagen.py --mode live --packets 3000
    sudo .venv/bin/python data_generating_codes/script_datagen.py --mode netns --out work/ns.pcap
    sudo .venv/bin/python data_generating_codes/script_datagen.py --mode netns --tool iodine \
        --out work/iodine.pcap --files 'photo-*' chart.png

Writes OUT (pcap, or pcapng by suffix), OUT.logs.csv (the attacker script's `label,name,time`
rows) and OUT.truth.json (exfil domains, job ids, record ranges, classes; see the spec).
`offline` builds the packets directly with synthetic timestamps (no sockets, >100k packets/s,
same seed -> same bytes); `live` runs det.py's server and client and a benign resolver over real
UDP on loopback and captures them; `netns` does the same between two network namespaces, or with
--tool runs the real iodine / dns2tcp through dnsmasq there (datagen_tools.py): FILES go up as
one tar, random bytes come down, and the truth says whether each arrived intact.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Literal

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
# styles: DET's presets (det_styles.STYLES) and, offline only, the modelled families'
# (families.STYLES: dnscat2-*, beacon-*, dga-*, dnsexfiltrator-*); family:det = all
STYLES = ["all"]  # exfil styles; all = DET's but det-slow, family:NAME = a family's, all-families
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
# the next five are off by default (captures stay byte-identical); the Makefile's BENIGN: on
SHARE_AD_INTERNAL = 0.0  # share (try 0.015): Active Directory / internal names
SHARE_DNS_SD = 0.0  # share (try 0.01): unicast DNS-SD / Bonjour lookups
SHARE_TELEMETRY = 0.0  # share (try 0.02): vendor telemetry hosts with org or project ids
SHARE_LONG_TAIL = 0.0  # share (try 0.03): sites outside the popular list (word-joined, codes)
MIXED_CASE = 0.0  # (try 0.2) share of benign sessions and case-blind tunnel queries in DNS 0x20
WORDY_MANY = 0.0  # (try 0.5) share of wordy-long lookups in the many-label form
# live / netns
SLEEP_SCALE = 0.001  # live/netns: factor on DET's sleeps and benign inter-arrival times
LIVE_TIMEOUT = 120.0  # live/netns: give up after this many seconds
# real tunnel tools (netns only; needs root and apt-get install iodine dns2tcp dnsmasq)
TOOL: Literal["", "iodine", "dns2tcp"] = ""  # "": DET; else that real tunnel through dnsmasq
# ---------------------------------------------------------------------------

from data_generating_codes import benign, families  # noqa: E402
from data_generating_codes.datagen_offline import offline_session  # noqa: E402
from data_generating_codes.datagen_plan import SessionSettings, expand_styles  # noqa: E402
from data_generating_codes.datagen_truth import write_sidecars  # noqa: E402
from data_generating_codes.det_styles import STYLES as STYLE_NAMES  # noqa: E402
from exfil.cli import UserError, configure, format_config, run  # noqa: E402

_EXFIL_SHARE_BOUNDS = (0.05, 0.20)


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
        sleep_scale=SLEEP_SCALE, live_timeout=LIVE_TIMEOUT, mixed_case=MIXED_CASE,
        wordy_many=WORDY_MANY,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# main


def main() -> int:
    styles = [*families.selectors(), *STYLE_NAMES, *families.STYLES]
    config = configure(globals(), choices={"MODE": ["offline", "live", "netns"], "STYLES": styles})
    print(format_config(config), flush=True)
    if not 10 <= PACKETS <= 50_000_000:
        raise UserError(f"--packets {PACKETS}: need 10 to 50,000,000")
    if not _EXFIL_SHARE_BOUNDS[0] <= EXFIL_SHARE <= _EXFIL_SHARE_BOUNDS[1]:
        low, high = _EXFIL_SHARE_BOUNDS
        raise UserError(f"--exfil-share {EXFIL_SHARE}: need {low} to {high}")
    if not (0 <= MIXED_CASE <= 1 and 0 <= WORDY_MANY <= 1):
        raise UserError(f"--mixed-case {MIXED_CASE}, --wordy-many {WORDY_MANY}: need 0 to 1")
    settings = session_settings()
    modelled = [style for style in settings.styles if style in families.STYLES]
    if modelled and (MODE != "offline" or TOOL):
        raise UserError(f"--style {modelled[0]}: the modelled families are offline only "
                        "(live/netns run det.py's server)")  # fmt: skip
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
    if TOOL and MODE != "netns":
        raise UserError(f"--tool {TOOL}: needs --mode netns")
    if TOOL:
        from data_generating_codes import datagen_tools

        session = datagen_tools.tool_session(rng, out, TOOL, settings)
    elif MODE == "offline":
        session = offline_session(rng, settings, out, SEED)
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
