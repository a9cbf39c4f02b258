"""Running the portal app under uvicorn in a background thread (tests, benchmarks, embedding).

`with running(app) as url:` serves on 127.0.0.1 on a free port and stops the server when the block ends,
whatever happens in it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30) -> Iterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # bound here, so the port is known before the server starts and nobody takes it
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            backlog=2048, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="portal-uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the portal server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
