"""wsfw relay benchmark: what wsfw costs, per inspection mode, on top of a bare Autobahn relay.

Five targets in one run:

``direct``       bench/echo_upstream.py, an Autobahn echo server (the floor:
                 one Autobahn server hop);
``plain-relay``  bench/plain_relay.py, a minimal Autobahn relay (the baseline);
``wsfw-off``, ``wsfw-detect``, ``wsfw-block``
                 the daemon, started with twistd as in production, one per
                 ``[wsfw] mode`` (all detectors on, shipped defaults otherwise).

The relays all forward to the same upstream, bench/lean_echo.py, a lean
asyncio echo server that leaves the load side's core room to spare.

Phases, all servers started first:

1. idle: K connections opened and held on servers that carried no traffic
   yet (RSS per connection, handshakes/s, how many still echo);
2. closed-loop throughput per message size (64 B, 1 KiB, 16 KiB): N
   connections x W messages in flight; round trips/s and the server's CPU time
   per round trip (/proc/PID/stat); ``--repeat R`` interleaved rounds, medians;
3. open-loop latency at fixed rates (1,000 and 5,000 msg/s over 100
   connections): p50/p99/p99.9 from the *scheduled* send time, achieved rate,
   errors, and the generator's own lag and CPU.

Each phase runs on the targets in turn, so the windows compared are close in
time. The server under test runs alone on CPU 1; the generator and the
upstream share CPU 0. CPU time per round trip is the figure to compare: rates
and latencies move with whatever else the machine runs, CPU time much less.

    .venv/bin/python bench/relay_bench.py [--quick] [--targets LIST] [--repeat R] [--readme]

Prints a markdown table, writes every raw figure as JSON (bench/results/),
and with ``--readme`` puts the table into bench/README.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadgen import CLK_TCK, cpu_jiffies, proc_cpu_ticks  # bench/ is on sys.path: this script's directory

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
README = BENCH / "README.md"
PYTHON = sys.executable
TWISTD = str(Path(sys.executable).parent / "twistd")
WSFW_MODES = {"wsfw-off": "off", "wsfw-detect": "detect", "wsfw-block": "block"}
#: wsfw-block as a fleet member: [cluster] redis = a redis-server this script starts (on the load CPU),
#: with the per-address limits on, so every handshake reserves its slot in Redis. Opt-in (needs redis-server).
CLUSTER = "wsfw-cluster"
TARGETS = ("direct", "plain-relay", *WSFW_MODES, CLUSTER)
DEFAULT_TARGETS = ("direct", "plain-relay", *WSFW_MODES)
SERVER_CPU, LOAD_CPU = 1, 0  # the server under test gets CPU 1 to itself
BACKLOG = 1024               # same listen backlog on all servers
#: Ratio columns of the table: (numerator, denominator).
RATIOS = (("wsfw-block", "plain-relay"), ("wsfw-block", "wsfw-off"))
#: bench/README.md's results section lies between these lines (``--readme`` rewrites it).
README_BEGIN = "<!-- relay_bench results: begin (written by bench/relay_bench.py --readme) -->"
README_END = "<!-- relay_bench results: end -->"

WSFW_CONFIG = """\
# Written by bench/relay_bench.py: wsfw with its shipped defaults, quiet logs.
[wsfw]
mode = {mode}
# one process unless --workers says otherwise: the figures are per worker
workers = {workers}

[listen:bench]
endpoint = tcp:{port}:interface=127.0.0.1:backlog={backlog}

[route:bench]
upstream = ws://127.0.0.1:{upstream}

[limits]
max_connections = 0

[log]
level = warn
connections = no

