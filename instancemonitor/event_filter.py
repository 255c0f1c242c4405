"""Which libvirt domain events become VM notifications: a table, not code.

The default is masakari-monitors' table plus LIFECYCLE CRASHED (guest panic) and
STOPPED_CRASHED. An operator replaces or extends it with a YAML file
(``[instancemonitor] event_filter_file``)::

    mode: extend            # or: replace
    events:                 # event-ID name -> vir_domain_event names it lets through
      LIFECYCLE: [SUSPENDED_PAUSED]
      WATCHDOG: [WATCHDOG_INJECTNMI]
    drop:                   # (extend only) names taken out of the default
      LIFECYCLE: [STOPPED_SHUTDOWN]

Names are exactly what goes into the payload: ``vir_domain_event`` is ``<EVENT>_<DETAIL>``
for LIFECYCLE, ``WATCHDOG_<ACTION>``, ``IO_ERROR_<ACTION>``, and ``UNKNOWN`` for the IDs
that carry no detail (REBOOT, IO_ERROR_REASON, CONTROL_ERROR). ``"*"`` lets every detail
of an event ID through. Errors name the file and line (yaml node marks).

``map`` (either mode; nothing is mapped by default) sends an event that passed the filter
as another one::

    map:
      LIFECYCLE:
        CRASHED_PANICKED: STOPPED_FAILED          # same event ID
        STOPPED_CRASHED: LIFECYCLE/STOPPED_FAILED # or EVENT_ID/NAME

Why: masakari-engine 22 recovers an instance only for LIFECYCLE STOPPED_FAILED,
IO_ERROR IO_ERROR_REPORT and QEMU_GUEST_AGENT_ERROR STOPPED_FAILED; a guest panic
(CRASHED_*, STOPPED_CRASHED) is recorded and ignored (docs/recovery.md). An operator who
wants a panicked guest restarted maps it to STOPPED_FAILED. The decision in the outbox
history records the mapping (``mapped: {from, to, rule}``), so the payload Masakari saw is
never a mystery.
"""
from __future__ import annotations

import dataclasses

import yaml

from monitors import yamlfile

from instancemonitor.libvirt_constants import EVENT_IDS, KNOWN, WATCHDOG_ACTIONS

DEFAULT_TABLE: dict[str, frozenset[str]] = {
    "LIFECYCLE": frozenset({"SUSPENDED_IOERROR", "SUSPENDED_WATCHDOG", "SUSPENDED_API_ERROR",
                            "STOPPED_SHUTDOWN", "STOPPED_DESTROYED", "STOPPED_FAILED",
                            "SHUTDOWN_FINISHED",
                            # ours, not in masakari-monitors:
                            "STOPPED_CRASHED", "CRASHED_PANICKED", "CRASHED_CRASHLOADED"}),
    "REBOOT": frozenset({"UNKNOWN"}),
    "WATCHDOG": frozenset({f"WATCHDOG_{a}" for a in WATCHDOG_ACTIONS if a != "INJECTNMI"}),
    "IO_ERROR": frozenset({"IO_ERROR_NONE", "IO_ERROR_PAUSE", "IO_ERROR_REPORT"}),
    "IO_ERROR_REASON": frozenset({"UNKNOWN"}),
    "CONTROL_ERROR": frozenset({"UNKNOWN"}),
}

# Event IDs always registered (the list), whether or not the table names them.
ALWAYS_REGISTERED = ("LIFECYCLE", "REBOOT", "WATCHDOG", "IO_ERROR", "IO_ERROR_REASON",
                     "CONTROL_ERROR")
# Event IDs a filter file may name. Those outside ALWAYS_REGISTERED carry no decoded
# detail: their vir_domain_event is UNKNOWN (use "UNKNOWN" or "*").
# GRAPHICS callbacks carry non-domain arguments libvirt-python dispatches differently;
# masakari-monitors drops them too.
SUPPORTED = tuple(n for n in EVENT_IDS if n != "GRAPHICS")


class FilterFileError(ValueError):
    """A problem in the filter file, naming file and line."""

    def __init__(self, path: str, line: int | None, message: str):
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")
        self.path, self.line = path, line


# (event ID, name) -> (event ID, name, line of the rule in the file)
Mapping = dict[tuple[str, str], tuple[str, str, "int | None"]]


@dataclasses.dataclass(frozen=True)
class EventFilter:
    table: dict[str, frozenset[str]]
    origin: str = "default"
    mapping: Mapping = dataclasses.field(default_factory=dict)

    def translate(self, event_id: str, name: str) -> tuple[str, str, dict | None]:
        """(event ID, vir_domain_event) to send for an event the filter let through, and
        the mapping it went through (for the decision), or None when sent as is."""
        target = self.mapping.get((event_id, name))
        if target is None:
            return event_id, name, None
        to_id, to_name, line = target
        rule = f"{self.origin}:{line}" if line else self.origin
        return to_id, to_name, {"from": f"{event_id}/{name}", "to": f"{to_id}/{to_name}",
                                "rule": rule}

    def match(self, event_id: str, name: str) -> str | None:
        """The table row that lets (event_id, name) through, or None."""
        allowed = self.table.get(event_id)
        if not allowed:
            return None
        if name in allowed:
            return f"{event_id}/{name}"
        if "*" in allowed:
            return f"{event_id}/*"
        return None

    def event_ids(self) -> list[str]:
        return sorted(set(ALWAYS_REGISTERED) | set(self.table))


