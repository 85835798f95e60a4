"""Registered domains (`x1f.data.evil.co.uk` -> `evil.co.uk`): what alerts group by and what
the LSTM's training copies swap (models/augment.py).

Public-suffix aware, from the list shipped with the `publicsuffixlist` package: no network at
run time. Attacker names are all unique, so the cost per new name matters: most names need no
walk over the rules at all (see registered_domain).
"""

from __future__ import annotations

from functools import lru_cache

from publicsuffixlist import PublicSuffixList

_SUFFIXES = PublicSuffixList()


@lru_cache(maxsize=1 << 16)
def _registered_tail(tail: str) -> str:
    return _SUFFIXES.privatesuffix(tail) or tail


def _deep_tails(rules: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(every tail of two or more labels of a rule, top-level labels under a wildcard rule).

    A name whose last two labels are in neither can only match one-label rules, so its
    registered domain is those two labels: no rule walk. `rules` is the list the library parsed
    (IDN rules in both spellings).
    """
    tails, wild = set(), set()
    for rule in rules:
        rule = rule.lstrip("!")
        if rule.startswith("*."):
            rule = rule[2:]
            if "." not in rule:
                wild.add(rule)
        labels = rule.split(".")
        tails.update(".".join(labels[-k:]) for k in range(2, len(labels) + 1))
    return frozenset(tails), frozenset(wild)


_RULES = getattr(_SUFFIXES, "_publicsuffix", None)  # a private attribute: if a release drops it,
_SHORTCUT = _RULES is not None  # every name takes the full walk (slower, same answers)
_DEEP, _WILD = _deep_tails(_RULES or frozenset())


MAX_CACHED_NAMES = 65_536  # name bytes -> registered domain, one cache for every caller


_BY_NAME: dict[bytes, str] = {}


def registered_domain_of(name: bytes) -> str:
    """registered_domain of a name given as its bytes, through one bounded cache that the
    context state and the alert book share (they look up the same names, once each here):
    benign names repeat, so most look-ups are a dict hit."""
    domain = _BY_NAME.get(name)
    if domain is None:
        if len(_BY_NAME) >= MAX_CACHED_NAMES:
            _BY_NAME.clear()
        domain = _BY_NAME[name] = registered_domain(name.decode("latin-1"))
    return domain


def registered_domain(qname: str) -> str:
    """`x1f.data.evil.co.uk` -> `evil.co.uk`; names without a public suffix map to themselves.

    Most names end in two labels no rule goes beyond (`paint-sand.net`): those two are the
    answer, without walking the rules, which matters because attacker names are all unique.
    The others (`co.uk`, `github.io`, `s3.amazonaws.com` tails) are looked up by their last
    five labels, as far as any rule reaches, through a cache.
    """
    name = qname.rstrip(".").lower()
    labels = name.split(".")
    if _SHORTCUT and len(labels) >= 2 and labels[-1] and labels[-2]:
        tail = f"{labels[-2]}.{labels[-1]}"
        if tail not in _DEEP and labels[-1] not in _WILD:
            return tail
    return _registered_tail(".".join(labels[-5:])) if name else "."
