"""Record what masakari-monitors 22.0.0 reads from each rendered deployment file.

Run with the interpreter of the masakari-monitors venv (it imports masakarimonitors, never
our code):

    .venv-mm/bin/python tools/deployment_expectations.py

For every file tests/data/deployments/*/*.conf it writes <file>.masakari-monitors.json:
each setting (line, group, option as oslo.config's own ini parser sees it) and the value
masakari-monitors gets for it, after registering its options as its commands do
(masakarimonitors.conf, oslo.log's, oslo.concurrency's, and the [api] auth plugin's, which
keystoneauth registers when masakarimonitors/ha/masakari.py loads it). ``registered: false`` means
masakari-monitors has no such option: oslo.config ignores it silently there.
For every process_list.yaml beside them, <file>.masakari-monitors.json holds what its
processmonitor loads (None for devstack's empty file: it then logs "Failed to load process
list file." and watches nothing). tests/monitors/test_deployments.py compares our reading
with these files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg, iniparser
from oslo_concurrency import lockutils
from oslo_log import log
import yaml

import masakarimonitors.conf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "deployments"


class _Settings(iniparser.BaseParser):
    """(line, group, option) of every assignment, as oslo.config parses the file."""

    def __init__(self):
        self.section = "DEFAULT"
        self.found: list[tuple[int, str, str]] = []

    def new_section(self, section):
        self.section = section

    def assignment(self, key, value):
        # called when the assignment ends; multi-line values end later, so take the line
        # where the key was (oslo.config counts from 1)
        self.found.append((self._start, self.section, key))

    def _split_key_value(self, line):
        self._start = self.lineno
        return super()._split_key_value(line)


def settings(path: Path) -> list[tuple[int, str, str]]:
    parser = _Settings()
    with open(path) as f:
        parser.parse(f)
    return parser.found


def resolve(conf: cfg.ConfigOpts, group: str, key: str):
    """The registered option a file key sets (its own name or a deprecated one)."""
    try:
        opts = conf._groups[group]._opts if group != "DEFAULT" else conf._opts
    except KeyError:
        return None
    for info in opts.values():
        opt = info["opt"]
        names = {opt.dest, opt.name}
        for old in opt.deprecated_opts:
            if old.group in (None, group) and old.name:
                names.add(old.name.replace("-", "_"))
        if key.replace("-", "_") in names:
            return opt
    return None


def read(path: Path) -> dict:
    conf = cfg.ConfigOpts()
    for mod in (masakarimonitors.conf.api, masakarimonitors.conf.base,
                masakarimonitors.conf.consul, masakarimonitors.conf.host,
                masakarimonitors.conf.instance,
                masakarimonitors.conf.introspectiveinstancemonitor,
                masakarimonitors.conf.kubernetes, masakarimonitors.conf.process,
                masakarimonitors.conf.service):
        mod.register_opts(conf)
    log.register_options(conf)
    # masakarimonitors/utils.py imports oslo_concurrency.lockutils, which registers
    # [oslo_concurrency] on the global CONF of every masakari-monitors daemon
    conf.register_opts(lockutils._opts, group="oslo_concurrency")
    conf(["--config-file", str(path)], project="masakarimonitors",
         default_config_files=[], default_config_dirs=[])
    # as masakarimonitors/ha/masakari.py builds its connection (registers the plugin's options)
    auth = ks_loading.load_auth_from_conf_options(conf, "api")
    session = ks_loading.load_session_from_conf_options(conf, "api", auth=auth)
    api_session = {"plugin": type(auth).__module__ + "." + type(auth).__name__,
                   "auth_url": auth.auth_url, "verify": session.verify, "cert": session.cert}
    out = []
    for line, group, key in settings(path):
        opt = resolve(conf, group, key)
        row = {"line": line, "group": group, "option": key, "registered": opt is not None}
        if opt is not None:
            value = (conf if group == "DEFAULT" else conf[group])[opt.dest]
            row.update(name=opt.dest, value=value)
        out.append(row)
    return {"file": path.name, "masakari-monitors": "22.0.0", "settings": out,
            "api_session": api_session}


def main() -> int:
    for path in sorted(p for p in DATA.glob("*/*.conf") if p.name != "auth.conf"):
        result = read(path)
        target = path.with_name(path.name + ".masakari-monitors.json")
        target.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(target)
    for path in sorted(DATA.glob("*/process_list.yaml")):
        # masakarimonitors/processmonitor/process.py: yaml.safe_load, then each command
        # run as utils.execute(*command.split(' '))
        plist = yaml.safe_load(path.read_text())
        target = path.with_name(path.name + ".masakari-monitors.json")
        target.write_text(json.dumps({"file": path.name, "masakari-monitors": "22.0.0",
                                      "process_list": plist}, indent=1) + "\n")
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
