"""Per-domain alert grouping: registered domains, running sums, rolling window."""

from types import SimpleNamespace

import numpy as np

from exfil import domains
from exfil.alert_formats import format_alerts
from exfil.alerts import AlertBook
from exfil.domains import registered_domain
from exfil.labels import address_bytes


def test_registered_domain_is_public_suffix_aware():
    assert registered_domain("a1b2.data.evil.co.uk") == "evil.co.uk"
    assert registered_domain("WWW.Example.COM.") == "example.com"
    assert registered_domain("user.github.io") == "user.github.io"
    assert registered_domain("wpad") == "wpad"


def test_two_label_shortcut_agrees_with_the_full_rule_walk():
    """Names under every rule of the list (wildcards, exceptions, private and IDN rules)."""
    rules = domains._SUFFIXES._publicsuffix  # the list the library parsed: the shortcut needs it
    assert domains._SHORTCUT and len(domains._DEEP) > 1000

    def walk(qname: str) -> str:
        tail = ".".join(qname.rstrip(".").lower().split(".")[-5:])
        return (domains._SUFFIXES.privatesuffix(tail) or tail) if tail else "."

    names = ["a..com", "vmanlnikcuka", "x.local", "a.b.c.d.e.f.g.uk", ".", "foo.www.ck", "x.y.ck"]
    for rule in sorted(rules):
        rule = rule.lstrip("!").replace("*", "w")
        names += [rule, f"b.{rule}", f"q1.a.b.{rule}"]
    wrong = [(n, registered_domain(n), walk(n)) for n in names if registered_domain(n) != walk(n)]
    assert not wrong, wrong[:5]


def batch(names, malicious, start=0.0, client="10.0.0.66"):
    """(DnsBatch-like queries from `client`, scores, flags)."""
    n = len(names)
    width = max(len(name) for name in names)
    matrix = np.zeros((n, width), np.uint8)
    for row, name in enumerate(names):
        matrix[row, : len(name)] = np.frombuffer(name.encode(), np.uint8)
    flags = np.asarray(malicious, dtype=bool)
    src = np.tile(np.frombuffer(address_bytes(client), np.uint8), (n, 1))
    packets = SimpleNamespace(
        qname=matrix,
        qlen=np.array([len(name) for name in names], np.int32),
        time=np.arange(n, dtype=np.float64) + start,
        response=np.zeros(n, bool),
        src=src,
        dst=np.zeros_like(src),
    )
    return packets, np.where(flags, 0.9, 0.1).astype(np.float32), flags


def test_alerts_group_flagged_packets_and_estimate_bytes():
    hex_names = [f"{i:040x}.evil.net" for i in range(10)]
    names = hex_names + ["www.google.com"] * 5 + ["one.odd.org"]
    flags = [True] * 10 + [False] * 5 + [True]
    book = AlertBook(min_names=3)
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
    assert alert["first_seen"] == "1970-01-01T00:00:00.000Z"  # ISO-8601 UTC, for a SIEM
    assert alert["last_seen"] == "1970-01-01T00:00:09.000Z" and alert["last_seen_epoch"] == 9.0
    assert "'f'" in alert["why"][-1]
    assert alert["signals"]["name_len"] == len(hex_names[0]) and alert["signals"]["labels"] == 3
    assert 0.5 < alert["signals"]["digit_ratio"] <= 1.0
    assert "evil.net" in format_alerts(alerts)


def test_alert_raised_once_and_window_forgets_old_domains():
    book = AlertBook(min_names=2, window_seconds=100.0)
    assert book.update(*batch(["a1.x.com", "a2.x.com"], [True, True])) == ["x.com"]
    assert book.update(*batch(["a3.x.com"], [True], start=5.0)) == []
    book.update(*batch(["b1.y.com", "b2.y.com"], [True, True], start=1000.0))
    assert [a["domain"] for a in book.alerts()] == ["y.com"]


def test_merging_books_equals_one_book_over_both():
    names = [f"{i:020x}.evil.net" for i in range(6)] + ["www.example.com"] * 4
    flags = [True] * 6 + [False] * 4
    unigrams = np.random.default_rng(0).random((10, 256)).astype(np.float32)
    whole = AlertBook(min_names=2)
    whole.update(*batch(names, flags), unigrams=unigrams)
    first, second = AlertBook(min_names=2), AlertBook(min_names=2)
    first.update(
        *batch(names[:3] + names[6:8], flags[:3] + flags[6:8]), unigrams=unigrams[[0, 1, 2, 6, 7]]
    )
    second.update(
        *batch(names[3:6] + names[8:], flags[3:6] + flags[8:], start=3.0),
        unigrams=unigrams[[3, 4, 5, 8, 9]],
    )
    first.merge(second)
    merged, expected = first.alerts()[0], whole.alerts()[0]
    for key in ("queries", "unique_names", "estimated_bytes_exfiltrated", "name_bytes", "clients"):
        assert merged[key] == expected[key]
    assert merged["why"][-1] == expected["why"][-1]


def test_repeated_random_name_and_diluted_domain_are_not_alerts():
    book = AlertBook(min_names=3, min_share=0.5)
    # one hash-like name looked up four times (A, AAAA, two answers): one name, not a channel
    book.update(*batch(["bafybeigdyrzt5sfp7udm7hu76uh7y26nf3.ipfs.example"] * 4, [True] * 4))
    # a busy domain with a few flagged names among many benign ones
    names = [f"n{i}.cdn.example.org" for i in range(40)]
    book.update(*batch(names, [i < 4 for i in range(40)]))
    assert book.alerts() == []
    assert book.totals["example.org"] == 40


