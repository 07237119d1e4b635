"""A Socket.IO chat app to put behind wsfw: python-socketio (ASGI) on uvicorn.

    python examples/socketio-chat/app.py [--host 127.0.0.1] [--port 5000]

It serves its own page (static/index.html), the page's script (static/chat.js)
and the Socket.IO client (static/vendor/socket.io.min.js, vendored from npm), so
nothing comes from a CDN and the page, its long-polling requests and its
WebSocket all pass through wsfw when you open the page on wsfw's port.

Protocol (Socket.IO v5 over Engine.IO v4, namespace "/"):

- connect with ``auth = {"name": "alice"}``; everyone is in one room;
- a newcomer gets ``history``: the last messages, as ``[{"name", "text"}, ...]``;
- ``chat message`` (client -> server) carries the text and is acknowledged with
  ``"ok"``; the server broadcasts ``chat message`` with ``{"name", "text"}`` to
  the room, sender included;
- ``joined`` / ``left`` announce members by name.

The app does no input filtering of its own (that is the firewall's job in this
demo), and the page renders everything with ``textContent``, so the demo's
point is what wsfw lets through, not a bug in the page.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import socket
import sys

import socketio
import uvicorn

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")
ROOM = "chat"
MAX_NAME = 32
MAX_TEXT = 2000

log = logging.getLogger("chat")


def build(history_size: int | None = 50):
    """The Socket.IO server, its ASGI app and the message history (a deque; None: unbounded)."""
    # cors_allowed_origins stays at its default (same origin only): behind wsfw the
    # browser's Origin is wsfw's, which python-engineio accepts via X-Forwarded-Host.
    sio = socketio.AsyncServer(async_mode="asgi", max_http_buffer_size=1_000_000)
    history: collections.deque = collections.deque(maxlen=history_size)
    names: dict[str, str] = {}

    @sio.event
    async def connect(sid, environ, auth=None):
        name = auth.get("name") if isinstance(auth, dict) else None
        if not isinstance(name, str) or not name.strip():
            name = "guest-" + sid[:4]
        names[sid] = name.strip()[:MAX_NAME]
        await sio.enter_room(sid, ROOM)
        await sio.emit("history", list(history), to=sid)
        await sio.emit("joined", names[sid], room=ROOM, skip_sid=sid)
        log.info("%s joined", names[sid])

    @sio.event
    async def disconnect(sid, reason=None):
        name = names.pop(sid, "?")
        await sio.emit("left", name, room=ROOM)
        log.info("%s left (%s)", name, reason)

    @sio.on("chat message")
    async def chat_message(sid, text):
        if not isinstance(text, str) or not text.strip():
            return "empty"
        message = {"name": names.get(sid, "?"), "text": text[:MAX_TEXT]}
        history.append(message)
        log.info("%s: %r", message["name"], message["text"])
        await sio.emit("chat message", message, room=ROOM)
        return "ok"

    app = socketio.ASGIApp(sio, static_files={
        "/": {"filename": os.path.join(STATIC, "index.html"), "content_type": "text/html; charset=utf-8"},
        "/static/": STATIC + "/",
    })
    return sio, app, history


def serve(app, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Run ``app`` on uvicorn; port 0 picks a free port. Prints the URL once listening."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    # A pending long-poll is held open for up to pingInterval (25 s): don't wait for it on Ctrl-C.
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    print(f"chat app listening on http://{host}:{bound}/", flush=True)
    server.run(sockets=[sock])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    _, app, _ = build()
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
