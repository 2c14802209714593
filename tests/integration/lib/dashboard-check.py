#!/usr/bin/env python3
"""dashboard-check.py DASHBOARD API_URL PROM_FILE... — checks a Grafana dashboard
(deploy/grafana/wren-dashboard.json) against what wren exports: the JSON parses
into panels with PromQL targets; every metric name a target names is in the
scraped endpoints' output (PROM_FILEs, the text format); and a running
Prometheus (API_URL = .../api/v1/query) answers every target with at least one
series (retried for up to 20 s while rates fill in). Exit 1 with the reasons."""
import json
import re
import sys
import time
import urllib.parse
import urllib.request

NAME = re.compile(r"\b((?:wren|process)_[a-z_]+)\b")


def exported(paths):
    names = set()
    for p in paths:
        for line in open(p):
            if line.strip() and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def query(api, expr):
    url = api + "?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def main():
    dash, api, proms = sys.argv[1], sys.argv[2], sys.argv[3:]
    d = json.load(open(dash))
    panels = d.get("panels") or []
    bad = []
    exprs = [(p.get("title", "?"), t.get("expr", "")) for p in panels for t in p.get("targets", [])]
    if not panels or not exprs:
        bad.append("no panels with targets")
    names = exported(proms)
    for title, e in exprs:
        if not e:
            bad.append(f"panel '{title}': a target without expr")
        for n in NAME.findall(e):
            if n not in names:
                bad.append(f"panel '{title}': {n} is not exported by any endpoint")
    left = {e: title for title, e in exprs if e}
    deadline = time.time() + 20
    while left and time.time() < deadline:
        for e in list(left):
            try:
                r = query(api, e)
            except Exception as x:  # an HTTP 400 is a PromQL syntax error
                bad.append(f"panel '{left.pop(e)}': Prometheus refused the query: {x}")
                continue
            if r.get("status") == "success" and r["data"]["result"]:
                left.pop(e)
        time.sleep(1)
    bad += [f"panel '{t}': no series for {e}" for e, t in left.items()]
    for b in bad:
        print(b)
    print(f"dashboard: {len(panels)} panels, {len(exprs)} queries, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
