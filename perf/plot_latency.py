"""Plot per-frame handling time distributions written by compare_cryptofeed.py --latency-json.

Usage: python perf/plot_latency.py LATENCY.json OUT.png [--title TEXT]
Input: {workload: {"mdengine": [ns, ...], "cryptofeed": [ns, ...]}}. One panel per workload with the
complementary CDF (fraction of frames slower than x) on log-log axes, so medians and tails both show.
Needs matplotlib (`compare_cryptofeed.py --setup --plot-deps` installs it in perf/.peer-venv); without it
this script prints a message and exits 0, because plotting is optional.
"""

from __future__ import annotations

import argparse
import json
import sys

COLORS = {"mdengine": "tab:blue", "cryptofeed": "tab:orange"}


def ccdf(samples_ns: list[int]) -> tuple[list[float], list[float]]:
    """(µs sorted ascending, fraction of samples strictly slower), thinned to at most ~2000 points."""
    xs = sorted(samples_ns)
    n = len(xs)
    step = max(1, n // 2000)
    idx = list(range(0, n, step)) + ([n - 1] if (n - 1) % step else [])
    return [xs[i] / 1e3 for i in idx], [max(1.0 - (i + 1) / n, 0.5 / n) for i in idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="plot compare_cryptofeed latency samples")
    ap.add_argument("samples")
    ap.add_argument("out")
    ap.add_argument("--title", default="Per-frame handling time, mdengine vs cryptofeed (same frames)")
    args = ap.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (python perf/compare_cryptofeed.py --setup --plot-deps)")
        return 0
    with open(args.samples, encoding="utf-8") as fh:
        data = json.load(fh)
    names = list(data)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for side, samples in data[name].items():
            if samples:
                x, y = ccdf(samples)
                ax.loglog(x, y, label=side, color=COLORS.get(side))
        ax.set_title(name)
        ax.set_xlabel("µs per frame")
        ax.set_ylabel("fraction slower")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"plot written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
