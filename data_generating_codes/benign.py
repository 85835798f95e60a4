"""Benign DNS traffic that looks like a real network, including the names that look random.

A detector trained only on `www.google.com` learns "long random label = exfiltration" and then
flags every CDN, antivirus and DKIM lookup. So besides ordinary lookups of popular domains
(page loads: a burst of A/AAAA/HTTPS lookups for a site, its subdomains and third parties),
this model makes the hard benign classes of issue 6, each named in the ground truth.

`BenignModel(rng, shares).session()` draws one burst of lookups; `.response(...)` builds the
answer a resolver would send. Everything comes from one `random.Random`, so a seed fixes it all.
"""

from __future__ import annotations

import base64
import bisect
import random
import string
from pathlib import Path
from typing import Protocol

from data_generating_codes.benign_answers import (
    AAAA_PREFIXES,
    ORDINARY,
    _cumulative,
    _split,
    answer,
    query,
)
from exfil.dnsmsg import QTYPE

DATA = Path(__file__).resolve().parent / "data"

# ---------------------------------------------------------------------------
# tables

HARD_SHARES: dict[str, float] = {  # share of lookups per hard class; the rest is ordinary
    "benign/cdn-hash": 0.05, "benign/av-lookup": 0.02, "benign/dkim": 0.01,
    "benign/dmarc": 0.01, "benign/acme": 0.005, "benign/reverse-ptr": 0.03, "benign/srv": 0.01,
    "benign/dnsbl": 0.01, "benign/chrome-probe": 0.01, "benign/wordy-long": 0.02,
}  # fmt: skip
CLASSES = (ORDINARY, *HARD_SHARES)

QTYPE_MIX = {"A": 55, "AAAA": 27, "HTTPS": 9, "CNAME": 1, "MX": 2, "TXT": 3, "NS": 3}
SUBDOMAINS = {  # usual subdomains and how often they are looked up
    "": 22, "www": 30, "api": 6, "cdn": 5, "mail": 3, "static": 5, "img": 4, "m": 2, "login": 2,
    "accounts": 2, "assets": 3, "media": 2, "video": 1, "news": 1, "docs": 1, "support": 1,
    "blog": 1, "shop": 1, "app": 3, "auth": 2, "fonts": 1, "edge": 1,
}  # fmt: skip
AV_FORMATS = (
    ("{md5}.hash.cymru.com", "TXT"), ("{b_26}.avqs.mcafee.com", "A"),
    ("{hex32}.{hex8}.p.sophosxl.net", "A"), ("{b_52}._file.hbl.dq.spamhaus.net", "A"),
    ("{hex16}.{hex12}.avts.mcafee.com", "A"),
)  # fmt: skip
CDN_FORMATS = (
    "d{lo13}.cloudfront.net", "{word}-{hex12}.s3.{region}.amazonaws.com",
    "r{d1}---sn-{lo8}-{lo4}.googlevideo.com", "{hex32}.safeframe.googlesyndication.com",
    "{word}-{lo16}.z01.azurefd.net", "{lo10}.execute-api.{region}.amazonaws.com",
    "ec2-{ip_dash}.compute-1.amazonaws.com", "bafybei{b_52}.ipfs.dweb.link",
    "{word}-lb-{num10}.{region}.elb.amazonaws.com",
)  # fmt: skip
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1")
DKIM_SELECTORS = _split(
    "google selector1 selector2 s1 s2 k1 default mail dkim 20230601 20161025 fm1 fm2 pm"
    " mandrill smtp sig1"
)
SRV_SERVICES = _split(
    "_ldap._tcp.dc._msdcs _kerberos._udp _kerberos._tcp _sip._tls _sipfederationtls._tcp"
    " _xmpp-client._tcp _xmpp-server._tcp _imaps._tcp _submission._tcp _autodiscover._tcp"
    " _caldavs._tcp _carddavs._tcp _matrix._tcp _minecraft._tcp _mongodb._tcp _ntp._udp"
    " _http._tcp"
)
DNSBL_ZONES = _split(
    "zen.spamhaus.org bl.spamcop.net b.barracudacentral.org dnsbl.sorbs.net cbl.abuseat.org"
    " psbl.surriel.com dnsbl-1.uceprotect.net"
)
_LOWER_ALNUM = string.ascii_lowercase + string.digits


