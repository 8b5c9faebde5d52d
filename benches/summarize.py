#!/usr/bin/env python3
"""Summarise ../shared/bench results (results-peers.csv) as the Markdown tables in RESULTS.md.

usage: benches/summarize.py [CSV] [--workload uniform]
For every (config, series) the newest complete run (last in the file) is used. 'other CPU s' is the bench
harness's noise flag: CPU used by anything else on the machine during the backups.
"""
import csv
import statistics
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "/tmp/bench-out/results-peers.csv"
workload = sys.argv[sys.argv.index("--workload") + 1] if "--workload" in sys.argv else "uniform"
runs = defaultdict(lambda: defaultdict(list))
order = {}
for r in csv.DictReader(open(path)):
    order.setdefault(r["run_id"], len(order))
    if (r.get("workload") or "uniform") == workload:
        runs[(r["config"], r["series"])][r["run_id"]].append(r)

print("| series | config | repo MB | input/repo | backup total s | MB/s | peak RSS MiB | restore s (median of 3) | restore RSS MiB | other CPU s | sha256 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (cfg, ser) in sorted(runs, key=lambda k: (k[1], k[0])):
    complete = [rid for rid, rs in runs[(cfg, ser)].items() if any(r["step"] == "verify" for r in rs)]
    if not complete:
        continue
    rs = runs[(cfg, ser)][max(complete, key=order.get)]
    b = [r for r in rs if r["step"] == "backup"]
    rest = [float(r["wall_s"]) for r in rs if r["step"] == "restore"]
    total = sum(float(r["wall_s"]) for r in b)
    inp = sum(int(r["input_bytes"]) for r in b)
    repo = int(b[-1]["repo_bytes"])
    other = sum(float(r["other_cpu_s"] or 0) for r in b)
    print(f"| {ser} | {cfg} | {repo / 1e6:.1f} | {inp / repo:.1f} | {total:.1f} | {inp / 1e6 / total:.0f} | "
          f"{max(int(r['maxrss_kb']) for r in b) / 1024:.0f} | {statistics.median(rest):.2f} | "
          f"{max(int(r['maxrss_kb']) for r in rs if r['step'] == 'restore') / 1024:.0f} | {other:.1f} | "
          f"{[r['check'] for r in rs if r['step'] == 'verify'][0]} |")
