"""libvirt's enum tables, in one place, and the payload names built from them.

Values are libvirt's stable ABI (libvirt-include.h / libvirt-domain.h). They are kept here,
not read from the ``libvirt`` module, so that the event filter, the reconcile rules and
their tests work without importing libvirt.
"""
from __future__ import annotations

# virDomainEventID, by name
EVENT_IDS = {
    "LIFECYCLE": 0, "REBOOT": 1, "RTC_CHANGE": 2, "WATCHDOG": 3, "IO_ERROR": 4,
    "GRAPHICS": 5, "IO_ERROR_REASON": 6, "CONTROL_ERROR": 7, "BLOCK_JOB": 8,
    "DISK_CHANGE": 9, "TRAY_CHANGE": 10, "PMWAKEUP": 11, "PMSUSPEND": 12,
    "BALLOON_CHANGE": 13, "PMSUSPEND_DISK": 14, "DEVICE_REMOVED": 15, "BLOCK_JOB_2": 16,
    "TUNABLE": 17, "AGENT_LIFECYCLE": 18, "DEVICE_ADDED": 19, "MIGRATION_ITERATION": 20,
    "JOB_COMPLETED": 21, "DEVICE_REMOVAL_FAILED": 22, "METADATA_CHANGE": 23,
    "BLOCK_THRESHOLD": 24, "MEMORY_FAILURE": 25, "MEMORY_DEVICE_SIZE_CHANGE": 26,
}
EVENT_NAMES = {v: k for k, v in EVENT_IDS.items()}

# virDomainEventType (LIFECYCLE's ``event``), in value order, and each one's details
LIFECYCLE_EVENTS = ["DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED", "STOPPED",
                    "SHUTDOWN", "PMSUSPENDED", "CRASHED"]
DEFINED, UNDEFINED = 0, 1
LIFECYCLE_DETAILS = {
    "DEFINED": ["ADDED", "UPDATED", "RENAMED", "FROM_SNAPSHOT"],
    "UNDEFINED": ["REMOVED", "RENAMED"],
    "STARTED": ["BOOTED", "MIGRATED", "RESTORED", "FROM_SNAPSHOT", "WAKEUP", "RECREATED"],
    "SUSPENDED": ["PAUSED", "MIGRATED", "IOERROR", "WATCHDOG", "RESTORED", "FROM_SNAPSHOT",
                  "API_ERROR", "POSTCOPY", "POSTCOPY_FAILED"],
    "RESUMED": ["UNPAUSED", "MIGRATED", "FROM_SNAPSHOT", "POSTCOPY", "POSTCOPY_FAILED"],
    "STOPPED": ["SHUTDOWN", "DESTROYED", "CRASHED", "MIGRATED", "SAVED", "FAILED",
                "FROM_SNAPSHOT"],
    "SHUTDOWN": ["FINISHED", "GUEST", "HOST"],
    "PMSUSPENDED": ["MEMORY", "DISK"],
    "CRASHED": ["PANICKED", "CRASHLOADED"],
}
# virDomainEventWatchdogAction, virDomainEventIOErrorAction
WATCHDOG_ACTIONS = ["NONE", "PAUSE", "RESET", "POWEROFF", "SHUTDOWN", "DEBUG", "INJECTNMI"]
IO_ERROR_ACTIONS = ["NONE", "PAUSE", "REPORT"]

# Every vir_domain_event name each event ID can produce (the others give "UNKNOWN").
KNOWN = {
    "LIFECYCLE": {f"{e}_{d}" for e, ds in LIFECYCLE_DETAILS.items() for d in ds},
    "WATCHDOG": {f"WATCHDOG_{a}" for a in WATCHDOG_ACTIONS},
    "IO_ERROR": {f"IO_ERROR_{a}" for a in IO_ERROR_ACTIONS},
}

# virDomainState
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)
STATE_NAMES = {NOSTATE: "nostate", RUNNING: "running", BLOCKED: "blocked", PAUSED: "paused",
               SHUTDOWN: "shutdown", SHUTOFF: "shutoff", CRASHED: "crashed",
               PMSUSPENDED: "pmsuspended"}
# States in which a domain is alive: leaving one unobserved is what reconcile reports.
ACTIVE = {"running", "blocked", "paused", "shutdown", "nostate", "pmsuspended"}

# virDomainShutoffReason -> the STOPPED detail it implies (None: an intended operation)
SHUTOFF_REASON = {0: "STOPPED_FAILED", 1: "STOPPED_SHUTDOWN", 2: "STOPPED_DESTROYED",
                  3: "STOPPED_CRASHED", 4: None, 5: None, 6: "STOPPED_FAILED", 7: None,
                  8: "STOPPED_FAILED"}
# virDomainPausedReason -> the SUSPENDED detail worth reporting
PAUSED_REASON = {5: "SUSPENDED_IOERROR", 6: "SUSPENDED_WATCHDOG"}
CRASHED_PANICKED_REASON = 1  # virDomainCrashedReason

# LIFECYCLE event (virDomainEventType) -> the state name it leaves the domain in
LIFECYCLE_STATE = {2: "running", 3: "paused", 4: "running", 5: "shutoff", 6: "shutdown",
                   7: "pmsuspended", 8: "crashed"}

# virConnectCloseReason
CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client request"}


def state_name(state: int) -> str:
    return STATE_NAMES.get(state, f"state{state}")


def vir_domain_event(event_id: str, event: int, detail: int) -> str:
    """The payload's vir_domain_event name, as masakari-monitors builds it."""
    if event_id == "LIFECYCLE":
        ename = LIFECYCLE_EVENTS[event] if 0 <= event < len(LIFECYCLE_EVENTS) else None
        details = LIFECYCLE_DETAILS.get(ename or "", [])
        if ename is None:
            return f"UNKNOWN_EVENT_{event}_{detail}"
        if not 0 <= detail < len(details):
            return f"{ename}_UNKNOWN_DETAIL_{detail}"
        return f"{ename}_{details[detail]}"
    if event_id == "WATCHDOG":
        return (f"WATCHDOG_{WATCHDOG_ACTIONS[event]}" if 0 <= event < len(WATCHDOG_ACTIONS)
                else f"WATCHDOG_UNKNOWN_{event}")
    if event_id == "IO_ERROR":
        return (f"IO_ERROR_{IO_ERROR_ACTIONS[event]}" if 0 <= event < len(IO_ERROR_ACTIONS)
                else f"IO_ERROR_UNKNOWN_{event}")
    return "UNKNOWN"
