"""Logging: oslo.log, plus journald structured fields on every event line.

Events are logged with ``event(logger, level, msg, *args, fields={...})``; under journald
the fields (NOTIFICATION_ID, NOTIFICATION_TYPE, INSTANCE_UUID, PROCESS_NAME, PEER_HOST,
EVENT, DELIVERY_STATE, ...) become journal fields, so ``journalctl INSTANCE_UUID=...``
answers "what happened to this VM". systemd-python is optional.
"""
from __future__ import annotations

import logging
import os
import sys

from oslo_log import log as oslo_logging

try:  # optional: the daemons run where systemd-python is missing
    from systemd import journal
except ImportError:  # pragma: no cover - depends on the host
    journal = None

_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


def event(logger: logging.Logger, level: int, msg: str, *args, fields: dict | None = None):
    logger.log(level, msg, *args,
               extra={"journal_fields": {k.upper(): str(v) for k, v in (fields or {}).items()
                                         if v is not None and v != ""}})


class JournalFieldsHandler(logging.Handler):
    """Like oslo.log's OSJournalHandler, but sends our event fields too (and does not
    overwrite PROCESS_NAME with Python's process name)."""

    def __init__(self, identifier: str):
        super().__init__()
        self.identifier = identifier

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "PRIORITY": _SYSLOG_PRIORITY.get(record.levelname, 7),
                "SYSLOG_IDENTIFIER": self.identifier,
                "LOGGER_NAME": record.name,
                "CODE_FILE": record.pathname, "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName, "THREAD_NAME": record.threadName,
            }
            if record.exc_info:
                fields["EXCEPTION_INFO"] = logging.Formatter().formatException(record.exc_info)
            fields.update(getattr(record, "journal_fields", {}) or {})
            journal.send(self.format(record), **fields)
        except Exception:  # noqa: BLE001
            self.handleError(record)


class MaskSecrets(logging.Filter):
    """Last line of defence: any URL a log line quotes (a library's message, an exception)
    loses its password and query values (monitors.secrets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from monitors.secrets import mask_text

        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's own problem
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def register(conf) -> None:
    oslo_logging.register_options(conf)


def setup(conf, identifier: str) -> None:
    """oslo.log setup; under systemd (JOURNAL_STREAM set) or with use_journal, log to the
    journal with fields instead of plain stderr lines."""
    want_journal = journal is not None and (
        conf.use_journal or "JOURNAL_STREAM" in os.environ)
    use_journal = conf.use_journal
    if use_journal and journal is None:
        print(f"{identifier}: use_journal is set but systemd-python is missing; logging to "
              "stderr", file=sys.stderr)
        conf.set_override("use_journal", False)
    if want_journal:
        conf.set_override("use_journal", False)
        conf.set_override("use_stderr", False)
    oslo_logging.setup(conf, identifier)
    if want_journal:
        root = logging.getLogger()
        for handler in list(root.handlers):  # oslo.log's stdout fallback: not twice
            if type(handler) is logging.StreamHandler:
                root.removeHandler(handler)
        root.addHandler(JournalFieldsHandler(identifier))
    for handler in logging.getLogger().handlers:
        handler.addFilter(MaskSecrets())
    for noisy in ("stevedore", "keystoneauth", "openstack", "urllib3", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
