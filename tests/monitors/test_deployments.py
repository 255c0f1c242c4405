"""The masakari-monitors files real deployment tools write, read by us as masakari-monitors
reads them.

tests/data/deployments/<tool>/ holds kolla-ansible's, OpenStack-Ansible's, the Juju charm's
and devstack's files, rendered from their own templates (tools/render_deployments.py;
sources and values in tests/data/deployments/README.md), and beside each the values
masakari-monitors 22.0.0 reads from it (<file>.masakari-monitors.json, recorded by
tools/deployment_expectations.py in its own venv). For every option a file sets:

- one masakari-monitors reads with the same meaning here ("same", "renamed",
  "default-changed" in docs/migration.md): each daemon the tool runs reads the same value;
- one that has no effect here ("ignored-with-warning", or a library's option such as
  [oslo_concurrency] lock_path): `ha-monitors check-config` names it with file and line;
- one masakari-monitors does not know either (OSA's [api] www_authenticate_uri): check-config
  names it as unknown (masakari-monitors ignores it silently).

Nothing else: check-config exits 0, and prints no warning for an option that keeps its
meaning.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from keystoneauth1 import loading as ks_loading

from monitors import config, service
from monitors.drivers.masakari import MasakariDriver

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "deployments"
# (kolla-ansible's auth.conf is libvirt's: tests/instancemonitor/test_libvirt_sasl.py)
FILES = sorted(p.relative_to(DATA).as_posix() for p in DATA.glob("*/*.conf")
               if p.name != "auth.conf")

# Which of our daemons replace what each tool runs from that file (kolla-ansible renders one
# file per container; devstack's run_masakarimonitors starts no hostmonitor; the charm
# installs masakari-host-monitor and masakari-instance-monitor; OSA all of them).
DAEMONS = {
    "kolla-ansible/instancemonitor.conf": ("instancemonitor",),
    "kolla-ansible/hostmonitor.conf": ("hostmonitor",),
    "kolla-ansible/hostmonitor-remote-tls.conf": ("hostmonitor",),
    "openstack-ansible/masakarimonitors.conf": ("instancemonitor", "processmonitor",
                                                "hostmonitor"),
    "juju/masakarimonitors.conf": ("instancemonitor", "hostmonitor"),
    "juju/masakarimonitors-rocky.conf": ("instancemonitor", "hostmonitor"),
    "devstack/masakarimonitors.conf": ("instancemonitor", "processmonitor"),
}
VALIDATE = {"instancemonitor": "instancemonitor.opts:validate",
            "processmonitor": "processmonitor.cmd:validate",
            "hostmonitor": "hostmonitor.opts:validate"}


def _table() -> dict[tuple[str, str], str]:
    """(group, option) -> status, from docs/migration.md's option table."""
    rows = {}
    for line in (ROOT / "docs" / "migration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2] in {"same", "renamed", "default-changed",
                                            "ignored-with-warning", "new"}:
            for name in re.findall(r"`([^`]+)`", cells[1]):
                rows[(cells[0], name)] = cells[2]
    return rows


TABLE = _table()


def _expected(name: str) -> dict:
    return json.loads((DATA / f"{name}.masakari-monitors.json").read_text())


def _status(group: str, name: str) -> str:
    """The migration table's status of a masakari-monitors option (by its current name)."""
    if (group, name) in TABLE:
        return TABLE[(group, name)]
    if group == "api":  # keystoneauth's plugin and session options: rows name them
        return "same"   # (test_migration checks the table covers every one)
    if group == "DEFAULT":  # oslo.log: one "same" row for all of them
        return "same"
    if (group, name) in config.LIBRARY_IGNORED:
        return "ignored-with-warning"
    raise AssertionError(f"[{group}] {name}: masakari-monitors reads it; not in "
                         "docs/migration.md's table")


