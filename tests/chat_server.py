"""A real HTTP server that speaks the OpenAI chat API (POST /v1/chat/completions, GET
/v1/models), for the prompt helper's endpoint backend: answers are queued by each test."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """An OpenAI-style chat server on a free port: answers are queued per test as
    (status, body) or the word "hang" (waits until the test ends)."""

    def __init__(self) -> None:
        self.answers: list = []
        self.requests: list[dict] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                self._send(200, {"object": "list", "data": [{"id": "listed-model"}]})

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                answer = server.answers.pop(0)
                if answer == "hang":
                    server.release.wait(30)
                    return
                status, payload = answer
                self._send(status, payload)

            def _send(self, status, payload):
                text = payload if isinstance(payload, str) else json.dumps(payload)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reply(self, content: str, status: int = 200):
        message = {"role": "assistant", "content": content}
        self.answers.append((status, {"choices": [{"index": 0, "message": message}]}))

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
