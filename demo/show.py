"""What the demo prints: numbered steps, bounded waits for the API, the API's table and the
outbox's history. Kept apart so __main__ reads as the story."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import cli, wait_for


class Step:
    def __init__(self):
        self.notes: list[str] = []
        self.ok = True


class Steps:
    """`with steps("starting X") as s:` prints `N. starting X ... ok (s.notes)`, or FAILED
    when the block raised or set `s.ok = False`."""

    def __init__(self):
        self.n = 0

    @contextmanager
    def __call__(self, text: str):
        self.n += 1
        print(f"{self.n}. {text} ...", end=" ", flush=True)
        step = Step()
        try:
            yield step
        except BaseException:
            print("FAILED", flush=True)
            raise
        notes = f" ({'; '.join(step.notes)})" if step.notes else ""
        print(("ok" if step.ok else "FAILED") + notes, flush=True)


def matches(n: dict, type_: str, payload: dict) -> bool:
    return n["type"] == type_ and all(n["payload"].get(k) == v for k, v in payload.items())


def wait_stored(lab, type_: str, payload: dict, log: Path, timeout: float = 30.0,
                host: str | None = None) -> bool:
    """Until the API stored a matching notification; False (and why) after `timeout` s."""
    def stored():
        rows = (lab.topo.a.run(lab.topo.api.notifications, hostname=host) if host
                else lab.api_notifications())
        return any(matches(n, type_, payload) for n in rows)
    try:
        return wait_for(stored, timeout, interval=0.2, what=f"{type_} {payload}")
    except AssertionError:
        pass
    print(f"\n   timed out after {timeout:.0f} s: masakari-api has no {type_} {payload}; "
          f"last lines of {log.name}:")
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
    print("\n".join("     " + line for line in tail), flush=True)
    return False


def wait_held(conf: Path, type_: str, payload: dict, log: Path,
              timeout: float = 30.0) -> bool:
    """Until the outbox shows a matching notification held by the API (409 maintenance)."""
    def held():
        out = cli(conf, "outbox", "list", "--json", "--type", type_)
        try:
            rows = json.loads(out.stdout)
        except ValueError:
            return False
        return any(all(r.get("notification", r).get("payload", {}).get(k) == v
                       for k, v in payload.items()) and "held" in json.dumps(r)
                   for r in rows)
    try:
        return wait_for(held, timeout, interval=0.3, what=f"{type_} {payload} held")
    except AssertionError:
        print(f"\n   timed out after {timeout:.0f} s: no held {type_} {payload} in the outbox; "
              f"last lines of {log.name}:")
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        print("\n".join("     " + line for line in tail), flush=True)
        return False


def api_table(rows: list[dict], names: dict[str, str]) -> None:
    """The API answers with source_host_uuid only; it is shown as the host's name. The
    status is masakari-engine's verdict (finished / ignored / failed)."""
    cols = ("type", "hostname", "payload", "status", "notification_uuid")
    table = [[r["type"], names.get(r.get("source_host_uuid"), r.get("source_host_uuid")),
              json.dumps(r["payload"], sort_keys=True, separators=(",", ":")),
              r["status"], r["notification_uuid"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *table)]
    for line in [cols, [("-" * w) for w in widths], *table]:
        print("   " + "  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def history(conf: Path) -> None:
    """`ha-monitors history`: what was detected, decided, sent and answered."""
    print(f"   $ ha-monitors --config-file {conf.name} history")
    out = cli(conf, "history")
    for line in (out.stdout + out.stderr).splitlines():
        print("   " + line)


FINAL = ("finished", "ignored", "failed")


def wait_final(lab, type_: str, payload: dict, host: str, timeout: float = 60.0) -> dict | None:
    """The API's row once masakari-engine is done with it (None after `timeout` s)."""
    def done():
        rows = [n for n in lab.topo.a.run(lab.topo.api.notifications, hostname=host)
                if matches(n, type_, payload)]
        return rows[-1] if rows and rows[-1]["status"] in FINAL else None
    try:
        return wait_for(done, timeout, interval=0.3, what=f"engine done with {type_}")
    except AssertionError:
        return None


def engine_actions(nova, host: str, since: float) -> str:
    """What masakari-engine asked Nova about ``host`` since ``since``, as an operator says
    it: "compute service disabled, 2 instances evacuated", "instance restarted"."""
    said = []
    calls = nova.mutations(host)
    calls = [c for c in calls if c.time >= since]
    for c in calls:
        if c.method == "PUT" and isinstance(c.body, dict) and c.body.get("status"):
            reason = c.body.get("disabled_reason")
            said.append(f"compute service {c.body['status']}"
                        + (f" ({reason!r})" if reason else ""))
    evac = [c for c in nova.evacuations(host) if c.time >= since]
    if evac:
        said.append(f"{len(evac)} instance{'s' if len(evac) > 1 else ''} evacuated")
    starts = [c for c in calls if c.action == "os-start"]
    if starts:
        said.append(f"{len(starts)} instance{'s' if len(starts) > 1 else ''} restarted")
    return ", ".join(said) or "no Nova call"
