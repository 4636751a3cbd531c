"""A target that forgives nothing: every create is appended as a new record, whatever its payload or key.

It speaks the generic REST connector's shape (POST <path>, GET <path>?hub_key=, PATCH/PUT <path>/<id>,
POST <path>/batch), ignores the Idempotency-Key header, and counts creates and updates, so a test sees every
duplicate the hub would cause. Faults are scripted per create: `{"accept_then_fail": True}` stores the
record and answers 503 (the answer is lost), `{"delay": s}` answers late, `{"status": 503}` fails before
storing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from connectors.http import clients_close

KEY_FIELD = "hub_key"


@dataclass
class AppendingTarget:
    url: str = ""
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    creates: int = 0
    updates: int = 0
    last_id: int = 0
    script: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, *faults: dict[str, Any]) -> None:
        with self.lock:
            self.script.extend(faults)

    def by_canonical_id(self) -> dict[str, list[dict[str, Any]]]:
        """canonical id (the payload's `id`) → every record stored for it: more than one is a duplicate."""
        found: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for record in self.records.values():
                found.setdefault(str(record.get("id")), []).append(record)
        return found

    def settings(self, entity: str = "client", *, batch: bool = False, update_method: str = "PATCH") -> dict:
        """The generic REST settings of a system pointing at this target."""
        endpoint: dict[str, Any] = {
            "path": f"/{entity}s",
            "id_field": "target_id",
            "lookup_param": KEY_FIELD,
            "idempotency_field": KEY_FIELD,
            "results_path": "results",
            "update_method": update_method,
        }
        if batch:
            endpoint["batch_path"] = f"/{entity}s/batch"
        return {"auth_mode": "none", "endpoints": {entity: endpoint}}


def _handler(target: AppendingTarget) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) if length else b"{}")

        def _append(self, payload: dict[str, Any]) -> dict[str, Any]:
            with target.lock:
                target.creates += 1
                target.last_id += 1
                record_id = target.last_id
                record = {**payload, "target_id": record_id}
                target.records[record_id] = record
                return dict(record)

        def _fault(self) -> dict[str, Any] | None:
            with target.lock:
                return target.script.pop(0) if target.script else None

        def do_GET(self) -> None:
            url = urlparse(self.path)
            key = parse_qs(url.query).get(KEY_FIELD, [""])[0]
            with target.lock:
                rows = [dict(r) for r in target.records.values() if key and r.get(KEY_FIELD) == key]
            self._reply(200, {"results": rows})

        def do_POST(self) -> None:
            path = urlparse(self.path).path.rstrip("/")
            body = self._body()
            fault = self._fault()
            if fault and fault.get("status"):
                self._reply(int(fault["status"]), {"error": "scripted"})
                return
            if path.endswith("/batch"):
                stored = [self._append(item) for item in body.get("items", [])]
                answer: Any = {"results": [{"status": 201, "record": record} for record in stored]}
            else:
                answer = self._append(body)
            if fault and fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if fault and fault.get("accept_then_fail"):
                self._reply(503, {"error": "stored, but the answer failed"})
                return
            self._reply(201, answer)

        def _update(self, merge: bool) -> None:
            record_id = int(urlparse(self.path).path.rstrip("/").rsplit("/", 1)[-1])
            body = self._body()
            with target.lock:
                current = target.records.get(record_id)
                if current is not None:
                    target.updates += 1
                    kept = {"target_id": record_id, KEY_FIELD: current.get(KEY_FIELD)}
                    target.records[record_id] = {**(current if merge else {}), **body, **kept}
                    answer = dict(target.records[record_id])
            if current is None:
                self._reply(404, {"error": "not found"})
            else:
                self._reply(200, answer)

        def do_PATCH(self) -> None:
            self._update(merge=True)

        def do_PUT(self) -> None:
            self._update(merge=False)

        def do_DELETE(self) -> None:
            record_id = int(urlparse(self.path).path.rstrip("/").rsplit("/", 1)[-1])
            with target.lock:
                target.records.pop(record_id, None)
            self._reply(200, {})

        def log_message(self, *args: Any) -> None:
            """Silent: the tests read the target's counters, not its access log."""

    return Handler


@contextmanager
def appending_target_running() -> Iterator[AppendingTarget]:
    """An appending target served on a free port of 127.0.0.1 for the duration of the block."""
    state = AppendingTarget()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        clients_close()


@pytest.fixture
def appending_target() -> Iterator[AppendingTarget]:
    with appending_target_running() as state:
        yield state
