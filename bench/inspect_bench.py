"""Offline detection benchmark through wsfw's real inspection pipeline.

    .venv/bin/python bench/inspect_bench.py CORPUS.jsonl [--framings plain,json,socketio,signalr,stomp,graphqlws] [--config etc/wsfw.ini]
        [--rules bench/rules-small.ini]

Every corpus payload is wrapped in each framing (as the detection evaluator in
shared/tools/detection does: plain; {"type":"chat","text":p};
42["chat message",p]) and given to ``Pipeline.inspect_message`` exactly as the
relay would, so decoding, transformations, detectors and scoring are all in
the measurement. Prints the per-class detection / false-positive table per
framing and the inspection CPU cost per message (median and p99 µs) for
typical chat messages and for everything. The corpus is an argument: the
project never depends on it. ``--rules FILE`` adds a rules file (its rules and
positive models name the route ``bench``, or ``*``) to measure what rules cost.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsfw import config_ini  # noqa: E402
from wsfw.hook import MessageView  # noqa: E402
from wsfw.inspection.audit import Audit  # noqa: E402
from wsfw.inspection.pipeline import build_pipelines  # noqa: E402

GRAPHQL_QUERY = "subscription OnChat($q: String!) { chat(filter: $q) { id text author } }"


def _stomp(p):
    return (f"SEND\ndestination:/queue/chat\ncontent-type:text/plain;charset=utf-8\n"
            f"content-length:{len(p.encode('utf-8', 'surrogatepass'))}\n\n{p}\x00")


#: framing -> (wrapper, negotiated subprotocol): the same wrappers as the
#: detection evaluator (shared/tools/detection/eval_ws.py).
FRAMINGS = {
    "plain": (lambda p: p, None),
    "json": (lambda p: json.dumps({"type": "chat", "text": p}, ensure_ascii=False), None),
    "socketio": (lambda p: "42" + json.dumps(["chat message", p], ensure_ascii=False), None),
    "signalr": (lambda p: json.dumps({"type": 1, "target": "Send", "arguments": [p]}, ensure_ascii=False) + "\x1e",
                None),
    "stomp": (_stomp, "v12.stomp"),
    "graphqlws": (lambda p: json.dumps({"type": "subscribe", "id": "1", "payload": {
        "query": GRAPHQL_QUERY, "variables": {"q": p}}}, ensure_ascii=False), "graphql-transport-ws"),
}
MINIMAL = "[listen:x]\nendpoint = tcp:0\n[route:bench]\nupstream = ws://127.0.0.1:1\n"
CHAT_SETS = ("chat_text", "chat_i18n", "chat_keywords", "chat_symbols", "emoji")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", help="JSONL with label (attack|benign), class, payload")
    parser.add_argument("--framings", default="plain,json,socketio")
    parser.add_argument("--config", default=None, help="config whose inspection settings apply (default: shipped)")
    parser.add_argument("--rules", default=None, help="a rules file to add ([rule:ID] / [model:bench] sections)")
    args = parser.parse_args(argv)
    config = config_ini.load(args.config) if args.config else config_ini.load("(defaults)", MINIMAL)
    if args.rules:
        import attrs

        from wsfw.policy.loader import load_policy

        problems = []
        policy = load_policy(args.rules, None, [], (str(Path(args.rules).resolve()),), config.routes, problems)
        if problems:
            sys.exit("\n".join(map(str, problems)))
        config = attrs.evolve(config, policy=policy)
    pipeline = next(iter(build_pipelines(config, Audit(None)).values()))
    engines = [i.engine for i in pipeline.inspectors if hasattr(i, "engine")]
    items = [json.loads(line) for line in open(args.corpus, encoding="utf-8") if line.strip()]
    framings = [f for f in args.framings.split(",") if f]
    counts = collections.defaultdict(lambda: [0, 0])  # (label, class, framing) -> [n, flagged]
    cost = collections.defaultdict(list)  # "chat"/"all" -> µs
    conn = 0
    for item in items:
        for framing in framings:
            conn += 1
            wrap, subprotocol = FRAMINGS[framing]
            payload = wrap(item["payload"]).encode("utf-8", "surrogatepass")
            view = MessageView(conn_id=str(conn), route="bench", peer="127.0.0.1:1", direction="client", index=1,
                               payload=payload, is_binary=False, subprotocol=subprotocol, path="/chat")
            # Steady state of a chat connection: the framing's constant strings
            # (event name, message type, destination) have been seen before, the
            # payload has not (here it repeats across framings; in traffic it would not).
            for engine in engines:
                engine.clear_cache()
            pipeline.inspect_message(view._replace(payload=wrap("warm-up").encode()))
            started = time.perf_counter_ns()
            verdict = pipeline.inspect_message(view)
            spent = (time.perf_counter_ns() - started) / 1000
            pipeline.connection_closed(str(conn))
            cell = counts[(item["label"], item["class"], framing)]
            cell[0] += 1
            cell[1] += verdict.action != "forward"
            cost["all"].append(spent)
            if item["label"] == "benign" and item["class"] in CHAT_SETS:
                cost["chat"].append(spent)
                cost["chat " + framing].append(spent)
    classes = sorted({(label, cls) for label, cls, _ in counts})
    out = sys.stdout.write
    out(f"| class | n | {' | '.join(framings)} |\n|---|---:|{'---:|' * len(framings)}\n")
    totals = {label: collections.defaultdict(lambda: [0, 0]) for label in ("attack", "benign")}
    for label, cls in classes:
        cells = []
        for framing in framings:
            n, flagged = counts[(label, cls, framing)]
            totals[label][framing][0] += n
            totals[label][framing][1] += flagged
            cells.append(f"{100 * flagged / n:.1f}%")
        out(f"| {label}/{cls} | {counts[(label, cls, framings[0])][0]} | {' | '.join(cells)} |\n")
    for label, title in (("attack", "ALL attacks (detection)"), ("benign", "ALL benign (false positives)")):
        cells = [f"{100 * totals[label][f][1] / max(1, totals[label][f][0]):.2f}%" for f in framings]
        out(f"| **{title}** | {totals[label][framings[0]][0]} | {' | '.join(cells)} |\n")
    for key, title in ([("chat", "typical chat messages")] + [(f"chat {f}", f"typical chat messages, {f}")
                                                             for f in framings] + [("all", "all messages")]):
        values = cost[key]
        out(f"\ninspection CPU per message, {title} ({len(values)}): median {statistics.median(values):.1f} µs, "
            f"p99 {percentile(values, 0.99):.1f} µs\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
