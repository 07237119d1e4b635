"""One worker process of a supervisor (``[wsfw] workers`` above 1): ``python -m wsfw.worker``.

The supervisor (:mod:`wsfw.supervisor`) starts this with the public listening
sockets as inherited file descriptors (``--listen NAME=FD``), a private admin
endpoint (``--admin``), a pipe to report on (``--status-fd``), and on stdin
the configuration text it validated plus the TLS files it read. The worker is
then the single-process daemon (``service.build``) adopting those sockets
instead of binding its own: the same relay, inspection, logs, drain on
SIGTERM, SIGUSR1 reopen and SIGHUP message. Once every socket is adopted and
the admin site listens, it reports ``{"event": "serving", "admin": ...}``.

It must not outlive the supervisor, or it would keep the port a restarted
supervisor needs: the kernel sends it SIGTERM when the supervisor dies
(``PR_SET_PDEATHSIG``, Linux), and a watchdog stops it when its parent pid
changes (anywhere, and covering the instant before the prctl call).
"""

import signal

# SIGHUP and SIGUSR1 kill a process by default, and the supervisor passes them on
# to every worker: ignore them until SignalService installs the real handlers.
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)

import argparse  # noqa: E402  (after the signal set-up above, on purpose)
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

#: How often the watchdog compares the parent pid (seconds).
WATCHDOG_INTERVAL = 1.0
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies; exit now if it already has."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the watchdog alone
    if os.getppid() != parent:
        sys.exit(f"wsfw worker: the supervisor (pid {parent}) is gone")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m wsfw.worker",
                                     description="a wsfw worker; started by wsfw's supervisor, not by hand")
    parser.add_argument("--worker", required=True, help="this worker's label (1..N)")
    parser.add_argument("--parent", required=True, type=int, help="the supervisor's pid")
    parser.add_argument("--status-fd", required=True, type=int, help="pipe to report on (JSON lines)")
    parser.add_argument("--listen", action="append", default=[], metavar="NAME=FD",
                        help="an inherited listening socket of [listen:NAME]")
    parser.add_argument("--admin", default=None, help="server endpoint string of the private admin site")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    die_with_parent(args.parent)
    bootstrap = json.loads(sys.stdin.buffer.read())
    sockets = dict(item.split("=", 1) for item in args.listen)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from wsfw import logs

    logs.tag_worker(args.worker)
    globalLogBeginner.beginLoggingTo([logs.worker_stdout_observer(args.worker)], redirectStandardIO=False)
    return Worker(reactor, args, bootstrap, sockets).run()


class Worker:
    """Builds the daemon on the inherited sockets, reports, watches the parent, stops once."""

    def __init__(self, reactor, args, bootstrap: dict, sockets: dict[str, str]):
        from wsfw import logs

        self.log = logs.logger("wsfw.worker")
        self.reactor = reactor
        self.args = args
        self.bootstrap = bootstrap
        self.sockets = sockets
        self.stopping = False
        self.status = 0
        self.top = None

    def build(self):
        from wsfw import config_ini, endpoints
        from wsfw.listeners import InheritedEndpoint
        from wsfw.service import build

        config = config_ini.load(self.bootstrap["config"], self.bootstrap["text"])
        files = {path: base64.b64decode(data) for path, data in self.bootstrap.get("tls_files", {}).items()}

        def read(path, what):
            if path in files:
                return files[path]
            raise ValueError(f"{what} {path!r} was not handed over by the supervisor")

        listen = {}
        for listener in config.listeners:
            if listener.name not in self.sockets:  # added by a reload: the supervisor binds it on restart
                self.log.warn("worker {worker}: [listen:{name}] is not bound by the supervisor yet; it applies "
                              "on restart", worker=self.args.worker, name=listener.name)
                continue
            tls = endpoints.tls_server_options(listener.endpoint, read) if listener.is_tls else None
            listen[listener.name] = InheritedEndpoint(self.reactor, int(self.sockets[listener.name]), tls,
                                                      proxy_protocol=listener.proxy_protocol)
        return build(config, self.reactor, listen=listen, admin_endpoint=self.args.admin)

    def run(self) -> int:
        from twisted.internet import defer, task

        self.top = top = self.build()
        top.privilegedStartService()
        top.startService()
        self.reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda s, f: self.reactor.callFromThread(self.stop, signal.Signals(s).name))
        waits = [top.ready] + ([top.admin.bound] if top.admin is not None else [])
        defer.gatherResults(waits).addCallbacks(self.serving, self.failed)
        watchdog = task.LoopingCall(self.watch)
        watchdog.start(WATCHDOG_INTERVAL, now=False).addErrback(lambda f: self.log.failure("watchdog", f))
        self.reactor.run(installSignalHandlers=False)
        return self.status

    def serving(self, _):
        admin = None
        if self.top.admin is not None:
            address = self.top.admin.port.getHost()
            name = getattr(address, "name", None)
            if name is not None:
                from twisted.internet.endpoints import quoteStringArgument

                path = name.decode() if isinstance(name, bytes) else name
                admin = f"unix:path={quoteStringArgument(path)}:timeout=2"
            else:
                admin = f"tcp:host={address.host}:port={address.port}:timeout=2"
        self.report(event="serving", pid=os.getpid(), admin=admin)
        self.log.info("worker {worker} serving (pid {pid})", worker=self.args.worker, pid=os.getpid(),
                      event="worker_serving")

    def failed(self, failure):
        self.log.failure("worker {worker} could not start", failure, worker=self.args.worker)
        self.status = 1
        self.stop("startup failure")

    def report(self, **fields) -> None:
        try:
            os.write(self.args.status_fd, (json.dumps(fields) + "\n").encode("utf-8"))
        except OSError as e:
            self.log.warn("cannot report to the supervisor: {why}", why=e.strerror)

    def watch(self) -> None:
        if os.getppid() != self.args.parent:
            self.log.warn("the supervisor (pid {pid}) is gone: stopping", pid=self.args.parent)
            self.stop("supervisor gone")

    def stop(self, why: str) -> None:
        """Stop once (SIGTERM, SIGINT, the watchdog, a startup failure): the listeners close
        and connections drain as in a single process."""
        if self.stopping:
            return
        self.stopping = True
        self.log.info("worker {worker} stopping ({why})", worker=self.args.worker, why=why)
        self.reactor.stop()


if __name__ == "__main__":
    sys.exit(main())
