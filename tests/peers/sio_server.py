"""A python-socketio chat server (ASGI on uvicorn), started by the integration tests.

    python -m tests.peers.sio_server PORT

Every client joins one room; a "chat message" is broadcast to the room and
recorded; the "received" event (with an ack) returns what the server got, so a
test can prove an attack never reached the app.
"""

import sys

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", max_http_buffer_size=1_000_000)
received = []


@sio.event
async def connect(sid, environ, auth=None):
    await sio.enter_room(sid, "chat")


@sio.on("chat message")
async def chat_message(sid, message):
    received.append(message)
    await sio.emit("chat message", message, room="chat")
    return "ok"


@sio.on("received")
async def get_received(sid):
    return received


app = socketio.ASGIApp(sio)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
