"""A tiny stand-in for the Hugging Face hub on 127.0.0.1: the ``/{repo}/resolve/{revision}/{file}`` endpoint.

It answers HEAD and GET with the headers huggingface_hub relies on (``X-Repo-Commit``, ``ETag``,
``Content-Length``), the hub's ``X-Error-Code`` on 404s, honours ``Range``, and records every request so tests can
assert what reached the network.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class LocalHub:
    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}  # (repo_id, filename) -> content
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.fail_with: int | None = None  # answer every request with this HTTP status
        self.cut_after: int | None = None  # send only this many bytes of a body, then close (a download cut short)
        self.commit = "0" * 40  # a new commit for every change, as on the real hub
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id: str, filename: str, content: bytes) -> str:
        self.files[(repo_id, filename)] = content
        self.commit = hashlib.sha1(self.commit.encode() + content).hexdigest()
        return hashlib.sha256(content).hexdigest()

    def gets(self) -> int:
        return sum(1 for m, _ in self.requests if m == "GET")

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append(("GET" if body else "HEAD", h.path))
        if self.fail_with:
            h.send_response(self.fail_with)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        path = unquote(h.path.split("?", 1)[0]).lstrip("/")
        repo, sep, rest = path.partition("/resolve/")
        revision, _, filename = rest.partition("/")
        content = self.files.get((repo, filename)) if sep else None
        if content is None or revision not in ("main", self.commit):
            code = "EntryNotFound" if any(r == repo for r, _ in self.files) else "RepoNotFound"
            h.send_response(404)
            h.send_header("X-Error-Code", code)
            h.send_header("X-Error-Message", f"{code}: {path}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        part = content[start:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", self.commit)
        h.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
        h.send_header("Content-Length", str(len(part)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if body:
            h.wfile.write(part if self.cut_after is None else part[: self.cut_after])
            if self.cut_after is not None:
                h.close_connection = True
