"""What a capture session will exfiltrate: the session settings, and one plan per file sent.

script_datagen.py resolves its constants into a `SessionSettings` once; the offline builder and
datagen_live both plan from it with `plan_exfiltration`, so a seed draws the same files, styles,
domains and job ids in every mode. An `ExfilPlan` then carries one file through the session and
into the ground truth (datagen_truth).
"""

from __future__ import annotations

import fnmatch
import random
import zlib
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from data_generating_codes import benign, families
from data_generating_codes.det_codec import plan_queries, schedule
from data_generating_codes.det_config import DetConfig, style_config
from data_generating_codes.det_styles import STYLES
from data_generating_codes.families_wire import FamilyConfig
from exfil.cli import UserError

ROOT = Path(__file__).resolve().parents[1]
_TLDS = ("com", "net", "org", "io", "co", "info", "xyz", "cloud", "online", "site", "app")


@dataclass(frozen=True)
class SessionSettings:
    """script_datagen's constants after the flags, as the session builders need them."""

    packets: int  # DNS packets in the capture (offline: exact; live/netns: about)
    duration: float  # seconds of session time (stretched when exfiltration needs more)
    start_time: float  # epoch of the session start (offline)
    exfil_share: float  # target share of malicious packets
    styles: tuple[str, ...]  # style names, selectors already expanded (see expand_styles)
    files: tuple[str, ...]  # names or globs under exfil_dir
    exfil_dir: str  # folder of files to exfiltrate (relative: to the cwd, else the repo)
    passphrase: str  # DET AES passphrase
    hosts: int  # client hosts on the LAN (one of them is the attacker)
    shares: Mapping[str, float]  # benign class -> share of lookups (benign.HARD_SHARES keys)
    nanosecond: bool  # pcap/pcapng with nanosecond timestamps
    sleep_scale: float  # live/netns: factor on DET's sleeps and benign inter-arrival times
    live_timeout: float  # live/netns: give up after this many seconds
    mixed_case: float = 0.0  # share of benign sessions and case-blind exfiltrations in DNS 0x20
    wordy_many: float = 0.0  # share of wordy-long lookups in benign's many-label form

    def benign_model(
        self, rng: random.Random, cache: benign.AnswerCache | None = None
    ) -> benign.BenignModel:
        """A BenignModel drawing from `rng` with the session's shares, 0x20 and wordy form."""
        return benign.BenignModel(rng, self.shares, cache, mixed_case=self.mixed_case,
                                  wordy_many=self.wordy_many)  # fmt: skip

    @property
    def exfil_budget(self) -> int:
        """Packets (queries and answers) the exfiltrations may take."""
        return round(self.exfil_share * self.packets)


@dataclass(frozen=True)
class RngState:
    """A random.Random state in 2.5 kB (getstate's tuple of 625 ints takes 25 kB)."""

    version: int
    words: array
    gauss_next: float | None

    @classmethod
    def of(cls, rng: random.Random) -> RngState:
        version, words, gauss_next = rng.getstate()
        return cls(version, array("I", words), gauss_next)

    def generator(self) -> random.Random:
        """A new generator that draws what the saved one drew next."""
        rng = random.Random()
        rng.setstate((self.version, tuple(self.words), self.gauss_next))
        return rng


@dataclass
class ExfilPlan:
    """One file's exfiltration: what goes, in which style, to which domain, and when.

    The queries themselves are not kept (100k of them for a 2M-packet capture take 24 MB):
    `replay()` draws them again from the state the planner's generator had before drawing them.
    """

    path: Path
    data: bytes  # the file's contents, read once
    style: str  # a det_styles.STYLES or families.STYLES name (--tool: the tool's)
    cfg: DetConfig | FamilyConfig  # the channel: attacker domain and style (live: the server)
    job_id: str  # DET's job id (live: the one the client drew); else the session/beacon id
    queries: int  # queries the plan sends (each gets one answer)
    length: float  # seconds from the first query to the last
    draws: RngState  # the planner's generator just before it drew the queries and their times
    start: float = 0.0  # session seconds of the first query (place_in_time)
    received: bool | None = None  # live/netns: did det.py's server rebuild the file?
    extra: dict = field(default_factory=dict)  # --tool: tool, direction, md5_received, seconds;
    # offline dga / dnscat2-tag: domains (every name: no one suffix covers them) and domain

    @property
    def family(self) -> str:
        """The tunnel family (families.family_of): det, dnscat2, ..., or the real tool."""
        return families.family_of(self.style)

    def replay(self) -> tuple[list[list[tuple[str, str]]], list[list[float]]]:
        """(qname, qtype) of every query per message, and their send offsets from `start`."""
        rng = self.draws.generator()
        _, messages, times = families.plan(self.data, self.path.name, self.cfg, rng)
        return messages, times


# ---------------------------------------------------------------------------
# inputs


