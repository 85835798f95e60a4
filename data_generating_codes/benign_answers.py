"""Answers for benign lookups, packed fast: names packed once, records as bytes.

The offline generator answers ~50k lookups a second, so responses skip dnsmsg's Record objects:
each resource record is `owner + struct + rdata`, question names are compressed to a pointer,
and zones' SOA records are cached. TTLs for every class come from one distribution (`TTLS`), so
a TTL never tells a class apart (the features zero them anyway).
"""

from __future__ import annotations

import base64
import bisect
import functools
import random
import struct
import zlib

from exfil import dnsmsg
from exfil.dnsmsg import QTYPE, QTYPE_NAME

ORDINARY = "benign/ordinary"


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# ---------------------------------------------------------------------------
# tables

TTLS = {30: 6, 60: 14, 120: 6, 300: 25, 600: 8, 900: 5, 1800: 6, 3600: 18, 14400: 5, 86400: 7}
A_PREFIXES = ((142, 250), (151, 101), (104, 16), (13, 32), (23, 45), (52, 84), (185, 199))
AAAA_PREFIXES = tuple(bytes.fromhex(p) for p in ("26064700", "2a044e42", "26009000", "20014860"))
NXDOMAIN_SHARE = {"benign/ordinary": 0.02, "benign/av-lookup": 0.7, "benign/dnsbl": 0.85,
                  "benign/acme": 0.6, "benign/reverse-ptr": 0.3, "benign/srv": 0.3,
                  "benign/chrome-probe": 1.0, "benign/ad-internal": 0.35,
                  "benign/dns-sd": 0.5, "benign/telemetry": 0.01}  # fmt: skip
# internal names that leak to the resolver: these TLDs are not delegated, so the root says NXDOMAIN
UNDELEGATED_TLDS = frozenset(("local", "lan", "corp", "internal", "home"))
AD_PORTS = {"_ldap": 389, "_kerberos": 88, "_gc": 3268, "_kpasswd": 464}
SD_PORTS = {  # DNS-SD service types (RFC 6763, IANA service names) and their usual ports
    "_ipp._tcp": 631, "_ipps._tcp": 631, "_printer._tcp": 515, "_pdl-datastream._tcp": 9100,
    "_uscan._tcp": 80, "_googlecast._tcp": 8009, "_airplay._tcp": 7000, "_raop._tcp": 7000,
    "_smb._tcp": 445, "_spotify-connect._tcp": 0,
}  # fmt: skip
_PRINTER_TXT = "txtvers=1|qtotal=1|rp=ipp/print|ty={inst}|pdl=application/pdf,image/urf|UUID={guid}"
SD_TXT = {  # TXT keys each service advertises; "|" separates the character-strings
    "_googlecast._tcp": "id={hex32}|cd={uhex32}|rm=|ve=05|md={model}|ic=/setup/icon.png"
                        "|fn={room}|ca=201221|st=0|bs=FA8F{uhex8}|nf=1|rs=",
    "_airplay._tcp": "deviceid={mac}|features=0x5A7FFFF7,0x1E|flags=0x244|model=AppleTV6,2"
                     "|pi={guid}|srcvers=670.6.2",
    "_raop._tcp": "cn=0,1,2,3|da=true|et=0,3,5|ft=0x5A7FFFF7,0x1E|md=0,1,2|am=AppleTV6,2"
                  "|tp=UDP|vn=65537|vs=670.6.2",
    "_smb._tcp": "", "_spotify-connect._tcp": "CPath=/zc/0|VERSION=1.0|Stack=SP",
    "_ipp._tcp": _PRINTER_TXT, "_ipps._tcp": _PRINTER_TXT, "_printer._tcp": _PRINTER_TXT,
    "_pdl-datastream._tcp": _PRINTER_TXT, "_uscan._tcp": "txtvers=1|vers=2.63|ty={inst}|rs=eSCL",
}  # fmt: skip
ULA_PREFIX = bytes.fromhex("fd3a9c1e00000000")
PTR_ZONES = ("isp.net", "dynamic.example.net", "compute.amazonaws.com", "static.telekom.de")
CDN_TARGETS = ("edgekey.net", "cdn.cloudflare.net", "map.fastly.net", "azureedge.net")
NS_HOSTS = ("ns1.{z}", "ns2.{z}", "ns-1{n}.awsdns-{n}.org", "dns{n}.p0{n}.nsone.net")
MX_HOSTS = _split(
    "aspmx.l.google.com alt1.aspmx.l.google.com mx1.{z} {d}.mail.protection.outlook.com"
)
TXT_RECORDS = (
    "v=spf1 include:_spf.google.com ~all", "v=spf1 include:spf.protection.outlook.com -all",
    "google-site-verification={b64}", "MS=ms{num}", "facebook-domain-verification={lo}",
)  # fmt: skip


