"""An HTTP stand-in for an InfluxDB that refuses writes (401/403), for what the local InfluxDB 1.6
cannot do: it runs without authentication. Records every request (method, path, query, auth)."""

from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class StandIn:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        self._requests: list[tuple[str, str, dict[str, list[str]], str | None]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                url = urllib.parse.urlsplit(self.path)
                with outer._lock:
                    outer._requests.append(
                        (
                            self.command,
                            url.path,
                            urllib.parse.parse_qs(url.query),
                            self.headers.get("Authorization"),
                        )
                    )
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def requests(self) -> list[tuple[str, str, dict[str, list[str]], str | None]]:
        with self._lock:
            return list(self._requests)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
