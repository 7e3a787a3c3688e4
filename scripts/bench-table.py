#!/usr/bin/env python3
"""Prints a Markdown table of the herald-bench JSON files in a folder (see scripts/bench-all)."""
import json
import pathlib
import sys

# The results worth a column, per scenario, by name; a latency shows its p50/p99.
KEY = {
    "ingest": ["accepted events/s", "publish latency (per request)", "publish latency"],
    "e2e": ["deliveries/s", "publish → receipt"],
    "steady": ["achieved events/s", "publish → receipt"],
    "isolation": [
        "healthy alone: publish → receipt",
        "healthy beside bad: publish → receipt",
        "healthy p99 / solo p99",
    ],
    "backlog": [
        "RSS with the backlog (MB)",
        "restart: ready in (s)",
        "drain: deliveries/s",
    ],
}


def show(name, value):
    if isinstance(value, dict):
        return f"{name}: p50 {value['p50_ms']:,.1f} ms, p99 {value['p99_ms']:,.1f} ms"
    if isinstance(value, float):
        return f"{name}: {value:,.{2 if value < 100 else 0}f}"
    return f"{name}: {value:,}"


def main(folder):
    rows = []
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        d = json.loads(path.read_text())
        results = dict((r[0], r[1]) for r in d["results"])
        shown = [show(k, results[k]) for k in KEY.get(d["scenario"], []) if k in results]
        targets = "; ".join(
            f"{t['name']}: {('**met**' if t['met'] else 'not met') if t.get('judged', True) else 'n/a'} ({t['goal']})"
            for t in d["targets"]
        )
        ceiling = d.get("ceiling_rps") or 0
        rows.append((path.stem, f"{ceiling:,.0f}", "<br>".join(shown), targets))
    print("| run | C (req/s) | results | targets |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/bench/latest")
