"""The optional Prometheus endpoint of a daemon (``[metrics] bind``).

What an operator sees is read at scrape time from the outbox and the sources' own
``health()``, never from a second bookkeeping that could drift from them. Only inherently
event-stream facts (events detected, delivery answers, delivery latency) are counted in
process. prometheus-client is an optional extra: without it the counters are no-ops and
``[metrics] bind`` is refused by ``config.problems()``.
"""
from __future__ import annotations

import ipaddress
import logging
import time

from monitors.history import ReadModel

try:
    import prometheus_client
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the `metrics` extra is not installed
    prometheus_client = None

LOG = logging.getLogger(__name__)

AVAILABLE = prometheus_client is not None
PREFIX = "ha_monitors_"
# Detection → acknowledgement: milliseconds when the API is up, minutes during an outage.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                   300, 600, 1800, 3600)


def parse_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); ValueError says what is wrong."""
    value = value.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: expected [IPv6]:PORT, e.g. [::1]:9461")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:9461")
        if ":" in host:
            raise ValueError(f"{value!r}: an IPv6 address goes in brackets, e.g. [::1]:9461")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port {port!r} is not a number from 1 to 65535")
    return host, int(port)


# -- event streams, counted in process ------------------------------------------------------
if AVAILABLE:
    # The *_created series double the output and tell nothing process_start_time doesn't.
    prometheus_client.disable_created_metrics()
    # registry=None: each daemon's registry (built in serve()) adopts them.
    EVENTS = prometheus_client.Counter(
        PREFIX + "events_detected", "Detections handed to the outbox, by daemon, source, "
        "notification type and whether they were queued or a duplicate of a pending one.",
        ["daemon", "source", "type", "outcome"], registry=None)
    ANSWERS = prometheus_client.Counter(
        PREFIX + "delivery_answers", "Answers of recipients to delivery attempts, by driver, "
        "outcome and HTTP status code ('none' when the recipient was not reached).",
        ["driver", "outcome", "code"], registry=None)
    LATENCY = prometheus_client.Histogram(
        PREFIX + "delivery_latency_seconds", "Time from detection to acknowledgement by the "
        "recipient (delivered or duplicate), by driver.", ["driver"],
        buckets=LATENCY_BUCKETS, registry=None)


def event_detected(source: str, type_: str, queued) -> None:
    """``source`` is the outbox's ``daemon/source``, split into the labels source_up has.
    queued: True, False (duplicate) or an outcome name (``held``, ``refused``)."""
    if AVAILABLE:
        daemon, _, name = source.rpartition("/")
        outcome = queued if isinstance(queued, str) else "queued" if queued else "duplicate"
        EVENTS.labels(daemon, name, type_, outcome).inc()


def delivery_answered(driver: str, outcome: str, status: int | None,
                      created_at: float) -> None:
    if not AVAILABLE:
        return
    ANSWERS.labels(driver, outcome, str(status) if status is not None else "none").inc()
    if outcome in ("delivered", "duplicate"):
        LATENCY.labels(driver).observe(max(time.time() - created_at, 0.0))


# -- state, read at scrape time -------------------------------------------------------------
class ServiceCollector:
    """Reads a running MonitorService (its outbox, sources and emitters) on each scrape."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        svc = self.service
        yield from self._outbox(svc.outbox)
        held = svc.backlog.state()
        yield GaugeMetricFamily(PREFIX + "outbox_writable", "1 if this daemon's last write "
                                "into the outbox succeeded, 0 while it holds detections in "
                                "memory because the outbox cannot take them (disk full, "
                                "read-only, I/O error).", value=1.0 if held["writable"] else 0.0)
        yield GaugeMetricFamily(PREFIX + "detections_held", "Detections waiting in this "
                                "daemon's memory for the outbox to take them (0 normally).",
                                value=held["held"])
        up = GaugeMetricFamily(PREFIX + "source_up", "1 if the source is connected to what "
                               "it watches (libvirt, netlink, etcd, ...) and working, else 0.",
                               labels=["daemon", "source"])
        for name, health in svc.health().items():
            up.add_metric([svc.name, name], 1.0 if health.ok else 0.0)
        yield up
        last = GaugeMetricFamily(PREFIX + "last_event_timestamp_seconds", "Unix time of the "
                                 "last detection a source handed over (absent: none yet).",
                                 labels=["daemon", "source"])
        for name, emitter in list(svc.emitters.items()):
            if emitter.last_event:
                last.add_metric([svc.name, name], emitter.last_event)
        yield last

    def _outbox(self, outbox):
        readable = GaugeMetricFamily(PREFIX + "outbox_up", "1 if the outbox answered this "
                                     "scrape, else 0 (the outbox metrics are then absent).")
        if outbox is None:
            readable.add_metric([], 0.0)
            yield readable
            return
        try:
            read = ReadModel(outbox)
            counts, depth, age = read.counts(), read.depth(), read.oldest_pending_age()
        except Exception as exc:  # noqa: BLE001 - a scrape must never break the daemon
            LOG.warning("metrics: cannot read the outbox: %s", exc)
            readable.add_metric([], 0.0)
            yield readable
            return
        readable.add_metric([], 1.0)
        yield readable
        states = GaugeMetricFamily(PREFIX + "outbox_notifications", "Notifications in this "
                                   "host's outbox by state (pending, delivered, rejected, "
                                   "expired, superseded).", labels=["state"])
        for state, n in sorted(counts.items()):
            states.add_metric([state], n)
        yield states
        yield GaugeMetricFamily(PREFIX + "outbox_depth", "Notifications not yet delivered "
                                "(state pending).", value=depth)
        yield GaugeMetricFamily(PREFIX + "outbox_oldest_pending_age_seconds", "Age of the "
                                "oldest pending notification; 0 when none is pending.",
                                value=age)
        yield from self._recoveries(read)

    @staticmethod
    def _recoveries(read):
        """What the engine did with delivered notifications (monitors/follow.py)."""
        from monitors.follow import needs_attention

        try:
            counts = read.recovery_counts()
            pending_ack = sum(1 for r in read.recovery_list(since=time.time() - 86400)
                              if needs_attention(r["status"], r["ended"]) == "critical"
                              and not r["acknowledged"])
        except Exception as exc:  # noqa: BLE001 - a scrape must never break the daemon
            LOG.warning("metrics: cannot read the recovery follow-ups: %s", exc)
            return
        family = GaugeMetricFamily(PREFIX + "recovery_notifications", "Delivered "
                                   "notifications in this host's outbox whose recovery is "
                                   "followed, by notification type and the engine's status "
                                   "last seen (new, running, error, finished, failed, "
                                   "ignored; unknown: none read yet).",
                                   labels=["type", "status"])
        for (type_, status), n in sorted(counts.items()):
            family.add_metric([type_, status], n)
        yield family
        yield GaugeMetricFamily(PREFIX + "recovery_failures_unacknowledged", "Recoveries of "
                                "the last 24 h that ended failed (or error) and no operator "
                                "acknowledged yet (ha-monitors outbox ack): what makes "
                                "status CRITICAL.", value=pending_ack)