[admin]
# on, as shipped (metrics are part of the cost), on a fresh port
endpoint = tcp:0:interface=127.0.0.1
"""


# -- processes --------------------------------------------------------------------

def pinning_available() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2 and \
        {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0)


def child_setup(cpu: int | None):
    """What every child does before exec: pin, lift the fd limit, die with us."""
    def setup():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        try:  # PR_SET_PDEATHSIG: no orphaned servers even if this script is SIGKILLed
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    return setup


class Server:
    """A server subprocess whose output goes to a log file, ready once a line matches."""

    def __init__(self, name: str, argv: list[str], ready: str, logdir: Path, cpu: int | None):
        self.name = name
        self.argv = argv
        self.ready = re.compile(ready)
        self.log_path = logdir / f"{name}.log"
        self.cpu = cpu
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> "Server":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=child_setup(self.cpu))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = self.ready.search(self.log_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group("port"))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start (exit {self.proc.poll()}); log:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def warnings(self) -> dict:
        """Lines the server logged at warn level or worse (Twisted's ``[namespace#level]`` format):
        how many, how many were close-handshake timeouts, and a few of the others."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return {"count": 0, "close_timeouts": 0, "others": []}
        lines = [line for line in text.splitlines() if re.search(r"#(?:warn|error|critical)\]", line)]
        others = [line.split(" ", 1)[-1] for line in lines if "closing handshake timeout" not in line]
        return {"count": len(lines), "close_timeouts": len(lines) - len(others),
                "others": list(dict.fromkeys(re.sub(r"\d+", "N", o)[:300] for o in others))[:10]}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; safe to call twice."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def free_port() -> int:
    """A port free right now (wsfw takes its port from the config file, not from the kernel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadgen(mode: str, port: int, watch: dict[str, int], timeout: float, cpu: int | None, **opts) -> dict:
    """Run bench/loadgen.py once; its JSON result, or an ``error`` entry."""
    argv = [PYTHON, str(BENCH / "loadgen.py"), mode, "--port", str(port)]
    for key, value in opts.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    for name, pid in watch.items():
        argv += ["--watch", f"{name}={pid}"]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=child_setup(cpu))
    except subprocess.TimeoutExpired:
        return {"error": f"loadgen {mode} exceeded {timeout:.0f}s"}
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": f"loadgen {mode} exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    return json.loads(done.stdout)


def wait_quiet(pids, timeout: float = 20.0, interval: float = 0.5) -> float:
    """Until none of ``pids`` used more than ~5% of a core over ``interval``; seconds waited.

    A phase ends when the generator's connections are closed, but a relay may
    still be closing their upstream hops (after a mass close, for seconds: see
    the README), on the CPU the next phase's server is about to use.
    """
    start = time.monotonic()
    before = [proc_cpu_ticks(pid) or 0 for pid in pids]
    while time.monotonic() - start < timeout:
        time.sleep(interval)
        after = [proc_cpu_ticks(pid) or 0 for pid in pids]
        if all((b - a) / CLK_TCK <= 0.05 * interval for a, b in zip(before, after)):
            break
        before = after
    return time.monotonic() - start


# -- the machine ------------------------------------------------------------------

def machine_info() -> dict:
    import autobahn
    import twisted

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {
        "wsfw_commit": commit,
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "autobahn": autobahn.__version__,
        "pinning": pinning_available(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``), e.g. ``"0.52 0.31 0.20"``."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _proc_ticks() -> dict[int, tuple[int, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.find("(") + 1:raw.rfind(")")]
        fields = raw.rpartition(")")[2].split()
        out[int(entry)] = (int(fields[11]) + int(fields[12]), comm)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return ""


def idle_probe(seconds: float) -> dict:
    """How busy the machine is before we start: per-CPU load and the top CPU users."""
    cpus_a, procs_a, t0 = cpu_jiffies(), _proc_ticks(), time.monotonic()
    time.sleep(seconds)
    cpus_b, procs_b, wall = cpu_jiffies(), _proc_ticks(), time.monotonic() - t0
    cpus = {}
    for name, b in cpus_b.items():
        a = cpus_a.get(name)
        if a is None:
            continue
        d = {k: b[k] - a[k] for k in b}
        total = sum(d.values()) or 1
        cpus[name] = {"busy_pct": round(100 * d["busy"] / total, 1), "steal_pct": round(100 * d["steal"] / total, 1)}
    top = []
    for pid, (ticks, comm) in procs_b.items():
        if pid in procs_a and pid != os.getpid():
            pct = 100 * (ticks - procs_a[pid][0]) / CLK_TCK / wall
            if pct >= 2:
                top.append({"pid": pid, "comm": comm, "cpu_pct": round(pct, 1), "cmdline": _cmdline(pid)})
    top.sort(key=lambda p: -p["cpu_pct"])
    busy = cpus.get("cpu", {}).get("busy_pct", 0)
    return {"seconds": seconds, "cpus": cpus, "top": top[:5], "busy": busy >= 10}


# -- phases ---------------------------------------------------------------------

def idle_phase(target: str, server: "Server", upstream: "Server | None", cfg: argparse.Namespace, log) -> dict:
    """K idle connections: the server's RSS per connection, handshakes/s, how many still echo."""
    log(f"[{target}] idle: {cfg.idle_conns} connections, {cfg.concurrency} handshakes at a time")
    result = loadgen("idle", server.port, watched(server, upstream), timeout=cfg.idle_timeout + 120,
                     cpu=LOAD_CPU if cfg.pin else None, conns=cfg.idle_conns, concurrency=cfg.concurrency,
                     settle=cfg.settle, open_timeout=cfg.idle_timeout, size=64)
    if result.get("opened"):
        result["round_trips"] = result["opened"]  # per handshake, for ``derive``
        derive(result, server_cpu=SERVER_CPU if cfg.pin else None)
        result["server_cpu_us_per_handshake"] = result.pop("server_cpu_us_per_rt", None)
        for key in ("round_trips", "echo_cpu_us_per_rt", "generator_cpu_us_per_rt"):
            result.pop(key, None)
    log(f"[{target}]   {summary_idle(result)}")
    return result


def watched(server: "Server", upstream: "Server | None") -> dict[str, int]:
    """The processes whose CPU a phase reports: the server under test and, behind a relay, the upstream."""
    return {"server": server.pid, **({"echo": upstream.pid} if upstream is not None else {})}


def throughput_phase(target: str, server: "Server", upstream: "Server | None", size: int, cfg: argparse.Namespace,
                     log) -> dict:
    """N connections x W in flight: rate, latency, and the server's CPU time per round trip."""
    log(f"[{target}] throughput: {size} B, {cfg.conns} x {cfg.window} in flight, "
        f"{cfg.warmup:g}s warm-up + {cfg.duration:g}s")
    result = loadgen("throughput", server.port, watched(server, upstream), timeout=cfg.warmup + cfg.duration + 90,
                     cpu=LOAD_CPU if cfg.pin else None, conns=cfg.conns, window=cfg.window, size=size,
                     warmup=cfg.warmup, duration=cfg.duration)
    derive(result, server_cpu=SERVER_CPU if cfg.pin else None)
    log(f"[{target}]   {summary_run(result)}")
    return result


def rate_phase(target: str, server: "Server", upstream: "Server | None", rate: int, cfg: argparse.Namespace,
               log) -> dict:
    """Open loop at a fixed rate: latency from the schedule, achieved rate, errors, generator lag."""
    log(f"[{target}] rate: {rate:,} msg/s over {cfg.rate_conns} connections, {cfg.rate_size} B, "
        f"{cfg.rate_warmup:g}s warm-up + {cfg.duration:g}s")
    result = loadgen("rate", server.port, watched(server, upstream),
                     timeout=cfg.rate_warmup + cfg.duration + cfg.rate_drain + 90, cpu=LOAD_CPU if cfg.pin else None,
                     conns=cfg.rate_conns, rate=rate, size=cfg.rate_size, warmup=cfg.rate_warmup,
                     duration=cfg.duration, drain=cfg.rate_drain)
    derive(result, server_cpu=SERVER_CPU if cfg.pin else None)
    if "error" not in result:
        result["status"] = rate_status(result)
    log(f"[{target}]   {summary_rate(result)}")
    return result


def rate_status(run: dict) -> str:
    """One phrase for the table: ok, or what went wrong (overload, lost messages, a late generator)."""
    notes = []
    if run.get("overloaded_at_s") is not None:
        notes.append(f"overloaded at {run['overloaded_at_s']:.1f} s")
    elif (run.get("rate") or 0) < 0.98 * run["rate_target"]:
        notes.append(f"not sustained ({100 * (run.get('rate') or 0) / run['rate_target']:.0f} % achieved)")
    if (run.get("server_cpu_pct") or 0) >= 95:
        notes.append(f"server saturated ({run['server_cpu_pct']:.0f} % CPU)")
    errors = run.get("unanswered", 0) + run.get("not_sent_closed", 0) + run.get("closed_by_server", 0) + \
        run.get("bad_frames", 0)
    if errors:
        notes.append(f"{errors:,} errors")
    if run.get("generator_behind"):
        notes.append("generator behind")
    if (run.get("load_side_cpu_pct") or 0) >= 85:
        notes.append(f"load side at {run['load_side_cpu_pct']:.0f} % of its core")
    return ", ".join(notes) or "ok"


def derive(run: dict, server_cpu: int | None) -> None:
    """Add the figures the table shows: CPU µs per round trip, and load from other processes."""
    if "error" in run or not run.get("round_trips"):
        return
    cpu = run["cpu"]
    procs = cpu["procs"]
    server = procs.get("server")
    if server:
        run["server_cpu_us_per_rt"] = 1e6 * server["cpu_s"] / run["round_trips"]
        run["server_cpu_pct"] = server["cpu_pct"]
    echo = procs.get("echo")
    if echo:
        run["echo_cpu_us_per_rt"] = 1e6 * echo["cpu_s"] / run["round_trips"]
    run["generator_cpu_pct"] = cpu["generator"]["cpu_pct"]
    run["load_side_cpu_pct"] = run["generator_cpu_pct"] + (echo["cpu_pct"] if echo else 0)  # all on CPU 0
    if echo:
        run["echo_cpu_pct"] = echo["cpu_pct"]
    run["generator_cpu_us_per_rt"] = 1e6 * cpu["generator"]["cpu_s"] / run["round_trips"]
    if server_cpu is not None and server:
        ours = {f"cpu{server_cpu}": server["cpu_pct"],
                f"cpu{LOAD_CPU}": run["generator_cpu_pct"] + (echo["cpu_pct"] if echo else 0)}
        run["other_load_pct"] = {name: max(0.0, cpu["cpus"][name]["busy_pct"] - mine)
                                 for name, mine in ours.items() if name in cpu["cpus"]}


#: The per-run figures the table shows, as key paths; ``aggregate`` takes their medians over rounds.
FIGURES = (("rate",), ("latency_us", "p50"), ("latency_us", "p99"), ("latency_us", "p99.9"),
           ("server_cpu_us_per_rt",), ("server_cpu_pct",), ("generator_cpu_pct",), ("echo_cpu_us_per_rt",),
           ("other_load_pct", f"cpu{SERVER_CPU}"), ("other_load_pct", f"cpu{LOAD_CPU}"),
           ("send_lag_us", "p99"), ("send_lag_us", "max"), ("echo_cpu_pct",))


def aggregate(runs: list[dict]) -> dict:
    """Median of each figure over the rounds that succeeded (one round: its own figures), plus the rounds."""
    ok = [r for r in runs if "error" not in r]
    out: dict = {"rounds": runs}
    if not ok:
        out["error"] = runs[-1]["error"] if runs else "no run"
        return out
    for path in FIGURES:
        values = [_get(r, *path) for r in ok]
        if not any(v is not None for v in values):
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # A latency percentile that fell among unanswered messages is None: it stays None (worst) in the median.
        known = sorted(v for v in values if v is not None)
        node[path[-1]] = statistics.median(known + [float("inf")] * (len(values) - len(known)))
        if node[path[-1]] == float("inf"):
            node[path[-1]] = None
    cpu = [r["server_cpu_us_per_rt"] for r in ok if "server_cpu_us_per_rt" in r]
    if cpu:
        out["server_cpu_us_per_rt_range"] = [min(cpu), max(cpu)]
    if any("status" in r for r in ok):
        statuses = [r.get("status", "?") for r in ok]
        out["status"] = statuses[0] if len(set(statuses)) == 1 else "; ".join(statuses)
    out["errors"] = sum(r.get(k, 0) or 0 for r in ok for k in ("unanswered", "not_sent_closed", "closed_by_server",
                                                               "bad_frames")) + \
        sum(sum(r.get("open_errors", {}).values()) for r in ok) + (len(runs) - len(ok))
    return out


def summary_idle(idle: dict) -> str:
    if "error" in idle:
        return f"ERROR {idle['error']}"
    return (f"opened {idle['opened']}/{idle['target']} in {idle['open_seconds']:.1f}s "
            f"({idle.get('server_cpu_us_per_handshake') or float('nan'):.0f} µs server CPU per handshake, "
            f"{idle.get('server_cpu_pct') or 0:.0f}% CPU), "
            f"{idle.get('kib_per_conn', float('nan')):.1f} KiB/conn, alive {idle['alive']}")


def summary_run(run: dict) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    return (f"{run['rate']:.0f} rt/s, p50 {run['latency_us']['p50'] / 1000:.1f} ms, "
            f"server {run.get('server_cpu_us_per_rt', float('nan')):.1f} µs/rt "
            f"({run.get('server_cpu_pct', 0):.0f}% CPU), generator {run['generator_cpu_pct']:.0f}% CPU")


def summary_rate(run: dict) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    lat = run["latency_us"]
    ms = lambda v: f"{v / 1000:.2f}" if v is not None else "unanswered"  # noqa: E731
    return (f"{run['status']}: achieved {run.get('rate') or 0:,.0f} msg/s, p50/p99/p99.9 {ms(lat['p50'])}/"
            f"{ms(lat['p99'])}/{ms(lat['p99.9'])} ms, server {run.get('server_cpu_us_per_rt', float('nan')):.1f} "
            f"µs/rt ({run.get('server_cpu_pct', 0):.0f}% CPU), generator lag p99 "
            f"{run['send_lag_us']['p99'] or 0:.0f} µs, {run.get('generator_cpu_pct', 0):.0f}% CPU")


# -- the report -------------------------------------------------------------------

def _get(data: dict, *path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def size_label(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size // 1024} KiB"


class Lost(str):
    """A table cell for a latency percentile that fell among messages never answered."""


def rows(results: dict, targets, cfg) -> list[tuple[str, list, str, bool]]:
    """(label, values per target, format, ratio wanted) for every row of the table."""
    out = []

    def pair(a, b):  # two figures in one cell
        return [None if x is None and y is None else
                " / ".join(f"{v:.0f}" if v is not None else "–" for v in (x, y)) for x, y in zip(a, b)]

    for size in cfg.sizes:
        label = size_label(size)

        def tp(*path):
            return [_get(results, t, "throughput", str(size), *path) for t in targets]

        out += [
            (f"{label}: round trips/s", tp("rate"), "{:,.0f}", True),
            (f"{label}: **server CPU µs / round trip** (direct: echo server)", tp("server_cpu_us_per_rt"),
             "{:.1f}", True),
            *([(f"{label}: server CPU µs / round trip, min–max of {cfg.repeat} rounds",
                tp("server_cpu_us_per_rt_range"), "{0[0]:.1f}–{0[1]:.1f}", False)] if cfg.repeat > 1 else []),
            (f"{label}: server CPU (% of a core)", tp("server_cpu_pct"), "{:.0f}", False),
            (f"{label}: generator CPU (% of a core)", tp("generator_cpu_pct"), "{:.0f}", False),
            (f"{label}: upstream CPU µs / round trip (lean echo, behind a relay)", tp("echo_cpu_us_per_rt"),
             "{:.1f}", False),
            (f"{label}: other load on CPU {SERVER_CPU} / CPU {LOAD_CPU} (%)",
             pair(tp("other_load_pct", f"cpu{SERVER_CPU}"), tp("other_load_pct", f"cpu{LOAD_CPU}")), "{}", False),
        ]
    out.append(("closed loop: errors (all sizes and rounds)",
                [sum(_get(results, t, "throughput", str(size), "errors") or 0 for size in cfg.sizes)
                 if _get(results, t, "throughput") else None for t in targets], "{:,}", False))

    for rate in cfg.rates:
        label = f"{rate:,} msg/s"

        def rt(*path):
            return [_get(results, t, "rate", str(rate), *path) for t in targets]

        def ms(*path):  # a latency in ms; None for a percentile among unanswered messages
            return [(v / 1000 if v is not None else Lost("unanswered") if run is not None and "error" not in run
                     else None) for v, run in zip(rt(*path), rt())]

        out += [
            (f"{label}: status", rt("status"), "{}", False),
            (f"{label}: achieved (msg/s)", rt("rate"), "{:,.0f}", True),
            (f"{label}: latency p50 (ms)", ms("latency_us", "p50"), "{:,.2f}", True),
            (f"{label}: **latency p99 (ms)**", ms("latency_us", "p99"), "{:,.2f}", True),
            (f"{label}: latency p99.9 (ms)", ms("latency_us", "p99.9"), "{:,.2f}", True),
            (f"{label}: server CPU µs / round trip", rt("server_cpu_us_per_rt"), "{:.1f}", True),
            (f"{label}: server CPU (% of a core)", rt("server_cpu_pct"), "{:.0f}", False),
            (f"{label}: errors (unanswered, closed, bad)", rt("errors"), "{:,}", False),
            (f"{label}: generator send lag p99 / max (ms)",
             [f"{a / 1000:.2f} / {b / 1000:.2f}" if a is not None and b is not None else None
              for a, b in zip(rt("send_lag_us", "p99"), rt("send_lag_us", "max"))], "{}", False),
            (f"{label}: generator / upstream CPU (% of a core)", pair(rt("generator_cpu_pct"), rt("echo_cpu_pct")),
             "{}", False),
            (f"{label}: other load on CPU {SERVER_CPU} / CPU {LOAD_CPU} (%)",
             pair(rt("other_load_pct", f"cpu{SERVER_CPU}"), rt("other_load_pct", f"cpu{LOAD_CPU}")), "{}", False),
        ]

    def idle(key):
        return [_get(results, t, "idle", key) for t in targets]

    def mib(values):
        return [v / 1024 if v is not None else None for v in values]

    out += [
        ("idle: connections opened", idle("opened"), "{:,}", False),
        ("idle: handshakes/s", idle("handshakes_per_s"), "{:,.0f}", True),
        ("idle: server CPU µs / handshake", idle("server_cpu_us_per_handshake"), "{:,.0f}", True),
        ("idle: server CPU while opening (% of a core)", idle("server_cpu_pct"), "{:.0f}", False),
        (f"idle: other load on CPU {SERVER_CPU} / CPU {LOAD_CPU} while opening (%)",
         pair(*[[_get(results, t, "idle", "other_load_pct", f"cpu{n}") for t in targets]
                for n in (SERVER_CPU, LOAD_CPU)]), "{}", False),
        ("idle: server RSS before (MiB)", mib(idle("rss_before_kib")), "{:.1f}", False),
        ("idle: server RSS with all open (MiB)", mib(idle("rss_after_kib")), "{:.1f}", False),
        ("idle: **server KiB per idle connection**", idle("kib_per_conn"), "{:.1f}", True),
        ("idle: connections still echoing", idle("alive"), "{:,}", False),
        ("server log: warnings over the whole run (close-handshake timeouts)",
         [f"{w['count']:,} ({w['close_timeouts']:,})" if w else None
          for w in (_get(results, t, "log_warnings") for t in targets)], "{}", False),
    ]
    return out


def table(results: dict, targets, cfg) -> str:
    ratios = [(a, b) for a, b in RATIOS if a in targets and b in targets]
    lines = ["| figure | " + " | ".join(targets) + "".join(f" | {a.removeprefix('wsfw-')} / {b}" for a, b in ratios)
             + " |",
             "|---|" + "---:|" * (len(targets) + len(ratios))]
    for label, values, fmt, want_ratio in rows(results, targets, cfg):
        cells = [v if isinstance(v, Lost) else fmt.format(v) if v is not None else "–" for v in values]
        extra = []
        for a, b in ratios:
            x, y = values[targets.index(a)], values[targets.index(b)]
            ok = want_ratio and isinstance(x, (int, float)) and isinstance(y, (int, float)) and y
            extra.append(f"{x / y:.2f}×" if ok else "")
        lines.append(f"| {label} | " + " | ".join(cells + extra) + " |")
    return "\n".join(lines)


def header(report: dict) -> str:
    m, c, probe = report["machine"], report["config"], report["idle_probe"]
    started = report["started_utc"].replace("T", " ").replace("Z", " UTC")
    lines = [
        f"- **Run:** {started}, {'`--quick`' if c['quick'] else 'full run'} "
        f"(`bench/relay_bench.py{''.join(' ' + a for a in report['argv'])}`), {report['elapsed_s'] / 60:.1f} min; "
        f"wsfw commit `{m['wsfw_commit']}`.",
        f"- **Machine:** {m['cpu_model'] or 'unknown CPU'}, {m['nproc']} CPUs, Linux {m['kernel']}, "
        f"Python {m['python']}, Twisted {m['twisted']}, Autobahn {m['autobahn']}; "
        + ("server under test pinned alone to CPU 1, generator + upstream on CPU 0." if c["pin"] else
           "no CPU pinning."),
        f"- **Load:** `/proc/loadavg` {report['loadavg_before']} before, {report['loadavg_after']} after; "
        "idle probe (2 s) before the run: " + ", ".join(f"{n} {v['busy_pct']:.0f}% busy"
                                                        for n, v in probe["cpus"].items() if n != "cpu")
        + ("; busiest other processes: " + "; ".join(f"{p['comm']} {p['cpu_pct']:.0f}%" for p in probe["top"])
           if probe["top"] else "") + ".",
        f"- **Closed loop:** {c['conns']} connections × {c['window']} in flight, {c['warmup']:g} s warm-up + "
        f"{c['duration']:g} s per window" + (f", {c['repeat']} interleaved rounds (medians)" if c["repeat"] > 1 else "")
        + f". **Fixed rate:** {c['rate_conns']} connections, {c['rate_size']} B, {c['rate_warmup']:g} s warm-up + "
        f"{c['duration']:g} s" + (f", {c['rate_repeat']} rounds (medians)" if c["rate_repeat"] > 1 else "")
        + f". **Idle:** {c['idle_conns']:,} connections, {c['concurrency']} handshakes at a time.",
    ]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    """Replace bench/README.md's results section (between the marker lines) with ``text``."""
    readme = README.read_text()
    begin, end = readme.find(README_BEGIN), readme.find(README_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{README}: no results markers ({README_BEGIN!r} ... {README_END!r})")
    README.write_text(readme[:begin + len(README_BEGIN)] + "\n\n" + text + "\n\n" + readme[end:])


# -- main -------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1,
                        help="wsfw [wsfw] workers (default 1; with more, use --no-pin so they get the cores)")
    parser.add_argument("--quick", action="store_true",
                        help="3 s windows, 1 round, 1000 idle connections (about 3 minutes)")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/<UTC timestamp>.json)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated subset of " + ",".join(TARGETS) + " ('wsfw' = all three wsfw modes; "
                             f"{CLUSTER}, not run by default, needs redis-server)")
    parser.add_argument("--repeat", type=int, metavar="R",
                        help="closed-loop rounds per target and size, interleaved across targets; the table "
                             "shows medians (default: 3, --quick: 1)")
    parser.add_argument("--rate-repeat", type=int, default=1, metavar="R",
                        help="fixed-rate rounds per target and rate, interleaved (default 1)")
    parser.add_argument("--readme", action="store_true",
                        help="also write the results into bench/README.md (between its results markers)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    targets = []
    for name in (t.strip() for t in args.targets.split(",")):
        for target in (WSFW_MODES if name == "wsfw" else [name] if name else []):
            if target not in TARGETS:
                parser.error(f"unknown target {target!r} (known: {', '.join(TARGETS)}, wsfw)")
            if target not in targets:
                targets.append(target)
    args.targets = [t for t in TARGETS if t in targets]  # always in the table's order
    # One 10 s window per target swings by +-20% when another job shares the machine
    # (bench/README.md); three interleaved rounds and their median hold to a few %.
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1 or args.rate_repeat < 1:
        parser.error("--repeat and --rate-repeat must be at least 1")
    args.pin = args.pin and pinning_available()
    args.conns, args.window, args.sizes = 50, 10, (64, 1024, 16384)
    args.warmup, args.duration = 2.0, (3.0 if args.quick else 10.0)
    args.rates, args.rate_conns, args.rate_size, args.rate_warmup = (1000, 5000), 100, 128, 2.0
    args.rate_drain = 5.0 if args.quick else 10.0
    # A relayed connection holds 2 fds in the relay (client + upstream); leave ~150 for everything else.
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    args.idle_conns = min(1000 if args.quick else 9900, (fd_limit - 150) // 2)
    args.concurrency, args.settle, args.idle_timeout = 100, 2.0, 180.0
    return args


def start_target(target: str, upstream: Server, workdir: Path, cfg: argparse.Namespace) -> Server:
    """Start plain-relay or a wsfw daemon in front of the upstream, on the server CPU."""
    cpu = SERVER_CPU if cfg.pin else None
    if target == "plain-relay":
        return Server(target, [PYTHON, str(BENCH / "plain_relay.py"), "--port", "0", "--backlog", str(BACKLOG),
                               "--upstream", f"ws://127.0.0.1:{upstream.port}"],
                      r"plain-relay listening on (?P<port>\d+)", workdir, cpu).start()
    config = workdir / f"{target}.ini"
    text = WSFW_CONFIG.format(port=free_port(), backlog=BACKLOG, upstream=upstream.port,
                              mode=WSFW_MODES.get(target, "block"), workers=cfg.workers)
    if target == CLUSTER:
        redis = cfg.redis
        # Limits that make every handshake reserve a slot in Redis, none the load comes near.
        text = text.replace("[limits]\n", "[limits]\nmax_connections_per_ip = 100000\n"
                                           "handshake_rate_per_ip = 100000/s\nban_after = 1000\n")
        text += f"\n[cluster]\nredis = tcp:127.0.0.1:{redis.port}\nnode = bench\n"
    config.write_text(text)
    return Server(target, [TWISTD, "-n", "--pidfile=", "wsfw", "--config", str(config)],
                  r"listening \[listen:bench\] on 127\.0\.0\.1:(?P<port>\d+)", workdir, cpu).start()


@contextlib.contextmanager
def under_test(server: Server, cfg: argparse.Namespace):
    """While the echo server is under test (``direct``), it gets the server CPU."""
    moved = cfg.pin and server.name == "echo"
    echo = server
    if moved:
        os.sched_setaffinity(echo.pid, {SERVER_CPU})
    try:
        yield
    finally:
        if moved and echo.proc.poll() is None:
            os.sched_setaffinity(echo.pid, {LOAD_CPU})


CONFIG_KEYS = ("quick", "pin", "conns", "window", "sizes", "warmup", "duration", "repeat", "rates", "rate_conns",
               "rate_size", "rate_warmup", "rate_drain", "rate_repeat", "idle_conns", "concurrency", "settle")


def run(cfg: argparse.Namespace, argv: list[str]) -> dict:
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - progress goes to stderr
    report = {"started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "argv": argv, "machine": machine_info(),
              "config": {k: getattr(cfg, k) for k in CONFIG_KEYS}, "targets": cfg.targets,
              "loadavg_before": loadavg()}
    log(f"load average {report['loadavg_before']}; idle probe (2s) ...")
    report["idle_probe"] = idle_probe(2.0)
    if report["idle_probe"]["busy"]:
        log("  machine busy: " + "; ".join(f"{p['comm']} {p['cpu_pct']}% ({p['cmdline'][:80]})"
                                           for p in report["idle_probe"]["top"]))
    if cfg.pin:
        os.sched_setaffinity(0, {LOAD_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="wsfw-bench-"))
    servers: dict[str, Server] = {}
    results: dict = {}
    try:
        load_cpu = LOAD_CPU if cfg.pin else None
        if "direct" in cfg.targets:
            servers["echo"] = Server("echo", [PYTHON, str(BENCH / "echo_upstream.py"), "--port", "0", "--backlog",
                                              str(BACKLOG)], r"echo listening on (?P<port>\d+)", workdir,
                                     load_cpu).start()
        if CLUSTER in cfg.targets:
            port = free_port()
            cfg.redis = servers["redis"] = Server(
                "redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                          "no", "--dir", str(workdir)], r"port=(?P<port>\d+)\.(?s:.*)Ready to accept connections", workdir,
                load_cpu).start()
        upstream = None
        if set(cfg.targets) - {"direct"}:
            upstream = servers["upstream"] = Server(
                "upstream", [PYTHON, str(BENCH / "lean_echo.py"), "--port", "0", "--backlog", str(BACKLOG)],
                r"lean echo listening on (?P<port>\d+)", workdir, load_cpu).start()
        for target in cfg.targets:
            servers[target] = (servers["echo"] if target == "direct" else
                               start_target(target, upstream, workdir, cfg))
            results[target] = {"pid": servers[target].pid, "port": servers[target].port, "throughput": {},
                               "rate": {}}
        pids = sorted({server.pid for server in servers.values()})

        def each_target(phase, *args, quiet: float = 20.0):
            """``phase`` on every target in turn; their figures, after each a wait for the servers to go quiet."""
            out = {}
            for target in cfg.targets:
                with under_test(servers[target], cfg):
                    out[target] = phase(target, servers[target], None if target == "direct" else upstream, *args)
                out[target]["quiet_after_s"] = wait_quiet(pids, timeout=quiet)
            return out

        # Idle phases first, on servers that have carried no traffic yet (cleanest RSS baseline);
        # then each size and each rate on every target in turn, so their windows are close in time.
        for target, result in each_target(idle_phase, cfg, log, quiet=30.0).items():
            results[target]["idle"] = result
        runs = {}
        for size in cfg.sizes:
            for _ in range(cfg.repeat):
                for target, result in each_target(throughput_phase, size, cfg, log).items():
                    runs.setdefault((target, size), []).append(result)
        for (target, size), rounds in runs.items():
            results[target]["throughput"][str(size)] = aggregate(rounds)
        runs = {}
        for rate in cfg.rates:
            for _ in range(cfg.rate_repeat):
                for target, result in each_target(rate_phase, rate, cfg, log, quiet=30.0).items():
                    runs.setdefault((target, rate), []).append(result)
        for (target, rate), rounds in runs.items():
            results[target]["rate"][str(rate)] = aggregate(rounds)
    finally:
        for server in reversed(servers.values()):
            server.stop()
        for target, server in servers.items():
            if target in results:
                results[target]["log_warnings"] = server.warnings()
                results[target]["log_tail"] = server.tail(10)
        for name in ("echo", "upstream"):
            if name in servers:
                report[f"{name}_log_warnings"] = servers[name].warnings()
        shutil.rmtree(workdir, ignore_errors=True)
        report["results"] = results
        report["loadavg_after"] = loadavg()
        report["elapsed_s"] = time.monotonic() - t_start
    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(argv)
    if cfg.readme:  # fail now, not after the run
        text = README.read_text()
        if README_BEGIN not in text or README_END not in text:
            raise SystemExit(f"{README}: no results markers to write between")
    # SIGTERM runs the same cleanup as an exception: every child gets stopped in run()'s finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(cfg, argv)
    out = cfg.out or BENCH / "results" / (report["started_utc"].replace(":", "").replace("-", "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report["table_markdown"] = table(report["results"], cfg.targets, cfg)
    report["header_markdown"] = header(report)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["header_markdown"])
    print()
    print(report["table_markdown"])
    print()
    print(f"raw figures: {out}")
    if cfg.readme:
        write_readme(report["header_markdown"] + "\n\n" + report["table_markdown"])
        print(f"results written into {README}")
    errors = [t for t, r in report["results"].items()
              if "error" in r.get("idle", {}) or any("error" in run for phase in ("throughput", "rate")
                                                    for agg in r.get(phase, {}).values() for run in agg["rounds"])]
    if errors:
        print(f"errors in: {', '.join(errors)} (see the JSON)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
