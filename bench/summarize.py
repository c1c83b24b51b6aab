#!/usr/bin/env python3
"""Summarizes a results file written by bench/lib.sh `measure`.

usage: summarize.py RESULTS [RATIO ...]

RESULTS rows (tab-separated): size variant run wall_s peak_rss_kib client_cpu_s apiserver_cpu_s etcd_cpu_s load1
RATIO: LABEL=NUMERATOR/DENOMINATOR@SIZE, the ratio of the two variants' median wall times at SIZE, or
       rss:LABEL=VARIANT@SMALL/LARGE, the growth of a variant's median peak RSS between two sizes.

Prints a Markdown table (medians over the runs, plus the spread of the wall times) and the ratios.
"""

import statistics
import sys
from collections import OrderedDict


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
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
