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
    sys.stdout.write(f"{args.path}: configuration ok ({len(config.listeners)} listener(s), "
                     f"{len(config.routes)} route(s))\n")
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
            decoded, findings = pipeline.explain(payload, is_binary, path=args.path, subprotocol=args.subprotocol,
                                                 state=state)
            out(f"message {number}: framing={decoded.format} event={decoded.event!r}"
                f"{' error=' + decoded.error if decoded.error else ''}"
                f"{' truncated=' + decoded.truncated if decoded.truncated else ''}\n")
            for path, value in decoded.params:
                out(f"  {path} = {escape(value, 200)!r}\n")
            decision = "FORWARD"
            for finding in findings:
                out(f"  finding: {finding.inspector} {finding.action} score={finding.score} "
                    f"rules={','.join(finding.rules)} param={finding.path} excerpt={escape(finding.excerpt)!r}\n")
                if finding.action == "block":
                    decision = "BLOCK" if pipeline.mode == "block" else "DETECT (forwarded, mode=detect)"
            if decision != "FORWARD":
                blocked += 1
            out(f"  verdict: {decision}{' (' + findings[0].reason + ')' if findings else ''}\n")
    out(f"{number} message(s), {blocked} would be blocked\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
