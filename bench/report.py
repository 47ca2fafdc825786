"""Print the benchmark results file given as argv[1] (JSON lines) as a table.

A figure with a target (``target``, ``met``; see bench/figures.py) shows ``ok`` or
``MISS``; the misses are counted and listed at the end, so none goes unseen. The
machine's yardstick (bench/machine.py), when the run measured it, is stated last.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("bench", "metric", "value", "unit", "baseline", "ratio", "target", "met")


def load(path: Path) -> list[dict[str, Any]]:
    """The result objects of a JSON lines file, skipping blank and non-JSON lines."""
    results = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            results.append(obj)
    return results


def cell(value: Any) -> str:
    """A table cell: numbers with at most three decimals, absent values empty, a target
    met ``ok`` and missed ``MISS``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "ok" if value else "MISS"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: list[dict[str, Any]]) -> str:
    """The results as an aligned text table."""
    rows = [list(COLUMNS)] + [[cell(r.get(c)) for c in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    numeric = {"value", "baseline", "ratio"}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if COLUMNS[i] in numeric and n else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    """Print the table of the file named on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS.jsonl")
    results = load(Path(sys.argv[1]))
    print(table(results))
    judged = [r for r in results if isinstance(r.get("met"), bool)]
    missed = [r for r in judged if not r["met"]]
    print(f"\n{len(judged) - len(missed)} of {len(judged)} targets met")
    for r in missed:
        print(
            f"MISS  {r.get('bench')} {r.get('metric')}: {cell(r.get('value'))} {r.get('unit', '')}"
            f" (target {r.get('target')})"
        )
    yardstick = machine_speed(results)
    if yardstick:
        print(f"\n{yardstick}")


def machine_speed(results: list[dict[str, Any]]) -> str | None:
    """What bench/machine.py measured at the run's start and end, in one sentence."""
    loops = {
        r["metric"].rpartition("_")[2]: r["value"]
        for r in results
        if r.get("bench") == "machine" and str(r.get("metric", "")).startswith("python_loop_")
    }
    if not loops:
        return None
    timed = ", ".join(f"{cell(value)} s at the {phase}" for phase, value in loops.items())
    return (
        f"Machine: ten million Python additions took {timed} of the run; read absolute"
        " figures beside another run's in proportion (ratios need no correction)."
    )


if __name__ == "__main__":
    main()
