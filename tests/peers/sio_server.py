"""The Socket.IO chat example (examples/socketio-chat/app.py) plus test-only events.

    python -m tests.peers.sio_server [PORT]     # PORT 0 (default): a free one

It prints ``chat app listening on http://127.0.0.1:PORT/`` once bound. The chat
itself is the example's, unchanged (rooms, history, ``chat message`` acked with
"ok" and broadcast as ``{"name", "text"}``); the history is unbounded here so
``received`` can prove an attack never reached the app. Added for the tests:

- ``received`` (ack): every chat text the app got, plus every other event
  (``[event, args]``) that no handler below claims, e.g. a ``login`` attempt;
- ``blob`` (bytes): broadcast to the room as ``blob`` and acked with
  ``{"size", "sha256"}`` of what the app got, so byte-exactness is checked on
  both hops;
- ``ask`` (ack): the server asks the caller a ``question`` with an ack of its
  own (server -> client call through wsfw), records the client's answer and
  acks it back.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "socketio-chat", "app.py")


def load_example():
    spec = importlib.util.spec_from_file_location("socketio_chat_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chat = load_example()
sio, app, history = chat.build(history_size=None)
other_events: list = []
blobs: list[bytes] = []
answers: list = []


@sio.on("received")
async def received(sid):
    return {"texts": [m["text"] for m in history], "events": other_events, "blobs": len(blobs), "answers": answers}


@sio.on("blob")
async def blob(sid, data):
    if not isinstance(data, bytes):
        return {"error": f"expected bytes, got {type(data).__name__}"}
    blobs.append(data)
    await sio.emit("blob", data, room=chat.ROOM, skip_sid=sid)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@sio.on("ask")
async def ask(sid, question):
    answer = await sio.call("question", question, to=sid, timeout=5)
    answers.append(answer)
    return {"question": question, "answer": answer}


@sio.on("*")
async def anything(event, sid, *args):
    other_events.append([event, list(args)])
    return "unhandled"


if __name__ == "__main__":
    chat.serve(app, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
