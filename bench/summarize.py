#!/usr/bin/env python3
"""Summarizes a results file written by bench/lib.sh `measure`.

usage: summarize.py RESULTS [RATIO ...]
       summarize.py --columns TABLE [LABEL=NUMERATOR/DENOMINATOR ...]

RESULTS rows (tab-separated): size variant run wall_s peak_rss_kib client_cpu_s apiserver_cpu_s etcd_cpu_s load1
RATIO: LABEL=NUMERATOR/DENOMINATOR@SIZE, the ratio of the two variants' median wall times at SIZE, or
       rss:LABEL=VARIANT@SMALL/LARGE, the growth of a variant's median peak RSS between two sizes, or
       rssmax:LABEL=VARIANT@SIZE, a variant's absolute peak RSS at SIZE (median and largest run).

Prints a Markdown table (medians over the runs, plus the spread of the wall times) and the ratios.

With --columns, TABLE is a tab-separated file whose first line names the columns and whose other lines
are runs (bench/incremental.sh's figures that are not times); it is printed as a Markdown table, then
each LABEL with the median over the runs of NUMERATOR / DENOMINATOR (two column names) and every run's.
"""

import statistics
import sys
from collections import OrderedDict


def columns(path: str, specs: list) -> None:
    with open(path) as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    if not lines:
        sys.exit(f"{path}: empty")
    header, runs = lines[0], [dict(zip(lines[0], row)) for row in lines[1:]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in lines[1:]:
        print("| " + " | ".join(row) + " |")
    if specs:
        print()
    for spec in specs:
        label, frac = spec.rsplit("=", 1)
        num, den = frac.split("/", 1)
        try:
            ratios = [float(r[num]) / float(r[den]) for r in runs]
        except (KeyError, ValueError, ZeroDivisionError) as e:
            print(f"- {label}: missing ({spec}: {e!r})")
            continue
        if not ratios:
            print(f"- {label}: no runs")
            continue
        each = ", ".join(f"{x:.4f}" for x in ratios)
        print(
            f"- {label}: median {statistics.median(float(r[num]) for r in runs):.0f} / "
            f"{statistics.median(float(r[den]) for r in runs):.0f}; median of the runs' ratios "
            f"**{statistics.median(ratios):.4f}** (runs: {each})"
        )


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--columns":
        if len(sys.argv) < 3:
            sys.exit(__doc__)
        columns(sys.argv[2], sys.argv[3:])
        return
    rows = OrderedDict()
    with open(sys.argv[1]) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 9:
                continue
            key = (p[0], p[1])
            rows.setdefault(key, []).append(
                {
                    "wall": float(p[3]),
                    "rss": int(p[4]) / 1024,
                    "cpu": float(p[5]),
                    "api": float(p[6]),
                    "etcd": float(p[7]),
                    "load": float(p[8]),
                }
            )
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    print(
        "| objects | variant | runs | wall median (s) | wall min–max (s) | peak RSS median (MiB) | peak RSS max (MiB) "
        "| client CPU (s) | kube-apiserver CPU (s) | etcd CPU (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (size, variant), runs in rows.items():
        walls = [r["wall"] for r in runs]
        print(
            f"| {size} | {variant} | {len(runs)} | {med(runs, 'wall'):.2f} | {min(walls):.2f}–{max(walls):.2f} "
            f"| {med(runs, 'rss'):.1f} | {max(r['rss'] for r in runs):.1f} | {med(runs, 'cpu'):.2f} "
            f"| {med(runs, 'api'):.2f} | {med(runs, 'etcd'):.2f} |"
        )
    if len(sys.argv) > 2:
        print()
    for spec in sys.argv[2:]:
        if spec.startswith("rssmax:"):
            label, rest = spec[7:].rsplit("=", 1)
            variant, size = rest.rsplit("@", 1)
            a = rows.get((size, variant))
            if not a:
                print(f"- {label}: missing ({spec})")
                continue
            print(
                f"- {label}: **{max(r['rss'] for r in a):.1f} MiB** at {size} "
                f"(largest of {len(a)} runs; median {med(a, 'rss'):.1f} MiB)"
            )
            continue
        if spec.startswith("rss:"):
            # rss:LABEL=VARIANT@SMALL/LARGE: how the variant's median peak RSS grows between two sizes.
            label, rest = spec[4:].rsplit("=", 1)
            variant, sizes = rest.rsplit("@", 1)
            small, large = sizes.split("/", 1)
            a, b = rows.get((large, variant)), rows.get((small, variant))
            if not a or not b:
                print(f"- {label}: missing ({spec})")
                continue
            print(
                f"- {label}: {med(b, 'rss'):.1f} MiB at {small} → {med(a, 'rss'):.1f} MiB at {large} "
                f"= **{med(a, 'rss') / med(b, 'rss'):.2f}×**"
            )
            continue
        label, rest = spec.rsplit("=", 1)
        frac, size = rest.rsplit("@", 1)
        num, den = frac.split("/", 1)
        a, b = rows.get((size, num)), rows.get((size, den))
        if not a or not b:
            print(f"- {label}: missing ({spec})")
            continue
        print(f"- {label}: {med(a, 'wall'):.2f} s / {med(b, 'wall'):.2f} s = **{med(a, 'wall') / med(b, 'wall'):.2f}×**")


if __name__ == "__main__":
    main()
