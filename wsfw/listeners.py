"""The public listening sockets of a supervisor and its workers: bound once, adopted by each worker.

With ``[wsfw] workers`` above 1 the supervisor binds every ``[listen:NAME]``
itself, in ``privilegedStartService`` as a single process would: a port in
use or a privileged port is reported with its section before anything forks,
and a low port is bound before twistd drops privileges. Workers get the
descriptors (``spawnProcess(childFDs=...)``) and adopt them
(:class:`InheritedEndpoint`); the supervisor never accepts on them.

**TCP listeners (``tcp:``, ``tcp6:``, ``ssl:``) get one ``SO_REUSEPORT``
socket per worker slot**, all bound by the supervisor on the same address,
rather than one socket whose accept queue every worker shares. A WebSocket
stays with the worker that accepted it for its whole life, and on a shared
queue the accept goes to whichever worker the scheduler runs first. Measured
here (2 CPUs, two wsfw workers, bursts of 50 WebSocket clients): the shared
queue split them as unevenly as 43/7 and 45/5, and 35/15 with the clients
connecting one at a time; accepting one connection per wakeup did not help.
The kernel spreads connections over ``SO_REUSEPORT`` sockets by a hash of
the address pair: 24/26, 23/27, 23/27 and 25/25 in the same test.

What that costs, and how it is contained:

* The group is fixed for the supervisor's life. A dead worker's socket stays
  open in the supervisor and its replacement adopts that same socket, so
  nothing is re-bound after privileges drop; the new connections the kernel
  hashes to that socket meanwhile wait in its queue for the replacement
  (about a second and a half after a first death) instead of being reset.
* A process of the same user binding the port with ``SO_REUSEPORT`` could
  join the group and take a share of the connections. So the supervisor
  first binds the address *without* it, which fails when anything listens
  there already: a second wsfw started by mistake stops with "address in
  use", as a single process always did.
* ``unix:`` and ``systemd:`` listeners have one socket, which the supervisor
  binds (or receives) and every worker shares.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat

from twisted.internet import address, defer, error, fdesc, tcp, unix
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

from wsfw.endpoints import server_endpoint, split_description, ssl_parts, wrap_factory

#: Endpoint kinds bound as one SO_REUSEPORT socket per worker.
TCP_KINDS = ("tcp", "tcp6", "ssl")


def _tcp_parts(description: str) -> tuple[int, str, int, int]:
    """``(family, interface, port, backlog)`` of a tcp:, tcp6: or ssl: listener, as Twisted reads them."""
    kind, args, kwargs = split_description(description)
    if kind == "ssl":
        port, backlog, interface, _ = ssl_parts(description)
    else:
        port = int(args[0])
        interface = kwargs.get("interface", args[1] if len(args) > 1 else ("::" if kind == "tcp6" else ""))
        backlog = int(kwargs.get("backlog", args[2] if len(args) > 2 else 50))
    interface = interface.strip("[]")
    try:
        v6 = isinstance(ipaddress.ip_address(interface), ipaddress.IPv6Address)
    except ValueError:
        v6 = kind == "tcp6"
    return (socket.AF_INET6 if v6 else socket.AF_INET), interface, port, backlog


class ReusePortGroup:
    """N listening sockets on one TCP address (``SO_REUSEPORT``), one per worker slot.

    It stands in for a Twisted port in :class:`wsfw.service.ListenerService`
    (``getHost``, ``stopListening``, ``stopReading``); nothing reads from it.
    """

    def __init__(self, sockets: list[socket.socket]):
        self.sockets = sockets

    def fileno_for(self, slot: int) -> int:
        """The socket of worker slot ``slot`` (1..N)."""
        return self.sockets[slot - 1].fileno()

    def getHost(self):
        host, port = self.sockets[0].getsockname()[:2]
        kind = address.IPv6Address if self.sockets[0].family == socket.AF_INET6 else address.IPv4Address
        return kind("TCP", host, port)

    def stopReading(self) -> None:
        """Nothing reads these in the supervisor."""

    def stopListening(self):
        sockets, self.sockets = self.sockets, []
        for s in sockets:
            s.close()
        return None


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """``listen()`` binds ``count`` SO_REUSEPORT sockets on a TCP listener's address (see the
    module docstring), failing with ``CannotListenError`` as Twisted's TCP endpoint does."""

    def __init__(self, description: str, count: int):
        self.family, self.interface, self.port, self.backlog = _tcp_parts(description)
        self.count = count

    def _socket(self, reuse_port: bool) -> socket.socket:
        s = socket.socket(self.family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's ports: TIME_WAIT does not block
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s

    def listen(self, factory=None):
        sockets: list[socket.socket] = []
        try:
            probe = self._socket(reuse_port=False)  # fails if anything, even a SO_REUSEPORT group, holds it
            try:
                probe.bind((self.interface, self.port))
                port = probe.getsockname()[1]
            finally:
                probe.close()
            for _ in range(self.count):
                s = self._socket(reuse_port=True)
                sockets.append(s)
                s.bind((self.interface, port))
                s.listen(self.backlog)
                s.setblocking(False)  # Python's sockets are close-on-exec already
        except OSError as e:
            for s in sockets:
                s.close()
            return defer.fail(error.CannotListenError(self.interface, self.port, e))
        return defer.succeed(ReusePortGroup(sockets))


def supervisor_endpoint(reactor, description: str, count: int):
    """How the supervisor binds a listener for ``count`` workers: a SO_REUSEPORT group for
    TCP kinds, else the endpoint a single process would use (one socket for all)."""
    if split_description(description)[0] in TCP_KINDS and hasattr(socket, "SO_REUSEPORT"):
        return ReusePortEndpoint(description, count)
    return server_endpoint(reactor, description)


def fileno_for(port, slot: int) -> int:
    """The descriptor worker ``slot`` gets of a bound listener (its own, or the shared one)."""
    if isinstance(port, ReusePortGroup):
        return port.fileno_for(slot)
    return port.fileno()


# -- in the worker ----------------------------------------------------------------


class InheritedUNIXPort(unix.Port):
    """A unix listening socket inherited from the supervisor, which owns its path.

    Twisted's own port would chmod the path to its default mode on start and
    unlink it on stop: one worker restarting would widen the socket's
    permissions, and one worker stopping would take the path away from every
    other worker and the replacements to come. This one does neither.
    """

    def connectionLost(self, reason):
        tcp.Port.connectionLost(self, reason)


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """``listen(factory)`` adopts an inherited listening socket (``fd``) instead of binding one.

    ``tls`` is the ``ssl:`` listener's ``CertificateOptions``
    (``endpoints.tls_server_options``): the factory is wrapped in TLS exactly
    as ``reactor.listenSSL`` does, and with ``proxy_protocol`` the PROXY header
    parser goes outside it (``endpoints.wrap_factory``). The inherited descriptor is closed once
    adopted (the port holds a duplicate), as Twisted's
    ``AdoptedStreamServerEndpoint`` does. One use only.
    """

    def __init__(self, reactor, fd: int, tls=None, proxy_protocol: bool = False):
        self.reactor = reactor
        self.fd = fd
        self.tls = tls
        self.proxy_protocol = proxy_protocol
        self._used = False

    def listen(self, factory):
        if self._used:
            return defer.fail(error.AlreadyListened())
        self._used = True
        try:
            port = self._adopt(factory)
        except Exception:
            return defer.fail()
        return defer.succeed(port)

    def _adopt(self, factory):
        fdesc.setNonBlocking(self.fd)
        probe = socket.socket(fileno=os.dup(self.fd))
        family, where = probe.family, probe.getsockname()
        probe.close()
        factory = wrap_factory(factory, self.tls, self.proxy_protocol)
        if family == socket.AF_UNIX:
            port = InheritedUNIXPort._fromListeningDescriptor(self.reactor, self.fd, factory)
            if isinstance(where, str) and where and not where.startswith("\0"):  # not an abstract socket
                port.mode = stat.S_IMODE(os.stat(where).st_mode)  # what startListening chmods it to
            port.startListening()
        else:
            port = self.reactor.adoptStreamPort(self.fd, family, factory)
            if self.tls is not None:
                port._type = "TLS"  # as reactor.listenSSL sets it: the port's log lines say TLS
        os.close(self.fd)
        return port