@pytest.fixture
def deployed(tmp_path, request):
    """The file copied beside its tool's process_list.yaml (when it ships one), with
    [process] process_list_path pointing at that copy, as on the node."""
    name = request.param
    src = DATA / name
    text = src.read_text()
    plist = src.with_name("process_list.yaml")
    if plist.exists():
        shutil.copy(plist, tmp_path / "process_list.yaml")
        text = re.sub(r"(?m)^process_list_path = .*$",
                      f"process_list_path = {tmp_path / 'process_list.yaml'}", text)
    path = tmp_path / src.name
    path.write_text(text)
    return name, path


def _their_value(setting: dict, path: Path):
    if (setting["group"], setting["name"]) == ("process", "process_list_path") and \
            path.with_name("process_list.yaml").exists():  # the copy the fixture made
        return str(path.with_name("process_list.yaml"))
    return setting["value"]


def _check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitors.cli", "--config-file", str(path),
                           "check-config"], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("deployed", FILES, indirect=True)
def test_check_config_accepts_it_and_names_every_option_without_effect(deployed):
    name, path = deployed
    result = _check_config(path)
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr
    warned = {}
    for line in result.stderr.splitlines():
        m = re.match(rf"{re.escape(str(path))}:(\d+): warning: \[(\S+)\] (\S+): (.*)", line)
        if m:
            warned[(m[2], m[3])] = (int(m[1]), m[4])
    expected = {}
    for s in _expected(name)["settings"]:
        key = (s["group"], s["option"])
        if not s["registered"]:
            expected[key] = (s["line"], "unknown option")
        elif _status(s["group"], s["name"]) == "ignored-with-warning":
            expected[key] = (s["line"], "ignored, ")
    assert set(warned) == set(expected), (
        f"{name}: warned about {sorted(warned)}, expected {sorted(expected)}")
    for key, (line, what) in expected.items():
        assert warned[key][0] == line and warned[key][1].startswith(what), (key, warned[key])


def _daemon_conf(daemon: str, path: Path):
    opts = importlib.import_module(f"{daemon}.opts")
    module, func = VALIDATE[daemon].split(":")
    validate = getattr(importlib.import_module(module), func)
    # the daemon's own loading: parse, config.problems(), its validate(); raises if refused
    return service._load_valid(daemon, ["--config-file", str(path)], opts.register_opts,
                               validate)


def _our_value(conf, group: str, key: str):
    """What we read for a key of the file (its own name or an old one, as oslo.config)."""
    node = conf if group == "DEFAULT" else conf[group]
    opts = conf._opts if group == "DEFAULT" else conf._groups[group]._opts
    for info in opts.values():
        opt = info["opt"]
        names = {opt.dest} | {d.name.replace("-", "_") for d in opt.deprecated_opts
                              if d.name and d.group in (None, group)}
        if key.replace("-", "_") in names:
            return node[opt.dest]
    raise AssertionError(f"[{group}] {key}: masakari-monitors reads it, we do not register it")


CASES = [(f, d) for f in FILES for d in DAEMONS[f]]


@pytest.mark.parametrize("deployed,daemon", CASES, indirect=["deployed"],
                         ids=[f"{f}-{d}" for f, d in CASES])
def test_each_daemon_reads_every_value_as_masakari_monitors_does(deployed, daemon):
    name, path = deployed
    conf = _daemon_conf(daemon, path)
    ks_loading.load_auth_from_conf_options(conf, "api")  # registers the plugin's options
    expected = _expected(name)
    compared = 0
    for s in expected["settings"]:
        if not s["registered"] or _status(s["group"], s["name"]) == "ignored-with-warning":
            continue  # the previous test: check-config names each of these
        ours = _our_value(conf, s["group"], s["option"])
        assert ours == _their_value(s, path), (
            f"{name}:{s['line']}: [{s['group']}] {s['option']}: masakari-monitors reads "
            f"{s['value']!r}, ha-{daemon} {ours!r}")
        compared += 1
    assert compared >= 8, f"{name}: only {compared} settings compared"
    # what the daemon logs at start (monitors/service.py run()): every option without effect
    at_start = {tuple(re.match(r".*?:(\d+): warning: \[(\S+)\] (\S+): ignored", w).groups())
                for w in config.ignored_settings(conf)}
    assert at_start == {(str(s["line"]), s["group"], s["option"]) for s in expected["settings"]
                        if s["registered"]
                        and _status(s["group"], s["name"]) == "ignored-with-warning"}
    # the connection to Masakari: same plugin, Keystone and TLS verification
    session = MasakariDriver(conf)._ks_session()
    auth = session.auth
    theirs = expected["api_session"]
    assert (f"{type(auth).__module__}.{type(auth).__name__}", auth.auth_url, session.verify,
            session.cert) == (theirs["plugin"], theirs["auth_url"], theirs["verify"],
                              theirs["cert"])


