"""A tiny stand-in for the Hugging Face hub on 127.0.0.1.

Downloads: the ``/{repo}/resolve/{revision}/{file}`` endpoint, answering HEAD and GET with the headers
huggingface_hub relies on (``X-Repo-Commit``, ``ETag``, ``Content-Length``; for LFS files -- weights, as on the real
hub -- ``X-Linked-Etag``/``X-Linked-Size`` with the sha256, for regular git files the git blob sha1 as ETag), the hub's
``X-Error-Code`` on 404s, honouring ``Range``; every commit the hub has had is a valid revision. Listing: the
``/api/models/{repo}/tree/{revision}[/{path}]`` endpoint (``recursive``), with folders and LFS pointers as the hub
returns them. Uploads: what ``create_repo``, ``create_branch`` and ``upload_folder`` call (``/api/repos/create``,
``/api/validate-yaml``, ``/api/models/{repo}/preupload|commit|branch/{revision}``), with every file declared a
"regular" upload so the commit carries it inline. Every request is recorded so tests can assert what reached the
network.
"""

from __future__ import annotations

import base64
import hashlib
import json
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
        self.history = {self.commit}
        self.repos: dict[str, dict] = {}  # created through the API: repo_id -> {"private": bool}
        self.commits: list[dict] = []  # commits received: {"repo", "revision", "summary", "files"}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                if self.path.startswith("/api/"):
                    hub._tree(self)
                else:
                    hub._answer(self, body=True)

            def do_POST(self):
                hub._api(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id: str, filename: str, content: bytes) -> str:
        self.files[(repo_id, filename)] = content
        self.commit = hashlib.sha1(self.commit.encode() + filename.encode() + content).hexdigest()
        self.history.add(self.commit)
        return hashlib.sha256(content).hexdigest()

    def remove(self, repo_id: str, filename: str) -> None:
        del self.files[(repo_id, filename)]
        self.commit = hashlib.sha1(self.commit.encode() + b"rm " + filename.encode()).hexdigest()
        self.history.add(self.commit)

    def gets(self) -> int:
        """File downloads (GET on /resolve/)."""
        return sum(1 for m, p in self.requests if m == "GET" and "/resolve/" in p)

    def lists(self) -> int:
        """Repository listings (GET on /api/.../tree/)."""
        return sum(1 for m, p in self.requests if m == "GET" and "/tree/" in p)

    @staticmethod
    def is_lfs(filename: str, content: bytes) -> bool:
        """As the hub's default .gitattributes: weights (and anything over 10 MB) are stored with LFS."""
        return filename.endswith((".bin", ".pth", ".pt", ".safetensors", ".h5", ".msgpack")) or len(content) > 10 << 20

    @staticmethod
    def git_oid(content: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    def _tree(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append(("GET", h.path))
        path, _, query = h.path.partition("?")
        rest = unquote(path)[len("/api/models/") :]
        repo, sep, tail = rest.partition("/tree/")
        revision, _, folder = tail.partition("/")
        if not sep or not any(r == repo for r, _ in self.files):
            return self._json(h, {"error": "Repository not found"}, 404)
        if revision not in ("main", *self.history):
            return self._json(h, {"error": "Invalid rev id"}, 404)
        recursive = "recursive=true" in query.lower() or "recursive=1" in query
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        items: dict[str, dict] = {}
        for (r, name), content in sorted(self.files.items()):
            if r != repo or not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            for i in range(1, len(parts)):  # the folders on the way
                d = prefix + "/".join(parts[:i])
                if recursive or i == 1:
                    items.setdefault(
                        d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                    )
            if recursive or len(parts) == 1:
                info = {"type": "file", "oid": self.git_oid(content), "size": len(content), "path": name}
                if self.is_lfs(name, content):
                    info["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
                items[name] = info
        return self._json(h, list(items.values()))

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
        if content is None or revision not in ("main", *self.history):
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
        h.send_header("X-Repo-Commit", revision if revision in self.history else self.commit)  # as asked
        if self.is_lfs(filename, content):
            h.send_header("X-Linked-Etag", f'"{hashlib.sha256(content).hexdigest()}"')
            h.send_header("X-Linked-Size", str(len(content)))
        h.send_header(
            "ETag",
            f'"{self.git_oid(content) if not self.is_lfs(filename, content) else hashlib.sha256(content).hexdigest()}"',
        )
        h.send_header("Content-Length", str(len(part)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if body:
            h.wfile.write(part if self.cut_after is None else part[: self.cut_after])
            if self.cut_after is not None:
                h.close_connection = True

    def _json(self, h: BaseHTTPRequestHandler, obj: object, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _api(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append(("POST", h.path))
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        path = unquote(h.path.split("?", 1)[0])
        if self.fail_with:
            return self._json(h, {"error": "failing"}, self.fail_with)
        if path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            if repo in self.repos:
                return self._json(h, {"error": "You already created this model repo"}, 409)
            self.repos[repo] = {"private": bool(req.get("private"))}
            return self._json(h, {"url": f"{self.url}/{repo}", "name": repo})
        if path == "/api/validate-yaml":
            return self._json(h, {"errors": [], "warnings": []})
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/") :]
            for action in ("preupload", "commit", "branch"):
                repo, sep, revision = rest.partition(f"/{action}/")
                if sep:
                    break
            if repo not in self.repos:
                return self._json(h, {"error": f"Repository {repo} not found"}, 404)
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._json(
                    h,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in files
                        ]
                    },
                )
            if action == "branch":
                return self._json(h, {})
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            files = {
                ln["value"]["path"]: base64.b64decode(ln["value"]["content"]) for ln in lines if ln["key"] == "file"
            }
            for name, content in files.items():
                self.add(repo, name, content)
            summary = next(ln["value"]["summary"] for ln in lines if ln["key"] == "header")
            self.commits.append({"repo": repo, "revision": revision, "summary": summary, "files": sorted(files)})
            return self._json(
                h, {"commitUrl": f"{self.url}/{repo}/commit/{self.commit}", "commitOid": self.commit, "success": True}
            )
        return self._json(h, {"error": f"no such endpoint {path}"}, 404)


class FileServer:
    """Plain HTTP file hosting on 127.0.0.1, as download.openmmlab.com serves checkpoints: GET and HEAD by path,
    ``Range`` answered with 206, 404 for anything else. ``cut_after`` sends only that many bytes of the next body
    and closes the connection (a download cut short); every request is recorded with its Range header."""

    def __init__(self):
        self.files: dict[str, bytes] = {}  # URL path -> content
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_after: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server._answer(self, body=True)

            def do_HEAD(self):
                server._answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, content: bytes) -> str:
        self.files[path] = content
        return hashlib.sha256(content).hexdigest()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        rng = h.headers.get("Range")
        self.requests.append(("GET" if body else "HEAD", h.path, rng))
        content = self.files.get(unquote(h.path.split("?", 1)[0]))
        if content is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = int(rng[6:].split("-")[0] or 0) if rng and rng.startswith("bytes=") else 0
        part = content[start:]
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        h.send_header("Content-Length", str(len(part)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if body:
            cut, self.cut_after = self.cut_after, None
            h.wfile.write(part if cut is None else part[:cut])
            if cut is not None:
                h.close_connection = True
