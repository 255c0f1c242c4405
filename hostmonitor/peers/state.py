"""Small JSON state files under [DEFAULT] state_path, written atomically."""
from __future__ import annotations

import json
import logging
import os

LOG = logging.getLogger(__name__)


def load(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        LOG.error("%s: unreadable (%s); starting from an empty state", path, exc)
        return {}


def save(path: str, data: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        LOG.error("cannot write %s: %s", path, exc)
