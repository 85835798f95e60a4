"""Text outputs of evaluate.py: the console table, per-group tables and results/report.md."""

from __future__ import annotations

COLUMNS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "fpr")


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def main_table(metrics: dict, markdown: bool = False) -> str:
    """One row per model: the headline metrics at its threshold and inference packets/s."""
    header = ["model", *COLUMNS, "threshold", "packets/s"]
    rows = [
        [
            name,
            *(_cell(m[k]) for k in COLUMNS),
            f"{m['threshold']:.4g}",
            f"{m['packets_per_s']:,.0f}",
        ]
        for name, m in metrics.items()
    ]
    return _render(header, rows, markdown)


def domain_table(metrics: dict, markdown: bool = False) -> str:
    """Per model: tunnel domains alerted, benign domains alerted, how soon (queries, seconds)."""
    header = ["model", "tunnel domains alerted", "benign domains alerted", "queries to alert",
              "seconds to alert"]  # fmt: skip
    sessions = any("sessions_total" in (m.get("domains") or {}) for m in metrics.values())
    if sessions:  # one exfiltrated file's names may spread over many domains
        header.insert(1, "tunnel sessions alerted")
    rows = []
    for name, m in metrics.items():
        d = m.get("domains")
        if not d:
            continue
        soon = [d["median_queries_to_alert"], d["median_seconds_to_alert"]]
        row = [name, f"{d['tunnel_alerted']} / {d['tunnel_total']}",
               f"{d['benign_alerted']} / {d['benign_total']}",
               *("-" if v is None else f"{v:.4g}" for v in soon)]  # fmt: skip
        if sessions:
            row.insert(1, f"{d.get('sessions_alerted', '-')} / {d.get('sessions_total', '-')}")
        rows.append(row)
    return _render(header, rows, markdown)


def group_table(metrics: dict, key: str, markdown: bool = False) -> str:
    """Share flagged per group (rows) and model (columns), e.g. recall per exfiltrated file."""
    names = list(metrics)
    groups = []
    for m in metrics.values():
        groups += [g for g in m.get(key, {}) if g not in groups]
    if not groups:
        return ""
    rows = []
    for group in groups:
        first = next(m[key][group] for m in metrics.values() if group in m.get(key, {}))
        cells = [_cell(metrics[n].get(key, {}).get(group, {}).get("flagged")) for n in names]
        rows.append([group, str(first["packets"]), *cells])
    return _render([key.replace("_", " "), "packets", *names], rows, markdown)


def _render(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*r) for r in rows)])


GROUPS = {
    "recall_per_file": "Recall per exfiltrated file",
    "recall_per_style": "Recall per exfiltration style",
    "recall_per_family": "Recall per tunnel family",
    "recall_per_qtype": "Recall per query type (malicious packets)",
    "flagged_per_class": "Share flagged per traffic class (recall for exfil/*, FPR for benign/*)",
}


def markdown_report(metrics: dict, context: dict, plots: list[str]) -> str:
    """results/report.md: the table, group tables, label-noise note, verdict, plot links."""
    parts = [
        "# Evaluation on the test capture",
        "",
        f"Test folder `{context['test']}` ({context['packets']} packets, "
        f"{context['malicious']} malicious); baselines fitted on `{context['data']}`. "
        "Each model flags a packet when its score is at least its threshold, fitted on its own "
        "validation split (held-out files + the last time block of the training capture; rule "
        "per model in metrics.json `threshold_rule`).",
        "",
        main_table(metrics, markdown=True),
        "",
    ]
    nets = [n for n in ("ae_clf", "clf", "lstm") if n in metrics]
    if nets:
        verdict = ", ".join(f"{n} F1 = {_cell(metrics[n]['f1'])}" for n in nets)
        met = all((metrics[n]["f1"] or 0) >= 0.99 for n in nets)
        parts += [
            f"Target F1 >= 0.99 on the test capture: {'met' if met else 'NOT met'} ({verdict}).",
            "",
        ]
    parts += [
        "## Per domain",
        "",
        "Registered domains alerted when each model's flags go through detect.py's alert rule "
        "(no allowlist), beside two rules practitioners run: `rule_subdomains` (RITA: >= 100 "
        "distinct names under a domain) and `rule_hourly` (Zeek anomalous-dns: > 8 within an "
        "hour). Queries and seconds: median from a tunnel domain's first packet to its alert.",
        "",
        domain_table(metrics, markdown=True),
        "",
    ]
    for key, title in GROUPS.items():
        table = group_table(metrics, key, markdown=True)
        if table:
            parts += [f"## {title}", "", table, ""]
    noise = context.get("time_labels")
    if noise:
        parts += [
            "## Time-window labels vs exact labels",
            "",
            f"`{noise['path']}` agrees with the exact labels on "
            f"{_cell(noise['agreement'])} of packets: {noise['benign_labelled_malicious']} "
            f"benign packets labelled malicious, {noise['malicious_labelled_benign']} "
            "malicious packets labelled benign.",
            "",
        ]
    if context.get("leave_one_out"):
        parts += [
            "## Leave one family out",
            "",
            "Each row: the models retrained without that tunnel family (evaluate.py "
            "--leave-one-out), recall on its packets; its domains alerted and the test "
            "capture's benign domains alerted; then false-positive rates on the test "
            "capture's benign traffic. The two domain rules learn nothing: their rows show "
            "the same rule on each held-out family.",
            "",
            context["leave_one_out"],
            "",
        ]
    notes = [f"- {n}: {note}" for n, m in metrics.items() for note in m.get("notes", [])]
    notes += [f"- {note}" for note in context.get("notes", [])]
    if notes:
        parts += ["## Notes", "", *notes, ""]
    if plots:
        parts += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    return "\n".join(parts)
