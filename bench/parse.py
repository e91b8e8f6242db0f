"""Parse+aggregate against bare orjson on the same bytes, interleaved (A B A B ...).

    python bench/parse.py [--events 100000] [--pairs 7]

Issue 20's target is parse_vs_orjson >= 0.9 (bench/worker.py measures it once, next to
the end-to-end run); this times only that, in pairs, so the machine's load moves both
sides of a pair alike. Times are this process's CPU time (both sides are single-threaded),
which other processes on the machine disturb less than they do the wall clock. Prints
each pair's ratio (bare / ours: 1.0 is as fast as bare orjson), then the median and spread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.worker import bare_orjson, build_data, ours


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partners", type=int, default=50)
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    data = build_data(args.events, args.partners, args.objects)
    blobs = [b for _, b in data.objects]
    assert ours(blobs) == bare_orjson(blobs) == data.events  # and warms both up
    ratios, ours_s, bare_s = [], [], []
    for _ in range(max(args.pairs, 1)):
        t0 = time.process_time()
        ours(blobs)
        t1 = time.process_time()
        bare_orjson(blobs)
        t2 = time.process_time()
        ours_s.append(t1 - t0)
        bare_s.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))  # > 1: ours is faster
        print(f"ours {t1 - t0:.3f} s  bare {t2 - t1:.3f} s  ratio {ratios[-1]:.3f}")
    med = statistics.median(ratios)
    best = min(bare_s) / min(ours_s)
    print(f"parse_vs_orjson median {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f},")
    print(f"  {len(ratios)} pairs, {data.events} events); best of each: {best:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
