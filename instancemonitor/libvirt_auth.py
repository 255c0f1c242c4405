"""Open libvirt connections that can authenticate from an auth.conf, as masakari-monitors'.

kolla-ansible's libvirt asks for SASL by default (``libvirt_enable_sasl: true``) and gives
masakari-instancemonitor the credentials in a libvirt ``auth.conf``. libvirt fills the SASL
credentials from that file only for a connection opened *with* an auth callback:
``virConnectOpenReadOnly`` has none, and SASL then fails with "No worthy mechs found"
even when the file holds every credential. masakari-monitors opens with ``openAuth`` and a
callback that accepts only what the file already filled (it cannot prompt); so do we.
Where libvirt reads the file: ``LIBVIRT_AUTH_FILE``, then ``$XDG_CONFIG_HOME/libvirt/auth.conf``
(``~/.config``, hidden by the units' ProtectHome=yes), then ``/etc/libvirt/auth.conf``.
"""
from __future__ import annotations

import logging

LOG = logging.getLogger(__name__)

HINT = ("put them in a libvirt auth.conf: /etc/libvirt/auth.conf, or the file named by "
        "LIBVIRT_AUTH_FILE in the unit's environment")


def _credential_types(libvirt) -> list[int]:
    return [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_ECHOPROMPT, libvirt.VIR_CRED_REALM,
            libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT,
            libvirt.VIR_CRED_EXTERNAL]


def _callback(creds, uri) -> int:
    """libvirt calls it with the credentials the auth.conf did not fill: none means
    authenticated from the file (or no authentication); any other is refused (a daemon
    cannot prompt), naming what is missing."""
    if not creds:
        return 0
    LOG.error("libvirt %s asks for credentials nobody can type (%s): %s", uri,
              ", ".join(str(c[1] or c[0]) for c in creds), HINT)
    return -1


def open_connection(uri: str, read_only: bool = True):
    """``libvirt.openReadOnly(uri)`` / ``libvirt.open(uri)``, able to use an auth.conf."""
    import libvirt

    flags = libvirt.VIR_CONNECT_RO if read_only else 0
    return libvirt.openAuth(uri, [_credential_types(libvirt), _callback, uri], flags)
