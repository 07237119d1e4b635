"""The plug points, as zope interfaces so third parties can be verified at load."""

from zope.interface import Attribute, Interface


class IRelayEnd(Interface):
    """One hop of a relayed connection, as the relay sees it.

    Implemented by both Autobahn protocols (and by test fakes), so the relay
    logic in ``wsfw.relay.machine`` never touches Autobahn classes.
    """

    side = Attribute("'client' or 'upstream'")
    can_send = Attribute("True while messages can be sent on this hop")

    def send_message(payload, is_binary):
        """Send one whole message, byte-exact, with its type."""

    def close(code, reason):
        """Start closing this hop with ``code`` (None for a close frame without one)."""

    def reply_close(code, reason):
        """Answer a close this hop's peer sent, which the hop has been holding."""

    def release_failure():
        """Carry out the failure this hop has been holding (a protocol error of its peer)."""

    def pause_reading():
        """Stop reading from this hop's peer."""

    def resume_reading():
        """Start reading from this hop's peer again."""

    def abort():
        """Drop the connection now, without a close handshake."""


class IMessageHook(Interface):
    """The inspection hook: every relayed message passes through it before it is sent on."""

    def inspect_message(view):
        """Return a ``wsfw.hook.Verdict`` for a ``wsfw.hook.MessageView``, or a Deferred of one."""

    def connection_closed(conn_id):
        """The connection ``conn_id`` is gone: drop any state kept for it. Never raises."""


class IInspector(Interface):
    """Looks at one decoded message (or polling request) and reports a finding, or None.

    Inspectors never see protocol objects: only a read-only view and the
    decoded parameters, so they can be tested with plain values.
    """

    name = Attribute("the name operators use in [inspection] inspectors = ...")

    def inspect(view, decoded):
        """Return a ``wsfw.inspection.Finding`` or None for a ``MessageView`` and its ``Decoded``."""


class IInspectorFactory(Interface):
    """Builds an inspector from its own ``[inspector:NAME]`` section (mitmproxy's add_option model).

    Third parties register factories under the ``wsfw.inspectors`` entry-point
    group; wsfw verifies each against this interface when it loads it.
    """

    name = Attribute("registered name")
    keys = Attribute("the ini keys the factory accepts in [inspector:NAME]")

    def check(options):
        """Validate a dict of option strings cheaply (config load, ``check-config``);
        raise ``ValueError(key, message)`` on bad input."""

    def build(options):
        """Return an ``IInspector`` for checked options (may be expensive: it runs once, before listening)."""


class IConnectionObserver(Interface):
    """Told about each WebSocket connection's milestones, for metrics and the dashboard.

    Called on cold paths only (once or twice per connection, never per
    message): per-message counts are read from the live relays when someone
    asks, so observing costs the relay nothing while it forwards.
    """

    def opened(relay):
        """Both hops are open: the client's handshake succeeded."""

    def upstream_connected(relay, seconds):
        """The upstream answered 101, ``seconds`` after the client's handshake arrived."""

    def upstream_failed(relay, reason):
        """Dialling the upstream failed: ``timeout``, ``dns``, ``unreachable``, ``refused`` or ``handshake``."""

    def finished(relay):
        """The connection is gone (both hops closed, or it never opened); its counts are final."""


class IClientGuard(Interface):
    """Decides, per client address, whether a request may come in, and learns which addresses to ban.

    The public ``Dispatch`` asks it about every request before routing (a banned
    address is refused everything; a WebSocket upgrade also meets the global
    and per-address connection caps and the per-address handshake rate), and it
    is told about every disruptive decision against a client. The interface is
    about those decisions only: where counts and bans live is the
    implementation's business. ``wsfw.guard.Guard`` keeps them in this process;
    an implementation on a shared store can keep them for a fleet of workers
    or hosts without any caller changing.
    """

    def configure(config):
        """Apply ``config.limits`` (at start and on every reload) to the decisions made from now on;
        open connections keep their slots."""

    def admit(address, websocket):
        """A ``wsfw.guard.Admission`` for a request from ``address`` (``websocket``: it asks to
        upgrade). Refused ones carry the HTTP status and reason; an admitted upgrade carries an
        ``IAdmissionTicket`` whose ``release`` must run exactly once, when its connection ends."""

    def offence(address, reason):
        """Record one disruptive decision against ``address`` (a block, a rate-limit close);
        ``ban_after`` of them within ``ban_window`` ban it for ``ban_time``. True when this one banned it."""

    def audit_event(event):
        """Observer of ``Audit.publisher``: an enforced block of a client's message or request is an
        offence of that client. Never raises."""

    def banned_count():
        """How many addresses are refused right now (a gauge)."""


class IAdmissionTicket(Interface):
    """One admitted WebSocket connection's place in the guard's counts."""

    address = Attribute("the client address it was admitted for, canonical; None when the client has no IP "
                        "address (a unix: listener's peer), which only the global cap counts")

    def bind(conn_id):
        """The relay's connection id, so audit events naming it are counted against ``address``."""

    def offence(reason):
        """Report a disruptive decision against this connection's client (``IClientGuard.offence``)."""

    def release():
        """The connection is gone: give its slot back. Idempotent."""
