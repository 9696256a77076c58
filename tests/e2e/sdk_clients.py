"""Real Segment client libraries for the e2e tier: pinned npm packages, Debian's Chromium, a page on its own origin.

Nothing here is Herald code: these are the edges a customer's app has, so the tests drive the
libraries customers install, unmodified, and only point them at the gateway.
"""

import fcntl
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "sdk-clients"

# Exact versions: a new SDK release is a change we make on purpose, with this suite run against it.
NPM_PINS = {
    "@segment/analytics-next": "1.84.3",  # analytics.js 2.0, the browser SDK
    "@segment/analytics-node": "3.1.0",
}
NPM_INSTALL_TIMEOUT = 300


def _installed(modules: Path) -> bool:
    for name, version in NPM_PINS.items():
        manifest = modules / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def npm_packages() -> Path:
    """The node_modules folder holding the pinned SDKs, installed once per checkout; skips when npm cannot install."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the JavaScript SDKs: apt-get install nodejs npm")
    CACHE.mkdir(parents=True, exist_ok=True)
    modules = CACHE / "node_modules"
    # One installer at a time: parallel workers would otherwise write the same node_modules at once.
    with open(CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed(modules):
            return modules
        # All pins in one command: `npm install --no-save` prunes whatever the command does not name.
        specs = [f"{name}@{version}" for name, version in NPM_PINS.items()]
        try:
            done = subprocess.run(
                [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(CACHE), *specs],
                capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT, cwd=CACHE,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {' '.join(specs)} took over {NPM_INSTALL_TIMEOUT}s: check that npm reaches its registry")
        if done.returncode != 0 or not _installed(modules):
            said = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            why = next((line for line in said if "Error" in line or "ERR" in line), said[0] if said else "no output")
            pytest.skip(f"npm install {' '.join(specs)} failed ({why.strip()}): check that npm reaches its registry")
    return modules


def chromium() -> str:
    """Debian's Chromium, which Playwright drives as it is (no browser download); skips when it is missing."""
    pytest.importorskip("playwright.async_api", reason="Playwright for Python is a dev dependency: make install")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium is missing: apt-get install chromium (Debian's package; Playwright downloads no browser)")
    return path


def run_node(script: str, config: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Run a Node.js script with the pinned SDKs on its require path; it reads HERALD_SDK_TEST and prints one JSON line."""
    modules = npm_packages()
    done = subprocess.run(
        [shutil.which("node") or "node", "-e", script],
        env={**os.environ, "NODE_PATH": str(modules), "HERALD_SDK_TEST": json.dumps(config)},
        capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, f"node exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class StaticSite:
    """A web site on an origin of its own (localhost, a free port) serving fixed files: a customer's site."""

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        self.files = files
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = site.files.get(self.path.split("?", 1)[0])
                if found is None:
                    self.send_error(404)
                    return
                body, content_type = found
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="static-site", daemon=True)

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.server.server_address[1]}"

    def __enter__(self) -> "StaticSite":
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
