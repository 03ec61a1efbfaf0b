#!/usr/bin/env python3
"""Grafana dashboard lint: the rules of Grafana's dashboard-linter, applied without it.

Why: the Go module proxy refuses github.com/grafana/dashboard-linter here (see docs/observability.md), but
its published rules are what Grafana's mixins are held to. This applies the same rule names and the same
`.lint` exclusion file (next to the dashboards), so the real linter, where it installs, agrees.

    hack/dashboard-lint.py dashboards/*.json        exit 1 and one line per finding, or "0 findings"

PromQL is checked two ways: `promtool check rules` parses every query (template variables substituted),
and a small tokenizer finds the vector selectors, range selectors and enclosing functions the rules need.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Grafana's unit ids the linter accepts (dashboard-linter lint/rule_panel_units.go, from Grafana's
# packages/grafana-data/src/valueFormats/categories.ts).
VALID_UNITS = set(
    """none string short percent percentunit humidity dB hex0x hex sci locale pixel accMS2 accFS2 accG
    degree radian grad arcmin arcsec areaM2 areaF2 areaMI2 flops mflops gflops tflops pflops eflops zflops
    yflops ppm conppb conngm3 conngNm3 conμgm3 conμgNm3 conmgm3 conmgNm3 congm3 congNm3 conmgdL conmmolL
    currencyUSD currencyGBP currencyEUR currencyJPY currencyRUB currencyUAH currencyBRL currencyDKK
    currencyISK currencyNOK currencySEK currencyCZK currencyCHF currencyPLN currencyBTC currencymBTC
    currencyμBTC currencyZAR currencyINR currencyKRW currencyIDR currencyPHP currencyVND bytes decbytes bits
    decbits kbytes deckbytes mbytes decmbytes gbytes decgbytes tbytes dectbytes pbytes decpbytes pps binBps
    Bps binbps bps KiBs Kibits KBs Kbits MiBs Mibits MBs Mbits GiBs Gibits GBs Gbits TiBs Tibits TBs Tbits
    PiBs Pibits PBs Pbits dateTimeAsIso dateTimeAsIsoNoDateIfToday dateTimeAsUS dateTimeAsUSNoDateIfToday
    dateTimeAsLocal dateTimeAsLocalNoDateIfToday dateTimeAsSystem dateTimeFromNow watt kwatt megwatt gwatt
    mwatt Wm2 voltamp kvoltamp voltampreact kvoltampreact watth watthperkg kwatth kwattm amph kamph mamph
    joule ev amp kamp mamp volt kvolt mvolt dBm ohm kohm Mohm farad µfarad nfarad pfarad ffarad henry
    mhenry µhenry lumens flowgpm flowcms flowcfs flowcfm litreh flowlpm flowmlpm lux forceNm forcekNm forceN
    forcekN Hs KHs MHs GHs THs PHs EHs massmg massg masslb masskg masst lengthmm lengthin lengthft lengthm
    lengthkm lengthmi pressurembar pressurebar pressurekbar pressurepa pressurehpa pressurekpa pressurehg
    pressurepsi radbq radci radgy radrad radsv radmsv radusv radrem radexpckg radr radsvh radmsvh radusvh
    rotrpm rothz rotrads rotdegs celsius fahrenheit kelvin hertz ns µs ms s m h d dtdurationms dtdurations
    dthms dtdhms timeticks clockms clocks cps ops reqps rps wps iops cpm opm rpm wpm velocityms velocitykmh
    velocitymph velocityknot mlitre litre m3 Nm3 dm3 gallons bool bool_yes_no bool_on_off""".split()  # noqa: SIM905
)
# Grafana's custom units ("suffix:gCO2/kWh"): valid in Grafana, unknown to the linter, so each use needs
# a justified panel-units-rule exclusion in .lint; this checks that what is excluded is well formed.
CUSTOM_UNIT = re.compile(r"^(suffix|prefix|si|count|currency|time):.+$")
UNIT_PANELS = {"stat", "singlestat", "graph", "table", "timeseries", "gauge"}
DATASOURCE_PANELS = {"singlestat", "graph", "table", "timeseries"}
QUERY_FUNCTIONS = {"label_names", "label_values", "metrics", "query_result"}
# Values Grafana would give its variables, for parsing (the linter expands them the same way).
GLOBALS = {
    "__rate_interval": "8869990787ms",  # a magic duration: recognisable after expansion
    "__interval": "4867856611ms",
    "__range": "6h",
    "__range_s": "21600",
    "__interval_ms": "4867856611",
}
RATE_INTERVAL = "$__rate_interval"
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
    "unless", "atan2", "inf", "nan",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
}  # fmt: skip


@dataclass(frozen=True)
class Finding:
    rule: str
    dashboard: str
    message: str
    panel: str | None = None
    target: int | None = None

    def __str__(self) -> str:
        where = f"dashboard {self.dashboard!r}"
        if self.panel is not None:
            where += f", panel {self.panel!r}"
        if self.target is not None:
            where += f", target {self.target}"
        return f"[{self.rule}] {where}: {self.message}"


# -- PromQL tokens -----------------------------------------------------------------------------------------
TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<brace>\{)
      | (?P<range>\[[^\]]*\])
      | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<var>\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?)
      | (?P<number>[0-9][0-9a-zA-Z_.]*)
      | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=(),@])
    """,
    re.VERBOSE,
)


