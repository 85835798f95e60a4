"""Per-domain evaluation: the alert rule packet by packet, the RITA and hourly rules."""

import numpy as np

from models import domain_metrics as dm


def names(rows: list[str]) -> tuple[np.ndarray, np.ndarray]:
    width = max(map(len, rows))
    matrix = np.zeros((len(rows), width), np.uint8)
    for i, row in enumerate(rows):
        matrix[i, : len(row)] = np.frombuffer(row.encode(), np.uint8)
    return matrix, np.array([len(r) for r in rows], np.int32)


def test_alert_rule_fires_at_the_packet_where_names_and_share_first_hold():
    rows = ["www.good.com"] * 4 + [f"x{i}.evil.net" for i in range(6)] + ["a.good.com"]
    domain, domains, name = dm.packet_domains(*names(rows))
    assert list(domains) == ["evil.net", "good.com"]
    flagged = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1], bool)
    first = dm.first_alerts(domain, name, flagged, min_names=3, min_share=0.5)
    evil, good = 0, 1
    assert first[evil] == 7  # third distinct flagged name (x0, x2, x3) at packet 7, share 3/4
    assert first[good] == -1
    labels = np.array([0] * 4 + [1] * 6 + [0])
    summary = dm.domain_summary(domain, labels, first, np.arange(11.0))
    assert summary == {"tunnel_alerted": 1, "tunnel_total": 1, "benign_alerted": 0,
                       "benign_total": 1, "median_queries_to_alert": 4.0,
                       "median_seconds_to_alert": 3.0}  # fmt: skip
    after = dm.flags_after(domain, first)
    assert after.tolist() == [False] * 7 + [True] * 3 + [False]


def test_a_session_over_many_domains_counts_once_alerted_by_any_of_them():
    """dnscat2 without a domain (`dnscat.<hex>`): each name is its own registered domain, so
    per domain one session is dozens of one-query tunnels; per session it is one."""
    rows = [f"dnscat.{i:02x}{'ab' * 8}" for i in range(8)]  # session 0: 8 domains
    rows += [f"x{i}.evil.net" for i in range(5)] + ["www.good.com"]  # session 1, benign
    domain, domains, _ = dm.packet_domains(*names(rows))
    labels = np.array([1] * 13 + [0])
    sessions = np.array([0] * 8 + [1] * 5 + [-1])
    first = np.full(len(domains), -1)
    first[list(domains).index("evil.net")] = 12
    summary = dm.domain_summary(domain, labels, first, None, sessions)
    assert (summary["tunnel_alerted"], summary["tunnel_total"]) == (1, 9)
    assert (summary["sessions_alerted"], summary["sessions_total"]) == (1, 2)
    first[domain[3]] = 3  # one of the dnscat names' domains alerted: its session is
    assert dm.domain_summary(domain, labels, first, None, sessions)["sessions_alerted"] == 2
    assert "sessions_total" not in dm.domain_summary(domain, labels, first, None)


def test_rita_and_hourly_rules_count_distinct_names_not_packets():
    rows = [f"n{i}.busy.org" for i in range(120)] + ["same.repeat.io"] * 500
    rows += [f"s{i}.slow.net" for i in range(20)]
    domain, domains, name = dm.packet_domains(*names(rows))
    ids = {d: i for i, d in enumerate(domains)}
    rita = dm.first_alerts(domain, name, np.ones(len(rows), bool), dm.RITA_NAMES, 0.0)
    assert rita[ids["busy.org"]] == 99 and rita[ids["repeat.io"]] == -1
    times = np.zeros(len(rows))
    times[-20:] = np.arange(20) * 1000.0  # slow.net: one name every 1000 s, 4 an hour at most
    hourly = dm.hourly_alerts(domain, name, times)
    assert hourly[ids["busy.org"]] == 8 and hourly[ids["slow.net"]] == -1
    assert hourly[ids["repeat.io"]] == -1
