"""The process list: masakari-monitors' YAML format, validated with file:line errors.

An unchanged masakari-monitors process_list.yaml loads as it is (empty or null commands
mean "no command"). Problems are reported per entry, naming the file, the line and the
entry, so one bad entry never hides the others: a file-level problem (unreadable, not
YAML, not a list) raises ``ProcessListError``; an entry-level problem lands in
``ProcessList.errors`` and that entry is left out.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import shutil

import yaml

from monitors import yamlfile
from monitors.notification import PROCESS, InvalidNotification, Notification

COMMAND_KEYS = ("start_command", "pre_start_command", "post_start_command",
                "restart_command", "pre_restart_command", "post_restart_command")
MATCH_MODES = ("substring", "exact", "regex")
KNOWN_KEYS = ("process_name", "run_as_root", *COMMAND_KEYS, "match", "systemd_unit",
              "restart_retries", "restart_interval", "notify_name", "freeze_timeout",
              "liveness_command")


class ProcessListError(ValueError):
    """The whole file is unusable (the previous list, if any, stays in force)."""


@dataclasses.dataclass(frozen=True)
class ProcessEntry:
    process_name: str
    line: int
    commands: dict  # key -> list[str] argv (missing/empty commands are absent)
    run_as_root: bool = False
    match: str = "substring"
    systemd_unit: str | None = None
    restart_retries: int | None = None  # None: [process] restart_retries
    restart_interval: float | None = None  # None: [process] restart_interval
    notify_name: str | None = None
    freeze_timeout: float | None = None  # None: [processmonitor] freeze_timeout; 0: off
    liveness_command: list[str] | None = None  # fails (or hangs) → counts as frozen

    @property
    def payload_name(self) -> str:
        """What masakari-monitors sends: the basename of process_name (or notify_name)."""
        return self.notify_name or self.process_name.split("/")[-1]

    def command(self, key: str) -> list[str] | None:
        return self.commands.get(key)

    def matches(self, argv: list[str], comm: str = "") -> bool:
        line = " ".join(argv)
        if self.match == "substring":
            return self.process_name in line
        if self.match == "regex":
            return re.search(self.process_name, line) is not None
        exe = argv[0] if argv else ""
        return self.process_name in (line, exe, exe.rsplit("/", 1)[-1], comm)


@dataclasses.dataclass
class ProcessList:
    path: str
    entries: list[ProcessEntry]
    errors: list[str]
    warnings: list[str]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping and of each of its keys."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        mapping["__lines__"] = {getattr(k, "value", None): k.start_mark.line + 1
                                for k, _ in node.value}
        return mapping


def _parse_command(value, where: str, errors: list[str]) -> list[str] | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.append(f"{where}: expected a command string, got {type(value).__name__}")
        return None
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        errors.append(f"{where}: cannot split {value!r}: {exc}")
        return None
    return argv or None


# One pidfd, a /proc scan entry and a restart policy per process: a compute node runs a
# handful of services; thousands of entries mean a wrong file (or a generated one gone mad).
MAX_ENTRIES = 200
MAX_BYTES = 1 << 20


def load(path: str, hostname: str = "localhost") -> ProcessList:
    """Read and validate ``path``; raise ProcessListError when the file itself is unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ProcessListError(f"{path}: cannot read the process list: {why}") from None
    if len(text) > MAX_BYTES:
        raise ProcessListError(f"{path}: over {MAX_BYTES} bytes: not a process list (a "
                               f"compute node watches a handful of services)")
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        line, what = yamlfile.problem(exc)
        where = f"{path}:{line}" if line else path
        raise ProcessListError(f"{where}: not valid YAML: {what}") from None
    if doc is None:
        doc = []
    if not isinstance(doc, list):
        raise ProcessListError(f"{path}:1: expected a YAML list of processes, got "
                               f"{type(doc).__name__}")
    if len(doc) > MAX_ENTRIES:
        line = doc[MAX_ENTRIES].get("__line__", 1) if isinstance(doc[MAX_ENTRIES], dict) else 1
        raise ProcessListError(f"{path}:{line}: {len(doc)} processes listed, at most "
                               f"{MAX_ENTRIES} are watched (is this the right file?)")
    result = ProcessList(path, [], [], [])
    seen: dict[str, int] = {}
    reported: dict[str, int] = {}  # payload name (what Masakari sees) -> first line
    for index, item in enumerate(doc, 1):
        entry = _entry(path, index, item, hostname, result)
        if entry is None:
            continue
        if entry.process_name in seen:
            result.errors.append(
                f"{path}:{entry.line}: entry {index} ({entry.process_name!r}): duplicate "
                f"process_name (first at line {seen[entry.process_name]}); left out")
            continue
        seen[entry.process_name] = entry.line
        twin = reported.get(entry.payload_name)
        if twin is not None:
            result.warnings.append(
                f"{path}:{entry.line}: entry {index} ({entry.process_name!r}) reports as "
                f"{entry.payload_name!r}, as the entry at line {twin} does: Masakari, the "
                "history and hostmonitor's compute column cannot tell the two apart (one's "
                "'running' hides the other's failure); give one a notify_name")
        reported.setdefault(entry.payload_name, entry.line)
        result.entries.append(entry)
    return result


