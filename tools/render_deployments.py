"""Render the masakari-monitors configuration as the deployment tools write it.

The templates under tests/data/deployments/<tool>/templates/ are verbatim copies of the
tools' own (source commit and path in tests/data/deployments/README.md); the values below
are the tools' defaults where they have one and plausible site values otherwise (same
README). The rendered files are committed: tests/monitors/test_deployments.py reads them,
and tools/deployment_expectations.py records what masakari-monitors 22.0.0 reads from them.

    .venv/bin/python tools/render_deployments.py      # needs .venv-mm for devstack

Rendering is plain Jinja2 (kolla-ansible's merge_configs and OSA's config_template then
re-serialise the INI file: comments and blank lines change, values do not); devstack's
file is made as its plugin makes it: oslo-config-generator of masakari-monitors 22.0.0,
then devstack's own ``iniset`` (inc/ini-config) in bash.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "deployments"
MM_VENV = Path(os.environ.get("MM_VENV", ROOT / ".venv-mm"))

# Obviously fake secrets: the files are test data.
PASSWORD = "not-a-real-password"


def _render(path: Path, variables: dict, **env) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(path.parent)),
                                     undefined=jinja2.StrictUndefined, **env)
    environment.filters["put_address_in_context"] = _put_address_in_context
    return environment.get_template(path.name).render(**variables)


def _put_address_in_context(address: str, context: str) -> str:
    """kolla_ansible/put_address_in_context.py for the 'url' context."""
    return f"[{address}]" if ":" in address and context == "url" else address


def kolla_ansible() -> dict[str, str]:
    """ansible/roles/masakari/templates/masakari-monitors.conf.j2, one file per container
    (kolla renders it with service_name set to the container's service)."""
    template = DATA / "kolla-ansible" / "templates" / "masakari-monitors.conf.j2"
    common = {
        "masakari_logging_debug": "False",          # openstack_logging_debug default
        "openstack_region_name": "RegionOne",       # group_vars/all/common.yml
        "keystone_internal_url": "http://10.0.0.254:5000",
        "default_user_domain_id": "default",
        "default_project_domain_id": "default",
        "masakari_keystone_user": "masakari",
        "masakari_keystone_password": PASSWORD,
        "openstack_cacert": "",                     # default without internal TLS
        "migration_interface_address": "10.0.0.11",
        "api_interface": "eth0",
        "hacluster_corosync_port": 5405,
        "groups": {"hacluster": ["compute1"], "hacluster-remote": ["compute2"]},
    }
    out = {
        "instancemonitor.conf": _render(template, {**common, "inventory_hostname": "compute1",
                                                   "service_name": "masakari-instancemonitor"}),
        "hostmonitor.conf": _render(template, {**common, "inventory_hostname": "compute1",
                                               "service_name": "masakari-hostmonitor"}),
        # a remote compute node, with kolla_enable_tls_internal (openstack_cacert set)
        # libvirt_enable_sasl (default true): the instancemonitor's libvirt credentials
        "auth.conf": _render(template.with_name("auth.conf.j2"), {
            "libvirt_sasl_authname": "nova", "libvirt_sasl_password": PASSWORD}),
        "hostmonitor-remote-tls.conf": _render(template, {
            **common, "inventory_hostname": "compute2", "service_name": "masakari-hostmonitor",
            "keystone_internal_url": "https://10.0.0.254:5000",
            "openstack_cacert": "/etc/ssl/certs/ca-certificates.crt"}),
    }
    return out


def openstack_ansible() -> dict[str, str]:
    """os_masakari templates/masakarimonitors.conf.j2 and process_list.yaml.j2."""
    templates = DATA / "openstack-ansible" / "templates"
    variables = {
        "ansible_facts": {"hostname": "compute1"},
        "masakari_service_region": "RegionOne",
        "keystone_service_adminuri": "http://172.29.236.100:5000",
        "keystone_service_internaluri": "http://172.29.236.100:5000",
        "masakari_service_project_name": "service",
        "masakari_service_project_domain_id": "default",
        "masakari_service_user_name": "masakari",
        "masakari_service_user_domain_id": "default",
        "masakari_service_password": PASSWORD,
        "masakari_monitor_corosync_ipmi_check": False,   # role defaults
        "masakari_monitor_corosync_multicast_interface": "br-mgmt",
        "masakari_monitor_corosync_multicast_ports": 5405,
        "masakari_bin": "/openstack/venvs/masakari-31.0.0/bin",
    }
    return {
        "masakarimonitors.conf": _render(templates / "masakarimonitors.conf.j2", variables),
        "process_list.yaml": _render(templates / "process_list.yaml.j2", variables),
    }


def juju() -> dict[str, str]:
    """charm-masakari-monitors src/templates/ussuri/masakarimonitors.conf (ussuri and
    later) and src/templates/masakarimonitors.conf (rocky..train: ``host``, config-flags).
    charmhelpers renders with a default jinja2 Environment."""
    templates = DATA / "juju" / "templates"
    variables = {
        "options": {"debug": False, "hostname": "compute1.maas", "region": "RegionOne",
                    "use_internal_endpoints": True,
                    "user_config_flags": {"use_syslog": "True"}},
        "identity_credentials": {
            "auth_protocol": "http", "auth_host": "10.5.0.20", "auth_port": "5000",
            "credentials_project_domain_name": "service_domain",
            "credentials_user_domain_name": "service_domain",
            "credentials_project": "services",
            "credentials_username": "masakari-monitors",
            "credentials_password": PASSWORD,
            "credentials_project_domain_id": "5d5b1d2c0c4d4d1e9d3f2d8a1b7e6c40",
            "credentials_user_domain_id": "5d5b1d2c0c4d4d1e9d3f2d8a1b7e6c40"},
    }
    return {
        "masakarimonitors.conf": _render(templates / "masakarimonitors.conf", variables),
        "masakarimonitors-rocky.conf": _render(templates / "masakarimonitors.conf.rocky",
                                               variables),
    }


def devstack() -> dict[str, str]:
    """masakari devstack/plugin.sh configure_masakarimonitors, run for real: its
    oslo-config-generator call (masakari-monitors 22.0.0) and devstack's iniset."""
    generator = MM_VENV / "bin" / "oslo-config-generator"
    if not generator.exists():
        raise SystemExit(f"{generator} missing: make {MM_VENV}/.stamp")
    templates = DATA / "devstack" / "templates"
    workdir = DATA / "devstack" / ".render"
    workdir.mkdir(exist_ok=True)
    conf = workdir / "masakarimonitors.conf"
    script = f"""
set -e
source {templates / 'ini-config'}
function git_clone {{ :; }}
function setup_develop {{ :; }}
function sudo {{ :; }}
source {templates / 'configure_masakarimonitors.sh'}
configure_masakarimonitors
"""
    env = {
        "PATH": f"{generator.parent}:/usr/bin:/bin",
        "MASAKARI_MONITORS_CONF_DIR": str(workdir),
        "MASAKARI_MONITORS_CONF": str(conf),
        "KEYSTONE_SERVICE_URI": "http://192.168.122.10/identity",
        "SERVICE_PASSWORD": PASSWORD,
        "SERVICE_PROJECT_NAME": "service",
        "USERNAME": "masakari",
        "SERVICE_DOMAIN_ID": "default",
        "REGION_NAME": "RegionOne",
    }
    subprocess.run(["bash", "-c", script], env=env, check=True)
    text = conf.read_text()
    process_list = (workdir / "process_list.yaml").read_text()
    conf.unlink()
    (workdir / "process_list.yaml").unlink()
    workdir.rmdir()
    # the plugin names the list by its directory; the tests point it at the copy beside it
    text = text.replace(str(workdir), "/etc/masakarimonitors")
    return {"masakarimonitors.conf": text, "process_list.yaml": process_list}


def main() -> int:
    tools = {"kolla-ansible": kolla_ansible, "openstack-ansible": openstack_ansible,
             "juju": juju, "devstack": devstack}
    for name in sys.argv[1:] or tools:
        for filename, text in tools[name]().items():
            (DATA / name / filename).write_text(text)
            print(DATA / name / filename)
    return 0


if __name__ == "__main__":
    sys.exit(main())
