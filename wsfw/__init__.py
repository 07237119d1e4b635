"""wsfw: a WebSocket application firewall on Twisted and Autobahn.

The public surface is small on purpose: the daemon is started through the
twistd plugin (``twistd wsfw --config PATH``) and configured by an ini file;
everything else is an implementation detail behind ``wsfw.service.build``.
"""

__version__ = "0.5.1"