def test_first_alert_says_when_and_what_had_passed_exactly():
    """The alert is located at its packet, not at the end of the batch that held it."""
    names = ["www.example.com", "a1.evil.net", "a1.evil.net", "a2.evil.net", "x.other.org",
             "a3.evil.net", "a4.evil.net"]  # fmt: skip
    book = AlertBook(min_names=3, min_share=0.5)
    packets, scores, flags = batch(names, [False, True, True, True, False, True, True])
    packets.record = np.arange(100, 107)
    packets.msg_len = np.array([40, 41, 41, 42, 43, 44, 45])
    book.update(packets, scores, flags)
    first = book.alerts()[0]["first_alert"]
    assert first.pop("time_utc") == "1970-01-01T00:00:05.000Z"
    assert first == {"time": 5.0, "packet": 105, "domain_packets": 4, "flagged_packets": 4,
                     "distinct_flagged_names": 3, "domain_bytes": 41 + 41 + 42 + 44}  # fmt: skip


def test_first_alert_counts_earlier_batches():
    book = AlertBook(min_names=2, min_share=0.1)
    book.update(*batch(["q.evil.net", "www.evil.net"], [True, False]))
    book.update(*batch(["www.evil.net", "r.evil.net"], [False, True], start=10.0))
    first = book.alerts()[0]["first_alert"]
    assert first["time"] == 11.0 and first["domain_packets"] == 4
    assert first["distinct_flagged_names"] == 2 and first["flagged_packets"] == 2


def test_polls_do_not_dilute_a_domain_with_many_flagged_names():
    """A tunnel whose flagged data queries are 10% of its packets (90% unflagged polls) is
    alerted once MANY_NAMES distinct names were flagged; a domain short of it is a near miss."""
    from exfil.alerts import MANY_NAMES

    names, flags = [], []
    for i in range(MANY_NAMES * 10):
        data = i % 10 == 0
        names.append(f"{i:032x}.t.tunnel.net" if data else f"p{i % 3}.t.tunnel.net")
        flags.append(data)
    names += [f"{i:024x}.cdn.example.org" for i in range(40)] + ["www.example.org"] * 400
    flags += [True] * 40 + [False] * 400
    book = AlertBook(min_names=5, min_share=0.2)
    book.update(*batch(names, flags))
    assert [a["domain"] for a in book.alerts()] == ["tunnel.net"]
    near = book.near_misses()
    assert [n["domain"] for n in near] == ["example.org"]
    assert near[0]["distinct_flagged_names"] == 40 and "share 9.1% < 20%" in near[0]["why_not"]


def test_no_near_miss_for_a_lone_odd_name():
    book = AlertBook(min_names=5)
    book.update(*batch(["x7f3a9.cdn.example.org", "www.example.org"], [True, False]))
    assert book.alerts() == [] and book.near_misses() == []


def test_queries_and_responses_are_counted_apart_and_per_client():
    """A response repeats its query's name: counted as a response, never as a second query,
    and each client gets its own row (queries, names, bytes)."""
    names = [f"{i:040x}.evil.net" for i in range(6)]
    packets, scores, flags = batch(names + names[:4], [True] * 10)
    packets.response = np.array([False] * 6 + [True] * 4)
    other = np.frombuffer(address_bytes("10.0.0.7"), np.uint8)
    packets.src[3:6] = other  # queries 3-5 come from a second client
    packets.dst[6:] = packets.src[:4]  # responses go back to whoever asked
    book = AlertBook(min_names=3)
    book.update(packets, scores, flags, capture="cap.pcap")
    alert = book.alerts()[0]
    assert (alert["queries"], alert["responses"], alert["flagged_packets"]) == (6, 4, 10)
    rows = {row["client"]: row for row in alert["per_client"]}
    assert rows["10.0.0.66"]["queries"] == 3 and rows["10.0.0.66"]["responses"] == 3
    assert rows["10.0.0.7"]["queries"] == 3 and rows["10.0.0.7"]["responses"] == 1
    assert rows["10.0.0.66"]["unique_names"] == 3 and rows["10.0.0.7"]["unique_names"] == 3
    assert alert["captures"] == ["cap.pcap"]


def test_candidates_without_an_alert_are_bounded_and_the_strong_ones_kept(monkeypatch):
    """One stray flagged name under each of very many benign domains must not grow the book
    without bound; a tunnel building up among them is kept and still alerted."""
    from exfil import alerts

    monkeypatch.setattr(alerts, "MAX_CANDIDATES", 100)
    book = AlertBook(min_names=5)
    for step in range(10):
        strays = [f"odd{step}x{i}.benign{step}-{i}.com" for i in range(60)]
        tunnel = [f"{step:02d}{j:038x}.tunnel.net" for j in range(2 if step < 9 else 1)]
        book.update(*batch(strays + tunnel, [True] * (len(strays) + len(tunnel)), start=step))
        assert len(book.domains) <= 101
    assert "tunnel.net" in book.domains and book.domains["tunnel.net"].raised
    assert [a["domain"] for a in book.alerts()] == ["tunnel.net"]
