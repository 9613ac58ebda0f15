"""The local rating server: the page, the images it chose, and a ratings.csv row per answer.

Safety, because a browser runs other pages beside this one:
- It listens on 127.0.0.1 only, and answers only requests whose Host is that address (or
  localhost) at its port, so a web page cannot reach it through a rebound DNS name.
- Every request carries the session's token (a random string in the URL it prints); without it the
  answer is 403. Another page in the same browser cannot read the URL, so it cannot post answers.
  Answers must be `application/json`, which a page of another origin cannot send without the
  server's consent (a CORS preflight, which it never gives).
- No path comes from the browser: images are addressed by their number in the deck, from memory.
- The page may run its own script only (a Content-Security-Policy with the script's hash), and
  labels enter it as text, never as HTML.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from foolbench.errors import FoolbenchError
from foolbench.rating.deck import Deck
from foolbench.rating.page import render, script_hash, server_config
from foolbench.rating.store import Store, answer_row, rater_name

HOST = "127.0.0.1"
MAX_BODY = 64 * 1024


class RatingServer(ThreadingHTTPServer):
    """Serves one deck to any number of raters, writing their answers through `store`."""

    daemon_threads = True

    def __init__(self, deck: Deck, store: Store, port: int = 0):
        super().__init__((HOST, port), Handler)
        self.deck, self.store = deck, store
        self.token = secrets.token_urlsafe(24)
        self.items = deck.by_id()
        self.page = render(server_config(deck, self.token)).encode("utf-8")
        self.csp = (
            f"default-src 'none'; script-src '{script_hash()}'; style-src 'unsafe-inline'; "
            "img-src 'self'; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
        )
        self.listing = [
            {"id": item.id, "src": f"image/{n}?t={self.token}", "options": item.options}
            for n, item in enumerate(deck.items)
        ]
        self.writing = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?t={self.token}"


class Handler(BaseHTTPRequestHandler):
    server: RatingServer
    server_version = "foolbench-rate"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # the terminal shows the URL and the answers' count, not every request

    # -- requests ------------------------------------------------------------------------------------
    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query.get("t", [""])[0]):
            return
        if url.path == "/":
            return self._send(200, "text/html; charset=utf-8", self.server.page)
        if url.path == "/deck":
            return self._deck(query.get("rater", [""])[0])
        found = re.fullmatch(r"/image/(\d{1,9})", url.path)
        if found and int(found.group(1)) < len(self.server.deck.items):
            return self._send(200, "image/png", self.server.deck.items[int(found.group(1))].png)
        self._send(404, "text/plain; charset=utf-8", b"not found")

    def do_POST(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if url.path != "/answer" or length > MAX_BODY:
            return self._send(404, "text/plain; charset=utf-8", b"not found")
        if self.headers.get_content_type() != "application/json":
            return self._send(415, "text/plain; charset=utf-8", b"answers are sent as application/json")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return self._send(400, "text/plain; charset=utf-8", b"not a JSON object")
        if not self._allowed(str(body.get("t", ""))):
            return
        item = self.server.items.get(str(body.get("item")))
        try:
            if item is None:
                raise FoolbenchError("no such image in this session")
            row = answer_row(
                item, body.get("rater"), body.get("shown"), body.get("answer"), body.get("seconds")
            )
            with self.server.writing:
                saved = self.server.store.add([row])
        except FoolbenchError as e:
            return self._send(400, "text/plain; charset=utf-8", str(e).encode("utf-8"))
        self._json({"saved": saved})

    # -- helpers -------------------------------------------------------------------------------------
    def _deck(self, rater: str):
        try:
            rater = rater_name(rater)
            answered = self.server.store.answered(rater) & set(self.server.items)
        except FoolbenchError as e:
            return self._send(400, "text/plain; charset=utf-8", str(e).encode("utf-8"))
        self._json({"items": self.server.listing, "answered": sorted(answered)})

    def _allowed(self, token: str) -> bool:
        """The right Host (no rebound DNS name) and the session's token; a 403 otherwise."""
        hosts = {f"{HOST}:{self.server.port}", f"localhost:{self.server.port}"}
        if self.headers.get("Host", "") in hosts and hmac.compare_digest(token, self.server.token):
            return True
        self._send(403, "text/plain; charset=utf-8", b"forbidden: open the URL that foolbench rate printed")
        return False

    def _json(self, obj) -> None:
        self._send(200, "application/json", json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        if kind.startswith("text/html"):
            self.send_header("Content-Security-Policy", self.server.csp)
        self.end_headers()
        self.wfile.write(body)
