"""The message-bus driver: every detection as a versioned oslo.messaging notification.

OpenStack services publish their events this way, and Vitrage, Aodh or any
``oslo_messaging.get_notification_listener`` consume them. The driver goes through the
outbox like every driver (durable, ordered per subject, retried, in history), so it cannot
use ``oslo_messaging.Notifier``: the Notifier logs and swallows a failed send, and the row
would leave the outbox unsent. It builds the same message (message_id, publisher_id,
event_type, priority, payload, timestamp) and hands it to the transport, which raises when
the broker did not take it. ``message_id`` is stable across retries (the webhook document's
id), so a consumer can drop a repeat.

Message: topic ``<topic>.<priority>`` for each ``[messaging] topics``; priority WARN for
STOPPED, INFO otherwise; event_type ``compute_ha.<type>.<event>`` (lower case, as the
webhook's); payload in the versioned-object form OpenStack's versioned notifications use::

    {"compute_ha_object.name": "DetectionPayload",
     "compute_ha_object.namespace": "compute_ha_monitors",
     "compute_ha_object.version": "1.0",
     "compute_ha_object.data": {"type", "hostname", "generated_time", "payload"}}
"""
from __future__ import annotations

import datetime as dt
import logging

from monitors.drivers import Answer, Driver
from monitors.drivers.webhook import document
from monitors.notification import Notification
from monitors.states import Outcome

LOG = logging.getLogger(__name__)

PAYLOAD_NAME = "DetectionPayload"
PAYLOAD_NAMESPACE = "compute_ha_monitors"
PAYLOAD_VERSION = "1.0"


def message(notification: Notification, publisher_id: str) -> dict:
    doc = document(notification)
    event = notification.payload.get("event", "")
    return {"message_id": doc["id"],
            "publisher_id": publisher_id,
            "event_type": doc["event_type"],
            "priority": "WARN" if event == "STOPPED" else "INFO",
            "payload": {"compute_ha_object.name": PAYLOAD_NAME,
                        "compute_ha_object.namespace": PAYLOAD_NAMESPACE,
                        "compute_ha_object.version": PAYLOAD_VERSION,
                        "compute_ha_object.data": notification.to_dict()},
            "timestamp": str(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))}


class MessagingDriver(Driver):
    name = "messaging"

    def __init__(self, conf):
        super().__init__(conf)
        if not conf.messaging.transport_url:
            raise ValueError("[messaging] transport_url: required by the messaging driver")
        try:
            import oslo_messaging  # noqa: F401
        except ImportError:
            raise ValueError("the messaging driver needs oslo.messaging (install the "
                             "'messaging' extra)") from None
        self._transport = None

    def _get_transport(self):
        if self._transport is None:
            import oslo_messaging
            from oslo_config import cfg

            # oslo.messaging registers its own options: give it its own ConfigOpts so they
            # never mix with ours (and never appear as unknown groups in check-config).
            mconf = cfg.ConfigOpts()
            mconf(args=[], default_config_files=[], default_config_dirs=[])
            self._transport = oslo_messaging.get_notification_transport(
                mconf, url=self.conf.messaging.transport_url)
        return self._transport

    def send(self, notification: Notification) -> Answer:
        import oslo_messaging

        m = self.conf.messaging
        msg = message(notification, f"{m.publisher_id}.{self.conf.hostname}")
        try:
            transport = self._get_transport()
            for topic in m.topics:
                target = oslo_messaging.Target(topic=f"{topic}.{msg['priority'].lower()}")
                # The transport raises when the broker did not take the message (the public
                # Notifier would log and swallow it).
                transport._send_notification(target, {}, msg, version=2.0,
                                             retry=None if m.retry < 0 else m.retry)
        except Exception as exc:  # noqa: BLE001 - any transport failure: retry later
            self.close()
            return Answer(Outcome.RETRY, None, None, f"message bus: {type(exc).__name__}: {exc}")
        return Answer(Outcome.DELIVERED, None, msg["message_id"],
                      f"published on {', '.join(m.topics)} as {msg['event_type']}")

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.cleanup()
            except Exception:  # noqa: BLE001
                LOG.debug("closing the message bus transport failed", exc_info=True)
