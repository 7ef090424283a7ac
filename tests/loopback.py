"""A stand-in for whatever answers at a cluster's address, on loopback: a cluster in trouble (429, 503,
400, 401) or a proxy in front of it (an HTML 404). It records each request's headers, for tests of what
reaches the cluster."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message


@contextmanager
def answering(status: int, body: bytes, content_type: str = "application/json",
              seen: list[Message] | None = None) -> Iterator[str]:
    """Serve ``status`` and ``body`` to every request until the block ends; yields the server's URL. Each
    request's headers are appended to ``seen`` where given."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            if seen is not None:
                seen.append(self.headers)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = answer  # noqa: N815 (the names http.server calls)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
