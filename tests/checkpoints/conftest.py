"""A local stand-in for the Hugging Face Hub's file endpoints, and a weights folder with its own manifest.

`FakeHub` serves `HEAD/GET /{repo_id}/resolve/{revision}/{filename}` on 127.0.0.1 with the headers
huggingface_hub reads (`X-Repo-Commit`, `ETag`, `Content-Length`, `X-Error-Code` on 404) and records every
request. The `hub_env` fixture points the real huggingface_hub client at it and keeps it off the user's
cache, token and network.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

REPO_ID = "test-org/fusionmamba-test"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def micro_blobs(tmp_path_factory) -> list[bytes]:
    """Three randomly initialised `micro` networks (different seeds) as our safetensors bytes."""
    from fusionmamba_cli import create_model, save_weights

    folder = tmp_path_factory.mktemp("micro-blobs")
    blobs = []
    for seed in range(3):
        torch.manual_seed(seed)
        blobs.append(save_weights(create_model("micro"), folder / f"m{seed}.safetensors").read_bytes())
    return blobs


@dataclass
class FakeHub:
    """Repositories as {repo_id: {revision: (commit, {filename: bytes})}}; requests as (method, path)."""

    repos: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)
    url: str = ""

    def add(self, revision: str, files: dict[str, bytes], repo_id: str = REPO_ID) -> str:
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[revision] = (commit, files)
        self.repos[repo_id][commit] = (commit, files)  # a commit hash resolves too
        return commit

    def commit(self, revision: str, repo_id: str = REPO_ID) -> str:
        return self.repos[repo_id][revision][0]

    def downloads(self) -> list[str]:
        """File GETs (huggingface_hub may also ask for its own `/api/...` data once per process)."""
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET" and body:
                self.wfile.write(body)

        def _serve(self) -> None:
            hub.requests.append((self.command, self.path))
            parts = unquote(self.path.split("?")[0]).lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._reply(404, {"X-Error-Code": "RepoNotFound"})
            repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo_id not in hub.repos:
                return self._reply(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            if revision not in hub.repos[repo_id]:
                return self._reply(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            commit, files = hub.repos[repo_id][revision]
            if filename not in files:
                return self._reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
            data = files[filename]
            headers = {"X-Repo-Commit": commit, "ETag": f'"{sha256_bytes(data)}"', "Content-Type": "application/octet-stream"}
            self._reply(200, headers, data)

        do_GET = _serve
        do_HEAD = _serve

    return Handler


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield hub
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url():
    """An http URL on 127.0.0.1 that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class HubEnv:
    cache: Path
    monkeypatch: pytest.MonkeyPatch

    def point(self, url: str) -> None:
        """Make the already imported huggingface_hub use `url` as HF_ENDPOINT (it reads it at import time)."""
        from huggingface_hub import constants

        self.monkeypatch.setenv("HF_ENDPOINT", url)
        self.monkeypatch.setattr(constants, "ENDPOINT", url)
        self.monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

    def offline(self) -> None:
        from huggingface_hub import constants

        self.monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        self.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hub_env(monkeypatch, tmp_path) -> HubEnv:
    """A private HF cache (also the default one), no token, online; `point(url)` picks the endpoint."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf-home" / "agents.json"), raising=False)
    return HubEnv(cache, monkeypatch)


@dataclass
class WeightsDir:
    path: Path
    entries: list = field(default_factory=list)
    repo_id: str = REPO_ID

    def add(self, name: str, file: str, data: bytes, *, bundled: bool = False, tasks=("ir_vis",), **extra) -> dict:
        entry = {
            "name": name, "file": file, "sha256": sha256_bytes(data), "size": len(data), "preset": "micro",
            "tasks": list(tasks), "bundled": bundled, "description": f"test weights {name}", **extra,
        }
        self.entries.append(entry)
        if bundled:
            (self.path / file).write_bytes(data)
        self.write()
        return entry

    def write(self) -> None:
        manifest = {"repo_id": self.repo_id, "default": None, "task_defaults": {}, "weights": self.entries}
        buffer = io.StringIO()
        json.dump(manifest, buffer, indent=1)
        (self.path / "manifest.json").write_text(buffer.getvalue())
        from fusionmamba_cli.checkpoints import manifest as manifest_module

        manifest_module._load_manifest_cached.cache_clear()  # a rewrite within the clock's tick keeps the mtime


@pytest.fixture
def weights_dir(monkeypatch, tmp_path) -> WeightsDir:
    """An empty weights folder (manifest written by `add`) that `bundled_weights_dir()` returns."""
    path = tmp_path / "weights"
    path.mkdir()
    monkeypatch.setenv("FUSIONMAMBA_WEIGHTS_DIR", str(path))
    folder = WeightsDir(path)
    folder.write()
    return folder
