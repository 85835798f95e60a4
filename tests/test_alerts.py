"""Per-domain alert grouping: registered domains, running sums, rolling window."""

import numpy as np

from exfil.alerts import AlertBook, format_alerts, registered_domain


def test_registered_domain_is_public_suffix_aware():
    assert registered_domain("a1b2.data.evil.co.uk") == "evil.co.uk"
    assert registered_domain("WWW.Example.COM.") == "example.com"
    assert registered_domain("user.github.io") == "user.github.io"
    assert registered_domain("wpad") == "wpad"


def batch(names, malicious, start=0.0, client="10.0.0.66"):
    n = len(names)
    return (
        list(names),
        [client] * n,
        np.arange(n, dtype=np.float64) + start,
        np.where(malicious, 0.9, 0.1).astype(np.float32),
        np.asarray(malicious, dtype=bool),
    )


def test_alerts_group_flagged_packets_and_estimate_bytes():
    hex_names = [f"{i:040x}.evil.net" for i in range(10)]
    names = hex_names + ["www.google.com"] * 5 + ["one.odd.org"]
    flags = [True] * 10 + [False] * 5 + [True]
    book = AlertBook(min_queries=3)
    unigrams = np.zeros((len(names), 256), np.float32)
    unigrams[:10, ord("f")] = 3.0
    raised = book.update(*batch(names, flags), unigrams=unigrams)
    assert raised == ["evil.net"]
    alerts = book.alerts()
    assert [a["domain"] for a in alerts] == ["evil.net"]
    alert = alerts[0]
    assert alert["queries"] == 10 and alert["unique_names"] == 10
    assert alert["clients"] == ["10.0.0.66"] and len(alert["examples"]) == 3
    # 40 hex characters per name carry 4 bits each: 20 bytes a name
    assert alert["estimated_bytes_exfiltrated"] == 10 * 40 * 4 // 8
    assert alert["first_seen"] == 0.0 and alert["last_seen"] == 9.0
    assert "'f'" in alert["why"][-1]
    assert "evil.net" in format_alerts(alerts)


def test_alert_raised_once_and_window_forgets_old_domains():
    book = AlertBook(min_queries=2, window_seconds=100.0)
    assert book.update(*batch(["a1.x.com", "a2.x.com"], [True, True])) == ["x.com"]
    assert book.update(*batch(["a3.x.com"], [True], start=5.0)) == []
    book.update(*batch(["b1.y.com", "b2.y.com"], [True, True], start=1000.0))
    assert [a["domain"] for a in book.alerts()] == ["y.com"]
