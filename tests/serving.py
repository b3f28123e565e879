"""A selfcorrect server on 127.0.0.1 in a thread of the test process (uvicorn, a free port)."""

from __future__ import annotations

import contextlib
import threading
import time

import uvicorn

from selfcorrect.serve.app import create_app


@contextlib.contextmanager
def serving(settings, config=None, **engines):
    app = create_app(settings, config, **engines)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the selfcorrect server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app.state.server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
