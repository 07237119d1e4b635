"""``wsfw`` command: ``wsfw check-config PATH`` validates a config like ``nginx -t``."""

from __future__ import annotations

import argparse
import sys

from wsfw import __version__, config_ini
from wsfw.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wsfw", description="WebSocket application firewall")
    parser.add_argument("--version", action="version", version=f"wsfw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a configuration file and exit 0 (valid) or 1")
    check.add_argument("path", nargs="?", default="/etc/wsfw/wsfw.ini")
    args = parser.parse_args(argv)
    try:
        config = config_ini.load(args.path)
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    sys.stdout.write(f"{args.path}: configuration ok ({len(config.listeners)} listener(s), "
                     f"{len(config.routes)} route(s))\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