@dataclass
class Tok:
    kind: str
    text: str


def tokenize(expr: str) -> list[Tok]:
    out: list[Tok] = []
    i = 0
    while i < len(expr):
        m = TOKEN.match(expr, i)
        if m is None:
            raise ValueError(f"cannot tokenize PromQL at {expr[i:]!r}")
        kind = m.lastgroup or ""
        if kind == "brace":  # a whole {matchers} block, strings inside may hold braces
            j, depth = i, 0
            while j < len(expr):
                c = expr[j]
                if c in "\"'":
                    k = j + 1
                    while k < len(expr) and expr[k] != c:
                        k += 2 if expr[k] == "\\" else 1
                    j = k
                elif c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append(Tok("matchers", expr[i : j + 1]))
            i = j + 1
            continue
        if kind != "ws":
            out.append(Tok(kind, m.group()))
        i = m.end()
    return out


MATCHER = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,?"""
)


def parse_matchers(block: str) -> list[tuple[str, str, str]]:
    inner = block[1:-1]
    out, pos = [], 0
    while inner[pos:].strip():
        m = MATCHER.match(inner, pos)
        if m is None:
            raise ValueError(f"cannot read matchers {block!r}")
        out.append((m.group(1), m.group(2), m.group(3)[1:-1]))
        pos = m.end()
    return out


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]
    range: str | None  # "[5m]" text if a range selector
    function: str | None  # the function call directly around it (through its range), if any


def selectors(expr: str) -> Iterator[Selector]:
    """Every vector selector with its matchers, its range and the function call that directly encloses it."""
    toks = tokenize(expr)
    i = 0
    while i < len(toks):
        t = toks[i]
        # by (a, b): a label list, not selectors
        if t.kind == "ident" and t.text in GROUPING and i + 1 < len(toks) and toks[i + 1].text == "(":
            j = i + 1
            while toks[j].text != ")":
                j += 1
            i = j + 1
            continue
        is_name = t.kind == "ident" and t.text.lower() not in KEYWORDS
        if is_name and t.text in AGGREGATIONS and i + 1 < len(toks) and toks[i + 1].text in GROUPING:
            i += 1  # sum by (...) (...): the aggregation, then its label list
            continue
        if is_name and i + 1 < len(toks) and toks[i + 1].text == "(":  # a function call
            i += 1
            continue
        if is_name or t.kind == "matchers":
            name = t.text if is_name else ""
            j = i + 1
            matchers: list[tuple[str, str, str]] = []
            if t.kind == "matchers":
                matchers = parse_matchers(t.text)
            elif j < len(toks) and toks[j].kind == "matchers":
                matchers = parse_matchers(toks[j].text)
                j += 1
            rng = None
            if j < len(toks) and toks[j].kind == "range":
                rng = toks[j].text
                j += 1
            func = None
            if i >= 2 and toks[i - 1].text == "(" and toks[i - 2].kind == "ident":
                closes = j < len(toks) and toks[j].text == ")"
                func = toks[i - 2].text if closes else None
            for label, _, value in matchers:
                if label == "__name__" and not name:
                    name = value
            yield Selector(name, matchers, rng, func)
            i = j
            continue
        i += 1


def expand(expr: str, templating: list[dict[str, Any]]) -> str:
    """Template variables -> values PromQL parses (as the linter does before parsing)."""
    for name, value in GLOBALS.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    for var in templating:
        name = var.get("name", "")
        value = ".+" if var.get("type") == "query" else "prometheus"
        expr = expr.replace("${" + name + "}", value)
        expr = re.sub(r"\$" + re.escape(name) + r"\b", value, expr)
    return expr


def promtool_parse(exprs: list[str]) -> dict[int, str]:
    """Index -> error for every expression promtool cannot parse (all in one promtool run)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise SystemExit("promtool not found: run hack/install-prometheus.sh (Debian package prometheus)")
    errors: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, expr in enumerate(exprs):
            path = Path(tmp) / f"q{i}.yml"
            path.write_text(
                yaml.safe_dump({"groups": [{"name": "q", "rules": [{"record": "q:lint", "expr": expr}]}]})
            )
        proc = subprocess.run(
            [promtool, "check", "rules", *(str(Path(tmp) / f"q{i}.yml") for i in range(len(exprs)))],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            text = proc.stdout + proc.stderr
            for i in range(len(exprs)):
                m = re.search(rf"q{i}\.yml: (.*)", text)
                if m and "SUCCESS" not in m.group(1):
                    errors[i] = m.group(1)
            if not errors:
                raise RuntimeError(f"promtool failed: {text}")
    return errors


def _template_query(var: dict[str, Any]) -> str:
    q = var.get("query", "")
    return str(q.get("query", "") if isinstance(q, dict) else q)


def _ds_uid(obj: dict[str, Any]) -> str:
    ds = obj.get("datasource")
    if isinstance(ds, dict):
        return str(ds.get("uid", ""))
    return str(ds or "")


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", []) if p.get("type") == "row" else []


def lint(dash: dict[str, Any]) -> list[Finding]:
    title = dash.get("title", "")
    out: list[Finding] = []
    tmpl = dash.get("templating", {}).get("list", [])

    def add(rule: str, msg: str, panel: str | None = None, target: int | None = None) -> None:
        out.append(Finding(rule, title, msg, panel, target))

    datasources = [t for t in tmpl if t.get("type") == "datasource"]
    prometheus = bool(datasources) and datasources[0].get("query") == "prometheus"
    if not datasources:
        add("template-datasource-rule", "no templated data source")
    for ds in datasources:
        q = str(ds.get("query", ""))
        allowed = {f"{q.lower()}_datasource"} | ({"datasource"} if len(datasources) == 1 else set())
        if ds.get("name") not in allowed:
            add(
                "template-datasource-rule",
                f"data source variable {ds.get('name')!r} should be one of {sorted(allowed)}",
            )
    if prometheus:
        for name in ("job", "instance"):
            rule = f"template-{name}-rule"
            var = next((t for t in tmpl if t.get("name") == name), None)
            if var is None:
                add(rule, f"is missing the {name} template")
                continue
            if _ds_uid(var) not in ("$datasource", "${datasource}"):
                add(rule, f"{name} template should use datasource '$datasource', is {_ds_uid(var)!r}")
            if var.get("type") != "query":
                add(rule, f"{name} template should be a Prometheus query")
            if var.get("label") != name.title():
                add(rule, f"{name} template should be labeled {name.title()!r}")
            if not var.get("multi"):
                add(rule, f"{name} template should be a multi select")
            if var.get("allValue") != ".+":
                add(rule, f"{name} template allValue should be '.+', is {var.get('allValue')!r}")
    queries: list[tuple[str, str | None, int | None, str]] = []  # (rule, panel, target, expanded expr)
    for var in tmpl:
        if var.get("type") != "query":
            continue
        if var.get("refresh") != 2:
            add(
                "template-on-time-change-reload",
                f"variable {var.get('name')!r} should refresh on time range change (2)",
            )
        if prometheus:
            m = re.fullmatch(r"([a-z_]+)\((.+)\)", _template_query(var).strip())
            if m is None or m.group(1) not in QUERY_FUNCTIONS:
                add(
                    "template-label-promql-rule",
                    f"variable {var.get('name')!r}: invalid query {_template_query(var)!r}",
                )
            else:
                arg = m.group(2)
                if m.group(1) == "label_values" and "," in arg:
                    arg = arg.rsplit(",", 1)[0]
                queries.append(("template-label-promql-rule", None, None, expand(arg, tmpl)))
    if dash.get("editable", True) is not False:
        add("uneditable-dashboard", "dashboards provisioned from the chart should set editable: false")

    for p in panels(dash):
        kind, name = p.get("type", ""), p.get("title", "")
        if kind == "row":
            continue
        if kind in UNIT_PANELS and (not name or not p.get("description")):
            add("panel-title-description-rule", "missing title or description", name)
        if kind in DATASOURCE_PANELS and _ds_uid(p) not in {f"${t['name']}" for t in datasources} | {
            f"${{{t['name']}}}" for t in datasources
        }:
            add("panel-datasource-rule", f"does not use the templated data source, uses {_ds_uid(p)!r}", name)
        if kind in UNIT_PANELS:
            fc = p.get("fieldConfig", {})
            reduce_fields = p.get("options", {}).get("reduceOptions", {}).get("fields", "")
            mappings = fc.get("defaults", {}).get("mappings")
            unit = fc.get("defaults", {}).get("unit", "")
            for o in fc.get("overrides", []):
                for prop in o.get("properties", []):
                    if prop.get("id") == "unit":
                        unit = prop.get("value", "")
            if not (kind == "stat" and reduce_fields) and not mappings and unit not in VALID_UNITS:
                add("panel-units-rule", f"has no or invalid units defined: {unit!r}", name)
        targets = p.get("targets", [])
        if not targets and kind not in ("text", "news", "dashlist"):
            add("panel-no-targets-rule", "has no targets", name)
        if not prometheus:
            continue
        for idx, t in enumerate(targets):
            expr = t.get("expr", "")
            queries.append(("target-promql-rule", name, idx, expand(expr, tmpl)))
            try:
                sels = list(selectors(expr))
            except ValueError as exc:
                add("target-promql-rule", str(exc), name, idx)
                continue
            for s in sels:
                for label in ("job", "instance"):
                    if (label, "=~", f"${label}") not in s.matchers:
                        add(
                            f"target-{label}-rule",
                            f'{s.name or "selector"} has no {label}=~"${label}" matcher',
                            name,
                            idx,
                        )
                if (
                    s.range is not None
                    and s.function in ("rate", "irate")
                    and s.range != f"[{RATE_INTERVAL}]"
                ):
                    add(
                        "target-rate-interval-rule",
                        f"{s.function}({s.name}{s.range}) should use {RATE_INTERVAL}",
                        name,
                        idx,
                    )
                if s.name.endswith("_total") and not (
                    s.range and s.function in ("rate", "irate", "increase")
                ):
                    add(
                        "target-counter-agg-rule",
                        f"counter {s.name} is not aggregated with rate, irate or increase",
                        name,
                        idx,
                    )
    seen: set[tuple[str, str | None, int | None]] = set()
    unique = []
    for f in out:
        if f.target is None or (f.rule, f.panel, f.target) not in seen:
            unique.append(f)
            seen.add((f.rule, f.panel, f.target))
    out[:] = unique
    if queries:
        for i, err in promtool_parse([q[3] for q in queries]).items():
            rule, panel, target, expr = queries[i]
            add(rule, f"invalid PromQL {expr!r}: {err}", panel, target)
    return out


def exclusions(lint_file: Path) -> dict[str, list[dict[str, Any]]]:
    """The real linter's .lint: {exclusions: {rule: {reason, entries: [{dashboard, panel, targetIdx}]}}}."""
    if not lint_file.is_file():
        return {}
    data = yaml.safe_load(lint_file.read_text()) or {}
    out: dict[str, list[dict[str, Any]]] = {}
    for rule, spec in (data.get("exclusions") or {}).items():
        spec = spec or {}
        if not spec.get("reason") and not all(e.get("reason") for e in spec.get("entries", [])):
            raise SystemExit(f"{lint_file}: exclusion of {rule} has no reason")
        out[rule] = spec.get("entries") or [{}]
    return out


def excluded(f: Finding, rules: dict[str, list[dict[str, Any]]]) -> bool:
    for e in rules.get(f.rule, []):
        if e.get("dashboard") not in (None, f.dashboard):
            continue
        if f.panel is not None and e.get("panel") not in (None, f.panel):
            continue
        if f.target is not None and e.get("targetIdx") not in (None, "", str(f.target)):
            continue
        return True
    return False


def lint_files(paths: list[Path]) -> tuple[list[Finding], list[Finding]]:
    """(findings, excluded findings) over dashboards, each honouring the .lint beside it."""
    found: list[Finding] = []
    skipped: list[Finding] = []
    for path in paths:
        dash = json.loads(path.read_text())
        rules = exclusions(path.parent / ".lint")
        mine = lint(dash)
        found += [f for f in mine if not excluded(f, rules)]
        skipped += [f for f in mine if excluded(f, rules)]
        # An excluded unit must still be a unit Grafana renders.
        for f in (f for f in mine if excluded(f, rules)):
            if f.rule == "panel-units-rule":
                unit = f.message.split(": ", 1)[1].strip("'")
                if not CUSTOM_UNIT.match(unit):
                    found.append(
                        Finding(
                            "panel-units-rule",
                            f.dashboard,
                            f"excluded unit {unit!r} is no Grafana custom unit",
                            f.panel,
                        )
                    )
    return found, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dashboards", nargs="+", type=Path)
    ap.add_argument("--verbose", action="store_true", help="also list excluded findings")
    args = ap.parse_args(argv)
    found, skipped = lint_files(args.dashboards)
    for f in found:
        print(f)
    if args.verbose:
        for f in skipped:
            print(f"(excluded) {f}")
    print(f"dashboard-lint: {len(found)} findings, {len(skipped)} excluded by .lint")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
