"""The events benchmark's delivery target: a small real HTTP server that stores records by idempotency key.

`python -m bench.target --port 8123` serves, with HTTP/1.1 keep-alive:
- POST /records/<entity> (Idempotency-Key header): a repeated key stores nothing and answers the first id;
- POST /records/<entity>/batch ({"items": [record with its idempotency_key]}): answers {"results": [{"status":
  201 or 200, "record": {"id": ...}}]} in order, each key stored once;
- GET /_stats: records stored, calls, repeated keys.
It keeps its records in memory: it lives only as long as one benchmark run.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, str] = {}
        self.posts = 0
        self.repeated = 0


def handler_for(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: without this, Nagle holds the body until the client's
        # delayed ACK (40 ms), which would make every call look 40 ms slow.
        disable_nagle_algorithm = True

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.startswith("/_stats"):
                with store.lock:
                    stats = {"records": len(store.keys), "posts": store.posts, "repeated": store.repeated}
                self._reply(200, stats)
            elif self.path.startswith("/health"):
                self._reply(200, {"ok": True})
            else:
                self._reply(404, {"error": "not found"})

        def _store(self, entity: str, key: str) -> tuple[str, bool]:
            """(id, created) of the record under `key`: a repeated key stores nothing."""
            with store.lock:
                store.posts += 1
                existing = store.keys.get(key)
                if existing is None:
                    store.keys[key] = f"T-{entity}-{len(store.keys) + 1}"
                    return store.keys[key], True
                store.repeated += 1
                return existing, False

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) or b"{}")
            if self.path.rstrip("/").endswith("/batch"):
                entity = self.path.rstrip("/").rsplit("/", 2)[-2]
                results = []
                for item in payload.get("items") or []:
                    key = str(item.get("idempotency_key") or "") if isinstance(item, dict) else ""
                    if not key:
                        results.append({"status": 422, "detail": "an idempotency_key is required"})
                        continue
                    record_id, created = self._store(entity, key)
                    results.append({"status": 201 if created else 200, "record": {"id": record_id}})
                self._reply(200, {"results": results})
                return
            key = self.headers.get("Idempotency-Key", "")
            if not key or not isinstance(payload, dict):
                self._reply(422, {"error": "an Idempotency-Key header and a JSON object are required"})
                return
            record_id, created = self._store(self.path.rstrip("/").rsplit("/", 1)[-1], key)
            self._reply(201 if created else 200, {"id": record_id, "created": created})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(Store()))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