def _cumulative(weights: dict) -> tuple[list, list[float]]:
    keys, total, cum = list(weights), 0.0, []
    for key in keys:
        total += weights[key]
        cum.append(total)
    return keys, [c / total for c in cum]


def draw_ttl(rng: random.Random) -> int:
    """The TTL of any answer the generator invents (one distribution for every class)."""
    keys, cum = _TTL_TABLE
    return keys[bisect.bisect(cum, rng.random())]


_TTL_TABLE = _cumulative(TTLS)


# ---------------------------------------------------------------------------
# wire form, fast: names packed once, records as bytes (the generator makes ~100k a second)

_HEADER = struct.Struct("!HHHHHH")
_TAIL = struct.Struct("!HH")
_RR = struct.Struct("!HHIH")
_POINTER = b"\xc0\x0c"  # the question's name
FLAG_RD = dnsmsg.FLAG_RD
_RESPONSE_FLAGS = dnsmsg.FLAG_QR | dnsmsg.FLAG_RD | dnsmsg.FLAG_RA


@functools.lru_cache(maxsize=1 << 14)  # full at 100k packets already (65536 held 16 MB)
def wire_name(name: str) -> bytes:
    """dnsmsg.pack_name for the generator's own (always legal) names, several times faster."""
    labels = name.rstrip(".").encode("latin-1").split(b".")
    if len(name) > 250 or max(map(len, labels)) > 63:
        return dnsmsg.pack_name(name)  # raises the usual ValueError
    return b"".join([bytes((len(label),)) + label for label in labels if label]) + b"\x00"


def _rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + _RR.pack(rtype, 1, ttl, len(rdata)) + rdata


def _message(
    qid: int, qname: str, qtype: int, rcode: int, answers: list[bytes], authority: list[bytes]
) -> bytes:
    head = _HEADER.pack(qid, _RESPONSE_FLAGS | rcode, 1, len(answers), len(authority), 0)
    return head + wire_name(qname) + _TAIL.pack(qtype, 1) + b"".join(answers) + b"".join(authority)


@functools.lru_cache(maxsize=1024)
def soa_record(zone: str) -> bytes:
    """The zone's SOA (negative answers carry it in the authority section)."""
    serial = 2026010100 + zlib.crc32(zone.encode()) % 997
    rdata = dnsmsg.rdata_soa(f"ns1.{zone}", f"hostmaster.{zone}", serial)
    return _rr(wire_name(zone), QTYPE["SOA"], 900, rdata)


_ROOT_SOA = _rr(
    b"\x00",
    QTYPE["SOA"],
    86400,
    dnsmsg.rdata_soa("a.root-servers.net", "nstld.verisign-grs.com", 2026112600, 86400),
)


def query(qid: int, qname: str, qtype: int) -> bytes:
    """A client's query (RD set, class IN)."""
    return _HEADER.pack(qid, FLAG_RD, 1, 0, 0, 0) + wire_name(qname) + _TAIL.pack(qtype, 1)


# ---------------------------------------------------------------------------
# answers


