"""Real framework servers the integration tests start as subprocesses.

Each prints ``... listening on http://HOST:PORT/`` once bound (port 0: a free
one), which ``tests.support.start_server`` waits for.
"""

import socket


def serve(app, label: str, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the ASGI ``app`` on uvicorn on a socket bound here, so port 0 works and is reported."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # timeout_graceful_shutdown: a held long-poll or stream must not delay SIGTERM
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    print(f"{label} listening on http://{host}:{sock.getsockname()[1]}/", flush=True)
    server.run(sockets=[sock])
