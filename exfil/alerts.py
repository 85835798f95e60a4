"""Group malicious packets into per-domain alerts: what a SOC analyst acts on.

A per-packet score answers "is this query odd?"; the analyst's question is "is data leaving, to
where, from whom, how much?". Alerts group flagged packets by registered domain (public-suffix
aware, from the list shipped with the `publicsuffixlist` package: no network at run time) and
keep running sums only, so they work on a stream: memory grows with the number of flagged
domains, not packets, and a rolling window forgets domains not seen for a while (live mode).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np

from exfil.allowlist import Allowlist
from exfil.domains import registered_domain_of
from exfil.features import extras
from exfil.numtext import format_address
from exfil.packets import format_qname, strings

_UPPER = np.zeros(256, bool)
_UPPER[ord("A") : ord("Z") + 1] = True
MAX_TRACKED_NAMES = 50_000  # unique names remembered per domain; beyond it the count is a floor
MAX_TRACKED_CLIENTS = 256
MAX_MINUTES = 10_080  # minutes of timeline kept per domain (a week)
SCORE_BINS = 50  # the score histogram of every packet, for the report
MAX_CLIENT_NAMES = 10_000  # unique names remembered per client of a domain (then a floor)
SIGNAL_SAMPLE = 100  # flagged packets per domain whose name signals are averaged
MAX_CANDIDATES = 20_000  # domains with flagged packets but no alert kept at once (then halved)
MAX_DOMAIN_TOTALS = 100_000  # domains whose packets are counted; beyond it, unflagged ones go
EXAMPLES = 3
MANY_NAMES = 100  # this many distinct flagged names alert a domain whatever its flagged share
NEAR_MISSES = 10  # strongest not-alerted domains listed

_ENCODINGS = (  # (characters an encoding may use, bits each character carries), smallest first
    (frozenset("0123456789abcdef"), 4.0),
    (frozenset("abcdefghijklmnopqrstuvwxyz234567"), 5.0),
    (frozenset("abcdefghijklmnopqrstuvwxyz0123456789"), math.log2(36)),
    (frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=-_"), 6.0),
)


def _sizes(batch) -> np.ndarray:  # noqa: ANN001
    """DNS message bytes of each packet (name bytes where a batch has no messages: a log)."""
    sizes = getattr(batch, "msg_len", None)
    return np.asarray(batch.qlen if sizes is None else sizes, np.float64)


def iso_utc(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds ("2026-12-02T19:00:47.123Z"): what a
    SIEM parses without being told the time zone. None where there is no time (a list of
    names, a pcapng simple packet block)."""
    if epoch is None or not math.isfinite(float(epoch)):
        return None
    moment = datetime.fromtimestamp(float(epoch), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def name_digest(name: str) -> int:
    """A stable 64-bit digest of a name (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _alphabet_bits(alphabet: set[str]) -> float:
    """Bits per name character, from the smallest common encoding that covers what was seen.

    Case-folded first unless both cases appear (DNS is case-insensitive; base64 is not).
    """
    mixed_case = any(c.isupper() for c in alphabet) and any(c.islower() for c in alphabet)
    seen = set(alphabet) if mixed_case else {c.lower() for c in alphabet}
    for characters, bits in _ENCODINGS:
        if seen <= characters:
            return bits
    return 8.0


SIGNALS = ("name_len", "labels", "longest_label", "digit_ratio", "upper_ratio", "entropy")


def name_signals(qname: np.ndarray, qlen: np.ndarray) -> np.ndarray:
    """float32 (n, len(SIGNALS)): the human-readable signals an analyst checks first.

    Computed by the same vectorised code as ng.py's optional extra features.
    """
    if not len(qlen):
        return np.zeros((0, len(SIGNALS)), np.float32)
    names = SimpleNamespace(qname=qname, qlen=qlen, qtype=np.zeros(len(qlen), np.uint16))
    return extras(names, SIGNALS)


def _bump(table: dict, key: object, counts: tuple[int, ...], cap: int) -> bool:
    """Add `counts` to table[key] element-wise; a new key only while the table holds fewer
    than `cap`. Whether the key is (now) in the table."""
    row = table.get(key)
    if row is None:
        if len(table) >= cap:
            return False
        table[key] = list(counts)
        return True
    for i, count in enumerate(counts):
        row[i] += count
    return True


@dataclass
class DomainAlert:
    """Running sums for one registered domain."""

    domain: str
    first_seen: float
    last_seen: float
    flagged: int = 0  # flagged packets: queries and responses
    responses: int = 0  # of them, responses
    name_bytes: int = 0
    data_chars: int = 0
    score_sum: float = 0.0
    names: set[int] = field(default_factory=set)  # 64-bit digests: a third of the memory of str
    names_overflow: bool = False
    per_client: dict[str, list[int]] = field(default_factory=dict)  # [queries, responses, bytes]
    client_names: dict[str, set[int]] = field(default_factory=dict)  # their names' digests
    captures: set[str] = field(default_factory=set)
    minutes: dict[int, list[int]] = field(default_factory=dict)  # minute -> [packets, bytes]
    examples: list[str] = field(default_factory=list)
    alphabet: set[str] = field(default_factory=set)
    signal_sums: np.ndarray = field(default_factory=lambda: np.zeros(len(SIGNALS)))
    signal_count: int = 0
    unigram_sum: np.ndarray | None = None
    raised: bool = False
    first_alert: dict | None = None  # when the rule first held: time, packet, what had passed

    def add(
        self,
        names: list[str],
        clients: list[str],
        times: np.ndarray,
        scores: np.ndarray,
        responses: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
    ) -> None:
        """Fold in this domain's flagged packets of one batch (parallel lists and arrays)."""
        self.flagged += len(names)
        responses = np.zeros(len(names), bool) if responses is None else responses
        sizes = np.zeros(len(names)) if sizes is None else sizes
        self.responses += int(responses.sum())
        self._add_clients(names, clients, responses.tolist(), sizes.tolist())
        if len(times) and np.isfinite(times).all():
            minute = (times // 60).astype(np.int64)
            keys, inverse = np.unique(minute, return_inverse=True)
            packets = np.bincount(inverse, minlength=len(keys))
            octets = np.bincount(inverse, weights=sizes, minlength=len(keys))
            for key, count, size in zip(keys.tolist(), packets.tolist(), octets.tolist(),
                                        strict=True):  # fmt: skip
                _bump(self.minutes, key, (count, int(size)), MAX_MINUTES)
        self.first_seen = min(self.first_seen, float(times.min()))
        self.last_seen = max(self.last_seen, float(times.max()))
        self.score_sum += float(scores.sum(dtype=np.float64))
        digests = {name_digest(name.lower()): name for name in names}  # DNS 0x20: one name
        fresh = [d for d in digests if d not in self.names]
        new = [digests[d] for d in fresh]
        room = max(MAX_TRACKED_NAMES - len(self.names), 0)
        self.names.update(fresh[:room])
        self.names_overflow |= len(new) > room
        cut = len(self.domain) + 1
        payloads = [name[:-cut].replace(".", "") for name in new if len(name) > cut]
        self.name_bytes += sum(map(len, new))
        self.data_chars += sum(map(len, payloads))
        if len(self.alphabet) < 256:
            self.alphabet.update("".join(payloads))
        self.examples += new[: max(EXAMPLES - len(self.examples), 0)]

    def _add_clients(self, names: list, clients: list, responses: list, sizes: list) -> None:
        for name, client, response, size in zip(names, clients, responses, sizes, strict=True):
            counts = (0, 1, int(size)) if response else (1, 0, int(size))
            if _bump(self.per_client, client, counts, MAX_TRACKED_CLIENTS):
                names_of = self.client_names.setdefault(client, set())
                if len(names_of) < MAX_CLIENT_NAMES:
                    names_of.add(name_digest(name.lower()))

    def merge(self, other: DomainAlert) -> None:
        """Fold in the same domain's sums from another capture (parallel detection)."""
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        firsts = [f for f in (self.first_alert, other.first_alert) if f is not None]
        self.first_alert = min(firsts, key=lambda f: f["time"]) if firsts else None
        self.flagged += other.flagged
        self.responses += other.responses
        self.captures |= other.captures
        for key, counts in other.minutes.items():
            _bump(self.minutes, key, counts, MAX_MINUTES)
        for client, counts in other.per_client.items():
            if _bump(self.per_client, client, tuple(counts), MAX_TRACKED_CLIENTS):
                mine, theirs = (
                    self.client_names.setdefault(client, set()),
                    other.client_names[client],
                )
                mine.update(list(theirs - mine)[: max(MAX_CLIENT_NAMES - len(mine), 0)])
        self.score_sum += other.score_sum
        new_names = other.names - self.names
        room = MAX_TRACKED_NAMES - len(self.names)
        self.names.update(list(new_names)[: max(room, 0)])
        self.names_overflow |= other.names_overflow or len(new_names) > room
        self.name_bytes += other.name_bytes
        self.data_chars += other.data_chars
        self.alphabet |= other.alphabet
        self.signal_sums += other.signal_sums
        self.signal_count += other.signal_count
        self.examples = (self.examples + [e for e in other.examples if e not in self.examples])[
            :EXAMPLES
        ]
        if other.unigram_sum is not None:
            self.unigram_sum = (
                other.unigram_sum.copy()
                if self.unigram_sum is None
                else self.unigram_sum + other.unigram_sum
            )

    def summary(self, benign_unigram_mean: np.ndarray | None, total: int | None = None) -> dict:
        unique = len(self.names)
        means = self.signal_sums / max(self.signal_count, 1)
        signals = {key: round(float(value), 3) for key, value in zip(SIGNALS, means, strict=True)}
        estimated = int(self.data_chars * _alphabet_bits(self.alphabet) / 8)
        why = [
            f"mean name length {signals['name_len']:.0f}",
            f"{signals['labels']:.1f} labels, longest {signals['longest_label']:.0f}",
            f"entropy {signals['entropy']:.2f} bits/char",
            f"digits {signals['digit_ratio']:.0%}, uppercase {signals['upper_ratio']:.0%}",
            f"{unique}{'+' if self.names_overflow else ''} unique names of {self.flagged} "
            "flagged packets",
        ]
        if self.unigram_sum is not None and benign_unigram_mean is not None:
            excess = self.unigram_sum / max(self.flagged, 1) - benign_unigram_mean
            top = np.argsort(excess)[::-1][:5]
            shown = ", ".join(repr(chr(b)) if 32 < b < 127 else f"0x{b:02x}" for b in top)
            why.append(f"bytes most over-represented vs benign traffic: {shown}")
        return {
            "domain": self.domain,
            "first_seen": iso_utc(self.first_seen),
            "last_seen": iso_utc(self.last_seen),
            "first_seen_epoch": self.first_seen,
            "last_seen_epoch": self.last_seen,
            "flagged_packets": self.flagged,
            "queries": self.flagged - self.responses,
            "responses": self.responses,
            "unique_names": unique,
            "unique_names_is_floor": self.names_overflow,
            "name_bytes": self.name_bytes,
            "estimated_bytes_exfiltrated": estimated,
            "clients": sorted(self.per_client),
            "per_client": [
                {
                    "client": client,
                    "queries": q,
                    "responses": r,
                    "unique_names": len(self.client_names[client]),
                    "bytes": size,
                }  # fmt: skip
                for client, (q, r, size) in sorted(
                    self.per_client.items(), key=lambda item: (-item[1][0] - item[1][1], item[0])
                )
            ],
            "captures": sorted(self.captures),
            "timeline": [
                [iso_utc(60.0 * minute), count, size]  # flagged packets, bytes a minute
                for minute, (count, size) in sorted(self.minutes.items())
            ],  # fmt: skip
            "domain_packets": total,
            "share_flagged": round(self.flagged / total, 4) if total else None,
            "mean_score": round(self.score_sum / max(self.flagged, 1), 4),
            "examples": self.examples,
            "signals": signals,
            "why": why,
            "first_alert": self.first_alert,
        }


class AlertBook:
    """Per-domain alerts, updated batch by batch; optional rolling window for live traffic.

    A registered domain becomes an alert once `min_names` distinct flagged names were seen under
    it AND its flagged packets are at least `min_share` of all its packets, or once MANY_NAMES
    distinct names under it were flagged whatever the share (a tunnel's own unflagged polls
    must not dilute it out of view). Exfiltration needs
    many distinct names (each carries new data), while a benign random-looking name is usually
    looked up a few times over (A, AAAA, retries); and one odd name under a busy CDN domain is
    noise, a domain whose traffic is mostly flagged is a channel. `update` returns the domains that
    became alerts in this batch, so live mode can print them at once. Flagged packets under an
    `allowlist` entry are tallied there instead (reported as suppressed), never alerted.
    """

    def __init__(
        self,
        min_names: int = 5,
        min_share: float = 0.2,
        window_seconds: float | None = None,
        allowlist: Allowlist | None = None,
    ) -> None:
        self.allowlist = allowlist or Allowlist()
        self.packets = self.upper_case = 0  # names with upper-case letters (DNS 0x20?)
        self.score_histogram = np.zeros(SCORE_BINS, np.int64)  # every packet's score
        self.min_names = min_names
        self.min_share = min_share
        self.window_seconds = window_seconds
        self.domains: OrderedDict[str, DomainAlert] = OrderedDict()
        self.totals: dict[str, int] = {}
        self.bytes: dict[str, int] = {}  # DNS message bytes of all the domain's packets
        self._benign_sum: np.ndarray | None = None
        self._benign_count = 0

    def _add_signals(self, rows_of: dict[str, np.ndarray], name_bytes, name_len) -> None:  # noqa: ANN001
        """Name signals of up to SIGNAL_SAMPLE flagged packets a domain, in one vectorised call."""
        chosen: list[int] = []
        takers: list[tuple[DomainAlert, int, int]] = []
        for domain, rows in rows_of.items():
            alert = self.domains[domain]
            take = rows[: max(SIGNAL_SAMPLE - alert.signal_count, 0)].tolist()
            takers.append((alert, len(chosen), len(take)))
            chosen += take
        if not chosen:
            return
        signals = name_signals(name_bytes[chosen], name_len[chosen]).astype(np.float64)
        for alert, start, count in takers:
            alert.signal_sums += signals[start : start + count].sum(axis=0)
            alert.signal_count += count

    def _count_domains(self, name_bytes: np.ndarray, sizes: np.ndarray, domains=None) -> tuple:  # noqa: ANN001
        """Every packet (and its bytes) counted under its registered domain: the batch's
        distinct domains, each row's index into them, and domain -> (packets, bytes) of this
        batch. `domains` (distinct domains, row indices), where the caller has them already
        (the context state's), saves looking them up again."""
        if domains is None:
            n = len(sizes)
            width = max(name_bytes.shape[1], 1)  # the root name alone: one zero byte
            view = name_bytes if name_bytes.shape[1] else np.zeros((n, 1), np.uint8)
            view = np.ascontiguousarray(view).view(f"S{width}").ravel()
            unique, inverse = np.unique(view, return_inverse=True)
            found = [registered_domain_of(key) for key in unique.tolist()]  # case: folded there
            distinct = dict.fromkeys(found)
            index = {domain: i for i, domain in enumerate(distinct)}
            names = list(distinct)
            rows = np.array([index[d] for d in found], np.int64)[inverse.ravel()]
        else:
            names, rows = domains
        packets = np.bincount(rows, minlength=len(names)).tolist()
        octets = np.bincount(rows, weights=sizes, minlength=len(names)).tolist()
        totals, sums, here = self.totals, self.bytes, {}
        for domain, count, size in zip(names, packets, octets, strict=True):
            totals[domain] = totals.get(domain, 0) + count
            sums[domain] = sums.get(domain, 0) + int(size)
            before = here.get(domain, (0, 0))
            here[domain] = (before[0] + count, before[1] + int(size))
        return names, rows, here

    def _holds(self, names: int, flagged: int, total: int) -> bool:
        """The alert rule on a domain's distinct flagged names, flagged and total packets."""
        return names >= self.min_names and (
            flagged >= self.min_share * total or names >= MANY_NAMES
        )

    def _is_alert(self, alert: DomainAlert) -> bool:
        total = self.totals.get(alert.domain, alert.flagged)  # an overflowed name set is full:
        return self._holds(len(alert.names), alert.flagged, total)  # MAX_TRACKED > MANY_NAMES

    def _locate(self, rows: np.ndarray, before: tuple, flagged: dict, batch) -> dict:  # noqa: ANN001
        """The packet of this batch at which a domain became an alert, and what had passed;
        `rows`: the batch's rows under the domain, in order."""
        queries, names, total, size = before
        sizes = _sizes(batch)
        for i in rows.tolist():
            total, size = total + 1, size + int(sizes[i])
            if i in flagged:
                queries += 1
                names.add(name_digest(flagged[i].lower()))
            if self._holds(len(names), queries, total):
                when = float(batch.time[i])
                record = getattr(batch, "record", None)
                packet = int(record[i]) if record is not None else None
                return {"time": when, "time_utc": iso_utc(when), "packet": packet,
                        "domain_packets": total, "flagged_packets": queries,
                        "distinct_flagged_names": len(names), "domain_bytes": size}  # fmt: skip
        return {"time": float(batch.time[-1]), "time_utc": iso_utc(float(batch.time[-1])),
                "packet": None, "domain_packets": total,
                "flagged_packets": queries, "distinct_flagged_names": len(names),
                "domain_bytes": size}  # fmt: skip

    def update(  # noqa: ANN001 (batch: a DnsBatch or anything with its columns)
        self,
        batch,
        scores: np.ndarray,
        malicious: np.ndarray,
        unigrams: np.ndarray | None = None,
        capture: str | None = None,
        domains: tuple[list[str], np.ndarray] | None = None,
    ) -> list[str]:
        """Add one DnsBatch of scored packets; return domains newly alerted.

        `unigrams` (optional, qname 1 + ln(count) histograms) let an alert say which bytes its
        names use more than the benign traffic. `domains` (optional): the batch's registered
        domains as DomainContext.row_domains gives them. Text is made for flagged packets only,
        which keeps the cost per benign packet to one dictionary hit.
        """
        name_bytes, name_len, times = batch.qname, batch.qlen, batch.time
        flagged = np.flatnonzero(malicious)
        flagged_names = strings(format_qname(name_bytes[flagged], name_len[flagged]))
        if flagged_names and self.allowlist.entries:  # scored, tallied, never alerted
            kept = np.flatnonzero(~np.asarray(self.allowlist.keep_out(flagged_names), bool))
            flagged, flagged_names = flagged[kept], [flagged_names[k] for k in kept.tolist()]
        client = np.where(batch.response[flagged, None], batch.dst[flagged], batch.src[flagged])
        flagged_clients = strings(format_address(client))
        sizes = _sizes(batch)
        self.score_histogram += np.histogram(scores, SCORE_BINS, (0.0, 1.0))[0]
        domain_names, row_domain, here = self._count_domains(name_bytes, sizes, domains)
        self.packets += len(name_len)
        self.upper_case += int(_UPPER[name_bytes].any(axis=1).sum()) if name_bytes.size else 0
        totals = self.totals
        if unigrams is not None:
            benign_sum = unigrams.sum(axis=0).astype(np.float64)  # float32 within a batch
            benign_sum -= unigrams[flagged].sum(axis=0)
            if self._benign_sum is not None:
                benign_sum += self._benign_sum
            self._benign_sum = benign_sum
            self._benign_count += len(name_len) - len(flagged)
        picks: dict[str, list[int]] = {}  # domain -> positions in the flagged lists
        for k, d in enumerate(row_domain[flagged].tolist()):
            picks.setdefault(domain_names[d], []).append(k)
        rows_of: dict[str, np.ndarray] = {}  # domain -> its flagged rows of this batch
        before: dict[str, tuple] = {}  # not yet alerted: its sums before this batch
        for domain, ks in picks.items():
            rows = rows_of[domain] = flagged[ks]
            alert = self.domains.get(domain)
            if alert is None:
                start = float(times[rows[0]])
                alert = self.domains[domain] = DomainAlert(domain, start, start)
            names = [flagged_names[k] for k in ks]
            if not alert.raised:  # then fewer than MANY_NAMES names: a small copy
                packets, octets = here[domain]
                before[domain] = (alert.flagged, set(alert.names), totals[domain] - packets,
                                  self.bytes[domain] - octets)  # fmt: skip
            alert.add(names, [flagged_clients[k] for k in ks], times[rows], scores[rows],
                      batch.response[rows], sizes[rows])  # fmt: skip
            if capture is not None:
                alert.captures.add(capture)
        self._add_signals(rows_of, name_bytes, name_len)
        raised = []
        for domain, rows in rows_of.items():
            alert = self.domains[domain]
            self.domains.move_to_end(domain)
            if unigrams is not None:
                add = unigrams[rows].sum(axis=0).astype(np.float64)
                alert.unigram_sum = add if alert.unigram_sum is None else alert.unigram_sum + add
            if not alert.raised and self._is_alert(alert):
                alert.raised = True
                raised.append(domain)
                if domain in before:
                    names_of = {int(flagged[k]): flagged_names[k] for k in picks[domain]}
                    ids = [i for i, d in enumerate(domain_names) if d == domain]
                    rows = np.flatnonzero(np.isin(row_domain, ids))
                    alert.first_alert = self._locate(rows, before[domain], names_of, batch)
        if self.window_seconds is not None and len(times):
            self._forget_before(float(np.max(times)) - self.window_seconds)
        if len(self.domains) > MAX_CANDIDATES:
            self._evict_candidates()
        if len(totals) > MAX_DOMAIN_TOTALS:  # memory stays flat under millions of domains
            self.totals = {d: n for d, n in totals.items() if d in self.domains}
            self.bytes = {d: n for d, n in self.bytes.items() if d in self.domains}
        return raised

    def _evict_candidates(self) -> None:
        """Keep the raised alerts and the strongest half of the other candidates (most distinct
        flagged names, then most flagged packets): one stray false positive under each of
        millions of benign domains would otherwise hold a few KB apiece without bound. A
        dropped candidate that comes back starts again from zero."""
        waiting = [d for d, a in self.domains.items() if not a.raised]
        keep = MAX_CANDIDATES // 2
        if len(waiting) <= keep:
            return
        ranked = sorted(waiting, key=lambda d: (len(self.domains[d].names),
                                                self.domains[d].flagged), reverse=True)  # fmt: skip
        for domain in ranked[keep:]:
            del self.domains[domain]

    def merge(self, other: AlertBook) -> None:
        """Fold in another book (one per capture when captures are scored in parallel)."""
        self.allowlist.merge(other.allowlist)
        self.packets += other.packets
        self.upper_case += other.upper_case
        self.score_histogram += other.score_histogram
        for domain, alert in other.domains.items():
            if domain in self.domains:
                self.domains[domain].merge(alert)
            else:
                self.domains[domain] = alert
        if other._benign_sum is not None:
            if self._benign_sum is None:
                self._benign_sum = np.zeros_like(other._benign_sum)
            self._benign_sum = self._benign_sum + other._benign_sum
        self._benign_count += other._benign_count
        for domain, count in other.totals.items():
            self.totals[domain] = self.totals.get(domain, 0) + count
        for domain, size in other.bytes.items():
            self.bytes[domain] = self.bytes.get(domain, 0) + size

    def _forget_before(self, cutoff: float) -> None:
        while self.domains:
            oldest = next(iter(self.domains.values()))
            if oldest.last_seen >= cutoff:
                break
            self.domains.popitem(last=False)
            self.totals.pop(oldest.domain, None)

    def alerts(self) -> list[dict]:
        """Summaries of domains at or over the threshold, most queries first."""
        mean = self._benign_sum / self._benign_count if self._benign_count else None
        chosen = [a for a in self.domains.values() if self._is_alert(a)]
        chosen.sort(key=lambda alert: (-alert.flagged, alert.domain))
        return [alert.summary(mean, self.totals.get(alert.domain)) for alert in chosen]

    def near_misses(self) -> list[dict]:
        """Domains the rule did not alert that came close: at least half the distinct flagged
        names it needs (2 or more), strongest first, so "no alerts" is never silent about
        a strong candidate."""
        close = max(2, (self.min_names + 1) // 2)
        rows = []
        for alert in self.domains.values():
            names = len(alert.names)
            if self._is_alert(alert) or names < close:
                continue
            total = self.totals.get(alert.domain, alert.flagged)
            share = alert.flagged / max(total, 1)
            short = [f"{names} distinct flagged names < {self.min_names}"] if (
                names < self.min_names) else []  # fmt: skip
            if share < self.min_share and names < MANY_NAMES:
                short.append(f"flagged share {share:.1%} < {self.min_share:.0%} of its packets")
            rows.append({"domain": alert.domain, "distinct_flagged_names": names,
                         "flagged_packets": alert.flagged, "domain_packets": total,
                         "share_flagged": round(share, 4),
                         "mean_score": round(alert.score_sum / max(alert.flagged, 1), 4),
                         "examples": alert.examples, "why_not": "; ".join(short)})  # fmt: skip
        rows.sort(key=lambda r: (-r["distinct_flagged_names"], -r["share_flagged"], r["domain"]))
        return rows[:NEAR_MISSES]

    def summary(self, domain: str) -> dict:
        mean = self._benign_sum / self._benign_count if self._benign_count else None
        return self.domains[domain].summary(mean, self.totals.get(domain))
