"""The context-aware matrix: (management, tenant, storage, compute) health → actions.

Built-in table (the reference's context-aware recovery table), for ``profile``:
  cattle: any input down → report_host_failure; something degraded → notify_operator.
  both:   host_health degraded (the degraded-host row: kernel or hardware findings, see
          hostmonitor/kernel.py) → notify_operator and drain (disable the compute service
          through ``drain_driver``; never an evacuation), unless the host is reported failed.
  pets:   storage down, or management and tenant both down → report_host_failure;
          any other input down → notify_operator (migration and service restarts are the
          operator's / processmonitor's job); something degraded → notify_operator.

Our file format (first matching rule wins; each input is a state, a list, or ``any``)::

    matrix:
      - {management: down, tenant: any, storage: any, compute: any,
         actions: [notify_operator]}

masakari-monitors' consul format (``sequence`` of manage/tenant/storage + ``matrix`` of
``health``/``action``, action ``recovery``) is accepted: ``recovery`` →
report_host_failure, ``[]`` → none, degraded counts as up, compute is ``any``. Every
combination must be covered; errors name the file and line.
"""
from __future__ import annotations

import dataclasses
import itertools

import yaml

from monitors import yamlfile

UP, DEGRADED, DOWN = "up", "degraded", "down"
INPUTS = ("management", "tenant", "storage", "compute", "host_health")
STATES = {"management": (UP, DEGRADED, DOWN), "tenant": (UP, DEGRADED, DOWN),
          "storage": (UP, DEGRADED, DOWN), "compute": (UP, DOWN),
          "host_health": (UP, DEGRADED)}  # the degraded-host row (kernel, hardware)
REPORT, NOTIFY, NONE = "report_host_failure", "notify_operator", "none"
DRAIN = "drain"
ACTIONS = (REPORT, NOTIFY, DRAIN, NONE)
_CONSUL_ROLES = {"manage": "management", "management": "management", "tenant": "tenant",
                 "storage": "storage"}


class MatrixError(ValueError):
    """A matrix file problem; the message names file:line."""


@dataclasses.dataclass(frozen=True)
class Rule:
    match: dict[str, frozenset]
    actions: tuple[str, ...]
    line: int | None = None  # 1-based line in the file, None for the built-in table

    def matches(self, row: dict[str, str]) -> bool:
        return all(row.get(k, UP) in self.match[k] for k in INPUTS)


def all_rows():
    for combo in itertools.product(*(STATES[k] for k in INPUTS)):
        yield dict(zip(INPUTS, combo))


def default_actions(profile: str, row: dict[str, str]) -> tuple[str, ...]:
    actions = _default_actions(profile, row)
    if row.get("host_health") == DEGRADED and REPORT not in actions:
        # the degraded-host row: proactive, never an evacuation by itself
        return tuple(dict.fromkeys(actions + (NOTIFY, DRAIN)))
    return actions


def _default_actions(profile: str, row: dict[str, str]) -> tuple[str, ...]:
    downs = {k for k in INPUTS if row.get(k, UP) == DOWN}
    degraded = any(row.get(k, UP) == DEGRADED for k in INPUTS if k != "host_health")
    if not downs:
        return (NOTIFY,) if degraded else ()
    if profile == "cattle":
        return (REPORT,)
    if "storage" in downs or {"management", "tenant"} <= downs:
        return (REPORT,)
    return (NOTIFY,)


class Matrix:
    def __init__(self, rules: list[Rule] | None = None, profile: str = "cattle",
                 source: str = "built-in"):
        self.rules = rules
        self.profile = profile
        self.source = source

    def lookup(self, row: dict[str, str]) -> tuple[tuple[str, ...], str]:
        """Actions for a row and what decided them (for the outbox history)."""
        if self.rules is None:
            return default_actions(self.profile, row), f"built-in {self.profile}"
        for rule in self.rules:
            if rule.matches(row):
                return rule.actions, f"{self.source}:{rule.line}"
        return (), f"{self.source}: no rule"  # unreachable: load() checks coverage


def _line(node) -> int:
    return node.start_mark.line + 1


def _fail(path, node, message) -> MatrixError:
    return MatrixError(f"{path}:{_line(node) if node is not None else 1}: {message}")


def _scalar_list(path, node, what) -> list[tuple[str, object]]:
    if isinstance(node, yaml.ScalarNode):
        return [(str(node.value).strip().lower(), node)]
    if isinstance(node, yaml.SequenceNode):
        out = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode):
                raise _fail(path, item, f"{what}: expected a word, got a {item.tag}")
            out.append((str(item.value).strip().lower(), item))
        return out
    raise _fail(path, node, f"{what}: expected a word or a list of words")


def _mapping(node) -> dict[str, tuple[object, object]]:
    return {str(k.value).strip().lower(): (k, v) for k, v in node.value}


