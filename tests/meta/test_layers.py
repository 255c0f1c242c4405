"""The import graph is the one docs/architecture.md draws: source → decision → outbox →
delivery → driver, one way. Checked on the source text (every import, also the lazy ones
inside functions), so a shortcut fails here before it becomes a habit."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
DAEMONS = ("instancemonitor", "processmonitor", "hostmonitor")


def _imports(path: pathlib.Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield str(path.relative_to(ROOT)), _imports(path)


def _hits(imports: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports for f in forbidden if i == f or i.startswith(f + "."))


def test_daemons_depend_only_on_the_core_never_on_each_other():
    for daemon in DAEMONS:
        others = tuple(d for d in DAEMONS if d != daemon)
        for name, imports in _modules(daemon):
            assert not _hits(imports, others), f"{name} imports another daemon: {_hits(imports, others)}"


def test_sources_never_reach_past_the_emitter():
    """A source hands notifications to its emitter; it never reads the outbox, delivers,
    talks to a driver or builds its own emitter (only cmd.py starts the runtime)."""
    forbidden = ("monitors.outbox", "monitors.delivery", "monitors.drivers", "monitors.history",
                 "monitors.backlog", "monitors.emitter", "monitors.status", "monitors.metrics")
    for daemon in DAEMONS:
        for name, imports in _modules(daemon):
            assert not _hits(imports, forbidden), f"{name}: {_hits(imports, forbidden)}"
            if not name.endswith("/cmd.py"):
                assert not _hits(imports, ("monitors.service",)), \
                    f"{name} imports the runtime; sources use monitors.source"


def test_outbox_is_storage_only():
    forbidden = ("monitors.delivery", "monitors.drivers", "monitors.history", "monitors.emitter",
                 "monitors.service", "monitors.source", "monitors.metrics", "monitors.cli",
                 "monitors.status", "monitors.actions")
    imports = _imports(ROOT / "monitors" / "outbox.py")
    assert not _hits(imports, forbidden), _hits(imports, forbidden)


def test_outbox_holds_no_policy():
    """What a notification means to its recipient (starts a recovery, clears one, is stale,
    is a new failure) is judged in monitors.recipient and handed to the outbox, which only
    stores the verdict: its code never imports the rules, nor spells a payload's words."""
    path = ROOT / "monitors" / "outbox.py"
    assert not _hits(_imports(path), ("monitors.recipient", "monitors.actions"))
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    words = ("STOPPED", "STARTED", "host_status", "LIFECYCLE", "vir_domain_event",
             "is duplicate", "maintenance", "held:")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            found = [w for w in words if w in node.value]
            assert not found, f"monitors/outbox.py:{node.lineno} decides by {found}"


def test_drivers_only_send():
    """A driver sends and classifies; it never touches the outbox nor the delivery policy."""
    forbidden = ("monitors.outbox", "monitors.delivery", "monitors.emitter", "monitors.service",
                 "monitors.source", "monitors.history", "monitors.backlog")
    for name, imports in _modules("monitors/drivers"):
        assert not _hits(imports, forbidden), f"{name}: {_hits(imports, forbidden)}"


def test_delivery_never_reaches_back_to_sources():
    forbidden = ("monitors.emitter", "monitors.source", "monitors.service", "monitors.backlog",
                 "monitors.cli") + DAEMONS
    imports = _imports(ROOT / "monitors" / "delivery.py")
    assert not _hits(imports, forbidden), _hits(imports, forbidden)


def test_sources_never_read_the_outbox_through_their_emitter():
    """Not by import and not by the back door: no daemon module touches an ``outbox``
    attribute (``emit.outbox``, ``getattr(x, "outbox")``)."""
    for daemon in DAEMONS:
        for path in sorted((ROOT / daemon).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                attr = isinstance(node, ast.Attribute) and node.attr == "outbox"
                by_name = (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr"
                           and any(isinstance(a, ast.Constant) and a.value == "outbox"
                                   for a in node.args))
                assert not (attr or by_name), f"{path.relative_to(ROOT)}:{node.lineno} reads the outbox"