def answer(rng: random.Random, p, cls: str, qname: str, qtype: int, qid: int = 0) -> bytes:  # noqa: ANN001
    """A resolver's answer to one lookup of class `cls`; `p` draws hashes (benign.Pieces)."""
    name = qname.lower()  # the question may be in DNS 0x20 mixed case; the data is not
    zone = ".".join(name.split(".")[-2:])
    nxdomain = NXDOMAIN_SHARE.get(cls, 0.0)
    if rng.random() < nxdomain:
        root = cls == "benign/chrome-probe" or (
            cls in _INTERNAL and name.rsplit(".", 1)[-1] in UNDELEGATED_TLDS
        )
        return _message(qid, qname, qtype, 3, [], [_ROOT_SOA if root else soa_record(zone)])
    ttl = draw_ttl(rng)
    if cls in _INTERNAL:
        records = _INTERNAL[cls](rng, p, name, QTYPE_NAME[qtype], ttl)
        if records is not None:
            return _message(qid, qname, qtype, 0, records, [] if records else [soa_record(zone)])
    answers: list[bytes] = []
    owner = _POINTER
    if qtype in (1, 28) and cls in _BEHIND_CDN and rng.random() < 0.35:
        cdn = CDN_TARGETS[int(rng.random() * len(CDN_TARGETS))]
        target = wire_name(f"{name}.{cdn}" if len(name) < 200 else f"{p.hex(12)}.{cdn}")
        answers.append(_rr(owner, 5, ttl, target))
        owner = target
        if cdn == "edgekey.net":
            edge = wire_name(f"e{1000 + int(rng.random() * 98999)}.dscx.akamaiedge.net")
            answers.append(_rr(owner, 5, draw_ttl(rng), edge))
            owner = edge
    ttl = draw_ttl(rng)
    mnemonic = QTYPE_NAME[qtype]
    if mnemonic == "A":
        if cls == "benign/dnsbl":
            listed = bytes((127, 0, 0, rng.choice((2, 3, 4, 10))))  # the list's return code
            return _message(qid, qname, qtype, 0, [_rr(owner, 1, ttl, listed)], [])
        first, second = A_PREFIXES[int(rng.random() * len(A_PREFIXES))]
        for _ in range((1, 1, 2, 4)[rng.getrandbits(2)]):
            address = bytes((first, second, rng.getrandbits(8), 1 + int(rng.random() * 254)))
            answers.append(_rr(owner, 1, ttl, address))
    elif mnemonic == "AAAA":
        if rng.random() < 0.15:
            return _message(qid, qname, qtype, 0, answers, [soa_record(zone)])
        prefix = AAAA_PREFIXES[int(rng.random() * len(AAAA_PREFIXES))]
        for _ in range(1 + rng.getrandbits(1)):
            address = prefix + rng.randbytes(2) + bytes(8) + rng.randbytes(2)
            answers.append(_rr(owner, 28, ttl, address))
    elif mnemonic == "HTTPS":
        if rng.random() < 0.5:
            return _message(qid, qname, qtype, 0, [], [soa_record(zone)])
        alpn = rng.choice((("h2",), ("h2", "h3"), ("h3", "h2", "http/1.1")))
        answers.append(_rr(owner, qtype, ttl, dnsmsg.rdata_https(1, ".", alpn)))
    elif mnemonic in ("CNAME", "NS"):
        for index in range(1 if mnemonic == "CNAME" else rng.randint(2, 4)):
            if mnemonic == "NS":
                host = rng.choice(NS_HOSTS).format(z=zone, n=index + 1)
            else:
                host = f"{zone}.{rng.choice(CDN_TARGETS)}"
            answers.append(_rr(owner, qtype, ttl, wire_name(host)))
    elif mnemonic == "MX":
        for index in range(rng.randint(1, 4)):
            host = rng.choice(MX_HOSTS).format(z=zone, d=zone.replace(".", "-"))
            answers.append(_rr(owner, qtype, ttl, dnsmsg.rdata_mx(10 * (index + 1), host)))
    elif mnemonic == "TXT":
        answers.append(_rr(owner, qtype, ttl, dnsmsg.rdata_txt(_txt(rng, p, cls, zone))))
    elif mnemonic == "PTR":
        host = f"host-{p.hex(8)}.{rng.choice(PTR_ZONES)}"
        answers.append(_rr(owner, qtype, ttl, wire_name(host)))
    elif mnemonic == "SRV":
        for index in range(rng.randint(1, 3)):
            target = f"{rng.choice(('srv', 'dc', 'sip', 'xmpp'))}{index + 1}.{zone}"
            port = rng.choice((389, 88, 5061, 5222, 993, 443, 8448))
            answers.append(_rr(owner, qtype, ttl, dnsmsg.rdata_srv(0, 100, port, target)))
    return _message(qid, qname, qtype, 0, answers, [])


def _txt(rng: random.Random, p, cls: str, zone: str) -> str:  # noqa: ANN001
    if cls == "benign/dkim":
        key = base64.b64encode(rng.randbytes(rng.choice((162, 294)))).decode()
        return f"v=DKIM1; k=rsa; p={key}"
    if cls == "benign/dmarc":
        policy = rng.choice(("none", "quarantine", "reject"))
        return f"v=DMARC1; p={policy}; rua=mailto:dmarc-reports@{zone}; pct=100"
    if cls == "benign/acme":
        return base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")
    if cls == "benign/av-lookup":
        return f"{rng.randrange(1_600_000_000, 1_800_000_000)} {rng.randrange(0, 80)}"
    return rng.choice(TXT_RECORDS).format(
        b64=base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("="),
        num=rng.randrange(10**7, 10**8), lo=p.text(30, "abcdefghijklmnopqrstuvwxyz0123456789"),
    )  # fmt: skip


