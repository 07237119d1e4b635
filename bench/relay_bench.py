"""wsfw relay benchmark: what wsfw costs on top of a bare Autobahn relay.

Three targets in one run, each in front of the same Autobahn echo server:

``direct``       the echo server itself (the floor: one Autobahn server hop);
``plain-relay``  bench/plain_relay.py, a minimal Autobahn relay (the baseline);
``wsfw``         the daemon, started with twistd as in production.

Per target: an idle phase (K connections opened and held: the server's RSS per
connection, handshakes/s, how many still echo) and a throughput phase per
message size (N connections x W messages in flight, closed loop: round
trips/s, latency percentiles, and the server's CPU time per round trip from
/proc/PID/stat). All servers start first; the idle phases run on servers
that have carried no traffic yet, then each size runs on the three targets in
turn (``--repeat R``: R interleaved rounds, medians reported), so the windows
compared are close in time. The server under test runs alone on CPU 1; the
generator and the echo server share CPU 0. CPU time per round trip is the
figure to compare: rates and latencies move with whatever else the machine
runs, CPU time per round trip much less.

    .venv/bin/python bench/relay_bench.py [--quick] [--repeat R] [--out bench/results/NAME.json]

Prints a markdown table and writes every raw figure as JSON. See bench/README.md.
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
PYTHON = sys.executable
TWISTD = str(Path(sys.executable).parent / "twistd")
TARGETS = ("direct", "plain-relay", "wsfw")
SERVER_CPU, LOAD_CPU = 1, 0  # the server under test gets CPU 1 to itself
BACKLOG = 1024               # same listen backlog on all three servers

WSFW_CONFIG = """\
# Written by bench/relay_bench.py: wsfw with its shipped defaults, quiet logs.
[wsfw]
mode = {mode}

[listen:bench]
endpoint = tcp:{port}:interface=127.0.0.1:backlog={backlog}

[route:bench]
upstream = ws://127.0.0.1:{upstream}

[limits]
max_connections = 0

[log]
level = warn
connections = no
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

    def start(self, timeout: float = 30.0) -> "Server":
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

    def warnings(self) -> int:
        """Lines the server logged at warn level or worse (Twisted's ``[namespace#level]`` format)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return len(re.findall(r"#(?:warn|error|critical)\]", text))

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

def idle_phase(target: str, server: "Server", cfg: argparse.Namespace, log) -> dict:
    """K idle connections: the server's RSS per connection, handshakes/s, how many still echo."""
    log(f"[{target}] idle: {cfg.idle_conns} connections, {cfg.concurrency} handshakes at a time")
    result = loadgen("idle", server.port, {"server": server.pid}, timeout=cfg.idle_timeout + 120,
                     cpu=LOAD_CPU if cfg.pin else None, conns=cfg.idle_conns, concurrency=cfg.concurrency,
                     settle=cfg.settle, open_timeout=cfg.idle_timeout, size=64)
    log(f"[{target}]   {summary_idle(result)}")
    return result


def throughput_phase(target: str, server: "Server", echo: "Server", size: int, cfg: argparse.Namespace,
                     log) -> dict:
    """N connections x W in flight: rate, latency, and the server's CPU time per round trip."""
    watch = {"server": server.pid}
    if server is not echo:
        watch["echo"] = echo.pid
    log(f"[{target}] throughput: {size} B, {cfg.conns} x {cfg.window} in flight, "
        f"{cfg.warmup:g}s warm-up + {cfg.duration:g}s")
    result = loadgen("throughput", server.port, watch, timeout=cfg.warmup + cfg.duration + 90,
                     cpu=LOAD_CPU if cfg.pin else None, conns=cfg.conns, window=cfg.window, size=size,
                     warmup=cfg.warmup, duration=cfg.duration)
    derive(result, server_cpu=SERVER_CPU if cfg.pin else None)
    log(f"[{target}]   {summary_run(result)}")
    return result


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
    run["generator_cpu_us_per_rt"] = 1e6 * cpu["generator"]["cpu_s"] / run["round_trips"]
    if server_cpu is not None and server:
        ours = {f"cpu{server_cpu}": server["cpu_pct"],
                f"cpu{LOAD_CPU}": run["generator_cpu_pct"] + (echo["cpu_pct"] if echo else 0)}
        run["other_load_pct"] = {name: max(0.0, cpu["cpus"][name]["busy_pct"] - mine)
                                 for name, mine in ours.items() if name in cpu["cpus"]}


