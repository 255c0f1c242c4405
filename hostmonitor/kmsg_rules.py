"""Which kernel-log records are findings: a YAML table of regular expressions, not code.

The shipped table is ``hostmonitor/kmsg_rules.yaml``. An operator file
(``[hostmonitor] kernel_rules_file``) extends or replaces it, like the event filter::

    mode: extend              # or: replace
    disable: [nic-reset]      # (extend only) shipped rules switched off, by name
    rules:
      - name: my-raid         # a rule with a shipped rule's name replaces it
        match: 'md/raid1:(?P<device>md\\d+): Disk failure'
        finding: storage_error
        hold: 3600            # seconds the finding holds (or `boot`), where it applies
        dedup: 60             # repeats of the same rule and subject within this: counted

A rule's ``finding`` says what the record means; where a finding goes (storage input,
degraded-host input, VM notification, log only) is decided in code
(``hostmonitor/kernel.py``) and documented. Errors name the file and line.
"""
from __future__ import annotations

import dataclasses
import os
import re

import yaml

from monitors import yamlfile

SHIPPED = os.path.join(os.path.dirname(__file__), "kmsg_rules.yaml")

# finding -> (named groups it needs, default hold: seconds, "boot", or None = held by a
# live check rather than a timer)
FINDINGS = {
    "storage_readonly": (("device",), None),   # until the mount is writable again
    "storage_error": (("device",), 600.0),
    "hung_task": (("pid",), None),             # while the task stays blocked (state D)
    "oom_invoked": ((), None),
    "oom_kill": (("pid",), None),
    "kernel_oops": ((), "boot"),               # the kernel is tainted until a reboot
    "nic_reset": (("iface",), 600.0),
    "hardware_error": ((), 3600.0),
}
RULE_KEYS = ("name", "match", "finding", "hold", "dedup", "vir_domain_event")
DEFAULT_DEDUP = 60.0


class RulesError(ValueError):
    """A problem in a rules file, naming file and line."""

    def __init__(self, path: str, line: int | None, message: str):
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    finding: str
    hold: float | str | None
    dedup: float
    vir_domain_event: str
    origin: str  # file:line, for the decision record

    def match(self, text: str) -> dict[str, str] | None:
        m = self.pattern.search(text)
        return None if m is None else {k: v for k, v in m.groupdict().items() if v}


@dataclasses.dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    origin: str

    def match(self, text: str) -> tuple[Rule, dict[str, str]] | None:
        """The first rule matching the record's text, and its named groups."""
        for rule in self.rules:
            groups = rule.match(text)
            if groups is not None:
                return rule, groups
        return None


def _line(node) -> int:
    return node.start_mark.line + 1


def _scalar(path, node, what) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.value == "":
        raise RulesError(path, _line(node), f"{what}: expected a non-empty value")
    return node.value


def _seconds(path, node, what, allow_boot: bool) -> float | str:
    text = _scalar(path, node, what)
    if allow_boot and text == "boot":
        return "boot"
    try:
        value = float(text)
    except ValueError:
        raise RulesError(path, _line(node), f"{what}: expected seconds"
                         + (" or 'boot'" if allow_boot else "") + f", not {text!r}") from None
    if value < 0:
        raise RulesError(path, _line(node), f"{what}: must not be negative")
    return value


