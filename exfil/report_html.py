"""detect.py --report: one self-contained HTML page an analyst opens after a scan.

Inline CSS and SVG only (no script, no network): the alert table, per alert a timeline of its
flagged packets and bytes per minute and its clients, the score histogram of every packet with
the threshold, the near misses and what the allowlist suppressed. Every text that comes from
traffic is escaped: a hostile query name is shown, never run.
"""

from __future__ import annotations

from html import escape

import numpy as np

PACKETS_COLOUR, BYTES_COLOUR, THRESHOLD_COLOUR = "#1f77b4", "#ff7f0e", "#d62728"
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f0f0f0;text-align:left}td.n{text-align:right}code{font-size:12px;word-break:break-all}
.alert{border-left:4px solid #d62728;padding-left:12px;margin:12px 0}
svg text{font-size:11px;fill:#333}
"""


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v:,}</td>' if isinstance(v, int) else f"<td>{escape(str(v))}</td>"
            for v in row
        )
        + "</tr>"  # fmt: skip
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _bars(values: list[float], labels: list[str], colour: str, title: str, x_title: str,
          y_title: str, marker: float | None = None, log: bool = False) -> str:  # fmt: skip
    """A bar chart as SVG, axes titled; `marker` draws a vertical line at that x share."""
    width, height, left, bottom = 640, 200, 60, 40
    plot_w, plot_h = width - left - 10, height - bottom - 24
    shown = np.log10(np.asarray(values, float) + 1) if log else np.asarray(values, float)
    top = float(shown.max()) if len(shown) and shown.max() > 0 else 1.0
    step = min(plot_w / max(len(values), 1), 48.0)  # one minute is a bar, not the whole plot
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" style="font-weight:bold">{escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
             'stroke="#333"/>',
             f'<line x1="{left}" y1="24" x2="{left}" y2="{height - bottom}" '
             'stroke="#333"/>']  # fmt: skip
    for i, value in enumerate(shown):
        bar = plot_h * value / top
        parts.append(f'<rect x="{left + i * step + 0.5:.1f}" y="{height - bottom - bar:.1f}" '
                     f'width="{max(step - 1, 0.5):.1f}" height="{bar:.1f}" fill="{colour}">'
                     f"<title>{escape(labels[i])}: {values[i]:,.0f}</title></rect>")  # fmt: skip
    if labels:
        for i in sorted({0, len(labels) // 2, len(labels) - 1}):
            parts.append(f'<text x="{left + i * step:.1f}" y="{height - bottom + 14}">'
                         f"{escape(labels[i])}</text>")  # fmt: skip
    top_label = f"{10**top - 1:,.0f}" if log else f"{top:,.0f}"
    parts += [f'<text x="4" y="30">{top_label}</text>',
              f'<text x="4" y="{height - bottom}">0</text>',
              f'<text x="{left + plot_w / 2 - 40:.0f}" y="{height - 4}">{escape(x_title)}</text>',
              f'<text x="12" y="{24 + plot_h / 2:.0f}" transform="rotate(-90 12 '
              f'{24 + plot_h / 2:.0f})">{escape(y_title + (" (log)" if log else ""))}'
              "</text>"]  # fmt: skip
    if marker is not None:
        x = left + plot_w * marker
        parts.append(f'<line x1="{x:.1f}" y1="24" x2="{x:.1f}" y2="{height - bottom}" '
                     f'stroke="{THRESHOLD_COLOUR}" stroke-width="2" stroke-dasharray="5,3"/>'
                     f'<text x="{x + 4:.1f}" y="36" style="fill:{THRESHOLD_COLOUR}">threshold'
                     "</text>")  # fmt: skip
    return "".join(parts) + "</svg>"


def _alert_section(alert: dict) -> str:
    timeline = alert.get("timeline", [])
    minutes = [row[0][11:16] if row[0] else "?" for row in timeline]
    clients = alert.get("per_client", [])[:20]
    parts = [
        f'<div class="alert"><h3>{escape(alert["domain"])}</h3>',
        f"<p>{alert['queries']:,} flagged queries and {alert['responses']:,} responses, "
        f"{alert['unique_names']:,} unique names, about {alert['estimated_bytes_exfiltrated']:,}"
        f" bytes out; {escape(alert['first_seen'] or '')} to {escape(alert['last_seen'] or '')}"
        f" (UTC); {escape(alert.get('score', ''))}.</p>",
        "<p>Examples: " + ", ".join(f"<code>{escape(e)}</code>" for e in alert["examples"])
        + "</p><p>Why: " + escape("; ".join(alert["why"])) + "</p>",
        _bars([row[1] for row in timeline], minutes, PACKETS_COLOUR,
              "flagged packets per minute", "minute (UTC)", "packets"),
        _bars([row[2] for row in timeline], minutes, BYTES_COLOUR,
              "DNS bytes of flagged packets per minute", "minute (UTC)", "bytes"),
        _bars([c["queries"] + c["responses"] for c in clients], [c["client"] for c in clients],
              PACKETS_COLOUR, "flagged packets per client", "client", "packets"),
        _table([[c["client"], c["queries"], c["responses"], c["unique_names"], c["bytes"]]
                for c in clients], ["client", "queries", "responses", "unique names", "bytes"]),
        "</div>",
    ]  # fmt: skip
    return "".join(parts)


def render_report(report: dict, histogram: np.ndarray) -> str:
    """The page for alerts.json's `report` and the score histogram of every packet."""
    alerts, threshold = report["alerts"], float(report["threshold"])
    bins = len(histogram)
    labels = [f"{i / bins:.2f}-{(i + 1) / bins:.2f}" for i in range(bins)]
    total = int(histogram.sum())
    flagged = int(histogram[int(min(threshold, 1.0) * bins) :].sum()) if total else 0
    summary = _table(
        [[a["domain"], a["queries"], a["responses"], a["unique_names"],
          a["estimated_bytes_exfiltrated"], a["first_seen"] or "", ", ".join(a["clients"][:3])]
         for a in alerts],
        ["domain", "queries", "responses", "unique names", "~bytes out", "first seen (UTC)",
         "clients"],
    ) if alerts else "<p>No alerts.</p>"  # fmt: skip
    near = _table([[r["domain"], r["distinct_flagged_names"], r["flagged_packets"],
                    r["domain_packets"], r["why_not"]] for r in report["near_misses"]],
                  ["domain", "flagged names", "flagged packets", "packets", "why not alerted"]
                  ) if report["near_misses"] else "<p>None.</p>"  # fmt: skip
    suppressed = _table([[r["domain"], r["reason"], r["queries"], r["unique_names"]]
                         for r in report["suppressed"]],
                        ["allowlist entry", "reason", "flagged queries", "unique names"]
                        ) if report["suppressed"] else "<p>None.</p>"  # fmt: skip
    return "".join([
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>exfil-detect report</title><style>", STYLE, "</style></head><body>",
        "<h1>exfil-detect: DNS exfiltration report</h1>",
        f"<p>Model <code>{escape(str(report['model']))}</code>, threshold {threshold:.4f}; "
        f"{total:,} DNS packets scored, {flagged:,} flagged (about "
        f"{flagged / max(total, 1):.2%}); {len(alerts)} domain(s) alerted.</p>",
        f"<h2>Alerts ({len(alerts)})</h2>", summary,
        *(_alert_section(alert) for alert in alerts),
        "<h2>Scores of every packet</h2>",
        _bars(histogram.tolist(), labels, PACKETS_COLOUR, "packets per score bin", "score",
              "packets", marker=min(threshold, 1.0), log=True),
        "<h2>Near misses</h2>", near, "<h2>Suppressed by the allowlist</h2>", suppressed,
        "</body></html>",
    ])  # fmt: skip
