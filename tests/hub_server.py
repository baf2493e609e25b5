#!/usr/bin/env python3
"""A local stand-in for the Hugging Face Hub's file API, for tests/cli_hub.sh (offline).

    hub_server.py serve --port-file F --log L --repo ID=DIR[,gated][,drops=N][,corrupt] ...
    hub_server.py split SRC_DIR DST_DIR      (a model dir with its model.safetensors in 2 shards)

What it serves, as the Hub does (huggingface_hub's file_download.py reads these headers):
  HEAD/GET /{org}/{name}/resolve/{revision}/{file}
    revision: "main" or the repository's commit (sha1 of the id), else 404 RevisionNotFound
    X-Repo-Commit: the commit
    a regular file: 200, ETag "<git blob sha1>", Content-Length, the bytes (Range honoured)
    an LFS file (*.safetensors): 302 to http://localhost:PORT/cdn/{id}/{sha256} (another host
      name, as the Hub's CDN is), X-Linked-Etag "<sha256>",
      X-Linked-Size, ETag of the pointer
    a file the repository lacks: 404 X-Error-Code: EntryNotFound (with X-Repo-Commit)
    an unknown repository: X-Error-Code: RepoNotFound, 401 without a token, 404 with one
    gated: no "Authorization: Bearer test-token": 401 without a token, 403 GatedRepo with another
  GET /cdn/{id}/{sha256}: the bytes, Range honoured (206 + Content-Range)
    drops=N: the first N GETs of the repository's LFS files send the headers of the whole answer,
      then 100000 bytes, then close the connection (a dropped download)
    corrupt: one byte flipped (the ETag stays right: a checksum must catch it)
Every request is logged to L as "METHOD PATH RANGE AUTH" (RANGE "-" when none).
"""
import hashlib
import http.server
import json
import os
import struct
import sys
import threading
import urllib.parse

TOKEN = "test-token"
DROP_AFTER = 100000


