"""Endpoint strings to endpoints, with TLS held to TLS 1.2+ and modern ciphers.

Twisted's ``ssl:`` server string accepts ``sslmethod=`` and uses its broad
default cipher list (RSA key exchange, CBC). A firewall should not be the
weakest TLS hop, so ``ssl:`` strings are parsed here into an
``SSL4ServerEndpoint`` with our own ``CertificateOptions``; every other kind of
string goes to ``serverFromString`` unchanged. Upstream dials are built from the
route's URL with hostname verification by service_identity (through
``optionsForClientTLS``).
"""

from __future__ import annotations

from twisted.internet import endpoints, ssl
from twisted.internet.interfaces import IReactorCore, IStreamServerEndpoint
from twisted.python.filepath import FilePath
from zope.interface import implementer

from wsfw.config import Upstream, UpstreamTLS

#: Mozilla "intermediate" TLS 1.2 suites: forward secrecy and AEAD only.
#: TLS 1.3 suites are fixed by OpenSSL and always enabled.
MODERN_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

_SSL_KEYS = {"privateKey", "certKey", "extraCertChain", "dhParameters", "interface", "backlog"}
#: Twisted's prefix for a listener whose connections start with a PROXY protocol header.
PROXY_PREFIX = "haproxy:"


def split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """Split an endpoint string the way Twisted does (``:`` separated, ``\\`` escapes)."""
    parts: list[str] = []
    current = []
    chars = iter(description)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    args, kwargs = [], {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            kwargs[key] = value
        else:
            args.append(part)
    return parts[0], args, kwargs


def _read_pem(path: str, what: str) -> bytes:
    try:
        return FilePath(path).getContent()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path!r}: {e.strerror or e}") from None


#: ``ssl:`` options naming files, and what the error messages call them.
TLS_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")


def ssl_parts(description: str) -> tuple[int, int, str, dict[str, str]]:
    """Port, backlog, interface and options of an ``ssl:`` string; ``ValueError`` for anything wrong."""
    kind, args, kwargs = split_description(description)
    if kind != "ssl":
        raise ValueError(f"{description!r} is not an ssl: endpoint")
    unknown = set(kwargs) - _SSL_KEYS
    if "sslmethod" in unknown:
        raise ValueError("sslmethod= is not allowed: wsfw always negotiates TLS 1.2 or newer")
    if unknown:
        raise ValueError(f"unknown ssl: option(s) {', '.join(sorted(unknown))}")
    if len(args) != 1:
        raise ValueError("ssl: needs exactly one port, e.g. ssl:8443:privateKey=key.pem:certKey=cert.pem")
    try:
        port = int(args[0])
        backlog = int(kwargs.get("backlog", 50))
    except ValueError:
        raise ValueError(f"port and backlog must be integers in {description!r}") from None
    kwargs.setdefault("privateKey", "server.pem")
    kwargs.setdefault("certKey", kwargs["privateKey"])
    return port, backlog, kwargs.get("interface", ""), kwargs


def tls_files(description: str) -> dict[str, str]:
    """``{path: what}`` of the PEM files an ``ssl:`` listener reads (key, certificate, chain, DH)."""
    _, _, _, kwargs = ssl_parts(description)
    return {kwargs[key]: key for key in TLS_FILES if key in kwargs}


def read_tls_files(description: str) -> dict[str, bytes]:
    """The PEM files of an ``ssl:`` listener, read now: ``{path: bytes}`` (``ValueError`` if unreadable)."""
    return {path: _read_pem(path, what) for path, what in tls_files(description).items()}


