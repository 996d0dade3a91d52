"""A Mattermost incoming-webhook stand-in on a real socket.

Follows the documented behaviour of `POST /hooks/{key}`: JSON (or form field `payload`) with `text` and/or
`attachments`; 200 with body `ok`; 400 when neither is present or the JSON is invalid; 403 for an unknown key.
Messages are recorded for assertions.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class MattermostStandIn:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.key = secrets.token_hex(13)
        self.messages: list[dict[str, Any]] = []
        self.fail_next = 0  # answer this many requests with 500, to test that failures never propagate
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != f"/hooks/{outer.key}":
                    return self._answer(403, '{"id":"web.incoming_webhook.get.app_error","status_code":403}')
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    return self._answer(500, "internal error")
                try:
                    if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                        payload = json.loads(parse_qs(body.decode())["payload"][0])
                    else:
                        payload = json.loads(body)
                except (ValueError, KeyError):
                    return self._answer(400, '{"id":"web.incoming_webhook.parse.app_error","status_code":400}')
                if not isinstance(payload, dict) or not (payload.get("text") or payload.get("attachments")):
                    return self._answer(400, '{"id":"web.incoming_webhook.text.app_error","status_code":400}')
                outer.messages.append(payload)
                self._answer(200, "ok")

            def _answer(self, code: int, text: str) -> None:
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}/hooks/{self.key}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def titles(self) -> list[str]:
        return [a.get("title", "") for m in self.messages for a in m.get("attachments", [])] + [
            m["text"] for m in self.messages if m.get("text")
        ]

    def clear(self) -> None:
        self.messages.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
