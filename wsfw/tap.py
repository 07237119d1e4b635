"""twistd glue: ``twistd wsfw --config PATH`` (the plugin points here, lazily)."""

from __future__ import annotations

import sys

from twisted.python import usage

from wsfw import config_ini
from wsfw.errors import ConfigError

DEFAULT_CONFIG = "/etc/wsfw/wsfw.ini"


class Options(usage.Options):
    synopsis = "[--config PATH] [--check]"
    optParameters = [["config", "c", DEFAULT_CONFIG, "Path of the wsfw ini file."]]
    optFlags = [["check", None, "Validate the config and exit (0 when valid, 1 otherwise), like nginx -t."]]

    def postOptions(self):
        try:
            self["loaded"] = config_ini.load(self["config"])
        except ConfigError as e:
            if self["check"]:
                sys.stderr.write(f"{e}\n")
                raise SystemExit(1)
            raise usage.UsageError(str(e))
        if self["check"]:
            sys.stdout.write(f"{self['config']}: configuration ok\n")
            raise SystemExit(0)


def makeService(options):
    """One process (``[wsfw] workers = 1``), or a supervisor of that many worker processes."""
    from twisted.internet import reactor

    config = options["loaded"]
    count = config.settings.worker_count()
    if count == 1:
        from wsfw.service import build

        return build(config, reactor)
    from wsfw.supervisor import build_supervisor

    return build_supervisor(config, reactor, count)
