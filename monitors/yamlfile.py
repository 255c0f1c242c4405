"""The one way the daemons' YAML readers (event filter, process list, host matrix) say
where a file stops being YAML, so every such error names its line alike."""
from __future__ import annotations

import yaml


def problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line, or None when PyYAML knows none; what is wrong) of a parse error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return (mark.line + 1 if mark else None), (getattr(exc, "problem", None) or str(exc))