#: The per-run figures the table shows, as key paths; ``aggregate`` takes their medians over rounds.
FIGURES = (("rate",), ("latency_us", "p50"), ("latency_us", "p99"), ("latency_us", "p99.9"),
           ("server_cpu_us_per_rt",), ("server_cpu_pct",), ("generator_cpu_pct",), ("echo_cpu_us_per_rt",),
           ("other_load_pct", f"cpu{SERVER_CPU}"), ("other_load_pct", f"cpu{LOAD_CPU}"))


def aggregate(runs: list[dict]) -> dict:
    """Median of each figure over the rounds that succeeded (one round: its own figures), plus the rounds."""
    ok = [r for r in runs if "error" not in r]
    out: dict = {"rounds": runs}
    if not ok:
        out["error"] = runs[-1]["error"] if runs else "no run"
        return out
    for path in FIGURES:
        values = [v for v in (_get(r, *path) for r in ok) if v is not None]
        if not values:
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = statistics.median(values)
    cpu = [r["server_cpu_us_per_rt"] for r in ok if "server_cpu_us_per_rt" in r]
    if cpu:
        out["server_cpu_us_per_rt_range"] = [min(cpu), max(cpu)]
    return out


def summary_idle(idle: dict) -> str:
    if "error" in idle:
        return f"ERROR {idle['error']}"
    return (f"opened {idle['opened']}/{idle['target']} in {idle['open_seconds']:.1f}s, "
            f"{idle.get('kib_per_conn', float('nan')):.1f} KiB/conn, alive {idle['alive']}")


def summary_run(run: dict) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    return (f"{run['rate']:.0f} rt/s, p50 {run['latency_us']['p50'] / 1000:.1f} ms, "
            f"server {run.get('server_cpu_us_per_rt', float('nan')):.1f} µs/rt "
            f"({run.get('server_cpu_pct', 0):.0f}% CPU), generator {run['generator_cpu_pct']:.0f}% CPU")


# -- the report -------------------------------------------------------------------

def _get(data: dict, *path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def rows(results: dict, sizes, repeat: int = 1) -> list[tuple[str, list, str, bool]]:
    """(label, values per target, format, ratio wanted) for every row of the table."""
    out = []
    for size in sizes:
        s = str(size)
        label = f"{size} B" if size < 1024 else f"{size // 1024} KiB"

        def tp(*path):
            return [_get(results, t, "throughput", s, *path) for t in TARGETS]

        out += [
            (f"{label}: round trips/s", tp("rate"), "{:,.0f}", True),
            (f"{label}: latency p50 (µs)", tp("latency_us", "p50"), "{:,.0f}", True),
            (f"{label}: latency p99 (µs)", tp("latency_us", "p99"), "{:,.0f}", True),
            (f"{label}: latency p99.9 (µs)", tp("latency_us", "p99.9"), "{:,.0f}", True),
            (f"{label}: **server CPU µs / round trip** (direct: echo server)", tp("server_cpu_us_per_rt"),
             "{:.1f}", True),
            (f"{label}: server CPU (% of a core)", tp("server_cpu_pct"), "{:.0f}", False),
            *([(f"{label}: server CPU µs / round trip, min–max of {repeat} rounds",
                tp("server_cpu_us_per_rt_range"), "{0[0]:.1f}–{0[1]:.1f}", False)] if repeat > 1 else []),
            (f"{label}: generator CPU (% of a core)", tp("generator_cpu_pct"), "{:.0f}", False),
            (f"{label}: echo CPU µs / round trip (behind a relay)", tp("echo_cpu_us_per_rt"), "{:.1f}", False),
            (f"{label}: other load on CPU {SERVER_CPU} (%)", tp("other_load_pct", f"cpu{SERVER_CPU}"),
             "{:.0f}", False),
            (f"{label}: other load on CPU {LOAD_CPU} (%)", tp("other_load_pct", f"cpu{LOAD_CPU}"),
             "{:.0f}", False),
        ]

    def idle(key):
        return [_get(results, t, "idle", key) for t in TARGETS]

    def mib(values):
        return [v / 1024 if v is not None else None for v in values]

    out += [
        ("idle: connections opened", idle("opened"), "{:,}", False),
        ("idle: handshakes/s", idle("handshakes_per_s"), "{:,.0f}", True),
        ("idle: server RSS before (MiB)", mib(idle("rss_before_kib")), "{:.1f}", False),
        ("idle: server RSS with all open (MiB)", mib(idle("rss_after_kib")), "{:.1f}", False),
        ("idle: **server KiB per idle connection**", idle("kib_per_conn"), "{:.1f}", True),
        ("idle: connections still echoing", idle("alive"), "{:,}", False),
        ("server log: warnings over the whole run", [_get(results, t, "log_warnings") for t in TARGETS],
         "{:,}", False),
    ]
    return out


def table(results: dict, sizes, repeat: int = 1) -> str:
    lines = ["| figure | direct | plain-relay | wsfw | wsfw / plain-relay |", "|---|---:|---:|---:|---:|"]
    for label, values, fmt, ratio in rows(results, sizes, repeat):
        cells = [fmt.format(v) if v is not None else "–" for v in values]
        plain, wsfw = values[1], values[2]
        r = f"{wsfw / plain:.2f}×" if ratio and plain and wsfw is not None else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r} |")
    return "\n".join(lines)


