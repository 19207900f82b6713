"""A Grafana stand-in for the compose test: the provisioning Grafana would load, checked and served read-only.

Fails at start when a provisioning file or dashboard does not parse or a provider's path is missing;
/api/health answers 200 only while the default datasource's URL answers; /api/search and
/api/dashboards/uid/<uid> serve the provisioned dashboards as Grafana's HTTP API shapes them.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

PROVISIONING = Path("/etc/grafana/provisioning")


def load_datasource() -> dict[str, Any]:
    sources = [
        source
        for path in sorted((PROVISIONING / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    return next(source for source in sources if source.get("isDefault")) if len(sources) > 1 else sources[0]


def load_dashboards() -> dict[str, dict[str, Any]]:
    dashboards: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text())["providers"]:
            folder = Path(provider["options"]["path"])
            files = sorted(folder.glob("*.json"))
            if not files:
                raise SystemExit(f"provider {provider['name']}: no dashboards in {folder}")
            for file in files:
                dashboard = json.loads(file.read_text())
                dashboards[dashboard["uid"]] = dashboard
    return dashboards


DATASOURCE = load_datasource()
DASHBOARDS = load_dashboards()


def datasource_ready() -> bool:
    try:
        with urllib.request.urlopen(f"{DATASOURCE['url']}/-/ready", timeout=2) as response:  # noqa: S310 - provisioned http URL
            return bool(response.status == 200)
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/api/health":
            ready = datasource_ready()
            self.answer(200 if ready else 503, {"database": "ok" if ready else "failing"})
        elif self.path == "/api/search":
            self.answer(200, [{"uid": uid, "title": board["title"]} for uid, board in DASHBOARDS.items()])
        elif self.path.startswith("/api/dashboards/uid/") and self.path.rsplit("/", 1)[-1] in DASHBOARDS:
            self.answer(200, {"dashboard": DASHBOARDS[self.path.rsplit("/", 1)[-1]]})
        else:
            self.answer(404, {"message": "Not found"})

    def answer(self, status: int, body: object) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Health probes every few seconds would drown the log."""


if __name__ == "__main__":
    # PID 1 ignores SIGTERM unless it handles it: without this, every stop waits for the kill.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"grafana stand-in: {len(DASHBOARDS)} dashboards, datasource {DATASOURCE['url']}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 3000), Handler).serve_forever()
