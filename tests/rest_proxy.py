"""A REST proxy in front of the simulator that answers some paths with HTTP 404 (an exchange
without that endpoint): ``with NoEndpoint(upstream, {"/fapi/v1/klines"}) as proxy: proxy.url``."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class NoEndpoint:
    """Forwards GETs to ``upstream`` (status, body, weight and Retry-After headers) except
    ``missing`` paths, which get Binance's 404 body."""

    def __init__(self, upstream: str, missing: set[str]):
        outer = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                path = self.path.split("?", 1)[0]
                if path in missing:
                    status, body, headers = 404, b'{"code":-1000,"msg":"Unknown path."}', {}
                else:
                    resp = httpx.get(upstream.rstrip("/") + self.path, timeout=30.0)
                    status, body = resp.status_code, resp.content
                    headers = {k: v for k, v in resp.headers.items()
                               if k.lower() in ("x-mbx-used-weight-1m", "retry-after")}  # fmt: skip
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> NoEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