# ---------------------------------------------------------------------------
# answers from inside a network: Active Directory and DNS-SD (None: answer as any other class)


def _private_v4(rng: random.Random) -> bytes:
    first, second = rng.choice(((10, rng.getrandbits(8)), (172, 16 + rng.getrandbits(4)),
                                (192, 168)))  # fmt: skip
    return bytes((first, second, rng.getrandbits(8), 1 + int(rng.random() * 254)))


def _ad_answer(rng: random.Random, p, name: str, mnemonic: str, ttl: int) -> list[bytes] | None:  # noqa: ANN001
    """DC locator SRV and GUID CNAME records point at the domain's controllers; hosts are
    private addresses (AAAA mostly absent, else a unique local address)."""
    labels = name.split(".")
    under = [index for index, label in enumerate(labels) if label.startswith("_")]
    domain = ".".join(labels[under[-1] + 1 :] if under else labels[1:])
    if mnemonic == "SRV":
        port = AD_PORTS.get(labels[0], 389)
        return [
            _rr(_POINTER, 33, ttl, dnsmsg.rdata_srv(0, 100, port, f"dc{index:02d}.{domain}"))
            for index in range(1, rng.randint(1, 3) + 1)
        ]
    if mnemonic == "CNAME":
        return [_rr(_POINTER, 5, ttl, wire_name(f"dc{rng.randint(1, 4):02d}.{domain}"))]
    if mnemonic == "A":
        return [_rr(_POINTER, 1, ttl, _private_v4(rng))]
    if mnemonic == "AAAA":
        return [] if rng.random() < 0.6 else [_rr(_POINTER, 28, ttl, ULA_PREFIX + rng.randbytes(8))]
    return None


def sd_host(instance: str) -> str:
    """The host label behind a DNS-SD instance ("Anna's MacBook Pro" -> Annas-MacBook-Pro)."""
    name = instance.split("@")[-1].replace("'", "")  # RAOP instances are <MAC>@<name>
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())[:63]


def _sd_answer(rng: random.Random, p, name: str, mnemonic: str, ttl: int) -> list[bytes] | None:  # noqa: ANN001
    """RFC 6763 records: browse domains, service types, instances with SRV, TXT and address."""
    labels = name.split(".")
    at = next((i for i in range(1, len(labels)) if labels[i] in ("_tcp", "_udp")), None)
    if at is None:  # the instance's host
        return [_rr(_POINTER, 1, ttl, _private_v4(rng))] if mnemonic == "A" else []
    service, domain = f"{labels[at - 1]}.{labels[at]}", ".".join(labels[at + 1 :])
    if mnemonic == "PTR" and service == "_dns-sd._udp":
        if labels[0] == "_services":
            targets = [f"{s}.{domain}" for s in rng.sample(list(SD_PORTS), rng.randint(1, 3))]
        else:
            targets = ["home.arpa" if domain.endswith("in-addr.arpa") else domain]
    elif mnemonic == "PTR":
        targets = [f"{p.sd_instance(service)}.{service}.{domain}" for _ in range(rng.randint(1, 2))]
    elif mnemonic == "SRV":
        port = SD_PORTS.get(service) or rng.randrange(32768, 61000)
        host = f"{sd_host(labels[0])}.{domain}"
        return [_rr(_POINTER, 33, ttl, dnsmsg.rdata_srv(0, 0, port, host))]
    elif mnemonic == "TXT":
        cast = labels[0].rsplit("-", 1)
        fields = {"inst": labels[0].split(" [")[0], "room": p.sd_room(), "mac": p.mac(),
                  "model": cast[0].replace("-", " "), "hex32": cast[-1]}  # fmt: skip
        text = p.fill(SD_TXT.get(service, "txtvers=1"), **fields)
        return [_rr(_POINTER, 16, ttl, dnsmsg.rdata_txt(*text.split("|")))]
    else:
        return None
    return [_rr(_POINTER, 12, ttl, wire_name(target)) for target in targets]


_INTERNAL = {"benign/ad-internal": _ad_answer, "benign/dns-sd": _sd_answer}
_BEHIND_CDN = frozenset((ORDINARY, "benign/telemetry"))  # whose addresses may come via a CDN CNAME