def _entry(path: str, index: int, item, hostname: str, result: ProcessList):
    if not isinstance(item, dict):
        result.errors.append(f"{path}: entry {index}: expected a mapping with process_name, "
                             f"got {type(item).__name__}; left out")
        return None
    line = item.pop("__line__")
    lines = item.pop("__lines__")
    name = item.get("process_name")
    label = f"entry {index} ({name!r})" if name else f"entry {index}"
    errors: list[str] = []

    def where(key=None):
        return f"{path}:{lines.get(key, line)}: {label}" + (f": {key}" if key else "")

    if not isinstance(name, str) or not name.strip():
        errors.append(f"{where('process_name' if 'process_name' in item else None)}: "
                      "process_name is required (a non-empty string)")
    for key in item:
        if key not in KNOWN_KEYS:
            result.warnings.append(f"{where(key)}: unknown key, ignored (known: "
                                   f"{', '.join(KNOWN_KEYS)})")
    commands = {}
    for key in COMMAND_KEYS:
        argv = _parse_command(item.get(key), where(key), errors)
        if argv:
            commands[key] = argv
            if shutil.which(argv[0]) is None:
                result.warnings.append(f"{where(key)}: {argv[0]!r} is not an executable "
                                       "found now; running it will fail")
    run_as_root = item.get("run_as_root", False)
    if run_as_root is None:
        run_as_root = False
    if not isinstance(run_as_root, bool):
        errors.append(f"{where('run_as_root')}: expected true or false, got {run_as_root!r}")
    match = item.get("match") or "substring"
    if match not in MATCH_MODES:
        errors.append(f"{where('match')}: {match!r} is not one of {', '.join(MATCH_MODES)}")
    elif match == "regex" and isinstance(name, str):
        try:
            re.compile(name)
        except re.error as exc:
            errors.append(f"{where('process_name')}: not a valid regular expression: {exc}")
    unit = item.get("systemd_unit")
    if unit is not None and (not isinstance(unit, str) or not unit.strip()):
        errors.append(f"{where('systemd_unit')}: expected a unit name")
        unit = None
    if unit:
        commands.setdefault("start_command", ["systemctl", "start", unit])
        commands.setdefault("restart_command", ["systemctl", "restart", unit])
    retries = item.get("restart_retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or retries < 0):
        errors.append(f"{where('restart_retries')}: expected an integer >= 0, got {retries!r}")
    interval = item.get("restart_interval")
    if interval is not None and (isinstance(interval, bool)
                                 or not isinstance(interval, (int, float)) or interval < 0):
        errors.append(f"{where('restart_interval')}: expected seconds >= 0, got {interval!r}")
    freeze = item.get("freeze_timeout")
    if freeze is not None and (isinstance(freeze, bool)
                               or not isinstance(freeze, (int, float)) or freeze < 0):
        errors.append(f"{where('freeze_timeout')}: expected seconds >= 0 (0: off), got "
                      f"{freeze!r}")
    liveness = _parse_command(item.get("liveness_command"), where("liveness_command"),
                              errors)
    if liveness and shutil.which(liveness[0]) is None:
        result.warnings.append(f"{where('liveness_command')}: {liveness[0]!r} is not an "
                               "executable found now; every check will fail (the process "
                               "will be restarted as frozen)")
    notify_name = item.get("notify_name")
    if notify_name is not None and not isinstance(notify_name, str):
        errors.append(f"{where('notify_name')}: expected a string")
    if errors:
        result.errors.extend(e + "; entry left out" for e in errors)
        return None
    entry = ProcessEntry(process_name=name, line=line, commands=commands,
                         run_as_root=run_as_root, match=match, systemd_unit=unit,
                         restart_retries=retries, restart_interval=interval,
                         notify_name=notify_name, freeze_timeout=freeze,
                         liveness_command=liveness)
    try:  # the name must be one the API accepts, or every STOPPED would be refused
        Notification.create(PROCESS, hostname, {"event": "STOPPED",
                                                "process_name": entry.payload_name})
    except InvalidNotification as exc:
        result.errors.append(f"{where('notify_name' if notify_name else 'process_name')}: "
                             f"{exc}; entry left out")
        return None
    return entry
