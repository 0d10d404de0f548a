"""A scripted OpenAI-compatible endpoint on a real local HTTP server, for the AI judge tests:
it answers each request with whatever the test's script says (a reply, a 500, a sleep past
the client's timeout, garbage) and records every hit (body, headers, time)."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes | dict | None = None
    delay: float = 0.0


@dataclass
class Hit:
    payload: dict
    headers: dict
    at: float


def completion(content: str = "", top: dict[str, float] | None = None) -> dict:
    """An OpenAI chat completion body; ``top`` maps first-token alternatives to their
    probabilities (sent as log-probs)."""
    logprobs = None
    if top is not None:
        logprobs = {
            "content": [
                {
                    "token": content[:1] or "A",
                    "logprob": 0.0,
                    "top_logprobs": [
                        {"token": token, "logprob": math.log(p)} for token, p in top.items()
                    ],
                }
            ]
        }
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
    }


def option_text(payload: dict, label: str) -> str:
    """The text of option (A) or (B) in a comparison question the judge was sent."""
    text = payload["messages"][0]["content"]
    start = text.index(f"({label}) ") + 4
    end = text.index("\n\n(B) ", start) if label == "A" else len(text)
    return text[start:end]


class FakeEndpoint:
    """``script(hit_number, payload) -> Answer`` (hit numbers start at 1)."""

    def __init__(self, script):
        self.script = script
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {}
                with endpoint._lock:
                    endpoint.hits.append(Hit(payload, dict(self.headers), time.monotonic()))
                    number = len(endpoint.hits)
                answer = endpoint.script(number, payload)
                if answer.delay:
                    time.sleep(answer.delay)
                body = answer.body
                if isinstance(body, dict):
                    body = json.dumps(body).encode()
                body = body or b""
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gaps(self) -> list[float]:
        """Seconds between consecutive hits."""
        return [b.at - a.at for a, b in zip(self.hits, self.hits[1:], strict=False)]