def header(report: dict) -> str:
    m, c, probe = report["machine"], report["config"], report["idle_probe"]
    lines = [
        f"Run {report['started_utc']} ({'quick' if c['quick'] else 'full'}), {report['elapsed_s']:.0f}s, "
        f"wsfw {m['wsfw_commit']} (mode {report.get('wsfw_mode', 'block')}); "
        f"{m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}, "
        f"Twisted {m['twisted']}, Autobahn {m['autobahn']}; "
        f"{'server under test pinned to CPU 1, generator + echo to CPU 0' if c['pin'] else 'no CPU pinning'}.",
        f"Throughput: {c['conns']} connections x {c['window']} in flight, {c['warmup']:g}s warm-up + "
        f"{c['duration']:g}s" + (f", {c['repeat']} interleaved rounds (medians)" if c["repeat"] > 1 else "")
        + f"; idle: {c['idle_conns']} connections, {c['concurrency']} handshakes at a time.",
        "Idle probe before the run: " + ", ".join(f"{n} {v['busy_pct']:.0f}% busy"
                                                  for n, v in probe["cpus"].items() if n != "cpu")
        + (" -- the machine was NOT idle: " + "; ".join(f"{p['comm']} {p['cpu_pct']:.0f}%"
                                                        for p in probe["top"]) if probe["busy"] else " (idle)."),
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3s measured windows, 1000 idle connections")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/<UTC timestamp>.json)")
    parser.add_argument("--wsfw-mode", default="block", choices=("block", "detect", "off"),
                        help="wsfw's inspection mode: block (default: every message decoded and scanned) or off "
                             "(the relay alone), to measure what inspection costs")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of " + ",".join(TARGETS))
    parser.add_argument("--repeat", type=int, metavar="R",
                        help="throughput rounds per target and size, interleaved across targets; the table "
                             "shows medians (default: 3, --quick: 1)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    # One 10 s window per target swings by +-20% when another job shares the machine
    # (bench/README.md); three interleaved rounds and their median hold to a few %.
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.pin = args.pin and pinning_available()
    args.conns, args.window, args.sizes = 50, 10, (64, 1024)
    args.warmup, args.duration = 2.0, (3.0 if args.quick else 10.0)
    args.idle_conns = 1000 if args.quick else 5000
    args.concurrency, args.settle, args.idle_timeout = 100, 2.0, 120.0
    return args


def start_target(target: str, echo: Server, workdir: Path, cfg: argparse.Namespace) -> Server:
    """Start plain-relay or wsfw in front of the echo server, on the server CPU."""
    cpu = SERVER_CPU if cfg.pin else None
    if target == "plain-relay":
        return Server(target, [PYTHON, str(BENCH / "plain_relay.py"), "--port", "0", "--backlog", str(BACKLOG),
                               "--upstream", f"ws://127.0.0.1:{echo.port}"],
                      r"plain-relay listening on (?P<port>\d+)", workdir, cpu).start()
    config = workdir / "wsfw.ini"
    config.write_text(WSFW_CONFIG.format(port=free_port(), backlog=BACKLOG, upstream=echo.port, mode=cfg.wsfw_mode))
    return Server(target, [TWISTD, "-n", "--pidfile=", "wsfw", "--config", str(config)],
                  r"listening \[listen:bench\] on 127\.0\.0\.1:(?P<port>\d+)", workdir, cpu).start()


@contextlib.contextmanager
def under_test(server: Server, echo: Server, cfg: argparse.Namespace):
    """While the echo server itself is under test (``direct``), it gets the server CPU."""
    moved = cfg.pin and server is echo
    if moved:
        os.sched_setaffinity(echo.pid, {SERVER_CPU})
    try:
        yield
    finally:
        if moved and echo.proc.poll() is None:
            os.sched_setaffinity(echo.pid, {LOAD_CPU})


def run(cfg: argparse.Namespace) -> dict:
    started = datetime.datetime.now(datetime.timezone.utc)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - progress goes to stderr
    report = {"started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine_info(),
              "config": {k: getattr(cfg, k) for k in ("quick", "pin", "conns", "window", "sizes", "warmup",
                                                      "duration", "repeat", "idle_conns", "concurrency",
                                                      "settle")},
              "targets": cfg.targets, "wsfw_mode": cfg.wsfw_mode}
    log("idle probe (2s) ...")
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
        echo = Server("echo", [PYTHON, str(BENCH / "echo_upstream.py"), "--port", "0", "--backlog", str(BACKLOG)],
                      r"echo listening on (?P<port>\d+)", workdir, LOAD_CPU if cfg.pin else None).start()
        servers["echo"] = echo
        for target in cfg.targets:
            servers[target] = echo if target == "direct" else start_target(target, echo, workdir, cfg)
            results[target] = {"pid": servers[target].pid, "port": servers[target].port, "throughput": {}}
        # Idle phases first, on servers that have carried no traffic yet (cleanest RSS baseline);
        # then each message size on every target in turn, so their windows are close in time.
        pids = sorted({server.pid for server in servers.values()})
        for target in cfg.targets:
            with under_test(servers[target], echo, cfg):
                results[target]["idle"] = idle_phase(target, servers[target], cfg, log)
            results[target]["idle"]["quiet_after_s"] = wait_quiet(pids)
        runs = {(t, size): [] for t in cfg.targets for size in cfg.sizes}
        for size in cfg.sizes:
            for _ in range(cfg.repeat):
                for target in cfg.targets:
                    with under_test(servers[target], echo, cfg):
                        runs[target, size].append(throughput_phase(target, servers[target], echo, size, cfg, log))
                    wait_quiet(pids)
        for (target, size), rounds in runs.items():
            results[target]["throughput"][str(size)] = aggregate(rounds)
    finally:
        for server in reversed(servers.values()):
            server.stop()
        for target, server in servers.items():
            if target in results:
                results[target]["log_warnings"] = server.warnings()
                results[target]["log_tail"] = server.tail(10)
        if "echo" in servers:
            report["echo_log_warnings"] = servers["echo"].warnings()
        shutil.rmtree(workdir, ignore_errors=True)
    report["results"] = results
    report["elapsed_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return report


def main(argv=None) -> int:
    cfg = parse_args(argv)
    # SIGTERM runs the same cleanup as an exception: every child gets stopped in run()'s finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(cfg)
    out = cfg.out or BENCH / "results" / (report["started_utc"].replace(":", "").replace("-", "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report["table_markdown"] = table(report["results"], cfg.sizes, cfg.repeat)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(header(report))
    print()
    print(report["table_markdown"])
    print()
    print(f"raw figures: {out}")
    errors = [t for t, r in report["results"].items()
              if "error" in r.get("idle", {}) or any("error" in run for size in r.get("throughput", {}).values()
                                                    for run in size["rounds"])]
    if errors:
        print(f"errors in: {', '.join(errors)} (see the JSON)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
