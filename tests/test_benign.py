"""benign.py's odd-but-real classes (AD, DNS-SD, telemetry, many-label wordy, long-tail sites)
and DNS 0x20."""

import hashlib
import random
import re

import pytest

from data_generating_codes import benign
from data_generating_codes.benign_answers import AD_PORTS, SD_PORTS, sd_host
from exfil.dnsmsg import QTYPE, pack_name, parse_message, qtype_name

SHAPED = ("benign/ad-internal", "benign/dns-sd", "benign/telemetry")  # name shapes below
NEW = (*SHAPED, "benign/long-tail")
OLD_SHARES = {cls: share for cls, share in benign.HARD_SHARES.items() if cls not in NEW}

GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
AD_DOM = r"[a-z0-9]+\.(local|lan|corp|internal)|(corp|ad)\.[a-z0-9]+\.com"
AD_SHAPES = {  # qtype: the name shapes Windows asks for
    "SRV": (
        r"_ldap\._tcp\.(p?dc\._msdcs\.|[A-Za-z0-9-]+\._sites\.dc\._msdcs\.|" + GUID
        + r"\.domains\._msdcs\.)?(?P<dom>%D)",
        r"_kerberos\._(tcp|udp)\.([A-Za-z0-9-]+\._sites\.|dc\._msdcs\.)?(?P<dom>%D)",
        r"_(gc\._tcp|kpasswd\._udp)\.(?P<dom>%D)",
    ),
    "CNAME": (GUID + r"\._msdcs\.(?P<dom>%D)",),
    "A": (r"(WIN-[A-Z0-9]{11}|DESKTOP-[A-Z0-9]{7}|LAPTOP-[A-Z0-9]{8}|[a-z]+-[a-z]+\d\d|wpad)"
          r"\.(?P<dom>%D)",),
}  # fmt: skip
AD_SHAPES["AAAA"] = AD_SHAPES["A"]
SD_ZONE = r"(home\.arpa|lan|" + AD_DOM + ")"
SD_SERVICE = "(" + "|".join(re.escape(s) for s in SD_PORTS) + ")"
SD_SHAPES = {
    "PTR": (
        r"(b|db|r|dr|lb)\._dns-sd\._udp\.(" + SD_ZONE + r"|0(\.\d{1,3}){3}\.in-addr\.arpa)",
        r"_services\._dns-sd\._udp\." + SD_ZONE,
        SD_SERVICE + r"\." + SD_ZONE,
    ),
    "SRV": (r"[^.]+\." + SD_SERVICE + r"\." + SD_ZONE,),
    "A": (r"[A-Za-z0-9-]+\." + SD_ZONE,),
}
SD_SHAPES["TXT"] = SD_SHAPES["SRV"]
FIELD_SHAPES = {"guid": GUID, "dig6": r"\d{6}", "dig16": r"\d{16}", "lo15": "[a-z0-9]{15}",
                "d1": "[1-8]", "project": r"[a-z]+-[a-z]+-[a-z0-9]{5}"}  # fmt: skip


def _telemetry_shape(template: str) -> str:
    parts = re.split(r"\{(\w+)\}", template)
    return "".join(
        FIELD_SHAPES.get(part, "[a-z0-9-]+") if odd else re.escape(part)
        for odd, part in zip([i % 2 for i in range(len(parts))], parts, strict=True)
    )


TELEMETRY = [re.compile(_telemetry_shape(t)) for t in benign.TELEMETRY_FORMATS]
WORDED = r"[a-z]+(-[a-z]+)+"
MANY_LABELS = (
    rf"(?P<a>{WORDED})\.(?P<b>{WORDED})\.({'|'.join(benign.ENVS)})\."
    rf"({'|'.join(benign.REGIONS)})\.({'|'.join(benign.PLACES)})\.[a-z]+-[a-z]+\.(com|net|io)",
    rf"(?P<a>{WORDED})\.(?P<b>[a-z-]+)-({'|'.join(benign.ENVS)})\.svc\.cluster\.local",
)


def _shape(cls: str, name: str, qtype: str) -> bool:
    """Whether `name` has one of the documented shapes of its class for this qtype."""
    if cls == "benign/ad-internal":
        return any(re.fullmatch(s.replace("%D", AD_DOM), name) for s in AD_SHAPES[qtype])
    if cls == "benign/dns-sd":
        return any(re.fullmatch(s, name) for s in SD_SHAPES[qtype])
    if cls == "benign/telemetry":
        return qtype in ("A", "AAAA") and any(s.fullmatch(name) for s in TELEMETRY)
    match = next(filter(None, (re.fullmatch(s, name) for s in MANY_LABELS)), None)
    if match is None:  # the one-label wordy form: a long label of words
        label = name.split(".")[0]
        return len(label) >= 20 and all(word in benign.WORDS for word in label.split("-"))
    words = match["a"].split("-") + match["b"].split("-")
    return len(name) <= 120 and len(match["a"]) >= 20 and set(words) <= set(benign.WORDS)


