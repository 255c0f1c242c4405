"""One table, ours beside masakari-monitors: each benchmark records its headline rows here
(docs/benchmarks.d/<name>.summary.json) next to its markdown section, and `make bench`
prints and publishes them together."""
from __future__ import annotations

import json
from pathlib import Path

FRAGMENTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.d"


def row(measure: str, unit: str, ours: float | None, mm: float | None = None,
        note: str = "") -> dict:
    """A lower-is-better figure; ``mm`` None when masakari-monitors lacks the feature (say
    why in ``note``)."""
    return {"measure": measure, "unit": unit, "ours": ours, "mm": mm, "note": note}


def record(name: str, area: str, rows: list[dict]) -> Path:
    path = FRAGMENTS / f"{name}.summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"area": area, "rows": rows}, indent=1, ensure_ascii=False)
                    + "\n")
    return path


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:.0f} {unit}".strip()
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}".strip()


def _times(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 100 else f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"


def table(order: list[str]) -> str:
    """Markdown: area, measure, ours, masakari-monitors, and how many times lower ours is."""
    files = sorted(FRAGMENTS.glob("*.summary.json"), key=lambda p: (
        order.index(p.name.split(".")[0]) if p.name.split(".")[0] in order else 99, p.name))
    lines = ["| area | measure | ours | masakari-monitors 22.0.0 | masakari-monitors ÷ ours |",
             "|---|---|---|---|---|"]
    for path in files:
        doc = json.loads(path.read_text())
        for r in doc["rows"]:
            both = r["ours"] is not None and r["mm"] is not None and r["ours"] > 0
            mm = _fmt(r["mm"], r["unit"]) if r["mm"] is not None else (r["note"] or "—")
            lines.append(f"| {doc['area']} | {r['measure']} | {_fmt(r['ours'], r['unit'])} | "
                         f"{mm} | {_times(r['mm'] / r['ours']) if both else '—'} |")
    return "\n".join(lines)
