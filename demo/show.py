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


def wait_stored(lab, type_: str, payload: dict, log: Path, timeout: float = 30.0) -> bool:
    """Until the API stored a matching notification; False (and why) after `timeout` s."""
    try:
        return wait_for(lambda: any(matches(n, type_, payload)
                                    for n in lab.api_notifications()),
                        timeout, interval=0.2, what=f"{type_} {payload}")
    except AssertionError:
        pass
    print(f"\n   timed out after {timeout:.0f} s: masakari-api has no {type_} {payload}; "
          f"last lines of {log.name}:")
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
    print("\n".join("     " + line for line in tail), flush=True)
    return False


def api_table(rows: list[dict], hostname: str, host_uuid: str) -> None:
    """The API answers with source_host_uuid only; it is shown as the host's name."""
    cols = ("type", "hostname", "payload", "status", "notification_uuid")
    table = [[r["type"],
              hostname if r.get("source_host_uuid") == host_uuid else r.get("source_host_uuid"),
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
