"""Small local stand-ins for an inference server: one that answers what a test says, and one
that accepts connections and never answers. Plain Python, no Django."""

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """A local HTTP server whose ``/v1/chat/completions`` answers with ``answer(body)``:
    ``(status, content type, body bytes)``. It records each request's JSON and bearer header and
    the most requests it had in flight at once."""

    def __init__(self, answer, *, delay: float = 0.0):
        self.requests: list[dict] = []
        self.keys: list[str | None] = []
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests.append(body)
                    server.keys.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                time.sleep(delay)
                status, content_type, payload = answer(body)
                with lock:
                    server.in_flight -= 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def silent_server():
    """The ``/v1`` URL of a socket that accepts connections and never answers."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    finally:
        silent.close()


def answering(payload, status: int = 200, content_type: str = "application/json"):
    """An answer for ``FakeServer``: always ``payload`` (JSON-encoded unless bytes)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return lambda request: (status, content_type, body)
