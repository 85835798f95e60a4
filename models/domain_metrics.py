"""Per-domain evaluation: which registered domains a model's flags would alert, and how soon.

A user acts on domains, not packets. For each model the flagged packets go through the alert
rule detect.py applies (a domain is alerted once `min_names` distinct flagged names were seen
under it and its flagged packets are at least `min_share` of its packets so far, or once
exfil.alerts.MANY_NAMES distinct names were flagged), packet by
packet in capture order, so "queries to first alert" is what a live deployment would see.
Two rules practitioners run are the baselines, on the same packets:
- `rule_subdomains` (RITA): a registered domain with >= 100 distinct names under it;
- `rule_hourly` (Zeek's anomalous-dns package): > 8 distinct names under one registered domain
  within an hour.
Their per-packet flags are causal too: a packet is flagged once its domain has been alerted.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from exfil.alerts import MANY_NAMES
from exfil.domains import registered_domain

RITA_NAMES = 100  # distinct subdomains per registered domain (RITA's default)
HOURLY_NAMES = 8  # distinct names within an hour, more than this (anomalous-dns' default)
HOUR = 3600.0


def packet_domains(qname_bytes: np.ndarray, qname_len: np.ndarray) -> tuple[np.ndarray, ...]:
    """(domain id per packet, domain names, name id per packet): names decoded once each."""
    width = qname_bytes.shape[1]
    keys = np.ascontiguousarray(qname_bytes).view(f"S{width}").ravel() if width else None
    names, name_id = np.unique(keys, return_inverse=True)
    domain_of = [registered_domain(n.decode("latin-1")) for n in names.tolist()]
    domains, domain_of_name = np.unique(np.array(domain_of, dtype=object), return_inverse=True)
    return domain_of_name[name_id.ravel()], domains, name_id.ravel()


def first_alerts(domain: np.ndarray, name: np.ndarray, flagged: np.ndarray,
                 min_names: int, min_share: float) -> np.ndarray:  # fmt: skip
    """Per domain id: the packet index at which the alert rule first holds, -1 if never."""
    n = len(domain)
    order = np.lexsort((np.arange(n), domain))  # by domain, capture order within
    d, f = domain[order], flagged[order]
    start = np.r_[0, np.flatnonzero(d[1:] != d[:-1]) + 1]
    group = np.repeat(np.arange(len(start)), np.diff(np.r_[start, n]))
    seen = np.zeros(n, bool)  # first flagged occurrence of each (domain, name)
    pair = d.astype(np.int64) * (int(name.max()) + 1 if n else 1) + name[order]
    flagged_pairs = np.flatnonzero(f)
    _, first = np.unique(pair[flagged_pairs], return_index=True)
    seen[flagged_pairs[first]] = True
    totals = np.cumsum(np.ones(n)) - start[group]
    hits = np.cumsum(f) - np.r_[0, np.cumsum(f)][start][group]
    distinct = np.cumsum(seen) - np.r_[0, np.cumsum(seen)][start][group]
    shared = (hits >= min_share * totals) | (distinct >= MANY_NAMES)  # as AlertBook._holds
    holds = (distinct >= min_names) & shared & f
    out = np.full(int(domain.max()) + 1 if n else 0, -1, np.int64)
    where = np.flatnonzero(holds)
    if len(where):
        groups, at = np.unique(group[where], return_index=True)
        out[d[start[groups]]] = order[where[at]]
    return out


def hourly_alerts(domain: np.ndarray, name: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per domain id: the packet index at which > HOURLY_NAMES distinct names fell in an hour."""
    out = np.full(int(domain.max()) + 1 if len(domain) else 0, -1, np.int64)
    windows: dict[int, tuple[deque, dict]] = {}
    for i in np.argsort(times, kind="stable").tolist():
        key = int(domain[i])
        if out[key] >= 0:
            continue
        recent, counts = windows.setdefault(key, (deque(), {}))
        recent.append((times[i], name[i]))
        counts[name[i]] = counts.get(name[i], 0) + 1
        while recent[0][0] <= times[i] - HOUR:
            _, old = recent.popleft()
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
        if len(counts) > HOURLY_NAMES:
            out[key] = i
    return out


RULES = ("rule_subdomains", "rule_hourly")  # the two baselines, as metrics.json names them


def rule_alerts(rule: str, domain: np.ndarray, name: np.ndarray,
                times: np.ndarray | None) -> np.ndarray:  # fmt: skip
    """Per domain id: the packet index at which baseline `rule` (RULES) first alerts, -1 if
    never; `rule_hourly` needs the packets' times."""
    if rule == "rule_hourly":
        return hourly_alerts(domain, name, times)
    return first_alerts(domain, name, np.ones(len(domain), bool), RITA_NAMES, 0.0)


def flags_after(domain: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per packet: its domain was alerted at or before it (a rule's causal per-packet flag)."""
    at = first[domain]
    return (at >= 0) & (np.arange(len(domain)) >= at)


def domain_summary(
    domain: np.ndarray,
    labels: np.ndarray,
    first: np.ndarray,
    times: np.ndarray | None,
    sessions: np.ndarray | None = None,
) -> dict:
    """The `domains` entry of metrics.json for one model. With `sessions` (per packet, the
    exfiltrated file it carries, -1 for none) also tunnel sessions alerted: a session whose
    names spread over many registered domains (dnscat2 without a domain, DGA) counts once,
    alerted when any domain its packets used was."""
    tunnel = np.zeros(len(first), bool)
    tunnel[domain[labels == 1]] = True
    present = np.zeros(len(first), bool)
    present[domain] = True
    alerted = first >= 0
    queries, seconds = [], []
    for key in np.flatnonzero(tunnel & alerted):
        rows = np.flatnonzero(domain == key)
        queries.append(int(np.searchsorted(rows, first[key])) + 1)
        if times is not None:
            seconds.append(float(times[first[key]] - times[rows[0]]))
    return {
        "tunnel_alerted": int((tunnel & alerted).sum()),
        "tunnel_total": int(tunnel.sum()),
        "benign_alerted": int((~tunnel & present & alerted).sum()),
        "benign_total": int((~tunnel & present).sum()),
        "median_queries_to_alert": float(np.median(queries)) if queries else None,
        "median_seconds_to_alert": float(np.median(seconds)) if seconds else None,
        **(_session_counts(domain, labels, alerted, sessions) if sessions is not None else {}),
    }


def _session_counts(domain: np.ndarray, labels: np.ndarray, alerted: np.ndarray,
                    sessions: np.ndarray) -> dict:  # fmt: skip
    carried = (labels == 1) & (sessions >= 0)
    ids, index = np.unique(sessions[carried], return_inverse=True)
    hit = np.zeros(len(ids), bool)
    np.logical_or.at(hit, index, alerted[domain[carried]])
    return {"sessions_alerted": int(hit.sum()), "sessions_total": len(ids)}