def default() -> EventFilter:
    return EventFilter(dict(DEFAULT_TABLE))


def _line(node) -> int:
    return node.start_mark.line + 1


def _names(path, event_id, seq_node) -> set[str]:
    if not isinstance(seq_node, yaml.SequenceNode):
        raise FilterFileError(path, _line(seq_node),
                              f"{event_id}: expected a list of vir_domain_event names")
    out = set()
    for item in seq_node.value:
        if not isinstance(item, yaml.ScalarNode) or not item.value:
            raise FilterFileError(path, _line(item), f"{event_id}: expected a name")
        name = item.value
        if name != "*":
            known = KNOWN.get(event_id, {"UNKNOWN"})
            if name not in known:
                raise FilterFileError(path, _line(item),
                                      f"{event_id}: unknown vir_domain_event {name!r} "
                                      f"(known: {', '.join(sorted(known))})")
        out.add(name)
    return out


def _table(path, node) -> dict[str, set[str]]:
    if not isinstance(node, yaml.MappingNode):
        raise FilterFileError(path, _line(node), "expected a mapping of event ID -> list")
    out: dict[str, set[str]] = {}
    for key, value in node.value:
        event_id = key.value
        if event_id not in EVENT_IDS:
            raise FilterFileError(path, _line(key), f"unknown libvirt event ID {event_id!r}")
        if event_id not in SUPPORTED:
            raise FilterFileError(path, _line(key),
                                  f"event ID {event_id} is not supported (supported: "
                                  f"{', '.join(SUPPORTED)})")
        out.setdefault(event_id, set()).update(_names(path, event_id, value))
    return out


def parse(text: str, path: str = "<string>") -> EventFilter:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        line, what = yamlfile.problem(exc)
        raise FilterFileError(path, line, f"invalid YAML: {what}") from None
    if root is None:
        raise FilterFileError(path, None, "the file is empty")
    if not isinstance(root, yaml.MappingNode):
        raise FilterFileError(path, _line(root), "expected a mapping with 'mode' and 'events'")
    mode, events, drop, mapping = "extend", None, None, {}
    for key, value in root.value:
        if key.value == "mode":
            if value.value not in ("extend", "replace"):
                raise FilterFileError(path, _line(value),
                                      f"mode must be extend or replace, not {value.value!r}")
            mode = value.value
        elif key.value == "events":
            events = _table(path, value)
        elif key.value == "drop":
            drop = (_table(path, value), _line(key))
        elif key.value == "map":
            mapping = _mapping(path, value)
        else:
            raise FilterFileError(path, _line(key), f"unknown key {key.value!r} "
                                  "(allowed: mode, events, drop, map)")
    if mode == "replace":
        if drop:
            raise FilterFileError(path, drop[1], "'drop' only makes sense with mode: extend")
        if not events:
            raise FilterFileError(path, _line(root), "mode: replace needs a non-empty 'events'")
        table = {k: frozenset(v) for k, v in events.items()}
    else:
        merged = {k: set(v) for k, v in DEFAULT_TABLE.items()}
        for k, v in (events or {}).items():
            merged.setdefault(k, set()).update(v)
        for k, v in (drop[0] if drop else {}).items():
            merged.get(k, set()).difference_update(v)
        table = {k: frozenset(v) for k, v in merged.items() if v}
    result = EventFilter(table, origin=path, mapping=mapping)
    for (event_id, name), (_, _, line) in mapping.items():
        if not result.match(event_id, name):
            raise FilterFileError(path, line, f"map: {event_id}/{name} is not let through "
                                  "by the filter (add it to 'events')")
    return result


def _mapping(path, node) -> Mapping:
    """``map``: EVENT_ID -> {NAME: TARGET}, TARGET = NAME or EVENT_ID/NAME."""
    if not isinstance(node, yaml.MappingNode):
        raise FilterFileError(path, _line(node), "map: expected a mapping of event ID -> "
                              "{vir_domain_event: target}")
    out: Mapping = {}
    for key, value in node.value:
        event_id = key.value
        if event_id not in SUPPORTED:
            raise FilterFileError(path, _line(key), f"map: unknown or unsupported libvirt "
                                  f"event ID {event_id!r}")
        if not isinstance(value, yaml.MappingNode):
            raise FilterFileError(path, _line(value), f"map: {event_id}: expected "
                                  "vir_domain_event: target pairs")
        for src, dst in value.value:
            known = KNOWN.get(event_id, {"UNKNOWN"})
            if src.value not in known:
                raise FilterFileError(path, _line(src), f"map: {event_id}: unknown "
                                      f"vir_domain_event {src.value!r}")
            if not isinstance(dst, yaml.ScalarNode) or not dst.value:
                raise FilterFileError(path, _line(dst), f"map: {event_id}/{src.value}: "
                                      "expected a target name")
            to_id, _, to_name = dst.value.rpartition("/")
            to_id = to_id or event_id
            if to_name not in KNOWN.get(to_id, ()):
                raise FilterFileError(path, _line(dst), f"map: target {to_id}/{to_name} is "
                                      "not a vir_domain_event of LIFECYCLE, WATCHDOG or "
                                      "IO_ERROR")
            out[(event_id, src.value)] = (to_id, to_name, _line(src))
    return out


def load(path: str | None) -> EventFilter:
    if not path:
        return default()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise FilterFileError(path, None, f"cannot read: {exc.strerror}") from None
    return parse(text, path)