class Endpoint:
    """The HTTP server of one daemon; ``close()`` frees its port."""

    def __init__(self, bind: str, server):
        self.bind = bind
        self._server = server

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(bind: str, service) -> Endpoint | None:
    """Start the endpoint for ``service``; None (logged) when off or when it cannot start —
    detection matters more than metrics, so that never stops the daemon."""
    if not bind:
        return None
    if not AVAILABLE:
        LOG.error("[metrics] bind = %s but prometheus-client is not installed (the "
                  "'metrics' extra); running without metrics", bind)
        return None
    try:
        host, port = parse_bind(bind)
    except ValueError as exc:
        LOG.error("[metrics] bind: %s; running without metrics", exc)
        return None
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.ProcessCollector(registry=registry)
    for collector in (EVENTS, ANSWERS, LATENCY, ServiceCollector(service)):
        registry.register(collector)
    try:
        server, _thread = prometheus_client.start_http_server(port, host, registry=registry)
    except OSError as exc:
        LOG.error("[metrics] bind = %s: cannot listen (%s); is another daemon using this "
                  "port? Each daemon needs its own. Running without metrics.", bind, exc)
        return None
    LOG.info("metrics: serving http://%s/metrics", bind)
    return Endpoint(bind, server)


def reload(endpoint: Endpoint | None, bind: str, service) -> Endpoint | None:
    """Apply a reloaded ``[metrics] bind``: keep the endpoint if it did not change."""
    if endpoint is not None and endpoint.bind == bind:
        return endpoint
    if endpoint is not None:
        endpoint.close()
    return serve(bind, service)
