"""Allowlists: what an entry covers, the shipped list, bad files, and the alert book's use."""

import numpy as np
import pytest
from test_alerts import batch

from exfil.alerts import AlertBook
from exfil.allowlist import DEFAULT, Allowlist
from exfil.cli import UserError


def test_an_entry_covers_itself_and_every_name_under_it_whatever_the_case(tmp_path):
    listed = tmp_path / "a.txt"
    listed.write_text("# comment\n\nExample.COM  # ours\n*.cymru.com\nhash.team.net.\n")
    allow = Allowlist.load([str(listed)], default=False)
    assert allow.entries == {"example.com": "ours", "cymru.com": "listed in a.txt",
                             "hash.team.net": "listed in a.txt"}  # fmt: skip
    assert allow.entry_of("example.com") == "example.com"  # the bare domain too
    assert allow.entry_of("a.b.EXAMPLE.com.") == "example.com"
    assert allow.entry_of("cymru.com") == "cymru.com"  # "*.x" is "x"
    assert allow.entry_of("x.hash.team.net") == "hash.team.net"
    assert allow.entry_of("team.net") is None  # a deeper entry does not cover its parent
    assert allow.entry_of("notexample.com") is None and allow.entry_of("example.co") is None


@pytest.mark.parametrize("line", ["bad..name", "two words.example", "a" * 300])
def test_a_line_that_is_no_domain_name_is_a_one_line_error(tmp_path, line):
    listed = tmp_path / "bad.txt"
    listed.write_text(f"good.example\n{line}\n")
    with pytest.raises(UserError, match="bad.txt:2"):
        Allowlist.load([str(listed)], default=False)
    with pytest.raises(UserError, match="not readable"):
        Allowlist.load([str(tmp_path / "missing.txt")], default=False)


def test_shipped_list_loads_and_lists_no_user_delegated_zone():
    allow = Allowlist.load([], default=True)
    assert DEFAULT.is_file() and len(allow.entries) >= 20
    assert allow.entry_of("127.0.0.2.zen.spamhaus.org") == "spamhaus.org"
    for delegating in ("x.duckdns.org", "x.afraid.org", "x.no-ip.com", "x.ngrok.io"):
        assert allow.entry_of(delegating) is None  # an attacker could run a server there
    assert all(reason for reason in allow.entries.values())


def test_book_tallies_allowlisted_flagged_names_and_never_alerts_them():
    names = [f"{i:040x}.evil.net" for i in range(8)] + [
        f"{i:032x}.hash.cymru.com" for i in range(8)
    ]
    allow = Allowlist({"hash.cymru.com": "hash registry"})
    book = AlertBook(min_names=3, allowlist=allow)
    book.update(*batch(names, [True] * len(names)))
    assert [a["domain"] for a in book.alerts()] == ["evil.net"]
    assert allow.report() == [{"domain": "hash.cymru.com", "reason": "hash registry",
                               "queries": 8, "unique_names": 8,
                               "unique_names_is_floor": False}]  # fmt: skip
    other = AlertBook(min_names=3, allowlist=allow.fresh())
    other.update(*batch(names[8:10], [True, True]))
    book.merge(other)
    assert book.allowlist.report()[0]["queries"] == 10
    assert np.isclose(book.alerts()[0]["mean_score"], 0.9)


def test_a_flood_under_an_allowlisted_domain_keeps_memory_bounded(monkeypatch):
    """Live runs last for days: distinct suppressed names are remembered up to a cap, then the
    count is reported as a floor (queries still counted exactly)."""
    from exfil import allowlist as module

    monkeypatch.setattr(module, "MAX_SUPPRESSED_NAMES", 100)
    allow = Allowlist({"hash.cymru.com": "hash registry"})
    flood = [f"{i:032x}.hash.cymru.com" for i in range(250)]
    assert all(allow.keep_out(flood))
    other = allow.fresh()
    other.keep_out([f"{i:032x}.hash.cymru.com" for i in range(1000, 1050)])
    allow.merge(other)
    row = allow.report()[0]
    assert row["queries"] == 300 and row["unique_names"] == 100 and row["unique_names_is_floor"]
    assert len(allow.seen["hash.cymru.com"].names) == 100