def load_lines(path: Path) -> list[str]:
    lines = [line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


DOMAINS = load_lines(DATA / "opendns-top-domains.txt")
DOMAIN_SET = frozenset(DOMAINS)
WORDS = load_lines(DATA / "words.txt")


class Pieces:
    """Random name fragments drawn from one rng: hashes, base32, reversed addresses."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def hex(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def base32(self, n: int) -> str:
        """n characters of lowercase RFC 4648 base32 (no padding)."""
        return base64.b32encode(self.rng.randbytes((5 * n + 7) // 8)).decode().lower()[:n]

    def text(self, n: int, alphabet: str) -> str:
        return "".join(self.rng.choices(alphabet, k=n))

    def ipv4(self) -> tuple[int, int, int, int]:
        rng = self.rng
        first = rng.choice((10, 23, 31, 46, 52, 62, 77, 81, 93, 104, 151, 172, 185, 192, 203))
        return first, rng.getrandbits(8), rng.getrandbits(8), 1 + int(rng.random() * 254)

    def fill(self, template: str) -> str:
        """Replace {md5}, {hex32}, {b_26}, {lo13}, {word}, ... in a name template."""
        return template.format_map(_Fields(self))


class _Fields(dict):
    """Template fields made on first use only (drawing all of them for every name is slow)."""

    def __init__(self, pieces: Pieces) -> None:
        super().__init__()
        self.pieces = pieces

    def __missing__(self, key: str) -> str:
        p, rng = self.pieces, self.pieces.rng
        kind, size = key.rstrip("0123456789_"), key.lstrip("abcdefghijklmnopqrstuvwxyz_")
        makers = {
            "md": lambda: p.hex(32),
            "hex": lambda: p.hex(int(size)),
            "b": lambda: p.base32(int(size)),
            "lo": lambda: p.text(int(size), _LOWER_ALNUM),
            "d": lambda: str(rng.randrange(1, 9)),
            "num": lambda: str(rng.randrange(10**9, 10**10)),
            "word": lambda: rng.choice(WORDS),
            "region": lambda: rng.choice(REGIONS),
            "ip_dash": lambda: "-".join(map(str, p.ipv4())),
        }
        value = self[key] = makers[kind]()
        return value


# ---------------------------------------------------------------------------
# the model


class AnswerCache(Protocol):
    """What the model needs of its answer cache: a dict, or datagen_cache.DiskCache."""

    def get(self, key: tuple[str, int]) -> bytes | None: ...

    def __setitem__(self, key: tuple[str, int], value: bytes) -> None: ...


class BenignModel:
    """Draws benign lookup bursts and answers them like a recursive resolver would."""

    def __init__(self, rng: random.Random, shares: dict[str, float] | None = None,
                 cache: AnswerCache | None = None) -> None:  # fmt: skip
        """`cache` holds the ordinary answers (a dict unless given; offline: datagen_cache)."""
        self.rng = rng
        self.pieces = Pieces(rng)
        shares = dict(HARD_SHARES if shares is None else shares)
        unknown = set(shares) - set(HARD_SHARES)
        if unknown or sum(shares.values()) >= 1:
            raise ValueError(f"bad hard-benign shares {shares} (unknown {sorted(unknown)})")
        self.qtype_table = _cumulative(QTYPE_MIX)
        self.sub_table = _cumulative(SUBDOMAINS)
        self._cache: AnswerCache = {} if cache is None else cache
        self._hard = {
            "benign/cdn-hash": self._cdn_hash, "benign/av-lookup": self._av_lookup,
            "benign/dkim": self._dkim, "benign/dmarc": self._dmarc, "benign/acme": self._acme,
            "benign/reverse-ptr": self._reverse_ptr, "benign/srv": self._srv,
            "benign/dnsbl": self._dnsbl, "benign/chrome-probe": self._chrome_probe,
            "benign/wordy-long": self._wordy_long,
        }  # fmt: skip
        # shares are per lookup, but a page load makes several lookups: weight sessions by size
        shares = {ORDINARY: 1 - sum(shares.values()), **shares}
        sizes = self._mean_sizes()
        self.class_table = _cumulative({cls: shares[cls] / sizes[cls] for cls in shares})

    def _mean_sizes(self, samples: int = 200) -> dict[str, float]:
        """Mean lookups per session of each class, measured on a private rng (same every run)."""
        saved = self.rng, self.pieces
        self.rng = random.Random(0)
        self.pieces = Pieces(self.rng)
        makers = {ORDINARY: self._page_load, **self._hard}
        sizes = {}
        for cls, make in makers.items():
            count = samples if cls == ORDINARY else samples // 10  # hard sessions barely vary
            sizes[cls] = sum(len(make()) for _ in range(count)) / count
        self.rng, self.pieces = saved
        return sizes

    def domain(self) -> str:
        """A popular domain, Zipf-like: one network's lookups concentrate on a few hundred sites
        (half of them in the top 100 here), which also gives the resolver cache its hits."""
        return DOMAINS[int(len(DOMAINS) * self.rng.random() ** 6)]

    def _pick(self, table: tuple[list, list[float]]):  # noqa: ANN202
        keys, cum = table
        return keys[bisect.bisect(cum, self.rng.random() * cum[-1])]

    def session(self) -> list[tuple[str, str, int, float]]:
        """One burst: [(class, qname, qtype, seconds after the burst start), ...]."""
        cls = self._pick(self.class_table)
        if cls != ORDINARY:
            return [
                (cls, name, QTYPE[qtype], 0.002 * i)
                for i, (name, qtype) in enumerate(self._hard[cls]())
            ]
        return self._page_load()

    def _page_load(self) -> list[tuple[str, str, int, float]]:
        """A site visit: A + AAAA (+ HTTPS) for the site, then subresources and third parties."""
        rng = self.rng
        out: list[tuple[str, str, int, float]] = []
        site = self.domain()
        hosts = [f"www.{site}" if rng.random() < 0.6 else site]
        hosts += [
            f"{s}.{site}" if s else site
            for s in (self._pick(self.sub_table) for _ in range(rng.getrandbits(2)))
        ]
        hosts += [self.domain() for _ in range(int(rng.random() * 5))]
        when = 0.0
        for position, host in enumerate(dict.fromkeys(hosts)):
            if position == 0 or rng.random() < 0.8:
                qtypes = ["A", "AAAA"] + (["HTTPS"] if rng.random() < 0.4 else [])
            else:
                qtypes = [self._pick(self.qtype_table)]
            for qtype in qtypes:
                out.append((ORDINARY, host, QTYPE[qtype], when))
                when += rng.uniform(0.0002, 0.003)
            when += rng.expovariate(1 / 0.08)
        return out

    # --- hard classes: each returns [(qname, qtype mnemonic), ...]

    def _cdn_hash(self) -> list[tuple[str, str]]:
        name = self.pieces.fill(self.rng.choice(CDN_FORMATS))
        return [(name, "A")] + ([(name, "AAAA")] if self.rng.random() < 0.5 else [])

    def _av_lookup(self) -> list[tuple[str, str]]:
        template, qtype = self.rng.choice(AV_FORMATS)
        return [(self.pieces.fill(template), qtype)]

    def _dkim(self) -> list[tuple[str, str]]:
        rng = self.rng
        if rng.random() < 0.2:
            return [(f"{self.pieces.base32(32)}._domainkey.amazonses.com", "TXT")]
        return [(f"{rng.choice(DKIM_SELECTORS)}._domainkey.{self.domain()}", "TXT")]

    def _dmarc(self) -> list[tuple[str, str]]:
        return [(f"_dmarc.{self.domain()}", "TXT")]

    def _acme(self) -> list[tuple[str, str]]:
        sub = self.rng.choice(("", "www.", "api.", "mail.", "vpn.", "git."))
        return [(f"_acme-challenge.{sub}{self.domain()}", "TXT")]

    def _reverse_ptr(self) -> list[tuple[str, str]]:
        if self.rng.random() < 0.75:
            octets = self.pieces.ipv4()
            return [(".".join(map(str, reversed(octets))) + ".in-addr.arpa", "PTR")]
        nibbles = self.rng.choice(AAAA_PREFIXES).hex() + self.pieces.hex(24)
        return [(".".join(reversed(nibbles)) + ".ip6.arpa", "PTR")]

    def _srv(self) -> list[tuple[str, str]]:
        return [(f"{self.rng.choice(SRV_SERVICES)}.{self.domain()}", "SRV")]

    def _dnsbl(self) -> list[tuple[str, str]]:
        octets = self.pieces.ipv4()
        zone = self.rng.choice(DNSBL_ZONES)
        return [(".".join(map(str, reversed(octets))) + "." + zone, "A")]

    def _chrome_probe(self) -> list[tuple[str, str]]:
        """Chromium's intranet-redirect probes: three random 7-15 letter single labels."""
        rng = self.rng
        return [
            (self.pieces.text(rng.randint(7, 15), string.ascii_lowercase), "A") for _ in range(3)
        ]

    def _wordy_long(self) -> list[tuple[str, str]]:
        rng = self.rng
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 9))]
        while len("-".join(words)) > 63:
            words.pop()
        label = "-".join(words)
        sub = rng.choice(("", "blog.", "www.", "internal.", "static.", "eu-west-1.app."))
        return [(f"{label}.{sub}{self.domain()}", rng.choice(("A", "A", "AAAA")))]

    # --- answers

    def query(self, qid: int, qname: str, qtype: int) -> bytes:
        """The client's query (RD set, class IN)."""
        return query(qid, qname, qtype)

    def response(self, qid: int, cls: str, qname: str, qtype: int) -> bytes:
        """The resolver's answer; ordinary answers are cached per (name, type) like a resolver."""
        if cls == ORDINARY:
            key = (qname, qtype)
            cached = self._cache.get(key)
            if cached is None:
                cached = self._cache[key] = answer(self.rng, self.pieces, cls, qname, qtype)
            return qid.to_bytes(2, "big") + cached[2:]
        return answer(self.rng, self.pieces, cls, qname, qtype, qid)
