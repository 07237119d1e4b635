"""twistd plugin pointer for wsfw. It imports nothing from wsfw until used, so a
plugin scan neither loads the daemon nor installs a reactor."""

from twisted.application.service import ServiceMaker

wsfw = ServiceMaker("wsfw", "wsfw.tap", "WebSocket application firewall", "wsfw")
