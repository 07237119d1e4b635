"""``wsfw`` command: ``wsfw check-config PATH`` validates a config like ``nginx -t``."""

from __future__ import annotations

import argparse
import sys

from wsfw import __version__, config_ini
from wsfw.config import FRAMINGS
from wsfw.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wsfw", description="WebSocket application firewall")
    parser.add_argument("--version", action="version", version=f"wsfw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a configuration file and exit 0 (valid) or 1")
    check.add_argument("path", nargs="?", default="/etc/wsfw/wsfw.ini")
    inspect = commands.add_parser("inspect", help="decode messages and show the verdict with reasons, offline")
    inspect.add_argument("file", nargs="?", default="-", help="one message per line (default: stdin)")
    inspect.add_argument("--config", default=None, help="use this config's inspection settings")
    inspect.add_argument("--route", default=None, help="route whose mode and framing apply (default: the first)")
    inspect.add_argument("--framing", default=None, choices=FRAMINGS, help="override the route's framing")
    inspect.add_argument("--path", default="/", help="request path, for framing selection (e.g. /socket.io/)")
    inspect.add_argument("--subprotocol", default=None,
                         help="negotiated WebSocket subprotocol, for framing selection (e.g. v12.stomp, wamp.2.json)")
    inspect.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                         help="a handshake header the rules may test (repeatable), e.g. 'Origin: https://a.example'")
    inspect.add_argument("--client", default="127.0.0.1",
                         help="the client address the rules see (default 127.0.0.1)")
    inspect.add_argument("--query", default="", help="the handshake's query string, for framing selection and rules")
    inspect.add_argument("--escaped", action="store_true",
                         help="lines carry backslash escapes (\\n, \\x00, \\x1e ...), so multi-line frames "
                              "(STOMP) fit on one line; a line starting with 'b:' is a binary message")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        return run_inspect(args)
    try:
        config = config_ini.load(args.path)
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    policy = config.policy
    rules = ""
    if policy:
        rules = (f", {len(policy.rules)} rule(s), {len(policy.models)} positive model(s)"
                 f"{f' from {len(policy.files)} rule file(s)' if policy.files else ''}")
    sys.stdout.write(f"{args.path}: configuration ok ({len(config.listeners)} listener(s), "
                     f"{len(config.routes)} route(s){rules})\n")
    return 0


_MINIMAL = "[listen:x]\nendpoint = tcp:0\n[route:default]\nupstream = ws://127.0.0.1:1\n"


def run_inspect(args) -> int:
    """``wsfw inspect``: what wsfw would decode from each message, and what it would decide."""
    import attrs

    import codecs

    from wsfw import decoders
    from wsfw.inspection.audit import Audit, escape
    from wsfw.inspection.pipeline import build_pipelines

    try:
        config = config_ini.load(args.config) if args.config else config_ini.load("(defaults)", _MINIMAL)
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    names = [r.name for r in config.routes]
    route_name = args.route or names[0]
    if route_name not in names:
        sys.stderr.write(f"no route {route_name!r} (routes: {', '.join(names)})\n")
        return 1
    if args.framing:
        config = attrs.evolve(config, routes=tuple(attrs.evolve(r, framing=args.framing) for r in config.routes))
    pipeline = build_pipelines(config, Audit(None))[route_name]
    headers = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            sys.stderr.write(f"--header {header!r}: expected NAME:VALUE\n")
            return 2
        headers.append((name.strip().lower(), value.strip()))
    from wsfw.policy.runtime import ConnState

    policy_state = ConnState()  # rate limits and handshake values span the input's lines, as one connection
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    out = sys.stdout.write
    blocked = number = 0
    state = decoders.ConnectionState()  # the lines are one connection's messages, in order
    with source:
        for number, line in enumerate(source, 1):
            payload = line.rstrip(b"\r\n")
            is_binary = False
            if args.escaped:
                if payload.startswith(b"b:"):
                    payload, is_binary = payload[2:], True
                payload = codecs.escape_decode(payload)[0]
            trace = []
            decoded, findings = pipeline.explain(payload, is_binary, path=args.path, query=args.query,
                                                 subprotocol=args.subprotocol, state=state, trace=trace,
                                                 headers=tuple(headers), peer=f"{args.client}:0",
                                                 policy_state=policy_state)
            out(f"message {number}: framing={decoded.format} event={decoded.event!r}"
                f"{' error=' + decoded.error if decoded.error else ''}"
                f"{' truncated=' + decoded.truncated if decoded.truncated else ''}\n")
            for path, value in decoded.params:
                out(f"  {path} = {escape(value, 200)!r}\n")
            decision = "FORWARD"
            deciding = next((f for f in findings if f.action in ("block", "drop")), findings[0] if findings else None)
            for rule_id, action, param in trace:
                out(f"  rule: {rule_id} {action}{' param=' + param if param else ''}\n")
            for finding in findings:
                out(f"  finding: {finding.inspector} {finding.action} score={finding.score} "
                    f"rules={','.join(finding.rules)} param={finding.path} excerpt={escape(finding.excerpt)!r}"
                    f"{' tags=' + ','.join(finding.tags) if finding.tags else ''}\n")
                if finding.action in ("block", "drop") and decision == "FORWARD":
                    decision = (("BLOCK" if finding.action == "block" else "DROP") if pipeline.mode == "block"
                                else "DETECT (forwarded, mode=detect)")
            if decision != "FORWARD":
                blocked += 1
            out(f"  verdict: {decision}{' (' + deciding.reason + ')' if deciding else ''}\n")
    out(f"{number} message(s), {blocked} would be blocked\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
