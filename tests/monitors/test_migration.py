"""Migration from masakari-monitors: docs/migration.md's option table is checked against
the incumbent's real option list and our code; ignored options warn (check-config and
daemon start) naming file and line; the generated sample and reference match the code;
and what the doc says about running both side by side holds against the real API.

tests/monitors/data/masakarimonitors-options.json is masakari-monitors 22.0.0's own
generator output (`make test` does not build .venv-mm; `make bench` does). Regenerate with:
  .venv-mm/bin/oslo-config-generator --namespace masakarimonitors.conf --format json \
    | python3 -m json.tool --indent 1 > tests/monitors/data/masakarimonitors-options.json
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import signal
from pathlib import Path

import pytest

from monitors import config
from tests.helpers import cli, deliverer, wait_for, write_conf

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
STATUSES = {"same", "default-changed", "renamed", "new", "ignored-with-warning"}


def _tool():
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


def options(generated: dict) -> dict[tuple[str, str], dict]:
    return {(g, o["dest"]): o for g, v in generated["options"].items() for o in v["opts"]}


@pytest.fixture(scope="module")
def mm() -> dict[tuple[str, str], dict]:
    return options(json.loads((DATA / "masakarimonitors-options.json").read_text()))


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> dict[tuple[str, str], dict]:
    out = tmp_path_factory.mktemp("ours") / "ours.json"
    TOOL.generate("json", out)
    return options(json.loads(out.read_text()))


@pytest.fixture(scope="module")
def table() -> list[tuple[str, str, str]]:
    """(group, option, status) of every row of docs/migration.md's option table."""
    rows = []
    for line in (ROOT / "docs" / "migration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[2] not in STATUSES:
            continue
        for name in re.findall(r"`([^`]+)`", cells[1]):
            rows.append((cells[0], name, cells[2]))
    assert len(rows) > 60, "the option table of docs/migration.md was not found"
    return rows


def test_every_masakari_monitors_option_is_in_the_table(mm, table):
    documented = {(g, o) for g, o, _ in table}
    missing = sorted(set(mm) - documented)
    assert not missing, f"add these masakari-monitors options to docs/migration.md: {missing}"
    assert len({(g, o) for g, o, s in table if s != "new"}) == len(
        [r for r in table if r[2] != "new"]), "an option appears twice in the table"


def test_same_and_renamed_rows_are_registered_by_us_with_the_same_default(mm, ours, table):
    old_names = {(d["group"] or g, d["name"]) for (g, _), o in ours.items()
                 for d in o["deprecated_opts"]}
    for group, name, status in table:
        if status == "same":
            assert (group, name) in ours, f"[{group}] {name} is marked same but not registered"
            theirs, mine = mm.get((group, name)), ours[(group, name)]
            if theirs and theirs["sample_default"] is None:  # not the machine's hostname
                assert mine["default"] == theirs["default"], f"[{group}] {name}: default"
        elif status == "default-changed":  # same name and meaning, a safer default
            assert (group, name) in ours, f"[{group}] {name} is marked so but not registered"
            assert ours[(group, name)]["default"] != mm[(group, name)]["default"], \
                f"[{group}] {name}: marked default-changed, but the default is the same"
        elif status == "renamed":
            assert (group, name) in old_names, f"[{group}] {name}: not an old name of ours"


def test_ignored_rows_are_exactly_the_options_that_warn(table):
    documented = {(g, o) for g, o, s in table if s == "ignored-with-warning"}
    assert documented == set(config.IGNORED), (
        f"only in docs/migration.md: {sorted(documented - set(config.IGNORED))}; "
        f"only in monitors/config.py IGNORED: {sorted(set(config.IGNORED) - documented)}")


def test_new_rows_are_ours_only_and_every_new_group_is_listed(mm, ours, table):
    mm_groups = {g for g, _ in mm} | {"DEFAULT"}
    new = {(g, o) for g, o, s in table if s == "new"}
    for group, name in new:
        if name == "*":
            assert group not in mm_groups and any(g == group for g, _ in ours), group
        else:
            assert (group, name) in ours and (group, name) not in mm, (group, name)
    our_new_groups = {g for g, _ in ours} - mm_groups
    listed = {g for g, o in new if o == "*"}
    assert our_new_groups == listed, (
        f"groups of ours missing from docs/migration.md: {sorted(our_new_groups - listed)}")


def _value(opt: dict) -> str:
    if opt["default"] not in (None, [], ""):
        return ",".join(map(str, opt["default"])) if isinstance(opt["default"], list) \
            else str(opt["default"]).lower() if isinstance(opt["default"], bool) \
            else str(opt["default"])
    return "5405" if opt["type"] == "list value" else "x"


def _conf_setting(tmp_path, settings: dict[str, dict[str, str]], process_list: Path) -> Path:
    sections = {g: dict(v) for g, v in settings.items()}
    sections.setdefault("process", {})["process_list_path"] = process_list
    return write_conf(tmp_path / "masakarimonitors.conf", hostname="compute-1",
                      state_path=tmp_path / "state", endpoint=None, sections=sections)


@pytest.fixture
def process_list(tmp_path) -> Path:
    path = tmp_path / "process_list.yaml"
    path.write_text("- process_name: /usr/sbin/libvirtd\n"
                    "  start_command: systemctl start libvirtd\n"
                    "  restart_command: systemctl restart libvirtd\n"
                    "  run_as_root: true\n")
    return path


def test_check_config_warns_of_every_ignored_option_with_file_and_line(tmp_path, mm, table,
                                                                       process_list):
    ignored = [(g, o) for g, o, s in table if s == "ignored-with-warning"]
    settings: dict[str, dict[str, str]] = {}
    for group, name in ignored:
        settings.setdefault(group, {})[name] = _value(mm[(group, name)])
    settings["callback"]["retry_interval"] = "10"  # honoured: must not warn
    conf = _conf_setting(tmp_path, settings, process_list)
    lines = conf.read_text().splitlines()

    r = cli(conf, "check-config")
    assert r.returncode == 0, r.stdout + r.stderr  # warnings, not errors
    warnings = [w for w in r.stderr.splitlines() if ": ignored, " in w]
    assert len(warnings) == len(ignored), r.stderr
    for group, name in ignored:
        number = next(i for i, line in enumerate(lines, 1)
                      if line.startswith(f"{name} = ") and _section(lines, i) == group)
        expected = (f"{conf}:{number}: warning: [{group}] {name}: ignored, "
                    f"{config.IGNORED[(group, name)]}")
        assert expected in warnings, f"{expected!r} not in {warnings}"
    assert "[callback] retry_interval" not in r.stderr
    assert "[callback] retry_max: ignored, nothing is dropped; see [delivery] max_age" in r.stderr


def _section(lines: list[str], number: int) -> str:
    return next(line.strip("[]") for line in reversed(lines[:number]) if line.startswith("["))


def test_a_file_without_ignored_options_gets_no_warning(tmp_path, process_list):
    conf = _conf_setting(tmp_path, {"callback": {"retry_interval": "10"}}, process_list)
    r = cli(conf, "check-config")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_daemon_logs_ignored_options_once_at_start(tmp_path, process_list):
    conf = _conf_setting(tmp_path, {"host": {"ipmi_timeout": "5"},
                                    "kubernetes": {"monitoring_node_labels": "ha=true"}},
                         process_list)
    d = deliverer(conf)
    with d:
        hup = "SIGHUP: reloading the configuration"
        d.signal(signal.SIGHUP)
        wait_for(lambda: hup in d.log_text(), 20, what="the SIGHUP reload")
    log = d.log_text()
    for group, name in (("host", "ipmi_timeout"), ("kubernetes", "monitoring_node_labels")):
        line = f"[{group}] {name}: ignored, {config.IGNORED[(group, name)]}"
        assert log.count(line) == 1, log[-3000:]
        assert "WARNING" in next(x for x in log.splitlines() if line in x)
    assert log.index("ipmi_timeout: ignored") < log.index(hup)


def test_side_by_side_duplicate_is_answered_409_and_stored_once(tmp_path, masakari_api, host):
    """masakari-monitors' POST (raw, as it sends it) and ours for the same failure, detected
    2 s apart: the API keeps one; a differing payload is stored twice (docs/migration.md)."""
    conf = write_conf(tmp_path / "monitors.conf", hostname=host, state_path=tmp_path / "state",
                      endpoint=masakari_api.endpoint)
    payload = {"event": "STOPPED", "cluster_status": "OFFLINE", "host_status": "NORMAL"}
    theirs = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    status, _ = masakari_api.post_notification({"notification": {
        "type": "COMPUTE_HOST", "hostname": host, "payload": payload,
        "generated_time": theirs.isoformat()}})
    assert status == 202
    ours_time = (theirs + dt.timedelta(seconds=2)).isoformat()
    r = cli(conf, "notify", "--type", "COMPUTE_HOST", "--payload", json.dumps(payload),
            "--generated-time", ours_time, "--wait")
    assert r.returncode == 0 and "delivered" in r.stdout, r.stdout + r.stderr
    row = json.loads(cli(conf, "outbox", "list", "--json").stdout)[0]
    assert row["deliveries"][0]["last_status"] == 409
    assert len(masakari_api.notifications(hostname=host)) == 1

    unknown = dict(payload, host_status="UNKNOWN")  # e.g. their ipmi check failed
    r = cli(conf, "notify", "--type", "COMPUTE_HOST", "--payload", json.dumps(unknown),
            "--generated-time", ours_time, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    stored = masakari_api.notifications(hostname=host)
    assert sorted(n["payload"]["host_status"] for n in stored) == ["NORMAL", "UNKNOWN"]


def test_generated_sample_and_reference_are_up_to_date(tmp_path):
    sample, reference = tmp_path / "monitors.conf.sample", tmp_path / "reference.md"
    assert TOOL.main(["--sample", str(sample), "--reference", str(reference)]) == 0
    for fresh, committed in ((sample, ROOT / "etc" / "monitors.conf.sample"),
                             (reference, ROOT / "docs" / "configuration-reference.md")):
        assert committed.exists() and fresh.read_text() == committed.read_text(), (
            f"{committed.relative_to(ROOT)} is out of date with the code: run `make docs` "
            "(tools/config_reference.py) and commit it")