def _actions(path, node, consul: bool) -> tuple[str, ...]:
    out = []
    for word, item in _scalar_list(path, node, "action"):
        if consul and word == "recovery":
            word = REPORT
        if word not in ACTIONS:
            allowed = ", ".join(ACTIONS + (("recovery",) if consul else ()))
            raise _fail(path, item, f"unknown action {word!r} (allowed: {allowed})")
        if word != NONE:
            out.append(word)
    return tuple(dict.fromkeys(out))


def _parse_ours(path, rules_node) -> list[Rule]:
    rules = []
    for item in rules_node.value:
        if not isinstance(item, yaml.MappingNode):
            raise _fail(path, item, "each matrix rule must be a mapping")
        fields = _mapping(item)
        unknown = set(fields) - set(INPUTS) - {"actions", "action"}
        if unknown:
            key = fields[sorted(unknown)[0]][0]
            raise _fail(path, key, f"unknown key {sorted(unknown)[0]!r} (allowed: "
                                   f"{', '.join(INPUTS)}, actions)")
        if "actions" not in fields and "action" not in fields:
            raise _fail(path, item, "rule without actions (use `actions: [none]`)")
        match = {}
        for name in INPUTS:
            if name not in fields:
                match[name] = frozenset(STATES[name])
                continue
            values = set()
            for word, node in _scalar_list(path, fields[name][1], name):
                if word == "any":
                    values |= set(STATES[name])
                elif word in STATES[name]:
                    values.add(word)
                else:
                    raise _fail(path, node, f"{name}: unknown state {word!r} (allowed: "
                                            f"{', '.join(STATES[name])}, any)")
            match[name] = frozenset(values)
        act_node = (fields.get("actions") or fields.get("action"))[1]
        rules.append(Rule(match, _actions(path, act_node, False), _line(item)))
    return rules


def _parse_consul(path, doc) -> list[Rule]:
    fields = _mapping(doc)
    seq_node = fields["sequence"][1] if "sequence" in fields else None
    sequence = (["manage", "tenant", "storage"] if seq_node is None
                else [w for w, _ in _scalar_list(path, seq_node, "sequence")])
    roles = []
    for word in sequence:
        if word not in _CONSUL_ROLES:
            raise _fail(path, seq_node, f"sequence: unknown network {word!r} (allowed: "
                                        "manage, tenant, storage)")
        roles.append(_CONSUL_ROLES[word])
    rules = []
    matrix_node = fields["matrix"][1]
    if not isinstance(matrix_node, yaml.SequenceNode):
        raise _fail(path, matrix_node, "matrix: expected a list of health/action entries")
    for item in matrix_node.value:
        if not isinstance(item, yaml.MappingNode):
            raise _fail(path, item, "each matrix entry must be a mapping")
        entry = _mapping(item)
        if "health" not in entry:
            raise _fail(path, item, "matrix entry without `health`")
        health = _scalar_list(path, entry["health"][1], "health")
        if len(health) != len(roles):
            raise _fail(path, entry["health"][1], f"health has {len(health)} values, the "
                                                  f"sequence {sequence} has {len(roles)}")
        match = {name: frozenset(STATES[name]) for name in INPUTS}
        for role, (word, node) in zip(roles, health):
            if word == UP:
                match[role] = frozenset({UP, DEGRADED})
            elif word == DOWN:
                match[role] = frozenset({DOWN})
            else:
                raise _fail(path, node, f"health: unknown state {word!r} (allowed: up, down)")
        act = entry.get("action") or entry.get("actions")
        actions = () if act is None else _actions(path, act[1], True)
        rules.append(Rule(match, actions, _line(item)))
    return rules


def load(path: str) -> Matrix:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read the matrix file: {exc.strerror}") from None
    try:
        doc = yaml.compose(text)
    except yaml.YAMLError as exc:
        line, what = yamlfile.problem(exc)
        raise MatrixError(f"{path}:{line or 1}: invalid YAML: {what}") from None
    if not isinstance(doc, yaml.MappingNode) or "matrix" not in _mapping(doc):
        raise _fail(path, doc, "expected a mapping with a `matrix` list")
    fields = _mapping(doc)
    matrix_node = fields["matrix"][1]
    if not isinstance(matrix_node, yaml.SequenceNode) or not matrix_node.value:
        raise _fail(path, matrix_node, "matrix: expected a non-empty list")
    first = matrix_node.value[0]
    consul = "sequence" in fields or (isinstance(first, yaml.MappingNode)
                                      and "health" in _mapping(first))
    rules = _parse_consul(path, doc) if consul else _parse_ours(path, matrix_node)
    for row in all_rows():
        if not any(rule.matches(row) for rule in rules):
            shown = ", ".join(f"{k}={v}" for k, v in row.items())
            raise _fail(path, matrix_node, f"matrix does not cover {shown}")
    return Matrix(rules, source=path)


def from_conf(conf, path: str | None) -> Matrix:
    if path:
        return load(path)
    return Matrix(None, conf.hostmonitor.profile)
