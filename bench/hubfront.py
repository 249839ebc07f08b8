"""A small hub front for the transfer benchmark: the hub API for generated repos, file GETs redirected to a CDN.

    .venv/bin/python bench/hubfront.py --manifest M.json --cdn http://127.0.0.1:8081 [--port 0]

Answers, for the repos of a JSON manifest (see `bench/transfer.py`, which writes it):
  - GET /api/{models,datasets}/<id>[/revision/<rev>]: `sha` and `siblings`, what `repo_info` needs;
  - GET /api/{models,datasets}/<id>/tree/<rev>[/<dir>][?recursive=true]: the listing `list_repo_tree` maps
    (`oid` -> blob_id, `lfs.oid` -> sha256), one page, no `Link: rel="next"`;
  - HEAD/GET /[datasets/]<id>/resolve/<rev>/<path>: for an LFS file, 302 to `<cdn>/<sha256>` with the headers
    the public hub sends (X-Repo-Commit, X-Linked-Etag, X-Linked-Size, ETag); huggingface_hub stops at that
    302 because the CDN is another origin, reads the metadata off it, and GETs the Location, as on the real
    hub. A small non-LFS file is served by the front itself, ETag = its git blob id.
`<rev>` is `main` or the repo's commit; anything else is 404 with the hub's X-Error-Code.

Stdlib only, threaded, HTTP/1.1 keep-alive so clients reuse connections as they do with the hub.
Prints `listening on http://127.0.0.1:<port>` once it accepts connections.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LAST_MODIFIED = "2025-01-01T00:00:00.000Z"
RESOLVE = re.compile(r"^/(?:(?P<type>datasets)/)?(?P<id>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
API = re.compile(r"^/api/(?P<type>models|datasets)/(?P<id>[^/]+/[^/]+)(?:/(?P<rest>.*))?$")


class Repos:
    """The manifest, indexed: (type, id) -> repo dict with a `by_path` map."""

    def __init__(self, manifest: dict) -> None:
        self.repos = {}
        for repo in manifest["repos"]:
            repo = dict(repo, by_path={f["path"]: f for f in repo["files"]})
            self.repos[(repo.get("type", "model"), repo["id"])] = repo

    def get(self, repo_type: str, repo_id: str) -> dict | None:
        return self.repos.get((repo_type, repo_id))


def tree_entries(repo: dict, under: str, recursive: bool) -> list[dict]:
    """Entries as the hub lists them: directories first-seen, files with oid/size/lfs."""
    prefix = under.strip("/") + "/" if under.strip("/") else ""
    out, dirs = [], set()
    for f in repo["files"]:
        if not f["path"].startswith(prefix):
            continue
        rest = f["path"][len(prefix):].split("/")
        for depth in range(1, len(rest)):
            d = prefix + "/".join(rest[:depth])
            if d not in dirs and (recursive or depth == 1):
                dirs.add(d)
                out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": d})
        if len(rest) > 1 and not recursive:
            continue
        entry = {"type": "file", "oid": f["blob_id"], "size": f["size"], "path": f["path"]}
        if f.get("sha256"):
            entry["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": f.get("pointer_size", 134)}
        out.append(entry)
    return out


def make_handler(repos: Repos, cdn: str, data_dir: Path):
    cdn = cdn.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as with the hub
        server_version = "hubfront"

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            pass  # the byte counts that matter are in nginx's access log

        # -- helpers ------------------------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
            self._send(status, json.dumps(data).encode(), headers)

        def _error(self, status: int, code: str, message: str) -> None:
            self._json({"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message})

        def _repo(self, repo_type: str, repo_id: str, rev: str | None):
            repo = repos.get(repo_type, repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                return None
            if rev is not None and unquote(rev) not in ("main", repo["sha"]):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return None
            return repo

        # -- routes -------------------------------------------------------------------------------
        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            url = urlsplit(self.path)
            if m := RESOLVE.match(url.path):
                return self.resolve("dataset" if m["type"] else "model", m["id"], m["rev"], unquote(m["path"]))
            if m := API.match(url.path):
                return self.api("dataset" if m["type"] == "datasets" else "model", m["id"], m["rest"] or "",
                                parse_qs(url.query))
            self._error(404, "EntryNotFound", f"no route for {url.path}")

        def api(self, repo_type: str, repo_id: str, rest: str, query: dict) -> None:
            parts = rest.split("/", 2) if rest else []
            if not parts or parts[0] == "revision":
                repo = self._repo(repo_type, repo_id, parts[1] if len(parts) > 1 else None)
                if repo is None:
                    return
                info = {
                    "_id": repo["sha"][:24], "id": repo_id, "sha": repo["sha"], "private": False,
                    "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                    "lastModified": LAST_MODIFIED, "createdAt": LAST_MODIFIED,
                    "siblings": [{"rfilename": f["path"]} for f in repo["files"]],
                }
                if repo_type == "model":
                    info["modelId"] = repo_id
                return self._json(info)
            if parts[0] == "tree" and len(parts) >= 2:
                repo = self._repo(repo_type, repo_id, parts[1])
                if repo is None:
                    return
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._json(tree_entries(repo, parts[2] if len(parts) > 2 else "", recursive))
            self._error(404, "EntryNotFound", f"no API route for {rest}")

        def resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
            repo = self._repo(repo_type, repo_id, rev)
            if repo is None:
                return
            f = repo["by_path"].get(path)
            headers = {"X-Repo-Commit": repo["sha"], "Accept-Ranges": "bytes"}
            if f is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist at {rev}")
            if f.get("sha256"):  # LFS: the public hub redirects to its CDN and links the blob's etag and size
                headers |= {
                    "Location": f"{cdn}/{quote(f['cdn_name'])}",
                    "ETag": f'"{f["blob_id"]}"',  # the pointer file's etag, as the hub sends it
                    "X-Linked-Etag": f'"{f["sha256"]}"',
                    "X-Linked-Size": str(f["size"]),
                }
                return self._send(302, f"Found. Redirecting to {headers['Location']}".encode(), headers,
                                  "text/plain; charset=utf-8")
            body = (data_dir / f["cdn_name"]).read_bytes()
            self._send(200, body, headers | {"ETag": f'"{f["blob_id"]}"'}, "application/octet-stream")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # dozens of ranged connections open at once; the default 5 drops SYNs (1 s retries)


def serve(manifest: dict, cdn: str, data_dir: Path, port: int = 0) -> ThreadingHTTPServer:
    """Start the front on 127.0.0.1:<port> in a daemon thread; `server.server_port` is the port."""
    server = _Server(("127.0.0.1", port), make_handler(Repos(manifest), cdn, data_dir))
    threading.Thread(target=server.serve_forever, name="hubfront", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--cdn", required=True, help="base URL the LFS files are redirected to")
    parser.add_argument("--data-dir", type=Path, help="where small files live (default: beside the manifest)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    manifest = json.loads(args.manifest.read_text())
    data_dir = args.data_dir or Path(manifest.get("data_dir") or args.manifest.parent)
    server = serve(manifest, args.cdn, data_dir, args.port)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
