"""The one way a daemon keeps small state on disk: a JSON document written atomically.

Write to a temporary file beside it, fsync, rename: a crash leaves the old document or
the new one, never half of either. ``pad_block`` pads the file to whole blocks (JSON
ignores trailing spaces) so that, when the disk is full, the document can still be
overwritten in place inside blocks it already owns (the status file uses this so that
`ha-monitors status` can read why the daemon is degraded).
"""
from __future__ import annotations

import contextlib
import json
import os


class StateFileError(ValueError):
    """The file exists but is not a JSON object; the message names the file."""


def write(path: str, doc, *, fsync: bool = True, pad_block: int = 0,
          mode: int = 0o600, sort_keys: bool = False) -> None:
    """Replace ``path`` by ``doc`` (JSON) atomically; raises OSError when it cannot."""
    text = json.dumps(doc, sort_keys=sort_keys)
    if pad_block:
        size = (len(text) // pad_block + 1) * pad_block
        text = text + " " * (size - len(text) - 1) + "\n"
    data = text.encode()
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if not pad_block or not _overwrite_in_place(path, text.rstrip()):
            raise


def _overwrite_in_place(path: str, text: str) -> bool:
    """Disk full: rewrite the padded file inside the blocks it owns, if it is big enough."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        room = os.fstat(fd).st_size
        if room < len(text) + 1:
            return False
        os.pwrite(fd, (text + " " * (room - len(text) - 1) + "\n").encode(), 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def read(path: str) -> dict | None:
    """The document, or None when the file does not exist. An unreadable file or one that
    is not a JSON object raises StateFileError naming the file (callers decide whether to
    start empty, and say so)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateFileError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(doc, dict):
        raise StateFileError(f"{path}: not a JSON object")
    return doc