class Repo:
    def __init__(self, spec):
        rid, _, rest = spec.partition("=")
        parts = rest.split(",")
        self.id = rid
        self.dir = parts[0]
        self.gated = "gated" in parts
        self.corrupt = "corrupt" in parts
        self.drops = 0
        for p in parts:
            if p.startswith("drops="):
                self.drops = int(p[6:])
        self.commit = hashlib.sha1(rid.encode()).hexdigest()
        self.sent = 0  # GETs of LFS files answered (for drops)
        self.files = {}
        for root, _, names in os.walk(self.dir):
            for n in names:
                full = os.path.join(root, n)
                rel = os.path.relpath(full, self.dir)
                with open(full, "rb") as f:
                    data = f.read()
                self.files[rel] = data
        self.sha = {hashlib.sha256(d).hexdigest(): rel for rel, d in self.files.items()}


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    repos = {}
    log = None
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def note(self):
        with self.lock:
            with open(self.log, "a") as f:
                auth = self.headers.get("Authorization") or "-"
                f.write("%s %s %s %s\n" % (self.command, self.path, self.headers.get("Range") or "-",
                                           auth.replace(" ", "_")))

    def reply(self, code, headers, body=b"", send_body=True):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def error(self, code, ecode, commit=None, body=True):
        h = [("X-Error-Code", ecode)]
        if commit:
            h.append(("X-Repo-Commit", commit))
        self.reply(code, h, ecode.encode(), body)

    def send_bytes(self, data, body, repo, key):
        """200 or 206 (Range) with data; drops and corruption as the repository says."""
        rng = self.headers.get("Range")
        start = 0
        code = 200
        h = []
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.reply(416, [("Content-Range", "bytes */%d" % len(data))], b"", body)
                return
            code = 206
            h.append(("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data))))
        part = data[start:]
        if repo and repo.corrupt and part:
            part = bytes([part[0] ^ 1]) + part[1:]
        h.append(("Content-Length", str(len(part))))
        h.append(("Accept-Ranges", "bytes"))
        if not body:
            self.reply(code, h, b"", False)
            return
        n = 0
        if repo:
            with self.lock:
                n = repo.sent
                repo.sent += 1
        if repo and n < repo.drops and len(part) > DROP_AFTER:
            self.reply(code, h, b"", False)
            self.wfile.write(part[:DROP_AFTER])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.reply(code, h, part, True)

    def handle_any(self, body):
        self.note()
        path = self.path.split("?")[0]
        parts = path.lstrip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 4:
            repo = self.repos.get(parts[1] + "/" + parts[2])
            rel = repo.sha.get(parts[3]) if repo else None
            if rel is None:
                self.error(404, "NotFound", body=body)
                return
            self.send_bytes(repo.files[rel], body, repo, rel)
            return
        if len(parts) < 5 or parts[2] != "resolve":
            self.error(404, "NotFound", body=body)
            return
        rid = parts[0] + "/" + parts[1]
        repo = self.repos.get(rid)
        if repo is None:  # as the Hub: 401 to an anonymous caller, 404 to one with a token
            self.error(404 if self.headers.get("Authorization") else 401, "RepoNotFound", body=body)
            return
        if repo.gated:
            auth = self.headers.get("Authorization")
            if auth is None:
                self.error(401, "GatedRepo", body=body)
                return
            if auth != "Bearer " + TOKEN:
                self.error(403, "GatedRepo", body=body)
                return
        rev = urllib.parse.unquote(parts[3])
        if rev not in ("main", repo.commit):
            self.error(404, "RevisionNotFound", body=body)
            return
        rel = urllib.parse.unquote("/".join(parts[4:]))
        if rel not in repo.files:
            self.error(404, "EntryNotFound", repo.commit, body)
            return
        data = repo.files[rel]
        if rel.endswith(".safetensors"):
            sha = hashlib.sha256(data).hexdigest()
            # the CDN on another host name (as cdn-lfs.huggingface.co is): the same server as localhost
            host = self.headers.get("Host").replace("127.0.0.1", "localhost")
            self.reply(302, [("X-Repo-Commit", repo.commit), ("X-Linked-Etag", '"%s"' % sha),
                             ("X-Linked-Size", str(len(data))), ("ETag", '"%s"' % git_sha1(b"pointer " + sha.encode())),
                             ("Location", "http://%s/cdn/%s/%s" % (host, rid, sha))], b"", body)
            return
        rng = self.headers.get("Range")
        h = [("X-Repo-Commit", repo.commit), ("ETag", '"%s"' % git_sha1(data))]
        if rng:
            self.send_bytes_with(h, data, body)
        else:
            self.reply(200, h + [("Content-Length", str(len(data)))], data, body)

    def send_bytes_with(self, h, data, body):
        start = int(self.headers.get("Range")[6:].split("-")[0])
        part = data[start:]
        self.reply(206, h + [("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data))),
                             ("Content-Length", str(len(part)))], part, body)

    def do_HEAD(self):
        self.handle_any(False)

    def do_GET(self):
        self.handle_any(True)


def serve(args):
    port_file = log = None
    repos = {}
    i = 0
    while i < len(args):
        if args[i] == "--port-file":
            port_file = args[i + 1]
        elif args[i] == "--log":
            log = args[i + 1]
        elif args[i] == "--repo":
            r = Repo(args[i + 1])
            repos[r.id] = r
        else:
            sys.exit("hub_server.py: unknown option " + args[i])
        i += 2
    Handler.repos = repos
    Handler.log = log
    open(log, "a").close()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    srv.serve_forever()


def split(src, dst):
    """model.safetensors -> model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json"""
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    names = sorted(k for k in header if k != "__metadata__")
    halves = [names[:len(names) // 2], names[len(names) // 2:]]
    index = {"metadata": {"total_size": 0}, "weight_map": {}}
    for i, part in enumerate(halves):
        fname = "model-%05d-of-00002.safetensors" % (i + 1)
        h, blob, off = {}, b"", 0
        for k in part:
            t = header[k]
            b, e = t["data_offsets"]
            data = raw[base + b:base + e]
            h[k] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + len(data)]}
            blob += data
            off += len(data)
            index["weight_map"][k] = fname
        index["metadata"]["total_size"] += off
        hj = json.dumps(h).encode()
        hj += b" " * (-len(hj) % 8)
        with open(os.path.join(dst, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj + blob)
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    for n in os.listdir(src):
        if n != "model.safetensors":
            with open(os.path.join(src, n), "rb") as a, open(os.path.join(dst, n), "wb") as b:
                b.write(a.read())


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