def _draws(cls: str, sessions: int = 400, seed: int = 7) -> list[tuple[str, str]]:
    model = benign.BenignModel(random.Random(seed))
    return [lookup for _ in range(sessions) for lookup in model._hard[cls]()]


# ---------------------------------------------------------------------------
# names


@pytest.mark.parametrize("cls", [*SHAPED, "benign/wordy-long"])
def test_names_are_legal_and_have_their_shapes(cls):
    lookups = _draws(cls)
    for name, qtype in lookups:
        labels = name.split(".")
        assert len(name) <= 253 and all(0 < len(label) <= 63 for label in labels), name
        pack_name(name)  # the wire form is legal too
        assert _shape(cls, name, qtype), (cls, name, qtype)
    qtypes = {qtype for _, qtype in lookups}
    expected = {"benign/ad-internal": {"SRV", "CNAME", "A", "AAAA"},
                "benign/dns-sd": {"PTR", "SRV", "TXT", "A"},
                "benign/telemetry": {"A", "AAAA"}, "benign/wordy-long": {"A", "AAAA"}}  # fmt: skip
    assert qtypes == expected[cls]


def test_every_documented_form_occurs():
    """Each AD and DNS-SD form and every telemetry host format shows up in a few hundred draws."""
    ad = [name for name, _ in _draws("benign/ad-internal", 600)]
    seen = {name.split(".")[0].split("-")[0] for name in ad}
    assert {"WIN", "DESKTOP", "LAPTOP", "wpad", "_ldap", "_kerberos", "_gc", "_kpasswd"} <= seen
    assert any(re.match(GUID + r"\._msdcs\.", name) for name in ad)
    assert any("._sites." in name for name in ad) and any(".domains._msdcs." in name for name in ad)
    sd = [name for name, _ in _draws("benign/dns-sd", 600)]
    assert any(" " in name for name in sd) and any(".in-addr.arpa" in name for name in sd)
    assert {name.split(".")[0] for name in sd} >= {"b", "db", "r", "dr", "lb", "_services"}
    telemetry = {name for name, _ in _draws("benign/telemetry", 1500)}
    assert all(any(s.fullmatch(n) for n in telemetry) for s in TELEMETRY)
    wordy = [name for name, _ in _draws("benign/wordy-long", 1000)]
    many = sum(any(re.fullmatch(s, n) for s in MANY_LABELS) for n in wordy) / len(wordy)
    assert abs(many - benign.WORDY_MANY) < 0.06 and max(map(len, wordy)) > 100


def test_known_answers():
    """Fixed vectors: the helpers' output for given inputs and a seeded rng."""
    assert sd_host("Anna's MacBook Pro") == "Annas-MacBook-Pro"
    assert sd_host("7C2F80A1B2C3@Living Room") == "Living-Room"
    assert sd_host("HP OfficeJet Pro 9010 series [A1B2C3]") == "HP-OfficeJet-Pro-9010-series-A1B2C3"
    assert benign.randomise_case("www.example.com", random.Random(0)) == "wWW.ExamplE.cOM"
    assert benign.randomise_case("1.2.3.4.in-addr.arpa", random.Random(3)).lower() == (
        "1.2.3.4.in-addr.arpa"
    )
    pieces = benign.Pieces(random.Random(1))
    assert re.fullmatch(GUID, pieces.guid()) and re.fullmatch(r"([0-9A-F]{2}:){5}[0-9A-F]{2}",
                                                              pieces.mac())  # fmt: skip


# ---------------------------------------------------------------------------
# answers


def _answer(model: benign.BenignModel, cls: str, name: str, qtype: str):  # noqa: ANN202
    message = parse_message(model.response(0x1234, cls, name, QTYPE[qtype]))
    assert message.id == 0x1234 and message.questions[0][0] == name.encode("latin-1")
    return message


def test_answers_fit_the_class():
    model = benign.BenignModel(random.Random(5))
    srv_ports, sd_txt, answered = set(), 0, {cls: 0 for cls in SHAPED}
    for cls in SHAPED:
        for name, qtype in _draws(cls, 300, seed=9):
            message = _answer(model, cls, name, qtype)
            rcode, records = message.flags & 0xF, message.answers
            assert rcode in (0, 3)
            answered[cls] += bool(records)
            for record in records:
                assert qtype_name(record.rtype) in (qtype, "CNAME"), (name, qtype, record)
            if cls == "benign/ad-internal" and qtype == "SRV" and records:
                srv_ports |= {int.from_bytes(r.rdata[4:6], "big") for r in records}
            if cls == "benign/dns-sd" and qtype == "TXT" and records:
                sd_txt += 1
                if "._googlecast._tcp." in name:  # the TXT id is the instance's own
                    assert name.split(".")[0].rsplit("-", 1)[1].lower().encode() in records[0].rdata
            if cls != "benign/telemetry" and qtype == "A" and records:
                assert records[-1].rdata[0] in (10, 172, 192)  # internal hosts are private
    assert srv_ports <= set(AD_PORTS.values()) and len(srv_ports) >= 3
    assert sd_txt > 0 and all(count > 50 for count in answered.values()), answered


