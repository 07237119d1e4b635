#!/usr/bin/env python3
"""Benchmark wsfw.detect against a JSONL corpus.

usage: detect_bench.py CORPUS_PATH [--paranoia N] [--threshold T] [--misses CLASS] [--backend re|hyperscan]

Each line: {"label": "attack"|"benign", "class": ..., "payload": ...}.
Every payload is scanned as the single param ("text", payload).
Prints per-class detection (attacks) / false-positive (benign) rates,
overall figures, and scan cost (median / p99 microseconds per message).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wsfw.detect import DEFAULT_THRESHOLD, Engine  # noqa: E402


def pct(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[k]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--paranoia", type=int, default=1)
    ap.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    ap.add_argument("--backend", choices=["re", "hyperscan"], default=None)
    ap.add_argument("--misses", metavar="CLASS", help="print missed attacks / FPs of CLASS ('all' for every class)")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions per message (min is kept)")
    args = ap.parse_args(argv)

    rows = []
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))

    eng = Engine(paranoia=args.paranoia, backend=args.backend)
    stats = defaultdict(lambda: [0, 0])  # (label, cls) -> [n, flagged]
    t_all, t_chat = [], []
    misses = []
    for r in rows:
        payload = r["payload"]
        best = None
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            res = eng.scan((("text", payload),))
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        us = best * 1e6
        t_all.append(us)
        if r["label"] == "benign" and r["class"] == "chat_text":
            t_chat.append(us)
        flagged = res.blocked(args.threshold)
        key = (r["label"], r["class"])
        stats[key][0] += 1
        stats[key][1] += flagged
        if args.misses and (args.misses in ("all", r["class"])):
            if (r["label"] == "attack") != flagged:
                misses.append((r["label"], r["class"], res.score,
                               ",".join(m.rule_id for m in res.matches), payload))

    print(f"paranoia={args.paranoia} threshold={args.threshold} backend={eng.backend_name}")
    print(f"{'label':7} {'class':22} {'n':>6} {'rate':>8}")
    tot = {"attack": [0, 0], "benign": [0, 0]}
    worst = (None, 101.0)
    for (label, cls), (n, k) in sorted(stats.items()):
        rate = 100.0 * k / n if n else 0.0
        what = "detect" if label == "attack" else "FP"
        print(f"{label:7} {cls:22} {n:6d} {rate:7.1f}% {what}")
        tot[label][0] += n
        tot[label][1] += k
        if label == "attack" and rate < worst[1]:
            worst = (cls, rate)
    for label in ("attack", "benign"):
        n, k = tot[label]
        if n:
            print(f"OVERALL {label:7}: {k}/{n} = {100.0 * k / n:.2f}% {'detected' if label == 'attack' else 'false positives'}")
    if worst[0]:
        print(f"weakest attack class: {worst[0]} {worst[1]:.1f}%")
    print(f"cost chat_text: median {statistics.median(t_chat) if t_chat else 0:.1f} us, p99 {pct(t_chat, 0.99):.1f} us (n={len(t_chat)})")
    print(f"cost all      : median {statistics.median(t_all) if t_all else 0:.1f} us, p99 {pct(t_all, 0.99):.1f} us (n={len(t_all)})")
    for label, cls, score, rules, payload in misses:
        print(f"MISS {label} {cls} score={score} [{rules}] {payload!r}"[:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
