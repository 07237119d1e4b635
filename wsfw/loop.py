"""The reactor's poll loop, without the legacy log context around every socket event.

Twisted's epoll reactor runs each read and write event through
``twisted.python.log.callWithLogger``: it asks the selectable for its
``logPrefix()``, copies the current legacy log context into a new dict with
that prefix as ``system``, and pushes it for the duration of the call, so a
``twisted.python.log.msg`` emitted inside the handler is tagged with it. A
py-spy profile of wsfw relaying at 5,000 msg/s put that wrapping at about a
tenth of the daemon's CPU, for a context nothing in wsfw reads: wsfw, Autobahn
(through txaio) and Twisted's newer code log through ``twisted.logger``,
whose events never consult it.

:func:`install` gives the running epoll reactor a ``doIteration`` that polls
and dispatches exactly as ``EPollReactor.doPoll`` does, keeping its guarantee
that an exception escaping a handler is logged (``log.err``, with the
selectable's prefix as ``system``) and the loop goes on. Legacy ``log.msg``
lines from inside handlers then carry ``system = -``. Any other reactor, or
an epoll reactor without the attributes this relies on, is left alone.
"""

from __future__ import annotations

import errno

from twisted.python import log

_NEEDS = ("_poller", "_selectables", "_doReadOrWrite", "doIteration")


def install(reactor) -> bool:
    """Install the lean poll loop on ``reactor`` (idempotent); whether it is in place."""
    from twisted.internet.epollreactor import EPollReactor

    if not isinstance(reactor, EPollReactor) or not all(hasattr(reactor, name) for name in _NEEDS):
        return False
    if getattr(reactor.doIteration, "wsfw_lean", False):
        return True

    def do_poll(timeout):
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            events = reactor._poller.poll(timeout, len(reactor._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = reactor._selectables
        handle = reactor._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                _log_failure(selectable)

    do_poll.wsfw_lean = True
    reactor.doIteration = do_poll
    return True


def _log_failure(selectable) -> None:
    """What ``callWithLogger`` does with an exception a handler let escape."""
    try:
        prefix = selectable.logPrefix()
    except BaseException:
        prefix = "(buggy logPrefix method)"
    log.err(system=prefix)