def tls_server_options(description: str, read=None) -> ssl.CertificateOptions:
    """The hardened ``CertificateOptions`` of an ``ssl:`` listener, built here and nowhere else.

    ``server_endpoint`` uses them for a listener it binds; a worker process wraps
    the listening socket it inherited from the supervisor in exactly the same
    options. ``read(path, what) -> bytes`` reads a PEM file (default: from disk);
    a worker is handed the bytes its supervisor read, possibly before dropping
    privileges, so a root-only key works with any number of workers, as it does
    with one process. ``dhParameters`` is the exception: OpenSSL loads it by path.
    """
    _, _, _, kwargs = ssl_parts(description)
    read = read or _read_pem
    key_path, cert_path = kwargs["privateKey"], kwargs["certKey"]
    key_pem = read(key_path, "privateKey")
    cert_pem = read(cert_path, "certKey") if cert_path != key_path else b""
    try:
        cert_and_key = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
    except Exception as e:  # pyOpenSSL raises several types for bad PEM
        raise ValueError(f"privateKey {key_path!r} / certKey {cert_path!r} are not a PEM key and certificate "
                         f"({e.__class__.__name__}: {e})") from None
    chain = []
    if "extraCertChain" in kwargs:
        pem = read(kwargs["extraCertChain"], "extraCertChain")
        chain = [ssl.Certificate.loadPEM(c).original for c in _pem_blocks(pem)]
    dh = None
    if "dhParameters" in kwargs:
        _read_pem(kwargs["dhParameters"], "dhParameters")
        dh = ssl.DiffieHellmanParameters.fromFile(FilePath(kwargs["dhParameters"]))
    try:
        options = ssl.CertificateOptions(
            privateKey=_modern(cert_and_key.privateKey.original, "to_cryptography_key"),
            certificate=_modern(cert_and_key.original, "to_cryptography"),
            extraCertChain=[_modern(c, "to_cryptography") for c in chain],
            dhParameters=dh,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(MODERN_CIPHERS),
            acceptableProtocols=[b"http/1.1"],
        )
        options.getContext()  # checks now that the key matches the certificate
        return options
    except ssl.SSL.Error as e:
        raise ValueError(f"certificate and private key do not match ({e})") from None


def _modern(obj, converter: str):
    """pyOpenSSL 24+ wants cryptography objects (older ones only take their own)."""
    from OpenSSL import version

    if int(version.__version__.split(".")[0]) >= 24:
        return getattr(obj, converter)()
    return obj


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [block + marker for block in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in block]


def server_endpoint(reactor: IReactorCore, description: str):
    """An ``IStreamServerEndpoint`` for a listener description.

    Raises ``ValueError`` with a readable message for anything wrong, so the
    config loader can attach file, section and key to it.
    """
    kind, args, kwargs = split_description(description)
    if kind != "ssl":
        try:
            return endpoints.serverFromString(reactor, description)
        except ValueError as e:
            raise ValueError(f"invalid endpoint {description!r}: {e}") from None
        except Exception as e:
            raise ValueError(f"invalid endpoint {description!r}: {type(e).__name__}: {e}") from None
    port, backlog, interface, _ = ssl_parts(description)
    return endpoints.SSL4ServerEndpoint(reactor, port, tls_server_options(description), backlog=backlog,
                                        interface=interface)


def wrap_factory(factory, tls=None, proxy_protocol: bool = False):
    """The factory a listening socket serves: TLS around ``factory`` when ``tls``
    (``CertificateOptions``) is given, and the PROXY protocol parser outermost.

    The order matters: a load balancer in TCP mode writes the PROXY header in
    clear before the client's TLS bytes. (Twisted's own ``haproxy:ssl:`` string
    would expect the header inside TLS.)
    """
    if tls is not None:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        factory = TLSMemoryBIOFactory(tls, False, factory)
    if proxy_protocol:
        from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

        factory = HAProxyWrappingFactory(factory)
    return factory


@implementer(IStreamServerEndpoint)
class ProxyProtocolEndpoint:
    """A listener taking PROXY protocol v1/v2 connections (``haproxy:`` + its endpoint string).

    Built from the plain socket's endpoint, so an ``ssl:`` listener's TLS goes
    inside the PROXY parser (see :func:`wrap_factory`)."""

    def __init__(self, reactor, description: str):
        self.tls = None
        if split_description(description)[0] == "ssl":
            port, backlog, interface, _ = ssl_parts(description)
            self.tls = tls_server_options(description)
            self.plain = endpoints.TCP4ServerEndpoint(reactor, port, backlog=backlog, interface=interface)
        else:
            self.plain = server_endpoint(reactor, description)

    def listen(self, factory):
        return self.plain.listen(wrap_factory(factory, self.tls, proxy_protocol=True))


