"""How alerts are shown and handed on: the terminal table, ECS JSON lines for a SIEM, and a
DNS Response Policy Zone that blocks the alerted domains (the book in exfil/alerts.py keeps
the sums; these only format what alerts.json holds)."""

from __future__ import annotations

import json
import time

from exfil.alerts import iso_utc

MIN_EXFIL_BYTES = 1024  # an alert whose names carry this much upstream is also T1048.003
TECHNIQUES = {  # MITRE ATT&CK: id -> (technique, tactic id, tactic)
    "T1071.004": ("Application Layer Protocol: DNS", "TA0011", "Command and Control"),
    "T1048.003": (
        "Exfiltration Over Alternative Protocol: Exfiltration Over Unencrypted Non-C2 Protocol",
        "TA0010",
        "Exfiltration",
    ),
}
RULE_NAME = "DNS tunnel or exfiltration under one registered domain"


def format_alerts(alerts: list[dict]) -> str:
    """A fixed-width table for the terminal."""
    if not alerts:
        return "no alerts"
    header = (
        f"{'domain':<32} {'queries':>8} {'answers':>8} {'names':>7} {'~bytes out':>10} "
        f"{'score':>6}  {'first seen (UTC)':<20} clients"
    )
    lines = [header, "-" * len(header)]
    for alert in alerts:
        clients = ",".join(alert["clients"][:3]) + ("..." if len(alert["clients"]) > 3 else "")
        first = (alert["first_seen"] or "")[:19].replace("T", " ")
        lines.append(
            f"{alert['domain'][:32]:<32} {alert['queries']:>8} {alert['responses']:>8} "
            f"{alert['unique_names']:>7} {alert['estimated_bytes_exfiltrated']:>10} "
            f"{alert['mean_score']:>6.3f}  {first:<20} {clients}"
        )
    return "\n".join(lines)


def score_in_words(mean_score: float, threshold: float) -> str:
    """How an alert's flagged packets scored against the decision threshold, for a reader."""
    ratio = mean_score / threshold if threshold > 0 else float("inf")
    strength = "far above" if ratio >= 2 else "above" if ratio >= 1.2 else "just above"
    return (
        f"mean score {mean_score:.3f} of flagged packets, {strength} the threshold {threshold:.3f}"
    )


def techniques(alert: dict) -> list[str]:
    """ATT&CK technique ids: DNS as the channel always, exfiltration when names carry data."""
    found = ["T1071.004"]
    if alert.get("estimated_bytes_exfiltrated", 0) >= MIN_EXFIL_BYTES:
        found.append("T1048.003")
    return found


def ecs_alert(alert: dict, report: dict, created: str | None = None) -> dict:
    """One alert as an Elastic Common Schema document (what Elastic, Splunk CIM mappings and
    most SIEM pipelines ingest): the fields a rule or a dashboard keys on, then the evidence.
    @timestamp is when the traffic raised it; traffic without times (a list of names) takes
    the time of the scan, `created`."""
    created = created or iso_utc(time.time())
    ids = techniques(alert)
    first = alert.get("first_alert") or {}
    top = alert["per_client"][0]["client"] if alert.get("per_client") else None
    return {
        "@timestamp": first.get("time_utc") or alert["first_seen"] or created,
        "event": {
            "kind": "alert",
            "created": created,
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "module": "exfil-detect",
            "dataset": "exfil_detect.alert",
            "start": alert["first_seen"],
            "end": alert["last_seen"],
            "risk_score": round(100 * alert["mean_score"], 1),
        },
        "rule": {"name": RULE_NAME, "ruleset": "exfil-detect", "reference": report["model"]},
        "message": f"possible DNS tunnel to {alert['domain']}: {alert['unique_names']} unique "
        f"names, about {alert['estimated_bytes_exfiltrated']} bytes out",
        "dns": {
            "question": {
                "registered_domain": alert["domain"],
                "name": alert["examples"][0] if alert["examples"] else None,
            }
        },  # fmt: skip
        "source": {"ip": top},
        "related": {"ip": alert["clients"], "hosts": [alert["domain"]]},
        "threat": {
            "framework": "MITRE ATT&CK",
            "technique": {"id": ids, "name": [TECHNIQUES[i][0] for i in ids]},
            "tactic": {
                "id": [TECHNIQUES[i][1] for i in ids],
                "name": [TECHNIQUES[i][2] for i in ids],
            },  # fmt: skip
        },
        "exfil_detect": {
            "queries": alert["queries"],
            "responses": alert["responses"],
            "unique_names": alert["unique_names"],
            "estimated_bytes_exfiltrated": alert["estimated_bytes_exfiltrated"],
            "domain_bytes": first.get("domain_bytes"),
            "examples": alert["examples"],
            "reasons": alert["why"],
            "score": alert["score"],
            "per_client": alert["per_client"],
            "captures": alert["captures"],
        },
    }


def ndjson_text(report: dict) -> str:
    """alerts.json's alerts as ECS JSON lines, one object per alert."""
    created = iso_utc(time.time())
    return "".join(json.dumps(ecs_alert(a, report, created)) + "\n" for a in report["alerts"])


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def zone_name(domain: str) -> str:
    """A domain as master-file text: any byte outside letters, digits, '-', '_' as \\DDD
    (RFC 1035), so a hostile name cannot break or inject lines into the zone."""
    return "".join(c if c in _SAFE else "".join(f"\\{b:03d}" for b in c.encode("latin-1",
                   "replace")) for c in domain)  # fmt: skip


def rpz_text(domains: list[str], origin: str = "rpz.exfil-detect.local") -> str:
    """A Response Policy Zone answering NXDOMAIN (`CNAME .`) for each domain and all under it.

    Load it in BIND (`response-policy { zone "ORIGIN"; };`), Unbound (`rpz:` with `zonefile:`)
    or PowerDNS Recursor (`rpzFile`). The serial is the time of writing, so a reload picks it up.
    """
    serial = int(time.time())
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 300",
        f"@ IN SOA localhost. hostmaster.localhost. ({serial} 3600 600 86400 300)",
        "@ IN NS localhost.",
        "; one pair per alerted domain: the name itself and everything under it",
    ]
    for domain in map(zone_name, domains):
        lines += [f"{domain} IN CNAME .", f"*.{domain} IN CNAME ."]
    return "\n".join(lines) + "\n"