@pytest.mark.parametrize("tool", sorted(p.parent.name for p in DATA.glob("*/process_list.yaml")))
def test_shipped_process_list_is_read_as_masakari_monitors_reads_it(tool, tmp_path):
    from processmonitor import process_list

    theirs = _expected(f"{tool}/process_list.yaml")["process_list"]
    plist = process_list.load(str(DATA / tool / "process_list.yaml"), "compute1")
    assert plist.errors == []
    if theirs is None:
        # devstack touches an empty file: masakari-monitors logs "Failed to load process
        # list file." and watches nothing; we watch nothing too, and check-config says so
        assert plist.entries == []
        conf = tmp_path / "masakarimonitors.conf"
        conf.write_text(re.sub(r"(?m)^process_list_path = .*$",
                               f"process_list_path = {DATA / tool / 'process_list.yaml'}",
                               (DATA / tool / "masakarimonitors.conf").read_text()))
        result = _check_config(conf)
        assert result.returncode == 0, result.stderr
        assert "warning: no process listed: ha-processmonitor would watch nothing" in result.stderr
        return
    assert [e.process_name for e in plist.entries] == [p["process_name"] for p in theirs]
    keys = ("start_command", "pre_start_command", "post_start_command", "restart_command",
            "pre_restart_command", "post_restart_command")
    for entry, item in zip(plist.entries, theirs):
        assert entry.run_as_root == bool(item["run_as_root"])
        for key in keys:
            # masakari-monitors runs utils.execute(*command.split(' ')), nothing if empty
            want = item[key].split(" ") if item[key] else None
            assert entry.command(key) == want, (entry.process_name, key)


@pytest.mark.parametrize("deployed", ["kolla-ansible/instancemonitor.conf",
                                      "juju/masakarimonitors.conf"], indirect=True)
def test_no_process_list_passes_check_config_but_processmonitor_refuses_to_start(deployed,
                                                                                   tmp_path):
    """kolla-ansible and the charm run no processmonitor and ship no list (the charm still
    names one): the shared file passes check-config with a warning, and ha-processmonitor,
    if started anyway, refuses with the reason (as masakari-monitors' logs "Failed to load
    process list file." and watches nothing)."""
    name, path = deployed
    missing = tmp_path / "absent" / "process_list.yaml"
    path.write_text(re.sub(r"(?m)^process_list_path = .*$", "", path.read_text())
                    + f"\n[process]\nprocess_list_path = {missing}\n")
    result = _check_config(path)
    assert result.returncode == 0, result.stderr
    assert (f"{missing}: warning: no such file: ha-processmonitor cannot start without its "
            "process list") in result.stderr
    with pytest.raises(ValueError, match=f"{re.escape(str(missing))}: cannot read the "
                                         "process list: No such file or directory"):
        _daemon_conf("processmonitor", path)


@pytest.mark.parametrize("tool", ["kolla-ansible", "openstack-ansible", "juju"])
def test_rendered_files_are_those_of_the_committed_templates(tool):
    """The files above are what the tools' templates give with the README's values (devstack's
    needs masakari-monitors' oslo-config-generator: tools/render_deployments.py devstack)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_deployments",
                                                  ROOT / "tools" / "render_deployments.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    rendered = getattr(render, tool.replace("-", "_"))()
    assert rendered, tool
    for filename, text in rendered.items():
        assert (DATA / tool / filename).read_text() == text, f"{tool}/{filename}: re-render"
