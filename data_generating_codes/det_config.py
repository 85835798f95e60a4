"""A DET channel's settings: the JSON config both ends share, and a `--style` preset applied on it.

The client and the server read the same file (DET's design): the server needs the domain, the
passphrase and the layout to know where a message ends and how to decode it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from data_generating_codes.det_styles import ENCODINGS, LAYOUTS, RESPONSES, STYLES, piece_capacity
from exfil.cli import UserError
from exfil.dnsmsg import qtype_number


def _known_qtype(name: str) -> bool:
    try:
        return 0 < qtype_number(name) < 65536
    except ValueError:
        return False


@dataclass
class DetConfig:
    """One DET config file (see config-sample.json); also the server's view of the channel."""

    domain: str
    passphrase: str
    target: str = "127.0.0.1"
    port: int = 53
    min_bytes: int = 300  # chunk size range, bytes of ciphertext per message
    max_bytes: int = 400
    min_sleep: float = 1.0  # seconds between messages
    max_sleep: float = 5.0
    query_gap: float = 0.01  # seconds between the queries of one message
    compression: bool = True
    layout: str = "single-label"
    encoding: str = "hex"
    qtypes: list[str] = field(default_factory=lambda: ["A"])
    response: str = "nxdomain"
    answer_ip: str = "192.0.2.1"
    output_dir: str = "received"
    max_jobs: int = 1024  # server: open jobs before the least recently used is evicted
    job_timeout: float = 300.0  # server: seconds without a query before a job is abandoned
    max_job_bytes: int = 16 << 20  # server: bytes one job may hold (and its file's size)
    max_total_bytes: int = 256 << 20  # server: bytes all open jobs may hold together
    reply_timeout: float = 1.0  # client: seconds to wait for each answer
    retries: int = 2  # client: resends of an unanswered query
    give_up: int = 10  # client: consecutive unanswered queries before abandoning a file
    style: str = "det"

    def __post_init__(self) -> None:
        self.domain = self.domain.strip(".").lower()
        self.qtypes = [q.upper() for q in self.qtypes]
        self.compression = bool(self.compression)  # DET writes 0 / 1
        problems = []
        labels = self.domain.split(".")
        if not self.domain or not all(
            0 < len(x) <= 63 and set(x) <= set(string.ascii_lowercase + string.digits + "-")
            for x in labels
        ):
            problems.append(f"domain {self.domain!r} is not a host name")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {sorted(LAYOUTS)}")
        elif piece_capacity(LAYOUTS[self.layout], self.domain) < 1:
            problems.append(f"domain {self.domain!r} too long for layout {self.layout}")
        if self.encoding not in ENCODINGS:
            problems.append(f"encoding must be one of {sorted(ENCODINGS)}")
        if self.response not in RESPONSES:
            problems.append(f"response must be one of {list(RESPONSES)}")
        if not self.qtypes or not all(map(_known_qtype, self.qtypes)):
            problems.append(f"qtypes {self.qtypes} must be DNS type mnemonics")
        if not 1 <= self.min_bytes <= self.max_bytes:
            problems.append("need 1 <= min_bytes <= max_bytes")
        if not 0 <= self.min_sleep <= self.max_sleep or self.query_gap < 0:
            problems.append("need 0 <= min_sleep <= max_sleep and query_gap >= 0")
        if not 0 <= self.port <= 65535:
            problems.append("port must be 0-65535")
        limits = (self.max_jobs, self.max_job_bytes, self.max_total_bytes, self.give_up)
        if min(limits) < 1 or self.job_timeout <= 0:
            problems.append("max_jobs, max_*_bytes, give_up and job_timeout must be positive")
        if self.job_timeout <= max(self.max_sleep, self.query_gap):
            problems.append("job_timeout must exceed max_sleep and query_gap, or the server "
                            "abandons jobs that are still sending")  # fmt: skip
        try:
            ipaddress.IPv4Address(self.answer_ip)
        except ValueError:
            problems.append(f"answer_ip {self.answer_ip!r} is not an IPv4 address")
        try:
            ipaddress.ip_address(self.target)
        except ValueError:
            problems.append(f"target {self.target!r} is not an IP address")
        if not self.passphrase:
            problems.append("passphrase is empty")
        if problems:
            raise UserError("bad DET config: " + "; ".join(problems))


_DET_KEYS = {  # DET's own config names -> ours, so DET's config files load too
    "AES_KEY": "passphrase",
    "min_bytes_read": "min_bytes",
    "max_bytes_read": "max_bytes",
    "min_time_sleep": "min_sleep",
    "max_time_sleep": "max_sleep",
    "key": "domain",
}


def load_config(path: str | Path) -> DetConfig:
    """Read a DET-like JSON config; DET's nested `plugins.dns` shape is accepted too."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read DET config {path}: {error}") from None
    if not isinstance(raw, dict):
        raise UserError(f"DET config {path} is not a JSON object")
    raw = dict(raw)
    plugins = raw.pop("plugins", {})
    if isinstance(plugins, dict) and isinstance(plugins.get("dns"), dict):
        raw.update(plugins["dns"])
    values = {_DET_KEYS.get(key, key): value for key, value in raw.items()}
    known = {f.name for f in dataclasses.fields(DetConfig)}
    if unknown := sorted(set(values) - known):
        raise UserError(f"DET config {path}: unknown keys {unknown}")
    if "qtypes" in values and isinstance(values["qtypes"], str):
        values["qtypes"] = [values["qtypes"]]
    try:
        return DetConfig(**values)
    except (TypeError, AttributeError) as error:  # wrong JSON types
        raise UserError(f"DET config {path}: {error}") from None


def style_config(style: str, base: DetConfig) -> DetConfig:
    """`base` with a preset's overrides (rates included); domain, passphrase, address stay."""
    if style not in STYLES:
        raise UserError(f"unknown style {style!r}; choose from {sorted(STYLES)}")
    return dataclasses.replace(base, **STYLES[style], style=style)
