"""Delivery drivers: one file per recipient, behind one small interface.

A driver only sends and classifies the answer; it never decides what to send or when to
retry (that is the delivery worker's job). Drivers are found through the stevedore
namespace ``compute_ha_monitors.drivers``.
"""
from __future__ import annotations

import abc
import dataclasses

from monitors.notification import Notification
from monitors.states import Outcome

NAMESPACE = "compute_ha_monitors.drivers"

# What a driver reports is an Outcome (monitors.states): delivered, duplicate,
# rejected, held, auth or retry.


@dataclasses.dataclass(frozen=True)
class Answer:
    outcome: Outcome
    status: int | None = None
    remote_id: str | None = None
    message: str = ""


def classify(status: int) -> Outcome:
    """HTTP status → outcome; shared by every HTTP driver so they agree."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 409:
        return Outcome.DUPLICATE
    if status in (401, 403):
        return Outcome.AUTH
    if status in (408, 425, 429) or status >= 500 or status < 200 or 300 <= status < 400:
        return Outcome.RETRY
    return Outcome.REJECTED


class Driver(abc.ABC):
    """Send one notification; never raise for a delivery failure, return an Answer."""

    name = "?"

    def __init__(self, conf):
        self.conf = conf

    @abc.abstractmethod
    def send(self, notification: Notification) -> Answer:
        ...

    def close(self) -> None:
        """Release connections (called on shutdown and configuration reload)."""


def load(conf, names) -> dict[str, Driver]:
    """Instantiate the named drivers; an unknown name is an error naming it."""
    from stevedore import driver as sd_driver
    from stevedore.exception import NoMatches

    out = {}
    for name in names:
        try:
            manager = sd_driver.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                              invoke_args=(conf,))
        except NoMatches:
            raise ValueError(f"[delivery] drivers: unknown driver {name!r}") from None
        out[name] = manager.driver
    return out


def available() -> list[str]:
    from stevedore import extension

    return sorted(extension.ExtensionManager(NAMESPACE).names())