def test_undelegated_tlds_are_nxdomain_from_the_root():
    """Leaked .local/.lan names are denied by the root (its SOA); a real zone denies its own."""
    model = benign.BenignModel(random.Random(2))
    for name, root in (("DESKTOP-4JQ7T2M.contoso.local", True), ("wpad.corp.adatum.com", False)):
        replies = [model.response(1, "benign/ad-internal", name, QTYPE["A"]) for _ in range(60)]
        denied = [reply for reply in replies if reply[3] & 0xF == 3]
        assert 8 < len(denied) < 40  # NXDOMAIN_SHARE 0.35
        authority = 12 + len(pack_name(name)) + 4
        assert all(r[authority : authority + 3] == b"\x00\x00\x06" for r in denied) == root


def test_long_tail_sites_are_outside_the_popular_list_and_look_like_registrations():
    model = benign.BenignModel(random.Random(9))
    popular = set(benign.DOMAINS)
    sites, coded = set(), 0
    for _ in range(2000):
        lookups = model._long_tail()
        assert 1 <= len(lookups) <= 2 and {q for _, q in lookups} <= {"A", "AAAA"}
        assert len({name for name, _ in lookups}) == 1  # one host, A then maybe AAAA
        name = lookups[0][0]
        host = name.removeprefix("www.")
        site, tld = host.split(".", 1)
        assert tld in benign.LONG_TAIL_TLDS and host not in popular
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", site) and len(site) <= 63
        sites.add(host)
        coded += bool(re.fullmatch(r"[a-z]{2,5}-?\d{2,6}", site))
    assert len(sites) > 1900  # the long tail: nearly every visit a new site
    assert 0.1 < coded / 2000 < 0.3  # some brand or product codes among the word-joined names


# ---------------------------------------------------------------------------
# shares and DNS 0x20


def test_new_classes_come_at_their_shares():
    model = benign.BenignModel(random.Random(4))
    counts: dict[str, int] = {}
    for _ in range(15000):
        for cls, *_ in model.session():
            counts[cls] = counts.get(cls, 0) + 1
    total = sum(counts.values())
    for cls in [*NEW, "benign/wordy-long"]:
        share = counts.get(cls, 0) / total
        assert 0.7 < share / benign.HARD_SHARES[cls] < 1.4, (cls, share)
    assert set(benign.CLASSES) >= set(NEW)


def test_zero_shares_keep_the_old_draws():
    """With the new shares, wordy_many and mixed_case at 0 the model draws exactly what it drew
    before they existed (digest of the sessions and answers made by the code of before)."""
    model = benign.BenignModel(random.Random(11), OLD_SHARES, wordy_many=0.0, mixed_case=0.0)
    digest = hashlib.sha256()
    for _ in range(300):
        for cls, qname, qtype, when in model.session():
            digest.update(f"{cls} {qname} {qtype} {when!r}".encode())
            digest.update(model.response(qtype, cls, qname, qtype))
    assert digest.hexdigest()[:16] == "f130f8fa2f285446"


def test_mixed_case_flips_a_share_of_sessions_and_only_case():
    mixed = benign.BenignModel(random.Random(1), mixed_case=0.3)
    plain = benign.BenignModel(random.Random(), mixed_case=0.0)
    flipped, sessions = 0, 3000
    for _ in range(sessions):
        state = mixed.rng.getstate()
        sent = mixed.session()
        plain.rng.setstate(state)  # the same draws, but for the flip (made after them)
        asked = plain.session()
        assert [(c, n.lower(), q, t) for c, n, q, t in sent] == [
            (c, n.lower(), q, t) for c, n, q, t in asked
        ]
        flipped += sent != asked
    assert abs(flipped / sessions - 0.3) < 0.035
    with pytest.raises(ValueError):
        benign.BenignModel(random.Random(1), mixed_case=1.5)


def test_answers_echo_the_mixed_case_question():
    model = benign.BenignModel(random.Random(6), mixed_case=1.0)
    seen = set()
    for _ in range(2000):
        for cls, qname, qtype, _ in model.session():
            message = parse_message(model.response(7, cls, qname, qtype))
            assert message.questions[0][0] == qname.encode("latin-1")
            seen.add(cls)
    assert seen >= {benign.ORDINARY, *NEW}
    # a cached ordinary answer: the same records, the question in the case it was asked in
    lower = model.response(1, benign.ORDINARY, "www.example.com", 1)
    upper = model.response(1, benign.ORDINARY, "wWw.ExaMple.COM", 1)
    assert upper != lower and upper.lower() == lower.lower() and len(upper) == len(lower)
