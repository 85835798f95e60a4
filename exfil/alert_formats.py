"""How alerts are shown: the terminal table (the book in exfil/alerts.py keeps the sums)."""

from __future__ import annotations


def format_alerts(alerts: list[dict]) -> str:
    """A fixed-width table for the terminal."""
    if not alerts:
        return "no alerts"
    header = f"{'domain':<32} {'queries':>8} {'names':>7} {'~bytes out':>10} {'score':>6}  clients"
    lines = [header, "-" * len(header)]
    for alert in alerts:
        clients = ",".join(alert["clients"][:3]) + ("..." if len(alert["clients"]) > 3 else "")
        lines.append(
            f"{alert['domain'][:32]:<32} {alert['queries']:>8} {alert['unique_names']:>7} "
            f"{alert['estimated_bytes_exfiltrated']:>10} {alert['mean_score']:>6.3f}  {clients}"
        )
    return "\n".join(lines)