def _rule(path, node) -> Rule:
    if not isinstance(node, yaml.MappingNode):
        raise RulesError(path, _line(node), "each rule must be a mapping")
    fields = {}
    for key, value in node.value:
        if key.value not in RULE_KEYS:
            raise RulesError(path, _line(key), f"unknown key {key.value!r} (allowed: "
                                               f"{', '.join(RULE_KEYS)})")
        fields[key.value] = (key, value)
    for required in ("name", "match", "finding"):
        if required not in fields:
            raise RulesError(path, _line(node), f"rule without {required!r}")
    name = _scalar(path, fields["name"][1], "name")
    finding = _scalar(path, fields["finding"][1], "finding")
    if finding not in FINDINGS:
        raise RulesError(path, _line(fields["finding"][1]),
                         f"{name}: unknown finding {finding!r} (allowed: "
                         f"{', '.join(FINDINGS)})")
    match_node = fields["match"][1]
    try:
        pattern = re.compile(_scalar(path, match_node, "match"))
    except re.error as exc:
        raise RulesError(path, _line(match_node),
                         f"{name}: invalid regular expression: {exc}") from None
    needs, default_hold = FINDINGS[finding]
    missing = [g for g in needs if g not in pattern.groupindex]
    if missing:
        raise RulesError(path, _line(match_node),
                         f"{name}: finding {finding} needs the named group(s) "
                         + ", ".join(f"(?P<{g}>...)" for g in missing))
    hold = default_hold
    if "hold" in fields:
        if default_hold is None:
            raise RulesError(path, _line(fields["hold"][0]),
                             f"{name}: finding {finding} is held by a live check, not a "
                             "timer: 'hold' does not apply")
        hold = _seconds(path, fields["hold"][1], f"{name}: hold", True)
    dedup = (_seconds(path, fields["dedup"][1], f"{name}: dedup", False)
             if "dedup" in fields else DEFAULT_DEDUP)
    vde = "STOPPED_FAILED"
    if "vir_domain_event" in fields:
        if finding != "oom_kill":
            raise RulesError(path, _line(fields["vir_domain_event"][0]),
                             f"{name}: vir_domain_event only applies to oom_kill")
        vde = _scalar(path, fields["vir_domain_event"][1], f"{name}: vir_domain_event")
    return Rule(name, pattern, finding, hold, float(dedup), vde, f"{path}:{_line(node)}")


def _rule_list(path, node) -> list[Rule]:
    if not isinstance(node, yaml.SequenceNode):
        raise RulesError(path, _line(node), "rules: expected a list of rules")
    out, seen = [], {}
    for item in node.value:
        rule = _rule(path, item)
        if rule.name in seen:
            raise RulesError(path, _line(item), f"rule name {rule.name!r} used twice "
                                                f"(first at line {seen[rule.name]})")
        seen[rule.name] = _line(item)
        out.append(rule)
    return out


def _compose(text: str, path: str):
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        line, what = yamlfile.problem(exc)
        raise RulesError(path, line, f"invalid YAML: {what}") from None
    if root is None:
        raise RulesError(path, None, "the file is empty")
    if not isinstance(root, yaml.MappingNode):
        raise RulesError(path, _line(root), "expected a mapping with 'rules'")
    return root


def shipped() -> Rules:
    with open(SHIPPED, encoding="utf-8") as f:
        root = _compose(f.read(), SHIPPED)
    fields = {k.value: v for k, v in root.value}
    return Rules(tuple(_rule_list(SHIPPED, fields["rules"])), SHIPPED)


def parse(text: str, path: str = "<string>", base: Rules | None = None) -> Rules:
    """An operator file on top of ``base`` (default: the shipped rules)."""
    base = base or shipped()
    root = _compose(text, path)
    mode, rules, disable = "extend", None, None
    for key, value in root.value:
        if key.value == "mode":
            if value.value not in ("extend", "replace"):
                raise RulesError(path, _line(value),
                                 f"mode must be extend or replace, not {value.value!r}")
            mode = value.value
        elif key.value == "rules":
            rules = _rule_list(path, value)
        elif key.value == "disable":
            if not isinstance(value, yaml.SequenceNode):
                raise RulesError(path, _line(value), "disable: expected a list of rule names")
            known = {r.name for r in base.rules}
            disable = []
            for item in value.value:
                name = _scalar(path, item, "disable")
                if name not in known:
                    raise RulesError(path, _line(item), f"disable: no shipped rule {name!r} "
                                                        f"(shipped: {', '.join(sorted(known))})")
                disable.append(name)
            disable = (disable, _line(key))
        else:
            raise RulesError(path, _line(key), f"unknown key {key.value!r} "
                                               "(allowed: mode, rules, disable)")
    if mode == "replace":
        if disable:
            raise RulesError(path, disable[1], "'disable' only makes sense with mode: extend")
        if not rules:
            raise RulesError(path, _line(root), "mode: replace needs a non-empty 'rules'")
        return Rules(tuple(rules), path)
    own = {r.name: r for r in rules or []}
    dropped = set(disable[0]) if disable else set()
    merged = [own.pop(r.name, r) for r in base.rules if r.name not in dropped]
    return Rules(tuple(merged + list(own.values())), f"{base.origin} + {path}")


def load(path: str | None) -> Rules:
    if not path:
        return shipped()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise RulesError(path, None, f"cannot read: {exc.strerror}") from None
    return parse(text, path)
