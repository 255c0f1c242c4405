"""The webhook driver: a JSON document in the host-monitoring spec's form (id, event_type,
version, generated_time, payload) POSTed to ``[webhook] url``, optionally signed with
HMAC-SHA256 so the receiver can trust it. ``id`` is stable across retries, so a receiver
can deduplicate."""
from __future__ import annotations

import hashlib
import hmac
import json
import uuid

from monitors.drivers import Answer, Driver, classify
from monitors.notification import Notification
from monitors.secrets import mask_text
from monitors.states import Outcome

_ID_NAMESPACE = uuid.UUID("5b0f3c1e-8f0e-4c55-9a57-2a7f5b1c9e01")
SIGNATURE_HEADER = "X-HA-Signature"


def document(notification: Notification) -> dict:
    ident = uuid.uuid5(_ID_NAMESPACE, notification.dedup_key() + notification.time_text)
    return {"id": str(ident),
            "event_type": f"compute_ha.{notification.type.lower()}.{notification.payload.get('event', 'event').lower()}",
            "version": "1.0",
            "generated_time": notification.time_text,
            "payload": {"type": notification.type, "hostname": notification.hostname,
                        "payload": dict(notification.payload)}}


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDriver(Driver):
    name = "webhook"

    def __init__(self, conf):
        super().__init__(conf)
        if not conf.webhook.url:
            raise ValueError("[webhook] url: required by the webhook driver")
        import requests

        self._session = requests.Session()

    def send(self, notification: Notification) -> Answer:
        import requests

        hook = self.conf.webhook
        doc = document(notification)
        body = json.dumps(doc, sort_keys=True).encode()
        headers = {"Content-Type": "application/json"}
        if hook.secret:
            headers[SIGNATURE_HEADER] = signature(hook.secret, body)
        verify = False if hook.insecure else (hook.cafile or True)
        try:
            resp = self._session.post(hook.url, data=body, headers=headers, verify=verify,
                                      timeout=self.conf.delivery.http_timeout)
        except requests.RequestException as exc:
            # requests quotes the URL (with its ?token=...) in its messages
            return Answer(Outcome.RETRY, None, None, mask_text(f"{type(exc).__name__}: {exc}"))
        return Answer(classify(resp.status_code), resp.status_code, doc["id"],
                      mask_text(resp.text[:500]))

    def close(self) -> None:
        self._session.close()
