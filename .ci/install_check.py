"""Helpers of .ci/install_check.sh, run with the clean venv's Python from the repository's root.

    target --port P --out FILE          a local target system: POST /clients stores the record (one JSON line in FILE)
    setup --target-url URL --out FILE   a flow CRM -> target for clients (systems, mapping, policy, route); the
                                        source's slug and webhook secret go to FILE
    send --hub URL --flow FILE          one Standard-Webhooks-signed client event to the hub; prints the message id
    wait-delivered --message-id N --target-log FILE --timeout S
                                        poll until the message is delivered and the target holds the record

`target` and `send` use the standard library only (they are the outside world); `setup` and `wait-delivered` use the
hub's own services and models, with the environment's settings.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENTITY = "client"
EVENT_TYPE = "client.updated"


# --- target: a local HTTP system the hub delivers to ---------------------------------------------------------------


def target(port: int, out: Path) -> None:
    lock = threading.Lock()
    records: dict[str, str] = {}  # idempotency key -> external id: a retried create is answered, not stored twice

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.startswith("/health"):
                self._reply(200, {"ok": True})
            else:
                self._reply(404, {"error": "not found"})  # no look-ups: the hub creates, then updates by id

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) or b"{}")
            if self.path.rstrip("/") != "/clients":
                self._reply(404, {"error": f"no collection {self.path}"})
                return
            key = self.headers.get("Idempotency-Key", "")
            with lock:
                created = key not in records
                if created:
                    records[key] = f"T-{len(records) + 1}"
                    with out.open("a") as log:
                        log.write(json.dumps({"idempotency_key": key, "record": payload}) + "\n")
            self._reply(201 if created else 200, {**payload, "id": records[key]})

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"target: {format % args}\n")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"target listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


# --- setup: the flow, through the hub's services ---------------------------------------------------------------------


def _django() -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    import django

    django.setup()


def setup(target_url: str, out: Path) -> None:
    _django()
    from django.db import transaction

    from connectors.services import connected_system_create
    from governance.choices import Flow
    from governance.models import SyncPolicy
    from governance.services import sync_policy_save
    from mappings.choices import Direction
    from mappings.models import CanonicalEntity, FieldRule
    from mappings.services import (
        canonical_entities_install,
        field_rule_save,
        mapping_set_create,
        mapping_set_publish,
    )
    from sync.models import Route

    reason = "install check"
    suffix = uuid.uuid4().hex[:6]
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()  # a Standard Webhooks secret, as senders hold
    canonical_entities_install()
    with transaction.atomic():
        source = connected_system_create(
            name=f"Install check CRM {suffix}",
            slug=f"ic-crm-{suffix}",
            role="crm",
            connector_type="generic_rest",
            base_url="http://127.0.0.1:9",
            settings={"auth_mode": "none"},
            webhook_secret=secret,
            reason=reason,
        )
        target_system = connected_system_create(
            name=f"Install check target {suffix}",
            slug=f"ic-target-{suffix}",
            role="erp",
            connector_type="generic_rest",
            base_url=target_url,
            settings={
                "auth_mode": "none",
                "health_path": "/health",
                "timeout_seconds": 5,
                "endpoints": {ENTITY: {"path": "/clients"}},
            },
            reason=reason,
        )
        mapping = mapping_set_create(
            name=f"{source.slug} {ENTITY} in",
            system=source,
            entity=CanonicalEntity.objects.get(name=ENTITY),
            direction=Direction.INBOUND,
        )
        for position, (target_path, source_path) in enumerate(
            [("id", "Id"), ("name", "Name"), ("status", "Status"), ("updated_at", "UpdatedAt")]
        ):
            field_rule_save(
                rule=FieldRule(
                    mapping_set=mapping, position=position, target_path=target_path, source_paths=[source_path]
                ),
                reason=reason,
            )
        mapping_set_publish(mapping_set=mapping, confirm=True)
        sync_policy_save(
            policy=SyncPolicy(
                name=f"Install check clients {suffix}",
                flow=Flow.CLIENT_MASTER,
                trigger="event",
                max_attempts=5,
                backoff_base_seconds=1,
                backoff_cap_seconds=2,
            ),
            reason=reason,
        )
        route = Route(
            name=f"{source.slug} -> {target_system.slug}",
            source_system=source,
            entity=ENTITY,
            target_system=target_system,
            flow=Flow.CLIENT_MASTER,
        )
        route.full_clean()
        route.save()
    out.write_text(json.dumps({"source": source.slug, "secret": secret}))
    out.chmod(0o600)
    print(f"flow {source.slug} -> {target_system.slug} ({target_url}) configured")


# --- send: one signed event, as a connected system would -------------------------------------------------------------


def send(hub: str, flow_file: Path) -> None:
    flow = json.loads(flow_file.read_text())
    record = {"Id": f"IC-{uuid.uuid4().hex[:8]}", "Name": "Install check client", "Status": "active"}
    record["UpdatedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = json.dumps(record)
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    # Standard Webhooks, written out here from the specification rather than imported from the hub.
    key = base64.b64decode(flow["secret"].removeprefix("whsec_"))
    signature = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest())
    # The hub's URL is this script's own http://127.0.0.1:<port>, never user input.
    request = urllib.request.Request(  # noqa: S310
        f"{hub}/api/v1/inbound/{flow['source']}/{EVENT_TYPE}/",
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{signature.decode()}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        sys.exit(f"the hub refused the event: HTTP {error.code} {error.read()[:500]!r}")
    if status != 202 or "message_id" not in answer:
        sys.exit(f"unexpected answer to the event: HTTP {status} {answer}")
    print(answer["message_id"])


# --- wait-delivered: poll the message's rows and the target ----------------------------------------------------------


def wait_delivered(message_id: int, target_log: Path, timeout: float) -> None:
    _django()
    from sync.choices import MessageStatus
    from sync.models import Delivery, DeliveryAttempt, Message

    started = time.monotonic()
    deadline = started + timeout
    last = ""
    while True:
        message = Message.objects.get(pk=message_id)
        deliveries = list(Delivery.objects.filter(message=message).values_list("status", "external_id"))
        state = f"message {message.status}, deliveries {deliveries}"
        if state != last:
            print(f"  {time.monotonic() - started:5.1f} s  {state}", flush=True)
            last = state
        received = target_log.read_text().splitlines() if target_log.exists() else []
        at_target = [json.loads(line) for line in received]
        if message.status == MessageStatus.DELIVERED and any(
            entry["record"].get("id") == message.canonical_id for entry in at_target
        ):
            print(f"delivered to the target in {time.monotonic() - started:.1f} s: {at_target[-1]}")
            return
        if message.status in (MessageStatus.FAILED, MessageStatus.DEAD) or time.monotonic() > deadline:
            attempts = DeliveryAttempt.objects.filter(delivery__message=message).values(
                "number", "outcome", "status_code", "error"
            )
            sys.exit(
                f"message {message_id} not delivered ({message.status}) after {time.monotonic() - started:.0f} s; "
                f"attempts: {list(attempts)}; the target received: {at_target}"
            )
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("target")
    command.add_argument("--port", type=int, required=True)
    command.add_argument("--out", type=Path, required=True)
    command = commands.add_parser("setup")
    command.add_argument("--target-url", required=True)
    command.add_argument("--out", type=Path, required=True)
    command = commands.add_parser("send")
    command.add_argument("--hub", required=True)
    command.add_argument("--flow", type=Path, required=True)
    command = commands.add_parser("wait-delivered")
    command.add_argument("--message-id", type=int, required=True)
    command.add_argument("--target-log", type=Path, required=True)
    command.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    if args.command == "target":
        target(args.port, args.out)
    elif args.command == "setup":
        setup(args.target_url, args.out)
    elif args.command == "send":
        send(args.hub, args.flow)
    else:
        wait_delivered(args.message_id, args.target_log, args.timeout)


if __name__ == "__main__":
    main()
