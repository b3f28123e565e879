"""Real HTTP servers on 127.0.0.1 for tests: a scripted OpenAI-compatible server, and a
proxy in front of a real server that injects failures from a schedule."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    path: str
    body: dict | None
    headers: dict[str, str]


@dataclass
class HTTPStub:
    """Serves replies made by `respond(seen) -> Reply | "hang" | "drop"`."""

    respond: Callable[[Seen], Reply | str]
    hang_seconds: float = 3.0
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass  # keep the test output clean

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(self.path, json.loads(raw) if raw else None, dict(self.headers))
                stub.seen.append(seen)
                reply = stub.respond(seen)
                if reply == "hang":
                    time.sleep(stub.hang_seconds)
                    self.close_connection = True
                    return
                if reply == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, headers, body = reply
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_reply(data: dict, status: int = 200, headers: dict | None = None) -> Reply:
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(data).encode()


def chat_reply(texts: list[str], prompt_tokens: int = 10) -> Reply:
    """An OpenAI chat completion with one choice per text."""
    return json_reply(
        {
            "id": "stub",
            "object": "chat.completion",
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": sum(len(t.split()) for t in texts),
            },
        }
    )


FAULTS = {
    "500": lambda: (500, {}, b"internal error"),
    "503": lambda: (503, {}, b"overloaded"),
    "429": lambda: (429, {"retry-after": "0.1"}, b"slow down"),
    "garbage": lambda: (200, {"content-type": "application/json"}, b"{not json at all"),
    "no-choices": lambda: json_reply({"object": "chat.completion", "choices": []}),
    "hang": lambda: "hang",
    "drop": lambda: "drop",
}


class FaultProxy(HTTPStub):
    """Forwards to `upstream`, but answers the first requests with the faults in
    `schedule` (names from FAULTS), one fault per request, in order."""

    def __init__(self, upstream: str, schedule: list[str], hang_seconds: float = 3.0):
        self.upstream = upstream.rstrip("/")
        self.schedule = list(schedule)
        self.faults_served: list[str] = []
        self.forwarded = 0
        self._lock = threading.Lock()
        super().__init__(self._respond, hang_seconds=hang_seconds)

    def _respond(self, seen: Seen) -> Reply | str:
        with self._lock:
            fault = self.schedule.pop(0) if self.schedule else None
            if fault:
                self.faults_served.append(fault)
        if fault:
            return FAULTS[fault]()
        path = seen.path.removeprefix("/v1")
        request = urllib.request.Request(
            self.upstream + path,
            data=json.dumps(seen.body).encode() if seen.body is not None else None,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            body = response.read()
        with self._lock:
            self.forwarded += 1
        return 200, {"content-type": "application/json"}, body
