#!/usr/bin/env python3
"""Renders a Grafana dashboard's panels to one PNG from a real Prometheus (query_range + matplotlib Agg).

Why: the docs show what the dashboard looks like on real data without needing a Grafana server.

    hack/render-dashboard.py --prometheus http://127.0.0.1:9090 --start 1700000000 --end 1700000300 \
        --out docs/dashboard.png [--dashboard dashboards/gridwise.json]

`tests/metrics/test_prometheus.py` runs it on the data it scrapes; set
GRIDWISE_DASHBOARD_PNG=docs/dashboard.png to refresh the picture in the docs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Grafana variables -> values a bare Prometheus understands (every zone/namespace, a 1m rate window).
DEFAULT_VARS = {
    "$__rate_interval": "1m",
    "$__range": "10m",
    "$job": ".+",
    "$instance": ".+",
    "$namespace": ".*",
    "$zone": ".*",
    "${datasource}": "",
}


# Grafana's unit ids, as a person reads them.
GRAFANA_UNITS = {
    "massg": "g",
    "kwatth": "kWh",
    "watt": "W",
    "percentunit": "ratio",
    "s": "s",
    "joule": "J",
    "bytes": "bytes",
    "reqps": "/s",
    "bool_yes_no": "0/1",
}


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """A panel's PromQL with the dashboard's template variables filled in."""
    for name, value in (variables or DEFAULT_VARS).items():
        expr = expr.replace(name, value)
    return expr


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels with queries, in layout order (rows are headings, not panels)."""
    out = [p for p in dashboard["panels"] if p.get("type") != "row" and p.get("targets")]
    return sorted(out, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=10) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = fmt
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    while "{{" in text and "}}" in text:  # labels the series does not have
        a, b = text.index("{{"), text.index("}}")
        text = text[:a] + text[b + 2 :]
    return text.strip() or json.dumps(labels)


def render(dashboard_path: Path, prometheus: str, start: float, end: float, out: Path, cols: int = 3) -> int:
    """Draws every panel; returns how many panels had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash = json.loads(dashboard_path.read_text())
    items = panels(dash)
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.8 * rows), squeeze=False)
    step = max(1.0, (end - start) / 300)
    with_data = 0
    for ax, panel in zip(axes.flat, items, strict=False):
        drawn = 0
        for target in panel["targets"]:
            for series in query_range(prometheus, substitute(target["expr"]), start, end, step):
                xs = [datetime.fromtimestamp(float(t), UTC) for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"])[:40], lw=1.2)
                drawn += 1
        with_data += drawn > 0
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        unit = unit.split(":", 1)[1] if unit.startswith("suffix:") else GRAFANA_UNITS.get(unit, unit)
        ax.set_title(f"{panel['title']}" + (f" [{unit}]" if unit and unit != "short" else ""), fontsize=10)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M:%S"))
        if drawn:
            ax.legend(fontsize=6, loc="best")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(items) :]:
        ax.axis("off")
    fig.suptitle(f"{dash['title']} — {dash.get('description', '')}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return with_data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--start", type=float, required=True, help="unix seconds")
    ap.add_argument("--end", type=float, required=True, help="unix seconds")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    ap.add_argument("--dashboard", type=Path, default=REPO / "dashboards" / "gridwise.json")
    args = ap.parse_args(argv)
    n = render(args.dashboard, args.prometheus.rstrip("/"), args.start, args.end, args.out)
    print(f"render-dashboard: {n} panels with data -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
