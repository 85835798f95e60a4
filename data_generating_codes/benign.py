"""Benign DNS traffic that looks like a real network, including the names that look random.

A detector trained only on `www.google.com` learns "long random label = exfiltration" and then
flags every CDN, antivirus and DKIM lookup. So besides ordinary lookups of popular domains
(page loads: a burst of A/AAAA/HTTPS lookups for a site, its subdomains and third parties),
this model makes the hard benign classes of issue 6, each named in the ground truth, and the
odd-but-real names a network leaks to its resolver: Active Directory and DNS-SD lookups of
internal names, and vendor telemetry hosts with ids in them. `mixed_case` turns on DNS 0x20 (a
resolver's vantage point: it sends each name with the case of every letter drawn at random).

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
    SD_PORTS,
    _cumulative,
    _split,
    answer,
    query,
    sd_host,
    wire_name,
)
from exfil.dnsmsg import QTYPE

DATA = Path(__file__).resolve().parent / "data"

# ---------------------------------------------------------------------------
# tables

HARD_SHARES: dict[str, float] = {  # share of lookups per hard class; the rest is ordinary
    "benign/cdn-hash": 0.05, "benign/av-lookup": 0.02, "benign/dkim": 0.01,
    "benign/dmarc": 0.01, "benign/acme": 0.005, "benign/reverse-ptr": 0.03, "benign/srv": 0.01,
    "benign/dnsbl": 0.01, "benign/chrome-probe": 0.01, "benign/wordy-long": 0.02,
    "benign/ad-internal": 0.015, "benign/dns-sd": 0.01, "benign/telemetry": 0.02,
    "benign/long-tail": 0.03,
}  # fmt: skip
CLASSES = (ORDINARY, *HARD_SHARES)
LONG_TAIL_TLDS = (  # weighted by repetition: .com first, then cheap new gTLDs and ccTLDs
    "com", "com", "com", "com", "net", "org", "info", "xyz", "top", "site", "online", "space",
    "win", "buzz", "fun", "shop", "club", "store", "pl", "de", "ru", "br", "in", "co", "io",
    "me", "us", "fr", "it", "nl", "es", "com.br", "co.uk", "com.au",
)  # fmt: skip
WORDY_MANY = 0.5  # share of wordy-long lookups in the many-label form (0: the one-label form only)

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
# Active Directory (the DC locator's records, MS-ADTS 6.3.2.3; Windows' default host names)
CORPS = _split(  # the companies of Microsoft's documentation, common in real test forests too
    "contoso fabrikam northwind adatum tailspintoys woodgrovebank litwareinc proseware"
    " wingtiptoys fourthcoffee"
)
AD_DOMAINS = ("{c}.local", "{c}.lan", "corp.{c}.com", "ad.{c}.com", "{c}.corp", "{c}.internal")
AD_SITES = _split(
    "Default-First-Site-Name Default-First-Site-Name HQ London NYC Frankfurt Branch01"
)
AD_FORMATS = (
    ("_ldap._tcp.dc._msdcs.{dom}", "SRV"), ("_ldap._tcp.{site}._sites.dc._msdcs.{dom}", "SRV"),
    ("_kerberos._tcp.{site}._sites.{dom}", "SRV"), ("_kerberos._udp.{dom}", "SRV"),
    ("_kerberos._tcp.dc._msdcs.{dom}", "SRV"), ("_ldap._tcp.pdc._msdcs.{dom}", "SRV"),
    ("_gc._tcp.{dom}", "SRV"), ("_kpasswd._udp.{dom}", "SRV"),
    ("_ldap._tcp.{guid}.domains._msdcs.{dom}", "SRV"), ("{guid}._msdcs.{dom}", "CNAME"),
    ("WIN-{up11}.{dom}", "A"), ("DESKTOP-{up7}.{dom}", "A"), ("LAPTOP-{up8}.{dom}", "A"),
    ("{dept}-{role}{n2}.{dom}", "A"), ("wpad.{dom}", "A"),
)  # fmt: skip
DEPTS = _split("hr fin eng it ops sales legal mkt dev acct")
ROLES = _split("fs dc print sql app web exch sccm wsus file")
# DNS-SD over unicast DNS (RFC 6763): browse domains, service types, instance names
SD_BROWSE = ("b", "db", "r", "dr", "lb")
SD_ROOMS = ("Living Room", "Kitchen", "Bedroom", "Office", "Conference Room A", "Boardroom",
            "Lobby", "Family Room", "Meeting Room 3")  # fmt: skip
SD_OWNERS = _split("Anna James Maria David Sophie Tom Priya Lucas")
SD_APPLE = ("MacBook Pro", "MacBook Air", "iMac", "iPad", "Mac mini")
SD_PRINTERS = ("HP LaserJet Pro M404dn", "HP OfficeJet Pro 9010 series",
               "Brother HL-L2350DW series", "Brother MFC-L2710DW series", "EPSON ET-2750 Series",
               "Canon TS8300 series", "Xerox VersaLink C405")  # fmt: skip
SD_CAST = ("Chromecast", "Chromecast-Ultra", "Google-Home-Mini", "Google-Nest-Hub")
AZURE_REGIONS = _split(
    "westeurope northeurope eastus eastus2 westus2 centralus uksouth southeastasia"
)
GCP_REGIONS = ("europe-west1", "asia-southeast1")
# many-label wordy names: <service>.<team>.<env>.<region>.<place>.<company> or Kubernetes'
# <service>.<namespace>.svc.cluster.local; at most 46 + 20 + 7 + 14 + 8 + 19 + 5 = 119 characters
ENVS = _split("staging prod dev qa uat canary preprod sandbox")
PLACES = _split("internal corp int private")
_LOWER_ALNUM = string.ascii_lowercase + string.digits
_UPPER_ALNUM = string.ascii_uppercase + string.digits
_LETTERS = frozenset(string.ascii_letters)
_VARIED = frozenset((ORDINARY, "benign/ad-internal", "benign/dns-sd"))


def load_lines(path: Path) -> list[str]:
    lines = [line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


DOMAINS = load_lines(DATA / "opendns-top-domains.txt")
DOMAIN_SET = frozenset(DOMAINS)
WORDS = load_lines(DATA / "words.txt")
TELEMETRY_FORMATS = load_lines(DATA / "telemetry-hosts.txt")


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

    def guid(self) -> str:
        """A random (version 4) GUID, as Windows makes for AD objects."""
        h = self.hex(31)
        variant = "89ab"[int(h[15], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[16:19]}-{h[19:31]}"

    def mac(self) -> str:
        return ":".join(f"{b:02X}" for b in self.rng.randbytes(6))

    def company(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(CORPS)
        return rng.choice(WORDS) + rng.choice(("corp", "group", "tech", "labs", "co", ""))

    def sd_room(self) -> str:
        return self.rng.choice(SD_ROOMS)

    def sd_instance(self, service: str) -> str:
        """A DNS-SD instance name as devices advertise it (spaces and capitals included)."""
        rng = self.rng
        device = f"{rng.choice(SD_OWNERS)}'s {rng.choice(SD_APPLE)}"
        if service == "_googlecast._tcp":
            return f"{rng.choice(SD_CAST)}-{self.hex(32)}"
        if service in ("_airplay._tcp", "_spotify-connect._tcp"):
            return rng.choice((self.sd_room(), "Apple TV", device))
        if service == "_raop._tcp":
            return f"{self.mac().replace(':', '')}@{rng.choice((self.sd_room(), device))}"
        if service == "_smb._tcp":
            return rng.choice((device, "DiskStation", "NAS"))
        printer = rng.choice(SD_PRINTERS)
        return (
            f"{printer} [{self.text(6, '0123456789ABCDEF')}]" if printer[:3] == "HP " else printer
        )

    def fill(self, template: str, **fixed: str) -> str:
        """Replace {md5}, {hex32}, {b_26}, {lo13}, {word}, ... in a name template; `fixed`
        gives some fields their value (one domain for a whole session)."""
        fields = _Fields(self)
        fields.update(fixed)
        return template.format_map(fields)


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
            "up": lambda: p.text(int(size), _UPPER_ALNUM),
            "uhex": lambda: p.hex(int(size)).upper(),
            "dig": lambda: str(rng.randrange(10 ** (int(size) - 1), 10 ** int(size))),
            "n": lambda: f"{rng.randint(1, 12):0{size}d}",
            "guid": p.guid,
            "company": p.company,
            "project": lambda: f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{p.text(5, _LOWER_ALNUM)}",
            "dept": lambda: rng.choice(DEPTS),
            "role": lambda: rng.choice(ROLES),
            "msgeo": lambda: rng.choice(("us", "eu")),
            "azregion": lambda: rng.choice(AZURE_REGIONS),
            "gcpregion": lambda: rng.choice(GCP_REGIONS),
            "letter": lambda: rng.choice(string.ascii_lowercase),
        }
        value = self[key] = makers[kind]()
        return value


def randomise_case(name: str, rng: random.Random) -> str:
    """`name` with each ASCII letter's case flipped at random, as a DNS 0x20 resolver sends it
    (draft-vixie-dnsext-dns0x20: the answer must echo the case, so spoofers must guess it)."""
    bits = rng.getrandbits(len(name))
    return "".join(
        c.swapcase() if bits >> i & 1 and c in _LETTERS else c for i, c in enumerate(name)
    )


# ---------------------------------------------------------------------------
# the model


class AnswerCache(Protocol):
    """What the model needs of its answer cache: a dict, or datagen_cache.DiskCache."""

    def get(self, key: tuple[str, int]) -> bytes | None: ...

    def __setitem__(self, key: tuple[str, int], value: bytes) -> None: ...


class BenignModel:
    """Draws benign lookup bursts and answers them like a recursive resolver would."""

    def __init__(self, rng: random.Random, shares: dict[str, float] | None = None,
                 cache: AnswerCache | None = None, *, mixed_case: float = 0.0,
                 wordy_many: float = WORDY_MANY) -> None:  # fmt: skip
        """`cache` holds the ordinary answers (a dict unless given; offline: datagen_cache).
        `mixed_case`: share of sessions sent in DNS 0x20 mixed case; `wordy_many`: share of
        wordy-long lookups in the many-label form. At 0 neither draws from `rng`, so the
        captures of before they existed come out byte for byte."""
        self.rng = rng
        self.pieces = Pieces(rng)
        shares = dict(HARD_SHARES if shares is None else shares)
        unknown = set(shares) - set(HARD_SHARES)
        if unknown or sum(shares.values()) >= 1:
            raise ValueError(f"bad hard-benign shares {shares} (unknown {sorted(unknown)})")
        if not (0 <= mixed_case <= 1 and 0 <= wordy_many <= 1):
            raise ValueError(f"mixed_case {mixed_case} and wordy_many {wordy_many}: need 0 to 1")
        self.mixed_case, self.wordy_many = mixed_case, wordy_many
        self.qtype_table = _cumulative(QTYPE_MIX)
        self.sub_table = _cumulative(SUBDOMAINS)
        self._cache: AnswerCache = {} if cache is None else cache
        self._hard = {
            "benign/cdn-hash": self._cdn_hash, "benign/av-lookup": self._av_lookup,
            "benign/dkim": self._dkim, "benign/dmarc": self._dmarc, "benign/acme": self._acme,
            "benign/reverse-ptr": self._reverse_ptr, "benign/srv": self._srv,
            "benign/dnsbl": self._dnsbl, "benign/chrome-probe": self._chrome_probe,
            "benign/wordy-long": self._wordy_long, "benign/ad-internal": self._ad_internal,
            "benign/dns-sd": self._dns_sd, "benign/telemetry": self._telemetry,
            "benign/long-tail": self._long_tail,
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
            # most hard sessions barely vary; AD and DNS-SD ones make 1 to 6 lookups
            count = samples if cls in _VARIED else samples // 10
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
            out = [
                (cls, name, QTYPE[qtype], 0.002 * i)
                for i, (name, qtype) in enumerate(self._hard[cls]())
            ]
        else:
            out = self._page_load()
        if self.mixed_case and self.rng.random() < self.mixed_case:
            out = [(c, randomise_case(name, self.rng), q, t) for c, name, q, t in out]
        return out

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
        if self.wordy_many and rng.random() < self.wordy_many:
            return [(self._many_labels(), rng.choice(("A", "A", "AAAA")))]
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 9))]
        while len("-".join(words)) > 63:
            words.pop()
        label = "-".join(words)
        sub = rng.choice(("", "blog.", "www.", "internal.", "static.", "eu-west-1.app."))
        return [(f"{label}.{sub}{self.domain()}", rng.choice(("A", "A", "AAAA")))]

    def _words_label(self, low: int, high: int) -> str:
        """Dash-joined words, low to high characters (words are 4-7 letters)."""
        rng = self.rng
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
        while len("-".join(words)) < low:
            words.append(rng.choice(WORDS))
        while len("-".join(words)) > high:
            words.pop()
        return "-".join(words)

    def _many_labels(self) -> str:
        """A deployment's host name: wordy service and team labels, environment, region."""
        rng = self.rng
        service, team, env = self._words_label(20, 46), self._words_label(8, 20), rng.choice(ENVS)
        if rng.random() < 0.3:
            return f"{service}.{team}-{env}.svc.cluster.local"
        company = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}.{rng.choice(('com', 'net', 'io'))}"
        return f"{service}.{team}.{env}.{rng.choice(REGIONS)}.{rng.choice(PLACES)}.{company}"

    def _ad_internal(self) -> list[tuple[str, str]]:
        """A Windows client finding its domain controllers and file servers: DC locator SRV,
        DSA GUID CNAME, default WIN-/DESKTOP-/LAPTOP- host names (upper case, as Windows has)."""
        rng = self.rng
        fixed = {"dom": rng.choice(AD_DOMAINS).format(c=self.pieces.company()),
                 "site": rng.choice(AD_SITES)}  # fmt: skip
        out = []
        for template, qtype in rng.sample(AD_FORMATS, rng.randint(1, 3)):
            name = self.pieces.fill(template, **fixed)
            out.append((name, qtype))
            if qtype == "A" and rng.random() < 0.5:
                out.append((name, "AAAA"))
        return out

    def _sd_domain(self) -> str:
        """The search domain DHCP gave the client (home.arpa: RFC 8375; lan: OpenWrt's)."""
        rng = self.rng
        pick = rng.random()
        if pick < 0.6:
            return "home.arpa" if pick < 0.35 else "lan"
        return rng.choice(AD_DOMAINS).format(c=self.pieces.company())

    def _dns_sd(self) -> list[tuple[str, str]]:
        """A client browsing unicast DNS-SD: browse domains (for its search domain or its
        subnet's reverse zone), service types, or one instance's SRV, TXT and address."""
        rng, domain = self.rng, self._sd_domain()
        kind = rng.random()
        if kind < 0.4:
            if rng.random() < 0.4:
                a, b = rng.choice(
                    ((192, 168), (10, rng.getrandbits(8)), (172, 16 + rng.randrange(16)))
                )
                domain = f"0.{rng.getrandbits(8)}.{b}.{a}.in-addr.arpa"
            return [(f"{b}._dns-sd._udp.{domain}", "PTR")
                    for b in rng.sample(SD_BROWSE, rng.randint(2, 5))]  # fmt: skip
        service = rng.choice(tuple(SD_PORTS))
        if kind < 0.7:
            return [(f"_services._dns-sd._udp.{domain}", "PTR"), (f"{service}.{domain}", "PTR")]
        instance = self.pieces.sd_instance(service)
        name = f"{instance}.{service}.{domain}"
        host = f"{sd_host(instance)}.{domain}"
        return [(f"{service}.{domain}", "PTR"), (name, "SRV"), (name, "TXT"), (host, "A")]

    def _telemetry(self) -> list[tuple[str, str]]:
        rng = self.rng
        name = self.pieces.fill(rng.choice(TELEMETRY_FORMATS))
        return [(name, "A")] + [(name, "AAAA")] * (rng.random() < 0.6)

    def _long_tail(self) -> list[tuple[str, str]]:
        """A visit to a site outside the popular list: the long tail of registrations that
        real traffic is full of (joined words, a number or a year, hyphens, short brand
        codes), one odd-looking label under a TLD cheap registrations favour, looked up as
        any site is. The popular list alone teaches that such a label means a tunnel."""
        rng = self.rng
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
        kind = rng.random()
        if kind < 0.55:
            site = "".join(words)
        elif kind < 0.8:
            site = "-".join(words[:3])
        else:  # a brand or product code: letters and digits
            site = self.pieces.text(rng.randint(2, 5), string.ascii_lowercase)
            site += rng.choice(("", "-")) + self.pieces.text(rng.randint(2, 6), string.digits)
        if kind < 0.8 and rng.random() < 0.35:
            number = rng.randint(1, 999) if rng.random() < 0.5 else rng.randint(1990, 2030)
            site += rng.choice(("", "-")) + str(number)
        site = site[:63]
        host = f"www.{site}" if rng.random() < 0.5 else site
        host = f"{host}.{rng.choice(LONG_TAIL_TLDS)}"
        return [(host, "A"), (host, "AAAA")][: rng.randint(1, 2)]

    # --- answers

    def query(self, qid: int, qname: str, qtype: int) -> bytes:
        """The client's query (RD set, class IN)."""
        return query(qid, qname, qtype)

    def response(self, qid: int, cls: str, qname: str, qtype: int) -> bytes:
        """The resolver's answer; ordinary answers are cached per (name, type) like a resolver."""
        if cls == ORDINARY:
            key = (qname.lower(), qtype)  # a resolver's cache ignores case (and 0x20's)
            cached = self._cache.get(key)
            if cached is None:
                cached = self._cache[key] = answer(self.rng, self.pieces, cls, key[0], qtype)
            if qname == key[0]:
                return qid.to_bytes(2, "big") + cached[2:]
            asked = wire_name(qname)  # echo the question's case; same length as the cached one
            return qid.to_bytes(2, "big") + cached[2:12] + asked + cached[12 + len(asked) :]
        return answer(self.rng, self.pieces, cls, qname, qtype, qid)