def listener_endpoint(reactor, listener):
    """The ``IStreamServerEndpoint`` a single process binds for a ``[listen:NAME]``."""
    if listener.proxy_protocol:
        return ProxyProtocolEndpoint(reactor, listener.endpoint)
    return server_endpoint(reactor, listener.endpoint)


def client_tls_options(upstream: Upstream, tls: UpstreamTLS):
    """``IOpenSSLClientConnectionCreator`` for a secure upstream, hostname verified.

    Reads the PEM files now, so the loader can call it to validate a route.
    """
    trust = None
    if tls.ca_file:
        pems = _pem_blocks(_read_pem(tls.ca_file, "ca_file"))
        if not pems:
            raise ValueError(f"ca_file {tls.ca_file!r} holds no PEM certificate")
        trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(p) for p in pems])
    client = None
    if tls.client_cert:
        cert_pem = _read_pem(tls.client_cert, "client_cert")
        key_pem = _read_pem(tls.client_key, "client_key") if tls.client_key else cert_pem
        try:
            client = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        except Exception as e:
            raise ValueError(f"client_cert/client_key cannot be loaded ({e})") from None
    return ssl.optionsForClientTLS(
        tls.server_name or upstream.host,
        trustRoot=trust,
        clientCertificate=client,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


def client_endpoint(reactor, upstream: Upstream, tls: UpstreamTLS, timeout: float, tls_options=None):
    """An endpoint that dials the upstream, wrapped in verified TLS when secure."""
    plain = endpoints.HostnameEndpoint(reactor, upstream.host, upstream.port, timeout=timeout)
    if not upstream.secure:
        return plain
    return endpoints.wrapClientTLS(tls_options or client_tls_options(upstream, tls), plain)


_TCP_KINDS = {"tcp": "", "tcp6": "::", "ssl": ""}
_WILDCARDS = {"", "0.0.0.0", "::", "*"}


def _socket_identity(description: str):
    """What an endpoint string binds, as ``(family, where)``, or None when unknowable.

    ``tcp``, ``tcp6`` and ``ssl`` all bind a TCP port on an interface; ``unix``
    a path; ``systemd:`` is whatever socket systemd passes in (its name or
    index). Port 0 asks for a fresh port and can collide with nothing.
    """
    kind, args, kwargs = split_description(description)
    if kind in _TCP_KINDS:
        if not args:
            return None
        interface = kwargs.get("interface")
        if interface is None and kind != "ssl" and len(args) > 1:
            interface = args[1]  # tcp:PORT:INTERFACE, positionally
        try:
            port = int(args[0])
        except ValueError:
            return None
        return "tcp", (port, (interface or _TCP_KINDS[kind]).strip("[]").lower())
    if kind == "unix":
        path = kwargs.get("address") or (args[0] if args else "")
        return "unix", path
    if kind == "systemd":
        return "systemd", kwargs.get("name") or kwargs.get("index") or ""
    return None


def is_loopback(description: str) -> bool | None:
    """Whether a listener only accepts connections from this machine.

    True for a loopback interface (127.0.0.0/8, ::1, localhost) or a unix
    socket; False for a wildcard or any other address; None when the string
    alone cannot tell (``systemd:`` sockets).
    """
    import ipaddress

    identity = _socket_identity(description)
    if identity is None:
        return None
    family, where = identity
    if family == "unix":
        return True
    if family != "tcp":
        return None
    interface = where[1]
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def same_socket(a: str, b: str) -> bool:
    """Whether two endpoint strings would bind the same socket (or overlapping ones).

    A wildcard interface overlaps every address on the same port; port 0
    never collides.
    """
    first, second = _socket_identity(a), _socket_identity(b)
    if first is None or second is None or first[0] != second[0]:
        return False
    if first[0] != "tcp":
        return first[1] == second[1] and first[1] != ""
    (port_a, if_a), (port_b, if_b) = first[1], second[1]
    if port_a == 0 or port_b == 0 or port_a != port_b:
        return False
    return if_a == if_b or if_a in _WILDCARDS or if_b in _WILDCARDS