def expand_styles(names: Iterable[str]) -> tuple[str, ...]:
    """Names with the selectors expanded (families.expand: "all" is DET's presets but det-slow,
    which stretches a session to hours and comes only when named)."""
    return families.expand(names)


def exfil_files(settings: SessionSettings) -> list[Path]:
    """Files the patterns pick under exfil_dir (README excluded); a pattern matching none: error."""
    folder = Path(settings.exfil_dir)
    folder = folder if folder.is_absolute() or folder.exists() else ROOT / folder
    if not folder.is_dir():
        raise UserError(f"no such folder: {settings.exfil_dir}")
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    listed = [name for name in names if not name.upper().startswith("README")]
    chosen: list[str] = []
    for pattern in settings.files:
        matched = fnmatch.filter(listed, pattern) or fnmatch.filter(names, pattern)
        if not matched:
            raise UserError(f"no file matches {pattern!r} in {folder}")
        chosen += [name for name in matched if name not in chosen]
    return [folder / name for name in chosen]


def attacker_domain(rng: random.Random, taken: set[str]) -> str:
    """A plausible attacker domain, <word><word>.<tld> or <word>-<word>.<tld>, new to this run."""
    while True:
        first, second = rng.choice(benign.WORDS), rng.choice(benign.WORDS)
        name = f"{first}{rng.choice(('', '-'))}{second}.{rng.choice(_TLDS)}"
        if name not in taken and name not in benign.DOMAIN_SET and len(name) <= 24:
            taken.add(name)
            return name


# ---------------------------------------------------------------------------
# the plans


def _plan_one(rng: random.Random, style: str, base: DetConfig, taken: set[str], path: Path,
              data: bytes) -> tuple:  # fmt: skip
    """(cfg, draws, job id, messages, send offsets or None) of one file in one style; DET draws
    its offsets later, only for a plan that fits (the order its seeds have always drawn in)."""
    domain = attacker_domain(rng, taken)
    if style in STYLES:
        cfg = style_config(style, replace(base, domain=domain))
        draws = RngState.of(rng)
        return cfg, draws, *plan_queries(data, path.name, cfg, rng), None
    cfg = families.style_config(style, domain, base.passphrase)
    draws = RngState.of(rng)
    return cfg, draws, *families.plan(data, path.name, cfg, rng)


def plan_exfiltration(rng: random.Random, settings: SessionSettings) -> list[ExfilPlan]:
    """Choose (file, style, domain) triples whose packets fit the budget, and plan their queries.

    Each file is tried with the styles in a seed-drawn order; the first plan that fits is kept.
    """
    budget = settings.exfil_budget
    base = DetConfig(domain="example.net", passphrase=settings.passphrase)
    order = exfil_files(settings)
    rng.shuffle(order)
    styles, taken, plans, used = list(settings.styles), set(), [], 0
    rng.shuffle(styles)
    contents = {path: path.read_bytes() for path in order}
    packed = {path: len(zlib.compress(data)) + 32 for path, data in contents.items()}
    per_byte: dict[str, float] = {}  # queries per compressed byte, learned per style
    added = True
    while added and used < 0.9 * budget:  # files are sent again (new job, new domain) if needed
        added = False
        for path in order:
            data = contents[path]
            for offset in range(len(styles)):
                style = styles[(len(plans) + offset) % len(styles)]
                if 2 * per_byte.get(style, 0) * packed[path] > 1.2 * (budget - used):
                    continue  # planning is slow (AES, base-N): skip what cannot fit
                cfg, draws, job_id, messages, times = _plan_one(rng, style, base, taken, path,
                                                                data)  # fmt: skip
                queries = sum(len(m) for m in messages)
                per_byte[style] = min(per_byte.get(style, 1e9), queries / packed[path])
                if used + 2 * queries <= budget:
                    length = (times or schedule(messages, cfg, rng))[-1][-1]
                    plans.append(ExfilPlan(path, data, style, cfg, job_id, queries, length, draws))
                    used, added = used + 2 * queries, True
                    break
            if used >= 0.9 * budget:
                break
    if not plans:
        files = list(settings.files)
        raise UserError(f"no file in {files} fits {budget} exfiltration packets: raise --packets")
    return plans


def place_in_time(rng: random.Random, plans: list[ExfilPlan], duration: float) -> float:
    """Give each exfiltration a start time, one after the other; return the session length."""
    lengths = [plan.length + 1.0 for plan in plans]
    total = max(duration, sum(lengths) / 0.6)
    cuts = sorted(rng.uniform(0, total - sum(lengths)) for _ in plans)
    elapsed = 0.0
    for plan, cut, length in zip(plans, cuts, lengths, strict=True):
        plan.start = round(cut + elapsed, 6)  # whole µs: its logs.csv row equals its first packet
        elapsed += length
    return total
