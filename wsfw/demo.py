"""The bundled demo upstream: a small chat and echo app on Twisted and Autobahn.

It exists so a newcomer sees wsfw work with nothing else installed: ``make run``
starts it on 127.0.0.1:8081 and wsfw in front of it on :8080, and the chat page
at http://127.0.0.1:8080/ is itself served through wsfw's HTTP proxy.

    python -m wsfw.demo --listen tcp:8081:interface=127.0.0.1
"""

from __future__ import annotations

import argparse
import json

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import endpoints
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web import resource, server

log = Logger(namespace="wsfw.demo")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsfw demo chat</title>
<style>
body{font:15px system-ui,sans-serif;max-width:44rem;margin:2rem auto;color:#222}
#log{border:1px solid #ccc;height:20rem;overflow-y:auto;padding:.5rem;background:#fafafa}
#log p{margin:.2rem 0}.sys{color:#777;font-style:italic}
form{display:flex;gap:.5rem;margin-top:.5rem}input[name=text]{flex:1}
</style></head><body>
<h1>wsfw demo chat</h1>
<p>This page and its WebSocket (<code>/ws/chat</code>) reach the demo app through wsfw.
Open it in two tabs and chat. <span id="state" class="sys">connecting...</span></p>
<div id="log"></div>
<form id="f"><input name="name" value="guest" size="8" aria-label="name">
<input name="text" autocomplete="off" placeholder="message" aria-label="message"><button>Send</button></form>
<script>
const log = document.getElementById("log"), state = document.getElementById("state");
function line(text, cls) { const p = document.createElement("p"); p.textContent = text;
  if (cls) p.className = cls; log.appendChild(p); log.scrollTop = log.scrollHeight; }
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/chat");
ws.onopen = () => { state.textContent = "connected"; };
ws.onclose = (e) => { state.textContent = "closed (" + e.code + (e.reason ? " " + e.reason : "") + ")";
  line("connection closed with code " + e.code, "sys"); };
ws.onmessage = (e) => { try { const m = JSON.parse(e.data); line(m.name + ": " + m.text); }
  catch (err) { line(e.data); } };
document.getElementById("f").onsubmit = (ev) => { ev.preventDefault(); const f = ev.target;
  if (f.text.value) { ws.send(JSON.stringify({name: f.name.value, text: f.text.value})); f.text.value = ""; } };
</script></body></html>
"""


class EchoProtocol(WebSocketServerProtocol):
    """Sends every message back unchanged, with its type."""

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class ChatProtocol(WebSocketServerProtocol):
    """Broadcasts every message to everyone connected (including the sender)."""

    def onOpen(self):
        self.factory.members.add(self)

    def onMessage(self, payload, isBinary):
        for member in list(self.factory.members):
            member.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        self.factory.members.discard(self)


class Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE.encode()


class Health(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"ok": True}).encode()


def site(reactor) -> server.Site:
    """The demo app: ``/`` page, ``/health``, ``/ws/chat`` and ``/ws/echo``."""
    chat = WebSocketServerFactory(reactor=reactor)
    chat.protocol = ChatProtocol
    chat.members = set()
    echo = WebSocketServerFactory(reactor=reactor)
    echo.protocol = EchoProtocol
    ws = resource.Resource()
    ws.putChild(b"chat", WebSocketResource(chat))
    ws.putChild(b"echo", WebSocketResource(echo))
    root = resource.Resource()
    root.putChild(b"", Page())
    root.putChild(b"health", Health())
    root.putChild(b"ws", ws)
    return server.Site(root)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="wsfw's demo upstream (chat + echo)")
    parser.add_argument("--listen", default="tcp:8081:interface=127.0.0.1", help="endpoint string")
    args = parser.parse_args(argv)
    import sys

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    endpoint = endpoints.serverFromString(reactor, args.listen)
    endpoint.listen(site(reactor)).addCallbacks(
        lambda port: log.info("demo upstream listening on {addr}", addr=port.getHost()),
        lambda f: (log.failure("demo upstream cannot listen", f), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
