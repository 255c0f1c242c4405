"""The Notification: what a monitor hands to the recovery API, checked before it is stored.

The checks mirror masakari 22.0.0's JSON schemas (api/openstack/ha/schemas), so a
notification the API would answer with 400 is refused here, naming the field, instead of
being queued and rejected later.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from typing import Any, Mapping

COMPUTE_HOST, PROCESS, VM = "COMPUTE_HOST", "PROCESS", "VM"
TYPES = (COMPUTE_HOST, PROCESS, VM)
# Lower sorts first: a host fault pre-empts process faults, which pre-empt VM faults.
PRIORITY = {COMPUTE_HOST: 0, PROCESS: 1, VM: 2}

EVENTS = ("STARTED", "STOPPED")
HOST_STATUSES = ("NORMAL", "UNKNOWN")
CLUSTER_STATUSES = ("ONLINE", "OFFLINE")

_HOSTNAME = re.compile(r"^[a-zA-Z0-9-._]*$")
_PAYLOAD_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")


class InvalidNotification(ValueError):
    """A notification the API would refuse; ``field`` names the offending part."""

    def __init__(self, field: str, message: str):
        super().__init__(f"invalid notification: {field}: {message}")
        self.field = field
        self.message = message


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def parse_time(value: Any, field: str = "generated_time") -> dt.datetime:
    """ISO 8601 as the API accepts it (Z, offsets, naive, space separator) → naive UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidNotification(field, f"{value!r} is not an ISO 8601 date-time") from None
        if "T" not in text and " " not in text:
            raise InvalidNotification(field, f"{value!r} has no time of day")
    else:
        raise InvalidNotification(field, f"expected an ISO 8601 string, got {type(value).__name__}")
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


def _check_enum(payload: Mapping[str, str], key: str, allowed: tuple[str, ...], required: bool):
    if key not in payload:
        if required:
            raise InvalidNotification(f"payload.{key}", "is required")
        return
    if payload[key] not in allowed:
        raise InvalidNotification(f"payload.{key}",
                                  f"{payload[key]!r} is not one of {', '.join(allowed)}")


def _check_only(payload: Mapping[str, str], allowed: tuple[str, ...]):
    extra = sorted(set(payload) - set(allowed))
    if extra:
        raise InvalidNotification(f"payload.{extra[0]}",
                                  f"unexpected key (allowed: {', '.join(allowed)})")


def _check_payload(ntype: str, payload: Any) -> None:
    if not isinstance(payload, Mapping):
        raise InvalidNotification("payload", f"expected an object, got {type(payload).__name__}")
    for key, value in payload.items():
        if not isinstance(key, str) or not _PAYLOAD_KEY.match(key):
            raise InvalidNotification(f"payload.{key}", "key has characters the API refuses")
        if not isinstance(value, str):
            raise InvalidNotification(f"payload.{key}",
                                      f"expected a string, got {type(value).__name__}")
        if len(value) > 255:
            raise InvalidNotification(f"payload.{key}", "longer than 255 characters")
    if ntype == COMPUTE_HOST:
        _check_only(payload, ("event", "host_status", "cluster_status"))
        _check_enum(payload, "event", EVENTS, True)
        _check_enum(payload, "host_status", HOST_STATUSES, False)
        _check_enum(payload, "cluster_status", CLUSTER_STATUSES, False)
    elif ntype == PROCESS:
        _check_only(payload, ("event", "process_name"))
        _check_enum(payload, "event", EVENTS, True)
        if not payload.get("process_name"):
            raise InvalidNotification("payload.process_name", "is required and not empty")
    else:
        _check_only(payload, ("event", "instance_uuid", "vir_domain_event"))
        for key in ("event", "instance_uuid", "vir_domain_event"):
            if not payload.get(key):
                raise InvalidNotification(f"payload.{key}", "is required and not empty")
        import uuid  # here: it imports platform, and the alert agent's notify has no VM

        try:
            uuid.UUID(payload["instance_uuid"])
        except ValueError:
            raise InvalidNotification("payload.instance_uuid",
                                      f"{payload['instance_uuid']!r} is not a UUID") from None


@dataclasses.dataclass(frozen=True)
class Notification:
    type: str
    hostname: str
    generated_time: dt.datetime  # naive UTC
    payload: Mapping[str, str]

    def __post_init__(self):
        if self.type not in TYPES:
            raise InvalidNotification("type", f"{self.type!r} is not one of {', '.join(TYPES)}")
        if not isinstance(self.hostname, str) or not 1 <= len(self.hostname) <= 255:
            raise InvalidNotification("hostname", "must be 1 to 255 characters")
        if not _HOSTNAME.match(self.hostname):
            raise InvalidNotification("hostname",
                                      f"{self.hostname!r} has characters outside [a-zA-Z0-9-._]")
        object.__setattr__(self, "generated_time", parse_time(self.generated_time))
        _check_payload(self.type, self.payload)
        object.__setattr__(self, "payload", dict(sorted(self.payload.items())))

    @classmethod
    def create(cls, type: str, hostname: str, payload: Mapping[str, str],
               generated_time: dt.datetime | str | None = None) -> "Notification":
        return cls(type, hostname, utcnow() if generated_time is None else generated_time,
                   payload)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Notification":
        """From the API's body form; unknown or missing keys are named."""
        if not isinstance(data, Mapping):
            raise InvalidNotification("notification", "expected an object")
        keys = ("type", "hostname", "generated_time", "payload")
        for key in keys:
            if key not in data:
                raise InvalidNotification(key, "is required")
        extra = sorted(set(data) - set(keys))
        if extra:
            raise InvalidNotification(extra[0], "unexpected key")
        return cls(data["type"], data["hostname"], data["generated_time"], data["payload"])

    @property
    def priority(self) -> int:
        return PRIORITY[self.type]

    @property
    def time_text(self) -> str:
        return self.generated_time.isoformat(timespec="microseconds")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "hostname": self.hostname,
                "generated_time": self.time_text, "payload": dict(self.payload)}

    def dedup_key(self) -> str:
        """Identity for local deduplication: type, hostname and payload (not the time)."""
        blob = json.dumps([self.type, self.hostname, self.payload], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def order_key(self) -> str:
        """What must be delivered in order: one VM, one process, or one host."""
        if self.type == VM:
            return f"VM|{self.hostname}|{self.payload['instance_uuid']}"
        if self.type == PROCESS:
            return f"PROCESS|{self.hostname}|{self.payload['process_name']}"
        return f"COMPUTE_HOST|{self.hostname}"

    def subject(self) -> dict[str, str]:
        """Journal fields that say what the notification is about."""
        fields = {"NOTIFICATION_TYPE": self.type, "HOSTNAME": self.hostname,
                  "EVENT": self.payload.get("event", "")}
        if self.type == VM:
            fields["INSTANCE_UUID"] = self.payload["instance_uuid"]
        elif self.type == PROCESS:
            fields["PROCESS_NAME"] = self.payload["process_name"]
        else:
            fields["PEER_HOST"] = self.hostname
        return fields
